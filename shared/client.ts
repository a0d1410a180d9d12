/**
 * A small typed client for talking to jetshard straight over NATS, without the gateway.
 * The gateway and the CLI use it too.
 *
 *   const client = await JetshardClient.connect(["nats://127.0.0.1:4222"]);
 *   const res = await client.infer("demo-mlp", [{ name: "input", datatype: "FP32", shape: [1, 4], data: Float32Array.of(1, 2, 3, 4) }]);
 *   console.log(res.outputs[0].data);
 */
import { createInbox, errors as natsErrors, nuid, type MsgHdrs, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import { JetStreamApiError, jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { JS_API_CODES, JobError, fromNatsError, retryTransient } from "./errors.js";
import { decodeResult, throwIfFailed } from "./results.js";
import { HEADERS, subjects } from "./subjects.js";
import { writeEnvelope } from "./envelope.js";
import type { Tensor } from "./tensor.js";
import { MAX_PARAMETER_DEPTH, encodeFrame, withinDepth, type JobMeta } from "./wire.js";
import { connectNats, openInfra, type Infra, type NatsSettings } from "./nats.js";
import { loadConfig } from "./config.js";
import { createJob, getJob, jobIdFromKey, jobResultBytes, publicRecord, type JobRecord } from "./jobs.js";
import { DEFAULT_TENANT } from "./auth.js";

/** How long the connection may be down before pending sync calls fail (a stale-connection blip reconnects sooner). */
const DISCONNECT_GRACE_MS = 1500;

/**
 * How long `submit` keeps retrying while NATS is transiently unavailable before it gives up with NATS_UNAVAILABLE
 * (503): long enough for a cluster to elect new stream leaders after losing a server (nats-server 2.9 measured here:
 * 5-9 s after a SIGKILL, more under load), short enough for a caller to get an answer.
 */
const SUBMIT_RETRY_MS = 15_000;

export interface InferOptions {
  /** Model version; the latest when omitted. */
  version?: number;
  /** Output names to return (all when omitted). */
  outputs?: string[];
  /** How long to wait for the result, ms. Also sent as the job's deadline. Default 30 s. */
  timeoutMs?: number;
  /** Echoed back as `requestId` (the v2 `id`). */
  requestId?: string;
  /** Job id; also the JetStream dedup id. Generated when omitted. */
  jobId?: string;
  parameters?: Record<string, unknown>;
  /** "high" jobs are taken before "normal" ones queued for the same model. */
  priority?: "high" | "normal";
  /** Also keep the result in RESULTS (readable later with `result(id)`); `infer` skips that by default. */
  storeResult?: boolean;
  /** The tenant the job belongs to (the gateway sets it from the caller's API key). Default "default". */
  tenant?: string;
  /**
   * `infer` only: send the request straight to a worker with core NATS (the default), JetStream being the fallback
   * when no worker takes it or the one that took it is lost; false sends it through JetStream (JOBS) only.
   */
  direct?: boolean;
}

export interface SubmitOptions extends InferOptions {
  /** Makes a resubmission (by the same tenant) return the existing job instead of running it twice. */
  idempotencyKey?: string;
}

export interface Submitted {
  id: string;
  record: JobRecord;
  /** True when an earlier job with the same idempotency key was returned. */
  replayed: boolean;
}

export interface InferResult {
  id: string;
  model: string;
  version?: number;
  requestId?: string;
  worker?: string;
  computeMs?: number;
  outputs: Tensor[];
}

interface Pending {
  resolve: (r: InferResult) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  /** A direct request: re-sends it through JOBS (once). */
  viaJobs?: () => void;
  /** Epoch ms it was sent directly. */
  sentAt?: number;
  /** The worker that said it took the direct request. */
  worker?: string;
}

/** A job ready to send: where it goes through JOBS, its frame and its headers. */
interface BuiltJob {
  subject: string;
  frame: Uint8Array;
  headers: MsgHdrs;
}

/**
 * A direct request no worker said it took within this long, or whose worker does not answer a ping, is re-sent
 * through JOBS. Checked this often.
 */
const DIRECT_CHECK_MS = 1_000;

/** Decodes a result message (frame or JSON); throws its JobError when the job failed. */
export function resultFromMessage(bytes: Uint8Array): InferResult {
  const { meta: m, outputs } = decodeResult(bytes);
  throwIfFailed(m);
  return { id: m.id, model: m.model, version: m.version, requestId: m.requestId, worker: m.worker, computeMs: m.computeMs, outputs };
}

export class JetshardClient {
  readonly nc: NatsConnection;
  private readonly js: JetStreamClient;
  private readonly inbox: string;
  private readonly pending = new Map<string, Pending>();
  private sub: Subscription | null = null;
  private readonly ownsConnection: boolean;
  private infraP: Promise<Infra> | null;
  private jsmP: Promise<JetStreamManager> | null = null;
  /** Down for longer than the grace: sync calls fail at once rather than wait for a reply that cannot come. */
  private disconnected = false;

  /**
   * `inboxPrefix`: where results come back (a NATS user restricted to its own inboxes may subscribe only there);
   * by default the connection's own `inboxPrefix` option (see connectNats), else `_INBOX`.
   */
  constructor(nc: NatsConnection, opts: { ownsConnection?: boolean; infra?: Infra; inboxPrefix?: string } = {}) {
    this.nc = nc;
    this.js = jetstream(nc);
    // nats.js keeps its connect options on the connection; its own request inboxes use the same prefix
    const connPrefix = (nc as { options?: { inboxPrefix?: string } }).options?.inboxPrefix;
    this.inbox = createInbox(opts.inboxPrefix ?? connPrefix);
    this.ownsConnection = opts.ownsConnection ?? false;
    this.infraP = opts.infra ? Promise.resolve(opts.infra) : null;
    void this.failPendingOnDisconnect();
  }

  /**
   * A sync caller whose connection to NATS stays down will not get its reply (core NATS does not queue for a
   * disconnected subscriber), so once the connection has been down for DISCONNECT_GRACE_MS the pending calls fail
   * with NATS_UNAVAILABLE (503) instead of waiting out their timeouts, and new calls are refused until it is back.
   * The grace matters: nats.js also drops and re-opens a connection it thinks stale (missed pings, e.g. while a
   * long ORT run blocks the event loop); such a blip reconnects at once and its callers still get their replies.
   */
  private async failPendingOnDisconnect(): Promise<void> {
    let grace: NodeJS.Timeout | undefined;
    try {
      for await (const s of this.nc.status()) {
        if (s.type === "reconnect") {
          clearTimeout(grace);
          grace = undefined;
          this.disconnected = false;
        } else if (s.type === "disconnect" && !grace) {
          grace = setTimeout(() => this.failPending(), DISCONNECT_GRACE_MS);
          grace.unref();
        }
      }
    } catch {
      // the status iterator ends with the connection
    } finally {
      clearTimeout(grace);
    }
  }

  private failPending(): void {
    this.disconnected = true;
    const lost = [...this.pending];
    this.pending.clear();
    for (const [id, p] of lost) {
      clearTimeout(p.timer);
      p.reject(new JobError("NATS_UNAVAILABLE", `NATS is unavailable: the connection dropped while job ${id} was running; its result is lost`, { retryable: true }));
    }
  }

  private infra(): Promise<Infra> {
    this.infraP ??= openInfra(this.nc, loadConfig());
    return this.infraP;
  }

  /**
   * Connects to NATS and returns a client that closes the connection on `close()`. `nats`: credentials, TLS and
   * inbox prefix (the `nats` part of jetshard's config); a NATS user of role `client` may only publish jobs and
   * read its own inbox, which is all `infer` needs.
   * @throws ConfigError for inconsistent settings (a certificate without its key...).
   */
  static async connect(servers: string[] | string, nats: NatsSettings = {}): Promise<JetshardClient> {
    const nc = await connectNats({ natsServers: Array.isArray(servers) ? servers : [servers], nats }, "jetshard-client");
    return new JetshardClient(nc, { ownsConnection: true });
  }

  private ensureSubscribed(): void {
    if (this.sub) return;
    this.sub = this.nc.subscribe(`${this.inbox}.*`, {
      callback: (err, msg) => {
        if (err) return;
        const id = msg.subject.slice(this.inbox.length + 1);
        const p = this.pending.get(id);
        if (!p) return;
        if (msg.data.length === 0) {
          // a worker took the direct request; or nobody listens (no responders): send it through JOBS
          const worker = msg.headers?.get(HEADERS.accepted);
          if (worker) p.worker = worker;
          else if (msg.headers?.code === 503) p.viaJobs?.();
          return;
        }
        this.pending.delete(id);
        clearTimeout(p.timer);
        try {
          p.resolve(resultFromMessage(msg.data));
        } catch (e) {
          p.reject(e as Error);
        }
      },
    });
  }

  /**
   * Publishes a job for `model` to JetStream and waits for its result.
   * Throws the job's JobError, or JobError TIMEOUT after `timeoutMs`.
   */
  async infer(model: string, inputs: Tensor[], opts: InferOptions = {}): Promise<InferResult> {
    if (this.disconnected) throw new JobError("NATS_UNAVAILABLE", `NATS is unavailable (not connected); job for model "${model}" not sent: try again shortly`, { retryable: true });
    this.ensureSubscribed();
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const id = opts.jobId ?? nuid.next();
    const reply = `${this.inbox}.${id}`;
    let pending!: Pending;
    const result = new Promise<InferResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new JobError("TIMEOUT", `no result for job ${id} on model "${model}" within ${timeoutMs} ms`));
      }, timeoutMs);
      pending = { resolve, reject, timer };
      this.pending.set(id, pending);
    });
    // a deadline shorter than the publish rejects `result` before anyone awaits it (or after a failed publish
    // dropped it): mark it handled so that is not an unhandled rejection, which would end the process
    result.catch(() => undefined);
    const fail = (err: unknown) => {
      if (this.pending.get(id) !== pending) return;
      clearTimeout(pending.timer);
      this.pending.delete(id);
      pending.reject(err as Error);
    };
    try {
      const job = await this.buildJob(model, inputs, { ...opts, jobId: id, timeoutMs }, reply);
      if (opts.direct === false) {
        await this.sendJob(model, id, job);
      } else {
        let sent = false;
        pending.viaJobs = () => {
          if (sent || this.pending.get(id) !== pending) return;
          sent = true;
          this.sendJob(model, id, job).catch(fail);
        };
        pending.sentAt = Date.now();
        // the reply subject also gets the server's "no responders" status when no worker serves the model now
        this.nc.publish(subjects.direct(model), job.frame, { headers: job.headers, reply });
        this.watchDirect();
      }
    } catch (err) {
      fail(err);
      throw err;
    }
    return result;
  }

  private directTimer: NodeJS.Timeout | null = null;
  private readonly pinging = new Set<string>();

  /**
   * While direct requests are pending, checks on them every DIRECT_CHECK_MS: one no worker took is re-sent
   * through JOBS; for one a worker took, that worker is pinged, and when it is gone (no responders: its connection
   * closed, e.g. SIGKILL) everything it held is re-sent through JOBS. A worker too busy to answer the ping is
   * alive: its callers keep waiting. Re-sending is safe: a request's result is taken once, and JOBS dedups by id.
   */
  private watchDirect(): void {
    if (this.directTimer) return;
    this.directTimer = setInterval(() => {
      const now = Date.now();
      const byWorker = new Map<string, Pending[]>();
      let direct = 0;
      for (const p of this.pending.values()) {
        if (!p.viaJobs || p.sentAt === undefined) continue;
        direct++;
        if (now - p.sentAt < DIRECT_CHECK_MS) continue;
        if (!p.worker) p.viaJobs();
        else byWorker.set(p.worker, [...(byWorker.get(p.worker) ?? []), p]);
      }
      for (const [worker, held] of byWorker) {
        if (this.pinging.has(worker) || this.disconnected) continue;
        this.pinging.add(worker);
        this.nc
          .request(subjects.ping(worker), undefined, { timeout: DIRECT_CHECK_MS })
          .catch((err) => {
            const gone = err instanceof natsErrors.NoRespondersError || (err instanceof natsErrors.RequestError && err.isNoResponders());
            if (gone) for (const p of held) p.viaJobs?.();
          })
          .finally(() => this.pinging.delete(worker));
      }
      if (direct === 0 && this.directTimer) {
        clearInterval(this.directTimer);
        this.directTimer = null;
      }
    }, DIRECT_CHECK_MS / 2);
    this.directTimer.unref();
  }

  /**
   * Queues an async job, tracked in the `jobs` bucket (status, attempts, timestamps), and returns at once;
   * read it later with `job(id)` / `result(id)`. With an idempotency key, a resubmission returns the existing job.
   * Throws JobError QUEUE_FULL (429) when the model's queue is full.
   */
  async submit(model: string, inputs: Tensor[], opts: SubmitOptions = {}): Promise<Submitted> {
    const infra = await this.infra();
    const tenant = opts.tenant ?? DEFAULT_TENANT;
    const id = opts.jobId ?? (opts.idempotencyKey ? jobIdFromKey(tenant, opts.idempotencyKey) : nuid.next());
    // every step below is idempotent (the job id is the JetStream dedup id, a second create finds the first's
    // record), so a leader election or a lost server is ridden out by asking again
    const retryUntil = Date.now() + SUBMIT_RETRY_MS;
    if (opts.idempotencyKey || opts.jobId) {
      const existing = await retryTransient(() => getJob(infra, id), retryUntil);
      if (existing) return { id, record: existing.record, replayed: true };
    }
    const queuedAt = Date.now();
    const record: JobRecord = {
      id,
      model,
      ...(opts.version !== undefined ? { version: opts.version } : {}),
      status: "queued",
      priority: opts.priority ?? "normal",
      attempts: 0,
      queuedAt,
      ...(opts.timeoutMs ? { deadline: queuedAt + opts.timeoutMs } : {}),
      ...(opts.requestId !== undefined ? { requestId: opts.requestId } : {}),
      tenant,
    };
    // the record and the message are written at once, not one after the other (one round trip, not two): a worker
    // that reads the job before its record exists creates it from the message (see the job runtime's claim), and
    // whichever create comes second sees the first one's record
    const [published, created] = await Promise.allSettled([
      this.buildJob(model, inputs, { ...opts, jobId: id, tenant }, undefined, true).then((job) => retryTransient(() => this.sendJob(model, id, job), retryUntil)),
      retryTransient(() => createJob(infra, record), retryUntil),
    ]);
    if (published.status === "rejected") {
      // not queued: a record left behind would say "queued" for ever
      if (created.status === "fulfilled" && created.value !== null) await infra.jobs.delete(id).catch(() => undefined);
      throw published.reason;
    }
    if (created.status === "rejected") throw created.reason;
    if (created.value === null) {
      // a worker already claimed it (or a concurrent resubmission won): report what is stored
      const stored = await retryTransient(() => getJob(infra, id), retryUntil);
      return { id, record: stored?.record ?? record, replayed: Boolean(opts.idempotencyKey) && stored?.record.queuedAt !== queuedAt };
    }
    return { id, record, replayed: false };
  }

  /** The job's record, or null. */
  async job(id: string): Promise<JobRecord | null> {
    const rec = (await getJob(await this.infra(), id))?.record;
    return rec ? publicRecord(rec) : null;
  }

  /**
   * The stored result of a job, or null when there is none (yet). `record`: the job's record when the caller has
   * it (e.g. from a watch of the `jobs` bucket), which holds small results itself: then nothing is read.
   */
  async result(id: string, record?: JobRecord): Promise<InferResult | null> {
    const rec = record ?? (await getJob(await this.infra(), id).catch(() => null))?.record;
    const bytes = await jobResultBytes(id, rec, () =>
      // one manager for the client: creating one per call costs a round trip (its account check)
      (this.jsmP ??= jetstreamManager(this.nc).catch((err) => {
        this.jsmP = null;
        throw err;
      })),
    );
    return bytes ? resultFromMessage(bytes) : null;
  }

  /**
   * Builds a job message. Inputs too big for one NATS message go through the claim-check store: the message then
   * carries only the claim (workers fetch the frame, and delete it once the job left the queue).
   */
  private async buildJob(model: string, inputs: Tensor[], opts: InferOptions & { jobId: string }, reply: string | undefined, track = false): Promise<BuiltJob> {
    const meta: JobMeta = {
      kind: "job",
      id: opts.jobId,
      model,
      ...(opts.version !== undefined ? { version: opts.version } : {}),
      ...(opts.requestId !== undefined ? { requestId: opts.requestId } : {}),
      ...(opts.outputs ? { outputs: opts.outputs } : {}),
      ...(opts.parameters ? { parameters: opts.parameters } : {}),
      submittedAt: Date.now(),
    };
    const headers = writeEnvelope({
      jobId: opts.jobId,
      reply,
      replyOnly: Boolean(reply && !opts.storeResult),
      deadline: opts.timeoutMs ? Date.now() + opts.timeoutMs : undefined,
      track,
      priority: opts.priority,
      tenant: opts.tenant,
    });
    const subject = opts.priority === "high" ? subjects.inferHigh(model) : subjects.infer(model);
    // the frame header is JSON: a value nested too deep would overflow JSON.stringify's stack
    if (opts.parameters !== undefined && !withinDepth(opts.parameters, MAX_PARAMETER_DEPTH)) {
      throw new JobError("BAD_REQUEST", `parameters: must not nest deeper than ${MAX_PARAMETER_DEPTH} levels`);
    }
    let frame = encodeFrame(meta, inputs);
    // room for the headers and the frame's own header
    const room = (this.nc.info?.max_payload ?? 1024 * 1024) - 16 * 1024;
    if (frame.byteLength > room) {
      const claim = `${opts.jobId}.0`;
      const infra = await this.infra().catch((err) => {
        throw new JobError("PAYLOAD_TOO_LARGE", `job for model "${model}" is ${frame.byteLength} bytes, more than one NATS message holds (${room}), and the claims store is not reachable with these credentials: ${(err as Error).message}`, { cause: err });
      });
      try {
        await infra.claims.putBlob({ name: claim, options: { max_chunk_size: Math.min(1024 * 1024, room) } }, frame);
      } catch (err) {
        const mapped = fromNatsError(err);
        if (mapped) throw new JobError(mapped.code, `could not store the inputs of job ${opts.jobId} (${frame.byteLength} bytes): ${mapped.message}`, { retryable: true, cause: err });
        throw new JobError("PAYLOAD_TOO_LARGE", `job for model "${model}" is ${frame.byteLength} bytes and its inputs could not be stored in the claims store: ${(err as Error).message}`, { cause: err });
      }
      frame = encodeFrame({ ...meta, claim }, []);
    }
    return { subject, frame, headers };
  }

  /** Sends a built job through JOBS (dedup id: the job id); returns its stream sequence. */
  private async sendJob(model: string, id: string, job: BuiltJob): Promise<number> {
    try {
      const ack = await this.js.publish(job.subject, job.frame, { msgID: id, headers: job.headers });
      return ack.seq;
    } catch (err) {
      // a stream limit with discard new (max bytes, messages per subject) or a server out of resources: back off
      if (err instanceof JetStreamApiError && (err.code === JS_API_CODES.storeFailed || err.code === JS_API_CODES.insufficientResources)) {
        throw new JobError("QUEUE_FULL", `queue for model "${model}" is full`, { retryable: true, cause: err });
      }
      const mapped = fromNatsError(err);
      if (mapped?.code === "PAYLOAD_TOO_LARGE") throw new JobError("PAYLOAD_TOO_LARGE", `job for model "${model}" exceeds the queue's message size limit`, { cause: err });
      if (mapped) throw new JobError(mapped.code, `could not queue the job for model "${model}": ${mapped.message}`, { retryable: true, cause: err });
      const msg = err instanceof Error ? err.message : String(err);
      throw new JobError("INTERNAL", `could not publish job for model "${model}": ${msg}`, { cause: err, retryable: true });
    }
  }

  /** Stops listening for results; closes the NATS connection if this client opened it. */
  async close(): Promise<void> {
    if (this.directTimer) clearInterval(this.directTimer);
    this.directTimer = null;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new JobError("INTERNAL", `client closed before job ${id} finished`));
    }
    this.pending.clear();
    this.sub?.unsubscribe();
    this.sub = null;
    if (this.ownsConnection) await this.nc.drain();
  }
}
