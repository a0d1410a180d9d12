/**
 * What the job-queue harness (jobs.ts) and its worker peers (job-peer.ts) agree on: queue, stream and subject
 * names, and the two job kinds.
 */

/** The job kinds: "noop" returns its one-value input; "small" runs the bench's `small` MLP on 784 inputs. */
export const JOB_KINDS = ["noop", "small"] as const;
export type JobKind = (typeof JOB_KINDS)[number];

/** BullMQ queue the peer consumes; a job's name is its kind, its data `{ input: number[] }`. */
export const BULLMQ_QUEUE = "bench-jobs";

/** The raw JetStream reference: stream, subjects (one per kind), the worker's durable consumer, the reply header. */
export const RAW = {
  stream: "BENCH_RAW",
  subject: (kind: JobKind) => `bench.raw.${kind}`,
  subjects: "bench.raw.>",
  consumer: "bench-raw-worker",
  replyHeader: "reply",
} as const;
