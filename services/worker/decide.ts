/**
 * What to do with a job message once its processing ended: the job runtime's one retry policy, as a pure
 * function so every rule has a unit test. Temporal's retry policy is the model: attempts, exponential backoff
 * with a cap, and errors that are not retried decided by their code (`JobError.retryable`), never their text.
 */
import { JobError } from "#shared/errors.js";

export interface RetryPolicy {
  /** Runs that may fail with a retryable error before the job fails terminally (config.maxAttempts). */
  maxAttempts: number;
  /** Deliveries of one message at most, crash redeliveries and NATS outages included (config.maxDeliver). */
  maxDeliver: number;
  /** First retry delay, ms (config.retryBaseMs); doubles per attempt. */
  baseMs: number;
  /** Longest retry delay, ms. */
  capMs: number;
}

/** Longest retry delay: 30 s. */
export const RETRY_CAP_MS = 30_000;

/** The retry policy jetshard's config sets. */
export function retryPolicy(config: { maxAttempts: number; maxDeliver: number; retryBaseMs: number }): RetryPolicy {
  return { maxAttempts: config.maxAttempts, maxDeliver: config.maxDeliver, baseMs: config.retryBaseMs, capMs: RETRY_CAP_MS };
}

/** Backoff before retry number `attempt` (1-based): base, 2×base, 4×base … capped. */
export function backoffMs(policy: Pick<RetryPolicy, "baseMs" | "capMs">, attempt: number): number {
  return Math.min(policy.baseMs * 2 ** Math.max(0, attempt - 1), policy.capMs);
}

/** How processing a message ended. */
export type Outcome =
  /** The work is done (a result to publish, or a next hop already published). */
  | { kind: "succeeded" }
  /** Nothing to do: the job is already finished or cancelled. */
  | { kind: "skipped"; reason: string }
  /** The job must not run and nobody waits for an answer (its NAS experiment was stopped): it leaves the queue. */
  | { kind: "dropped"; reason: string }
  /** Handed back unfinished so another worker takes it now (this one is stopping). */
  | { kind: "released"; reason: string }
  | { kind: "failed"; error: JobError }
  /** The answer (result or dead letter) could not be made durable, so the message must not leave the queue. */
  | { kind: "unrecorded"; step: "dead-letter" | "result" | "record"; error: unknown };

const STEP = { "dead-letter": "the dead letter", result: "the result", record: "the job record" } as const;

export interface DecideInput {
  outcome: Outcome;
  /** This delivery's number (1-based; JetStream's delivery count). */
  attempt: number;
  policy: RetryPolicy;
  /** The worker is draining: retryable work goes back at once. */
  stopping: boolean;
  /** Epoch ms now. */
  now: number;
  /** The job's deadline, epoch ms. */
  deadline?: number;
  /** A caller waits on a reply subject. */
  reply: boolean;
  /** The job has a record in the `jobs` bucket. */
  track: boolean;
}

export type Decision =
  /** Publish the result (if any) and record it, then ack. */
  | { action: "complete" }
  | { action: "ack"; reason: string }
  /** Remove the message without an answer. */
  | { action: "term"; reason: string }
  /** Redeliver after `delayMs` (0: at once). */
  | { action: "nak"; delayMs: number; reason: string }
  /** Terminal failure: dead letter copy first (when `deadLetter`), then reply, stored result, job record, term. */
  | { action: "fail"; error: JobError; deadLetter: boolean };

/** Decides a message's fate. Pure: the same input always gives the same decision. */
export function decide(input: DecideInput): Decision {
  const { outcome: o, attempt, policy, stopping } = input;
  switch (o.kind) {
    case "succeeded":
      return { action: "complete" };
    case "skipped":
      return { action: "ack", reason: o.reason };
    case "dropped":
      return { action: "term", reason: o.reason };
    case "released":
      return { action: "nak", delayMs: 0, reason: o.reason };
    case "unrecorded":
      // the copy (or the result) is not durable: keep the job; a later delivery (or the advisory) answers it
      return { action: "nak", delayMs: stopping ? 0 : backoffMs(policy, attempt), reason: `could not store ${STEP[o.step]}` };
    case "failed":
      return decideFailure(o.error, input);
  }
}

function decideFailure(error: JobError, input: DecideInput): Decision {
  const { attempt, policy, stopping, now, deadline } = input;
  if (error.retryable) {
    // NATS trouble is not the job's fault: it does not count against maxAttempts, only against maxDeliver
    const nats = error.code === "NATS_UNAVAILABLE";
    const canRetry = attempt < policy.maxDeliver && (nats || stopping || attempt < policy.maxAttempts);
    if (canRetry) {
      const delayMs = stopping ? 0 : backoffMs(policy, nats ? 1 : attempt);
      if (deadline !== undefined && now + delayMs > deadline) {
        return terminal(new JobError("DEADLINE_EXCEEDED", `job passed its deadline before it could be retried: ${error.message}`, { cause: error }), input);
      }
      const reason = stopping ? "handed back while draining" : nats ? "NATS unavailable; will be redelivered" : "retryable failure; will be redelivered";
      return { action: "nak", delayMs, reason };
    }
    const runs = nats || attempt >= policy.maxDeliver ? `${attempt} deliveries` : `${attempt} attempts`;
    return terminal(new JobError(error.code, `failed after ${runs}: ${error.message}`, { cause: error }), input);
  }
  return terminal(error, input);
}

/**
 * A sync caller waiting on its reply subject already gets its 4xx: dead-letter what nobody else will see (no
 * reply, or a tracked job) and everything that is our fault (5xx). A missed deadline is never dead-lettered.
 */
function terminal(error: JobError, input: DecideInput): Decision {
  const deadLetter = error.code !== "DEADLINE_EXCEEDED" && (error.status >= 500 || input.track || !input.reply);
  return { action: "fail", error, deadLetter };
}

/** The error of a job whose deliveries ran out before any of them finished (its workers died or stalled). */
export function exhaustedError(jobId: string, deliveries: number): JobError {
  return new JobError("MAX_ATTEMPTS", `job ${jobId} was delivered ${deliveries} times without finishing (workers crashed or timed out)`);
}
