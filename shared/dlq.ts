/**
 * Dead letters: a job that failed terminally (out of attempts, or poison) is copied into the DLQ stream,
 * original bytes and headers intact plus its error, before it leaves JOBS. On nats-server 2.9 a terminated
 * message is deleted from a work-queue stream at once, so the copy must come first.
 */
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/transport-node";
import type { JobError } from "./errors.js";
import type { Infra } from "./nats.js";
import { subjects } from "./subjects.js";

export const DLQ_HEADERS = {
  originalSubject: "Jetshard-Original-Subject",
  errorCode: "Jetshard-Error-Code",
  error: "Jetshard-Error",
  attempts: "Jetshard-Attempts",
  jobId: "Jetshard-Job-Id",
  failedAt: "Jetshard-Failed-At",
} as const;

export interface DeadLetterInput {
  jobId: string;
  /** The job's subject, e.g. jetshard.infer.m or jetshard.nas.exp1. */
  subject: string;
  data: Uint8Array;
  headers?: MsgHdrs;
  error: JobError;
  attempts: number;
}

/**
 * The DLQ subject for a job subject: jetshard.infer.m → jetshard.dlq.infer.m (so one filter lists a model's).
 */
export function dlqSubjectFor(subject: string): string {
  return subject.startsWith(`${subjects.root}.`) ? `${subjects.root}.dlq.${subject.slice(subjects.root.length + 1)}` : subjects.dlq(subject);
}

/** Copies a failed job into DLQ (deduplicated by job id). Throws if the copy is not stored: then do not term(). */
export async function deadLetter(infra: Infra, d: DeadLetterInput): Promise<void> {
  const h = natsHeaders();
  for (const [k, vs] of d.headers ?? []) for (const v of vs) if (k !== "Nats-Msg-Id") h.append(k, v);
  h.set(DLQ_HEADERS.originalSubject, d.subject);
  h.set(DLQ_HEADERS.errorCode, d.error.code);
  h.set(DLQ_HEADERS.error, d.error.message.replace(/[\r\n]+/g, " ").slice(0, 1000));
  h.set(DLQ_HEADERS.attempts, String(d.attempts));
  h.set(DLQ_HEADERS.jobId, d.jobId);
  h.set(DLQ_HEADERS.failedAt, new Date().toISOString());
  await infra.js.publish(dlqSubjectFor(d.subject), d.data, { msgID: `dlq-${d.jobId}`, headers: h });
}
