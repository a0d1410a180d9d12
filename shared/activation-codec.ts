/**
 * The activation codec: how a pipelined model's stages pack the tensors they send each other, per the model
 * version's wire settings (`wire: { compression, dtype }`). Only hops between stages are packed; the caller's
 * inputs and the final outputs never are.
 *
 * A packed stage frame is an ordinary JSF1 frame whose header (plain JSON, readable by any tool) carries
 * `encoding` (see `ActivationEncodingSchema`: the real tensors' names, datatypes and shapes, and the packed size)
 * and whose only tensor, `payload` (UINT8), holds the tensors back to back, each padded to 8 bytes, FP32 ones
 * cast to FP16 when `dtype` is "fp16", then compressed with LZ4 (lz4-napi's block format: the uncompressed size as
 * a u32 LE, then the block) when `compression` is "lz4" and it pays. With no cast and nothing won by LZ4, the
 * frame stays a plain, unpacked one.
 *
 * Unpacking is bounded: the size to allocate is computed from the declared shapes, must match the declared and
 * LZ4-prepended sizes, the codec's limit and LZ4's largest possible ratio, before a byte is decompressed.
 * Anything wrong is a JobError that is not retryable (the hop is dead-lettered with the reason).
 */
import { compress, compressSync, uncompress, uncompressSync } from "lz4-napi";
import { JobError } from "./errors.js";
import { float16ArrayToFloat32, float32ArrayToFloat16 } from "./float16.js";
import { bytesOf, bytesPerElement, checkShape, typedArrayFromBytes, type Tensor } from "./tensor.js";
import { ActivationEncodingSchema, zodMessage, type ActivationEncoding, type WireSettings } from "./wire.js";

/** Packed activations smaller than this (bytes) are sent uncompressed: LZ4 would save too little to pay. */
export const COMPRESS_MIN_BYTES = 1024;
/** Largest packed (uncompressed) activations a receiver accepts by default: 512 MiB. */
export const MAX_ACTIVATION_BYTES = 512 * 1024 * 1024;
/** Above this, (de)compression runs on libuv's thread pool rather than blocking the event loop. */
const SYNC_MAX_BYTES = 256 * 1024;
/** LZ4 cannot expand a block by more than ~255×; a claim beyond that is not LZ4 output. */
const LZ4_MAX_RATIO = 255;
/** The name of the one tensor a packed frame carries. */
export const PAYLOAD_TENSOR = "payload";

export interface CodecLimits {
  /** Largest packed size to accept (bytes); default MAX_ACTIVATION_BYTES. */
  maxBytes?: number;
}

// arithmetic, not bitwise: declared sizes may exceed 2^31, where `& ~7` would wrap
const pad8 = (n: number) => Math.ceil(n / 8) * 8;

/**
 * Packs activations for the next stage as `wire` asks. Returns them unchanged (no `encoding`) when there is
 * nothing to do: default settings, or activations above the receiver's limit (sent plain, as before).
 */
export async function encodeActivations(tensors: readonly Tensor[], wire: WireSettings, limits: CodecLimits = {}): Promise<{ tensors: Tensor[]; encoding?: ActivationEncoding }> {
  const cast = wire.dtype === "fp16";
  if (!cast && wire.compression === "none") return { tensors: [...tensors] };
  const entries = tensors.map((t) => ({ t, half: cast && t.datatype === "FP32" }));
  const total = entries.reduce((n, { t, half }) => n + pad8(half ? t.data.length * 2 : t.data.byteLength), 0);
  if (total > (limits.maxBytes ?? MAX_ACTIVATION_BYTES)) return { tensors: [...tensors] };
  const packed = new Uint8Array(total);
  let offset = 0;
  for (const { t, half } of entries) {
    if (half) float32ArrayToFloat16(t.data as Float32Array, new Uint16Array(packed.buffer, offset, t.data.length));
    else packed.set(bytesOf(t.data), offset);
    offset += pad8(half ? t.data.length * 2 : t.data.byteLength);
  }
  const described = entries.map(({ t, half }) => ({ name: t.name, datatype: t.datatype, shape: t.shape, ...(half ? { cast: "FP16" as const } : {}) }));
  let payload: Uint8Array = packed;
  let compression: ActivationEncoding["compression"] = "none";
  if (wire.compression === "lz4" && total >= COMPRESS_MIN_BYTES) {
    // no byte-shuffle first: tried, it won 4 % on dense FP32 activations and lost a third of the gain on ReLU ones
    const buf = Buffer.from(packed.buffer, packed.byteOffset, packed.byteLength);
    const z = total > SYNC_MAX_BYTES ? await compress(buf) : compressSync(buf);
    // incompressible data (dense float activations) stays as it is: the receiver then skips decompression too
    if (z.byteLength < total) {
      payload = z;
      compression = "lz4";
    }
  }
  // nothing won (no cast, and lz4 did not pay): the frame stays a plain one, without the encoding's header bytes
  if (!cast && compression === "none") return { tensors: [...tensors] };
  const encoding: ActivationEncoding = { compression, bytes: total, tensors: described };
  return { tensors: [{ name: PAYLOAD_TENSOR, datatype: "UINT8", shape: [payload.byteLength], data: payload }], encoding };
}

/** A refusal of a packed activation: terminal (dead-lettered), naming what is wrong. */
function refuse(msg: string, code: "BAD_REQUEST" | "PAYLOAD_TOO_LARGE" = "BAD_REQUEST", cause?: unknown): JobError {
  return new JobError(code, `activations: ${msg}`, { cause });
}

/**
 * Unpacks activations a stage frame carries. `encoding` is the frame header's (unvalidated); without one the
 * tensors are returned as they are. Throws JobError (never retryable) for anything malformed, oversized or corrupt.
 */
export async function decodeActivations(encoding: unknown, tensors: Tensor[], limits: CodecLimits = {}): Promise<Tensor[]> {
  if (encoding === undefined) return tensors;
  const parsed = ActivationEncodingSchema.safeParse(encoding);
  if (!parsed.success) throw refuse(zodMessage(parsed.error, "encoding"));
  const enc = parsed.data;
  const maxBytes = limits.maxBytes ?? MAX_ACTIVATION_BYTES;
  const payload = tensors.length === 1 && tensors[0]!.name === PAYLOAD_TENSOR && tensors[0]!.datatype === "UINT8" ? bytesOf(tensors[0]!.data) : undefined;
  if (!payload) throw refuse(`a packed frame must carry exactly one UINT8 tensor "${PAYLOAD_TENSOR}"`);
  // the size to allocate comes from the shapes (each bounded by checkShape), never from the sender's word alone
  let expected = 0;
  const layout = enc.tensors.map((e) => {
    if (e.cast && e.datatype !== "FP32") throw refuse(`tensor "${e.name}": only FP32 may be cast to FP16, not ${e.datatype}`);
    const n = checkShape(e.shape, `activation "${e.name}"`);
    const length = n * (e.cast ? 2 : bytesPerElement(e.datatype));
    const at = { e, n, offset: expected, length };
    expected += pad8(length);
    return at;
  });
  if (expected !== enc.bytes) throw refuse(`declared ${enc.bytes} bytes, but the tensors listed need ${expected}`);
  if (enc.bytes > maxBytes) throw refuse(`declared ${enc.bytes} bytes uncompressed, more than the limit of ${maxBytes}`, "PAYLOAD_TOO_LARGE");
  let packed: Uint8Array;
  if (enc.compression === "none") {
    if (payload.byteLength !== enc.bytes) throw refuse(`payload has ${payload.byteLength} bytes, not the ${enc.bytes} declared`);
    packed = payload;
  } else {
    if (payload.byteLength < 5) throw refuse("lz4 payload is truncated");
    const prepended = new DataView(payload.buffer, payload.byteOffset, payload.byteLength).getUint32(0, true);
    if (prepended !== enc.bytes) throw refuse(`lz4 block says ${prepended} bytes uncompressed, the header ${enc.bytes}`);
    if (enc.bytes > (payload.byteLength - 4) * LZ4_MAX_RATIO + 64) {
      throw refuse(`declared ${enc.bytes} bytes from a ${payload.byteLength}-byte lz4 block: more than lz4 can expand to`, "PAYLOAD_TOO_LARGE");
    }
    try {
      packed = enc.bytes > SYNC_MAX_BYTES ? await uncompress(payload) : uncompressSync(payload);
    } catch (err) {
      throw refuse(`lz4 payload does not decompress: ${(err as Error).message}`, "BAD_REQUEST", err);
    }
    if (packed.byteLength !== enc.bytes) throw refuse(`lz4 payload decompressed to ${packed.byteLength} bytes, not the ${enc.bytes} declared`);
  }
  return layout.map(({ e, n, offset, length }) => {
    const bytes = packed.subarray(offset, offset + length);
    if (!e.cast) return { name: e.name, datatype: e.datatype, shape: e.shape, data: typedArrayFromBytes(e.datatype, bytes) };
    return { name: e.name, datatype: "FP32", shape: e.shape, data: float16ArrayToFloat32(typedArrayFromBytes("UINT16", bytes) as Uint16Array, new Float32Array(n)) };
  });
}
