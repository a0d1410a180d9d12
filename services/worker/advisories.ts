/**
 * Dead-letters jobs that ran out of deliveries. JetStream stops delivering such a job and says so only in a
 * core-NATS advisory; jetshard keeps those advisories in a work-queue stream, and every worker shares one durable
 * consumer on it, so each is handled once even when no worker was up when it was emitted. Handling one reads the
 * job back from JOBS and fails it through the job runtime's terminal-failure path, with the processor of its kind
 * (inference result or NAS trial event): dead letter, answer, job record, then it is deleted from JOBS.
 */
import { jobIdOf } from "#shared/envelope.js";
import { JobError } from "#shared/errors.js";
import type { Logger } from "#shared/log.js";
import type { Infra } from "#shared/nats.js";
import { STREAMS } from "#shared/subjects.js";
import { exhaustedError, type RetryPolicy } from "./decide.js";
import { createJobRuntime, finishStored, holdStored, openConsumer, transient, type JobRef, type JobRuntime, type Processor } from "./job-runtime.js";

export interface AdvisoryProcessor {
  start(): Promise<void>;
  stop(): Promise<void>;
}

const CONSUMER = "max_deliveries";

interface MaxDeliveriesAdvisory {
  stream?: string;
  stream_seq?: number;
  deliveries?: number;
  consumer?: string;
}

interface AdvisoryJob extends JobRef {
  advisory: MaxDeliveriesAdvisory | null;
}

export interface AdvisoryDeps {
  infra: Infra;
  log: Logger;
  workerId: string;
  policy: RetryPolicy;
  /** The processor whose terminal path answers a job on `subject` (inference or NAS trial). */
  processorFor: (subject: string) => Processor<any, any>;
}

export function createAdvisoryProcessor({ infra, log: root, workerId, policy, processorFor }: AdvisoryDeps): AdvisoryProcessor {
  const log = root.child({ component: "advisories" });
  // an advisory is never given up on: its job would stay in JOBS, undelivered and unanswered
  const forever: RetryPolicy = { ...policy, maxAttempts: Infinity, maxDeliver: Infinity };
  const lifecycle = { infra, log, workerId, policy };

  const processor: Processor<AdvisoryJob, never> = {
    name: "advisories",
    parse(held) {
      let advisory: MaxDeliveriesAdvisory | null = null;
      try {
        advisory = JSON.parse(new TextDecoder().decode(held.data)) as MaxDeliveriesAdvisory;
      } catch {
        // not an advisory: nothing to do
      }
      return { id: `advisory-${held.seq}`, model: "", entry: false, advisory };
    },
    async run({ advisory }) {
      if (!advisory || advisory.stream !== STREAMS.jobs || !advisory.stream_seq) return { kind: "skipped", reason: "not a JOBS max-deliveries advisory" };
      const seq = advisory.stream_seq;
      const sm = await transient(() => infra.jsm.streams.getMessage(STREAMS.jobs, { seq }), "reading the job back");
      if (!sm) return { kind: "skipped", reason: "job already answered" };
      const held = holdStored(infra, sm, advisory.deliveries ?? 0);
      const jobId = jobIdOf(held.env, sm.seq);
      try {
        await finishStored(lifecycle, processorFor(sm.subject), held, exhaustedError(jobId, held.attempt));
      } catch (err) {
        throw new JobError("NATS_UNAVAILABLE", `could not dead-letter job ${jobId}: ${(err as Error).message}`, { retryable: true, cause: err });
      }
      log.warn({ job: jobId, attempts: held.attempt, consumer: advisory.consumer }, "job dead-lettered after max deliveries");
      return { kind: "succeeded" };
    },
    async publish() {
      // an advisory has no answer of its own
    },
  };

  let runtime: JobRuntime | null = null;
  return {
    async start() {
      runtime = createJobRuntime({ name: "advisories", infra, log, workerId, policy: forever, ackWaitMs: 30_000, concurrency: 4, processor });
      await runtime.add({
        key: CONSUMER,
        open: () => openConsumer(infra, STREAMS.advisories, CONSUMER, { ack_wait: 30_000_000_000 }),
        fetch: { mode: "stream", buffer: 8 },
        expiresMs: 10_000,
        restart: true,
      });
    },
    async stop() {
      await runtime?.stop();
    },
  };
}
