/**
 * Async job records in the `jobs` KV bucket: queued → running → succeeded | failed | cancelled.
 * Every transition is a compare-and-set on the entry's revision, so exactly one terminal state wins even when a
 * job runs twice (a redelivery racing a slow worker) or is cancelled while running.
 */
import { createHash } from "node:crypto";
import { KvWatchInclude } from "@nats-io/kv";
import { z } from "zod";
import { JobError, fromNatsError, preview } from "./errors.js";
import { kvKeys, mapLimit, type Infra } from "./nats.js";
import { replayDeadLetter, type DeadLetterEntry, type DeadLetterFilter } from "./dlq.js";
import { BUCKETS, STREAMS, subjects } from "./subjects.js";
import type { JetStreamManager } from "@nats-io/jetstream";

export const JOB_STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
export const TERMINAL: ReadonlySet<JobStatus> = new Set(["succeeded", "failed", "cancelled"]);

export const JobRecordSchema = z.object({
  id: z.string(),
  model: z.string(),
  version: z.number().int().optional(),
  status: z.enum(JOB_STATUSES),
  priority: z.enum(["high", "normal"]).default("normal"),
  /** Deliveries that started running. */
  attempts: z.number().int().default(0),
  /** Epoch ms. */
  queuedAt: z.number(),
  startedAt: z.number().optional(),
  finishedAt: z.number().optional(),
  /** Epoch ms after which the job is not run. */
  deadline: z.number().optional(),
  error: z.object({ code: z.string(), message: z.string() }).optional(),
  worker: z.string().optional(),
  requestId: z.string().optional(),
  /** The tenant that submitted it; only that tenant (or an admin) sees it. Absent for jobs published straight to NATS. */
  tenant: z.string().optional(),
  /** JOBS stream sequence, to delete a queued job on cancel (records written before submit and publish ran at once). */
  seq: z.number().int().optional(),
  /**
   * The answer itself (the encoded result message, base64) when it is small: kept in the record by the same write
   * that makes the job terminal, so it costs no RESULTS write and no second read. Larger ones are in RESULTS.
   * Never shown as it is: readers decode it (resultOf) and strip it (publicRecord).
   */
  result: z.string().optional(),
});
export type JobRecord = z.infer<typeof JobRecordSchema>;

/** Answers up to this size (encoded) are kept in the job record; larger ones in RESULTS. */
export const INLINE_RESULT_MAX_BYTES = 16 * 1024;

/** The record fields that keep an answer (the result message bytes) in the record itself. */
export function inlineResultFields(bytes: Uint8Array): Pick<JobRecord, "result"> {
  return { result: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64") };
}

/** The answer kept in a record, as the result message bytes; null when it is in RESULTS (or there is none). */
export function inlineResultOf(rec: JobRecord): Uint8Array | null {
  return rec.result ? new Uint8Array(Buffer.from(rec.result, "base64")) : null;
}

/**
 * A job's answer as the result message bytes: the one kept in its record when it is small, else the last one in
 * RESULTS (read with `jsm`, which is only asked for then); null when there is none. `rec` may be missing (a caller
 * that cannot read the `jobs` bucket): then RESULTS is read.
 */
export async function jobResultBytes(id: string, rec: JobRecord | null | undefined, jsm: () => Promise<JetStreamManager>): Promise<Uint8Array | null> {
  const inline = rec ? inlineResultOf(rec) : null;
  if (inline) return inline;
  const msg = await (await jsm()).streams.getMessage(STREAMS.results, { last_by_subj: subjects.result(id) }).catch(() => null);
  return msg?.data ?? null;
}

/** A record as callers see it: without the encoded answer (which they get decoded, as the job's result). */
export function publicRecord(rec: JobRecord): Omit<JobRecord, "result"> {
  const { result: _r, ...rest } = rec;
  return rest;
}

/** The record of a job nobody recorded yet (published straight to NATS, or its record expired): queued, no attempts. */
export function newJobRecord(id: string, model: string, queuedAt = Date.now()): JobRecord {
  return { id, model, status: "queued", priority: "normal", attempts: 0, queuedAt };
}

/**
 * A job id from a tenant's idempotency key: a hash of both, so two tenants sending the same key get two jobs, and
 * nobody can pick (or guess from a key) the id of someone else's job.
 */
export function jobIdFromKey(tenant: string, key: string): string {
  return "k" + createHash("sha256").update(tenant).update("\0").update(key).digest("base64url").slice(0, 32);
}

export interface JobEntry {
  record: JobRecord;
  revision: number;
}

export async function getJob(infra: Infra, id: string): Promise<JobEntry | null> {
  if (!/^[A-Za-z0-9_-]{1,80}$/.test(id)) return null;
  const e = await infra.jobs.get(id);
  if (!e || e.operation !== "PUT" || e.value.length === 0) return null;
  return { record: JobRecordSchema.parse(e.json()), revision: e.revision };
}

/** Creates the record; returns null when a job with this id already exists. */
export async function createJob(infra: Infra, rec: JobRecord): Promise<number | null> {
  try {
    return await infra.jobs.create(rec.id, JSON.stringify(rec));
  } catch (err) {
    if (await getJob(infra, rec.id)) return null;
    throw err;
  }
}

/**
 * Applies `change` to the current record with compare-and-set, retrying on concurrent writes.
 * `change` returns the new record, or null to leave it as it is. Returns the stored entry (or the unchanged one).
 */
export async function updateJob(infra: Infra, id: string, change: (r: JobRecord | null) => JobRecord | null): Promise<JobEntry | null> {
  for (let i = 0; i < 20; i++) {
    const cur = await getJob(infra, id);
    const next = change(cur?.record ?? null);
    if (!next) return cur;
    try {
      const revision = cur ? await infra.jobs.update(id, JSON.stringify(next), cur.revision) : await infra.jobs.create(id, JSON.stringify(next));
      return { record: next, revision };
    } catch (err) {
      // someone else wrote in between: read again. Anything else (NATS down, a timeout) is not a conflict.
      if (fromNatsError(err)?.code !== "CONFLICT") throw fromNatsError(err) ?? err;
    }
  }
  throw new JobError("CONFLICT", `job ${id}: too many concurrent updates`, { retryable: true });
}

/**
 * Writes `next` as the revision after `expected` (0: the key must not exist) in one request: a blind
 * compare-and-set, no read first. Returns the new revision, or null when someone else wrote in between (a
 * wrong-last-sequence, JetStream API code 10071); anything else (NATS down, a timeout) throws.
 */
export async function casJob(infra: Infra, next: JobRecord, expected: number): Promise<number | null> {
  try {
    return expected === 0 ? await infra.jobs.create(next.id, JSON.stringify(next)) : await infra.jobs.update(next.id, JSON.stringify(next), expected);
  } catch (err) {
    const mapped = fromNatsError(err);
    if (mapped?.code === "CONFLICT") return null;
    throw mapped ?? err;
  }
}

/** Lists job records, newest first, optionally filtered. Reads at most `scan` entries. */
export async function listJobs(infra: Infra, opts: { status?: JobStatus; model?: string; tenant?: string; limit?: number; scan?: number } = {}): Promise<JobRecord[]> {
  const out: JobRecord[] = [];
  const keys = (await kvKeys(infra.jsm, BUCKETS.jobs)).slice(0, opts.scan ?? 10_000);
  // a few reads in flight at once: one after the other, thousands of records take seconds
  const entries = await mapLimit(keys, 32, (k) => getJob(infra, k));
  for (const e of entries) {
    if (!e) continue;
    if (opts.status && e.record.status !== opts.status) continue;
    if (opts.model && e.record.model !== opts.model) continue;
    if (opts.tenant !== undefined && e.record.tenant !== opts.tenant) continue;
    out.push(e.record);
  }
  out.sort((a, b) => b.queuedAt - a.queuedAt);
  return out.slice(0, opts.limit ?? 100);
}

/**
 * One watch on the whole `jobs` bucket per connection, shared by every waiting request: a watch per waiter
 * creates and deletes a consumer per job (two JetStream API calls and server work on every `?wait=`), which cost
 * more than the job itself for short ones.
 */
class JobWatch {
  private readonly waiters = new Map<string, Set<(r: JobRecord | null) => void>>();
  private started: Promise<void> | null = null;

  constructor(private readonly infra: Infra) {}

  /** Starts the watch (once); resolves when updates from now on will be seen. */
  ready(): Promise<void> {
    this.started ??= this.infra.jobs.watch({ key: ">", include: KvWatchInclude.UpdatesOnly }).then(
      (iter) => {
        void (async () => {
          try {
            for await (const e of iter) {
              const set = this.waiters.get(e.key);
              if (!set || e.operation !== "PUT" || e.value.length === 0) continue;
              const parsed = JobRecordSchema.safeParse(e.json());
              if (parsed.success) for (const fn of [...set]) fn(parsed.data);
            }
          } catch {
            // ended with an error: handled below like an end
          }
          // the watch ended (connection closed, consumer lost): the next waiter starts a new one, and those
          // waiting now read their record again, so an update made meanwhile is not missed
          this.started = null;
          for (const set of this.waiters.values()) for (const fn of [...set]) fn(null);
        })();
      },
      (err) => {
        this.started = null;
        throw err;
      },
    );
    return this.started;
  }

  /** Calls `fn` on every change of `id` (with null when the watch restarted) until the returned stop is called. */
  on(id: string, fn: (r: JobRecord | null) => void): () => void {
    let set = this.waiters.get(id);
    if (!set) this.waiters.set(id, (set = new Set()));
    set.add(fn);
    return () => {
      set.delete(fn);
      if (set.size === 0 && this.waiters.get(id) === set) this.waiters.delete(id);
    };
  }
}

const watches = new WeakMap<Infra, JobWatch>();

/** Waits until the job is terminal or `timeoutMs` passes; returns the latest record. */
export async function waitJob(infra: Infra, id: string, timeoutMs: number): Promise<JobRecord | null> {
  if (timeoutMs <= 0) return (await getJob(infra, id))?.record ?? null;
  let watch = watches.get(infra);
  if (!watch) watches.set(infra, (watch = new JobWatch(infra)));
  const until = Date.now() + timeoutMs;
  let last: JobRecord | null = null;
  for (;;) {
    await watch.ready();
    let done!: (how: "terminal" | "restart" | "timeout") => void;
    const ended = new Promise<"terminal" | "restart" | "timeout">((resolve) => (done = resolve));
    let seen = false;
    const off = watch.on(id, (r) => {
      if (r === null) return done("restart");
      seen = true;
      last = r;
      if (TERMINAL.has(r.status)) done("terminal");
    });
    const timer = setTimeout(() => done("timeout"), Math.max(0, until - Date.now()));
    try {
      // read after listening: a change made between the first read and the watch is not missed
      const now = await getJob(infra, id);
      if (!now) return last;
      if (TERMINAL.has(now.record.status)) return now.record;
      if (!seen) last = now.record;
      if ((await ended) !== "restart") return last;
    } finally {
      clearTimeout(timer);
      off();
    }
  }
}

/** Parses a timeout given as ms (number) or a duration string: "500ms", "10s", "2m". Throws a 400 naming `field`. */
export function parseDurationMs(v: unknown, field: string): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === "number" && Number.isFinite(v) && v > 0) return Math.round(v);
  if (typeof v === "string") {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(v.trim());
    if (m) {
      const n = Number(m[1]) * (m[2] === "m" ? 60_000 : m[2] === "s" ? 1000 : 1);
      if (n > 0) return Math.round(n);
    }
  }
  throw new JobError("BAD_REQUEST", `${field}: ${preview(v)} is not a duration (ms as a number, or "500ms", "10s", "2m")`);
}

/**
 * Cancels a job: a queued one never runs (the worker that takes its message reads the record first and drops it;
 * an old record with its JOBS sequence is also deleted from the queue); a running one finishes but its result is
 * discarded (its terminal write is a compare-and-set, which loses to the cancel). Throws JOB_NOT_FOUND (404) or CONFLICT (409, already terminal). Returns the state it had.
 */
export async function cancelJob(infra: Infra, id: string): Promise<JobStatus> {
  let before: JobRecord | null = null;
  const after = await updateJob(infra, id, (r) => {
    before = r;
    if (!r || TERMINAL.has(r.status)) return null;
    return { ...r, status: "cancelled", finishedAt: Date.now(), error: { code: "CANCELLED", message: "cancelled by request" } };
  });
  const prev = before as JobRecord | null;
  if (!after || !prev) throw new JobError("JOB_NOT_FOUND", `job "${id}" not found`);
  if (TERMINAL.has(prev.status)) throw new JobError("CONFLICT", `job "${id}" already ${prev.status}`);
  if (prev.status === "queued" && prev.seq) await infra.jsm.streams.deleteMessage(STREAMS.jobs, prev.seq).catch(() => undefined);
  return prev.status;
}

/** Replays a dead letter (same job id, fresh attempts), resetting its record first. Throws JOB_NOT_FOUND. */
export async function replayJob(infra: Infra, id: string, allow?: DeadLetterFilter): Promise<DeadLetterEntry> {
  const e = await replayDeadLetter(infra, id, async (entry) => {
    await updateJob(infra, entry.id, (r) =>
      r ? { ...r, status: "queued", attempts: 0, error: undefined, result: undefined, startedAt: undefined, finishedAt: undefined, deadline: undefined, seq: undefined } : null,
    );
  }, allow);
  if (!e) throw new JobError("JOB_NOT_FOUND", `dead letter "${id}" not found`);
  return e;
}
