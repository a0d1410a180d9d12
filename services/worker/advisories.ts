/**
 * Dead-letters jobs that ran out of deliveries. JetStream stops delivering such a job and says so only in a
 * core-NATS advisory; jetshard keeps those advisories in a work-queue stream, and every worker shares one durable
 * consumer on it, so each is handled once even when no worker was up when it was emitted. Handling one: copy the
 * job to DLQ, record the failure (result and job record), then delete the job from JOBS.
 */
import { AckPolicy, type ConsumerMessages } from "@nats-io/jetstream";
import { deadLetter } from "#shared/dlq.js";
import { JobError } from "#shared/errors.js";
import { TERMINAL, newJobRecord, updateJob } from "#shared/jobs.js";
import type { Logger } from "#shared/log.js";
import type { Infra } from "#shared/nats.js";
import { encodeResult } from "#shared/results.js";
import { HEADERS, STREAMS, isReplySubject, subjects } from "#shared/subjects.js";
import { isFrame } from "#shared/wire.js";

export interface AdvisoryProcessor {
  start(): Promise<void>;
  stop(): Promise<void>;
}

const CONSUMER = "max_deliveries";

export function createAdvisoryProcessor({ infra, log: root, workerId }: { infra: Infra; log: Logger; workerId: string }): AdvisoryProcessor {
  const log = root.child({ component: "advisories" });
  let msgs: ConsumerMessages | null = null;

  async function handle(advisory: { stream?: string; stream_seq?: number; deliveries?: number; consumer?: string }): Promise<void> {
    if (advisory.stream !== STREAMS.jobs || !advisory.stream_seq) return;
    const sm = await infra.jsm.streams.getMessage(STREAMS.jobs, { seq: advisory.stream_seq }).catch(() => null);
    if (!sm) return; // acked after all, or already handled
    const jobId = sm.header?.get(HEADERS.jobId) || sm.header?.get(HEADERS.msgId) || `${STREAMS.jobs}-${sm.seq}`;
    const model = sm.subject.split(".")[2] ?? "unknown";
    const attempts = advisory.deliveries ?? 0;
    const error = new JobError("MAX_ATTEMPTS", `job ${jobId} was delivered ${attempts} times without finishing (workers crashed or timed out)`);
    await deadLetter(infra, { jobId, subject: sm.subject, data: sm.data, headers: sm.header, error, attempts });
    const meta = { kind: "result" as const, id: jobId, model, ok: false, error: error.toJSON(), worker: workerId, attempt: attempts };
    const body = encodeResult(isFrame(sm.data) ? "frame" : "json", meta, []);
    const reply = sm.header?.get(HEADERS.reply);
    if (reply && isReplySubject(reply)) infra.nc.publish(reply, body);
    await infra.js.publish(subjects.result(jobId), body, { msgID: `result-${jobId}` });
    if (sm.header?.get(HEADERS.track) === "1") {
      await updateJob(infra, jobId, (r) => (r && TERMINAL.has(r.status) ? null : { ...(r ?? newJobRecord(jobId, model)), status: "failed", attempts, error: error.toJSON(), finishedAt: Date.now() }));
    }
    await infra.jsm.streams.deleteMessage(STREAMS.jobs, sm.seq).catch(() => undefined);
    log.warn({ jobId, attempts, consumer: advisory.consumer }, "job dead-lettered after max deliveries");
  }

  return {
    async start() {
      try {
        await infra.jsm.consumers.info(STREAMS.advisories, CONSUMER);
      } catch {
        await infra.jsm.consumers.add(STREAMS.advisories, { durable_name: CONSUMER, ack_policy: AckPolicy.Explicit, ack_wait: 30_000_000_000 }).catch(() => undefined);
      }
      const consumer = await infra.js.consumers.get(STREAMS.advisories, CONSUMER);
      msgs = await consumer.consume({ max_messages: 8, expires: 10_000 });
      void (async () => {
        for await (const m of msgs!) {
          try {
            await handle(m.json());
            m.ack();
          } catch (err) {
            log.warn({ err }, "could not handle a max-deliveries advisory; retrying later");
            m.nak(5_000);
          }
        }
      })().catch((err) => log.error({ err }, "advisory loop ended"));
    },
    async stop() {
      await msgs?.close().catch(() => undefined);
    },
  };
}
