import { readFileSync } from "node:fs";
import path from "node:path";
import { parseDocument } from "yaml";
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
  JETSHARD_SYNC_DIRECT: boolStr(true),
  JETSHARD_MAX_BODY_MB: z.coerce.number().positive().default(64),
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
  JETSHARD_ORT_SPIN: boolStr(false),
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
  JETSHARD_LOGS_MAX_MB: z.coerce.number().positive().default(256),
  JETSHARD_LOGS_MAX_AGE_S: int(86_400, 1),
  JETSHARD_LOG_FORMAT: z.enum(["auto", "json", "pretty"]).default("auto"),
  JETSHARD_RESOURCE_SAMPLE_MS: int(5_000, 100),
  // Scale-out: replicas of streams and buckets, GPUs
  JETSHARD_REPLICAS: z.coerce.number().int().min(1).max(5).default(1),
  JETSHARD_GPU_ID: z.coerce.number().int().min(0).optional(),
  JETSHARD_WORKERS_PER_GPU: boolStr(false),
  JETSHARD_NVIDIA_SMI: z.string().default("nvidia-smi"),
  // A YAML file with the same settings (keys: these names without JETSHARD_, lower-case); the environment wins
  JETSHARD_CONFIG: z.string().optional(),
});

export type JetshardConfig = ReturnType<typeof loadConfig>;

/** Every JETSHARD_* variable the schema knows (deploy manifests and docs are checked against it). */
export const ENV_NAMES: readonly string[] = Object.keys(EnvSchema.shape);

/**
 * Parses the settings once: the environment over the config file JETSHARD_CONFIG names (if any) over defaults.
 * Synchronous (the file is small and read once per call).
 * @throws ConfigError naming the variable on a bad value from the environment; naming the file and its key on a bad
 *   value, an unknown key or a syntax error in the file; naming JETSHARD_CONFIG when the file cannot be read.
 */
export function loadConfig(env: Record<string, string | undefined> = process.env) {
  const { data: e, file } = parseSettings(env);
  return {
    /** The config file read (JETSHARD_CONFIG), if any. */
    configFile: file,
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
    /**
     * Sync requests go straight to a worker over core NATS (JetStream being the fallback when none takes it or the
     * one that did is lost); off: every sync request is written to JOBS first.
     */
    syncDirect: e.JETSHARD_SYNC_DIRECT,
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
    /**
     * Let ORT's intra-op threads spin between runs (ORT's own default). Off here: a worker shares its cores with
     * NATS, the gateway and other workers, and spinning threads took the CPU those need (measured: `mid` at c=64
     * +36 % rows/s with spinning off, `small` c=64 +20–60 %, c=1 latency unchanged within noise).
     */
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
      /** Bound of the LOGS stream: the oldest records are discarded beyond it. */
      maxBytes: Math.max(1024, Math.floor(e.JETSHARD_LOGS_MAX_MB * 1024 * 1024)),
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

type Env = Record<string, string | undefined>;

/** Settings a config file may not hold (the file's own path). */
const NOT_IN_FILE = new Set(["JETSHARD_CONFIG"]);
/** Settings whose values `explainConfig` never shows. */
const SECRET = /PASSWORD|TOKEN|SECRET/;

/** The key of a setting in a config file: `JETSHARD_NATS_URL` → `nats_url`. */
export function configFileKey(name: string): string {
  return name.replace(/^JETSHARD_/, "").toLowerCase();
}

const FILE_KEYS = new Map(ENV_NAMES.filter((n) => !NOT_IN_FILE.has(n)).map((n) => [configFileKey(n), n]));

/**
 * Reads a config file (YAML: a mapping of setting keys to values) into environment form: `port: 8080` becomes
 * `JETSHARD_PORT: "8080"`; booleans become "true"/"false", lists are joined with commas, an empty value (`key:`)
 * leaves the setting unset. Values are checked later, with the environment's, by the same schema.
 * @throws ConfigError naming the file: unreadable, not YAML, not a mapping, an unknown key (with a suggestion when
 *   one is close), a value that is a mapping.
 */
export function readConfigFile(file: string): Record<string, string> {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(code === "ENOENT" ? `JETSHARD_CONFIG: file "${file}" does not exist` : `JETSHARD_CONFIG: cannot read "${file}": ${(err as Error).message}`);
  }
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  if (doc.errors.length > 0) throw new ConfigError(`${file}: ${doc.errors[0]!.message.split("\n")[0]!.replace(/:$/, "")}`);
  const data: unknown = doc.toJS();
  if (data === null || data === undefined) return {};
  if (typeof data !== "object" || Array.isArray(data)) throw new ConfigError(`${file}: expected a mapping of settings (e.g. "port: 8080"), got ${Array.isArray(data) ? "a list" : typeof data}`);
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(data as Record<string, unknown>)) {
    const name = FILE_KEYS.get(key);
    if (!name) {
      if (key === "config") throw new ConfigError(`${file}: "config" cannot be set in a config file (it names the file: use --config or JETSHARD_CONFIG)`);
      const hint = suggestKey(key);
      throw new ConfigError(`${file}: unknown setting "${key}"${hint ? ` (did you mean "${hint}"?)` : ""}`);
    }
    const v = scalar(value);
    if (v === undefined) throw new ConfigError(`${file}: ${key}: expected a value or a list of values`);
    if (v !== null) out[name] = v;
  }
  return out;
}

function scalar(value: unknown): string | null | undefined {
  if (value === null || value === undefined) return null;
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint") return String(value);
  if (value instanceof Date) return value.toISOString();
  if (Array.isArray(value)) {
    // a list of plain values: what the environment writes comma-separated
    if (value.some((p) => Array.isArray(p) || (p !== null && typeof p === "object"))) return undefined;
    return value.map(scalar).filter((p): p is string => typeof p === "string").join(",");
  }
  return undefined;
}

/** The known key closest to `key` (a JETSHARD_ name written out, a typo), or undefined when none is close. */
function suggestKey(key: string): string | undefined {
  const k = configFileKey(key.toUpperCase());
  if (FILE_KEYS.has(k)) return k;
  let best: string | undefined;
  let bestD = Infinity;
  for (const cand of FILE_KEYS.keys()) {
    const d = editDistance(k, cand);
    if (d < bestD) [best, bestD] = [cand, d];
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(k.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

/** The environment over the file, parsed by the schema; errors name where the bad value came from. */
function parseSettings(env: Env): { data: z.infer<typeof EnvSchema>; file: string | undefined; fromFile: Record<string, string> } {
  const file = env.JETSHARD_CONFIG || undefined;
  const fromFile = file ? readConfigFile(file) : {};
  const merged: Env = { ...fromFile };
  for (const [k, v] of Object.entries(env)) if (v !== undefined) merged[k] = v;
  const parsed = EnvSchema.safeParse(merged);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const name = String(issue.path[0] ?? "");
    if (file && env[name] === undefined && fromFile[name] !== undefined) {
      throw new ConfigError(`${file}: ${configFileKey(name)}: ${issue.message} (got "${fromFile[name]}")`);
    }
    throw new ConfigError(`${issue.path.join(".")}: ${issue.message}`);
  }
  return { data: parsed.data, file, fromFile };
}

/** Where a setting's effective value comes from. */
export type ConfigSource = "default" | "env" | `file ${string}`;

/** One setting as `jetshard config` shows it. */
export interface ExplainedSetting {
  /** The environment variable, e.g. JETSHARD_PORT. */
  name: string;
  /** Its key in a config file, e.g. port. */
  key: string;
  /** The effective value as the schema parsed it (numbers, booleans); null when unset; secrets redacted. */
  value: string | number | boolean | null;
  source: ConfigSource;
  /** True when the value is a secret (shown as "***" when set). */
  secret: boolean;
}

/**
 * Every setting's effective value and where it came from: `env`, `file <path>` (JETSHARD_CONFIG) or `default`.
 * Passwords and tokens are redacted, and so are passwords inside NATS URLs.
 * @throws ConfigError as loadConfig does.
 */
export function explainConfig(env: Env = process.env): ExplainedSetting[] {
  const { data, file, fromFile } = parseSettings(env);
  const values = data as Record<string, unknown>;
  return ENV_NAMES.map((name) => {
    const source: ConfigSource = env[name] !== undefined ? "env" : file && fromFile[name] !== undefined ? `file ${file}` : "default";
    const secret = SECRET.test(name);
    const raw = values[name];
    let value: ExplainedSetting["value"] = raw === undefined ? null : (raw as string | number | boolean);
    if (secret && value !== null && value !== "") value = "***";
    else if (name === "JETSHARD_NATS_URL" && typeof value === "string") value = redactUrls(value);
    return { name, key: configFileKey(name), value, source, secret };
  });
}

/** `nats://user:pass@host` → `nats://user:***@host`; `nats://token@host` → `nats://***@host`. */
function redactUrls(list: string): string {
  return list.replace(/([a-z][a-z0-9+.-]*:\/\/)([^@/,\s]+)@/gi, (_m, scheme: string, auth: string) => {
    const colon = auth.indexOf(":");
    return `${scheme}${colon >= 0 ? `${auth.slice(0, colon)}:***` : "***"}@`;
  });
}

/**
 * Makes `file` the config file of this process and of every process it starts (`--config`): checks that it reads
 * and parses, then sets JETSHARD_CONFIG to its absolute path in `env`.
 * @throws ConfigError as readConfigFile does.
 */
export function useConfigFile(file: string, env: Env = process.env): string {
  const abs = path.resolve(file);
  readConfigFile(abs);
  env.JETSHARD_CONFIG = abs;
  return abs;
}
