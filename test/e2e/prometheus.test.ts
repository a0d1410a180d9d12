/**
 * A real Prometheus server (Debian's `prometheus`) scrapes a stack's gateway and a worker every second; the series
 * jetshard exports come back through Prometheus' HTTP API.
 */
import t from "tap";
import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { addModel } from "#shared/model-repo.js";
import { encodeModel, mlp } from "#shared/onnx/builder.js";
import { hasBinary } from "../helpers/prom.js";
import { startStack, waitFor } from "../helpers/stack.js";

const BYTES = encodeModel(mlp({ layers: [4, 8, 3], seed: 2 }));

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

const HAS_PROMETHEUS = hasBinary("prometheus");

t.test(
  "Prometheus scrapes the gateway and a worker, and their series come back through /api/v1/query",
  { skip: HAS_PROMETHEUS ? false : "the prometheus binary is not installed (Debian: apt-get install prometheus)" },
  async (t) => {
    const stack = await startStack(t);
    const gw = await stack.gateway();
    await addModel(stack.infra, "m", BYTES);
    const w = await stack.worker();
    await waitFor("model ready", async () => (await fetch(`${gw.url}/v2/models/m/ready`)).ok);

    const dir = await mkdtemp(path.join(os.tmpdir(), "jetshard-prom-"));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const config = path.join(dir, "prometheus.yml");
    await writeFile(
      config,
      [
        "global:",
        "  scrape_interval: 1s",
        "  scrape_timeout: 1s",
        "scrape_configs:",
        "  - job_name: gateway",
        "    static_configs:",
        `      - targets: ["127.0.0.1:${gw.port}"]`,
        "  - job_name: worker",
        "    static_configs:",
        `      - targets: ["127.0.0.1:${w.opsPort()}"]`,
        "",
      ].join("\n"),
    );
    const port = await freePort();
    const prom = spawn("prometheus", [`--config.file=${config}`, `--storage.tsdb.path=${path.join(dir, "data")}`, `--web.listen-address=127.0.0.1:${port}`, "--log.level=warn"], { stdio: ["ignore", "ignore", "pipe"] });
    let log = "";
    prom.stderr.on("data", (d: Buffer) => (log = (log + d.toString()).slice(-4000)));
    const exited = new Promise<void>((r) => prom.once("exit", () => r()));
    t.teardown(async () => {
      prom.kill("SIGTERM");
      const timer = setTimeout(() => prom.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    });
    const api = `http://127.0.0.1:${port}`;
    await waitFor(`prometheus ready (${log})`, async () => (await fetch(`${api}/-/ready`).catch(() => null))?.ok, 30_000, 200);

    const query = async (q: string) => {
      const res = await fetch(`${api}/api/v1/query?query=${encodeURIComponent(q)}`);
      const body = (await res.json()) as { status: string; data: { result: Array<{ metric: Record<string, string>; value: [number, string] }> } };
      if (body.status !== "success") throw new Error(`query ${q}: ${JSON.stringify(body)}`);
      return body.data.result;
    };
    const infer = () => fetch(`${gw.url}/v2/models/m/infer`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ inputs: [{ name: "input", shape: [1, 4], datatype: "FP32", data: [1, 2, 3, 4] }] }) });

    // requests keep coming until Prometheus has scraped a count above zero
    const worker = await waitFor(
      "the worker's success counter in Prometheus",
      async () => {
        t.equal((await infer()).status, 200);
        const r = await query('jetshard_inference_request_success_total{job="worker",model="m",shard="0"}');
        return r.length === 1 && Number(r[0]!.value[1]) > 0 ? r[0] : null;
      },
      30_000,
      250,
    );
    t.match(worker.metric, { job: "worker", model: "m", version: "1", shard: "0", instance: `127.0.0.1:${w.opsPort()}` });
    const gateway = await waitFor(
      "the gateway's request counter in Prometheus",
      async () => {
        const r = await query('jetshard_gateway_inference_request_success_total{job="gateway",model="m"}');
        return r.length === 1 && Number(r[0]!.value[1]) > 0 ? r[0] : null;
      },
      10_000,
      250,
    );
    t.match(gateway.metric, { model: "m", version: "1" });
    const up = await query("up");
    t.same(up.map((s) => [s.metric.job, s.value[1]]).sort(), [["gateway", "1"], ["worker", "1"]], "both targets up");
    const batch = await query('sum(jetshard_inference_count_total{model="m"}) / sum(jetshard_inference_exec_count_total{model="m"})');
    t.equal(Number(batch[0]?.value[1]), 1, "mean batch size readable (1: one request at a time)");
  },
);
