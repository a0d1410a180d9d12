/**
 * The inference processor: runs one shard of a model on a job's tensors with ONNX Runtime (batched when the
 * model allows), then either publishes the activations to the next shard or answers with the result.
 */
import * as ort from "onnxruntime-node";
import { encodeActivations } from "#shared/activation-codec.js";
import type { JetshardConfig } from "#shared/config.js";
import { parseJobSubject, writeEnvelope } from "#shared/envelope.js";
import { JobError, toJobError } from "#shared/errors.js";
import type { KvMirror } from "#shared/kv-mirror.js";
import { pickVersion } from "#shared/model-repo.js";
import type { Infra } from "#shared/nats.js";
import type { ShardLabels, WorkerMetrics } from "#shared/metrics.js";
import { encodeResult } from "#shared/results.js";
import { INLINE_RESULT_MAX_BYTES } from "#shared/jobs.js";
import { subjects } from "#shared/subjects.js";
import { datatypeFromOrt, ortType, type Tensor, type TypedArray } from "#shared/tensor.js";
import { validateInputs, validateOutputs } from "#shared/validate.js";
import { encodeFrame, wireOf, type ModelRecord, type ResultMeta, type ShardInfo, type StageMeta } from "#shared/wire.js";
import { Batcher, BatcherPool } from "./batcher.js";
import { formatOf, parseJob, parseStage, type Job } from "./job.js";
import { ACCEPT_AFTER_MS, transient, type Held, type Processor } from "./job-runtime.js";
import type { Semaphore } from "./semaphore.js";
import type { SessionCache } from "./session-cache.js";

/** Batchers one worker keeps (keys include the outputs a caller asks for, so they are bounded). */
export const MAX_BATCHERS = 256;

export interface InferenceDeps {
  infra: Infra;
  config: JetshardConfig;
  workerId: string;
  models: KvMirror<ModelRecord>;
  cache: SessionCache;
  /** ONNX Runtime runs at once (a batch is one run). */
  runSlots: Semaphore;
  /** Where requests, executions, timings and bytes are counted. */
  metrics?: WorkerMetrics;
}

/** What a job's parse measured, for the metrics of its run. */
interface Metered {
  /** Seconds spent decoding (and fetching claim-checked tensors). */
  inputS: number;
  /** Epoch ms its queue time counts from: stored in JOBS, or received (a direct request). */
  since: number;
}

/** What a last shard produced. */
export interface InferenceResult {
  outputs: Tensor[];
  version: number;
  computeMs: number;
}

export interface InferenceProcessor extends Processor<Job, InferenceResult> {
  /** Batchers held now. */
  batchers(): number;
}

export function createInferenceProcessor({ infra, workerId, models, cache, runSlots, metrics }: InferenceDeps): InferenceProcessor {
  const batchers = new BatcherPool(MAX_BATCHERS);
  const metered = new WeakMap<Job, Metered>();
  /** Metric labels of a job's shard; the version is the latest when the job names none. */
  const labelsOf = (model: string, shard: number, version?: number): ShardLabels => ({
    model,
    version: String(version ?? models.get(model)?.latest ?? ""),
    shard: String(shard),
  });

  /**
   * How long ORT runs of each shard take (ms, a moving average that weighs the last run 0.3, so one stalled run of
   * a fast model does not count it as slow), by digest: a slow one is announced before it runs.
   */
  const lastRunMs = new Map<string, number>();

  /** Runs one shard of a job; returns every output the shard produces (or the requested ones, on the last). */
  async function runShard(job: Job, rec: ModelRecord, priority: "high" | "normal", started: () => void, announce?: () => void): Promise<InferenceResult & { last: boolean }> {
    const tIn = performance.now();
    const mv = pickVersion(rec, job.version);
    const shard = mv.shards[job.stage];
    if (!shard) throw new JobError("BAD_REQUEST", `model "${job.model}" version ${mv.version} has no shard ${job.stage}`);
    const last = job.stage === mv.shards.length - 1;
    if (job.stage === 0) {
      validateInputs(job.model, mv.inputs, job.inputs);
      validateOutputs(job.model, mv.outputs, job.outputs);
    }
    const byName = new Map(job.inputs.map((t) => [t.name, t]));
    const names = last ? (job.outputs?.length ? job.outputs : mv.outputs.map((o) => o.name)) : shard.outputs.map((o) => o.name);
    const inputs = shard.inputs.map((spec) => {
      const t = byName.get(spec.name);
      if (!t) throw new JobError("BAD_REQUEST", `shard ${job.stage} of "${job.model}" needs tensor "${spec.name}", which the message lacks`);
      return t;
    });
    const batching = mv.batching ?? { maxBatchSize: 1, preferredBatchSizes: [], maxQueueDelayUs: 0 };
    const labels = labelsOf(job.model, job.stage, mv.version);
    const m = metered.get(job);
    if (metrics && m) metrics.input(labels, m.inputS + (performance.now() - tIn) / 1000);
    // Triton's queue time: until the execution carrying this request starts (slot, batcher and stream included)
    const executing = () => {
      if (metrics && m) metrics.queued(labels, (Date.now() - m.since) / 1000);
    };
    // ORT keeps the event loop busy while it runs: a direct request's caller learns who holds it before a run
    // that may outlast the announcement's timer (a shard not run here yet counts as slow)
    const expectedMs = lastRunMs.get(shard.digest);
    if (announce && (expectedMs === undefined || expectedMs >= ACCEPT_AFTER_MS / 2)) announce();
    const run = (ins: Tensor[]) => runOnce(shard, ins, names, labels, batching.maxBatchSize > 1);
    const t0 = performance.now();
    try {
      let outputs: Tensor[];
      if (batching.maxBatchSize > 1) {
        const key = `${shard.digest}|${names.join(",")}|${batching.maxBatchSize}|${batching.maxQueueDelayUs}|${batching.preferredBatchSizes.join(",")}`;
        // a batch's start is the batcher's to pick: the job counts as started when it joins
        started();
        outputs = await batchers.get(key, () => new Batcher(batching, runSlots, run)).submit(inputs, priority, executing);
      } else {
        await runSlots.acquire(priority);
        try {
          started();
          executing();
          outputs = await run(inputs);
        } finally {
          runSlots.release();
        }
      }
      return { outputs, version: mv.version, computeMs: performance.now() - t0, last };
    } catch (err) {
      throw toJobError(err, "INFERENCE_FAILED");
    }
  }

  /**
   * One ORT run of a shard on ordered inputs; returns the named outputs. Counted as one execution carrying the
   * batch's rows as inferences when the model batches (else one), as Triton counts them.
   */
  async function runOnce(shard: ShardInfo, inputs: Tensor[], names: string[], labels: ShardLabels, batched: boolean): Promise<Tensor[]> {
    const t0 = performance.now();
    const feeds: Record<string, ort.Tensor> = {};
    for (const t of inputs) feeds[t.name] = new ort.Tensor(ortType(t.datatype) as ort.Tensor.Type, t.data as never, t.shape);
    const out = await cache.use(shard, (session) => session.run(feeds, names));
    const ms = performance.now() - t0;
    const before = lastRunMs.get(shard.digest);
    if (before === undefined && lastRunMs.size >= MAX_BATCHERS) lastRunMs.clear();
    lastRunMs.set(shard.digest, before === undefined ? ms : 0.7 * before + 0.3 * ms);
    metrics?.executed(labels, batched ? (inputs[0]?.shape[0] ?? 1) : 1, ms / 1000);
    return names.map((name) => {
      const t = out[name];
      if (!t) throw new JobError("INFERENCE_FAILED", `model produced no output "${name}"`);
      const datatype = datatypeFromOrt(t.type);
      if (!datatype) throw new JobError("INFERENCE_FAILED", `output "${name}" has unsupported type ${t.type}`);
      return { name, datatype, shape: t.dims.map(Number), data: t.data as TypedArray };
    });
  }

  /** Publishes the activations for the next shard; big ones go through the claims object store. Returns the bytes sent. */
  async function forward(job: Job, held: Held, version: number, outputs: Tensor[]): Promise<number> {
    const next = job.stage + 1;
    const meta: StageMeta = {
      kind: "stage",
      id: job.id,
      model: job.model,
      version,
      stage: next,
      format: job.format,
      ...(job.requestId !== undefined ? { requestId: job.requestId } : {}),
      ...(job.outputs ? { outputs: job.outputs } : {}),
      ...(job.parameters ? { parameters: job.parameters } : {}),
      ...(job.submittedAt ? { submittedAt: job.submittedAt } : {}),
    };
    // the version's wire settings may compress the activations and/or send FP32 as FP16 (shared/activation-codec.ts)
    const wire = wireOf(models.get(job.model)?.versions.find((v) => v.version === version) ?? {});
    const packed = await encodeActivations(outputs, wire);
    let body = encodeFrame(packed.encoding ? { ...meta, encoding: packed.encoding } : meta, packed.tensors);
    let claimed = 0;
    const maxPayload = infra.nc.info?.max_payload ?? 1024 * 1024;
    if (body.byteLength > maxPayload - 16 * 1024) {
      claimed = body.byteLength;
      const claim = `${job.id}.${next}`;
      await infra.claims.putBlob({ name: claim, options: { max_chunk_size: Math.min(1024 * 1024, maxPayload - 16 * 1024) } }, body);
      body = encodeFrame({ ...meta, claim }, []);
    }
    const { env } = held;
    // dedup key derived from the incoming message's: a redelivered hop republishes the same id, a replay a new one
    const headers = writeEnvelope({
      msgId: `${env.msgId || job.id}>${next}`,
      jobId: job.id,
      reply: env.reply,
      deadline: env.deadline,
      track: env.track,
      tenant: env.tenant,
    });
    await infra.js.publish(subjects.stage(job.model, next), body, { headers });
    return claimed + body.byteLength;
  }

  return {
    name: "inference",
    fallbackCode: "INFERENCE_FAILED",
    reportsStart: true,
    batchers: () => batchers.size,

    async parse(held) {
      const receivedAt = Date.now();
      const s = parseJobSubject(held.subject);
      if (!s || s.kind === "nas") throw new JobError("BAD_REQUEST", `subject ${held.subject} is not an inference subject`);
      const shard = s.kind === "infer" ? 0 : s.stage;
      metrics?.transferred({ model: s.model, shard: String(shard) }, "in", held.data.byteLength);
      const t0 = performance.now();
      const job = await (s.kind === "infer" ? parseJob(held, s.model, infra) : parseStage(held, s.model, s.stage, infra));
      if (job.claim) metrics?.transferred({ model: s.model, shard: String(shard) }, "in", job.inputs.reduce((n, t) => n + t.data.byteLength, 0));
      metered.set(job, { inputS: (performance.now() - t0) / 1000, since: held.storedAt ?? receivedAt });
      return job;
    },

    async run(job, ctx) {
      const rec = models.get(job.model);
      if (!rec) throw new JobError("MODEL_NOT_FOUND", `model "${job.model}" is not in the repository`);
      const where = { model: job.model, shard: String(job.stage) };
      metrics?.held(where);
      try {
        const r = await runShard(job, rec, ctx.priority, ctx.started, ctx.held.announce);
        if (!r.last) {
          const t0 = performance.now();
          const sent = await transient(() => forward(job, ctx.held, r.version, r.outputs), "publishing to the next shard");
          if (metrics) {
            const labels = labelsOf(job.model, job.stage, r.version);
            metrics.output(labels, (performance.now() - t0) / 1000);
            metrics.transferred(where, "out", sent);
            metrics.succeeded(labels);
          }
          return { kind: "succeeded" };
        }
        return { kind: "succeeded", result: { outputs: r.outputs, version: r.version, computeMs: r.computeMs }, record: { version: r.version } };
      } finally {
        metrics?.released(where);
      }
    },

    async publish(final, held) {
      const t0 = performance.now();
      const { env } = held;
      const s = parseJobSubject(held.subject);
      const model = final.job?.model ?? (s && s.kind !== "nas" ? s.model : "unknown");
      const base = { kind: "result" as const, id: final.jobId, model, worker: workerId, attempt: held.attempt, requestId: final.job?.requestId };
      const meta: ResultMeta = final.ok
        ? { ...base, version: final.result.version, ok: true, computeMs: Math.round(final.result.computeMs * 1000) / 1000 }
        : { ...base, version: final.job?.version, ok: false, error: final.error.toJSON() };
      const body = encodeResult(final.job?.format ?? formatOf(held.data), meta, final.ok ? final.result.outputs : []);
      if (env.reply) infra.nc.publish(env.reply, body);
      // a sync caller waiting on its reply subject needs no stored copy: that saves a JetStream write per request;
      // a tracked job's small answer is kept in its record instead, by the write that makes it terminal
      const replyOnly = env.reply && !env.track && env.replyOnly;
      const inline = env.track && body.byteLength <= INLINE_RESULT_MAX_BYTES;
      if (!replyOnly && !inline) await infra.js.publish(subjects.result(final.jobId), body, { msgID: `result-${env.msgId || final.jobId}` });
      if (metrics && s && s.kind !== "nas") {
        // a message that could not be parsed is counted under its subject's model, version unknown
        const shard = final.job?.stage ?? (s.kind === "stage" ? s.stage : 0);
        const labels = labelsOf(s.model, shard, final.ok ? final.result.version : final.job?.version);
        if (!final.job) labels.version = "";
        metrics.transferred({ model: s.model, shard: String(shard) }, "out", body.byteLength);
        if (final.ok) {
          metrics.output(labels, (performance.now() - t0) / 1000);
          metrics.succeeded(labels);
        } else {
          metrics.failed(labels, final.error.code);
        }
      }
      if (inline) return body;
    },

    async settled(job) {
      // the claims bucket's max age catches any we miss
      if (job.claim) await infra.claims.delete(job.claim);
    },
  };
}
