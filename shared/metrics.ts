/**
 * Prometheus metrics (prom-client), one registry per process. Names and labels follow Triton's
 * (nv_inference_request_success → jetshard_inference_request_success_total, with `model`, `version` and, since a
 * jetshard model is a pipeline, `shard`), durations as histograms in seconds (Prometheus' convention, where Triton
 * keeps microsecond counters). The README's Operations section lists every metric; keep them together.
 *
 * Each process builds its registry with `createRegistry` and one metrics object for its role (`WorkerMetrics`,
 * `GatewayMetrics`, `ControllerMetrics`), which it passes to the code that does the work. Values that live elsewhere
 * (resource samples, consumer lag, job states) are read when Prometheus scrapes, through the functions given here.
 *
 * Nothing exported here carries a secret: label values are model names, shard indexes, error codes, GPU names.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { Resources, ShardStats } from "./wire.js";

export type { Registry };

/** The process kinds that serve metrics. */
export type Service = "gateway" | "worker" | "controller";

/** Seconds: from a sub-millisecond ORT run to a job that waited a minute in the queue. */
export const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/**
 * A registry with Node's default process metrics (CPU seconds, resident memory, event loop lag, GC, heap) and
 * `jetshard_info{service,version}` = 1.
 */
export function createRegistry(service: Service, version: string): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // gauges named like counters, which `promtool check metrics` rejects; nodejs_active_{handles,requests,resources}
  // (per type, without the suffix) carry the same figures
  for (const name of ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"]) registry.removeSingleMetric(name);
  const info = new Gauge({ name: "jetshard_info", help: "Always 1; labels: the jetshard service and its version.", labelNames: ["service", "version"], registers: [registry] });
  info.set({ service, version }, 1);
  return registry;
}

/**
 * Wraps an expensive read (a JetStream API call made at scrape time) so that scrapes within `ttlMs` share one
 * result, concurrent scrapes share one call, and a failed call serves the last good value (or `fallback`).
 */
export function cachedRead<T>(ttlMs: number, read: () => Promise<T>, fallback: T): () => Promise<T> {
  let value = fallback;
  let at = -Infinity;
  let pending: Promise<T> | null = null;
  return () => {
    if (performance.now() - at < ttlMs) return Promise.resolve(value);
    pending ??= read()
      .then(
        (v) => {
          value = v;
          at = performance.now();
          return v;
        },
        () => value,
      )
      .finally(() => (pending = null));
    return pending;
  };
}

/** Labels of one shard of one model version, as the worker's metrics carry them. */
export interface ShardLabels {
  model: string;
  /** The model version ("" when a message failed before its version was known). */
  version: string;
  shard: string;
}

const MB = 1024 * 1024;

/**
 * A worker's metrics: per shard served, requests answered, inferences vs executions, queue and compute time, bytes
 * in and out; per process and host, CPU, memory and GPUs. Also keeps the cumulative per-shard counters the worker
 * puts in its heartbeat (`shardStats`).
 */
export class WorkerMetrics {
  readonly registry: Registry;
  private readonly success: Counter<keyof ShardLabels>;
  private readonly failure: Counter<keyof ShardLabels | "reason">;
  private readonly inferences: Counter<keyof ShardLabels>;
  private readonly executions: Counter<keyof ShardLabels>;
  private readonly queue: Histogram<keyof ShardLabels>;
  private readonly computeInput: Histogram<keyof ShardLabels>;
  private readonly computeInfer: Histogram<keyof ShardLabels>;
  private readonly computeOutput: Histogram<keyof ShardLabels>;
  private readonly pending: Gauge<"model" | "shard">;
  private readonly bytes: Counter<"model" | "shard" | "direction">;
  private readonly stats = new Map<string, ShardStats>();

  constructor(
    registry: Registry,
    sources: {
      /** The latest resource sample. */
      resources: () => Resources | undefined;
      /** Jobs this worker holds now (inference and trials), and shards it serves. */
      inFlight: () => number;
      shards: () => number;
    },
  ) {
    this.registry = registry;
    const registers = [registry];
    const shardLabels = ["model", "version", "shard"] as const;
    this.success = new Counter({ name: "jetshard_inference_request_success_total", help: "Requests (job messages) this worker answered successfully, per model version and shard: a non-last shard succeeds when it hands its activations on.", labelNames: shardLabels, registers });
    this.failure = new Counter({ name: "jetshard_inference_request_failure_total", help: "Requests this worker failed terminally (dead-lettered or rejected), by error code in `reason`. Retried attempts are not counted.", labelNames: [...shardLabels, "reason"], registers });
    this.inferences = new Counter({ name: "jetshard_inference_count_total", help: "Inferences performed: rows of the batch dimension for models that batch, else 1 per request. Divided by jetshard_inference_exec_count_total: the mean batch size.", labelNames: shardLabels, registers });
    this.executions = new Counter({ name: "jetshard_inference_exec_count_total", help: "ONNX Runtime executions (a dynamic batch counts once).", labelNames: shardLabels, registers });
    const hist = (name: string, help: string) => new Histogram({ name, help, labelNames: shardLabels, buckets: DURATION_BUCKETS, registers });
    this.queue = hist("jetshard_inference_queue_duration_seconds", "Per request: from the message's arrival in JetStream to the start of the ONNX Runtime execution that carries it (time in the stream, the worker's buffer and the dynamic batcher).");
    this.computeInput = hist("jetshard_inference_compute_input_duration_seconds", "Per request: decoding the message into tensors (and fetching claim-checked activations) and validating them.");
    this.computeInfer = hist("jetshard_inference_compute_infer_duration_seconds", "Per execution: one ONNX Runtime run, a whole batch counted once.");
    this.computeOutput = hist("jetshard_inference_compute_output_duration_seconds", "Per request: encoding and publishing the result, or the activations for the next shard.");
    this.pending = new Gauge({ name: "jetshard_inference_pending_requests", help: "Requests this worker is processing now: waiting for a compute slot or a batch, or running.", labelNames: ["model", "shard"], registers });
    this.bytes = new Counter({ name: "jetshard_stage_bytes_total", help: "Bytes of job messages received (direction=in) and of results or next-shard activations sent (direction=out), claim-checked activations included.", labelNames: ["model", "shard", "direction"], registers });

    const last = sources.resources;
    new Gauge({ name: "jetshard_worker_in_flight", help: "Jobs this worker holds now (inference and NAS trials).", registers, collect() { this.set(sources.inFlight()); } });
    new Gauge({ name: "jetshard_worker_shards", help: "Model shards this worker serves now.", registers, collect() { this.set(sources.shards()); } });
    const fromSample = (name: string, help: string, pick: (r: Resources) => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          const r = last();
          if (r) this.set(pick(r));
        },
      });
    fromSample("jetshard_worker_cpu_percent", "CPU used by this worker process since the previous sample, percent of one core (JETSHARD_RESOURCE_SAMPLE_MS).", (r) => r.cpuPercent);
    fromSample("jetshard_worker_resident_memory_bytes", "Resident memory of this worker process at the last sample.", (r) => r.rssBytes);
    fromSample("jetshard_host_load1", "1-minute load average of the worker's host.", (r) => r.load1);
    fromSample("jetshard_host_memory_total_bytes", "Memory of the worker's host.", (r) => r.memTotalBytes);
    fromSample("jetshard_host_memory_free_bytes", "Free memory of the worker's host.", (r) => r.memFreeBytes);
    const perGpu = (name: string, help: string, pick: (g: Resources["gpus"][number]) => number | undefined) =>
      new Gauge({
        name,
        help,
        labelNames: ["gpu", "name"],
        registers,
        collect() {
          this.reset();
          for (const g of last()?.gpus ?? []) {
            const v = pick(g);
            if (v !== undefined) this.set({ gpu: String(g.index), name: g.name }, v);
          }
        },
      });
    perGpu("jetshard_gpu_utilization_percent", "GPU utilization as nvidia-smi reports it, per GPU of the worker's host.", (g) => g.utilPercent);
    perGpu("jetshard_gpu_memory_used_bytes", "GPU memory in use, per GPU of the worker's host.", (g) => (g.memUsedMb === undefined ? undefined : g.memUsedMb * MB));
    perGpu("jetshard_gpu_memory_total_bytes", "GPU memory, per GPU of the worker's host.", (g) => (g.memTotalMb === undefined ? undefined : g.memTotalMb * MB));
  }

  private book(l: { model: string; shard: string }): ShardStats {
    const key = `${l.model}:${l.shard}`;
    let s = this.stats.get(key);
    if (!s) this.stats.set(key, (s = { succeeded: 0, failed: 0, inferences: 0, executions: 0, queueMs: 0, computeMs: 0, bytesIn: 0, bytesOut: 0 }));
    return s;
  }

  /** A request starts being processed (pair with `released`). */
  held(l: { model: string; shard: string }): void {
    this.pending.inc({ model: l.model, shard: l.shard });
  }

  released(l: { model: string; shard: string }): void {
    this.pending.dec({ model: l.model, shard: l.shard });
  }

  succeeded(l: ShardLabels): void {
    this.success.inc({ ...l });
    this.book(l).succeeded++;
  }

  /** A terminal failure; `reason` is the error code (a bounded set). */
  failed(l: ShardLabels, reason: string): void {
    this.failure.inc({ ...l, reason });
    this.book(l).failed++;
  }

  queued(l: ShardLabels, seconds: number): void {
    const s = Math.max(0, seconds);
    this.queue.observe({ ...l }, s);
    this.book(l).queueMs += s * 1000;
  }

  input(l: ShardLabels, seconds: number): void {
    this.computeInput.observe({ ...l }, seconds);
    this.book(l).computeMs += seconds * 1000;
  }

  /** One ONNX Runtime execution carrying `inferences` inferences (see jetshard_inference_count_total). */
  executed(l: ShardLabels, inferences: number, seconds: number): void {
    this.executions.inc({ ...l });
    this.inferences.inc({ ...l }, inferences);
    this.computeInfer.observe({ ...l }, seconds);
    const b = this.book(l);
    b.executions++;
    b.inferences += inferences;
    b.computeMs += seconds * 1000;
  }

  output(l: ShardLabels, seconds: number): void {
    this.computeOutput.observe({ ...l }, seconds);
    this.book(l).computeMs += seconds * 1000;
  }

  transferred(l: { model: string; shard: string }, direction: "in" | "out", bytes: number): void {
    if (bytes <= 0) return;
    this.bytes.inc({ model: l.model, shard: l.shard, direction }, bytes);
    const b = this.book(l);
    if (direction === "in") b.bytesIn += bytes;
    else b.bytesOut += bytes;
  }

  /** Cumulative counters per shard ("model:index") since this worker started, for its heartbeat. */
  shardStats(): Record<string, ShardStats> {
    const round = (n: number) => Math.round(n * 1000) / 1000;
    return Object.fromEntries([...this.stats].map(([k, s]) => [k, { ...s, queueMs: round(s.queueMs), computeMs: round(s.computeMs) }]));
  }
}

/** Consumer lag of one model shard, summed over its consumers (shard 0 has a normal and a high-priority one). */
export interface ShardLag {
  model: string;
  shard: number;
  /** Messages not yet delivered to any worker. */
  pending: number;
  /** Messages delivered and not yet answered. */
  ackPending: number;
}

/** What the gateway reads from JetStream when it is scraped (see services/gateway/fleet-metrics.ts). */
export interface FleetReads {
  consumers(): Promise<{ shards: ShardLag[]; trials?: { pending: number; ackPending: number } }>;
  /** Dead letters per model (inference) and of NAS trials. */
  deadLetters(): Promise<{ models: Record<string, number>; trials: number }>;
  /** Async jobs by state in the `jobs` bucket. */
  jobs(): Promise<Record<string, number>>;
  workersLive(): number;
  models(): number;
}

/**
 * The gateway's metrics: HTTP requests by route, sync inference per model (as the gateway sees it, end to end),
 * async jobs submitted, and the fleet as JetStream holds it (consumer lag, dead letters, jobs by state).
 */
export class GatewayMetrics {
  readonly registry: Registry;
  private readonly http: Counter<"method" | "route" | "code">;
  private readonly httpDuration: Histogram<"method" | "route">;
  private readonly inferSuccess: Counter<"model" | "version">;
  private readonly inferFailure: Counter<"model" | "version" | "reason">;
  private readonly inferDuration: Histogram<"model" | "version">;
  private readonly submitted: Counter<"model">;

  constructor(registry: Registry, fleet: FleetReads) {
    this.registry = registry;
    const registers = [registry];
    this.http = new Counter({ name: "jetshard_http_requests_total", help: "HTTP requests answered, by method, route pattern and status code.", labelNames: ["method", "route", "code"], registers });
    this.httpDuration = new Histogram({ name: "jetshard_http_request_duration_seconds", help: "Time to answer an HTTP request, by method and route pattern.", labelNames: ["method", "route"], buckets: DURATION_BUCKETS, registers });
    this.inferSuccess = new Counter({ name: "jetshard_gateway_inference_request_success_total", help: "Synchronous inference requests (POST .../infer) answered with a result.", labelNames: ["model", "version"], registers });
    this.inferFailure = new Counter({ name: "jetshard_gateway_inference_request_failure_total", help: "Synchronous inference requests that failed, by error code in `reason`.", labelNames: ["model", "version", "reason"], registers });
    this.inferDuration = new Histogram({ name: "jetshard_gateway_inference_request_duration_seconds", help: "Synchronous inference requests, end to end as the gateway sees them (every shard, queue included).", labelNames: ["model", "version"], buckets: DURATION_BUCKETS, registers });
    this.submitted = new Counter({ name: "jetshard_jobs_submitted_total", help: "Async jobs accepted by this gateway (POST /v1/jobs; idempotent replays not counted).", labelNames: ["model"], registers });

    new Gauge({ name: "jetshard_workers_live", help: "Workers whose heartbeat is younger than JETSHARD_WORKER_TTL_MS.", registers, collect() { this.set(fleet.workersLive()); } });
    new Gauge({ name: "jetshard_models", help: "Models in the repository.", registers, collect() { this.set(fleet.models()); } });
    // prom-client collects every metric at once: each gauge awaits the same (shared, cached) read
    const perShard = (name: string, help: string, pick: (s: ShardLag) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ["model", "shard"],
        registers,
        async collect() {
          const lag = await fleet.consumers();
          this.reset();
          for (const s of lag.shards) this.set({ model: s.model, shard: String(s.shard) }, pick(s));
        },
      });
    perShard("jetshard_consumer_pending", "Jobs queued for a model shard and not yet delivered to a worker (JetStream consumer num_pending; shard 0's high-priority consumer is added in).", (s) => s.pending);
    perShard("jetshard_consumer_ack_pending", "Jobs delivered to a worker of a model shard and not yet answered (JetStream consumer num_ack_pending).", (s) => s.ackPending);
    new Gauge({ name: "jetshard_nas_trials_pending", help: "NAS trial evaluations queued and not yet delivered to a worker (consumer nas_trials).", registers, async collect() { this.set((await fleet.consumers()).trials?.pending ?? 0); } });
    new Gauge({ name: "jetshard_nas_trials_ack_pending", help: "NAS trial evaluations delivered to a worker and not yet answered.", registers, async collect() { this.set((await fleet.consumers()).trials?.ackPending ?? 0); } });
    new Gauge({
      name: "jetshard_dead_letters",
      help: "Inference jobs in the dead-letter stream (DLQ), per model.",
      labelNames: ["model"],
      registers,
      async collect() {
        const d = await fleet.deadLetters();
        this.reset();
        for (const [model, n] of Object.entries(d.models)) this.set({ model }, n);
      },
    });
    new Gauge({ name: "jetshard_nas_dead_letters", help: "NAS trial evaluations in the dead-letter stream.", registers, async collect() { this.set((await fleet.deadLetters()).trials); } });
    new Gauge({
      name: "jetshard_jobs",
      help: "Async jobs in the jobs bucket (kept JETSHARD_RESULT_RETENTION_S after they finish), by state.",
      labelNames: ["state"],
      registers,
      async collect() {
        const counts = await fleet.jobs();
        this.reset();
        for (const [state, n] of Object.entries(counts)) this.set({ state }, n);
      },
    });
  }

  /** One HTTP request answered. */
  request(method: string, route: string, code: number, seconds: number): void {
    this.http.inc({ method, route, code: String(code) });
    this.httpDuration.observe({ method, route }, seconds);
  }

  /** One synchronous inference request finished: ok, or failed with an error code. */
  inferred(model: string, version: string, seconds: number, error?: string): void {
    if (error === undefined) {
      this.inferSuccess.inc({ model, version });
      this.inferDuration.observe({ model, version }, seconds);
    } else {
      this.inferFailure.inc({ model, version, reason: error });
    }
  }

  jobSubmitted(model: string): void {
    this.submitted.inc({ model });
  }
}

/** Trial counts of one experiment, as its record's progress says. */
export interface ExperimentProgress {
  experiment: string;
  counts: Record<string, number>;
}

/** The controller's metrics: the experiments it drives and their trials by state. */
export class ControllerMetrics {
  readonly registry: Registry;

  constructor(registry: Registry, sources: { driven: () => ExperimentProgress[] }) {
    this.registry = registry;
    const registers = [registry];
    new Gauge({ name: "jetshard_nas_experiments_driven", help: "NAS experiments this controller drives (holds the lease of) now.", registers, collect() { this.set(sources.driven().length); } });
    new Gauge({
      name: "jetshard_nas_trials",
      help: "Trials of the experiments this controller drives, by state (queued, running, succeeded, failed, early_stopped).",
      labelNames: ["experiment", "state"],
      registers,
      collect() {
        this.reset();
        for (const e of sources.driven()) for (const [state, n] of Object.entries(e.counts)) this.set({ experiment: e.experiment, state }, n);
      },
    });
  }
}
