/**
 * Wire contracts: the v2 JSON request/response shapes (zod), model metadata, and the binary frame
 * jetshard uses for jobs and results on every NATS hop.
 *
 * Frame layout (all integers little-endian):
 *   "JSF1" | u32 header length | header JSON (UTF-8) | zero padding to 8 bytes | tensor bytes, each padded to 8
 * The header lists the tensors (name, datatype, shape, byte offset from the start of the tensor area, length).
 * Aligning to 8 lets a receiver view the bytes as typed arrays without copying.
 */
import { z } from "zod";
import { JobError } from "./errors.js";
import { DATATYPES, MAX_RANK, MAX_TENSOR_ELEMENTS, bytesOf, bytesPerElement, checkShape, typedArrayFromBytes, type Datatype, type Tensor } from "./tensor.js";

export const DatatypeSchema = z.enum(DATATYPES);

/** Longest tensor name, request id or parameter key a request may carry. */
export const MAX_NAME_LENGTH = 256;
/** Most inputs, or requested outputs, in one request. */
export const MAX_TENSORS = 256;
/** Most keys in one `parameters` object. */
export const MAX_PARAMETERS = 64;

/** Deepest nesting of arrays and objects a `parameters` object may hold. */
export const MAX_PARAMETER_DEPTH = 32;

/**
 * Whether `v` nests arrays and objects at most `max` levels deep. Iterative, so checking a value nested a million
 * deep is safe; JSON.stringify of such a value (when a job is encoded) would overflow the stack.
 */
export function withinDepth(v: unknown, max: number): boolean {
  const stack: Array<[unknown, number]> = [[v, 0]];
  while (stack.length > 0) {
    const [x, depth] = stack.pop()!;
    if (x === null || typeof x !== "object") continue;
    if (depth >= max) return false;
    for (const y of Array.isArray(x) ? x : Object.values(x)) stack.push([y, depth + 1]);
  }
  return true;
}

/** `parameters`: a plain JSON object (not an array, not null) of a bounded number of keys and a bounded depth. */
export const ParametersSchema = z
  .record(z.string().max(MAX_NAME_LENGTH), z.unknown())
  .refine((o) => Object.keys(o).length <= MAX_PARAMETERS, `must have at most ${MAX_PARAMETERS} keys`)
  .refine((o) => withinDepth(o, MAX_PARAMETER_DEPTH), `must not nest deeper than ${MAX_PARAMETER_DEPTH} levels`);
const Parameters = ParametersSchema;

const TensorName = z.string().min(1).max(MAX_NAME_LENGTH);

export const InferInputSchema = z.object({
  name: TensorName,
  shape: z.array(z.number().int().min(0).max(MAX_TENSOR_ELEMENTS)).max(MAX_RANK),
  datatype: z.string().max(32),
  parameters: Parameters.optional(),
  data: z.unknown().optional(),
});

export const InferRequestSchema = z.object({
  id: z.string().max(MAX_NAME_LENGTH).optional(),
  parameters: Parameters.optional(),
  inputs: z.array(InferInputSchema).max(MAX_TENSORS),
  outputs: z.array(z.object({ name: TensorName, parameters: Parameters.optional() })).max(MAX_TENSORS).optional(),
});
export type InferRequest = z.infer<typeof InferRequestSchema>;

export interface InferOutputJson {
  name: string;
  datatype: Datatype;
  shape: number[];
  data?: Array<number | boolean>;
  parameters?: Record<string, unknown>;
}

export interface InferResponseJson {
  model_name: string;
  model_version: string;
  id?: string;
  parameters?: Record<string, unknown>;
  outputs: InferOutputJson[];
}

/** Name, v2 datatype and shape (-1 for a dynamic dimension) of a model input or output. */
export const TensorSpecSchema = z.object({
  name: z.string(),
  datatype: DatatypeSchema,
  shape: z.array(z.number().int()),
});
export type TensorSpec = z.infer<typeof TensorSpecSchema>;

export const ShardInfoSchema = z.object({
  index: z.number().int().min(0),
  object: z.string(),
  bytes: z.number().int(),
  /** Hex SHA-256 of the shard's ONNX bytes. */
  digest: z.string(),
  inputs: z.array(TensorSpecSchema),
  outputs: z.array(TensorSpecSchema),
});
export type ShardInfo = z.infer<typeof ShardInfoSchema>;

/** Dynamic batching of a model version (Triton semantics); maxBatchSize 1 = off. */
export const BatchingSchema = z.object({
  maxBatchSize: z.number().int().min(1).max(4096),
  preferredBatchSizes: z.array(z.number().int().min(1)).default([]),
  maxQueueDelayUs: z.number().int().min(0).max(10_000_000).default(0),
});
export type Batching = z.infer<typeof BatchingSchema>;

/** Lossless compression of the activations a pipelined model sends between its stages. */
export const WIRE_COMPRESSIONS = ["none", "lz4"] as const;
/** The float type FP32 activations travel as between stages ("fp16" is lossy: half precision). */
export const WIRE_DTYPES = ["fp32", "fp16"] as const;

/**
 * How a model version's stages send activations to each other (set at upload; no effect on a model stored whole,
 * nor on the caller's inputs or the final outputs). Absent on records written before the setting existed: read
 * it through `wireOf`.
 */
export const WireSettingsSchema = z.object({
  compression: z.enum(WIRE_COMPRESSIONS).default("none"),
  dtype: z.enum(WIRE_DTYPES).default("fp32"),
});
export type WireSettings = z.infer<typeof WireSettingsSchema>;

/** The wire settings of a version without any: plain FP32 tensors, uncompressed. */
export const DEFAULT_WIRE: WireSettings = { compression: "none", dtype: "fp32" };

/** A version's wire settings, the defaults when its record predates them. */
export function wireOf(mv: { wire?: WireSettings }): WireSettings {
  return mv.wire ?? DEFAULT_WIRE;
}

export const ModelVersionSchema = z.object({
  version: z.number().int().min(1),
  createdAt: z.string(),
  platform: z.literal("onnxruntime_onnx"),
  bytes: z.number().int(),
  digest: z.string(),
  inputs: z.array(TensorSpecSchema),
  outputs: z.array(TensorSpecSchema),
  shards: z.array(ShardInfoSchema).min(1),
  note: z.string().optional(),
  batching: BatchingSchema.optional(),
  wire: WireSettingsSchema.optional(),
});
export type ModelVersion = z.infer<typeof ModelVersionSchema>;

/** The value under a model's key in the `models` KV bucket. */
export const ModelRecordSchema = z.object({
  name: z.string(),
  /** The tenant that created the model: only it (or an admin) may replace or delete it. */
  tenant: z.string().optional(),
  latest: z.number().int().min(1),
  versions: z.array(ModelVersionSchema).min(1),
});
export type ModelRecord = z.infer<typeof ModelRecordSchema>;

/** Metadata at the head of every job frame. */
export const JobMetaSchema = z.object({
  kind: z.literal("job"),
  id: z.string().min(1),
  model: z.string().min(1),
  version: z.number().int().min(1).optional(),
  /** The client's own request id, echoed in the response. */
  requestId: z.string().optional(),
  /** Output names to return; all when absent. */
  outputs: z.array(z.string()).optional(),
  parameters: Parameters.optional(),
  /** Epoch ms when the job was accepted. */
  submittedAt: z.number().optional(),
  /** Set when the inputs were too big for one message: the object (in the claims store) holding the whole frame. */
  claim: z.string().optional(),
});
export type JobMeta = z.infer<typeof JobMetaSchema>;

/**
 * How a stage frame's activations are packed: the frame then carries one UINT8 tensor (`payload`) holding the
 * tensors listed here, in order, each padded to 8 bytes, `bytes` in all, compressed as `compression` says ("lz4":
 * one LZ4 block with its size prepended; see shared/activation-codec.ts). A tensor
 * with `cast: "FP16"` is FP32 sent as FP16, cast back on receipt. The header stays plain JSON.
 */
export const ActivationEncodingSchema = z.strictObject({
  compression: z.enum(WIRE_COMPRESSIONS),
  /** Bytes of the packed tensors before compression (what the receiver allocates: checked against limits first). */
  bytes: z.number().int().min(0),
  tensors: z
    .array(
      z.strictObject({
        name: TensorName,
        datatype: DatatypeSchema,
        shape: z.array(z.number().int().min(0).max(MAX_TENSOR_ELEMENTS)).max(MAX_RANK),
        cast: z.literal("FP16").optional(),
      }),
    )
    .max(MAX_TENSORS),
});
export type ActivationEncoding = z.infer<typeof ActivationEncodingSchema>;

/** Metadata of a pipeline hop: the activations entering shard `stage` of a sharded model. */
export const StageMetaSchema = z.object({
  kind: z.literal("stage"),
  id: z.string().min(1),
  model: z.string().min(1),
  version: z.number().int().min(1),
  stage: z.number().int().min(1),
  requestId: z.string().optional(),
  outputs: z.array(z.string()).optional(),
  parameters: Parameters.optional(),
  /** The format the client asked in; the last stage answers in it. */
  format: z.enum(["frame", "json"]),
  submittedAt: z.number().optional(),
  /** Set when the activations were too big for one message: the object (in the claims store) holding the frame. */
  claim: z.string().optional(),
  /** Set when the activations are packed (compressed and/or cast): see shared/activation-codec.ts. */
  encoding: ActivationEncodingSchema.optional(),
});
export type StageMeta = z.infer<typeof StageMetaSchema>;

export const ResultMetaSchema = z.object({
  kind: z.literal("result"),
  id: z.string(),
  model: z.string(),
  version: z.number().int().optional(),
  requestId: z.string().optional(),
  ok: z.boolean(),
  error: z.object({ code: z.string(), message: z.string() }).optional(),
  worker: z.string().optional(),
  attempt: z.number().int().optional(),
  /** Milliseconds spent in the model run(s). */
  computeMs: z.number().optional(),
});
export type ResultMeta = z.infer<typeof ResultMetaSchema>;

const MAGIC = [0x4a, 0x53, 0x46, 0x31]; // "JSF1"

interface FrameTensorEntry {
  name: string;
  datatype: Datatype;
  shape: number[];
  offset: number;
  length: number;
}

const pad8 = (n: number) => (n + 7) & ~7;

export function isFrame(bytes: Uint8Array): boolean {
  return bytes.length >= 8 && bytes[0] === MAGIC[0] && bytes[1] === MAGIC[1] && bytes[2] === MAGIC[2] && bytes[3] === MAGIC[3];
}

/** Encodes metadata and tensors into one binary frame. */
export function encodeFrame(meta: object, tensors: readonly Tensor[]): Uint8Array {
  const entries: FrameTensorEntry[] = [];
  let offset = 0;
  for (const t of tensors) {
    entries.push({ name: t.name, datatype: t.datatype, shape: t.shape, offset, length: t.data.byteLength });
    offset = pad8(offset + t.data.byteLength);
  }
  const header = new TextEncoder().encode(JSON.stringify({ ...meta, tensors: entries }));
  const dataStart = pad8(8 + header.length);
  const out = new Uint8Array(dataStart + offset);
  out.set(MAGIC, 0);
  new DataView(out.buffer).setUint32(4, header.length, true);
  out.set(header, 8);
  tensors.forEach((t, i) => out.set(bytesOf(t.data), dataStart + entries[i]!.offset));
  return out;
}

/** Decodes a frame; tensors are views over `bytes` when aligned. Throws JobError BAD_REQUEST on a malformed frame. */
export function decodeFrame(bytes: Uint8Array): { meta: Record<string, unknown>; tensors: Tensor[] } {
  if (!isFrame(bytes)) throw new JobError("BAD_REQUEST", "message is not a jetshard frame (missing JSF1 magic)");
  const headerLen = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(4, true);
  if (8 + headerLen > bytes.length) throw new JobError("BAD_REQUEST", "frame header length exceeds the message");
  let header: { tensors?: FrameTensorEntry[] } & Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLen)));
  } catch (err) {
    throw new JobError("BAD_REQUEST", "frame header is not valid JSON", { cause: err });
  }
  if (header === null || typeof header !== "object" || Array.isArray(header) || (header.tensors !== undefined && !Array.isArray(header.tensors))) {
    throw new JobError("BAD_REQUEST", "frame header must be a JSON object whose tensors are an array");
  }
  const dataStart = pad8(8 + headerLen);
  const tensors: Tensor[] = [];
  for (const [i, e] of (header.tensors ?? []).entries()) {
    const where = `frame tensor ${i} (${JSON.stringify(e?.name)})`;
    if (!e || typeof e.name !== "string" || !DatatypeSchema.safeParse(e.datatype).success || !Array.isArray(e.shape)) {
      throw new JobError("BAD_REQUEST", `${where}: needs name, datatype and shape`);
    }
    const start = dataStart + e.offset;
    if (!Number.isSafeInteger(e.offset) || !Number.isSafeInteger(e.length) || e.offset < 0 || e.length < 0 || start + e.length > bytes.length) {
      throw new JobError("BAD_REQUEST", `${where}: bytes out of range`);
    }
    const needed = checkShape(e.shape, `input "${e.name}"`) * bytesPerElement(e.datatype);
    if (needed !== e.length) {
      throw new JobError("INPUT_SHAPE", `input "${e.name}": shape [${e.shape.join(",")}] of ${e.datatype} needs ${needed} bytes, got ${e.length}`);
    }
    tensors.push({ name: e.name, datatype: e.datatype, shape: e.shape, data: typedArrayFromBytes(e.datatype, bytes.subarray(start, start + e.length)) });
  }
  const { tensors: _ignored, ...meta } = header;
  return { meta, tensors };
}

/** Formats the first zod issue as `path: message`, the way every 400 names its field. */
export function zodMessage(err: z.ZodError, prefix = ""): string {
  const issue = err.issues[0];
  if (!issue) return "invalid input";
  const path = issue.path
    .map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`))
    .join("");
  const where = [prefix, path].filter(Boolean).join(prefix && path && !path.startsWith("[") ? "." : "");
  return `${where || "body"}: ${issue.message}`;
}

/** A worker's entry in the `workers` KV bucket, refreshed every heartbeat. */
/** One GPU as nvidia-smi reports it. */
export const GpuSampleSchema = z.object({
  index: z.number().int(),
  name: z.string(),
  uuid: z.string().optional(),
  utilPercent: z.number().optional(),
  memUsedMb: z.number().optional(),
  memTotalMb: z.number().optional(),
});
export type GpuSample = z.infer<typeof GpuSampleSchema>;

export const ResourcesSchema = z.object({
  /** This process's CPU use since the last sample, percent of one core (may exceed 100). */
  cpuPercent: z.number(),
  rssBytes: z.number(),
  /** Host 1-minute load average. */
  load1: z.number(),
  memTotalBytes: z.number(),
  memFreeBytes: z.number(),
  /** Every GPU nvidia-smi lists on the host (empty without one). */
  gpus: z.array(GpuSampleSchema),
});
export type Resources = z.infer<typeof ResourcesSchema>;

/** Cumulative per-shard counters a worker reports in its heartbeat. */
export const ShardStatsSchema = z.object({
  /** Requests (jobs) answered, succeeded and failed. */
  succeeded: z.number(),
  failed: z.number(),
  /** Inferences (batch rows for models that batch, else 1 per request) vs ORT runs: their ratio is the mean batch size. */
  inferences: z.number(),
  executions: z.number(),
  /** Summed ms waiting in the queue (stored in JetStream to execution start) and computing (input, ORT runs, output). */
  queueMs: z.number(),
  computeMs: z.number(),
  /** Bytes of job messages received and of results/activations sent onward. */
  bytesIn: z.number(),
  bytesOut: z.number(),
});
export type ShardStats = z.infer<typeof ShardStatsSchema>;

export const WorkerInfoSchema = z.object({
  id: z.string(),
  host: z.string(),
  pid: z.number().int(),
  version: z.string(),
  device: z.object({
    kind: z.enum(["cuda", "cpu"]),
    name: z.string(),
    memoryMb: z.number().optional(),
    note: z.string(),
    /** The CUDA device id this worker is bound to (one worker per GPU). */
    gpuIndex: z.number().int().optional(),
  }),
  /** What the host and this process use, sampled every JETSHARD_RESOURCE_SAMPLE_MS. */
  resources: ResourcesSchema.optional(),
  /** Cumulative counters per shard served ("model:index"), for rates on the dashboard. */
  stats: z.record(z.string(), ShardStatsSchema).optional(),
  /** Models this worker is consuming jobs for. */
  models: z.array(z.string()),
  /** Shards served, as "model:index". */
  shards: z.array(z.string()),
  /** "auto": placement picks the shards; "fixed": named by JETSHARD_SERVE. */
  placement: z.enum(["auto", "fixed"]).default("auto"),
  /** Memory budget for loaded model bytes. */
  budgetBytes: z.number().default(0),
  inFlight: z.number().int(),
  processed: z.number().int(),
  failed: z.number().int(),
  concurrency: z.number().int(),
  startedAt: z.string(),
  /** Epoch ms of the last heartbeat. */
  updatedAt: z.number(),
});
export type WorkerInfo = z.infer<typeof WorkerInfoSchema>;

/** Whether a registry entry is live: its last heartbeat is younger than the workers' TTL. */
export function isLive(w: Pick<WorkerInfo, "updatedAt">, ttlMs: number, now = Date.now()): boolean {
  return now - w.updatedAt < ttlMs;
}
