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
  JETSHARD_HOST: z.string().default("0.0.0.0"),
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
});

export type JetshardConfig = ReturnType<typeof loadConfig>;

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
  };
}

export class ConfigError extends Error {
  override name = "ConfigError";
}
