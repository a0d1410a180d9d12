/**
 * Subject, stream, bucket and header names: the wire vocabulary every process shares.
 * Model names are single NATS tokens, so a model name never contains '.', '*', '>' or spaces.
 */

export const STREAMS = {
  /** Work-queue stream holding every job until a worker acks it. */
  jobs: "JOBS",
  /** Results kept for `resultRetentionMs` so restarted gateways and direct clients can read them. */
  results: "RESULTS",
  /** Dead letters: jobs that failed terminally, with their error. */
  dlq: "DLQ",
  /** Max-deliveries advisories for JOBS, captured so every job that ran out of deliveries is dead-lettered. */
  advisories: "JOBS_ADVISORIES",
  /** Log records of every process (`jetshard logs`), bounded by size and age; subjects `jetshard.logs.<service>.<level>`. */
  logs: "LOGS",
} as const;

export const BUCKETS = {
  workers: "workers",
  models: "models",
  jobs: "jobs",
  experiments: "experiments",
  /** API key records (hashed secrets), by key id. */
  apiKeys: "apikeys",
  /** Object store of model (shard) bytes. */
  modelObjects: "models",
  /** Object store of activations too big for one message, collected by the next stage. */
  claims: "claims",
} as const;

export const HEADERS = {
  msgId: "Nats-Msg-Id",
  reply: "Jetshard-Reply",
  deadline: "Jetshard-Deadline",
  priority: "Jetshard-Priority",
  modelVersion: "Jetshard-Model-Version",
  jobId: "Jetshard-Job-Id",
  /** "1" on jobs tracked in the `jobs` bucket (async jobs). */
  track: "Jetshard-Track",
  /**
   * "reply" when only the `Jetshard-Reply` subject needs the result (a sync caller waiting for it): the worker then
   * skips storing it in RESULTS. Absent: the result is also stored.
   */
  result: "Jetshard-Result",
  /** The tenant that submitted the job (set by the gateway; dead letters and records keep it). */
  tenant: "Jetshard-Tenant",
  /** On the empty message a worker sends to a direct request's reply subject when it takes it: its worker id. */
  accepted: "Jetshard-Accepted",
} as const;

export const subjects = {
  /** Root of every jetshard subject. */
  root: "jetshard",
  /** An inference job for a whole model (shard 0 consumes it). */
  infer: (model: string) => `jetshard.infer.${model}`,
  /** A high-priority inference job: workers take these before normal ones. */
  inferHigh: (model: string) => `jetshard.infer.${model}.high`,
  inferAll: "jetshard.infer.>",
  /**
   * A sync request for a whole model sent with core NATS (not stored): the workers serving its shard 0 share it
   * through the queue group `directQueue(model)`; JetStream (`infer`) is the fallback.
   */
  direct: (model: string) => `jetshard.direct.${model}`,
  directAll: "jetshard.direct.>",
  /** A worker answers here while it is alive: a sync caller asks the worker that accepted its request. */
  ping: (workerId: string) => `jetshard.ping.${workerId}`,
  /** Activations entering shard `index >= 1` of a pipelined model. */
  stage: (model: string, index: number) => `jetshard.stage.${model}.${index}`,
  stageAll: "jetshard.stage.>",
  /** A NAS trial evaluation. */
  nas: (experiment: string) => `jetshard.nas.${experiment}`,
  nasAll: "jetshard.nas.>",
  result: (jobId: string) => `jetshard.results.${jobId}`,
  resultsAll: "jetshard.results.>",
  dlq: (model: string) => `jetshard.dlq.${model}`,
  dlqAll: "jetshard.dlq.>",
  /** A log record of a process of `service` (gateway, worker, controller) at `level` (pino's label: info, warn…). */
  log: (service: string, level: string) => `jetshard.logs.${service}.${level}`,
  logsAll: "jetshard.logs.>",
} as const;

/** Queue group of the workers serving a model's direct (core NATS) sync requests. */
export function directQueue(model: string): string {
  return `direct_${model}`;
}

/** Durable consumer shared by every replica serving shard `index` of `model`. */
export function consumerName(model: string, index = 0): string {
  return `infer_${model}_${index}`;
}

/** Durable consumer for a model's high-priority jobs. */
export function highConsumerName(model: string): string {
  return `infer_${model}_high`;
}

/** Names usable as a subject token, a KV key and a consumer name. */
export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

/**
 * True when `subject` may receive a result named in a job's `Jetshard-Reply` header: a concrete subject (no wildcards,
 * no empty tokens, no whitespace) under `_INBOX.`, where only the requester listens. Workers publish results nowhere
 * else, so a job cannot make a worker publish onto a stream or another service's subject.
 */
export function isReplySubject(subject: string): boolean {
  return subject.length <= 512 && /^_INBOX(\.[^.\s*>]+)+$/.test(subject);
}
