/**
 * The worker: stateless. It registers in the `workers` KV bucket, serves model shards (all of them when they fit
 * its memory budget, the ones named in JETSHARD_SERVE, or the least replicated) through one durable pull consumer
 * per (model, shard) shared by all replicas, and evaluates NAS trials. This file is wiring: registration,
 * placement, and the processors (inference.ts, nas-runner.ts, advisories.ts) plugged into the job runtime
 * (job-runtime.ts), which answers every message exactly once.
 */
import os from "node:os";
import { nuid, type NatsConnection } from "@nats-io/transport-node";
import * as ort from "onnxruntime-node";
import type { JetshardConfig } from "#shared/config.js";
import { parseJobSubject } from "#shared/envelope.js";
import { KvMirror } from "#shared/kv-mirror.js";
import type { Logger } from "#shared/log.js";
import { connectNats, openInfra, type Infra } from "#shared/nats.js";
import { STREAMS, consumerName, highConsumerName, subjects } from "#shared/subjects.js";
import { ModelRecordSchema, WorkerInfoSchema, isLive, type ModelRecord, type WorkerInfo } from "#shared/wire.js";
import { createAdvisoryProcessor, type AdvisoryProcessor } from "./advisories.js";
import { retryPolicy } from "./decide.js";
import { detectDevice, executionProviders, type DeviceInfo } from "./device.js";
import { createInferenceProcessor, type InferenceProcessor } from "./inference.js";
import { createJobRuntime, jobConsumerConfig, openConsumer, type JobRuntime } from "./job-runtime.js";
import { createTrialProcessor, createTrialRunner, type TrialProcessor, type TrialRunner } from "./nas-runner.js";
import { allShards, pickShards, serveFilter, shardKey } from "./placement.js";
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

/** A shard whose consume loop ended on its own is picked again (and its consumer re-created) after this long. */
const RESERVE_AFTER_MS = 1_000;

function sanitizeKey(s: string): string {
  return s.replace(/[^A-Za-z0-9_-]/g, "-").slice(0, 40) || "host";
}

/** Runtime source keys of a shard: shard 0 has a second consumer for high-priority jobs. */
const sourceKeys = (key: string, index: number) => (index === 0 ? [`${key}:high`, key] : [key]);

export function createWorker({ config, log: rootLog, nc: givenNc }: WorkerDeps): Worker {
  const id = `w-${sanitizeKey(os.hostname())}-${nuid.next().slice(-8).toLowerCase()}`;
  const log = rootLog.child({ component: "worker", worker: id });
  /** ORT runs at once (a batch is one run). */
  const runSlots = new Semaphore(config.workerConcurrency);
  /** Messages held at once: enough for every run slot to fill a batch. */
  const concurrency = config.workerConcurrency * config.maxInflightPerRun;
  /** Shards served now, by shard key "model:index". */
  const serving = new Map<string, { model: string; index: number }>();
  const filter = serveFilter(config.serve);
  let infra!: Infra;
  let nc!: NatsConnection;
  let models!: KvMirror<ModelRecord>;
  let peers!: KvMirror<WorkerInfo>;
  let cache!: SessionCache;
  let device!: DeviceInfo;
  let inference: InferenceProcessor | null = null;
  let runtime: JobRuntime | null = null;
  let heartbeat: NodeJS.Timeout | null = null;
  let reserve: NodeJS.Timeout | null = null;
  let trials: TrialRunner | null = null;
  let advisories: AdvisoryProcessor | null = null;
  let stopping = false;
  const startedAt = new Date().toISOString();

  function info(): WorkerInfo {
    const shards = [...serving.keys()].sort();
    const served = [...new Set([...serving.values()].map((l) => l.model))].sort();
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
      inFlight: (runtime?.busy() ?? 0) + (trials?.busy() ?? 0),
      processed: runtime?.stats.succeeded ?? 0,
      failed: runtime?.stats.failed ?? 0,
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

  async function startServing(model: string, index: number): Promise<void> {
    const key = shardKey(model, index);
    if (serving.has(key) || stopping || !runtime) return;
    serving.set(key, { model, index });
    // batchable models buffer enough to fill batches; others only a little, so idle replicas get work too
    const batches = (models.get(model)?.versions.at(-1)?.batching?.maxBatchSize ?? 1) > 1;
    const buffer = batches ? Math.min(concurrency, 256) : Math.max(2, config.workerConcurrency * 2);
    try {
      for (const source of sourceKeys(key, index)) {
        const high = source.endsWith(":high");
        const name = high ? highConsumerName(model) : consumerName(model, index);
        const filterSubject = high ? subjects.inferHigh(model) : index === 0 ? subjects.infer(model) : subjects.stage(model, index);
        // slots go to the high-priority consumer's messages first
        await runtime.add({
          key: source,
          open: () => openConsumer(infra, STREAMS.jobs, name, jobConsumerConfig(filterSubject, config)),
          priority: high ? "high" : "normal",
          fetch: { mode: "stream", buffer },
          restart: false,
        });
      }
    } catch (err) {
      // not consumed, so not advertised
      await stopServing(key);
      throw err;
    }
    log.info({ model, shard: index }, "serving shard");
  }

  async function stopServing(key: string): Promise<void> {
    const l = serving.get(key);
    if (!l) return;
    serving.delete(key);
    await Promise.all(sourceKeys(key, l.index).map((s) => runtime?.remove(s)));
    log.info({ model: l.model, shard: l.index }, "stopped serving shard");
  }

  /**
   * A shard's consume loop ended on its own (its consumer was deleted, or the server failed it): stop advertising
   * the shard now, and pick again shortly (re-creating the consumer when the shard is still wanted).
   */
  function onSourceEnded(source: string): void {
    const key = source.replace(/:high$/, "");
    if (stopping || !serving.has(key)) return;
    void stopServing(key)
      .then(register)
      .catch((err) => log.error({ err, shard: key }, "could not stop serving a shard whose consumer ended"));
    if (reserve) clearTimeout(reserve);
    reserve = setTimeout(() => {
      reserve = null;
      void reconcile();
    }, RESERVE_AFTER_MS);
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
      for (const key of [...serving.keys()]) {
        if (!wantKeys.has(key)) {
          await stopServing(key);
          changed = true;
        }
      }
      for (const s of want) {
        if (!serving.has(shardKey(s.model, s.index))) {
          await startServing(s.model, s.index).catch((err) => log.error({ err, model: s.model, shard: s.index }, "could not start serving shard"));
          changed = true;
        }
      }
      if (changed) await register();
    }).catch((err) => log.error({ err }, "placement failed"));
    return reconciling;
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
      const policy = retryPolicy(config);
      inference = createInferenceProcessor({ infra, config, workerId: id, models, cache, runSlots });
      runtime = createJobRuntime({ name: "inference", infra, log, workerId: id, policy, ackWaitMs: config.ackWaitMs, concurrency, processor: inference, onSourceEnded });
      if (config.nasEnabled || config.nasOnly) trials = createTrialRunner({ infra, config, log, workerId: id, device });
      // a job of any kind may run out of deliveries: its processor answers it, even where it is not evaluated
      const trialProcessor: TrialProcessor = trials?.processor ?? createTrialProcessor({ infra, config, log, workerId: id, device });
      const inferenceProcessor = inference;
      advisories = createAdvisoryProcessor({
        infra,
        log,
        workerId: id,
        policy,
        processorFor: (subject) => (parseJobSubject(subject)?.kind === "nas" ? trialProcessor : inferenceProcessor),
      });
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
      await advisories.start();
      await trials?.start();
      await register();
      heartbeat = setInterval(() => void register(), config.heartbeatMs);
      log.info({ models: [...serving.keys()], concurrency: config.workerConcurrency }, "worker started");
    },
    async stop() {
      if (stopping) return;
      stopping = true;
      log.info({ inFlight: info().inFlight }, "draining");
      if (heartbeat) clearInterval(heartbeat);
      if (reserve) clearTimeout(reserve);
      models?.stop();
      peers?.stop();
      await reconciling;
      serving.clear();
      // stop fetching everywhere, hand back what has not started, finish (inference) or hand back (trials) the rest
      await Promise.all([runtime?.stop(), trials?.stop(), advisories?.stop()]);
      await infra?.workers.delete(id).catch(() => undefined);
      await cache?.close();
      if (!givenNc) await nc?.drain().catch(() => undefined);
      const { processed, failed } = info();
      log.info({ processed, failed }, "worker stopped");
    },
  };
}

