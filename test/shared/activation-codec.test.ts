import t from "tap";
import { compressSync } from "lz4-napi";
import { COMPRESS_MIN_BYTES, PAYLOAD_TENSOR, decodeActivations, encodeActivations } from "#shared/activation-codec.js";
import { JobError } from "#shared/errors.js";
import type { Tensor } from "#shared/tensor.js";
import { decodeFrame, encodeFrame, type ActivationEncoding } from "#shared/wire.js";

/** ReLU-like activations: half zeros, the rest small floats (what a hidden layer sends). */
function relu(name: string, n: number, seed = 1): Tensor {
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = Math.max(0, Math.sin(i * 12.9898 + seed) * 3);
  return { name, datatype: "FP32", shape: [n / 8, 8], data };
}

/** Sends tensors through a real frame, as a worker forwards them, and unpacks them on the other side. */
async function hop(tensors: Tensor[], wire: Parameters<typeof encodeActivations>[1]) {
  const packed = await encodeActivations(tensors, wire);
  const frame = encodeFrame(packed.encoding ? { kind: "stage", encoding: packed.encoding } : { kind: "stage" }, packed.tensors);
  const { meta, tensors: got } = decodeFrame(frame);
  return { frame, encoding: packed.encoding, out: await decodeActivations(meta.encoding, got) };
}

t.test("lz4 shrinks ReLU activations and gives back the same bytes; other datatypes ride along untouched", async (t) => {
  const ids: Tensor = { name: "ids", datatype: "INT64", shape: [3], data: BigInt64Array.of(-1n, 2n ** 40n, 7n) };
  const input = [relu("h", 4096), ids];
  const plain = encodeFrame({ kind: "stage" }, input);
  const { frame, encoding, out } = await hop(input, { compression: "lz4", dtype: "fp32" });
  t.equal(encoding?.compression, "lz4");
  t.ok(frame.byteLength < plain.byteLength * 0.8, `frame ${frame.byteLength} B vs ${plain.byteLength} B plain`);
  t.same(out.map((x) => [x.name, x.datatype, x.shape]), input.map((x) => [x.name, x.datatype, x.shape]));
  t.same(Buffer.from(out[0]!.data.buffer, out[0]!.data.byteOffset, out[0]!.data.byteLength), Buffer.from(input[0]!.data.buffer), "FP32 bytes identical");
  t.same(out[1]!.data, ids.data, "INT64 identical");
});

t.test("fp16 halves FP32 activations on the wire and casts them back within half precision", async (t) => {
  const h = relu("h", 2048, 3);
  const { encoding, out } = await hop([h], { compression: "none", dtype: "fp16" });
  t.match(encoding, { compression: "none", bytes: 4096, tensors: [{ name: "h", datatype: "FP32", cast: "FP16" }] });
  t.equal(out[0]!.datatype, "FP32");
  t.ok(out[0]!.data instanceof Float32Array);
  const a = h.data as Float32Array;
  const b = out[0]!.data as Float32Array;
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!) / Math.max(Math.abs(a[i]!), 2 ** -14));
  t.ok(worst <= 2 ** -11, `relative error ${worst} within half an fp16 step`);
  const both = await hop([h], { compression: "lz4", dtype: "fp16" });
  t.same(both.out[0]!.data, b, "lz4 on top of fp16 is lossless");
});

t.test("small or incompressible activations are sent plain, and default settings change nothing", async (t) => {
  const small = relu("s", (COMPRESS_MIN_BYTES / 4 / 8 - 1) * 8);
  const r = await hop([small], { compression: "lz4", dtype: "fp32" });
  t.equal(r.encoding, undefined, "below the threshold: a plain frame");
  t.same(r.out[0]!.data, small.data);
  let x = 2463534242;
  const noise = new Uint8Array(8192).map(() => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 24;
  });
  const n = await hop([{ name: "n", datatype: "UINT8", shape: [8192], data: noise }], { compression: "lz4", dtype: "fp32" });
  t.equal(n.encoding, undefined, "incompressible: sent as a plain frame, without the encoding's header bytes");
  t.same(n.out[0]!.data, noise);
  const plain = await encodeActivations([small], { compression: "none", dtype: "fp32" });
  t.equal(plain.encoding, undefined, "none/fp32: the frame is what it always was");
});

/** A packed frame's parts, for tampering with. */
async function packed(): Promise<{ encoding: ActivationEncoding; payload: Uint8Array }> {
  const p = await encodeActivations([relu("h", 4096)], { compression: "lz4", dtype: "fp32" });
  return { encoding: p.encoding!, payload: p.tensors[0]!.data as Uint8Array };
}
const asPayload = (data: Uint8Array): Tensor[] => [{ name: PAYLOAD_TENSOR, datatype: "UINT8", shape: [data.byteLength], data }];

t.test("hostile or corrupt packed activations are refused with a reason before anything large is allocated", async (t) => {
  const { encoding, payload } = await packed();
  const refused = async (what: string, enc: unknown, data: Uint8Array, code: string, re: RegExp) => {
    const err = await decodeActivations(enc, asPayload(data)).then(
      () => null,
      (e: unknown) => e,
    );
    t.ok(err instanceof JobError, `${what}: a JobError`);
    t.match(err, { code, retryable: false, message: re }, what);
  };
  const huge = { ...encoding, bytes: 2 ** 30 * 4, tensors: [{ name: "h", datatype: "FP32", shape: [2 ** 30] }] };
  await refused("declared 4 GiB", huge, payload, "PAYLOAD_TOO_LARGE", /activations: declared 4294967296 bytes uncompressed, more than the limit/);
  const lied = { ...encoding, bytes: 12345 };
  await refused("size that does not match the shapes", lied, payload, "BAD_REQUEST", /declared 12345 bytes, but the tensors listed need 16384/);
  const prefix = Uint8Array.from(payload);
  new DataView(prefix.buffer).setUint32(0, 999_999, true);
  await refused("lz4 prefix disagreeing with the header", encoding, prefix, "BAD_REQUEST", /lz4 block says 999999 bytes/);
  // 64 MiB of zeros declared from a 40-byte block: more than lz4 can expand (its limit is ~255×)
  const bomb = { compression: "lz4", bytes: 64 << 20, tensors: [{ name: "h", datatype: "UINT8", shape: [64 << 20] }] };
  const tiny = new Uint8Array(40);
  new DataView(tiny.buffer).setUint32(0, 64 << 20, true);
  await refused("a decompression bomb", bomb, tiny, "PAYLOAD_TOO_LARGE", /more than lz4 can expand to/);
  const corrupt = Uint8Array.from(payload);
  for (let i = 8; i < corrupt.length; i += 7) corrupt[i] = corrupt[i]! ^ 0xa5;
  await refused("corrupt lz4 data", encoding, corrupt, "BAD_REQUEST", /lz4 payload (does not decompress|decompressed to)/);
  await refused("truncated lz4 data", encoding, payload.subarray(0, payload.length >> 1), "BAD_REQUEST", /activations: /);
  await refused("an unknown compression", { ...encoding, compression: "zstd" }, payload, "BAD_REQUEST", /encoding\.compression/);
  await refused("a cast of a non-FP32 tensor", { ...encoding, tensors: [{ name: "h", datatype: "INT32", shape: [4096], cast: "FP16" }] }, payload, "BAD_REQUEST", /only FP32 may be cast/);
  await refused("an uncompressed payload of the wrong size", { ...encoding, compression: "none" }, payload, "BAD_REQUEST", /payload has \d+ bytes, not the 16384 declared/);
  await refused("a frame with extra tensors", encoding, new Uint8Array(0), "BAD_REQUEST", /activations: /);
  const err = await decodeActivations(encoding, [...asPayload(payload), ...asPayload(payload)]).catch((e: Error) => e);
  t.match(err, { message: /exactly one UINT8 tensor "payload"/ });
  // a valid block under a lower limit: the receiver's limit wins
  const ok = compressSync(Buffer.alloc(16384));
  await t.rejects(decodeActivations(encoding, asPayload(ok), { maxBytes: 8192 }), { code: "PAYLOAD_TOO_LARGE" });
  t.same((await decodeActivations(encoding, asPayload(ok)))[0]!.data, new Float32Array(4096), "and the same block within it decodes");
});
