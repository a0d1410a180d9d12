/**
 * NATS helpers: connecting, and making sure the streams and buckets jetshard uses exist.
 * Every process calls `openInfra` at start; creation is idempotent and safe to race.
 * Everything here sticks to what nats-server 2.9 supports (bucket-level max_age, one filter subject per consumer).
 */
import { connect, type NatsConnection } from "@nats-io/transport-node";
import {
  jetstream,
  jetstreamManager,
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
  type StreamConfig,
} from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { Objm, type ObjectStore } from "@nats-io/obj";
import type { Logger } from "./log.js";
import { BUCKETS, STREAMS, subjects } from "./subjects.js";

export type { NatsConnection };

const ms = (n: number) => n * 1_000_000; // JetStream durations are nanoseconds

/** Connects with reconnects forever: a worker or gateway should outlive a nats-server restart. */
export async function connectNats(servers: string[], name: string, log?: Logger): Promise<NatsConnection> {
  const nc = await connect({
    servers,
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    pingInterval: 10_000,
  });
  if (log) {
    void (async () => {
      for await (const s of nc.status()) {
        if (s.type === "disconnect" || s.type === "reconnect" || s.type === "error") log.warn({ status: s.type }, "nats connection status");
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
}

async function ensureStream(jsm: JetStreamManager, cfg: Partial<StreamConfig> & { name: string }): Promise<void> {
  try {
    await jsm.streams.info(cfg.name);
    return;
  } catch {
    // not there yet
  }
  try {
    await jsm.streams.add(cfg);
  } catch (err) {
    // another process may have created it between our info and add
    await jsm.streams.info(cfg.name).catch(() => {
      throw err;
    });
  }
}

/** Creates (or binds to) every stream and bucket. */
export async function openInfra(nc: NatsConnection, opts: InfraOptions): Promise<Infra> {
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  await ensureStream(jsm, {
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
    num_replicas: 1,
  });
  await ensureStream(jsm, {
    name: STREAMS.results,
    subjects: [subjects.resultsAll],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_age: ms(opts.resultRetentionMs),
    max_bytes: 1024 * 1024 * 1024,
    duplicate_window: ms(120_000),
    num_replicas: 1,
  });
  await ensureStream(jsm, {
    name: STREAMS.dlq,
    subjects: [subjects.dlqAll],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_age: ms(7 * 24 * 3600_000),
    max_bytes: 512 * 1024 * 1024,
    num_replicas: 1,
  });
  const kvm = new Kvm(nc);
  const workers = await openKv(kvm, BUCKETS.workers, { ttl: opts.workerTtlMs, history: 1 });
  const models = await openKv(kvm, BUCKETS.models, { history: 5 });
  const jobs = await openKv(kvm, BUCKETS.jobs, { ttl: opts.resultRetentionMs, history: 1 });
  const objm = new Objm(nc);
  const objects = await openObjectStore(objm, BUCKETS.modelObjects, {});
  const claims = await openObjectStore(objm, BUCKETS.claims, { ttl: ms(3600_000) });
  // JetStream announces jobs that ran out of deliveries only as core NATS advisories: keep them in a stream
  // so none is missed while no worker listens.
  await ensureStream(jsm, {
    name: STREAMS.advisories,
    subjects: [`$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${STREAMS.jobs}.>`],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    max_age: ms(7 * 24 * 3600_000),
    num_replicas: 1,
  });
  return { nc, js, jsm, workers, models, objects, claims, jobs };
}

/** Create-or-open, retried: processes starting together race to create the same bucket. */
async function createOrOpen<T>(create: () => Promise<T>, open: () => Promise<T>): Promise<T> {
  let last: unknown;
  for (let i = 0; i < 10; i++) {
    try {
      return await create();
    } catch (err) {
      last = err;
    }
    try {
      return await open();
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 50 * (i + 1)));
  }
  throw last;
}

function openObjectStore(objm: Objm, name: string, opts: { ttl?: number }): Promise<ObjectStore> {
  return createOrOpen(() => objm.create(name, { storage: StorageType.File, ...opts }), () => objm.open(name));
}

/** Creates (or binds to) a file-backed KV bucket, safe to race with other processes doing the same. */
export function openKv(kvm: Kvm, name: string, opts: { ttl?: number; history?: number }): Promise<KV> {
  return createOrOpen(() => kvm.create(name, { ...opts, storage: StorageType.File }), () => kvm.open(name));
}

/** True when a JetStream error means "not found" (stream, consumer, message). */
export function isNotFound(err: unknown): boolean {
  const e = err as { code?: unknown; message?: string; api_error?: { err_code?: number; code?: number } };
  if (e?.api_error?.code === 404) return true;
  return /not found/i.test(e?.message ?? "");
}
