/**
 * The model repository: ONNX bytes in the object store, metadata in the `models` KV bucket.
 * Re-adding a name creates a new version; versions are immutable.
 */
import { createHash } from "node:crypto";
import * as ort from "onnxruntime-node";
import type { Infra } from "./nats.js";
import { decodeModel, encodeModel } from "./onnx/builder.js";
import { partition, PartitionError } from "./onnx/partition.js";
import { assertNoExternalData } from "./onnx/external-data.js";
import { JobError, fromNatsError } from "./errors.js";
import { NAME_PATTERN, STREAMS, consumerName, highConsumerName, subjects } from "./subjects.js";
import { datatypeFromOrt } from "./tensor.js";
import { BatchingSchema, ModelRecordSchema, WireSettingsSchema, zodMessage, type Batching, type ModelRecord, type ModelVersion, type ShardInfo, type TensorSpec, type WireSettings } from "./wire.js";

/** Batching when the upload says nothing: on (32 rows, no added delay) when every input's first dim is dynamic. */
export const DEFAULT_BATCHING: Batching = { maxBatchSize: 32, preferredBatchSizes: [], maxQueueDelayUs: 0 };

/**
 * The batching a version gets: the requested settings over the defaults; off when the model cannot batch.
 * Throws a 400 naming the setting when batching is asked for a model whose first dimension is fixed.
 */
export function resolveBatching(inputs: readonly TensorSpec[], asked: Partial<Batching> | undefined): Batching {
  const batchable = inputs.length > 0 && inputs.every((i) => i.shape.length > 0 && i.shape[0] === -1);
  if (!batchable) {
    if (asked?.maxBatchSize !== undefined && asked.maxBatchSize > 1) {
      const fixed = inputs.find((i) => !(i.shape.length > 0 && i.shape[0] === -1));
      throw new JobError("BAD_REQUEST", `maxBatchSize: input "${fixed?.name}" has shape [${fixed?.shape.join(",")}]; batching needs a dynamic first dimension`);
    }
    return { maxBatchSize: 1, preferredBatchSizes: [], maxQueueDelayUs: 0 };
  }
  const merged = { ...DEFAULT_BATCHING, ...Object.fromEntries(Object.entries(asked ?? {}).filter(([, v]) => v !== undefined)) };
  // what is stored must read back: a setting the record's schema refuses would make every later read of the model fail
  const parsed = BatchingSchema.safeParse(merged);
  if (!parsed.success) throw new JobError("BAD_REQUEST", zodMessage(parsed.error));
  const b: Batching = parsed.data;
  const tooBig = b.preferredBatchSizes.find((p) => p > b.maxBatchSize);
  if (tooBig !== undefined) throw new JobError("BAD_REQUEST", `preferredBatchSizes: ${tooBig} is larger than maxBatchSize ${b.maxBatchSize}`);
  return b;
}

/**
 * The wire settings a version gets: the requested ones over the defaults (none, fp32). Throws a 400 naming the
 * setting (`compression`, `dtype`) for a value jetshard does not know.
 */
export function resolveWire(asked: Partial<Record<keyof WireSettings, unknown>> | undefined): WireSettings {
  const given = Object.fromEntries(Object.entries(asked ?? {}).filter(([, v]) => v !== undefined));
  const parsed = WireSettingsSchema.strict().safeParse(given);
  if (!parsed.success) throw new JobError("BAD_REQUEST", zodMessage(parsed.error, "wire"));
  return parsed.data;
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Throws a 400 unless `name` can be a subject token and KV key. */
export function checkModelName(name: string): void {
  if (!NAME_PATTERN.test(name)) {
    throw new JobError("BAD_REQUEST", `model name ${JSON.stringify(name)}: use 1-128 letters, digits, '_' or '-', starting with a letter or digit`);
  }
}

function toSpec(m: ort.InferenceSession.ValueMetadata, where: string): TensorSpec {
  if (!m.isTensor) throw new JobError("MODEL_INVALID", `${where} "${m.name}" is not a tensor; jetshard serves tensor inputs and outputs only`);
  const datatype = datatypeFromOrt(m.type);
  if (!datatype) throw new JobError("MODEL_INVALID", `${where} "${m.name}" has type ${m.type}, which jetshard does not serve`);
  return { name: m.name, datatype, shape: m.shape.map((d) => (typeof d === "number" && d >= 0 ? d : -1)) };
}

/**
 * Loads `bytes` in ONNX Runtime to prove it is a usable model and reads its inputs and outputs.
 * Throws JobError MODEL_INVALID (400) with ORT's reason, or, before ORT sees the bytes, for a model with any
 * tensor stored outside it (external data: ORT would read that file from the server's disk).
 */
export async function inspectModel(bytes: Uint8Array): Promise<{ inputs: TensorSpec[]; outputs: TensorSpec[] }> {
  assertNoExternalData(bytes);
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: "disabled" });
  } catch (err) {
    const reason = (err instanceof Error ? err.message : String(err)).split("\n")[0]!.slice(0, 300);
    throw new JobError("MODEL_INVALID", `not a valid ONNX model: ${reason}`, { cause: err });
  }
  try {
    return {
      inputs: session.inputMetadata.map((m) => toSpec(m, "input")),
      outputs: session.outputMetadata.map((m) => toSpec(m, "output")),
    };
  } finally {
    await session.release();
  }
}

/**
 * The object-store name of a shard's bytes. With `digest` (what uploads use), `<m>/<v>/<shard>-<digest12>.onnx`:
 * two uploads racing for one version write different objects, so the loser cannot overwrite the winner's bytes.
 * Without it, the name older versions were stored under (`<m>/<v>/<shard>.onnx`); records keep the name, so both read.
 */
export function objectName(model: string, version: number, shard: number, digest?: string): string {
  return digest ? `${model}/${version}/${shard}-${digest.slice(0, 12)}.onnx` : `${model}/${version}/${shard}.onnx`;
}

/** Reads a model's record, or null when there is none. */
export async function getModel(infra: Infra, name: string): Promise<ModelRecord | null> {
  const e = await infra.models.get(name);
  if (!e || e.operation !== "PUT" || e.value.length === 0) return null;
  return ModelRecordSchema.parse(e.json());
}

/** A version of a model; the latest when `version` is undefined. Throws MODEL_NOT_FOUND. */
export function pickVersion(rec: ModelRecord, version?: number): ModelVersion {
  const v = version ?? rec.latest;
  const found = rec.versions.find((x) => x.version === v);
  if (!found) throw new JobError("MODEL_NOT_FOUND", `model "${rec.name}" has no version ${v} (versions: ${rec.versions.map((x) => x.version).join(", ")})`);
  return found;
}

export async function listModels(infra: Infra): Promise<ModelRecord[]> {
  const out: ModelRecord[] = [];
  const keys = await infra.models.keys();
  for await (const k of keys) {
    const rec = await getModel(infra, k);
    if (rec) out.push(rec);
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

export interface StagePlan {
  bytes: Uint8Array;
  inputs: TensorSpec[];
  outputs: TensorSpec[];
}

export interface ShardOptions {
  /** Number of pipeline stages (1 = unsharded). */
  shards?: number;
  /** Picks the stage count so each stage holds at most this many weight bytes. */
  maxShardBytes?: number;
  /** What to even out across stages. */
  balance?: "bytes" | "flops";
}

/**
 * Splits a model into pipeline stages and checks each loads in ONNX Runtime.
 * Throws JobError BAD_REQUEST naming `shards`/`maxShardBytes` for options the model cannot meet.
 */
export async function planStages(bytes: Uint8Array, opts: ShardOptions): Promise<{ stages: StagePlan[]; note?: string }> {
  let result;
  try {
    result = partition(decodeModel(bytes), { k: opts.shards, maxShardBytes: opts.maxShardBytes, balance: opts.balance });
  } catch (err) {
    if (err instanceof PartitionError) {
      const code = err.code === "BAD_MODEL" ? "MODEL_INVALID" : "BAD_REQUEST";
      throw new JobError(code, err.message, { cause: err });
    }
    throw err;
  }
  const stages: StagePlan[] = [];
  for (const [i, st] of result.stages.entries()) {
    const stageBytes = encodeModel(st);
    // the stages are rebuilt from a decoded copy, which may differ from what ORT parses: check them again
    assertNoExternalData(stageBytes, `stage ${i} of the split model`);
    const io = await inspectModel(stageBytes).catch((err) => {
      throw new JobError("MODEL_INVALID", `stage ${i} of the split model does not load: ${(err as Error).message}`, { cause: err });
    });
    stages.push({ bytes: stageBytes, inputs: io.inputs, outputs: io.outputs });
  }
  return { stages, note: result.note };
}

/**
 * Stores a model, whole or split into pipeline stages (`shards`), and returns the new version.
 * Validates with ONNX Runtime first (the whole model and every stage): nothing is stored for an invalid model.
 * `wire` sets how the stages send activations to each other (see `resolveWire`; default none/fp32).
 */
export async function addModel(
  infra: Infra,
  name: string,
  bytes: Uint8Array,
  opts: ShardOptions & { note?: string; batching?: Partial<Batching>; tenant?: string; wire?: Partial<WireSettings> } = {},
): Promise<ModelVersion> {
  checkModelName(name);
  const wire = resolveWire(opts.wire);
  const io = await inspectModel(bytes);
  const batching = resolveBatching(io.inputs, opts.batching);
  let stages: StagePlan[] = [{ bytes, inputs: io.inputs, outputs: io.outputs }];
  let note: string | undefined = opts.note;
  if ((opts.shards !== undefined && opts.shards !== 1) || opts.maxShardBytes !== undefined) {
    const plan = await planStages(bytes, opts);
    stages = plan.stages;
    note = [opts.note, plan.note].filter(Boolean).join("; ") || undefined;
  }
  for (let attempt = 0; ; attempt++) {
    const entry = await infra.models.get(name);
    const prev = entry && entry.operation === "PUT" && entry.value.length > 0 ? ModelRecordSchema.parse(entry.json()) : null;
    const version = prev ? Math.max(...prev.versions.map((v) => v.version)) + 1 : 1;
    const shards: ShardInfo[] = [];
    for (const [index, st] of stages.entries()) {
      const digest = sha256Hex(st.bytes);
      const object = objectName(name, version, index, digest);
      await infra.objects.putBlob({ name: object, options: { max_chunk_size: 1024 * 1024 } }, st.bytes);
      shards.push({ index, object, bytes: st.bytes.byteLength, digest, inputs: st.inputs, outputs: st.outputs });
    }
    const mv: ModelVersion = {
      version,
      createdAt: new Date().toISOString(),
      platform: "onnxruntime_onnx",
      bytes: bytes.byteLength,
      digest: sha256Hex(bytes),
      inputs: io.inputs,
      outputs: io.outputs,
      shards,
      ...(note ? { note } : {}),
      batching,
      wire,
    };
    const tenant = prev ? prev.tenant : opts.tenant;
    const rec: ModelRecord = { name, ...(tenant ? { tenant } : {}), latest: version, versions: [...(prev?.versions ?? []), mv] };
    try {
      const value = JSON.stringify(rec);
      if (entry && entry.operation === "PUT" && entry.value.length > 0) await infra.models.update(name, value, entry.revision);
      else await infra.models.create(name, value);
      return mv;
    } catch (err) {
      // someone else added a version at the same time: drop what we wrote for it (unless it is theirs too) and retry.
      // Anything else (NATS down, a record over the payload limit) is not a race: retrying will not help.
      if (fromNatsError(err)?.code !== "CONFLICT") throw fromNatsError(err) ?? err;
      await dropUnreferenced(infra, name, shards.map((s) => s.object));
      if (attempt >= 10) throw new JobError("INTERNAL", `could not record model "${name}" after concurrent updates`, { cause: err });
    }
  }
}

/**
 * Deletes those of `objects` (written by an upload that lost the race for its version) that the model's current
 * record does not name: a racer that uploaded the same bytes for the same version shares the object name, and won.
 */
async function dropUnreferenced(infra: Infra, name: string, objects: string[]): Promise<void> {
  const rec = await getModel(infra, name).catch(() => undefined);
  if (rec === undefined) return;
  const kept = new Set(rec?.versions.flatMap((v) => v.shards.map((s) => s.object)) ?? []);
  for (const o of objects) if (!kept.has(o)) await infra.objects.delete(o).catch(() => undefined);
}

/** Removes a model: metadata first (so nothing new is routed to it), then objects, consumers and queued jobs. */
export async function deleteModel(infra: Infra, name: string): Promise<boolean> {
  checkModelName(name);
  const rec = await getModel(infra, name);
  if (!rec) return false;
  await infra.models.delete(name);
  for (const v of rec.versions) {
    for (const s of v.shards) await infra.objects.delete(s.object).catch(() => undefined);
  }
  const maxShards = Math.max(...rec.versions.map((v) => v.shards.length));
  for (let i = 0; i < maxShards; i++) {
    await infra.jsm.consumers.delete(STREAMS.jobs, consumerName(name, i)).catch(() => undefined);
    const filter = i === 0 ? subjects.infer(name) : subjects.stage(name, i);
    await infra.jsm.streams.purge(STREAMS.jobs, { filter }).catch(() => undefined);
  }
  // high-priority jobs have their own subject and consumer, which the per-shard loop above does not name
  await infra.jsm.consumers.delete(STREAMS.jobs, highConsumerName(name)).catch(() => undefined);
  await infra.jsm.streams.purge(STREAMS.jobs, { filter: subjects.inferHigh(name) }).catch(() => undefined);
  return true;
}

/** Fetches a shard's bytes from the object store and checks its SHA-256. Throws MODEL_UNAVAILABLE (retryable). */
export async function fetchShard(infra: Infra, shard: ShardInfo): Promise<Uint8Array> {
  const bytes = await infra.objects.getBlob(shard.object).catch((err) => {
    throw new JobError("NATS_UNAVAILABLE", `could not fetch ${shard.object}: ${(err as Error).message}`, { retryable: true, cause: err });
  });
  if (!bytes) throw new JobError("MODEL_UNAVAILABLE", `shard object ${shard.object} is missing from the object store`, { retryable: true });
  const digest = sha256Hex(bytes);
  if (digest !== shard.digest) {
    throw new JobError("MODEL_UNAVAILABLE", `shard object ${shard.object}: digest ${digest} does not match ${shard.digest}`, { retryable: true });
  }
  return bytes;
}
