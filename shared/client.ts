/**
 * A small typed client for talking to jetshard straight over NATS, without the gateway.
 * The gateway and the CLI use it too.
 *
 *   const client = await JetshardClient.connect(["nats://127.0.0.1:4222"]);
 *   const res = await client.infer("demo-mlp", [{ name: "input", datatype: "FP32", shape: [1, 4], data: Float32Array.of(1, 2, 3, 4) }]);
 *   console.log(res.outputs[0].data);
 */
import { nuid, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamClient } from "@nats-io/jetstream";
import { JobError } from "./errors.js";
import { decodeResult, throwIfFailed } from "./results.js";
import { STREAMS, subjects } from "./subjects.js";
import { writeEnvelope } from "./envelope.js";
import type { Tensor } from "./tensor.js";
import { encodeFrame, type JobMeta } from "./wire.js";
import { connectNats, openInfra, type Infra } from "./nats.js";
import { loadConfig } from "./config.js";
import { createJob, getJob, jobIdFromKey, type JobRecord } from "./jobs.js";

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
}

export interface SubmitOptions extends InferOptions {
  /** Makes a resubmission return the existing job instead of running it twice. */
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
}

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

  constructor(nc: NatsConnection, opts: { ownsConnection?: boolean; infra?: Infra } = {}) {
    this.nc = nc;
    this.js = jetstream(nc);
    this.inbox = `_INBOX.jetshard.${nuid.next()}`;
    this.ownsConnection = opts.ownsConnection ?? false;
    this.infraP = opts.infra ? Promise.resolve(opts.infra) : null;
  }

  private infra(): Promise<Infra> {
    this.infraP ??= openInfra(this.nc, loadConfig());
    return this.infraP;
  }

  /** Connects to NATS and returns a client that closes the connection on `close()`. */
  static async connect(servers: string[] | string): Promise<JetshardClient> {
    const nc = await connectNats(Array.isArray(servers) ? servers : [servers], "jetshard-client");
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
    this.ensureSubscribed();
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const id = opts.jobId ?? nuid.next();
    const result = new Promise<InferResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new JobError("TIMEOUT", `no result for job ${id} on model "${model}" within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
    });
    try {
      await this.publishJob(model, inputs, { ...opts, jobId: id, timeoutMs }, `${this.inbox}.${id}`);
    } catch (err) {
      const p = this.pending.get(id);
      if (p) {
        clearTimeout(p.timer);
        this.pending.delete(id);
      }
      throw err;
    }
    return result;
  }

  /**
   * Queues an async job, tracked in the `jobs` bucket (status, attempts, timestamps), and returns at once;
   * read it later with `job(id)` / `result(id)`. With an idempotency key, a resubmission returns the existing job.
   * Throws JobError QUEUE_FULL (429) when the model's queue is full.
   */
  async submit(model: string, inputs: Tensor[], opts: SubmitOptions = {}): Promise<Submitted> {
    const infra = await this.infra();
    const id = opts.jobId ?? (opts.idempotencyKey ? jobIdFromKey(opts.idempotencyKey) : nuid.next());
    if (opts.idempotencyKey || opts.jobId) {
      const existing = await getJob(infra, id);
      if (existing) return { id, record: existing.record, replayed: true };
    }
    const queuedAt = Date.now();
    const seq = await this.publishJob(model, inputs, { ...opts, jobId: id }, undefined, true);
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
      seq,
    };
    if ((await createJob(infra, record)) === null) {
      // a worker already claimed it (or a concurrent resubmission won): report what is stored
      const stored = await getJob(infra, id);
      return { id, record: stored?.record ?? record, replayed: Boolean(opts.idempotencyKey) && stored?.record.queuedAt !== queuedAt };
    }
    return { id, record, replayed: false };
  }

  /** The job's record, or null. */
  async job(id: string): Promise<JobRecord | null> {
    return (await getJob(await this.infra(), id))?.record ?? null;
  }

  /** The stored result of a job, or null when there is none (yet). */
  async result(id: string): Promise<InferResult | null> {
    const jsm = await jetstreamManager(this.nc);
    const msg = await jsm.streams.getMessage(STREAMS.results, { last_by_subj: subjects.result(id) }).catch(() => null);
    return msg ? resultFromMessage(msg.data) : null;
  }

  private async publishJob(model: string, inputs: Tensor[], opts: InferOptions & { jobId: string }, reply: string | undefined, track = false): Promise<number> {
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
    const h = writeEnvelope({
      reply,
      replyOnly: Boolean(reply && !opts.storeResult),
      deadline: opts.timeoutMs ? Date.now() + opts.timeoutMs : undefined,
      track,
      priority: opts.priority,
    });
    const subject = opts.priority === "high" ? subjects.inferHigh(model) : subjects.infer(model);
    try {
      const ack = await this.js.publish(subject, encodeFrame(meta, inputs), { msgID: opts.jobId, headers: h });
      return ack.seq;
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      if (/maximum (bytes|messages)|per subject|resource limits|10077|insufficient resources/i.test(msg)) {
        throw new JobError("QUEUE_FULL", `queue for model "${model}" is full`, { retryable: true, cause: err });
      }
      if (/max.?payload|payload.*(too large|exceeded)/i.test(msg)) {
        throw new JobError("PAYLOAD_TOO_LARGE", `job for model "${model}" exceeds the NATS max payload`, { cause: err });
      }
      throw new JobError("INTERNAL", `could not publish job for model "${model}": ${msg}`, { cause: err, retryable: true });
    }
  }

  /** Stops listening for results; closes the NATS connection if this client opened it. */
  async close(): Promise<void> {
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
