/**
 * NATS helpers: connecting (credentials, TLS, inbox prefix from config), and binding to the streams and buckets
 * jetshard uses. Every process calls `openInfra` at start: it binds to what exists (which needs only read rights on
 * the stream's info) and creates only what is missing, idempotently and safe to race. A NATS user without the right
 * to create (a worker, see nats-auth.conf) therefore starts fine once an admin or a gateway has provisioned.
 * Everything here sticks to what nats-server 2.9 supports (bucket-level max_age, one filter subject per consumer).
 */
import { existsSync } from "node:fs";
import { connect, errors as natsErrors, type ConnectionOptions, type NatsConnection } from "@nats-io/transport-node";
import {
  jetstream,
  jetstreamManager,
  JetStreamApiError,
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
  type StreamConfig,
} from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { Objm, type ObjectStore } from "@nats-io/obj";
import { ConfigError } from "./config.js";
import { isTransient, retryTransient } from "./errors.js";
import type { Logger } from "./log.js";
import { logsStreamConfig } from "./logs.js";
import { NAS_BUCKETS } from "./nas/wire.js";
import { BUCKETS, STREAMS, subjects } from "./subjects.js";

export type { NatsConnection };

const ms = (n: number) => n * 1_000_000; // JetStream durations are nanoseconds

/** NATS credentials and TLS of one process: the `nats` part of the config (all optional). */
export interface NatsSettings {
  user?: string;
  password?: string;
  token?: string;
  /**
   * Prefix of every reply subject this connection makes (its NATS user may subscribe only there). Default
   * `_INBOX.<user>` with a user, else nats.js' `_INBOX`.
   */
  inboxPrefix?: string;
  /** CA bundle that signs the server's certificate (PEM file). */
  tlsCa?: string;
  /** Client certificate (PEM file), for servers that verify clients; needs `tlsKey`. */
  tlsCert?: string;
  tlsKey?: string;
}

/** Where and how to connect: the config's `natsServers` and its `nats` settings. */
export interface NatsConnectConfig {
  natsServers: string[];
  nats?: NatsSettings;
}

/**
 * nats.js connection options for `cfg`. TLS is on only when a CA, cert or key file is set.
 * @throws ConfigError naming the variable: a password without a user (or the reverse), a token together with a
 *   user, a certificate without its key (or the reverse), a TLS file that does not exist.
 */
export function natsConnectionOptions(cfg: NatsConnectConfig, name: string): ConnectionOptions {
  const s = cfg.nats ?? {};
  if (s.user && !s.password) throw new ConfigError("JETSHARD_NATS_USER is set without JETSHARD_NATS_PASSWORD");
  if (s.password && !s.user) throw new ConfigError("JETSHARD_NATS_PASSWORD is set without JETSHARD_NATS_USER");
  if (s.token && s.user) throw new ConfigError("JETSHARD_NATS_TOKEN and JETSHARD_NATS_USER are both set: use one way to authenticate");
  if (s.tlsCert && !s.tlsKey) throw new ConfigError("JETSHARD_NATS_TLS_CERT is set without JETSHARD_NATS_TLS_KEY: a client certificate needs its private key");
  if (s.tlsKey && !s.tlsCert) throw new ConfigError("JETSHARD_NATS_TLS_KEY is set without JETSHARD_NATS_TLS_CERT");
  const files: Array<[string, string | undefined]> = [
    ["JETSHARD_NATS_TLS_CA", s.tlsCa],
    ["JETSHARD_NATS_TLS_CERT", s.tlsCert],
    ["JETSHARD_NATS_TLS_KEY", s.tlsKey],
  ];
  for (const [variable, file] of files) {
    if (file && !existsSync(file)) throw new ConfigError(`${variable}: file "${file}" does not exist`);
  }
  // as config does: a user's replies come under _INBOX.<user>, the inbox nats-auth.conf lets it subscribe to
  const inboxPrefix = s.inboxPrefix ?? (s.user ? `_INBOX.${s.user.replace(/[^A-Za-z0-9_-]/g, "_")}` : undefined);
  const tls = s.tlsCa || s.tlsCert ? { ...(s.tlsCa ? { caFile: s.tlsCa } : {}), ...(s.tlsCert ? { certFile: s.tlsCert, keyFile: s.tlsKey } : {}) } : undefined;
  return {
    servers: cfg.natsServers,
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    pingInterval: 10_000,
    // nats.js otherwise creates an Error per request and per timer up front, only to have a stack to show should
    // it time out: profiled at ~15 % of a worker's CPU on tracked jobs. Our errors say what timed out anyway.
    noAsyncTraces: true,
    ...(s.user ? { user: s.user, pass: s.password } : {}),
    ...(s.token ? { token: s.token } : {}),
    ...(inboxPrefix ? { inboxPrefix } : {}),
    ...(tls ? { tls } : {}),
  };
}

/**
 * Connects with reconnects forever: a worker or gateway should outlive a nats-server restart.
 * @throws ConfigError for inconsistent settings (see natsConnectionOptions); an Error naming the user when the
 *   server rejects the credentials.
 */
export async function connectNats(cfg: NatsConnectConfig, name: string, log?: Logger): Promise<NatsConnection> {
  let nc: NatsConnection;
  try {
    nc = await connect(natsConnectionOptions(cfg, name));
  } catch (err) {
    if (err instanceof natsErrors.AuthorizationError) {
      const who = cfg.nats?.user ? `user "${cfg.nats.user}"` : cfg.nats?.token ? "the token" : "no credentials (set JETSHARD_NATS_USER and JETSHARD_NATS_PASSWORD)";
      throw new Error(`NATS at ${cfg.natsServers.join(",")} refused ${who}: ${err.message}`, { cause: err });
    }
    throw err;
  }
  if (log) {
    void (async () => {
      for await (const s of nc.status()) {
        if (s.type === "disconnect" || s.type === "reconnect") log.warn({ status: s.type }, "nats connection status");
        // a permission violation names the subject: the user's permissions (nats-auth.conf) lack it
        else if (s.type === "error") log.warn({ status: s.type, err: s.error }, "nats connection error");
      }
    })();
  }
  return nc;
}

export interface InfraOptions {
  /** Worker registry entries vanish after this long without a heartbeat. */
  workerTtlMs: number;
  /** How long results stay readable. */
  resultRetentionMs: number;
  /** Upper bound on queued job bytes (the stream refuses new jobs beyond it). */
  queueMaxBytes?: number;
  /** Upper bound on queued jobs per subject, i.e. per model (shard): new ones are refused beyond it. */
  queueMaxMsgs?: number;
  /**
   * Replicas of every stream, bucket and object store created here (JETSHARD_REPLICAS): 1 on one server, 3 on a
   * cluster. Consumers inherit their stream's. Existing ones are never changed (see `raiseReplicas`). Default 1.
   */
  replicas?: number;
  /** Told (warn) about existing streams with fewer replicas than `replicas`. */
  log?: Logger;
  /** The LOGS stream of central logs (config.logs): made sure of when `stream` is on; absent, it is left alone. */
  logs?: { stream: boolean; maxBytes: number; maxAgeMs: number };
}

export interface Infra {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  workers: KV;
  models: KV;
  objects: ObjectStore;
  /** Activations too large for one message (claim checks); entries expire after an hour if never collected. */
  claims: ObjectStore;
  /** Async job records (status, attempts, timestamps); entries expire after the result retention. */
  jobs: KV;
  /** Replicas of what jetshard creates (InfraOptions.replicas), for buckets opened later (NAS, API keys). */
  replicas: number;
}

/**
 * A stream or bucket this NATS user may not read or create: its permissions (nats-auth.conf) lack the subject.
 * Thrown at start, so a restricted process never runs half bound.
 */
export class NatsPermissionError extends Error {
  override name = "NatsPermissionError";
  constructor(
    message: string,
    /** The denied subject, e.g. `$JS.API.STREAM.CREATE.JOBS`. */
    readonly subject: string | undefined,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** The permission violation behind `err` (nats.js may wrap it), or null. */
export function permissionViolation(err: unknown): InstanceType<typeof natsErrors.PermissionViolationError> | null {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e instanceof natsErrors.PermissionViolationError) return e;
  }
  return null;
}

function deniedError(stream: string, err: unknown): NatsPermissionError {
  const pv = permissionViolation(err)!;
  const creating = /\.(CREATE|UPDATE)\./.test(pv.subject);
  const message = creating
    ? `stream ${stream} does not exist and this NATS user may not create it (denied: ${pv.subject}); provision it first as admin (jetshard up) or start a gateway`
    : `this NATS user may not use stream ${stream} (denied: ${pv.subject}); check its permissions in nats-auth.conf`;
  return new NatsPermissionError(message, pv.subject, { cause: err });
}

/** True when a JetStream error says the stream is missing (10059). */
function isStreamNotFound(err: unknown): boolean {
  const e = err as { code?: unknown; message?: string };
  return e?.code === 10059 || e?.message === "stream not found";
}

/**
 * A stream create refused because the servers cannot hold its replicas, as the ConfigError naming JETSHARD_REPLICAS
 * it is (10074: replicas on a single, non-clustered server; 10005: no suitable peers, i.e. more replicas than
 * JetStream servers); null for anything else.
 */
function replicasError(err: unknown, stream: string, replicas: number): ConfigError | null {
  if (!(err instanceof JetStreamApiError)) return null;
  if (err.code === 10074) {
    return new ConfigError(`JETSHARD_REPLICAS=${replicas}, but NATS is a single server without clustering: stream ${stream} cannot have more than 1 replica (set JETSHARD_REPLICAS=1, or run a cluster)`);
  }
  if (err.code === 10005) {
    return new ConfigError(`JETSHARD_REPLICAS=${replicas}: the NATS cluster has no ${replicas} JetStream servers to place stream ${stream} on (lower JETSHARD_REPLICAS to at most the number of servers)`);
  }
  return null;
}

/** Binds to a stream when it exists; creates it only when it is missing (then another process may win the race). */
async function ensureStream(jsm: JetStreamManager, cfg: Partial<StreamConfig> & { name: string }): Promise<void> {
  try {
    await jsm.streams.info(cfg.name);
    return;
  } catch (err) {
    if (permissionViolation(err)) throw deniedError(cfg.name, err);
    if (!isStreamNotFound(err)) throw err;
  }
  try {
    await jsm.streams.add(cfg);
  } catch (err) {
    // another process may have created it between our info and add
    await jsm.streams.info(cfg.name).catch(() => {
      throw permissionViolation(err) ? deniedError(cfg.name, err) : (replicasError(err, cfg.name, cfg.num_replicas ?? 1) ?? err);
    });
  }
}

/**
 * Binds to every stream and bucket, creating those that are missing (when this user may). The NAS buckets are
 * made sure of too, so workers and controllers with bind-only rights find them.
 * @throws NatsPermissionError when a stream is missing and this user may not create it, or may not read it.
 */
export async function openInfra(nc: NatsConnection, opts: InfraOptions): Promise<Infra> {
  const replicas = opts.replicas ?? 1;
  // a process starting while the cluster elects leaders (or a server restarts) waits for it rather than exit
  const until = Date.now() + START_RETRY_MS;
  const jsm = await retryTransient(() => jetstreamManager(nc), until).catch((err) => {
    const pv = permissionViolation(err);
    throw pv ? new NatsPermissionError(`this NATS user may not use JetStream (denied: ${pv.subject}); a client user may only publish jobs`, pv.subject, { cause: err }) : err;
  });
  const ensure = (cfg: Partial<StreamConfig> & { name: string }) => retryTransient(() => ensureStream(jsm, cfg), until);
  const js = jetstream(nc);
  await ensure({
    name: STREAMS.jobs,
    subjects: [subjects.inferAll, subjects.stageAll, subjects.nasAll],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    discard: DiscardPolicy.New,
    max_bytes: opts.queueMaxBytes ?? 1024 * 1024 * 1024,
    max_msgs: -1,
    max_msgs_per_subject: opts.queueMaxMsgs ?? 100_000,
    discard_new_per_subject: true,
    duplicate_window: ms(120_000),
    num_replicas: replicas,
  });
  await ensure({
    name: STREAMS.results,
    subjects: [subjects.resultsAll],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_age: ms(opts.resultRetentionMs),
    max_bytes: 1024 * 1024 * 1024,
    duplicate_window: ms(120_000),
    num_replicas: replicas,
  });
  await ensure({
    name: STREAMS.dlq,
    subjects: [subjects.dlqAll],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_age: ms(7 * 24 * 3600_000),
    max_bytes: 512 * 1024 * 1024,
    num_replicas: replicas,
  });
  const kvm = new Kvm(nc);
  const workers = await openKv(kvm, BUCKETS.workers, { ttl: opts.workerTtlMs, history: 1, replicas });
  const models = await openKv(kvm, BUCKETS.models, { history: 5, replicas });
  const jobs = await openKv(kvm, BUCKETS.jobs, { ttl: opts.resultRetentionMs, history: 1, replicas });
  const objm = new Objm(nc);
  const objects = await openObjectStore(objm, BUCKETS.modelObjects, { replicas });
  const claims = await openObjectStore(objm, BUCKETS.claims, { ttl: ms(3600_000), replicas });
  await Promise.all([openKv(kvm, NAS_BUCKETS.experiments, { ...NAS_BUCKET_OPTS, replicas }), openKv(kvm, NAS_BUCKETS.trials, { ...NAS_BUCKET_OPTS, replicas })]);
  // JetStream announces jobs that ran out of deliveries only as core NATS advisories: keep them in a stream
  // so none is missed while no worker listens.
  await ensure({
    name: STREAMS.advisories,
    subjects: [`$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${STREAMS.jobs}.>`],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    max_age: ms(7 * 24 * 3600_000),
    num_replicas: replicas,
  });
  if (opts.logs?.stream) {
    // central logs must never keep a process from starting: without LOGS its records are only local
    await ensureStream(jsm, logsStreamConfig({ ...opts.logs, replicas })).catch((err: unknown) =>
      opts.log?.warn({ err }, "central logs: could not bind to or create the LOGS stream; log records stay local"),
    );
  }
  if (opts.log && replicas > 1) {
    for (const s of await replicaShortfall(jsm, replicas, INFRA_STREAMS)) {
      opts.log.warn(
        { stream: s.stream, replicas: s.replicas, wanted: replicas },
        `stream ${s.stream} has ${s.replicas} replica(s) but JETSHARD_REPLICAS=${replicas}: it was created before; raise it with \`nats stream edit ${s.stream} --replicas ${replicas}\` (or raiseReplicas as admin)`,
      );
    }
  }
  return { nc, js, jsm, workers, models, objects, claims, jobs, replicas };
}

/**
 * Every stream jetshard creates: openInfra's (LOGS only with central logs on), and the `apikeys` bucket the gateway
 * opens with keys on (KV buckets are streams KV_<b>, object stores OBJ_<o>).
 */
export const INFRA_STREAMS: readonly string[] = [
  STREAMS.jobs,
  STREAMS.results,
  STREAMS.dlq,
  STREAMS.advisories,
  `KV_${BUCKETS.workers}`,
  `KV_${BUCKETS.models}`,
  `KV_${BUCKETS.jobs}`,
  `KV_${NAS_BUCKETS.experiments}`,
  `KV_${NAS_BUCKETS.trials}`,
  `OBJ_${BUCKETS.modelObjects}`,
  `OBJ_${BUCKETS.claims}`,
  `KV_${BUCKETS.apiKeys}`,
  STREAMS.logs,
];

/**
 * The streams among `names` that exist with fewer than `replicas` replicas (created under an earlier, lower
 * JETSHARD_REPLICAS). Missing streams and streams this user may not read are left out.
 */
export async function replicaShortfall(jsm: JetStreamManager, replicas: number, names: readonly string[] = INFRA_STREAMS): Promise<Array<{ stream: string; replicas: number }>> {
  const out: Array<{ stream: string; replicas: number }> = [];
  for (const stream of names) {
    const info = await jsm.streams.info(stream).catch(() => null);
    const have = info?.config.num_replicas || 1;
    if (info && have < replicas) out.push({ stream, replicas: have });
  }
  return out;
}

/**
 * Raises every stream among `names` that has fewer than `replicas` replicas to `replicas` (nats-server 2.9 can
 * scale a stream up in place; the new replicas catch up in the background, and its consumers follow). Never
 * lowers one. An operator's step (admin rights: $JS.API.STREAM.UPDATE), not something every process does on
 * start: scaling copies the whole stream to the new peers. Returns the streams it raised.
 * @throws the JetStream error when an update is refused (e.g. fewer servers than `replicas`).
 */
export async function raiseReplicas(jsm: JetStreamManager, replicas: number, names: readonly string[] = INFRA_STREAMS): Promise<string[]> {
  const raised: string[] = [];
  for (const s of await replicaShortfall(jsm, replicas, names)) {
    const info = await jsm.streams.info(s.stream);
    await jsm.streams.update(s.stream, { ...info.config, num_replicas: replicas });
    raised.push(s.stream);
  }
  return raised;
}

/** Settings of the NAS `experiments` and `trials` buckets (shared/nas/store.ts opens them too). */
export const NAS_BUCKET_OPTS = { history: 1 } as const;

/** How long opening the streams and buckets rides out transient NATS errors (leader elections, a server restarting). */
const START_RETRY_MS = 30_000;

/**
 * Bind-or-create, retried: processes starting together race to create the same bucket, and transient NATS errors
 * (isTransient) are retried for up to START_RETRY_MS. nats.js' `create` of a KV
 * bucket or object store asks for the stream's info first and adds the stream only on "stream not found", so on an
 * existing bucket it only binds (which needs no right to create streams).
 */
async function bindOrCreate<T>(stream: string, open: () => Promise<T>, replicas = 1): Promise<T> {
  const until = Date.now() + START_RETRY_MS;
  for (let i = 0; ; i++) {
    try {
      return await open();
    } catch (err) {
      if (permissionViolation(err)) throw deniedError(stream, err);
      const bad = replicasError(err, stream, replicas);
      if (bad) throw bad;
      if (i >= 9 && !(isTransient(err) && Date.now() < until)) throw err;
    }
    await new Promise((r) => setTimeout(r, 50 * Math.min(i + 1, 10)));
  }
}

function openObjectStore(objm: Objm, name: string, opts: { ttl?: number; replicas?: number }): Promise<ObjectStore> {
  return bindOrCreate(`OBJ_${name}`, () => objm.create(name, { storage: StorageType.File, ...opts }), opts.replicas);
}

/**
 * Binds to a file-backed KV bucket, creating it when it is missing; safe to race with other processes doing the same.
 * @throws NatsPermissionError when it is missing and this user may not create it.
 */
export function openKv(kvm: Kvm, name: string, opts: { ttl?: number; history?: number; replicas?: number }): Promise<KV> {
  return bindOrCreate(`KV_${name}`, () => kvm.create(name, { ...opts, storage: StorageType.File }), opts.replicas);
}

/** True when a JetStream error means "not found" (stream, consumer, message). */
export function isNotFound(err: unknown): boolean {
  const e = err as { code?: unknown; message?: string; api_error?: { err_code?: number; code?: number } };
  if (e?.api_error?.code === 404) return true;
  return /not found/i.test(e?.message ?? "");
}

/**
 * The keys of KV bucket `bucket` matching `filter` (a key pattern: ">" for all, "*" for single-token keys), read
 * from the bucket stream's subject list in one request (paged by nats.js). Not `kv.keys()` or `kv.history()`: their
 * consumer ends on a "nothing pending" that, while entries are being rewritten (history 1 drops the old ones), may
 * only come with an idle heartbeat tens of seconds later, and a list request would hang that long.
 * Includes keys whose latest entry is a delete marker.
 */
export async function kvKeys(jsm: JetStreamManager, bucket: string, filter = ">"): Promise<string[]> {
  const prefix = `$KV.${bucket}.`;
  const info = await jsm.streams.info(`KV_${bucket}`, { subjects_filter: `${prefix}${filter}` });
  return Object.keys(info.state.subjects ?? {}).map((s) => s.slice(prefix.length));
}

/** Runs `fn` over `items` with at most `limit` calls in flight; results in input order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return out;
}
