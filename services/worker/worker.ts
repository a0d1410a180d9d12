/**
 * The worker: stateless. It registers in the `workers` KV bucket, serves model shards (all of them when they fit
 * its memory budget, the ones named in JETSHARD_SERVE, or the least replicated) through one durable pull consumer
 * per (model, shard) shared by all replicas, and evaluates NAS trials. This file is wiring: registration,
 * placement, and the processors (inference.ts, nas-runner.ts, advisories.ts) plugged into the job runtime
 * (job-runtime.ts), which answers every message exactly once.
 */
import os from "node:os";
import { nuid, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import * as ort from "onnxruntime-node";
import type { JetshardConfig } from "#shared/config.js";
import { parseJobSubject } from "#shared/envelope.js";
import { KvMirror } from "#shared/kv-mirror.js";
import type { Logger } from "#shared/log.js";
import { attachLogs } from "#shared/logs.js";
import { WorkerMetrics, createRegistry } from "#shared/metrics.js";
import { connectNats, openInfra, type Infra } from "#shared/nats.js";
import { startOpsServer, type OpsServer, type Readiness } from "#shared/ops-server.js";
import { ResourceSampler } from "#shared/resources.js";
import { STREAMS, consumerName, directQueue, highConsumerName, subjects } from "#shared/subjects.js";
import { ModelRecordSchema, WorkerInfoSchema, isLive, type ModelRecord, type WorkerInfo } from "#shared/wire.js";
import { createAdvisoryProcessor, type AdvisoryProcessor } from "./advisories.js";
import { retryPolicy } from "./decide.js";
import { detectDevice, sessionProviders, type DeviceInfo } from "./device.js";
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
  /** The bound port of its ops listener (/metrics, /health/live, /health/ready); null while not listening or off. */
  opsPort(): number | null;
  /** What /health/ready answers now. */
  readiness(): Readiness;
}

/** A shard whose consume loop ended on its own is picked again (and its consumer re-created) after this long. */
const RESERVE_AFTER_MS = 1_000;

function sanitizeKey(s: string): string {
  return s.replace(/[^A-Za-z0-9_-]/g, "-").slice(0, 40) || "host";
}

/**
 * Runtime source keys of a shard: shard 0 has a second consumer for high-priority jobs, and takes direct (core
 * NATS) sync requests.
 */
const sourceKeys = (key: string, index: number) => (index === 0 ? [`${key}:high`, key, `${key}:direct`] : [key]);

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
  let pingSub: Subscription | null = null;
  let ops: OpsServer | null = null;
  let metrics: WorkerMetrics | null = null;
  let sampler: ResourceSampler | null = null;
  /** Readiness: the connection is up, the last heartbeat was stored, and every shard placement wants is served. */
  let natsDown = false;
  let registered = false;
  let wanted = new Set<string>();
  const startedAt = new Date().toISOString();

  function readiness(): Readiness {
    if (stopping) return { ready: false, reason: "draining" };
    if (!nc || natsDown || nc.isClosed()) return { ready: false, reason: "not connected to NATS" };
    if (!registered) return { ready: false, reason: "not registered in the workers bucket" };
    const missing = [...wanted].filter((k) => !serving.has(k));
    if (missing.length) return { ready: false, reason: `not serving shard(s) ${missing.sort().join(", ")} yet` };
    return { ready: true };
  }

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
      ...(sampler?.latest() ? { resources: sampler.latest() } : {}),
      ...(metrics ? { stats: metrics.shardStats() } : {}),
      startedAt,
      updatedAt: Date.now(),
    };
  }

  async function register(): Promise<void> {
    try {
      await infra.workers.put(id, JSON.stringify(info()));
      registered = true;
    } catch (err) {
      registered = false;
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
        if (source.endsWith(":direct")) {
          runtime.addDirect({ key: source, subject: subjects.direct(model), queue: directQueue(model), jobSubject: subjects.infer(model), buffer: concurrency });
          // the server knows the subscription once flushed: before that, requests get "no responders"
          await nc.flush();
          continue;
        }
        const high = source.endsWith(":high");
        const name = high ? highConsumerName(model) : consumerName(model, index);
        const filterSubject = high ? subjects.inferHigh(model) : index === 0 ? subjects.infer(model) : subjects.stage(model, index);
        // slots go to the high-priority consumer's messages first; high-priority jobs are few and urgent, so one
        // pull takes all that are queued (up to the worker's concurrency): none waits behind a normal job for the
        // next pull of a small buffer
        await runtime.add({
          key: source,
          open: () => openConsumer(infra, STREAMS.jobs, name, jobConsumerConfig(filterSubject, config)),
          priority: high ? "high" : "normal",
          fetch: { mode: "stream", buffer: high ? Math.min(concurrency, 256) : buffer },
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
    const key = source.replace(/:(high|direct)$/, "");
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
      wanted = wantKeys;
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
    readiness,
    opsPort: () => ops?.port ?? null,
    async start() {
      const registry = createRegistry("worker", VERSION);
      sampler = new ResourceSampler({ intervalMs: config.ops.resourceSampleMs, nvidiaSmi: config.gpu.nvidiaSmi });
      metrics = new WorkerMetrics(registry, { resources: () => sampler?.latest(), inFlight: () => info().inFlight, shards: () => serving.size });
      // first, so that probes get an answer (503, saying why) while the worker starts
      if (config.ops.http) ops = await startOpsServer({ host: config.ops.host, port: config.ops.port, registry, ready: readiness, log, service: "worker" });
      try {
        // before connecting: a GPU id that is not there stops the worker before it touches NATS
        device = await detectDevice(config.device, log, { id: config.gpu.id, nvidiaSmi: config.gpu.nvidiaSmi });
        log.info({ device }, `device: ${device.note}`);
        await sampler.start();
      } catch (err) {
        await ops?.close();
        ops = null;
        throw err;
      }
      nc = givenNc ?? (await connectNats(config, `jetshard-worker-${id}`, log));
      attachLogs(rootLog, nc);
      void (async () => {
        // nats.js keeps a dropped connection open while it reconnects: isClosed() alone reads "connected" throughout
        for await (const st of nc.status()) {
          if (st.type === "disconnect" || st.type === "staleConnection") natsDown = true;
          else if (st.type === "reconnect") natsDown = false;
        }
      })();
      infra = await openInfra(nc, config);
      const sessionOptions: ort.InferenceSession.SessionOptions = {
        executionProviders: sessionProviders(device),
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
      inference = createInferenceProcessor({ infra, config, workerId: id, models, cache, runSlots, metrics });
      runtime = createJobRuntime({ name: "inference", infra, log, workerId: id, policy, ackWaitMs: config.ackWaitMs, concurrency, processor: inference, onSourceEnded, expectHigh: () => runSlots.expect() });
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
      // a sync caller whose direct request this worker took asks here whether it is still alive
      pingSub = nc.subscribe(subjects.ping(id), { callback: (err, m) => void (err || m.respond()) });
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
      pingSub?.unsubscribe();
      await infra?.workers.delete(id).catch(() => undefined);
      await cache?.close();
      sampler?.stop();
      if (!givenNc) await nc?.drain().catch(() => undefined);
      await ops?.close();
      const { processed, failed } = info();
      log.info({ processed, failed }, "worker stopped");
    },
  };
}

