/**
 * The one error type of the NAS library: a spec, search space or point that cannot be used.
 */
import type { z } from "zod";

/**
 * A bad experiment spec, search space or sampled point. Never retryable: the input has to change.
 * `field` is the path of the offending value (`searchSpace.depth._type`, `evaluator.metrics[1]`),
 * `detail` the message without the path; `message` is `${field}: ${detail}`.
 */
export class NasSpecError extends Error {
  readonly code = "NAS_SPEC" as const;
  readonly retryable = false;
  readonly field: string;
  readonly detail: string;

  constructor(field: string, detail: string, options?: { cause?: unknown }) {
    super(`${field}: ${detail}`, options);
    this.name = "NasSpecError";
    this.field = field;
    this.detail = detail;
  }
}

/** Formats a path as `a.b[2].c`; `root` is prefixed (and used alone for an empty path). */
export function formatPath(root: string, path: readonly PropertyKey[]): string {
  let out = root;
  for (const p of path) {
    if (typeof p === "number") out += `[${p}]`;
    else out += out === "" ? String(p) : `.${String(p)}`;
  }
  return out === "" ? "spec" : out;
}

/**
 * Turns the first issue of a zod error into a NasSpecError with a short, path-named message.
 * Custom issues keep their own message; the common built-in codes get a plain-English one.
 */
export function fromZodError(err: z.ZodError, root: string): NasSpecError {
  const issue = err.issues[0];
  if (!issue) return new NasSpecError(root || "spec", "invalid");
  const { path, message } = describeIssue(issue);
  return new NasSpecError(formatPath(root, path), message, { cause: err });
}

/**
 * A zod issue as a path and a short message (`must be >= 1`, `unknown field`, ...); custom issues keep
 * their own message. Lets nested validations re-emit issues as custom ones without losing wording.
 */
export function describeIssue(issue: z.core.$ZodIssue): { path: PropertyKey[]; message: string } {
  if (issue.code === "unrecognized_keys") return { path: [...issue.path, issue.keys[0] ?? "?"], message: "unknown field" };
  return { path: [...issue.path], message: issueMessage(issue) };
}

function issueMessage(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case "invalid_type": {
      if (issue.input === undefined) return "is required";
      if (issue.expected === "int") return "must be an integer";
      if (issue.expected === "record") return "must be an object";
      const article = /^[aeiou]/.test(issue.expected) ? "an" : "a";
      return `must be ${article} ${issue.expected}`;
    }
    case "too_small": {
      const n = Number(issue.minimum);
      if (issue.origin === "array") return `must have at least ${n} item${n === 1 ? "" : "s"}`;
      if (issue.origin === "string") return n === 1 ? "must not be empty" : `must have at least ${n} characters`;
      return `must be ${issue.inclusive ? ">=" : ">"} ${n}`;
    }
    case "too_big": {
      const n = Number(issue.maximum);
      if (issue.origin === "array") return `must have at most ${n} item${n === 1 ? "" : "s"}`;
      if (issue.origin === "string") return `must have at most ${n} characters`;
      return `must be ${issue.inclusive ? "<=" : "<"} ${n}`;
    }
    case "invalid_value":
      return `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}`;
    default:
      return issue.message;
  }
}
