/**
 * The worker: stateless. It registers in the `workers` KV bucket, serves model shards (all of them when they fit
 * its memory budget, the ones named in JETSHARD_SERVE, or the least replicated) through one durable pull consumer
 * per (model, shard) shared by all replicas, runs ONNX Runtime, and answers every message exactly once: ack after
 * the result (or the next pipeline hop) is durably stored, nak with backoff for retryable failures, a terminal
 * failure result for bad jobs.
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
import { Batcher, type BatchingConfig } from "./batcher.js";
import { connectNats, openInfra, type Infra } from "#shared/nats.js";
import { encodeResult } from "#shared/results.js";
import { HEADERS, STREAMS, consumerName, highConsumerName, isReplySubject, subjects } from "#shared/subjects.js";
import { deadLetter } from "#shared/dlq.js";
import { TERMINAL, newJobRecord, updateJob, type JobRecord } from "#shared/jobs.js";
import { datatypeFromOrt, ortType, type Tensor, type TypedArray } from "#shared/tensor.js";
import { validateInputs, validateOutputs } from "#shared/validate.js";
import { ModelRecordSchema, WorkerInfoSchema, encodeFrame, isLive, type ModelRecord, type ResultMeta, type ShardInfo, type StageMeta, type WorkerInfo } from "#shared/wire.js";
import { detectDevice, executionProviders, type DeviceInfo } from "./device.js";
import { jobEnvelope, parseJob, parseStage, type Job } from "./job.js";
import { allShards, pickShards, serveFilter, shardKey } from "./placement.js";
import { createTrialRunner, type TrialRunner } from "./nas-runner.js";
import { createAdvisoryProcessor, type AdvisoryProcessor } from "./advisories.js";
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
/** Backoff before a retryable failure is redelivered: base, 2×base, 4×base … capped at 30 s. */
export const retryDelayMs = (attempt: number, baseMs = 1000) => Math.min(baseMs * 2 ** Math.max(0, attempt - 1), 30_000);

function sanitizeKey(s: string): string {
  return s.replace(/[^A-Za-z0-9_-]/g, "-").slice(0, 40) || "host";
}

export function createWorker({ config, log: rootLog, nc: givenNc }: WorkerDeps): Worker {
  const id = `w-${sanitizeKey(os.hostname())}-${nuid.next().slice(-8).toLowerCase()}`;
  const log = rootLog.child({ component: "worker", worker: id });
  /** ORT runs at once (a batch is one run). */
  const runSlots = new Semaphore(config.workerConcurrency);
  /** Messages held at once: enough for every run slot to fill a batch. */
  const slots = new Semaphore(config.workerConcurrency * config.maxInflightPerRun);
  const batchers = new Map<string, Batcher>();
  /** Consume loops by shard key "model:index". */
  const loops = new Map<string, { model: string; index: number; msgs: ConsumerMessages[] }>();
  const filter = serveFilter(config.serve);
  const inflight = new Set<Promise<void>>();
  let infra!: Infra;
  let nc!: NatsConnection;
  let models!: KvMirror<ModelRecord>;
  let peers!: KvMirror<WorkerInfo>;
  let cache!: SessionCache;
  let device!: DeviceInfo;
  let heartbeat: NodeJS.Timeout | null = null;
  let trials: TrialRunner | null = null;
  let advisories: AdvisoryProcessor | null = null;
  let stopping = false;
  let processed = 0;
  let failed = 0;
  const startedAt = new Date().toISOString();


  function info(): WorkerInfo {
    const shards = [...loops.keys()].sort();
    const served = [...new Set([...loops.values()].map((l) => l.model))].sort();
    return {
      id,
      host: os.hostname(),
      pid: process.pid,
      version: VERSION,
      device: device ?? { kind: "cpu", name: "unknown", note: "starting" },
      models: served,
      shards,
      placement: filter ? "fixed" : "auto",
      budgetBytes: config.modelCacheBytes,
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

  async function ensureConsumer(model: string, index: number, high = false): Promise<string> {
    const name = high ? highConsumerName(model) : consumerName(model, index);
    try {
      await infra.jsm.consumers.info(STREAMS.jobs, name);
      return name;
    } catch {
      // create below
    }
    try {
      await infra.jsm.consumers.add(STREAMS.jobs, {
        durable_name: name,
        filter_subject: high ? subjects.inferHigh(model) : index === 0 ? subjects.infer(model) : subjects.stage(model, index),
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
    return name;
  }

  async function startServing(model: string, index: number): Promise<void> {
    const key = shardKey(model, index);
    if (loops.has(key) || stopping) return;
    const entry = { model, index, msgs: [] as ConsumerMessages[] };
    loops.set(key, entry);
    // shard 0 has a second consumer for high-priority jobs; slots go to its messages first
    for (const high of index === 0 ? [true, false] : [false]) {
      const consumer = await infra.js.consumers.get(STREAMS.jobs, await ensureConsumer(model, index, high));
      // batchable models buffer enough to fill batches; others only a little, so idle replicas get work too
      const batches = (models.get(model)?.versions.at(-1)?.batching?.maxBatchSize ?? 1) > 1;
      const buffer = batches ? Math.min(slots.size, 256) : Math.max(2, config.workerConcurrency * 2);
      const msgs = await consumer.consume({ max_messages: buffer, expires: 5_000 });
      entry.msgs.push(msgs);
      void (async () => {
        for await (const m of msgs) {
          if (stopping || loops.get(key) !== entry) {
            // pulled but not started: hand it straight back instead of waiting out the ack timeout
            m.nak();
            continue;
          }
          await slots.acquire(high ? "high" : "normal");
          const p = handle(m, model, index, high ? "high" : "normal").finally(() => {
            slots.release();
            inflight.delete(p);
          });
          inflight.add(p);
        }
      })().catch((err) => log.error({ err, model, shard: index }, "consume loop ended"));
    }
    log.info({ model, shard: index }, "serving shard");
  }

  async function stopServing(key: string): Promise<void> {
    const l = loops.get(key);
    if (!l) return;
    loops.delete(key);
    await Promise.all(l.msgs.map((m) => m.close().catch(() => undefined)));
    log.info({ model: l.model, shard: l.index }, "stopped serving shard");
  }

  /** Other live workers, as placement sees them. */
  function livePeers() {
    return peers.values().filter((w) => w.id !== id && isLive(w, config.workerTtlMs));
  }

  let reconciling: Promise<void> = Promise.resolve();
  /** Starts and stops consume loops so this worker serves what placement picks now. Serialized. */
  function reconcile(): Promise<void> {
    reconciling = reconciling.then(async () => {
      if (stopping || config.nasOnly) return;
      const want = pickShards({
        shards: allShards(models.values()),
        peers: livePeers().map((w) => ({ id: w.id, auto: w.placement === "auto", budgetBytes: w.budgetBytes, shards: w.shards })),
        selfId: id,
        budgetBytes: config.modelCacheBytes,
        filter,
      });
      const wantKeys = new Set(want.map((s) => shardKey(s.model, s.index)));
      let changed = false;
      for (const key of [...loops.keys()]) {
        if (!wantKeys.has(key)) {
          await stopServing(key);
          changed = true;
        }
      }
      for (const s of want) {
        if (!loops.has(shardKey(s.model, s.index))) {
          await startServing(s.model, s.index).catch((err) => log.error({ err, model: s.model, shard: s.index }, "could not start serving shard"));
          changed = true;
        }
      }
      if (changed) await register();
    });
    return reconciling;
  }

  /** Runs one shard of a job; returns every output the shard produces (or the requested ones, on the last). */
  async function runShard(job: Job, rec: ModelRecord, priority: "high" | "normal"): Promise<{ outputs: Tensor[]; version: number; computeMs: number; last: boolean }> {
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
    const run = (ins: Tensor[]) => runOnce(shard, ins, names);
    const t0 = performance.now();
    try {
      const batching = mv.batching ?? { maxBatchSize: 1, preferredBatchSizes: [], maxQueueDelayUs: 0 };
      let outputs: Tensor[];
      if (batching.maxBatchSize > 1) {
        outputs = await batcherFor(`${shard.digest}|${names.join(",")}`, batching, run).submit(inputs, priority);
      } else {
        await runSlots.acquire(priority);
        try {
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

  function batcherFor(key: string, cfg: BatchingConfig, run: (ins: Tensor[]) => Promise<Tensor[]>): Batcher {
    const k = `${key}|${cfg.maxBatchSize}|${cfg.maxQueueDelayUs}|${cfg.preferredBatchSizes.join(",")}`;
    let b = batchers.get(k);
    if (!b) batchers.set(k, (b = new Batcher(cfg, runSlots, run)));
    return b;
  }

  /** One ORT run of a shard on ordered inputs; returns the named outputs. */
  async function runOnce(shard: ShardInfo, inputs: Tensor[], names: string[]): Promise<Tensor[]> {
    const feeds: Record<string, ort.Tensor> = {};
    for (const t of inputs) feeds[t.name] = new ort.Tensor(ortType(t.datatype) as ort.Tensor.Type, t.data as never, t.shape);
    const out = await cache.use(shard, (session) => session.run(feeds, names));
    return names.map((name) => {
      const t = out[name];
      if (!t) throw new JobError("INFERENCE_FAILED", `model produced no output "${name}"`);
      const datatype = datatypeFromOrt(t.type);
      if (!datatype) throw new JobError("INFERENCE_FAILED", `output "${name}" has unsupported type ${t.type}`);
      return { name, datatype, shape: t.dims.map(Number), data: t.data as TypedArray };
    });
  }

  /** Publishes the activations for the next shard; big ones go through the claims object store. */
  async function forward(job: Job, version: number, outputs: Tensor[]): Promise<void> {
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
    let body = encodeFrame(meta, outputs);
    const maxPayload = nc.info?.max_payload ?? 1024 * 1024;
    if (body.byteLength > maxPayload - 16 * 1024) {
      const claim = `${job.id}.${next}`;
      await infra.claims.putBlob({ name: claim, options: { max_chunk_size: Math.min(1024 * 1024, maxPayload - 16 * 1024) } }, body);
      body = encodeFrame({ ...meta, claim }, []);
    }
    const h = natsHeaders();
    h.set(HEADERS.jobId, job.id);
    if (job.reply) h.set(HEADERS.reply, job.reply);
    if (job.deadline !== undefined) h.set(HEADERS.deadline, String(job.deadline));
    if (job.track) h.set(HEADERS.track, "1");
    // dedup key derived from the incoming message's: a redelivered hop republishes the same id, a replay a new one
    await infra.js.publish(subjects.stage(job.model, next), body, { msgID: `${job.msgId}>${next}`, headers: h });
  }

  /**
   * Marks a tracked job running (attempt = this delivery). Returns false when it must not run: cancelled, or
   * already finished by an earlier delivery.
   */
  async function claim(job: Job, attempt: number): Promise<boolean> {
    let skip = false;
    await updateJob(infra, job.id, (r) => {
      if (r && TERMINAL.has(r.status)) {
        skip = true;
        return null;
      }
      skip = false;
      const base = r ?? newJobRecord(job.id, job.model, job.submittedAt);
      return { ...base, status: "running", attempts: attempt, startedAt: Date.now(), worker: id };
    });
    return !skip;
  }

  /** Records the terminal state of a tracked job unless it is already terminal (cancelled meanwhile, or a duplicate). */
  async function finish(job: Pick<Job, "id" | "model">, patch: Partial<JobRecord> & { status: JobRecord["status"] }): Promise<void> {
    await updateJob(infra, job.id, (r) => {
      if (r && TERMINAL.has(r.status)) return null;
      const base = r ?? newJobRecord(job.id, job.model);
      return { ...base, ...patch, finishedAt: Date.now(), worker: id };
    });
  }

  async function handle(m: JsMsg, model: string, index: number, priority: "high" | "normal"): Promise<void> {
    // Keep the lease for as long as this message is ours (loading a model, running it, storing the result),
    // so slow work is not redelivered to another worker.
    const keepAlive = setInterval(() => m.working(), Math.max(100, config.ackWaitMs / 3));
    try {
      await handleMessage(m, model, index, priority);
    } finally {
      clearInterval(keepAlive);
    }
  }

  async function handleMessage(m: JsMsg, model: string, index: number, priority: "high" | "normal"): Promise<void> {
    const env = jobEnvelope(m, model);
    const attempt = m.info.deliveryCount;
    const track = m.headers?.get(HEADERS.track) === "1";
    // a child logger only when something is logged: most jobs log nothing, and creating one per job costs
    let child: Logger | undefined;
    const jlog = () => (child ??= log.child({ jobId: env.id, model, shard: index, attempt }));
    if (env.reply && !isReplySubject(env.reply)) {
      jlog().warn({ reply: env.reply }, "ignoring a reply subject outside _INBOX; the result goes to RESULTS only");
      env.reply = undefined;
    }
    let meta: ResultMeta;
    let outputs: Tensor[] = [];
    let job: Job | undefined;
    try {
      job = index === 0 ? parseJob(m, model, env) : await parseStage(m, model, index, infra, env);
      job.track = track;
      job.msgId = m.headers?.get(HEADERS.msgId) || job.id;
      const claimed = track && index === 0 ? await transient(() => claim(job!, attempt), "recording the job as running") : true;
      if (!claimed) {
        jlog().info("job already finished or cancelled; skipping");
        m.ack();
        return;
      }
      if (job.deadline !== undefined && Date.now() > job.deadline) {
        throw new JobError("DEADLINE_EXCEEDED", `job ${job.id} passed its deadline before it could run`);
      }
      const rec = models.get(model);
      if (!rec) throw new JobError("MODEL_NOT_FOUND", `model "${model}" is not in the repository`);
      const r = await runShard(job, rec, priority);
      if (!r.last) {
        await transient(() => forward(job!, r.version, r.outputs), "publishing to the next shard");
        m.ack();
        await collect(job.claim);
        return;
      }
      outputs = r.outputs;
      meta = { kind: "result", id: job.id, model, version: r.version, requestId: job.requestId, ok: true, worker: id, attempt, computeMs: Math.round(r.computeMs * 1000) / 1000 };
      processed++;
    } catch (err) {
      let je = toJobError(err, "INFERENCE_FAILED");
      // NATS trouble is not the job's fault: retry up to the delivery cap without spending its attempts
      if (je.code === "NATS_UNAVAILABLE" && attempt < config.maxDeliver && !stopping) {
        jlog().warn({ err: je }, "NATS unavailable; job will be redelivered");
        m.nak(retryDelayMs(1, config.retryBaseMs));
        return;
      }
      if (je.retryable && attempt < config.maxAttempts && !stopping) {
        jlog().warn({ err: je }, "retryable failure; will be redelivered");
        m.nak(retryDelayMs(attempt, config.retryBaseMs));
        return;
      }
      if (je.retryable) je = new JobError(je.code, `failed after ${attempt} attempts: ${je.message}`, { cause: je });
      if (je.status >= 500) jlog().error({ err: je }, "job failed");
      else jlog().info({ code: je.code, reason: je.message }, "job rejected");
      failed++;
      meta = { kind: "result", id: job?.id ?? env.id, model, version: job?.version, requestId: job?.requestId, ok: false, error: je.toJSON(), worker: id, attempt };
      // a sync caller already has its 4xx; dead-letter what nobody else will see, and everything that is our fault
      const deadLetterIt = je.code !== "DEADLINE_EXCEEDED" && (je.status >= 500 || track || !env.reply);
      if (deadLetterIt) {
        try {
          // copy first: once acked, a work-queue stream deletes the job
          await deadLetter(infra, { jobId: meta.id, subject: m.subject, data: m.data, headers: m.headers, error: je, attempts: attempt });
        } catch (dlqErr) {
          jlog().warn({ err: dlqErr }, "could not dead-letter; job will be redelivered");
          m.nak(retryDelayMs(attempt, config.retryBaseMs));
          return;
        }
      }
    }
    const body = encodeResult(job?.format ?? env.format, meta, outputs);
    try {
      if (env.reply) nc.publish(env.reply, body);
      // a sync caller waiting on its reply subject needs no stored copy: that saves a JetStream write per request
      const replyOnly = env.reply && !track && m.headers?.get(HEADERS.result) === "reply";
      if (!replyOnly) await infra.js.publish(subjects.result(meta.id), body, { msgID: `result-${m.headers?.get(HEADERS.msgId) ?? meta.id}` });
      if (track) {
        await finish({ id: meta.id, model }, meta.ok ? { status: "succeeded", ...(meta.version ? { version: meta.version } : {}) } : { status: "failed", error: meta.error });
      }
      m.ack();
      await collect(job?.claim);
    } catch (err) {
      // The result is not durable: let JetStream redeliver the job rather than lose it.
      jlog().warn({ err }, "could not store result; job will be redelivered");
      m.nak(retryDelayMs(attempt, config.retryBaseMs));
    }
  }

  /** Runs a NATS operation, turning its failure into a retryable NATS_UNAVAILABLE. */
  async function transient<T>(fn: () => Promise<T>, what: string): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof JobError && err.code !== "CONFLICT") throw err;
      throw new JobError("NATS_UNAVAILABLE", `${what} failed: ${(err as Error).message}`, { retryable: true, cause: err });
    }
  }

  /** Deletes a claim-checked activation once its hop is done (the bucket's max age catches any we miss). */
  async function collect(claim: string | undefined): Promise<void> {
    if (claim) await infra.claims.delete(claim).catch((err) => log.warn({ err, claim }, "could not delete claim"));
  }

  return {
    id,
    info,
    async start() {
      nc = givenNc ?? (await connectNats(config, `jetshard-worker-${id}`, log));
      infra = await openInfra(nc, config);
      device = await detectDevice(config.device, log);
      log.info({ device }, `device: ${device.note}`);
      const sessionOptions: ort.InferenceSession.SessionOptions = {
        executionProviders: executionProviders(device) as never,
        graphOptimizationLevel: "all",
        ...(config.ortSpin ? {} : { extra: { session: { intra_op: { allow_spinning: "0" }, inter_op: { allow_spinning: "0" } } } }),
        ...(config.ortIntraOpThreads > 0 ? { intraOpNumThreads: config.ortIntraOpThreads } : {}),
        ...(config.ortInterOpThreads > 0 ? { interOpNumThreads: config.ortInterOpThreads } : {}),
      };
      cache = new SessionCache(infra, { dir: config.cacheDir, maxSessions: config.modelCacheMax, maxBytes: config.modelCacheBytes, sessionOptions }, log);
      models = new KvMirror(infra.models, ModelRecordSchema, log);
      peers = new KvMirror(infra.workers, WorkerInfoSchema, log);
      await Promise.all([models.start(), peers.start()]);
      models.onChange(() => void reconcile());
      // Re-pick when membership changes (not on every heartbeat): placement is a function of who is live.
      let lastPeers = "";
      peers.onChange(() => {
        const sig = livePeers()
          .map((w) => `${w.id}/${w.placement}/${w.placement === "fixed" ? w.shards.join("+") : ""}`)
          .sort()
          .join(",");
        if (sig !== lastPeers) {
          lastPeers = sig;
          void reconcile();
        }
      });
      await reconcile();
      advisories = createAdvisoryProcessor({ infra, log, workerId: id });
      await advisories.start();
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
      peers?.stop();
      await reconciling;
      await Promise.all([...loops.keys()].map((k) => stopServing(k)));
      await trials?.stop();
      await advisories?.stop();
      await Promise.allSettled([...inflight]);
      await infra?.workers.delete(id).catch(() => undefined);
      await cache?.close();
      if (!givenNc) await nc?.drain().catch(() => undefined);
      log.info({ processed, failed }, "worker stopped");
    },
  };
}

