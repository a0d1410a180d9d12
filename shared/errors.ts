/**
 * One error type for everything that can go wrong with a job or a request.
 * `retryable` decides nak-with-delay versus terminal failure; never guess it from the message text.
 */
export type ErrorCode =
  | "BAD_REQUEST"
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
  return typeof x === "string" && x in HTTP_STATUS;
}

/** Wraps anything thrown into a JobError, keeping JobErrors as they are. */
export function toJobError(err: unknown, fallback: ErrorCode = "INTERNAL"): JobError {
  if (err instanceof JobError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new JobError(fallback, message, { cause: err });
}
