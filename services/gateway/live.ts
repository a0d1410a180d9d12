/**
 * The dashboard's live data: an in-memory sampler that, every `resolutionMs` (1 s), appends one time point to a
 * bounded ring (600 points: the last 10 minutes) and hands it to subscribers (the SSE route). A page opened now
 * therefore shows history at once. Each point holds:
 * - per model: requests/s, failed requests/s and p50/p99 latency of this gateway's own v2 infer requests
 *   (percentiles over the last `percentileWindow` points, so a quiet second does not blank the line);
 * - per shard ("model:index"): queue depth (JetStream consumer num_pending, high priority included, polled every
 *   `queuePollMs` and cached) and messages in flight (num_ack_pending), plus the rates derived from the workers'
 *   cumulative heartbeat counters (jobs/s, inferences and executions/s, bytes in and out/s, mean queue and
 *   compute ms per job);
 * - async jobs by state (counted from a watch on the `jobs` bucket);
 * - per worker: CPU %, resident memory, load and GPU utilization and memory from its heartbeat `resources`.
 * Worker `resources` and `stats` are optional in the heartbeat: a worker without them adds nothing.
 */
import type { KvEntry } from "@nats-io/kv";
import type { JetshardConfig } from "#shared/config.js";
import { JOB_STATUSES, JobRecordSchema, type JobStatus } from "#shared/jobs.js";
import type { KvMirror } from "#shared/kv-mirror.js";
import type { Logger } from "#shared/log.js";
import { pickVersion } from "#shared/model-repo.js";
import { mapLimit, type Infra } from "#shared/nats.js";
import { TRIALS_CONSUMER } from "#shared/nas/wire.js";
import { STREAMS, consumerName, highConsumerName } from "#shared/subjects.js";
import { isLive, type ModelRecord, type ShardStats, type WorkerInfo } from "#shared/wire.js";

/** Rates of one shard in one point; null where nothing reported it. */
export interface ShardPoint {
  /** Jobs waiting in the shard's consumer (not yet delivered). */
  pending: number | null;
  /** Jobs delivered and not yet acknowledged. */
  inFlight: number | null;
  /** Jobs answered per second (succeeded + failed), from worker counters. */
  done: number | null;
  failed: number | null;
  /** Requests run and ONNX Runtime executions per second: inferences / executions is the mean batch size. */
  inferences: number | null;
  executions: number | null;
  /** Bytes per second received (job or activation messages) and sent onward (activations or results). */
  bytesIn: number | null;
  bytesOut: number | null;
  /** Mean milliseconds per job waiting in the queue and computing, over the last heartbeat interval. */
  queueMs: number | null;
  computeMs: number | null;
}

/** One time point of the ring. */
export interface LivePoint {
  /** Epoch ms. */
  t: number;
  models: Record<string, { rps: number; errors: number; p50: number | null; p99: number | null }>;
  shards: Record<string, ShardPoint>;
  jobs: Record<JobStatus, number>;
  workers: Record<string, { cpu: number | null; rssMb: number | null; load1: number | null; gpu: number | null; gpuMemMb: number | null }>;
}

/** A recently changed async job, as the jobs view lists it. */
export interface RecentJob {
  id: string;
  model: string;
  status: JobStatus;
  attempts: number;
  queuedAt: number;
  finishedAt?: number;
  errorCode?: string;
  tenant?: string;
}

/** What is true now (not history): the tables of the dashboard. */
export interface LiveState {
  at: number;
  resolutionMs: number;
  workers: Array<Omit<WorkerInfo, "stats">>;
  models: Array<{
    name: string;
    tenant?: string;
    latest: number;
    versions: number;
    maxBatchSize: number;
    ready: boolean;
    shards: Array<{ index: number; bytes: number; workers: string[]; pending: number | null; inFlight: number | null; totals: ShardStats | null }>;
  }>;
  jobs: Record<JobStatus, number>;
  /** Newest first; filter by caller before sending. */
  recentJobs: RecentJob[];
  /** The NAS trials queue (shared consumer), when it exists. */
  nas: { pending: number; inFlight: number } | null;
}

export interface LiveSnapshot {
  resolutionMs: number;
  points: LivePoint[];
  state: LiveState;
}

export interface LiveOptions {
  config: Pick<JetshardConfig, "workerTtlMs" | "resultRetentionMs">;
  log: Logger;
  infra: Infra;
  workers: KvMirror<WorkerInfo>;
  models: KvMirror<ModelRecord>;
  /** Milliseconds between points (default 1000). */
  resolutionMs?: number;
  /** Points kept (default 600). */
  points?: number;
  /** Milliseconds between consumer-info polls (default 2000). */
  queuePollMs?: number;
  /** Points the latency percentiles are computed over (default 5). */
  percentileWindow?: number;
}

export interface LiveSampler {
  /** Records one v2 infer request of this gateway: `ms` from request to response, `ok` = answered 2xx. */
  recordRequest(model: string, ms: number, ok: boolean): void;
  start(): Promise<void>;
  /** Stops sampling and ends every subscription. */
  stop(): void;
  snapshot(): LiveSnapshot;
  /** Async jobs by state now (cheap: no copy of the history), e.g. for a metrics gauge. */
  jobCounts(): Record<JobStatus, number>;
  /** Calls `onPoint` after every new point until the returned function is called; `onEnd` when the sampler stops. */
  subscribe(onPoint: (point: LivePoint, state: LiveState) => void, onEnd: () => void): () => void;
  readonly subscribers: number;
}

/** Most models whose request timings are kept; beyond it new names are not tracked. */
const MAX_MODELS = 256;
/** Most durations kept per model per point (reservoir sampled beyond). */
const MAX_SAMPLES = 4096;
/** Most consumers polled per round (models × shards). */
const MAX_CONSUMERS = 128;
/** Most job records tracked for counts; the oldest are dropped beyond. */
const MAX_JOBS = 100_000;
const RECENT_JOBS = 200;
const MAX_WORKERS = 128;

const r2 = (x: number) => Math.round(x * 100) / 100;
const mb = (bytes: number) => Math.round(bytes / 1048576);

/** The `q`-quantile (0..1) of sorted `xs`, nearest rank. */
export function quantile(sorted: readonly number[], q: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

const STAT_KEYS = ["succeeded", "failed", "inferences", "executions", "queueMs", "computeMs", "bytesIn", "bytesOut"] as const;
type StatKey = (typeof STAT_KEYS)[number];

export function createLiveSampler(opts: LiveOptions): LiveSampler {
  const log = opts.log.child({ component: "live" });
  const resolutionMs = opts.resolutionMs ?? 1000;
  const capacity = opts.points ?? 600;
  const queuePollMs = opts.queuePollMs ?? 2000;
  const window = opts.percentileWindow ?? 5;
  const ring: LivePoint[] = [];
  const subs = new Set<{ onPoint: (p: LivePoint, s: LiveState) => void; onEnd: () => void }>();
  let timer: NodeJS.Timeout | null = null;
  let queueTimer: NodeJS.Timeout | null = null;
  let stopped = false;

  // ---- request timings
  let current = new Map<string, { durations: number[]; seen: number; ok: number; errors: number }>();
  const recent: Array<Map<string, number[]>> = [];

  function recordRequest(model: string, ms: number, ok: boolean): void {
    let m = current.get(model);
    if (!m) {
      // only models that exist, and a bounded number: request paths are the caller's to choose
      if (current.size >= MAX_MODELS || !opts.models.get(model)) return;
      current.set(model, (m = { durations: [], seen: 0, ok: 0, errors: 0 }));
    }
    if (ok) m.ok++;
    else m.errors++;
    m.seen++;
    if (m.durations.length < MAX_SAMPLES) m.durations.push(ms);
    else {
      const i = Math.floor(Math.random() * m.seen);
      if (i < MAX_SAMPLES) m.durations[i] = ms;
    }
  }

  // ---- queue depths (consumer info), polled apart from the ticks and cached
  const queues = new Map<string, { pending: number; inFlight: number }>();
  let nasQueue: { pending: number; inFlight: number } | null = null;
  let polling = false;
  const consumerInfo = (name: string) =>
    opts.infra.jsm.consumers.info(STREAMS.jobs, name).then(
      (ci) => ({ pending: ci.num_pending, inFlight: ci.num_ack_pending }),
      () => null,
    );
  async function pollQueues(): Promise<void> {
    if (polling || stopped) return;
    polling = true;
    try {
      const wanted: Array<{ key: string; names: string[] }> = [];
      for (const rec of opts.models.values()) {
        const mv = pickVersion(rec);
        for (const s of mv.shards) {
          if (wanted.length >= MAX_CONSUMERS) break;
          wanted.push({ key: `${rec.name}:${s.index}`, names: s.index === 0 ? [consumerName(rec.name, 0), highConsumerName(rec.name)] : [consumerName(rec.name, s.index)] });
        }
      }
      const got = await mapLimit(wanted, 8, async (w) => {
        const infos = (await Promise.all(w.names.map(consumerInfo))).filter((x) => x !== null);
        return infos.length ? { pending: infos.reduce((a, b) => a + b.pending, 0), inFlight: infos.reduce((a, b) => a + b.inFlight, 0) } : null;
      });
      queues.clear();
      wanted.forEach((w, i) => got[i] && queues.set(w.key, got[i]!));
      nasQueue = await consumerInfo(TRIALS_CONSUMER);
    } catch (err) {
      log.debug({ err }, "queue depth poll failed");
    } finally {
      polling = false;
    }
  }

  // ---- async job counts, from a watch on the jobs bucket
  const jobs = new Map<string, RecentJob & { seenAt: number }>();
  const counts = Object.fromEntries(JOB_STATUSES.map((s) => [s, 0])) as Record<JobStatus, number>;
  let recentIds: string[] = [];
  let jobWatch: { stop(): void } | null = null;
  let lastPrune = Date.now();

  function forgetJob(id: string): void {
    const old = jobs.get(id);
    if (!old) return;
    counts[old.status]--;
    jobs.delete(id);
  }
  function onJobEntry(e: KvEntry): void {
    if (e.operation !== "PUT" || e.value.length === 0) return forgetJob(e.key);
    let parsed;
    try {
      parsed = JobRecordSchema.safeParse(e.json());
    } catch {
      return;
    }
    if (!parsed.success) return;
    const r = parsed.data;
    forgetJob(r.id);
    // re-inserted at the end: the Map's order is the order of last change, oldest first
    jobs.set(r.id, {
      id: r.id,
      model: r.model,
      status: r.status,
      attempts: r.attempts,
      queuedAt: r.queuedAt,
      ...(r.finishedAt ? { finishedAt: r.finishedAt } : {}),
      ...(r.error ? { errorCode: r.error.code } : {}),
      ...(r.tenant !== undefined ? { tenant: r.tenant } : {}),
      seenAt: Date.now(),
    });
    counts[r.status]++;
    if (jobs.size > MAX_JOBS) forgetJob(jobs.keys().next().value!);
    recentIds.push(r.id);
    if (recentIds.length > RECENT_JOBS * 4) recentIds = [...new Set(recentIds.reverse())].slice(0, RECENT_JOBS).reverse();
  }
  function pruneJobs(now: number): void {
    // KV max_age removes records without a delete marker: forget what the bucket no longer holds
    for (const [id, j] of jobs) {
      if (now - j.seenAt <= opts.config.resultRetentionMs) break;
      forgetJob(id);
    }
  }
  async function watchJobs(): Promise<void> {
    if (stopped) return;
    try {
      const iter = await opts.infra.jobs.watch({ key: ">" });
      if (stopped) return iter.stop();
      jobWatch = iter;
      for (const k of [...jobs.keys()]) forgetJob(k);
      recentIds = [];
      void (async () => {
        try {
          for await (const e of iter) onJobEntry(e);
        } catch (err) {
          log.debug({ err }, "jobs watch ended with an error");
        }
        jobWatch = null;
        if (!stopped) setTimeout(() => void watchJobs(), 1000).unref();
      })();
    } catch (err) {
      log.debug({ err }, "could not open the jobs watch; retrying");
      if (!stopped) setTimeout(() => void watchJobs(), 1000).unref();
    }
  }

  // ---- worker counters → rates between consecutive heartbeats, held until the next one
  const prevStats = new Map<string, { updatedAt: number; stats: Record<string, ShardStats> }>();
  const rates = new Map<string, Map<string, Record<StatKey, number>>>();
  function updateRates(live: WorkerInfo[]): void {
    const ids = new Set(live.map((w) => w.id));
    for (const id of [...prevStats.keys()]) if (!ids.has(id)) (prevStats.delete(id), rates.delete(id));
    for (const w of live) {
      if (!w.stats) continue;
      const prev = prevStats.get(w.id);
      if (prev && prev.updatedAt === w.updatedAt) continue;
      if (prev && w.updatedAt > prev.updatedAt) {
        const dt = (w.updatedAt - prev.updatedAt) / 1000;
        const per = new Map<string, Record<StatKey, number>>();
        for (const [shard, s] of Object.entries(w.stats)) {
          const p = prev.stats[shard];
          const r = {} as Record<StatKey, number>;
          // a counter that went down means the worker restarted: count from zero
          for (const k of STAT_KEYS) r[k] = Math.max(0, s[k] - (p && p[k] <= s[k] ? p[k] : 0)) / dt;
          per.set(shard, r);
        }
        rates.set(w.id, per);
      }
      prevStats.set(w.id, { updatedAt: w.updatedAt, stats: w.stats });
    }
  }

  function liveWorkers(now: number): WorkerInfo[] {
    return opts.workers
      .values()
      .filter((w) => isLive(w, opts.config.workerTtlMs, now))
      .sort((a, b) => a.id.localeCompare(b.id))
      .slice(0, MAX_WORKERS);
  }

  function shardPoints(): Record<string, ShardPoint> {
    const out: Record<string, ShardPoint> = {};
    const sum = new Map<string, Record<StatKey, number>>();
    for (const per of rates.values()) {
      for (const [shard, r] of per) {
        const acc = sum.get(shard) ?? (Object.fromEntries(STAT_KEYS.map((k) => [k, 0])) as Record<StatKey, number>);
        for (const k of STAT_KEYS) acc[k] += r[k];
        sum.set(shard, acc);
      }
    }
    for (const key of new Set([...queues.keys(), ...sum.keys()])) {
      const q = queues.get(key);
      const s = sum.get(key);
      const done = s ? s.succeeded + s.failed : 0;
      out[key] = {
        pending: q?.pending ?? null,
        inFlight: q?.inFlight ?? null,
        done: s ? r2(done) : null,
        failed: s ? r2(s.failed) : null,
        inferences: s ? r2(s.inferences) : null,
        executions: s ? r2(s.executions) : null,
        bytesIn: s ? Math.round(s.bytesIn) : null,
        bytesOut: s ? Math.round(s.bytesOut) : null,
        queueMs: s && done > 0 ? r2(s.queueMs / done) : null,
        computeMs: s && done > 0 ? r2(s.computeMs / done) : null,
      };
    }
    return out;
  }

  function workerPoint(w: WorkerInfo): LivePoint["workers"][string] {
    const r = w.resources;
    if (!r) return { cpu: null, rssMb: null, load1: null, gpu: null, gpuMemMb: null };
    // a worker bound to one GPU reports that one; otherwise the host's GPUs, averaged (memory summed)
    const gpus = w.device.gpuIndex !== undefined ? r.gpus.filter((g) => g.index === w.device.gpuIndex) : r.gpus;
    const util = gpus.map((g) => g.utilPercent).filter((x): x is number => x !== undefined);
    const mem = gpus.map((g) => g.memUsedMb).filter((x): x is number => x !== undefined);
    return {
      cpu: r2(r.cpuPercent),
      rssMb: mb(r.rssBytes),
      load1: r2(r.load1),
      gpu: util.length ? r2(util.reduce((a, b) => a + b, 0) / util.length) : null,
      gpuMemMb: mem.length ? Math.round(mem.reduce((a, b) => a + b, 0)) : null,
    };
  }

  function state(now: number, live: WorkerInfo[]): LiveState {
    const totals = new Map<string, ShardStats>();
    for (const w of live) {
      for (const [shard, s] of Object.entries(w.stats ?? {})) {
        const acc = totals.get(shard) ?? (Object.fromEntries(STAT_KEYS.map((k) => [k, 0])) as ShardStats);
        for (const k of STAT_KEYS) acc[k] += s[k];
        totals.set(shard, acc);
      }
    }
    const models = opts.models
      .values()
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((rec) => {
        const mv = pickVersion(rec);
        const shards = mv.shards.map((s) => {
          const key = `${rec.name}:${s.index}`;
          const q = queues.get(key);
          return { index: s.index, bytes: s.bytes, workers: live.filter((w) => w.shards.includes(key)).map((w) => w.id), pending: q?.pending ?? null, inFlight: q?.inFlight ?? null, totals: totals.get(key) ?? null };
        });
        return {
          name: rec.name,
          ...(rec.tenant !== undefined ? { tenant: rec.tenant } : {}),
          latest: rec.latest,
          versions: rec.versions.length,
          maxBatchSize: mv.batching?.maxBatchSize ?? 1,
          ready: shards.every((s) => s.workers.length > 0),
          shards,
        };
      });
    const recentJobs: RecentJob[] = [];
    const seen = new Set<string>();
    for (let i = recentIds.length - 1; i >= 0 && recentJobs.length < RECENT_JOBS; i--) {
      const id = recentIds[i]!;
      if (seen.has(id)) continue;
      seen.add(id);
      const j = jobs.get(id);
      if (j) {
        const { seenAt: _s, ...rest } = j;
        recentJobs.push(rest);
      }
    }
    return {
      at: now,
      resolutionMs,
      workers: live.map(({ stats: _s, ...w }) => w),
      models,
      jobs: { ...counts },
      recentJobs,
      nas: nasQueue,
    };
  }

  function tick(): void {
    const now = Date.now();
    const live = liveWorkers(now);
    updateRates(live);
    recent.push(new Map([...current].map(([m, c]) => [m, c.durations])));
    if (recent.length > window) recent.shift();
    const models: LivePoint["models"] = {};
    const names = new Set(recent.flatMap((m) => [...m.keys()]));
    for (const name of names) {
      const all = recent.flatMap((m) => m.get(name) ?? []).sort((a, b) => a - b);
      const c = current.get(name);
      const p50 = quantile(all, 0.5);
      const p99 = quantile(all, 0.99);
      models[name] = { rps: r2(((c?.ok ?? 0) + (c?.errors ?? 0)) * (1000 / resolutionMs)), errors: r2((c?.errors ?? 0) * (1000 / resolutionMs)), p50: p50 === null ? null : r2(p50), p99: p99 === null ? null : r2(p99) };
    }
    current = new Map();
    const point: LivePoint = {
      t: now,
      models,
      shards: shardPoints(),
      jobs: { ...counts },
      workers: Object.fromEntries(live.map((w) => [w.id, workerPoint(w)])),
    };
    ring.push(point);
    if (ring.length > capacity) ring.shift();
    if (now - lastPrune > 10_000) {
      lastPrune = now;
      pruneJobs(now);
    }
    if (subs.size === 0) return;
    const s = state(now, live);
    for (const sub of [...subs]) {
      try {
        sub.onPoint(point, s);
      } catch (err) {
        log.warn({ err }, "a live subscriber failed");
      }
    }
  }

  return {
    recordRequest,
    get subscribers() {
      return subs.size;
    },
    async start() {
      stopped = false;
      await watchJobs();
      void pollQueues();
      timer = setInterval(tick, resolutionMs);
      queueTimer = setInterval(() => void pollQueues(), queuePollMs);
      timer.unref();
      queueTimer.unref();
    },
    stop() {
      stopped = true;
      if (timer) clearInterval(timer);
      if (queueTimer) clearInterval(queueTimer);
      timer = queueTimer = null;
      jobWatch?.stop();
      jobWatch = null;
      for (const s of [...subs]) s.onEnd();
      subs.clear();
    },
    snapshot() {
      const now = Date.now();
      return { resolutionMs, points: [...ring], state: state(now, liveWorkers(now)) };
    },
    jobCounts() {
      return { ...counts };
    },
    subscribe(onPoint, onEnd) {
      const sub = { onPoint, onEnd };
      subs.add(sub);
      return () => void subs.delete(sub);
    },
  };
}
