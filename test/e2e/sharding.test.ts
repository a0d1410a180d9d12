import t, { type Test } from "tap";
import type { ChildProcess } from "node:child_process";
import * as ort from "onnxruntime-node";
import { JetshardClient } from "#shared/client.js";
import { encodeModel, mlp, model, node, valueInfo, ElemType } from "#shared/onnx/builder.js";
import { cnn, transformerBlock } from "#shared/onnx/families.js";
import type { Tensor } from "#shared/tensor.js";
import { slowModel } from "../helpers/models.js";
import { startStack, waitFor, type Stack } from "../helpers/stack.js";

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return a.length === b.length ? m : Infinity;
};

async function whole(bytes: Uint8Array, name: string, data: Float32Array, shape: number[]): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(bytes);
  const r = await s.run({ [name]: new ort.Tensor("float32", data, shape) });
  await s.release();
  return r[s.outputNames[0]!]!.data as Float32Array;
}

async function put(url: string, name: string, bytes: Uint8Array, query = "") {
  const res = await fetch(`${url}/v1/models/${name}${query}`, { method: "PUT", body: bytes });
  return { status: res.status, body: (await res.json()) as any };
}

const ready = (stack: Stack, url: string, m: string) => waitFor(`${m} ready`, async () => (await fetch(`${url}/v2/models/${m}/ready`)).ok, 20_000);

t.test("a 3-shard transformer block served by 3 workers answers like the whole model, over HTTP and direct NATS", async (t) => {
  const stack = await startStack(t);
  const gw = await stack.gateway();
  const bytes = encodeModel(transformerBlock({ dModel: 16, seqLen: 6, ffn: 32, heads: 2, layers: 2, seed: 5 }));
  const up = await put(gw.url, "tfm", bytes, "?shards=3");
  t.equal(up.status, 201, JSON.stringify(up.body).slice(0, 300));
  t.equal(up.body.shards.length, 3, "three shards stored");
  t.match(up.body.shards.map((s: any) => s.object), [/^tfm\/1\/0-[0-9a-f]{12}\.onnx$/, /^tfm\/1\/1-[0-9a-f]{12}\.onnx$/, /^tfm\/1\/2-[0-9a-f]{12}\.onnx$/]);
  t.equal(up.body.shards.length, 3);
  t.same(up.body.shards[1].inputs.map((i: any) => i.name), up.body.shards[0].outputs.map((o: any) => o.name), "stage 1 takes what stage 0 gives");

  const notReady = (await (await fetch(`${gw.url}/v2/models/tfm/ready`)).json()) as any;
  t.match(notReady.error, /no live worker serves shard\(s\) 0, 1, 2 of model "tfm"/);
  const ws = [];
  for (const i of [0, 1, 2]) ws.push(await stack.worker({ JETSHARD_SERVE: `tfm:${i}` }));
  await ready(stack, gw.url, "tfm");
  const meta = (await (await fetch(`${gw.url}/v2/models/tfm`)).json()) as any;
  t.same(meta.inputs, [{ name: "input", datatype: "FP32", shape: [-1, 6, 16] }], "v2 metadata shows one model");
  const info = (await (await fetch(`${gw.url}/v1/models/tfm`)).json()) as any;
  t.same(info.coverage.map((c: any) => c.workers), ws.map((w) => [w.id]), "per-shard coverage");

  const data = Float32Array.from({ length: 2 * 6 * 16 }, (_, i) => Math.sin(i / 3));
  const want = await whole(bytes, "input", data, [2, 6, 16]);
  const res = await fetch(`${gw.url}/v2/models/tfm/infer`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ id: "t1", inputs: [{ name: "input", shape: [2, 6, 16], datatype: "FP32", data: Array.from(data) }] }),
  });
  const body = (await res.json()) as any;
  t.equal(res.status, 200, JSON.stringify(body).slice(0, 300));
  t.equal(body.id, "t1");
  t.same(body.outputs[0].shape, [2, 6, 16]);
  t.ok(maxAbsDiff(body.outputs[0].data, want) <= 1e-5, `HTTP max abs diff ${maxAbsDiff(body.outputs[0].data, want)}`);
  t.equal(body.parameters.worker, ws[2]!.id, "the last shard's worker answers");

  const client = new JetshardClient(stack.infra.nc);
  t.teardown(() => client.close());
  const direct = await client.infer("tfm", [{ name: "input", datatype: "FP32", shape: [2, 6, 16], data }]);
  t.ok(maxAbsDiff(direct.outputs[0]!.data as Float32Array, want) <= 1e-5, "direct NATS equals the whole model");
});

t.test("activations bigger than the NATS max payload travel by claim check and are collected", async (t) => {
  const stack = await startStack(t, {}, { natsExtra: "max_payload: 65536" });
  t.equal(stack.infra.nc.info?.max_payload, 65536, "server runs with a 64 KB max payload");
  const gw = await stack.gateway();
  // hidden width 20000: one row of activations is 80 KB, more than the 64 KB max payload
  const bytes = encodeModel(mlp({ layers: [4, 20000, 3], seed: 8 }));
  const up = await put(gw.url, "wide", bytes, "?shards=2");
  t.equal(up.status, 201);
  await stack.worker({ JETSHARD_SERVE: "wide:0" });
  await stack.worker({ JETSHARD_SERVE: "wide:1" });
  await ready(stack, gw.url, "wide");
  const data = Float32Array.of(0.5, -1, 2, 0.25);
  const client = new JetshardClient(stack.infra.nc);
  t.teardown(() => client.close());
  const r = await client.infer("wide", [{ name: "input", datatype: "FP32", shape: [1, 4], data }]);
  t.ok(maxAbsDiff(r.outputs[0]!.data as Float32Array, await whole(bytes, "input", data, [1, 4])) <= 1e-5, "correct through the claim check");
  // the stage that used the claim deletes it once its message left the queue, which is after the answer went out
  const left = async () => {
    const names: string[] = [];
    for await (const o of await stack.infra.claims.list()) if (!o.deleted) names.push(o.name);
    return names;
  };
  await waitFor("the claim to be deleted", async () => (await left()).length === 0, 10_000).catch(() => undefined);
  t.same(await left(), [], "claim deleted after use");
  const claims = await stack.infra.jsm.streams.info("OBJ_claims");
  t.ok(claims.state.last_seq >= 3, `the claims store was written to: chunks, metadata and its deletion (${claims.state.last_seq} messages)`);
});

t.test("bad shard options get a 400 naming the parameter; a one-node model is stored whole with a note", async (t) => {
  const stack = await startStack(t);
  const gw = await stack.gateway();
  const bytes = encodeModel(mlp({ layers: [4, 8, 3], seed: 1 }));
  for (const [q, re] of [
    ["?shards=0", /shards: .*at least 1/],
    ["?shards=-2", /shards: .*at least 1/],
    ["?shards=abc", /shards: /],
    ["?shards=1.5", /shards: .*integer/],
    ["?shards=99", /shards/],
    ["?maxShardBytes=0", /maxShardBytes/],
    ["?bogus=1", /unknown query parameter\(s\) bogus/],
  ] as const) {
    const r = await put(gw.url, "m", bytes, q);
    t.equal(r.status, 400, `${q} → 400`);
    t.match(r.body.error, re, `${q}: ${r.body.error}`);
  }
  t.equal((await fetch(`${gw.url}/v1/models/m`)).status, 404, "nothing stored");
  const one = encodeModel(model({ nodes: [node("Relu", ["input"], ["output"])], inputs: [valueInfo("input", ElemType.FLOAT, ["N", 4])], outputs: [valueInfo("output", ElemType.FLOAT, ["N", 4])] }));
  const r = await put(gw.url, "one", one, "?shards=2");
  t.equal(r.status, 201);
  t.equal(r.body.shards.length, 1, "stored whole");
  t.match(r.body.note, /whole/, `note: ${r.body.note}`);
  const c = await put(gw.url, "c", encodeModel(cnn({ channels: 4, blocks: 2, inputHW: 8, classes: 3, seed: 2 })), "?maxShardBytes=1200");
  t.equal(c.status, 201);
  t.ok(c.body.shards.length >= 2, `maxShardBytes picked ${c.body.shards.length} shards`);
});

/**
 * A 2-shard slow model under 16 concurrent requests; `setup` starts the workers and returns the one to SIGKILL
 * once a few results are in; `afterKill` may start a replacement. Resolves with every request's outcome.
 */
async function killMidLoad(t: Test, setup: (stack: Stack) => Promise<ChildProcess>, afterKill?: (stack: Stack) => Promise<unknown>) {
  const stack = await startStack(t, { JETSHARD_ACK_WAIT_MS: "2000", JETSHARD_WORKER_CONCURRENCY: "2" });
  const gw = await stack.gateway();
  const bytes = slowModel(1024, 120);
  await put(gw.url, "pipe", bytes, "?shards=2");
  const victim = await setup(stack);
  await ready(stack, gw.url, "pipe");
  const rows = 64;
  const data = Float32Array.from({ length: rows * 1024 }, (_, i) => Math.cos(i / 7));
  const want = await whole(bytes, "input", data, [rows, 1024]);
  const client = new JetshardClient(stack.infra.nc);
  t.teardown(() => client.close());
  const input: Tensor[] = [{ name: "input", datatype: "FP32", shape: [rows, 1024], data }];
  const pending = Array.from({ length: 16 }, (_, i) => client.infer("pipe", input, { timeoutMs: 90_000, jobId: `job-${i}` }));
  let done = 0;
  pending.forEach((p) => p.then(() => done++, () => undefined));
  await waitFor("a few results", () => done >= 2, 60_000, 10);
  victim.kill("SIGKILL");
  const extra = await afterKill?.(stack);
  const results = await Promise.allSettled(pending);
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
  t.equal(failed.length, 0, `no request failed ${failed.map((f) => f.reason?.message).join("; ")}`);
  const ok = results.filter((r): r is PromiseFulfilledResult<Awaited<(typeof pending)[0]>> => r.status === "fulfilled");
  t.ok(ok.every((r) => maxAbsDiff(r.value.outputs[0]!.data as Float32Array, want) <= 1e-5), "all results correct");
  return { ok, extra };
}

t.test("SIGKILL of the only worker of shard 1 mid-load, then a new worker: every request completes", async (t) => {
  const { ok, extra } = await killMidLoad(
    t,
    async (stack) => {
      await stack.worker({ JETSHARD_SERVE: "pipe:0" });
      return stack.workerProcess({ JETSHARD_SERVE: "pipe:1" });
    },
    (stack) => stack.worker({ JETSHARD_SERVE: "pipe:1" }),
  );
  const rescuer = extra as { id: string };
  t.ok(ok.some((r) => r.value.worker === rescuer.id), "the new worker finished some");
});

t.test("SIGKILL of one of two replicas of a shard: no request fails", async (t) => {
  await killMidLoad(t, async (stack) => {
    await stack.worker({ JETSHARD_SERVE: "pipe:0" });
    await stack.worker({ JETSHARD_SERVE: "pipe:1" });
    return stack.workerProcess({ JETSHARD_SERVE: "pipe:1" });
  });
});

t.test("with no shards named, workers whose budget cannot hold the whole model split it and the model is ready", async (t) => {
  const stack = await startStack(t, { JETSHARD_MODEL_CACHE_MB: "6" });
  const gw = await stack.gateway();
  // two stages of ~4 MB each (the shared weight is copied into both): 8 MB total, more than one 6 MB budget
  await put(gw.url, "pipe", slowModel(1024, 8), "?shards=2");
  const a = await stack.worker();
  const b = await stack.worker();
  await ready(stack, gw.url, "pipe");
  await waitFor("each worker holds one shard", () => a.info().shards.length === 1 && b.info().shards.length === 1);
  t.not(a.info().shards[0], b.info().shards[0], `${a.info().shards} and ${b.info().shards}`);
  const c = await stack.worker();
  await waitFor("the third worker picks a shard", () => c.info().shards.length === 1);
  const all = [a, b, c].map((w) => w.info().shards[0]).sort();
  t.ok(all.includes("pipe:0") && all.includes("pipe:1"), `still covered: ${all}`);
});
