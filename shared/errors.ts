import { JetStreamApiError, JetStreamError } from "@nats-io/jetstream";
import { JetStreamStatusError, jserrors } from "@nats-io/jetstream/internal";
import { errors as natsErrors } from "@nats-io/transport-node";

/**
 * One error type for everything that can go wrong with a job or a request.
 * `retryable` decides nak-with-delay versus terminal failure; never guess it from the message text.
 */
export type ErrorCode =
  | "BAD_REQUEST"
  | "UNAUTHORIZED"
  | "FORBIDDEN"
  | "QUOTA_EXCEEDED"
  | "INPUT_MISSING"
  | "INPUT_DATATYPE"
  | "INPUT_SHAPE"
  | "INPUT_DATA"
  | "OUTPUT_UNKNOWN"
  | "MODEL_NOT_FOUND"
  | "MODEL_INVALID"
  | "MODEL_UNAVAILABLE"
  | "PAYLOAD_TOO_LARGE"
  | "NO_WORKER"
  | "TIMEOUT"
  | "DEADLINE_EXCEEDED"
  | "QUEUE_FULL"
  | "NATS_UNAVAILABLE"
  | "MAX_ATTEMPTS"
  | "CANCELLED"
  | "CONFLICT"
  | "JOB_NOT_FOUND"
  | "INFERENCE_FAILED"
  | "INTERNAL";

const HTTP_STATUS: Record<ErrorCode, number> = {
  BAD_REQUEST: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  QUOTA_EXCEEDED: 429,
  INPUT_MISSING: 400,
  INPUT_DATATYPE: 400,
  INPUT_SHAPE: 400,
  INPUT_DATA: 400,
  OUTPUT_UNKNOWN: 400,
  MODEL_NOT_FOUND: 404,
  MODEL_INVALID: 400,
  MODEL_UNAVAILABLE: 503,
  PAYLOAD_TOO_LARGE: 413,
  NO_WORKER: 503,
  TIMEOUT: 504,
  DEADLINE_EXCEEDED: 504,
  QUEUE_FULL: 429,
  NATS_UNAVAILABLE: 503,
  MAX_ATTEMPTS: 500,
  CANCELLED: 409,
  CONFLICT: 409,
  JOB_NOT_FOUND: 404,
  INFERENCE_FAILED: 500,
  INTERNAL: 500,
};

export class JobError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string, opts: { retryable?: boolean; cause?: unknown } = {}) {
    super(message, { cause: opts.cause });
    this.name = "JobError";
    this.code = code;
    this.retryable = opts.retryable ?? false;
  }

  /** The HTTP status the gateway answers with for this error. */
  get status(): number {
    return HTTP_STATUS[this.code];
  }

  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

export function isErrorCode(x: unknown): x is ErrorCode {
  // own keys only: "constructor" or "toString" are not codes
  return typeof x === "string" && Object.hasOwn(HTTP_STATUS, x);
}

/** Wraps anything thrown into a JobError, keeping JobErrors as they are. */
export function toJobError(err: unknown, fallback: ErrorCode = "INTERNAL"): JobError {
  if (err instanceof JobError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new JobError(fallback, message, { cause: err });
}

/** JetStream API error codes (`api_error.err_code`) jetshard decides on. */
export const JS_API_CODES = {
  /** A stream or consumer the service relies on is missing. */
  consumerNotFound: 10014,
  streamNotFound: 10059,
  /** Compare-and-set lost: someone else wrote first. */
  wrongLastSequence: 10071,
  wrongLastSequenceUnknown: 10164,
  /** A stream limit refused the message (max_msgs, max_bytes, per subject, with discard new). */
  storeFailed: 10077,
  insufficientResources: 10047,
  /** The message is larger than the stream's max_msg_size. */
  messageTooLarge: 10054,
} as const;

/**
 * JetStream API error codes a cluster answers while it loses a server or elects a leader (stream, consumer or
 * meta group): the request was fine, asked again a moment later it goes through. Their HTTP-like status is 500
 * (not 503), so they are listed by code.
 */
export const JS_TRANSIENT_CODES: ReadonlySet<number> = new Set([
  10004, // incomplete results (a peer did not answer)
  10007, // JetStream cluster not assigned to this server
  10008, // JetStream system temporarily unavailable
  10009, // not the leader: JetStream cluster can not handle request
  10075, // peer remap failed
  10118, // stream is offline
  10119, // consumer is offline
]);

/**
 * Maps an error thrown by nats.js (core, JetStream, KV, object store) to the JobError the API answers with:
 * a request timeout, no responders (nats.js reports a JetStream request nobody answers, e.g. a stream without a
 * leader during an election, as JetStreamNotEnabled), a closed, draining or disconnected connection, a JetStream
 * API error with a 503 status, one of a cluster's transient codes (JS_TRANSIENT_CODES: not leader, stream offline,
 * ...), "stream/consumer not found" (a bucket's stream unknown to a node that just rejoined), or a pull status
 * 503/408 become NATS_UNAVAILABLE (503, retryable); a lost compare-and-set becomes CONFLICT (409); a message over a
 * stream's size limit PAYLOAD_TOO_LARGE (413). Decides by error class and JetStream `err_code`, never by text.
 * Returns null for anything else (a JobError included), which stays the caller's to handle.
 */
export function fromNatsError(err: unknown): JobError | null {
  if (err instanceof JobError || !(err instanceof Error)) return null;
  const unavailable = (what: string) => new JobError("NATS_UNAVAILABLE", `NATS is unavailable (${what}); try again shortly`, { retryable: true, cause: err });
  if (err instanceof JetStreamApiError) {
    const code = err.code;
    if (code === JS_API_CODES.wrongLastSequence || code === JS_API_CODES.wrongLastSequenceUnknown) {
      return new JobError("CONFLICT", "a concurrent update won; try again", { retryable: true, cause: err });
    }
    if (code === JS_API_CODES.messageTooLarge) return new JobError("PAYLOAD_TOO_LARGE", "the message exceeds the stream's size limit", { cause: err });
    if (code === JS_API_CODES.streamNotFound || code === JS_API_CODES.consumerNotFound) return unavailable(`JetStream error ${code}`);
    if (JS_TRANSIENT_CODES.has(code) || err.status === 503 || err.status === 408) return unavailable(`JetStream error ${code}`);
    return null;
  }
  if (err instanceof jserrors.JetStreamNotEnabled) return unavailable("JetStream did not answer");
  if (err instanceof JetStreamStatusError && (err.code === 503 || err.code === 408)) return unavailable(`JetStream status ${err.code}`);
  if (err instanceof natsErrors.TimeoutError) return unavailable("request timed out");
  if (err instanceof natsErrors.NoRespondersError) return unavailable("no responders");
  if (err instanceof natsErrors.RequestError) {
    // a permission violation is a misconfiguration (ours), not an outage
    if (err.cause instanceof natsErrors.PermissionViolationError) return null;
    // "connection disconnected", "connection closed", or no responders wrapped as its cause
    return unavailable(err.isNoResponders() ? "no responders" : "request failed");
  }
  if (err instanceof natsErrors.ClosedConnectionError) return unavailable("connection closed");
  if (err instanceof natsErrors.DrainingConnectionError) return unavailable("connection draining");
  if (err instanceof natsErrors.ConnectionError) return unavailable("connection error");
  // a JetStream error wrapping one of the above (a KV or object store call that failed on its request)
  if (err instanceof JetStreamError && err.cause !== undefined && err.cause !== err) return fromNatsError(err.cause);
  return null;
}

/** True for an error that says "NATS is unavailable right now" (NATS_UNAVAILABLE, raw or mapped): worth a retry. */
export function isTransient(err: unknown): boolean {
  const e = err instanceof JobError ? err : fromNatsError(err);
  return e?.code === "NATS_UNAVAILABLE";
}

/**
 * Runs `fn`, retrying it while it fails with a transient NATS error (isTransient: a leader election, a lost
 * server, a reconnect) until `deadline` (epoch ms), backing off from 50 ms up to 1 s between tries. Only for
 * idempotent calls (a publish with a dedup id, a create that tolerates "already exists"). Throws the last error
 * once the deadline would pass, and any other error at once.
 */
export async function retryTransient<T>(fn: () => Promise<T>, deadline: number): Promise<T> {
  for (let delay = 50; ; delay = Math.min(delay * 2, 1000)) {
    try {
      return await fn();
    } catch (err) {
      if (!isTransient(err) || Date.now() + delay >= deadline) throw err;
    }
    await new Promise((r) => setTimeout(r, delay));
  }
}

/**
 * A short, safe description of any JSON value for an error message: never recurses (so a value nested a million
 * deep cannot overflow the stack) and never exceeds about `max` characters.
 */
export function preview(v: unknown, max = 40): string {
  if (v === undefined) return "undefined";
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (v !== null && typeof v === "object") return "an object";
  if (typeof v === "bigint") return `${v}n`.slice(0, max);
  if (typeof v === "function" || typeof v === "symbol") return typeof v;
  const s = JSON.stringify(v) ?? String(v);
  return s.length > max ? `${s.slice(0, max)}…` : s;
}
