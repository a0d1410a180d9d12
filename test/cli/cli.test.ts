import t from "tap";
import { spawn } from "node:child_process";
import { mkdtemp, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { encodeModel, mlp } from "#shared/onnx/builder.js";
import { BIN, cli } from "../helpers/cli.js";
import { ROOT, startStack } from "../helpers/stack.js";

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

t.test("every command has --help", async (t) => {
  for (const cmd of [[], ["up"], ["gateway"], ["worker"], ["controller"], ["model"], ["infer"], ["workers"], ["nas"], ["jobs"], ["dlq"], ["device"]]) {
    const r = await cli({}, ...cmd, "--help");
    t.equal(r.code, 0, `jetshard ${cmd.join(" ")} --help exits 0`);
    t.match(r.stdout, /Usage/, `jetshard ${cmd.join(" ")} --help prints usage`);
  }
  const dev = await cli({ JETSHARD_DEVICE: "cpu" }, "device");
  t.equal(dev.code, 0, dev.stderr);
  t.match(JSON.parse(dev.stdout), { device: { kind: "cpu", note: /JETSHARD_DEVICE=cpu/ }, providers: ["cpu"], check: { ok: true, output: [Number, Number] } }, "device check runs a model");
  const bad = await cli({}, "frobnicate");
  t.equal(bad.code, 2);
  t.match(bad.stderr, /unknown command "frobnicate"/);
});

t.test("model add, list, infer, workers and rm from the command line", async (t) => {
  const stack = await startStack(t);
  const env = { JETSHARD_NATS_URL: stack.nats.url, JETSHARD_WORKER_TTL_MS: stack.env.JETSHARD_WORKER_TTL_MS! };
  const dir = await mkdtemp(path.join(stack.config.dataDir, "cli-"));
  const file = path.join(dir, "m.onnx");
  await writeFile(file, encodeModel(mlp({ layers: [2, 2], seed: 4 })));

  const added = await cli(env, "model", "add", file, "--name", "clim");
  t.equal(added.code, 0, added.stderr);
  t.match(JSON.parse(added.stdout), { name: "clim", version: 1, inputs: [{ name: "input", datatype: "FP32", shape: [-1, 2] }] });
  t.match((await cli(env, "model", "list")).stdout, /clim\tlatest=1\tversions=1/);
  const deep = path.join(dir, "deep.onnx");
  await writeFile(deep, encodeModel(mlp({ layers: [2, 8, 8, 2], seed: 4 })));
  const sharded = await cli(env, "model", "add", deep, "--name", "deep", "--shards", "3");
  t.equal(sharded.code, 0, sharded.stderr);
  t.equal(JSON.parse(sharded.stdout).shards, 3, "--shards splits the model");
  const badShards = await cli(env, "model", "add", deep, "--name", "deep", "--shards", "0");
  t.equal(badShards.code, 2);
  t.match(badShards.stderr, /shards/);
  const missingName = await cli(env, "model", "add", file);
  t.equal(missingName.code, 2);
  t.match(missingName.stderr, /--name/);

  const w = await stack.worker();
  const inf = await cli(env, "infer", "clim", "--input", "input:FP32:1x2:0.5,-1");
  t.equal(inf.code, 0, inf.stderr);
  const body = JSON.parse(inf.stdout);
  t.match(body, { model_name: "clim", outputs: [{ name: "output", datatype: "FP32", shape: [1, 2] }], parameters: { worker: w.id } });
  const json = await cli(env, "infer", "clim", "--json", JSON.stringify({ id: "x1", inputs: [{ name: "input", shape: [1, 2], datatype: "FP32", data: [0.5, -1] }] }));
  t.same(JSON.parse(json.stdout).outputs, body.outputs, "--json and --input give the same answer");
  const badInput = await cli(env, "infer", "clim", "--input", "input:FP32:1x3:1,2,3");
  t.equal(badInput.code, 2);
  t.match(badInput.stderr, /input "input": expected shape \[-1,2\]/);

  t.match((await cli(env, "workers")).stdout, new RegExp(`${w.id}\\tcpu:`));

  // async jobs and dead letters
  const { JetshardClient } = await import("#shared/client.js");
  const client = new JetshardClient(stack.infra.nc, { infra: stack.infra });
  t.teardown(() => client.close());
  const sub = await client.submit("clim", [{ name: "input", datatype: "FP32", shape: [1, 2], data: Float32Array.of(1, 2) }], { jobId: "cli-job-1" });
  const { waitJob } = await import("#shared/jobs.js");
  await waitJob(stack.infra, sub.id, 10_000);
  t.match((await cli(env, "jobs", "list", "--status", "succeeded")).stdout, /cli-job-1\tclim\tsucceeded\tattempts=1/);
  t.match(JSON.parse((await cli(env, "jobs", "show", "cli-job-1")).stdout), { id: "cli-job-1", status: "succeeded" });
  t.match((await cli(env, "jobs", "cancel", "cli-job-1")).stderr, /already succeeded/);
  t.match((await cli(env, "dlq", "list")).stdout, /no dead letters/);
  t.equal((await cli(env, "model", "rm", "clim")).code, 0);
  t.equal((await cli(env, "model", "rm", "deep")).code, 0);
  t.match((await cli(env, "model", "list")).stdout, /no models/);
});

t.test("jetshard up starts gateway and workers, seeds demo-mlp, prints a working curl, and Ctrl-C stops it all", async (t) => {
  const stack = await startStack(t);
  const port = await freePort();
  const child = spawn(process.execPath, [BIN, "up"], {
    cwd: ROOT,
    env: { ...process.env, JETSHARD_NATS_URL: stack.nats.url, JETSHARD_PORT: String(port), JETSHARD_WORKERS: "2", JETSHARD_DATA_DIR: stack.env.JETSHARD_DATA_DIR!, JETSHARD_LOG_LEVEL: "warn" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  t.teardown(() => {
    if (child.exitCode === null) child.kill("SIGKILL");
  });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (out += d.toString()));
  const deadline = Date.now() + 90_000;
  while (!/curl .*-d '.*'/.test(out)) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`up did not print a curl: ${out.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const line = out.split("\n").find((l) => l.trim().startsWith("curl "))!.trim();
  const url = line.match(/curl -s (\S+)/)![1]!;
  const body = line.match(/-d '(.*)'$/)![1]!;
  t.equal(url, `http://127.0.0.1:${port}/v2/models/demo-mlp/infer`);
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body });
  t.equal(res.status, 200, "the printed curl works");
  const j = (await res.json()) as any;
  t.equal(j.outputs[0].name, "probabilities");
  t.equal(j.outputs[0].data.length, 3);
  t.ok(Math.abs(j.outputs[0].data.reduce((a: number, b: number) => a + b, 0) - 1) < 1e-5, "softmax sums to 1");

  const cnnLine = out.split("\n").find((l) => l.includes("demo-cnn/infer"))!.trim();
  const cnnRes = await fetch(cnnLine.match(/curl -s (\S+)/)![1]!, { method: "POST", headers: { "content-type": "application/json" }, body: cnnLine.match(/-d '(.*)'$/)![1]! });
  t.equal(cnnRes.status, 200, "the sharded demo's curl works");
  t.same(((await cnnRes.json()) as any).outputs[0].shape, [1, 3]);
  const cnnInfo = (await (await fetch(`http://127.0.0.1:${port}/v1/models/demo-cnn`)).json()) as any;
  t.equal(cnnInfo.versions[0].shards.length, 2, "demo-cnn is stored as 2 shards");

  const workers = ((await (await fetch(`http://127.0.0.1:${port}/v1/workers`)).json()) as any).workers;
  t.equal(workers.length, 2, "two workers");
  child.kill("SIGINT");
  const code = await new Promise((r) => child.once("exit", r));
  t.equal(code, 0, "up exits cleanly on Ctrl-C");
  await new Promise((r) => setTimeout(r, 500));
  const left = await fetch(`http://127.0.0.1:${port}/v2/health/live`).then(() => "still up", () => "down");
  t.equal(left, "down", "gateway stopped");
  for (const w of workers) t.throws(() => process.kill(w.pid, 0), `worker ${w.pid} stopped`);
});
