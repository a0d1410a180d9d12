/**
 * The worker: stateless. It registers in the `workers` KV bucket, serves every model in the repository
 * (or the ones named in JETSHARD_SERVE) through one durable pull consumer per model shared by all replicas,
 * runs ONNX Runtime, and answers every message exactly once: ack after the result is durably stored,
 * nak with backoff for retryable failures, a terminal failure result for bad jobs.
 */
import os from "node:os";
import { headers as natsHeaders, nuid, type NatsConnection } from "@nats-io/transport-node";
import { AckPolicy, DeliverPolicy, type ConsumerMessages, type JsMsg } from "@nats-io/jetstream";
import * as ort from "onnxruntime-node";
import type { JetshardConfig } from "#shared/config.js";
import { JobError, toJobError } from "#shared/errors.js";
import { KvMirror } from "#shared/kv-mirror.js";
import type { Logger } from "#shared/log.js";
import { pickVersion } from "#shared/model-repo.js";
import { connectNats, openInfra, type Infra } from "#shared/nats.js";
import { encodeResult } from "#shared/results.js";
import { STREAMS, consumerName, subjects } from "#shared/subjects.js";
import { datatypeFromOrt, ortType, type Tensor, type TypedArray } from "#shared/tensor.js";
import { validateInputs, validateOutputs } from "#shared/validate.js";
import { ModelRecordSchema, type ModelRecord, type ResultMeta, type WorkerInfo } from "#shared/wire.js";
import { detectDevice, executionProviders, type DeviceInfo } from "./device.js";
import { jobEnvelope, parseJob, type Job } from "./job.js";
import { createTrialRunner, type TrialRunner } from "./nas-runner.js";
import { Semaphore } from "./semaphore.js";
import { SessionCache } from "./session-cache.js";

export const VERSION = "0.1.0";

export interface WorkerDeps {
  config: JetshardConfig;
  log: Logger;
  /** An existing connection to reuse (tests); otherwise one is opened from config. */
  nc?: NatsConnection;
}

export interface Worker {
  readonly id: string;
  start(): Promise<void>;
  /** Drains: stops fetching, finishes in-flight jobs, deregisters, closes the connection. */
  stop(): Promise<void>;
  info(): WorkerInfo;
}

const ns = (ms: number) => ms * 1_000_000;
/** Backoff before a retryable failure is redelivered: 1 s, 2 s, 4 s … capped at 30 s. */
export const retryDelayMs = (attempt: number) => Math.min(1000 * 2 ** Math.max(0, attempt - 1), 30_000);

function sanitizeKey(s: string): string {
  return s.replace(/[^A-Za-z0-9_-]/g, "-").slice(0, 40) || "host";
}

export function createWorker({ config, log: rootLog, nc: givenNc }: WorkerDeps): Worker {
  const id = `w-${sanitizeKey(os.hostname())}-${nuid.next().slice(-8).toLowerCase()}`;
  const log = rootLog.child({ component: "worker", worker: id });
  const slots = new Semaphore(config.workerConcurrency);
  const loops = new Map<string, { msgs: ConsumerMessages; done: Promise<void> }>();
  const inflight = new Set<Promise<void>>();
  let infra!: Infra;
  let nc!: NatsConnection;
  let models!: KvMirror<ModelRecord>;
  let cache!: SessionCache;
  let device!: DeviceInfo;
  let heartbeat: NodeJS.Timeout | null = null;
  let trials: TrialRunner | null = null;
  let stopping = false;
  let processed = 0;
  let failed = 0;
  const startedAt = new Date().toISOString();

  const serves = (model: string) => !config.nasOnly && (config.serve.length === 0 || config.serve.includes(model));

  function info(): WorkerInfo {
    const served = [...loops.keys()].sort();
    return {
      id,
      host: os.hostname(),
      pid: process.pid,
      version: VERSION,
      device: device ?? { kind: "cpu", name: "unknown", note: "starting" },
      models: served,
      shards: served.map((m) => `${m}:0`),
      inFlight: slots.busy + (trials?.busy() ?? 0),
      processed,
      failed,
      concurrency: config.workerConcurrency,
      startedAt,
      updatedAt: Date.now(),
    };
  }

  async function register(): Promise<void> {
    try {
      await infra.workers.put(id, JSON.stringify(info()));
    } catch (err) {
      log.warn({ err }, "heartbeat failed");
    }
  }

  async function ensureConsumer(model: string): Promise<void> {
    const name = consumerName(model, 0);
    try {
      await infra.jsm.consumers.info(STREAMS.jobs, name);
      return;
    } catch {
      // create below
    }
    try {
      await infra.jsm.consumers.add(STREAMS.jobs, {
        durable_name: name,
        filter_subject: subjects.infer(model),
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        ack_wait: ns(config.ackWaitMs),
        max_deliver: config.maxDeliver,
        max_ack_pending: 10_000,
      });
    } catch (err) {
      await infra.jsm.consumers.info(STREAMS.jobs, name).catch(() => {
        throw err;
      });
    }
  }

  async function startServing(model: string): Promise<void> {
    if (loops.has(model) || stopping) return;
    await ensureConsumer(model);
    const consumer = await infra.js.consumers.get(STREAMS.jobs, consumerName(model, 0));
    const msgs = await consumer.consume({ max_messages: config.workerConcurrency, expires: 5_000 });
    const done = (async () => {
      for await (const m of msgs) {
        if (stopping || !loops.has(model)) {
          // pulled but not started: hand it straight back instead of waiting out the ack timeout
          m.nak();
          continue;
        }
        await slots.acquire();
        const p = handle(m, model).finally(() => {
          slots.release();
          inflight.delete(p);
        });
        inflight.add(p);
      }
    })().catch((err) => log.error({ err, model }, "consume loop ended"));
    loops.set(model, { msgs, done });
    log.info({ model }, "serving model");
    void register();
  }

  async function stopServing(model: string): Promise<void> {
    const l = loops.get(model);
    if (!l) return;
    loops.delete(model);
    await l.msgs.close().catch(() => undefined);
    log.info({ model }, "stopped serving model");
    void register();
  }

  async function runModel(job: Job, rec: ModelRecord, m: JsMsg): Promise<{ outputs: Tensor[]; version: number; computeMs: number }> {
    const mv = pickVersion(rec, job.version);
    validateInputs(job.model, mv.inputs, job.inputs);
    validateOutputs(job.model, mv.outputs, job.outputs);
    // Keep the lease while ORT works, so a long run is not redelivered to another worker.
    const keepAlive = setInterval(() => m.working(), Math.max(250, config.ackWaitMs / 3));
    try {
      const shard = mv.shards[0]!;
      const t0 = performance.now();
      const out = await cache.use(shard, async (session) => {
        const feeds: Record<string, ort.Tensor> = {};
        for (const t of job.inputs) feeds[t.name] = new ort.Tensor(ortType(t.datatype) as ort.Tensor.Type, t.data as never, t.shape);
        const fetches = job.outputs?.length ? job.outputs : session.outputNames;
        return session.run(feeds, fetches);
      });
      const computeMs = performance.now() - t0;
      const outputs: Tensor[] = [];
      const names = job.outputs?.length ? job.outputs : mv.outputs.map((o) => o.name);
      for (const name of names) {
        const t = out[name];
        if (!t) throw new JobError("INFERENCE_FAILED", `model produced no output "${name}"`);
        const datatype = datatypeFromOrt(t.type);
        if (!datatype) throw new JobError("INFERENCE_FAILED", `output "${name}" has unsupported type ${t.type}`);
        outputs.push({ name, datatype, shape: t.dims.map(Number), data: t.data as TypedArray });
      }
      return { outputs, version: mv.version, computeMs };
    } catch (err) {
      throw toJobError(err, "INFERENCE_FAILED");
    } finally {
      clearInterval(keepAlive);
    }
  }

  async function handle(m: JsMsg, model: string): Promise<void> {
    const env = jobEnvelope(m, model);
    const attempt = m.info.deliveryCount;
    const jlog = log.child({ jobId: env.id, model, attempt });
    let meta: ResultMeta;
    let outputs: Tensor[] = [];
    let job: Job | undefined;
    try {
      job = parseJob(m, model);
      if (job.deadline !== undefined && Date.now() > job.deadline) {
        throw new JobError("DEADLINE_EXCEEDED", `job ${job.id} passed its deadline before it could run`);
      }
      const rec = models.get(model);
      if (!rec) throw new JobError("MODEL_NOT_FOUND", `model "${model}" is not in the repository`);
      const r = await runModel(job, rec, m);
      outputs = r.outputs;
      meta = { kind: "result", id: job.id, model, version: r.version, requestId: job.requestId, ok: true, worker: id, attempt, computeMs: Math.round(r.computeMs * 1000) / 1000 };
      processed++;
    } catch (err) {
      const je = toJobError(err, "INFERENCE_FAILED");
      if (je.retryable && attempt < config.maxDeliver && !stopping) {
        jlog.warn({ err: je }, "retryable failure; will be redelivered");
        m.nak(retryDelayMs(attempt));
        return;
      }
      if (je.status >= 500) jlog.error({ err: je }, "job failed");
      else jlog.info({ code: je.code, reason: je.message }, "job rejected");
      failed++;
      meta = { kind: "result", id: env.id, model, version: job?.version, requestId: job?.requestId, ok: false, error: je.toJSON(), worker: id, attempt };
    }
    const body = encodeResult(env.format, meta, outputs);
    try {
      if (env.reply) nc.publish(env.reply, body);
      const h = natsHeaders();
      await infra.js.publish(subjects.result(meta.id), body, { msgID: `result-${meta.id}`, headers: h });
      m.ack();
    } catch (err) {
      // The result is not durable: let JetStream redeliver the job rather than lose it.
      jlog.warn({ err }, "could not store result; job will be redelivered");
      m.nak(retryDelayMs(attempt));
    }
  }

  return {
    id,
    info,
    async start() {
      nc = givenNc ?? (await connectNats(config.natsServers, `jetshard-worker-${id}`, log));
      infra = await openInfra(nc, { workerTtlMs: config.workerTtlMs, resultRetentionMs: config.resultRetentionMs });
      device = await detectDevice(config.device, log);
      log.info({ device }, `device: ${device.note}`);
      const sessionOptions: ort.InferenceSession.SessionOptions = {
        executionProviders: executionProviders(device) as never,
        graphOptimizationLevel: "all",
        ...(config.ortIntraOpThreads > 0 ? { intraOpNumThreads: config.ortIntraOpThreads } : {}),
        ...(config.ortInterOpThreads > 0 ? { interOpNumThreads: config.ortInterOpThreads } : {}),
      };
      cache = new SessionCache(infra, { dir: config.cacheDir, maxSessions: config.modelCacheMax, maxBytes: config.modelCacheBytes, sessionOptions }, log);
      models = new KvMirror(infra.models, ModelRecordSchema, log);
      await models.start();
      models.onChange((name, rec) => {
        if (!serves(name)) return;
        const p = rec ? startServing(name) : stopServing(name);
        p.catch((err) => log.error({ err, model: name }, "could not change what this worker serves"));
      });
      for (const rec of models.values()) if (serves(rec.name)) await startServing(rec.name);
      if (config.nasEnabled || config.nasOnly) {
        trials = createTrialRunner({ infra, config, log, workerId: id, device });
        await trials.start();
      }
      await register();
      heartbeat = setInterval(() => void register(), config.heartbeatMs);
      log.info({ models: [...loops.keys()], concurrency: config.workerConcurrency }, "worker started");
    },
    async stop() {
      if (stopping) return;
      stopping = true;
      log.info({ inFlight: slots.busy }, "draining");
      if (heartbeat) clearInterval(heartbeat);
      models?.stop();
      await Promise.all([...loops.keys()].map((m) => stopServing(m)));
      await trials?.stop();
      await Promise.allSettled([...inflight]);
      await infra?.workers.delete(id).catch(() => undefined);
      await cache?.close();
      if (!givenNc) await nc?.drain().catch(() => undefined);
      log.info({ processed, failed }, "worker stopped");
    },
  };
}

