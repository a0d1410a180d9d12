import { JetStreamApiError } from "@nats-io/jetstream";
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

/** Names of nats.js errors that mean "NATS could not be reached or did not answer": nothing wrong with the request. */
const UNAVAILABLE_ERRORS = new Set(["JetStreamNotEnabled"]);

/**
 * Maps an error thrown by nats.js (core, JetStream, KV, object store) to the JobError the API answers with:
 * a request timeout, no responders, a closed, draining or disconnected connection, or a JetStream API error with a
 * 503 status become NATS_UNAVAILABLE (503, retryable); a lost compare-and-set becomes CONFLICT (409); a message over
 * a stream's size limit PAYLOAD_TOO_LARGE (413). Decides by error class and JetStream `err_code`, never by text.
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
    if (err.status === 503 || err.status === 408) return unavailable(`JetStream error ${code}`);
    return null;
  }
  if (err instanceof natsErrors.TimeoutError) return unavailable("request timed out");
  if (err instanceof natsErrors.NoRespondersError) return unavailable("no responders");
  if (err instanceof natsErrors.RequestError) {
    // "connection disconnected", "connection closed", or a timeout / no responders wrapped as its cause
    return unavailable(err.isNoResponders() ? "no responders" : "request failed");
  }
  if (err instanceof natsErrors.ClosedConnectionError) return unavailable("connection closed");
  if (err instanceof natsErrors.DrainingConnectionError) return unavailable("connection draining");
  if (err instanceof natsErrors.ConnectionError) return unavailable("connection error");
  if (UNAVAILABLE_ERRORS.has(err.name)) return unavailable("JetStream did not answer");
  return null;
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
