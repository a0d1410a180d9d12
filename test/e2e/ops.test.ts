/**
 * Operations: /metrics of the gateway, a worker and the controller after real load (checked by promtool and read
 * back series by series), the ops listener's health endpoints through a worker's start and a NATS outage, its off
 * switch, and that it exposes no configuration.
 */
import t from "tap";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { headers as natsHeaders } from "@nats-io/transport-node";
import { loadConfig } from "#shared/config.js";
import { silentLogger } from "#shared/log.js";
import { addModel } from "#shared/model-repo.js";
import { encodeModel, mlp } from "#shared/onnx/builder.js";
import { HEADERS, subjects } from "#shared/subjects.js";
import { WorkerInfoSchema } from "#shared/wire.js";
import { createWorker } from "../../services/worker/worker.js";
import { controller } from "../helpers/nas.js";
import { ONE_GPU, fakeNvidiaSmi } from "../helpers/nvidia-smi.js";
import { hasBinary, promtool, scrape, series, value } from "../helpers/prom.js";
import { startStack, waitFor } from "../helpers/stack.js";

const BYTES = encodeModel(mlp({ layers: [4, 16, 8, 3], seed: 3 }));
const row = (i: number) => [i / 10, -1, 0.5, 2];

async function getJson(url: string) {
  const res = await fetch(url);
  return { status: res.status, body: (await res.json()) as any };
}

async function post(url: string, body: unknown) {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as any };
}

const HAS_PROMTOOL = hasBinary("promtool");

t.test("gateway, worker and controller serve valid Prometheus metrics with per-model series after load", async (t) => {
  const stack = await startStack(t);
  const gw = await stack.gateway();
  await addModel(stack.infra, "mm", BYTES, { shards: 2, batching: { maxBatchSize: 8 } });
  const w = await stack.worker();
  const c = await controller(t, stack);
  await waitFor("model ready", async () => (await fetch(`${gw.url}/v2/models/mm/ready`)).ok);

  // load: sync requests (some batched together), async jobs, and one poison message straight to NATS
  const infers = await Promise.all(
    Array.from({ length: 12 }, (_, i) => post(`${gw.url}/v2/models/mm/infer`, { inputs: [{ name: "input", shape: [1, 4], datatype: "FP32", data: row(i) }] })),
  );
  t.ok(infers.every((r) => r.status === 200), "12 sync requests answered");
  const rows2 = await post(`${gw.url}/v2/models/mm/infer`, { inputs: [{ name: "input", shape: [2, 4], datatype: "FP32", data: [...row(1), ...row(2)] }] });
  t.equal(rows2.status, 200, "a 2-row request");
  for (let i = 0; i < 3; i++) {
    const sub = await post(`${gw.url}/v1/jobs`, { model: "mm", inputs: [{ name: "input", shape: [1, 4], datatype: "FP32", data: row(i) }] });
    t.equal(sub.status, 202);
    t.match((await getJson(`${gw.url}/v1/jobs/${sub.body.id}?wait=10s`)).body, { status: "succeeded" });
  }
  const h = natsHeaders();
  h.set(HEADERS.track, "1");
  await stack.infra.js.publish(subjects.infer("mm"), new TextEncoder().encode("{{{"), { msgID: "ops-poison", headers: h });
  await waitFor("poison dead-lettered", async () => (await getJson(`${gw.url}/v1/dead-letters?model=mm`)).body.deadLetters.length === 1);

  // ---- worker
  const wurl = `http://127.0.0.1:${w.opsPort()}`;
  const wtext = await waitFor("the poison counted as a failure", async () => {
    const text = await scrape(`${wurl}/metrics`);
    return value(text, "jetshard_inference_request_failure_total") ? text : null;
  });
  for (const shard of ["0", "1"]) {
    const l = { model: "mm", version: "1", shard };
    t.equal(value(wtext, "jetshard_inference_request_success_total", l), 16, `shard ${shard}: 13 sync + 3 async requests succeeded`);
    const inferences = value(wtext, "jetshard_inference_count_total", l)!;
    const executions = value(wtext, "jetshard_inference_exec_count_total", l)!;
    t.equal(inferences, 17, `shard ${shard}: 17 rows inferred (the 2-row request counts 2)`);
    t.ok(executions >= 1 && executions <= 16, `shard ${shard}: ${executions} executions (batches count once)`);
    t.equal(value(wtext, "jetshard_inference_queue_duration_seconds_count", l), 16, `shard ${shard}: queue time of each request`);
    t.equal(value(wtext, "jetshard_inference_compute_input_duration_seconds_count", l), 16);
    t.equal(value(wtext, "jetshard_inference_compute_infer_duration_seconds_count", l), executions, "infer time per execution");
    t.equal(value(wtext, "jetshard_inference_compute_output_duration_seconds_count", l), 16);
    t.ok(value(wtext, "jetshard_inference_queue_duration_seconds_sum", l)! > 0, "queue time > 0");
    t.ok(value(wtext, "jetshard_inference_compute_infer_duration_seconds_sum", l)! > 0, "infer time > 0");
    t.ok(value(wtext, "jetshard_stage_bytes_total", { model: "mm", shard, direction: "in" })! > 0, `shard ${shard}: bytes in`);
    t.ok(value(wtext, "jetshard_stage_bytes_total", { model: "mm", shard, direction: "out" })! > 0, `shard ${shard}: bytes out`);
    t.equal(value(wtext, "jetshard_inference_pending_requests", { model: "mm", shard }), 0, "nothing pending after the load");
  }
  t.same(series(wtext, "jetshard_inference_request_failure_total").map((s) => s.labels), [{ model: "mm", version: "", shard: "0", reason: "BAD_REQUEST" }], "the poison: one failure, version unknown");
  t.ok(value(wtext, "jetshard_worker_resident_memory_bytes")! > 0, "worker memory");
  t.ok(value(wtext, "jetshard_host_memory_total_bytes")! > 0, "host memory");
  t.type(value(wtext, "jetshard_worker_cpu_percent"), "number", "worker CPU %");
  t.equal(value(wtext, "jetshard_worker_shards"), 2);
  t.ok(value(wtext, "process_cpu_seconds_total")! > 0, "default process metrics");
  t.equal(value(wtext, "jetshard_info", { service: "worker" }), 1);

  // ---- the worker's heartbeat, through GET /v1/workers
  // a heartbeat sent between the last job and the poison's failure has the successes but not the failure
  const listed = await waitFor("heartbeat with the load's counters", async () => {
    const [x] = (await getJson(`${gw.url}/v1/workers`)).body.workers;
    return x?.stats?.["mm:1"]?.succeeded === 16 && x?.stats?.["mm:0"]?.failed === 1 ? x : null;
  });
  const info = WorkerInfoSchema.parse(listed);
  t.ok(info.resources && info.resources.rssBytes > 0 && info.resources.memTotalBytes > 0 && Array.isArray(info.resources.gpus), "resources in the heartbeat");
  t.match(info.stats?.["mm:0"], { succeeded: 16, failed: 1, inferences: 17 }, "cumulative per-shard counters");
  t.ok(info.stats!["mm:0"]!.executions > 0 && info.stats!["mm:0"]!.bytesIn > 0 && info.stats!["mm:0"]!.bytesOut > 0 && info.stats!["mm:0"]!.queueMs > 0 && info.stats!["mm:0"]!.computeMs > 0);

  // ---- gateway
  const gtext = await waitFor("jobs by state from the gateway's watch", async () => {
    const text = await scrape(`${gw.url}/metrics`);
    return (value(text, "jetshard_jobs", { state: "succeeded" }) ?? 0) >= 3 ? text : null;
  });
  t.equal(value(gtext, "jetshard_gateway_inference_request_success_total", { model: "mm", version: "1" }), 13);
  t.equal(value(gtext, "jetshard_gateway_inference_request_duration_seconds_count", { model: "mm", version: "1" }), 13);
  t.equal(value(gtext, "jetshard_http_requests_total", { method: "POST", route: "/v2/models/:model/infer", code: "200" }), 13, "requests by route pattern");
  t.equal(value(gtext, "jetshard_http_requests_total", { method: "POST", route: "/v1/jobs", code: "202" }), 3);
  t.equal(value(gtext, "jetshard_jobs_submitted_total", { model: "mm" }), 3);
  t.equal(value(gtext, "jetshard_jobs", { state: "failed" }), 1, "the poison's record");
  t.equal(value(gtext, "jetshard_dead_letters", { model: "mm" }), 1);
  t.equal(value(gtext, "jetshard_consumer_pending", { model: "mm", shard: "0" }), 0, "consumer lag of shard 0");
  t.equal(value(gtext, "jetshard_consumer_ack_pending", { model: "mm", shard: "1" }), 0, "and of shard 1");
  t.equal(value(gtext, "jetshard_workers_live"), 1);
  t.equal(value(gtext, "jetshard_models"), 1);

  // ---- controller
  const ctext = await scrape(`http://127.0.0.1:${c.opsPort()}/metrics`);
  t.equal(value(ctext, "jetshard_info", { service: "controller" }), 1);
  t.equal(value(ctext, "jetshard_nas_experiments_driven"), 0);

  await t.test("promtool check metrics accepts all three pages (no error, no lint problem)", { skip: HAS_PROMTOOL ? false : "promtool is not installed (Debian: apt-get install prometheus)" }, async (t) => {
    for (const [who, text] of [["worker", wtext], ["gateway", gtext], ["controller", ctext]] as const) {
      const check = await promtool(text);
      t.equal(check.code, 0, `the ${who}'s /metrics: ${check.output || "ok"}`);
    }
  });
});

t.test("a worker is ready only once registered and serving its shards, not while NATS is down; liveness stays 200", async (t) => {
  const stack = await startStack(t);
  await addModel(stack.infra, "m", BYTES);
  const dir = await mkdtemp(path.join(os.tmpdir(), "jetshard-gate-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const gate = path.join(dir, "open");
  // holds the worker's start at its GPU query, before it connects and registers
  const smi = await fakeNvidiaSmi(t, ONE_GPU, { gate });
  const w = createWorker({ config: loadConfig({ ...stack.env, JETSHARD_CACHE_DIR: path.join(dir, "cache"), JETSHARD_NVIDIA_SMI: smi }), log: silentLogger() });
  const starting = w.start();
  t.teardown(() => w.stop());
  const port = await waitFor("the ops listener", () => w.opsPort());
  const url = (p: string) => `http://127.0.0.1:${port}${p}`;

  const before = await getJson(url("/health/ready"));
  t.equal(before.status, 503, "not ready before registration");
  t.match(before.body, { ready: false, reason: /not connected to NATS|not registered/ });
  t.same((await getJson(url("/health/live"))).body, { live: true }, "live while starting");
  t.equal((await fetch(url("/metrics"))).status, 200, "metrics while starting");

  await writeFile(gate, "");
  await starting;
  const ready = await waitFor("ready", async () => {
    const r = await getJson(url("/health/ready"));
    return r.status === 200 ? r : null;
  });
  t.same(ready.body, { ready: true });
  t.same(w.info().shards, ["m:0"], "serving its shard");
  const c = await controller(t, stack);
  const curl = (p: string) => `http://127.0.0.1:${c.opsPort()}${p}`;
  t.equal((await getJson(curl("/health/ready"))).status, 200, "controller ready");

  await stack.nats.kill();
  for (const [who, u] of [["worker", url], ["controller", curl]] as const) {
    const down = await waitFor(`${who} readiness to drop`, async () => {
      const r = await getJson(u("/health/ready"));
      return r.status === 503 ? r : null;
    }, 5_000);
    t.match(down.body, { ready: false, reason: /not connected to NATS/ }, `${who} says why`);
    t.equal((await fetch(u("/health/live"))).status, 200, `${who} liveness does not depend on NATS`);
  }
  await stack.nats.restart();
  await waitFor("worker ready again", async () => (await fetch(url("/health/ready"))).status === 200, 15_000);
  await waitFor("controller ready again", async () => (await fetch(curl("/health/ready"))).status === 200, 15_000);
});

t.test("the ops listener can be turned off, refuses a taken port by name, and shows no configuration", async (t) => {
  const stack = await startStack(t);
  const off = await stack.worker({ JETSHARD_OPS_HTTP: "0" });
  t.equal(off.opsPort(), null, "JETSHARD_OPS_HTTP=0: no listener");

  const marker = `secret-${process.pid}-${Date.now()}`;
  const w = await stack.worker({ JETSHARD_EVALUATORS_DIR: `/tmp/${marker}-evaluators`, JETSHARD_DATA_DIR: `${stack.env.JETSHARD_DATA_DIR}/${marker}` });
  const base = `http://127.0.0.1:${w.opsPort()}`;
  for (const p of ["/metrics", "/health/live", "/health/ready"]) {
    const body = await (await fetch(base + p)).text();
    t.notOk(body.includes(marker), `${p} shows no config value`);
    t.notOk(body.includes(stack.nats.url), `${p} shows no NATS address`);
  }
  const nf = await fetch(`${base}/v1/workers`);
  t.equal(nf.status, 404, "nothing else is served");
  t.equal((await fetch(`${base}/metrics`, { method: "POST" })).status, 405);

  const taken = createWorker({ config: loadConfig({ ...stack.env, JETSHARD_OPS_PORT: String(w.opsPort()) }), log: silentLogger() });
  await t.rejects(taken.start(), /JETSHARD_OPS_PORT: port \d+ on 127\.0\.0\.1 is in use/, "a taken port is a clear startup error");
});
