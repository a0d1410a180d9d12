import t from "tap";
import * as ort from "onnxruntime-node";
import { JetshardClient } from "#shared/client.js";
import { ElemType, encodeModel, floatTensor, mlp, model, node, randomFloats, rng, valueInfo } from "#shared/onnx/builder.js";
import { datatypeFromOrt, type Tensor, type TypedArray } from "#shared/tensor.js";
import { Batcher, BatcherPool } from "../../services/worker/batcher.js";
import { Semaphore } from "../../services/worker/semaphore.js";
import { startStack, waitFor } from "../helpers/stack.js";

const BYTES = encodeModel(mlp({ layers: [6, 16, 3], seed: 12 }));

function rows(n: number, seed: number): Tensor {
  const r = rng(seed);
  return { name: "input", datatype: "FP32", shape: [n, 6], data: Float32Array.from({ length: n * 6 }, () => r() * 2 - 1) };
}

async function runner(bytes: Uint8Array) {
  const s = await ort.InferenceSession.create(bytes);
  let runs = 0;
  const run = async (inputs: Tensor[]): Promise<Tensor[]> => {
    runs++;
    const feeds = Object.fromEntries(inputs.map((x) => [x.name, new ort.Tensor(x.datatype === "INT64" ? "int64" : "float32", x.data as never, x.shape)]));
    const out = await s.run(feeds);
    return s.outputNames.map((n) => ({ name: n, datatype: datatypeFromOrt(out[n]!.type)!, shape: out[n]!.dims.map(Number), data: out[n]!.data as TypedArray }));
  };
  return { run, runs: () => runs };
}

t.test("batched results equal unbatched results request by request", async (t) => {
  const { run, runs } = await runner(BYTES);
  const b = new Batcher({ maxBatchSize: 16, preferredBatchSizes: [], maxQueueDelayUs: 0 }, new Semaphore(1), run);
  const reqs = Array.from({ length: 30 }, (_, i) => [rows(1 + (i % 3), i)]);
  const batched = await Promise.all(reqs.map((r) => b.submit(r)));
  const before = runs();
  for (const [i, r] of reqs.entries()) {
    const alone = await run(r);
    t.same(batched[i]![0]!.shape, alone[0]!.shape, `request ${i} shape`);
    t.same(batched[i]![0]!.data, alone[0]!.data, `request ${i} values`);
  }
  t.ok(before < 30, `30 requests took ${before} runs`);
  t.ok(b.stats.maxRows <= 16, `no batch above maxBatchSize (largest ${b.stats.maxRows})`);
  t.ok(b.stats.maxRows > 3, "requests were joined");
});

t.test("a request that breaks the batched run fails alone; the rest of its batch succeeds", async (t) => {
  // Gather from a 10-row table: an index of 99 makes ONNX Runtime fail the run
  const gather = encodeModel(
    model({
      nodes: [node("Gather", ["table", "input"], ["output"], { axis: 0 })],
      inputs: [valueInfo("input", ElemType.INT64, ["N", 1])],
      outputs: [valueInfo("output", ElemType.FLOAT, ["N", 1, 4])],
      initializers: [floatTensor("table", [10, 4], randomFloats(40, rng(3)))],
    }),
  );
  const { run } = await runner(gather);
  const b = new Batcher({ maxBatchSize: 32, preferredBatchSizes: [], maxQueueDelayUs: 0 }, new Semaphore(1), run);
  const idx = (v: number): Tensor[] => [{ name: "input", datatype: "INT64", shape: [1, 1], data: BigInt64Array.of(BigInt(v)) }];
  const results = await Promise.allSettled([1, 2, 99, 3, 4, 5].map((v) => b.submit(idx(v))));
  t.same(results.map((r) => r.status), ["fulfilled", "fulfilled", "rejected", "fulfilled", "fulfilled", "fulfilled"]);
  t.ok(b.stats.maxRows > 1, "the bad request was in a batch");
});

t.test("a lone request waits at most maxQueueDelayUs, and preferred sizes cut a batch at once", async (t) => {
  const { run } = await runner(BYTES);
  const slow = new Batcher({ maxBatchSize: 64, preferredBatchSizes: [4], maxQueueDelayUs: 150_000 }, new Semaphore(2), run);
  let t0 = performance.now();
  await slow.submit([rows(1, 1)]);
  const lone = performance.now() - t0;
  t.ok(lone >= 145 && lone < 150 + 250, `lone request took ${lone.toFixed(1)} ms for a 150 ms delay`);
  t0 = performance.now();
  await Promise.all([1, 2, 3, 4].map((i) => slow.submit([rows(1, i)])));
  const preferred = performance.now() - t0;
  t.ok(preferred < 100, `a batch of the preferred size 4 ran without waiting (${preferred.toFixed(1)} ms)`);
  const eager = new Batcher({ maxBatchSize: 64, preferredBatchSizes: [], maxQueueDelayUs: 0 }, new Semaphore(2), run);
  t0 = performance.now();
  await eager.submit([rows(1, 1)]);
  t.ok(performance.now() - t0 < 50, "with no delay a lone request runs at once");
});

t.test("the batcher pool is bounded: callers asking for ever new outputs evict idle batchers, never busy ones", async (t) => {
  const pool = new BatcherPool(4);
  const cfg = { maxBatchSize: 8, preferredBatchSizes: [], maxQueueDelayUs: 0 };
  const slots = new Semaphore(1);
  const echo = async (inputs: Tensor[]) => inputs;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const busy = pool.get("busy", () => new Batcher(cfg, slots, async (inputs) => (await gate, inputs)));
  const pending = busy.submit([rows(1, 1)]);
  t.notOk(busy.idle, "a batcher with a request running is not idle");
  const made: Batcher[] = [];
  for (let i = 0; i < 100; i++) {
    const b = pool.get(`outputs-${i}`, () => new Batcher(cfg, slots, echo));
    made.push(b);
  }
  t.ok(made.every((b) => b.idle), "fresh batchers are idle");
  t.equal(pool.size, 4, "never more than max while there are idle ones to drop");
  t.equal(pool.get("busy", () => new Batcher(cfg, slots, echo)), busy, "the busy one was kept");
  t.equal(pool.get("outputs-99", () => new Batcher(cfg, slots, echo)), made[99], "the most recent ones are kept");
  t.not(pool.get("outputs-0", () => new Batcher(cfg, slots, echo)), made[0], "the oldest idle one was dropped and is made anew");
  release();
  await pending;
  await waitFor("the busy batcher idle again", () => busy.idle, 1_000, 1);
  t.pass("idle again once its request finished");
});

t.test("through the stack: concurrent requests are batched, binary and JSON give identical outputs", async (t) => {
  const stack = await startStack(t, { JETSHARD_WORKER_CONCURRENCY: "1" });
  const gw = await stack.gateway();
  const put = await fetch(`${gw.url}/v1/models/b?maxBatchSize=8&preferredBatchSizes=4,8`, { method: "PUT", body: BYTES });
  const putBody = (await put.json()) as any;
  t.equal(put.status, 201);
  t.same(putBody.batching, { maxBatchSize: 8, preferredBatchSizes: [4, 8], maxQueueDelayUs: 0 }, "batching shown in metadata");
  const cfg = await fetch(`${gw.url}/v1/models/c?config=${encodeURIComponent(JSON.stringify({ batching: { maxBatchSize: 4, maxQueueDelayUs: 100 } }))}`, { method: "PUT", body: BYTES });
  t.match(((await cfg.json()) as any).batching, { maxBatchSize: 4, maxQueueDelayUs: 100 }, "the JSON config form");
  const bad = await fetch(`${gw.url}/v1/models/d?maxBatchSize=0`, { method: "PUT", body: BYTES });
  t.equal(bad.status, 400);
  t.match(((await bad.json()) as any).error, /maxBatchSize/);
  const dflt = (await (await fetch(`${gw.url}/v1/models/e`, { method: "PUT", body: BYTES })).json()) as any;
  t.same(dflt.batching, { maxBatchSize: 32, preferredBatchSizes: [], maxQueueDelayUs: 0 }, "on by default for a dynamic batch dimension");

  await stack.worker();
  await waitFor("ready", async () => (await fetch(`${gw.url}/v2/models/b/ready`)).ok);
  const client = new JetshardClient(stack.infra.nc);
  t.teardown(() => client.close());
  const inputs = Array.from({ length: 40 }, (_, i) => rows(1 + (i % 2), 100 + i));
  const s = await ort.InferenceSession.create(BYTES);
  const out = await Promise.all(inputs.map((x) => client.infer("b", [x])));
  for (const [i, x] of inputs.entries()) {
    const want = (await s.run({ input: new ort.Tensor("float32", x.data as Float32Array, x.shape) })).output!.data;
    t.same(out[i]!.outputs[0]!.data, want, `request ${i} equals an unbatched run`);
  }

  // binary request and response vs JSON
  const x = rows(2, 7);
  const header = new TextEncoder().encode(
    JSON.stringify({ inputs: [{ name: "input", shape: [2, 6], datatype: "FP32", parameters: { binary_data_size: 48 } }], parameters: { binary_data_output: true } }),
  );
  const body = new Uint8Array(header.length + 48);
  body.set(header);
  body.set(new Uint8Array((x.data as Float32Array).buffer), header.length);
  const binRes = await fetch(`${gw.url}/v2/models/b/infer`, { method: "POST", headers: { "Inference-Header-Content-Length": String(header.length), "content-type": "application/octet-stream" }, body });
  t.equal(binRes.status, 200);
  const hl = Number(binRes.headers.get("inference-header-content-length"));
  const raw = new Uint8Array(await binRes.arrayBuffer());
  const head = JSON.parse(new TextDecoder().decode(raw.subarray(0, hl)));
  t.match(head.outputs[0], { name: "output", datatype: "FP32", shape: [2, 3], parameters: { binary_data_size: 24 } });
  t.notOk(head.outputs[0].data, "no JSON data for a binary output");
  const binOut = new Float32Array(raw.slice(hl).buffer);
  const jsonRes = (await (await fetch(`${gw.url}/v2/models/b/infer`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ inputs: [{ name: "input", shape: [2, 6], datatype: "FP32", data: Array.from(x.data as Float32Array) }] }) })).json()) as any;
  t.same(Array.from(binOut), jsonRes.outputs[0].data, "binary and JSON give identical outputs");

  const short = await fetch(`${gw.url}/v2/models/b/infer`, { method: "POST", headers: { "Inference-Header-Content-Length": String(header.length) }, body: body.subarray(0, body.length - 4) });
  t.equal(short.status, 400);
  t.match(((await short.json()) as any).error, /input "input": body ends before its 48 bytes/);
  const badLen = await fetch(`${gw.url}/v2/models/b/infer`, { method: "POST", headers: { "Inference-Header-Content-Length": "nope" }, body });
  t.match(((await badLen.json()) as any).error, /Inference-Header-Content-Length/);
});
