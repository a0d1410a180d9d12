import { z } from "zod";

const int = (def: number, min = 0) => z.coerce.number().int().min(min).default(def);
const boolStr = (def: boolean) =>
  z
    .enum(["1", "0", "true", "false", "yes", "no", ""])
    .default(def ? "1" : "0")
    .transform((v) => v === "1" || v === "true" || v === "yes");

/**
 * Every environment variable jetshard reads, with its default. Units are in the names.
 * The README's configuration table mirrors this schema; keep them together.
 */
const EnvSchema = z.object({
  JETSHARD_NATS_URL: z.string().optional(),
  JETSHARD_HOST: z.string().default("127.0.0.1"),
  JETSHARD_PORT: int(8080),
  JETSHARD_WORKERS: int(2),
  JETSHARD_DATA_DIR: z.string().default(".data"),
  JETSHARD_LOG_LEVEL: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info"),
  JETSHARD_REQUEST_TIMEOUT_MS: int(30_000, 1),
  JETSHARD_MAX_BODY_MB: z.coerce.number().positive().default(8),
  JETSHARD_MAX_MODEL_MB: z.coerce.number().positive().default(1024),
  JETSHARD_HEARTBEAT_MS: int(5_000, 100),
  JETSHARD_WORKER_TTL_MS: int(15_000, 300),
  JETSHARD_ACK_WAIT_MS: int(30_000, 500),
  JETSHARD_MAX_DELIVER: int(10, 1),
  JETSHARD_MAX_ATTEMPTS: int(3, 1),
  JETSHARD_RETRY_BASE_MS: int(1000, 1),
  JETSHARD_QUEUE_MAX_MSGS: int(100_000, 1),
  JETSHARD_QUEUE_MAX_MB: int(1024, 1),
  JETSHARD_WORKER_CONCURRENCY: int(1, 1),
  JETSHARD_MAX_INFLIGHT_PER_RUN: int(32, 1),
  JETSHARD_SERVE: z.string().default(""),
  JETSHARD_CACHE_DIR: z.string().optional(),
  JETSHARD_MODEL_CACHE_MAX: int(8, 1),
  JETSHARD_MODEL_CACHE_MB: int(4096, 1),
  JETSHARD_RESULT_RETENTION_S: int(3600, 1),
  JETSHARD_ORT_INTRA_THREADS: int(0),
  JETSHARD_ORT_INTER_THREADS: int(0),
  JETSHARD_ORT_SPIN: boolStr(true),
  JETSHARD_DEVICE: z.enum(["auto", "cpu", "cuda"]).default("auto"),
  JETSHARD_SEED_DEMO: boolStr(true),
  // NAS: whether this worker evaluates trials, whether it does only that, and the controller's lease
  JETSHARD_NAS: boolStr(true),
  JETSHARD_NAS_ONLY: boolStr(false),
  JETSHARD_NAS_CONCURRENCY: int(1, 1),
  JETSHARD_CONTROLLER_LEASE_MS: int(10_000, 500),
  JETSHARD_TRIAL_TIMEOUT_MS: int(600_000, 100),
  // Trust boundary: HTTP authentication, NATS credentials and TLS, operator-registered evaluators
  JETSHARD_AUTH: z.enum(["keys", "off"]).optional(),
  JETSHARD_NATS_USER: z.string().optional(),
  JETSHARD_NATS_PASSWORD: z.string().optional(),
  JETSHARD_NATS_TOKEN: z.string().optional(),
  JETSHARD_NATS_INBOX_PREFIX: z.string().regex(/^_INBOX(\.[A-Za-z0-9_-]+)*$/, "must be _INBOX or _INBOX.<token>[.<token>…]").optional(),
  JETSHARD_NATS_TLS_CA: z.string().optional(),
  JETSHARD_NATS_TLS_CERT: z.string().optional(),
  JETSHARD_NATS_TLS_KEY: z.string().optional(),
  JETSHARD_EVALUATORS_DIR: z.string().optional(),
  // Limits, so one caller cannot take the service down
  JETSHARD_MAX_SHARDS: int(16, 1),
  JETSHARD_MAX_TRIALS: int(10_000, 1),
  JETSHARD_MAX_TRIAL_CONCURRENCY: int(64, 1),
  JETSHARD_MAX_TRIAL_TIMEOUT_MS: int(3_600_000, 100),
  JETSHARD_MAX_WATCHERS: int(1_000, 1),
  JETSHARD_MAX_LIST_LIMIT: int(1_000, 1),
  // Per-tenant quotas (HTTP)
  JETSHARD_QUOTA_MODELS: int(100, 1),
  JETSHARD_QUOTA_VERSIONS: int(20, 1),
  JETSHARD_QUOTA_MODEL_MB: int(10_240, 1),
  JETSHARD_QUOTA_QUEUED_JOBS: int(10_000, 1),
  // Operations: the small HTTP listener of workers and controllers, central logs, log format
  JETSHARD_OPS_HTTP: boolStr(true),
  JETSHARD_OPS_HOST: z.string().optional(),
  JETSHARD_OPS_PORT: int(9464),
  JETSHARD_LOGS_STREAM: boolStr(true),
  JETSHARD_LOGS_MAX_MB: int(256, 1),
  JETSHARD_LOGS_MAX_AGE_S: int(86_400, 1),
  JETSHARD_LOG_FORMAT: z.enum(["auto", "json", "pretty"]).default("auto"),
  JETSHARD_RESOURCE_SAMPLE_MS: int(5_000, 100),
  // Scale-out: replicas of streams and buckets, GPUs
  JETSHARD_REPLICAS: z.coerce.number().int().min(1).max(5).default(1),
  JETSHARD_GPU_ID: z.coerce.number().int().min(0).optional(),
  JETSHARD_WORKERS_PER_GPU: boolStr(false),
  JETSHARD_NVIDIA_SMI: z.string().default("nvidia-smi"),
});

export type JetshardConfig = ReturnType<typeof loadConfig>;

/** Every JETSHARD_* variable the schema knows (deploy manifests and docs are checked against it). */
export const ENV_NAMES: readonly string[] = Object.keys(EnvSchema.shape);

/** Parses the environment once. Throws a ConfigError naming the variable on bad values. */
export function loadConfig(env: Record<string, string | undefined> = process.env) {
  const parsed = EnvSchema.safeParse(env);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ConfigError(`${issue.path.join(".")}: ${issue.message}`);
  }
  const e = parsed.data;
  return {
    /** Comma-separated NATS servers. */
    natsServers: (e.JETSHARD_NATS_URL ?? "nats://127.0.0.1:4222").split(",").map((s) => s.trim()).filter(Boolean),
    /** Whether the user named a NATS server (then `up` starts none). */
    natsUrlGiven: e.JETSHARD_NATS_URL !== undefined && e.JETSHARD_NATS_URL !== "",
    host: e.JETSHARD_HOST,
    port: e.JETSHARD_PORT,
    workers: e.JETSHARD_WORKERS,
    dataDir: e.JETSHARD_DATA_DIR,
    logLevel: e.JETSHARD_LOG_LEVEL,
    requestTimeoutMs: e.JETSHARD_REQUEST_TIMEOUT_MS,
    maxBodyBytes: Math.floor(e.JETSHARD_MAX_BODY_MB * 1024 * 1024),
    maxModelBytes: Math.floor(e.JETSHARD_MAX_MODEL_MB * 1024 * 1024),
    heartbeatMs: e.JETSHARD_HEARTBEAT_MS,
    workerTtlMs: e.JETSHARD_WORKER_TTL_MS,
    ackWaitMs: e.JETSHARD_ACK_WAIT_MS,
    /** Hard cap on deliveries of one job (crash redeliveries included); past it the job is dead-lettered. */
    maxDeliver: Math.max(e.JETSHARD_MAX_DELIVER, e.JETSHARD_MAX_ATTEMPTS),
    /** Attempts of a job whose runs fail with a retryable error before it is dead-lettered. */
    maxAttempts: e.JETSHARD_MAX_ATTEMPTS,
    /** First retry delay; doubles per attempt, capped at 30 s. */
    retryBaseMs: e.JETSHARD_RETRY_BASE_MS,
    /** Queued jobs per model (and per shard) before new ones are refused with 429. */
    queueMaxMsgs: e.JETSHARD_QUEUE_MAX_MSGS,
    /** Bytes of all queued jobs before new ones are refused with 429. */
    queueMaxBytes: e.JETSHARD_QUEUE_MAX_MB * 1024 * 1024,
    /**
     * ONNX Runtime runs one worker makes at once (a batch counts once). onnxruntime-node runs a session on the JS
     * thread, so on CPU more than 1 only makes batches smaller: scale with more worker processes instead.
     */
    workerConcurrency: e.JETSHARD_WORKER_CONCURRENCY,
    /** Messages a worker holds per run slot, waiting to join a batch. */
    maxInflightPerRun: e.JETSHARD_MAX_INFLIGHT_PER_RUN,
    /** Models this worker serves; empty = every model in the repository. */
    serve: e.JETSHARD_SERVE.split(",").map((s) => s.trim()).filter(Boolean),
    cacheDir: e.JETSHARD_CACHE_DIR ?? `${e.JETSHARD_DATA_DIR}/model-cache`,
    modelCacheMax: e.JETSHARD_MODEL_CACHE_MAX,
    modelCacheBytes: e.JETSHARD_MODEL_CACHE_MB * 1024 * 1024,
    resultRetentionMs: e.JETSHARD_RESULT_RETENTION_S * 1000,
    ortIntraOpThreads: e.JETSHARD_ORT_INTRA_THREADS,
    ortInterOpThreads: e.JETSHARD_ORT_INTER_THREADS,
    /** Let ORT's intra-op threads spin between runs (ORT's default): lower latency, but they hold CPU. */
    ortSpin: e.JETSHARD_ORT_SPIN,
    device: e.JETSHARD_DEVICE,
    seedDemo: e.JETSHARD_SEED_DEMO,
    /** This worker evaluates NAS trials. */
    nasEnabled: e.JETSHARD_NAS,
    /** This worker evaluates NAS trials only (a dedicated pool): it serves no models. */
    nasOnly: e.JETSHARD_NAS_ONLY,
    /** Trials one worker evaluates at once. */
    nasConcurrency: e.JETSHARD_NAS_CONCURRENCY,
    /** A controller holds an experiment for this long without renewing before another may take it over. */
    controllerLeaseMs: e.JETSHARD_CONTROLLER_LEASE_MS,
    /** Default trial timeout when the experiment spec sets none. */
    trialTimeoutMs: e.JETSHARD_TRIAL_TIMEOUT_MS,
    /**
     * HTTP authentication: "keys" (API keys, tenants, scopes) or "off". Unset means off on a loopback address; a
     * gateway bound to any other address refuses to start unless it is set explicitly.
     */
    auth: e.JETSHARD_AUTH,
    /** NATS credentials and TLS for this process (user+password or token; CA, client cert and key files). */
    nats: {
      user: e.JETSHARD_NATS_USER || undefined,
      password: e.JETSHARD_NATS_PASSWORD || undefined,
      token: e.JETSHARD_NATS_TOKEN || undefined,
      /** Reply subjects of this process live under this prefix (its NATS user may subscribe only there). */
      inboxPrefix: e.JETSHARD_NATS_INBOX_PREFIX ?? (e.JETSHARD_NATS_USER ? `_INBOX.${e.JETSHARD_NATS_USER.replace(/[^A-Za-z0-9_-]/g, "_")}` : "_INBOX"),
      tlsCa: e.JETSHARD_NATS_TLS_CA || undefined,
      tlsCert: e.JETSHARD_NATS_TLS_CERT || undefined,
      tlsKey: e.JETSHARD_NATS_TLS_KEY || undefined,
    },
    /** Directory of operator-registered NAS evaluator modules (a spec names one; never a path). Unset: none. */
    evaluatorsDir: e.JETSHARD_EVALUATORS_DIR || undefined,
    limits: {
      /** Most pipeline stages one upload may ask for. */
      maxShards: e.JETSHARD_MAX_SHARDS,
      /** Most trials one experiment may run (maxTrials). */
      maxTrials: e.JETSHARD_MAX_TRIALS,
      /** Most trials one experiment may run at once. */
      maxTrialConcurrency: e.JETSHARD_MAX_TRIAL_CONCURRENCY,
      /** Longest trialTimeoutMs a spec may set. */
      maxTrialTimeoutMs: e.JETSHARD_MAX_TRIAL_TIMEOUT_MS,
      /** Long-poll watchers (GET /v1/jobs/{id}?wait=) one gateway holds at once; more get 429. */
      maxWatchers: e.JETSHARD_MAX_WATCHERS,
      /** Largest `limit` a list route accepts. */
      maxListLimit: e.JETSHARD_MAX_LIST_LIMIT,
    },
    quotas: {
      /** Models one tenant may own. */
      models: e.JETSHARD_QUOTA_MODELS,
      /** Versions kept per model. */
      versions: e.JETSHARD_QUOTA_VERSIONS,
      /** Model bytes (all versions and shards) one tenant may store. */
      modelBytes: e.JETSHARD_QUOTA_MODEL_MB * 1024 * 1024,
      /** Async jobs one tenant may have queued or running at once (counted per gateway). */
      queuedJobs: e.JETSHARD_QUOTA_QUEUED_JOBS,
    },
    ops: {
      /** Workers and controllers serve /metrics and /health/{live,ready} on a small HTTP listener. */
      http: e.JETSHARD_OPS_HTTP,
      /** Its address; JETSHARD_HOST when unset. */
      host: e.JETSHARD_OPS_HOST ?? e.JETSHARD_HOST,
      /** Its port; 0 picks a free one (`jetshard up` gives each process its own, counting up from this). */
      port: e.JETSHARD_OPS_PORT,
      /** How often a worker samples CPU, memory, load and GPUs (for its heartbeat and metrics). */
      resourceSampleMs: e.JETSHARD_RESOURCE_SAMPLE_MS,
    },
    logs: {
      /** Every process also publishes its log records to the bounded LOGS stream (`jetshard logs`). */
      stream: e.JETSHARD_LOGS_STREAM,
      maxBytes: e.JETSHARD_LOGS_MAX_MB * 1024 * 1024,
      maxAgeMs: e.JETSHARD_LOGS_MAX_AGE_S * 1000,
      /** "auto": human-readable on a TTY, JSON lines otherwise. */
      format: e.JETSHARD_LOG_FORMAT,
    },
    /** Replicas of every stream and bucket jetshard creates: 1 on one server, 3 on a cluster. */
    replicas: e.JETSHARD_REPLICAS,
    gpu: {
      /** The CUDA device this worker runs on (set by `jetshard up` / --gpus when it starts one worker per GPU). */
      id: e.JETSHARD_GPU_ID,
      /** `jetshard up` starts one worker per GPU that nvidia-smi lists, each bound to its device. */
      workerPerGpu: e.JETSHARD_WORKERS_PER_GPU,
      /** The nvidia-smi command (a path, or a name on PATH). */
      nvidiaSmi: e.JETSHARD_NVIDIA_SMI,
    },
  };
}

export class ConfigError extends Error {
  override name = "ConfigError";
}
