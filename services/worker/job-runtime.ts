/**
 * The worker's one job runtime: everything between JetStream and a processor, in the spirit of BullMQ's
 * `new Worker(name, processor)`. It owns
 * - sources: durable pull consumers, read with bounded concurrency (`concurrency` messages processed at once,
 *   high-priority sources served first) either as a stream (a buffer kept full, for batching) or on demand (one
 *   message pulled per free slot, so a pulled message starts at once);
 * - the lease: `working()` for as long as a message is held, from the moment it is read until it is answered;
 * - the lifecycle of every message: envelope, tracked job record (`running`), deadline, the processor, then one
 *   decision (decide.ts: ack / nak with backoff / terminal failure) applied exactly once;
 * - the terminal-failure path, shared with the max-deliveries advisory handler (`finishStored`): dead letter copy
 *   first, then the processor's answer (reply, stored result), then the job record, then term.
 * A processor only parses, runs and publishes its kind of answer (inference.ts, nas-runner.ts, advisories.ts).
 */
import { AckPolicy, DeliverPolicy, JetStreamApiCodes, JetStreamApiError, type Consumer, type ConsumerConfig, type ConsumerMessages, type JsMsg, type StoredMsg } from "@nats-io/jetstream";
import { setMaxListeners } from "node:events";
import { headers as natsHeaders, type Msg, type MsgHdrs, type Subscription } from "@nats-io/transport-node";
import { deadLetter } from "#shared/dlq.js";
import { readEnvelope, jobIdOf, type Envelope, type Priority } from "#shared/envelope.js";
import { JobError, retryTransient, toJobError, type ErrorCode } from "#shared/errors.js";
import { TERMINAL, casJob, getJob, inlineResultFields, newJobRecord, updateJob, type JobRecord } from "#shared/jobs.js";
import type { Logger } from "#shared/log.js";
import type { Infra } from "#shared/nats.js";
import { HEADERS, STREAMS } from "#shared/subjects.js";
import { backoffMs, decide, exhaustedError, type Decision, type Outcome, type RetryPolicy } from "./decide.js";
import { Semaphore } from "./semaphore.js";

/** A job message this worker holds until it answers it exactly once. */
export interface Held {
  readonly subject: string;
  readonly data: Uint8Array;
  readonly headers?: MsgHdrs;
  /** JOBS stream sequence. */
  readonly seq: number;
  /** Delivery number, 1-based. */
  readonly attempt: number;
  /** Epoch ms the message was stored in JOBS (the server's clock): where its queue time starts. Unset: not stored. */
  readonly storedAt?: number;
  readonly env: Envelope;
  ack(): Promise<void>;
  nak(delayMs: number): Promise<void>;
  term(): Promise<void>;
  /** Extends the lease now (the runtime also does so on a timer). */
  working(): void;
  /**
   * A direct request only: tells its caller now which worker holds it (see ACCEPT_AFTER_MS). A processor calls it
   * before work that may keep the event loop busy past the announcement's timer (a long ORT run).
   */
  announce?(): void;
}

/** What every parsed job tells the runtime. */
export interface JobRef {
  id: string;
  /** Model (or NAS experiment) the job belongs to, for its job record. */
  model: string;
  /** This message starts the job: a tracked job is marked running here (false on later pipeline hops). */
  entry: boolean;
  /** Epoch ms the job was accepted, for a job record created late. */
  submittedAt?: number;
}

export interface RunContext {
  held: Held;
  /** Aborted when the runtime stops: long work may end early and return `released`. */
  signal: AbortSignal;
  priority: Priority;
  /** A child logger for this job (created on first use). */
  log(): Logger;
  /**
   * The work starts now (it got its compute slot): a tracked job's `startedAt`, and the clock of its deferred
   * `running` write, start here. Processors that do not call it (`reportsStart` unset) start when `run` is called.
   */
  started(): void;
}

export type RunResult<R> =
  /** Done: `result` is the answer to publish (none when the work was handed to a next stage). */
  | { kind: "succeeded"; result?: R; record?: Partial<JobRecord> }
  | { kind: "skipped" | "dropped" | "released"; reason: string };

/** A job's final answer. */
export type Final<J, R> = { ok: true; jobId: string; job: J; result: R } | { ok: false; jobId: string; job?: J; error: JobError };

export interface Processor<J extends JobRef = JobRef, R = unknown> {
  readonly name: string;
  /** Error code for anything thrown that is not a JobError. Default INTERNAL. */
  readonly fallbackCode?: ErrorCode;
  /** `run` calls `ctx.started()` once its work begins (after waiting for a compute slot). */
  readonly reportsStart?: boolean;
  /** Reads the job from the message. Throws JobError (a malformed message: not retryable). */
  parse(held: Held): J | Promise<J>;
  /** Does the work. Throws JobError; `retryable` decides whether it is tried again. */
  run(job: J, ctx: RunContext): Promise<RunResult<R>>;
  /**
   * Makes the final answer durable (reply, stored result, trial event). `job` is absent when the message could
   * not be parsed (or is answered by the advisory handler). Throws when the answer is not stored. May instead
   * return the answer's bytes for a tracked job: they are then kept in its record, written by the same request
   * that makes it terminal (one write, not two; see INLINE_RESULT_MAX_BYTES).
   */
  publish(final: Final<J, R>, held: Held): Promise<Uint8Array | void>;
  /** After the message left the queue (ack or term): clean up what the job left behind. */
  settled?(job: J): Promise<void>;
}

export interface SourceSpec {
  /** Unique within the runtime, e.g. "model:0:high". */
  key: string;
  /** Binds to the durable consumer, creating it when missing. Called at start and on every restart. */
  open(): Promise<Consumer>;
  priority?: Priority;
  /**
   * "stream": keep up to `buffer` messages coming (batching wants a full buffer); "on-demand": pull one message
   * per free slot, so nothing waits in a buffer while other workers are idle (long jobs).
   */
  fetch: { mode: "stream"; buffer: number } | { mode: "on-demand" };
  /** Pull expiry, ms. Default 5 s (stream) / 2 s (on demand). */
  expiresMs?: number;
  /**
   * When its loop ends on its own (consumer deleted, server error): true re-opens it with backoff; false drops
   * the source and calls `onSourceEnded`, so its owner stops advertising it and decides again.
   */
  restart: boolean;
}

/**
 * A core NATS subscription (queue group) of sync requests that were not stored: the fast path. Each message is
 * run like a JOBS message; one that cannot run here (no slot soon, a retry, the worker stopping) is handed over to
 * JOBS, after which JetStream owns it. A request lost with this worker is re-sent by its caller (see the client).
 */
export interface DirectSpec {
  /** Unique within the runtime, e.g. "model:0:direct". */
  key: string;
  subject: string;
  queue: string;
  /** The JOBS subject the message would have had: what the processor parses, and where a hand-over goes. */
  jobSubject: string;
  /** Requests waiting for a slot before more are handed over to JOBS. */
  buffer: number;
}

/** What the lifecycle needs from its surroundings (shared by runtimes and the advisory handler). */
export interface LifecycleDeps {
  infra: Infra;
  log: Logger;
  workerId: string;
  policy: RetryPolicy;
}

export interface JobRuntimeDeps extends LifecycleDeps {
  name: string;
  ackWaitMs: number;
  /** Messages processed at once. */
  concurrency: number;
  processor: Processor<any, any>;
  /** A source with `restart: false` ended on its own and was dropped. */
  onSourceEnded?: (key: string, err: unknown) => void;
  /**
   * Tells whatever the processor waits for (the worker's ORT run slots) that a high-priority message was taken
   * and will ask soon: returns the call that says it started (or will not run), see Semaphore.expect.
   */
  expectHigh?: () => () => void;
}

export interface JobRuntime {
  readonly name: string;
  /** Starts consuming a source; throws when its consumer cannot be opened. A key already present is kept. */
  add(spec: SourceSpec): Promise<void>;
  /** Starts taking direct (core NATS) requests. A key already present is kept. */
  addDirect(spec: DirectSpec): void;
  /** Stops consuming a source; its messages in flight finish. */
  remove(key: string): Promise<void>;
  has(key: string): boolean;
  keys(): string[];
  /** Messages being processed now. */
  busy(): number;
  /** Jobs answered with a result, and terminal failures. */
  readonly stats: { succeeded: number; failed: number };
  /** Drains: stops fetching, hands back what has not started, aborts `signal`, waits for messages in flight. */
  stop(): Promise<void>;
}

/**
 * Binds to a durable pull consumer, creating it with `config` when it does not exist (safe to race with other
 * workers doing the same). An existing consumer is used as it is. Transient NATS errors (a cluster electing the
 * consumer's leader, a server restarting) are retried for up to 30 s, so a worker starting meanwhile waits for it.
 */
export function openConsumer(infra: Infra, stream: string, name: string, config: Partial<ConsumerConfig>): Promise<Consumer> {
  return retryTransient(() => openConsumerOnce(infra, stream, name, config), Date.now() + 30_000);
}

async function openConsumerOnce(infra: Infra, stream: string, name: string, config: Partial<ConsumerConfig>): Promise<Consumer> {
  try {
    return await infra.js.consumers.get(stream, name);
  } catch (err) {
    if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.ConsumerNotFound)) throw err;
  }
  try {
    await infra.jsm.consumers.add(stream, { ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All, ...config, durable_name: name });
  } catch (err) {
    // another worker may have created it between our lookup and our add
    return infra.js.consumers.get(stream, name).catch(() => Promise.reject(err));
  }
  return infra.js.consumers.get(stream, name);
}

/**
 * The settings of a consumer of jobs: every delivery but the last runs the job; the last (`maxDeliver + 1`) only
 * records that its deliveries ran out (the runtime fails it through the terminal path without running it).
 */
export function jobConsumerConfig(filter: string, opts: { ackWaitMs: number; maxDeliver: number }): Partial<ConsumerConfig> {
  return { filter_subject: filter, ack_wait: opts.ackWaitMs * 1_000_000, max_deliver: opts.maxDeliver + 1, max_ack_pending: 10_000 };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * The controller that closes a source. Every request waiting for a slot listens on its signal (up to the
 * runtime's concurrency): more than Node's default of 10 listeners is expected, not a leak.
 */
function closer(): AbortController {
  const c = new AbortController();
  setMaxListeners(0, c.signal);
  return c;
}

/**
 * A JsMsg as a Held message whose lease is extended every `keepAliveMs` until it is answered.
 *
 * `pullsOpenUntil` (epoch ms; 0 while the source is open) says until when a pull request this worker made for the
 * message's consumer may still be open on the server after its source was closed: nats-server 2.9 keeps a pull
 * request until it expires even when the client stopped listening, and a message nak'ed meanwhile may be
 * redelivered into it, where nobody reads it until its ack wait ends. So a nak waits for those pulls to expire
 * (keeping the lease meanwhile).
 */
export function holdMessage(m: JsMsg, keepAliveMs: number, pullsOpenUntil: () => number = () => 0): Held {
  let answered = false;
  const timer = setInterval(() => m.working(), keepAliveMs);
  const answer = (fn: () => void) => {
    if (answered) return Promise.resolve();
    answered = true;
    clearInterval(timer);
    fn();
    return Promise.resolve();
  };
  return {
    subject: m.subject,
    data: m.data,
    headers: m.headers,
    seq: m.seq,
    attempt: m.info.deliveryCount,
    storedAt: m.time.getTime(),
    env: readEnvelope(m.headers),
    ack: () => answer(() => m.ack()),
    nak: async (delayMs) => {
      for (let wait = pullsOpenUntil() - Date.now(); wait > 0 && !answered; wait = pullsOpenUntil() - Date.now()) await sleep(Math.min(wait, 200));
      return answer(() => (delayMs > 0 ? m.nak(delayMs) : m.nak()));
    },
    term: () => answer(() => m.term()),
    working: () => {
      if (!answered) m.working();
    },
  };
}

/**
 * A JOBS message read back from the stream (its deliveries ran out) as a Held message: leaving the queue deletes
 * it; it cannot be redelivered, so `nak` throws (whoever handles it retries later).
 */
export function holdStored(infra: Infra, sm: StoredMsg, deliveries: number): Held {
  const remove = async () => {
    // already gone (handled before) is fine
    await infra.jsm.streams.deleteMessage(STREAMS.jobs, sm.seq).catch(async (err) => {
      if (await infra.jsm.streams.getMessage(STREAMS.jobs, { seq: sm.seq })) throw err;
    });
  };
  return {
    subject: sm.subject,
    data: sm.data,
    headers: sm.header,
    seq: sm.seq,
    attempt: deliveries,
    storedAt: sm.time.getTime(),
    env: readEnvelope(sm.header),
    ack: remove,
    term: remove,
    nak: async () => {
      throw new JobError("NATS_UNAVAILABLE", `job message ${sm.seq} could not be answered; will retry`, { retryable: true });
    },
    working: () => undefined,
  };
}

/**
 * A direct request still running after this long is announced to its caller (the `Jetshard-Accepted` header, with
 * this worker's id), well within the client's DIRECT_CHECK_MS (1 s), after which it re-sends a request nobody
 * announced through JOBS. Answers within it need no announcement.
 */
export const ACCEPT_AFTER_MS = 200;
const EMPTY = new Uint8Array(0);

/**
 * A direct (core NATS) request as a Held message. Nothing stores it, so answering it is a no-op; `nak` hands it
 * over to JOBS under `jobSubject` (dedup id: the job id), from where any worker runs it with JetStream's
 * redelivery and retries: its attempts start again there, and its backoff is JetStream's immediate delivery.
 */
export function holdDirect(infra: Infra, m: Msg, jobSubject: string, log: Logger, accepted?: MsgHdrs): Held {
  const env = readEnvelope(m.headers);
  // tell the caller who holds its request only when the answer is not coming at once: most are answered sooner,
  // and an accept message each would cost a publish here and a wake-up there (see the client's DIRECT_CHECK_MS)
  const reply = env.reply;
  let answered = false;
  let announced = false;
  const announce = () => {
    if (announced || answered || !accepted || !reply) return;
    announced = true;
    clearTimeout(timer);
    infra.nc.publish(reply, EMPTY, { headers: accepted });
  };
  const timer = accepted && reply ? setTimeout(announce, ACCEPT_AFTER_MS) : undefined;
  const handOver = async () => {
    const h = m.headers ?? natsHeaders();
    const id = env.jobId ?? env.msgId;
    if (id) h.set(HEADERS.msgId, id);
    try {
      await infra.js.publish(jobSubject, m.data, { headers: h, ...(id ? { msgID: id } : {}) });
    } catch (err) {
      // the caller re-sends it (no answer and no JOBS copy): nothing else can be done from here
      log.warn({ err, job: id }, "could not hand a direct request over to JOBS");
    }
  };
  const once = (fn: () => Promise<void>) => () => {
    if (answered) return Promise.resolve();
    answered = true;
    clearTimeout(timer);
    return fn();
  };
  return {
    subject: jobSubject,
    data: m.data,
    headers: m.headers,
    seq: 0,
    attempt: 1,
    env,
    ack: once(async () => undefined),
    term: once(async () => undefined),
    nak: once(handOver),
    working: () => undefined,
    announce,
  };
}

/**
 * Runs a NATS operation, turning its failure into a retryable NATS_UNAVAILABLE, which does not spend the job's
 * attempts. JobErrors pass through, except CONFLICT (too many concurrent writes: contention, not the job's fault).
 */
export async function transient<T>(fn: () => Promise<T>, what: string): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof JobError && err.code !== "CONFLICT") throw err;
    throw new JobError("NATS_UNAVAILABLE", `${what} failed: ${(err as Error).message}`, { retryable: true, cause: err });
  }
}

/**
 * A tracked job still running after this many ms gets its `running` write (attempts, startedAt, worker). Shorter
 * jobs go straight from `queued` to their terminal state in one write: a `running` write per job cost a KV round
 * trip on the path of every short job, and nobody polls fast enough to see it.
 */
export const RUNNING_AFTER_MS = 20;

/**
 * A tracked job's record as this delivery read it when it claimed the job. Its transitions are blind
 * compare-and-sets on the revision it knows (one request each, no read first); when another writer got in between
 * (a cancel, the submitter's late create, a duplicate delivery), the terminal write falls back to read-and-decide.
 */
interface Tracker {
  /** The job starts running now: sets `startedAt` and arms the deferred `running` write. Idempotent. */
  start(): void;
  /** Cancels the deferred `running` write (the job was not run, or was handed back). */
  stop(): void;
  /** Records the terminal state unless the job already has one. */
  finish(patch: Partial<JobRecord> & { status: JobRecord["status"] }): Promise<void>;
}

/**
 * Reads a tracked job's record (one request). Returns null when it must not run: cancelled, or already finished by
 * an earlier delivery. Otherwise schedules the deferred `running` write and returns the tracker for its end.
 */
async function claimJob(deps: LifecycleDeps, job: JobRef, held: Held): Promise<Tracker | null> {
  const { infra, workerId } = deps;
  const cur = await getJob(infra, job.id);
  if (cur && TERMINAL.has(cur.record.status)) return null;
  // a record the submitter has not created yet (its create races the JOBS publish) is created by our first write
  let record: JobRecord = cur?.record ?? {
    ...newJobRecord(job.id, job.model, job.submittedAt),
    priority: held.env.priority,
    ...(held.env.tenant ? { tenant: held.env.tenant } : {}),
    ...(held.env.deadline !== undefined ? { deadline: held.env.deadline } : {}),
  };
  let revision = cur?.revision ?? 0;
  let startedAt = Date.now();
  let running: Promise<void> | undefined;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const arm = () => setTimeout(() => {
    const next: JobRecord = { ...record, status: "running", attempts: held.attempt, startedAt, worker: workerId };
    running = casJob(infra, next, revision).then(
      (rev) => {
        if (rev === null) return;
        record = next;
        revision = rev;
      },
      // the terminal write does not depend on it: it falls back to read-and-decide on a stale revision
      (err) => deps.log.warn({ err, job: job.id }, "could not record the job as running"),
    );
  }, RUNNING_AFTER_MS);
  return {
    start() {
      if (timer || stopped) return;
      startedAt = Date.now();
      timer = arm();
    },
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
    async finish(patch) {
      stopped = true;
      clearTimeout(timer);
      if (running) await running;
      const next: JobRecord = {
        ...record,
        ...patch,
        attempts: Math.max(record.attempts, patch.attempts ?? held.attempt),
        startedAt: record.startedAt ?? startedAt,
        finishedAt: Date.now(),
        worker: workerId,
      };
      if ((await casJob(infra, next, revision)) !== null) return;
      await finishJob(infra, job.id, job.model, { ...patch, attempts: patch.attempts ?? held.attempt, startedAt: record.startedAt ?? startedAt }, workerId);
    },
  };
}

/** Records a tracked job's terminal state unless it already has one (cancelled meanwhile, or a duplicate). */
async function finishJob(infra: Infra, id: string, model: string, patch: Partial<JobRecord> & { status: JobRecord["status"] }, workerId: string): Promise<void> {
  await updateJob(infra, id, (r) => {
    if (r && TERMINAL.has(r.status)) return null;
    const base = r ?? newJobRecord(id, model);
    return { ...base, ...patch, attempts: Math.max(base.attempts, patch.attempts ?? 0), startedAt: base.startedAt ?? patch.startedAt, finishedAt: Date.now(), worker: workerId };
  });
}

interface LifecycleOptions {
  signal: AbortSignal;
  priority: Priority;
  stopping: () => boolean;
  onResult?: (kind: "succeeded" | "failed") => void;
  /** Called once the job starts its work (or will not run at all). */
  onStart?: () => void;
}

/** Takes one held message through its whole lifecycle; answers it exactly once. Never throws. */
async function runLifecycle<J extends JobRef, R>(deps: LifecycleDeps, processor: Processor<J, R>, held: Held, opts: LifecycleOptions): Promise<void> {
  const envId = jobIdOf(held.env, held.seq);
  let child: Logger | undefined;
  // most jobs log nothing, and a child logger per job costs
  const jlog = () => (child ??= deps.log.child({ job: envId, subject: held.subject, attempt: held.attempt }));
  let job: J | undefined;
  let run: RunResult<R> | undefined;
  let outcome: Outcome;
  let tracker: Tracker | undefined;
  try {
    if (held.attempt > deps.policy.maxDeliver) throw exhaustedError(envId, held.attempt - 1);
    if (opts.stopping()) throw new Released("worker stopping before the job started");
    if (held.env.problem) throw new JobError("BAD_REQUEST", held.env.problem);
    job = await processor.parse(held);
    const claimed = held.env.track && job.entry ? await transient(() => claimJob(deps, job!, held), "reading the job record") : true;
    if (claimed && claimed !== true) tracker = claimed;
    if (!claimed) {
      outcome = { kind: "skipped", reason: "job already finished or cancelled" };
    } else {
      if (held.env.deadline !== undefined && Date.now() > held.env.deadline) {
        throw new JobError("DEADLINE_EXCEEDED", `job ${job.id} passed its deadline before it could run`);
      }
      const t = tracker;
      const started = () => {
        opts.onStart?.();
        t?.start();
      };
      if (!processor.reportsStart) started();
      run = await processor.run(job, { held, signal: opts.signal, priority: opts.priority, log: jlog, started });
      outcome = run.kind === "succeeded" ? { kind: "succeeded" } : { kind: run.kind, reason: run.reason };
    }
  } catch (err) {
    outcome = err instanceof Released ? { kind: "released", reason: err.message } : { kind: "failed", error: toJobError(err, processor.fallbackCode ?? "INTERNAL") };
  }
  opts.onStart?.();
  try {
    await settle(deps, processor, held, { outcome, job, run, envId, jlog, opts, tracker });
  } catch (err) {
    tracker?.stop();
    jlog().error({ err }, "answering a job message failed; it will be redelivered");
    await held.nak(backoffMs(deps.policy, held.attempt)).catch(() => undefined);
  }
}

class Released extends Error {}

interface SettleInput<J, R> {
  outcome: Outcome;
  job?: J;
  run?: RunResult<R>;
  envId: string;
  jlog: () => Logger;
  opts: Pick<LifecycleOptions, "stopping" | "onResult">;
  /** The job record as claimed by this delivery (tracked jobs that got as far as their claim). */
  tracker?: Tracker;
}

/** Decides and applies the decision: the only place a job message is answered. */
async function settle<J extends JobRef, R>(deps: LifecycleDeps, processor: Processor<J, R>, held: Held, s: SettleInput<J, R>): Promise<void> {
  const base = { attempt: held.attempt, policy: deps.policy, deadline: held.env.deadline, reply: Boolean(held.env.reply), track: held.env.track };
  if (held.env.ignoredReply) s.jlog().warn({ reply: held.env.ignoredReply.slice(0, 200) }, "ignored a Jetshard-Reply outside _INBOX.; the result goes to RESULTS only");
  const decision: Decision = decide({ ...base, outcome: s.outcome, stopping: s.opts.stopping(), now: Date.now() });
  const unrecorded = async (step: "dead-letter" | "result" | "record", error: unknown) => {
    const d = decide({ ...base, outcome: { kind: "unrecorded", step, error }, stopping: s.opts.stopping(), now: Date.now() });
    s.jlog().warn({ err: error }, `${d.action === "nak" ? d.reason : `could not store the ${step}`}; the job will be redelivered`);
    await held.nak(d.action === "nak" ? d.delayMs : backoffMs(deps.policy, held.attempt));
  };
  const left = async () => {
    if (s.job && processor.settled) await processor.settled(s.job).catch((err) => s.jlog().warn({ err }, "cleanup after the job failed"));
  };
  if (decision.action !== "complete" && decision.action !== "fail") s.tracker?.stop();
  switch (decision.action) {
    case "complete": {
      const job = s.job!;
      const result = s.run?.kind === "succeeded" ? s.run.result : undefined;
      if (result !== undefined) {
        let kept: Uint8Array | void;
        try {
          kept = await processor.publish({ ok: true, jobId: job.id, job, result }, held);
        } catch (err) {
          return unrecorded("result", err);
        }
        if (held.env.track) {
          const record = { ...(s.run?.kind === "succeeded" ? s.run.record : undefined), ...inlineResult(kept) };
          try {
            if (s.tracker) await s.tracker.finish({ ...record, status: "succeeded" });
            else await finishJob(deps.infra, job.id, job.model, { ...record, status: "succeeded", attempts: held.attempt }, deps.workerId);
          } catch (err) {
            return unrecorded("record", err);
          }
        }
        s.opts.onResult?.("succeeded");
      }
      await held.ack();
      // at debug, every step of a job leaves a record (`jetshard logs --job` follows it); cheap when off
      if (deps.log.isLevelEnabled("debug")) s.jlog().debug("job step done");
      return left();
    }
    case "ack":
      s.jlog().info(decision.reason);
      await held.ack();
      return left();
    case "term":
      s.jlog().info(decision.reason);
      await held.term();
      return left();
    case "nak": {
      const err = s.outcome.kind === "failed" ? s.outcome.error : undefined;
      if (err) s.jlog().warn({ err }, decision.reason);
      else s.jlog().info(decision.reason);
      await held.nak(decision.delayMs);
      return;
    }
    case "fail": {
      const error = decision.error;
      if (error.status >= 500) s.jlog().error({ err: error }, "job failed");
      else s.jlog().info({ code: error.code, reason: error.message }, "job rejected");
      const jobId = s.job?.id ?? s.envId;
      if (decision.deadLetter) {
        try {
          // copy first: once answered, a work-queue stream deletes the job
          await deadLetter(deps.infra, { jobId, subject: held.subject, data: held.data, headers: held.headers, error, attempts: held.attempt, seq: held.seq });
        } catch (err) {
          return unrecorded("dead-letter", err);
        }
      }
      let kept: Uint8Array | void;
      try {
        kept = await processor.publish({ ok: false, jobId, job: s.job, error }, held);
      } catch (err) {
        return unrecorded("result", err);
      }
      if (held.env.track) {
        try {
          const patch = { status: "failed" as const, error: error.toJSON(), attempts: held.attempt, ...inlineResult(kept) };
          if (s.tracker) await s.tracker.finish(patch);
          else await finishJob(deps.infra, jobId, s.job?.model ?? modelOf(held.subject), patch, deps.workerId);
        } catch (err) {
          return unrecorded("record", err);
        }
      }
      s.opts.onResult?.("failed");
      await held.term();
      return left();
    }
  }
}

/** The record fields that keep an answer a processor left to the job record. */
function inlineResult(kept: Uint8Array | void): Partial<JobRecord> {
  return kept ? inlineResultFields(kept) : {};
}

function modelOf(subject: string): string {
  return subject.split(".")[2] ?? "unknown";
}

/**
 * Fails a job whose deliveries ran out (read back from JOBS) through the terminal-failure path of `processor`:
 * dead letter, answer, job record, then deletes it from JOBS. Throws when any step could not be stored.
 */
export async function finishStored<J extends JobRef, R>(deps: LifecycleDeps, processor: Processor<J, R>, held: Held, error: JobError): Promise<void> {
  let failure: unknown;
  const log = deps.log.child({ job: jobIdOf(held.env, held.seq), subject: held.subject, attempt: held.attempt });
  await settle(deps, processor, held, {
    outcome: { kind: "failed", error },
    envId: jobIdOf(held.env, held.seq),
    jlog: () => log,
    opts: { stopping: () => false },
  }).catch((err) => (failure = err));
  // a stored message cannot be nak'ed: settle's nak throws, which means a step failed
  if (failure) throw failure;
}

/** Builds a job runtime. Nothing is consumed until `add`. */
export function createJobRuntime(deps: JobRuntimeDeps): JobRuntime {
  const log = deps.log.child({ runtime: deps.name });
  const lifecycleDeps: LifecycleDeps = { ...deps, log };
  const slots = new Semaphore(deps.concurrency);
  const keepAliveMs = Math.max(100, Math.floor(deps.ackWaitMs / 3));
  const abort = new AbortController();
  const stats = { succeeded: 0, failed: 0 };
  const inflight = new Set<Promise<void>>();
  let active = 0;
  let stopping = false;

  interface Source {
    spec: SourceSpec;
    consumer: Consumer;
    msgs: ConsumerMessages | null;
    closed: boolean;
    /** Aborted when the source is closed: wakes its loops waiting for a slot. */
    closing: AbortController;
    /** Its loops still running. */
    loops: number;
    /** Epoch ms until which a pull request of this closed source may still be open on the server. */
    pullsOpenUntil: number;
    /** Restarts in a row that did not get a message through. */
    failures: number;
  }
  const sources = new Map<string, Source>();
  /** Direct subscriptions, and how many of their requests wait for a slot. */
  const directs = new Map<string, { sub: Subscription; waiting: number; closing: AbortController }>();
  const isOff = (src: Source) => src.closed || stopping;
  /** Messages being handed back (their nak waits for our pulls to expire). */
  const handingBack = new Set<Promise<void>>();
  const expiresOf = (spec: SourceSpec) => spec.expiresMs ?? (spec.fetch.mode === "stream" ? 5_000 : 2_000);
  const hold = (src: Source, m: JsMsg) => holdMessage(m, keepAliveMs, () => src.pullsOpenUntil);

  /** Stops fetching from a source. */
  async function close(src: Source): Promise<void> {
    if (!src.closed) {
      src.closed = true;
      // until its loops have ended (and, for a stream, its last pull request expired): see holdMessage
      src.pullsOpenUntil = Infinity;
      src.closing.abort();
      if (src.loops === 0) src.pullsOpenUntil = Date.now();
    }
    await src.msgs?.close().catch(() => undefined);
  }

  /** Runs one loop of a source, and marks when the pulls of a closed source are all over. */
  function loop(src: Source, body: () => Promise<void>): void {
    src.loops++;
    body()
      .catch((err) => log.error({ err, source: src.spec.key }, "consume loop failed"))
      .finally(async () => {
        if (--src.loops === 0 && src.closed) {
          // a consume iterator may have sent a pull just before it ended; a fetch's pull is over when it returns.
          // The pull's expiry runs from when the server got it: a round trip first makes sure it has every pull we
          // sent (on a loaded host one can sit in our outbound buffer past the margin), then the clock starts
          if (src.spec.fetch.mode === "stream") await deps.infra.nc.flush().catch(() => undefined);
          src.pullsOpenUntil = Date.now() + (src.spec.fetch.mode === "stream" ? expiresOf(src.spec) + 100 : 0);
        }
      });
  }

  /** Hands a message that will not be processed here back to the queue, for another worker. */
  function handBack(src: Source, m: JsMsg): void {
    const p = hold(src, m)
      .nak(0)
      .finally(() => handingBack.delete(p));
    handingBack.add(p);
  }

  /** Processes a held message in a slot already acquired; releases it when done. */
  function dispatch(priority: Priority, held: Held): void {
    active++;
    const p = runLifecycle(lifecycleDeps, deps.processor, held, {
      signal: abort.signal,
      priority,
      stopping: () => stopping,
      onResult: (kind) => stats[kind]++,
      onStart: priority === "high" ? deps.expectHigh?.() : undefined,
    }).finally(() => {
      active--;
      slots.release();
      inflight.delete(p);
    });
    inflight.add(p);
  }

  async function streamLoop(src: Source): Promise<void> {
    const { spec } = src;
    const fetch = spec.fetch as { mode: "stream"; buffer: number };
    for (;;) {
      let ended: unknown = null;
      try {
        src.msgs ??= await src.consumer.consume({ max_messages: fetch.buffer, expires: spec.expiresMs ?? 5_000, abort_on_missing_resource: true });
        if (isOff(src)) {
          await src.msgs.close().catch(() => undefined);
          return;
        }
        for await (const m of src.msgs) {
          src.failures = 0;
          if (isOff(src)) {
            // pulled but not started: hand it back instead of letting it wait out the ack timeout
            handBack(src, m);
            continue;
          }
          const held = hold(src, m);
          const got = await slots.acquireUnless(src.closing.signal, spec.priority ?? "normal");
          if (!got || isOff(src)) {
            if (got) slots.release();
            const p = held.nak(0).finally(() => handingBack.delete(p));
            handingBack.add(p);
            continue;
          }
          dispatch(spec.priority ?? "normal", held);
        }
        ended = new Error("the consumer's message stream ended");
      } catch (err) {
        ended = err;
      }
      src.msgs = null;
      if (isOff(src)) return;
      if (!spec.restart) {
        sources.delete(spec.key);
        void close(src);
        log.warn({ err: ended, source: spec.key }, "consume loop ended; dropping the source");
        deps.onSourceEnded?.(spec.key, ended);
        return;
      }
      src.failures++;
      log.warn({ err: ended, source: spec.key }, "consume loop ended; restarting it");
      await sleep(backoffMs({ baseMs: 500, capMs: 30_000 }, src.failures));
      if (isOff(src)) return;
      try {
        src.consumer = await spec.open();
      } catch (err) {
        log.warn({ err, source: spec.key }, "could not reopen the consumer; retrying");
      }
    }
  }

  /** One on-demand puller: waits for a free slot, then pulls one message into it. */
  async function pullLoop(src: Source): Promise<void> {
    const { spec } = src;
    while (!isOff(src)) {
      if (!(await slots.acquireUnless(src.closing.signal, spec.priority ?? "normal"))) return;
      if (isOff(src)) {
        slots.release();
        return;
      }
      let m: JsMsg | null;
      try {
        m = await src.consumer.next({ expires: spec.expiresMs ?? 2_000 });
      } catch (err) {
        slots.release();
        if (isOff(src)) return;
        src.failures++;
        log.warn({ err, source: spec.key }, "pulling failed; retrying");
        await sleep(backoffMs({ baseMs: 500, capMs: 30_000 }, src.failures));
        // the consumer may have been deleted: bind again (creating it)
        src.consumer = await spec.open().catch(() => src.consumer);
        continue;
      }
      src.failures = 0;
      if (!m) {
        slots.release();
        continue;
      }
      if (isOff(src)) {
        slots.release();
        handBack(src, m);
        return;
      }
      dispatch(spec.priority ?? "normal", hold(src, m));
    }
  }

  /** Takes one direct request: runs it in a free slot (announcing it to the caller if it takes a while) or hands it over to JOBS. */
  function onDirect(spec: DirectSpec, d: { waiting: number; closing: AbortController }, m: Msg): void {
    const held = holdDirect(deps.infra, m, spec.jobSubject, log, acceptedHeaders);
    if (stopping || d.closing.signal.aborted || d.waiting >= spec.buffer) {
      const p = held.nak(0).finally(() => handingBack.delete(p));
      handingBack.add(p);
      return;
    }
    if (slots.tryAcquire(held.env.priority)) return dispatch(held.env.priority, held);
    d.waiting++;
    void slots.acquireUnless(d.closing.signal, held.env.priority).then((got) => {
      d.waiting--;
      if (!got || stopping) {
        if (got) slots.release();
        const p = held.nak(0).finally(() => handingBack.delete(p));
        handingBack.add(p);
        return;
      }
      dispatch(held.env.priority, held);
    });
  }
  const acceptedHeaders = natsHeaders();
  acceptedHeaders.set(HEADERS.accepted, deps.workerId);

  async function closeDirect(key: string): Promise<void> {
    const d = directs.get(key);
    if (!d) return;
    directs.delete(key);
    d.closing.abort();
    // requests already delivered to this subscription still arrive and are handed over (closing is aborted)
    await d.sub.drain().catch(() => undefined);
  }

  return {
    name: deps.name,
    stats,
    busy: () => active,
    has: (key) => sources.has(key) || directs.has(key),
    keys: () => [...sources.keys(), ...directs.keys()],
    addDirect(spec) {
      if (directs.has(spec.key) || stopping) return;
      const d = { waiting: 0, closing: closer(), sub: null as unknown as Subscription };
      d.sub = deps.infra.nc.subscribe(spec.subject, {
        queue: spec.queue,
        callback: (err, m) => {
          if (!err) onDirect(spec, d, m);
        },
      });
      directs.set(spec.key, d);
    },
    async add(spec) {
      if (sources.has(spec.key) || stopping) return;
      const consumer = await spec.open();
      if (sources.has(spec.key) || stopping) return;
      const src: Source = { spec, consumer, msgs: null, closed: false, closing: closer(), loops: 0, pullsOpenUntil: 0, failures: 0 };
      sources.set(spec.key, src);
      if (spec.fetch.mode === "stream") {
        // open the message stream before returning, so a caller that advertises the source is telling the truth
        src.msgs = await consumer.consume({ max_messages: spec.fetch.buffer, expires: spec.expiresMs ?? 5_000, abort_on_missing_resource: true }).catch((err) => {
          sources.delete(spec.key);
          throw err;
        });
        loop(src, () => streamLoop(src));
      } else {
        for (let i = 0; i < deps.concurrency; i++) loop(src, () => pullLoop(src));
      }
    },
    async remove(key) {
      if (directs.has(key)) return closeDirect(key);
      const src = sources.get(key);
      if (!src) return;
      sources.delete(key);
      await close(src);
    },
    async stop() {
      if (stopping) return;
      stopping = true;
      abort.abort();
      const all = [...sources.values()];
      sources.clear();
      await Promise.all([...all.map(close), ...[...directs.keys()].map(closeDirect)]);
      // what was running finishes or hands itself back; what had not started goes back once our pulls expired
      while (inflight.size + handingBack.size > 0) await Promise.allSettled([...inflight, ...handingBack]);
    },
  };
}
