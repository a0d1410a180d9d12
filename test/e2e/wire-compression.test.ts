import t from "tap";
import type { Msg } from "@nats-io/transport-node";
import { JetshardClient } from "#shared/client.js";
import { writeEnvelope } from "#shared/envelope.js";
import { addModel } from "#shared/model-repo.js";
import { encodeModel, floatTensor, mlp, randomFloats, rng } from "#shared/onnx/builder.js";
import { subjects } from "#shared/subjects.js";
import type { Tensor } from "#shared/tensor.js";
import { decodeFrame, encodeFrame, type StageMeta } from "#shared/wire.js";
import { startStack, waitFor } from "../helpers/stack.js";

/**
 * An MLP 16-1024-1024-1024-8 split in 2 between its big layers: the second layer's MatMul output (1024 floats per
 * row) crosses the hop. Dense float activations hardly compress with LZ4, so that layer is pruned the way
 * structured pruning leaves a network: 3 of every 4 output channels zero, so 3/4 of the activations are exact zeros.
 */
function prunedMlp(): Uint8Array {
  const proto = mlp({ layers: [16, 1024, 1024, 1024, 8], seed: 11 });
  const inits = proto.graph!.initializer!;
  const w = randomFloats(1024 * 1024, rng(3), 0.05).map((v, k) => (k % 1024) % 4 === 0 ? v : 0);
  inits[inits.findIndex((x) => x.name === "W1")] = floatTensor("W1", [1024, 1024], w);
  return encodeModel(proto);
}
const BYTES = prunedMlp();
const ROWS = 4;
const INPUT: Tensor[] = [{ name: "input", datatype: "FP32", shape: [ROWS, 16], data: Float32Array.from({ length: ROWS * 16 }, (_, i) => Math.sin(i / 5)) }];

async function put(url: string, name: string, query: string) {
  const res = await fetch(`${url}/v1/models/${name}${query}`, { method: "PUT", body: BYTES });
  return { status: res.status, body: (await res.json()) as any };
}
const getJson = async (url: string) => (await (await fetch(url)).json()) as any;

t.test("lz4 and fp16 on the wire between 2 stages: same outputs (lz4 exactly, fp16 within tolerance), fewer bytes per hop", async (t) => {
  const stack = await startStack(t);
  const gw = await stack.gateway();
  const settings = { "w-none": "", "w-lz4": "&compression=lz4", "w-fp16": "&compression=lz4&wireDtype=fp16", "w-half": "&wireDtype=fp16" };
  for (const [name, q] of Object.entries(settings)) {
    const up = await put(gw.url, name, `?shards=2${q}`);
    t.equal(up.status, 201, `${name}: ${JSON.stringify(up.body).slice(0, 200)}`);
    t.equal(up.body.shards.length, 2, `${name} has 2 shards`);
  }
  // every hop between stages, as it crosses NATS
  const hops = new Map<string, Msg[]>();
  const sub = stack.infra.nc.subscribe(subjects.stageAll, {
    callback: (_e, m) => {
      const model = m.subject.split(".")[2]!;
      hops.set(model, [...(hops.get(model) ?? []), m]);
    },
  });
  t.teardown(() => sub.unsubscribe());
  await stack.worker();
  for (const name of Object.keys(settings)) await waitFor(`${name} ready`, async () => (await fetch(`${gw.url}/v2/models/${name}/ready`)).ok, 20_000);

  const client = new JetshardClient(stack.infra.nc);
  t.teardown(() => client.close());
  const out: Record<string, Float32Array> = {};
  for (const name of Object.keys(settings)) out[name] = (await client.infer(name, INPUT)).outputs[0]!.data as Float32Array;
  await waitFor("one hop per model seen", () => Object.keys(settings).every((n) => hops.get(n)?.length === 1));
  const size = (n: string) => hops.get(n)![0]!.data.byteLength;
  const meta = (n: string) => decodeFrame(hops.get(n)![0]!.data).meta as StageMeta;

  t.same(out["w-lz4"], out["w-none"], "lz4 is lossless: the outputs are bit for bit the same");
  let worst = 0;
  for (const [i, v] of out["w-none"]!.entries()) worst = Math.max(worst, Math.abs(out["w-fp16"]![i]! - v) / Math.max(1, Math.abs(v)));
  t.ok(worst > 0 && worst < 1e-2, `fp16 outputs within 1e-2 of fp32 (worst relative error ${worst})`);
  t.same(out["w-half"], out["w-fp16"], "fp16 alone gives what fp16 + lz4 gives");

  t.equal(meta("w-none").encoding, undefined, "uncompressed hops are plain frames");
  t.match(meta("w-lz4").encoding, { compression: "lz4", bytes: ROWS * 1024 * 4, tensors: [{ datatype: "FP32", shape: [ROWS, 1024] }] }, "the header says how the payload is packed");
  t.match(meta("w-fp16").encoding, { compression: "lz4", bytes: ROWS * 1024 * 2, tensors: [{ datatype: "FP32", cast: "FP16" }] });
  t.ok(size("w-lz4") < size("w-none") * 0.5, `lz4 hop ${size("w-lz4")} B < none ${size("w-none")} B`);
  t.ok(size("w-half") < size("w-none") * 0.55, `fp16 hop ${size("w-half")} B ≈ half of ${size("w-none")} B`);
  t.ok(size("w-fp16") < size("w-half"), `lz4+fp16 hop ${size("w-fp16")} B < fp16 alone ${size("w-half")} B`);
  t.comment(`bytes per hop (${ROWS} rows × 1024 FP32): none ${size("w-none")}, lz4 ${size("w-lz4")}, fp16 ${size("w-half")}, lz4+fp16 ${size("w-fp16")}`);

  const v2 = await getJson(`${gw.url}/v2/models/w-fp16`);
  t.same(v2.parameters, { shards: 2, wire: { compression: "lz4", dtype: "fp16" } }, "v2 metadata shows the wire settings");
  t.equal((await getJson(`${gw.url}/v2/models/w-none`)).parameters, undefined, "and leaves them out at the defaults");
  t.same((await getJson(`${gw.url}/v1/models/w-lz4`)).versions[0].wire, { compression: "lz4", dtype: "fp32" }, "the model record has them");
  t.same((await getJson(`${gw.url}/v1/models/w-none`)).versions[0].wire, { compression: "none", dtype: "fp32" });
});

t.test("packed activations still too big for one message travel by claim check and unpack on the other side", async (t) => {
  const stack = await startStack(t, {}, { natsExtra: "max_payload: 65536" });
  const gw = await stack.gateway();
  t.equal((await put(gw.url, "big-none", "?shards=2")).status, 201);
  t.equal((await put(gw.url, "big-lz4", "?shards=2&compression=lz4")).status, 201);
  const hops: Msg[] = [];
  const sub = stack.infra.nc.subscribe(subjects.stage("big-lz4", 1), { callback: (_e, m) => void hops.push(m) });
  t.teardown(() => sub.unsubscribe());
  await stack.worker();
  for (const m of ["big-none", "big-lz4"]) await waitFor(`${m} ready`, async () => (await fetch(`${gw.url}/v2/models/${m}/ready`)).ok, 20_000);
  // 64 rows: 256 KiB of activations, ~100 KiB after lz4, still over the 64 KiB max payload
  const rows = 64;
  const input: Tensor[] = [{ name: "input", datatype: "FP32", shape: [rows, 16], data: Float32Array.from({ length: rows * 16 }, (_, i) => Math.cos(i / 3)) }];
  const client = new JetshardClient(stack.infra.nc);
  t.teardown(() => client.close());
  const want = (await client.infer("big-none", input)).outputs[0]!.data;
  const got = (await client.infer("big-lz4", input)).outputs[0]!.data;
  t.same(got, want, "same outputs through the claim check");
  await waitFor("the hop", () => hops.length === 1);
  const outer = decodeFrame(hops[0]!.data).meta as StageMeta;
  t.ok(outer.claim, "the hop went by claim check");
  t.equal(outer.encoding, undefined, "the encoding travels with the claimed frame, not the message");
  const claims = await stack.infra.jsm.streams.info("OBJ_claims");
  t.ok(claims.state.last_seq >= 3, "the claims store was written to");
});

t.test("bad wire settings at upload get a 400 naming the field, and nothing is stored", async (t) => {
  const stack = await startStack(t);
  const gw = await stack.gateway();
  for (const [q, re] of [
    ["?shards=2&compression=zstd", /^compression: .*"none"\|"lz4".*\(got "zstd"\)/],
    ["?shards=2&wireDtype=fp8", /^wireDtype: .*"fp32"\|"fp16"/],
    [`?config=${encodeURIComponent(JSON.stringify({ shards: 2, wire: { compression: "gzip" } }))}`, /^config\.wire\.compression: /],
    [`?config=${encodeURIComponent(JSON.stringify({ wire: { dtype: "fp32", level: 9 } }))}`, /^config\.wire: .*level/],
  ] as const) {
    const r = await put(gw.url, "bad", q);
    t.equal(r.status, 400, `${q} → 400`);
    t.match(r.body.error, re, `${q}: ${r.body.error}`);
  }
  t.equal((await fetch(`${gw.url}/v1/models/bad`)).status, 404, "nothing stored");
  await t.rejects(addModel(stack.infra, "bad", BYTES, { shards: 2, wire: { compression: "brotli" as never } }), { code: "BAD_REQUEST", message: /^wire\.compression: / }, "addModel names it too");
});

t.test("a corrupt or oversized compressed activation published straight to NATS is dead-lettered with a reason; the worker keeps serving", async (t) => {
  const stack = await startStack(t);
  const gw = await stack.gateway();
  t.equal((await put(gw.url, "m", "?shards=2&compression=lz4")).status, 201);
  await stack.worker();
  await waitFor("m ready", async () => (await fetch(`${gw.url}/v2/models/m/ready`)).ok, 20_000);

  const stage = (id: string, encoding: unknown, payload: Uint8Array) => {
    const meta = { kind: "stage", id, model: "m", version: 1, stage: 1, format: "frame", encoding };
    const body = encodeFrame(meta, [{ name: "payload", datatype: "UINT8", shape: [payload.byteLength], data: payload }]);
    return stack.infra.js.publish(subjects.stage("m", 1), body, { headers: writeEnvelope({ msgId: id, jobId: id }) });
  };
  const lz4Header = (declared: number, rest: number[]) => {
    const p = new Uint8Array(4 + rest.length);
    new DataView(p.buffer).setUint32(0, declared, true);
    p.set(rest, 4);
    return p;
  };
  const tensors = (n: number) => [{ name: "act1", datatype: "FP32", shape: [1, n] }];
  // claims 4 GiB uncompressed: refused from the header alone
  await stage("evil-big", { compression: "lz4", bytes: 2 ** 32, tensors: tensors(2 ** 30) }, lz4Header(0, [1, 2, 3, 4]));
  // right sizes, garbage lz4 (a match pointing before the start of the output)
  await stage("evil-corrupt", { compression: "lz4", bytes: 4096, tensors: tensors(1024) }, lz4Header(4096, [0x1f, 0xaa, 0x00, 0x10, ...new Array(40).fill(0x55)]));
  const dls: any[] = await waitFor("both dead-lettered", async () => {
    const list = (await getJson(`${gw.url}/v1/dead-letters?model=m`)).deadLetters as any[];
    return list.length >= 2 ? list : null;
  });
  const byId = Object.fromEntries(dls.map((d) => [d.id, d]));
  t.match(byId["evil-big"], { code: "PAYLOAD_TOO_LARGE", attempts: 1, error: /activations: declared 4294967296 bytes uncompressed, more than the limit/ });
  t.match(byId["evil-corrupt"], { code: "BAD_REQUEST", attempts: 1, error: /activations: lz4 payload (does not decompress|decompressed to)/ });

  const client = new JetshardClient(stack.infra.nc);
  t.teardown(() => client.close());
  const r = await client.infer("m", INPUT);
  t.same(r.outputs[0]!.shape, [ROWS, 8], "the same worker still answers through its lz4 hop");
});
