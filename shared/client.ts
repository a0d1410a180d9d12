/**
 * A small typed client for talking to jetshard straight over NATS, without the gateway.
 * The gateway and the CLI use it too.
 *
 *   const client = await JetshardClient.connect(["nats://127.0.0.1:4222"]);
 *   const res = await client.infer("demo-mlp", [{ name: "input", datatype: "FP32", shape: [1, 4], data: Float32Array.of(1, 2, 3, 4) }]);
 *   console.log(res.outputs[0].data);
 */
import { headers as natsHeaders, nuid, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamClient } from "@nats-io/jetstream";
import { JobError } from "./errors.js";
import { decodeResult, throwIfFailed } from "./results.js";
import { HEADERS, STREAMS, subjects } from "./subjects.js";
import type { Tensor } from "./tensor.js";
import { encodeFrame, type JobMeta } from "./wire.js";
import { connectNats } from "./nats.js";

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

  constructor(nc: NatsConnection, opts: { ownsConnection?: boolean } = {}) {
    this.nc = nc;
    this.js = jetstream(nc);
    this.inbox = `_INBOX.jetshard.${nuid.next()}`;
    this.ownsConnection = opts.ownsConnection ?? false;
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
   * Publishes a job without waiting for its result; read it later with `result(id)`.
   * Returns the job id. Throws JobError QUEUE_FULL when the stream refuses it.
   */
  async submit(model: string, inputs: Tensor[], opts: InferOptions = {}): Promise<string> {
    const id = opts.jobId ?? nuid.next();
    await this.publishJob(model, inputs, { ...opts, jobId: id }, undefined);
    return id;
  }

  /** The stored result of a job, or null when there is none (yet). */
  async result(id: string): Promise<InferResult | null> {
    const jsm = await jetstreamManager(this.nc);
    const msg = await jsm.streams.getMessage(STREAMS.results, { last_by_subj: subjects.result(id) }).catch(() => null);
    return msg ? resultFromMessage(msg.data) : null;
  }

  private async publishJob(model: string, inputs: Tensor[], opts: InferOptions & { jobId: string }, reply: string | undefined): Promise<void> {
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
    const h = natsHeaders();
    if (reply) h.set(HEADERS.reply, reply);
    if (opts.timeoutMs) h.set(HEADERS.deadline, String(Date.now() + opts.timeoutMs));
    try {
      await this.js.publish(subjects.infer(model), encodeFrame(meta, inputs), { msgID: opts.jobId, headers: h });
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      if (/maximum (bytes|messages)|resource limits|10077|insufficient resources/i.test(msg)) {
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
