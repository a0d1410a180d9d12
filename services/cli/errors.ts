/**
 * What the `jetshard` command exits with, defined once: scripts branch on these (see `jetshard --help` and the
 * README), and every error a command throws is mapped to one of them by `exitCodeFor`.
 */
import { errors as natsErrors } from "@nats-io/transport-node";
import { ConfigError } from "#shared/config.js";
import { JobError, fromNatsError } from "#shared/errors.js";
import { NatsPermissionError, permissionViolation } from "#shared/nats.js";

/** Exit codes of `jetshard`. */
export const EXIT = {
  /** It worked. */
  ok: 0,
  /** It ran and failed: a job or experiment failed, something named was not found, a conflict. */
  failure: 1,
  /** The command line or configuration is wrong: an unknown command or flag, a bad value (the message names it). */
  usage: 2,
  /** NATS (or the gateway) could not be reached. Retrying later may help. */
  unavailable: 3,
  /** NATS refused the credentials or a subject (nats-auth.conf), or HTTP answered 401/403. */
  permission: 4,
} as const;
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** The exit codes as `--help` and the README list them. */
export const EXIT_CODES_HELP = `Exit codes:
  0  ok
  1  failure: a job or experiment failed, something named was not found, a conflict
  2  usage: unknown command or flag, bad value or configuration (the message names it)
  3  unavailable: cannot reach NATS (or the gateway)
  4  permission denied: NATS refused the credentials or a subject, HTTP 401/403`;

/** A wrong command line or argument; the message names the flag or argument. Exit 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** Something named on the command line does not exist (a job, model, key, experiment). Exit 1. */
export class NotFoundError extends Error {
  override name = "NotFoundError";
}

/** The command ran and failed: a conflict (stopping a finished experiment), a job that failed. Exit 1. */
export class FailedError extends Error {
  override name = "FailedError";
}

/** NATS or the gateway could not be reached. Exit 3. */
export class UnavailableError extends Error {
  override name = "UnavailableError";
}

/** NATS or the gateway refused this caller. Exit 4. */
export class PermissionDeniedError extends Error {
  override name = "PermissionDeniedError";
}

/** Whether `err` (or a cause of it) is NATS rejecting the credentials. */
function authRejected(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e instanceof natsErrors.AuthorizationError) return true;
  }
  return false;
}

/** The exit code for an error a command threw. */
export function exitCodeFor(err: unknown): ExitCode {
  if (err instanceof UsageError || err instanceof ConfigError) return EXIT.usage;
  if (err instanceof NotFoundError || err instanceof FailedError) return EXIT.failure;
  if (err instanceof UnavailableError) return EXIT.unavailable;
  if (err instanceof PermissionDeniedError || err instanceof NatsPermissionError) return EXIT.permission;
  if (authRejected(err) || permissionViolation(err)) return EXIT.permission;
  if (err instanceof JobError) {
    if (err.code === "UNAUTHORIZED" || err.code === "FORBIDDEN") return EXIT.permission;
    if (err.code === "NATS_UNAVAILABLE") return EXIT.unavailable;
    // the caller's input was refused (400, 413): a usage error; 404, 409, 429 and 5xx are failures
    return err.status === 400 || err.status === 413 ? EXIT.usage : EXIT.failure;
  }
  // a NATS request that timed out or found the connection closed mid-command
  if (fromNatsError(err)?.code === "NATS_UNAVAILABLE") return EXIT.unavailable;
  return EXIT.failure;
}

/** Whether an error is expected (its message says it all) rather than a bug (print the stack). */
export function isExpected(err: unknown): boolean {
  return (
    err instanceof UsageError ||
    err instanceof NotFoundError ||
    err instanceof FailedError ||
    err instanceof UnavailableError ||
    err instanceof PermissionDeniedError ||
    err instanceof ConfigError ||
    err instanceof JobError ||
    err instanceof NatsPermissionError ||
    authRejected(err) ||
    permissionViolation(err) !== null
  );
}
