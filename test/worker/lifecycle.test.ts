import t from "tap";
import { readdir } from "node:fs/promises";
import { JetshardClient } from "#shared/client.js";
import { encodeModel, mlp } from "#shared/onnx/builder.js";
import { addModel } from "#shared/model-repo.js";
import { WorkerInfoSchema } from "#shared/wire.js";
import { slowModel } from "../helpers/models.js";
import { startStack, waitFor } from "../helpers/stack.js";

t.test("a worker registers with a heartbeat and vanishes from the registry after SIGTERM", async (t) => {
  const stack = await startStack(t);
  await addModel(stack.infra, "slow", slowModel(1024, 240));
  const w = await stack.worker();
  const e = await stack.infra.workers.get(w.id);
  const info = WorkerInfoSchema.parse(e!.json());
  t.match(info, { id: w.id, pid: process.pid, models: ["slow"], device: { kind: "cpu", note: /CPU/ } });
  const first = info.updatedAt;
  await waitFor("a second heartbeat", async () => WorkerInfoSchema.parse((await stack.infra.workers.get(w.id))!.json()).updatedAt > first);

  // SIGTERM drains: the in-flight job finishes and is answered before the worker deregisters
  const client = new JetshardClient(stack.infra.nc);
  t.teardown(() => client.close());
  // long enough to be caught in flight (the check polls every 5 ms), short enough for a loaded 2-core host
  const data = Float32Array.from({ length: 64 * 1024 }, (_, i) => Math.sin(i));
  const pending = client.infer("slow", [{ name: "input", datatype: "FP32", shape: [64, 1024], data }], { timeoutMs: 120_000 });
  await waitFor("job in flight", () => w.info().inFlight > 0, 10_000, 5);
  await w.stop();
  const res = await pending;
  t.equal(res.worker, w.id, "the in-flight job was finished by the draining worker");
  const gone = await stack.infra.workers.get(w.id);
  t.ok(!gone || gone.operation !== "PUT", "deregistered");
});

t.test("a worker that stops heartbeating drops out of the registry after the TTL", async (t) => {
  const stack = await startStack(t, { JETSHARD_WORKER_TTL_MS: "1500", JETSHARD_HEARTBEAT_MS: "300" });
  const child = await stack.workerProcess();
  const id = await waitFor("registered", async () => {
    for await (const k of await stack.infra.workers.keys()) return k;
    return undefined;
  });
  child.kill("SIGKILL");
  await waitFor("entry expired", async () => !(await stack.infra.workers.get(id)), 10_000, 100);
  t.pass(`worker ${id} expired from the registry`);
});

t.test("models are cached on disk by digest and the least recently used session is evicted", async (t) => {
  const stack = await startStack(t);
  for (const [i, name] of ["a", "b", "c"].entries()) await addModel(stack.infra, name, encodeModel(mlp({ layers: [3, 5], seed: i + 1 })));
  const cacheDir = `${stack.config.dataDir}/cache-lru`;
  const w = await stack.worker({ JETSHARD_MODEL_CACHE_MAX: "2", JETSHARD_CACHE_DIR: cacheDir });
  const client = new JetshardClient(stack.infra.nc);
  t.teardown(() => client.close());
  const input = [{ name: "input", datatype: "FP32" as const, shape: [1, 3], data: Float32Array.of(1, 2, 3) }];
  const outs: Record<string, Float32Array> = {};
  for (const m of ["a", "b", "c", "a"]) outs[m] = (await client.infer(m, input)).outputs[0]!.data as Float32Array;
  const files = (await readdir(cacheDir)).filter((f) => f.endsWith(".onnx"));
  t.equal(files.length, 3, "each shard cached once on disk, named by digest");
  t.ok(files.every((f) => /^[0-9a-f]{64}\.onnx$/.test(f)));
  t.not(outs.a![0], outs.b![0], "each model answers with its own weights");
  void w;
});
