/**
 * Dead letters: a job that failed terminally (out of attempts, or poison) is copied into the DLQ stream,
 * original bytes and headers intact plus its error, before it leaves JOBS. On nats-server 2.9 a terminated
 * message is deleted from a work-queue stream at once, so the copy must come first.
 */
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/transport-node";
import type { JobError } from "./errors.js";
import type { Infra } from "./nats.js";
import { HEADERS, STREAMS, subjects } from "./subjects.js";

const STREAMS_DLQ = STREAMS.dlq;

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
  /**
   * JOBS stream sequence of the failing message: part of the dead letter's dedup id, so redeliveries of one message
   * are copied once while the same job failing again after a replay (a new message) is copied again.
   */
  seq: number;
}

/** `Nats-Msg-Id` of a dead letter: one per failing JOBS message. */
export function deadLetterMsgId(jobId: string, seq: number): string {
  return `dlq-${jobId}-${seq}`;
}

/**
 * The DLQ subject for a job subject: jetshard.infer.m → jetshard.dlq.infer.m (so one filter lists a model's).
 */
export function dlqSubjectFor(subject: string): string {
  return subject.startsWith(`${subjects.root}.`) ? `${subjects.root}.dlq.${subject.slice(subjects.root.length + 1)}` : subjects.dlq(subject);
}

/** Copies a failed job into DLQ (deduplicated per JOBS message). Throws if the copy is not stored: then do not term(). */
export async function deadLetter(infra: Infra, d: DeadLetterInput): Promise<void> {
  const h = natsHeaders();
  for (const [k, vs] of d.headers ?? []) for (const v of vs) if (k !== "Nats-Msg-Id") h.append(k, v);
  h.set(DLQ_HEADERS.originalSubject, d.subject);
  h.set(DLQ_HEADERS.errorCode, d.error.code);
  h.set(DLQ_HEADERS.error, d.error.message.replace(/[\r\n]+/g, " ").slice(0, 1000));
  h.set(DLQ_HEADERS.attempts, String(d.attempts));
  h.set(DLQ_HEADERS.jobId, d.jobId);
  h.set(DLQ_HEADERS.failedAt, new Date().toISOString());
  await infra.js.publish(dlqSubjectFor(d.subject), d.data, { msgID: deadLetterMsgId(d.jobId, d.seq), headers: h });
}

export interface DeadLetterEntry {
  /** The job id. */
  id: string;
  /** DLQ stream sequence. */
  seq: number;
  subject: string;
  model: string;
  code: string;
  error: string;
  attempts: number;
  failedAt: string;
  bytes: number;
  /** The tenant that submitted the job, when the gateway did. */
  tenant?: string;
}

function entryOf(m: { seq: number; header?: MsgHdrs; data: Uint8Array; subject: string }): DeadLetterEntry {
  const h = m.header;
  const subject = h?.get(DLQ_HEADERS.originalSubject) || m.subject;
  return {
    id: h?.get(DLQ_HEADERS.jobId) || `dlq-${m.seq}`,
    seq: m.seq,
    subject,
    model: subject.split(".")[2] ?? "",
    code: h?.get(DLQ_HEADERS.errorCode) || "INTERNAL",
    error: h?.get(DLQ_HEADERS.error) || "",
    attempts: Number(h?.get(DLQ_HEADERS.attempts) || 0),
    failedAt: h?.get(DLQ_HEADERS.failedAt) || "",
    bytes: m.data.byteLength,
    ...(h?.get(HEADERS.tenant) ? { tenant: h.get(HEADERS.tenant) } : {}),
  };
}

/** Which dead letters a caller may see and act on (e.g. its own tenant's); all when absent. */
export type DeadLetterFilter = (e: DeadLetterEntry) => boolean;

/** Dead letters, newest first (at most `limit`), optionally for one model and those `allow` admits. */
export async function listDeadLetters(infra: Infra, opts: { model?: string; limit?: number; allow?: DeadLetterFilter } = {}): Promise<DeadLetterEntry[]> {
  const info = await infra.jsm.streams.info(STREAMS_DLQ);
  const out: DeadLetterEntry[] = [];
  for (let seq = info.state.last_seq; seq >= info.state.first_seq && seq > 0 && out.length < (opts.limit ?? 1000); seq--) {
    const m = await infra.jsm.streams.getMessage(STREAMS_DLQ, { seq }).catch(() => null);
    if (!m) continue;
    const e = entryOf(m);
    if ((!opts.model || e.model === opts.model) && (!opts.allow || opts.allow(e))) out.push(e);
  }
  return out;
}

/** The newest dead letter with this id that `allow` admits, or null (a hidden one is as absent as a missing one). */
async function findDeadLetter(infra: Infra, id: string, allow?: DeadLetterFilter) {
  const info = await infra.jsm.streams.info(STREAMS_DLQ);
  for (let seq = info.state.last_seq; seq >= info.state.first_seq && seq > 0; seq--) {
    const m = await infra.jsm.streams.getMessage(STREAMS_DLQ, { seq }).catch(() => null);
    if (m && (m.header?.get(DLQ_HEADERS.jobId) === id || `dlq-${m.seq}` === id)) return !allow || allow(entryOf(m)) ? m : null;
  }
  return null;
}

/**
 * Publishes a dead letter's original job again (same job id, fresh attempts) and removes it from DLQ.
 * `beforePublish` runs first (to reset the job's record).
 * Returns the replayed entry, or null when there is no such dead letter.
 */
export async function replayDeadLetter(infra: Infra, id: string, beforePublish?: (e: DeadLetterEntry) => Promise<void>, allow?: DeadLetterFilter): Promise<DeadLetterEntry | null> {
  const m = await findDeadLetter(infra, id, allow);
  if (!m) return null;
  const e = entryOf(m);
  const h = natsHeaders();
  const dlqKeys = new Set<string>(Object.values(DLQ_HEADERS));
  for (const [k, vs] of m.header ?? []) for (const v of vs) if (!dlqKeys.has(k) && k !== "Nats-Msg-Id") h.append(k, v);
  h.set(DLQ_HEADERS.jobId, e.id);
  h.delete("Jetshard-Deadline"); // a replay is a fresh run
  // reset the job's record first: a worker may take the replayed job the moment it is published
  await beforePublish?.(e);
  await infra.js.publish(e.subject, m.data, { msgID: `${e.id}:replay:${m.seq}`, headers: h });
  await infra.jsm.streams.deleteMessage(STREAMS_DLQ, m.seq);
  return e;
}

/** Deletes a dead letter; false when there is none. */
export async function deleteDeadLetter(infra: Infra, id: string, allow?: DeadLetterFilter): Promise<boolean> {
  const m = await findDeadLetter(infra, id, allow);
  if (!m) return false;
  await infra.jsm.streams.deleteMessage(STREAMS_DLQ, m.seq);
  return true;
}
