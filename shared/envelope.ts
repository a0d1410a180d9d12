/**
 * The envelope of a job message: what its subject and headers say, read and written in one place. Every
 * producer (client, gateway, worker forwarding a pipeline hop, dead-letter replay) and every consumer (the
 * worker's job runtime, the max-deliveries advisory handler) goes through `readEnvelope` / `writeEnvelope` and
 * `parseJobSubject`, so a header is spelled, parsed and validated once.
 */
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/transport-node";
import { HEADERS, STREAMS, isReplySubject } from "./subjects.js";

export type Priority = "high" | "normal";

export interface Envelope {
  /** `Nats-Msg-Id`: the dedup key of this message; everything it produces derives its own from it. */
  msgId?: string;
  /** `Jetshard-Job-Id`: the job this message belongs to, when it differs from the message id (pipeline hops, replays). */
  jobId?: string;
  /** `Jetshard-Reply`: a core NATS subject a caller waits on for the result. */
  reply?: string;
  /** `Jetshard-Deadline`: epoch ms after which the job is not run. */
  deadline?: number;
  /** `Jetshard-Priority`. */
  priority: Priority;
  /** `Jetshard-Track: 1`: the job has a record in the `jobs` bucket (async jobs). */
  track: boolean;
  /** `Jetshard-Result: reply`: only the reply subject needs the result; it is not stored in RESULTS. */
  replyOnly: boolean;
  /** `Jetshard-Model-Version`, as sent (validated where it is used). */
  modelVersion?: string;
  /** `Jetshard-Tenant`: the tenant that submitted the job (set by the gateway); kept on every hop and dead letter. */
  tenant?: string;
  /** A `Jetshard-Reply` outside `_INBOX.` that was dropped: workers never publish to a subject a header picks. */
  ignoredReply?: string;
  /** What is wrong with the headers, naming the header; the job fails with BAD_REQUEST when set. */
  problem?: string;
}

/** Reads a message's envelope. Never throws: a malformed header is reported in `problem`. */
export function readEnvelope(h: MsgHdrs | undefined): Envelope {
  const get = (k: string) => h?.get(k) || undefined;
  const env: Envelope = { priority: "normal", track: false, replyOnly: false };
  const problems: string[] = [];
  const msgId = get(HEADERS.msgId);
  if (msgId) env.msgId = msgId;
  const jobId = get(HEADERS.jobId);
  if (jobId) env.jobId = jobId;
  const reply = get(HEADERS.reply);
  if (reply && isReplySubject(reply)) env.reply = reply;
  else if (reply) env.ignoredReply = reply;
  const tenant = get(HEADERS.tenant);
  if (tenant) env.tenant = tenant;
  const deadline = get(HEADERS.deadline);
  if (deadline !== undefined) {
    const n = Number(deadline);
    if (Number.isFinite(n) && n > 0) env.deadline = n;
    else problems.push(`header ${HEADERS.deadline}: ${JSON.stringify(deadline.slice(0, 40))} is not epoch milliseconds`);
  }
  const priority = get(HEADERS.priority);
  if (priority === "high") env.priority = "high";
  else if (priority !== undefined && priority !== "normal") problems.push(`header ${HEADERS.priority}: ${JSON.stringify(priority.slice(0, 40))} is not "high" or "normal"`);
  env.track = get(HEADERS.track) === "1";
  env.replyOnly = get(HEADERS.result) === "reply";
  const version = get(HEADERS.modelVersion);
  if (version !== undefined) env.modelVersion = version;
  if (problems.length) env.problem = problems.join("; ");
  return env;
}

/** Writes an envelope into headers (a fresh set unless `into` is given). Unset fields are left out. */
export function writeEnvelope(env: Partial<Omit<Envelope, "problem" | "ignoredReply">>, into: MsgHdrs = natsHeaders()): MsgHdrs {
  if (env.msgId) into.set(HEADERS.msgId, env.msgId);
  if (env.jobId) into.set(HEADERS.jobId, env.jobId);
  if (env.reply) into.set(HEADERS.reply, env.reply);
  if (env.deadline !== undefined) into.set(HEADERS.deadline, String(env.deadline));
  if (env.priority === "high") into.set(HEADERS.priority, "high");
  if (env.track) into.set(HEADERS.track, "1");
  if (env.replyOnly) into.set(HEADERS.result, "reply");
  if (env.modelVersion !== undefined) into.set(HEADERS.modelVersion, env.modelVersion);
  if (env.tenant) into.set(HEADERS.tenant, env.tenant);
  return into;
}

/**
 * The id of the job a message belongs to: `Jetshard-Job-Id`, else its `Nats-Msg-Id`, else `JOBS-<seq>` (a
 * message published without either).
 */
export function jobIdOf(env: Envelope, seq: number): string {
  return env.jobId || env.msgId || `${STREAMS.jobs}-${seq}`;
}

/** What a JOBS subject addresses. */
export type JobSubject =
  | { kind: "infer"; model: string; stage: 0; priority: Priority }
  | { kind: "stage"; model: string; stage: number; priority: Priority }
  | { kind: "nas"; experiment: string };

/**
 * Parses a JOBS subject: `jetshard.infer.<m>[.high]`, `jetshard.stage.<m>.<i>` (i ≥ 1) or `jetshard.nas.<exp>`.
 * Returns null for anything else.
 */
export function parseJobSubject(subject: string): JobSubject | null {
  const t = subject.split(".");
  if (t[0] !== "jetshard" || !t[2]) return null;
  if (t[1] === "infer" && (t.length === 3 || (t.length === 4 && t[3] === "high"))) {
    return { kind: "infer", model: t[2], stage: 0, priority: t[3] === "high" ? "high" : "normal" };
  }
  if (t[1] === "stage" && t.length === 4 && /^[1-9]\d{0,5}$/.test(t[3]!)) return { kind: "stage", model: t[2], stage: Number(t[3]), priority: "normal" };
  if (t[1] === "nas" && t.length === 3) return { kind: "nas", experiment: t[2] };
  return null;
}
