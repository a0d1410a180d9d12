/**
 * Evaluates NAS trials published on jetshard.nas.<experiment>, through the one durable pull consumer
 * `nas_trials` that every trial-evaluating worker shares. Each of `nasConcurrency` slots pulls one trial
 * at a time (so a pulled trial starts at once and never waits out its ack deadline in a buffer) and runs
 * it in its own evaluator process (nas-evaluator.ts), which can be killed at any moment.
 *
 * Every trial message is answered exactly once:
 * - success / early stop: `done` event published to RESULTS (deduplicated by trial id), then ack;
 * - retryable failure with attempts left: nak with backoff;
 * - otherwise: `done` event with the reason, dead letter, then term;
 * - its experiment was stopped or ended: term, no result (a resume publishes it again);
 * - the worker drains: nak, so another worker takes it now.
 * A worker that dies mid-trial leaves the message unacked: JetStream redelivers it after ack_wait. The
 * consumer allows one delivery more than `maxDeliver`, and that extra delivery only records the failure,
 * so a trial whose workers keep dying still ends `failed` instead of staying `running` forever.
 */
import { AckPolicy, DeliverPolicy, type Consumer, type JsMsg } from "@nats-io/jetstream";
import type { Subscription } from "@nats-io/transport-node";
import type { JetshardConfig } from "#shared/config.js";
import { deadLetter } from "#shared/dlq.js";
import { JobError } from "#shared/errors.js";
import type { Logger } from "#shared/log.js";
import { NasStore } from "#shared/nas/store.js";
import { isCustomEvaluator, type EvaluatorSpec } from "#shared/nas/spec.js";
import {
  ControlMessageSchema,
  FINAL_EXPERIMENT_STATUSES,
  TRIALS_CONSUMER,
  TrialJobSchema,
  nasSubjects,
  type TrialEvent,
  type TrialJob,
} from "#shared/nas/wire.js";
import type { Infra } from "#shared/nats.js";
import { HEADERS, STREAMS } from "#shared/subjects.js";
import { executionProviders, type DeviceInfo } from "./device.js";
import { EvaluatorUnavailable, resolveCustomEvaluator } from "./evaluator-registry.js";
import { EvaluatorProcess, type EvalOutcome } from "./nas-evaluator.js";

export interface TrialRunnerDeps {
  infra: Infra;
  config: JetshardConfig;
  log: Logger;
  workerId: string;
  device: DeviceInfo;
}

export interface TrialRunner {
  start(): Promise<void>;
  /** Stops fetching and waits for running trials to finish or be handed back. */
  stop(): Promise<void>;
  /** Trials running now. */
  busy(): number;
}

const ns = (ms: number) => ms * 1_000_000;
/** Backoff before a retryable failure is redelivered: 1 s, 2 s, 4 s … capped at 30 s. */
const retryDelayMs = (attempt: number) => Math.min(1000 * 2 ** Math.max(0, attempt - 1), 30_000);
/** How long one pull waits for a trial; also the longest `stop()` waits for an idle slot. */
const PULL_EXPIRES_MS = 2_000;

/** Why a running evaluation was abandoned. */
type AbortReason = { kind: "early_stop" | "stop" | "drain"; reason: string };

function eventBytes(ev: TrialEvent): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(ev));
}

export function createTrialRunner({ infra, config, log: rootLog, workerId, device }: TrialRunnerDeps): TrialRunner {
  const log = rootLog.child({ component: "nas-runner" });
  const deviceName = `${device.kind}: ${device.name}`;
  const providers = executionProviders(device);
  const slots = Array.from({ length: config.nasConcurrency }, () => new EvaluatorProcess(log));
  /** Running trials by `<exp>.<trialId>`. */
  const running = new Map<string, AbortController>();
  let store!: NasStore;
  let consumer!: Consumer;
  let control: Subscription | null = null;
  /** What each slot is handling now (null while it is idle or pulling). */
  const handling: Array<Promise<void> | null> = slots.map(() => null);
  let stopping = false;

  async function ensureConsumer(): Promise<void> {
    try {
      await infra.jsm.consumers.info(STREAMS.jobs, TRIALS_CONSUMER);
      return;
    } catch {
      // create below
    }
    try {
      await infra.jsm.consumers.add(STREAMS.jobs, {
        durable_name: TRIALS_CONSUMER,
        filter_subject: nasSubjects.trialsAll,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        ack_wait: ns(config.ackWaitMs),
        // one more than the attempts: the last delivery only records that the attempts ran out
        max_deliver: config.maxDeliver + 1,
        max_ack_pending: 10_000,
      });
    } catch (err) {
      await infra.jsm.consumers.info(STREAMS.jobs, TRIALS_CONSUMER).catch(() => {
        throw err;
      });
    }
  }

  function onControl(subject: string, data: Uint8Array): void {
    const parsed = ControlMessageSchema.safeParse(safeJson(data));
    if (!parsed.success) return;
    const [exp, trial] = subject.slice(nasSubjects.control("").length).split(".");
    const reason: AbortReason = { kind: parsed.data.action, reason: parsed.data.reason };
    for (const [key, ac] of running) {
      if (trial ? key === `${exp}.${trial}` : key.startsWith(`${exp}.`)) ac.abort(reason);
    }
  }

  async function publishEvent(ev: TrialEvent, msgID?: string): Promise<void> {
    await infra.js.publish(nasSubjects.event(ev.experimentId, ev.trialId, ev.kind), eventBytes(ev), msgID ? { msgID } : undefined);
  }

  async function hasResult(job: TrialJob): Promise<boolean> {
    const m = await infra.jsm.streams.getMessage(STREAMS.results, { last_by_subj: nasSubjects.event(job.experimentId, job.trialId, "done") }).catch(() => null);
    return m !== null;
  }

  /** Records a failed trial: result, dead letter, term. On a storage failure, hands the job back instead. */
  async function fail(m: JsMsg, job: TrialJob, error: string, base: Omit<TrialEvent & { kind: "done" }, "kind" | "status" | "error">): Promise<void> {
    try {
      await publishEvent({ kind: "done", status: "failed", error, ...base }, `nas-done-${job.experimentId}-${job.trialId}`);
      await deadLetter(infra, {
        jobId: m.headers?.get(HEADERS.msgId) || `${STREAMS.jobs}-${m.seq}`,
        subject: m.subject,
        data: m.data,
        headers: m.headers,
        error: new JobError("INFERENCE_FAILED", error),
        attempts: m.info.deliveryCount,
      });
      m.term();
    } catch (err) {
      log.warn({ err, trial: job.trialId }, "could not record a failed trial; it will be redelivered");
      m.nak(retryDelayMs(m.info.deliveryCount));
    }
  }

  async function handle(m: JsMsg, slot: EvaluatorProcess): Promise<void> {
    const attempt = m.info.deliveryCount;
    const parsed = TrialJobSchema.safeParse(safeJson(m.data));
    if (!parsed.success) {
      log.warn({ subject: m.subject, seq: m.seq }, "malformed trial job: dead-lettering it");
      await deadLetter(infra, {
        jobId: m.headers?.get(HEADERS.msgId) || `${STREAMS.jobs}-${m.seq}`,
        subject: m.subject,
        data: m.data,
        headers: m.headers,
        error: new JobError("BAD_REQUEST", `malformed trial job: ${parsed.error.issues[0]?.message ?? "invalid"}`),
        attempts: attempt,
      }).then(
        () => m.term(),
        () => m.nak(retryDelayMs(attempt)),
      );
      return;
    }
    const job = parsed.data;
    const tlog = log.child({ experiment: job.experimentId, trial: job.trialId, attempt });
    const base = { experimentId: job.experimentId, trialId: job.trialId, worker: workerId, attempt, device: deviceName };

    if (attempt > config.maxDeliver) {
      tlog.warn("trial out of attempts after its workers were lost");
      return fail(m, job, `trial abandoned: ${attempt - 1} attempts ended without a result (the workers running it were lost)`, { ...base, at: Date.now(), metrics: {}, intermediate: [], durationMs: 0 });
    }
    const exp = await store.getExperiment(job.experimentId).catch(() => undefined);
    if (exp === undefined) {
      m.nak(retryDelayMs(attempt)); // NATS trouble: try again later
      return;
    }
    if (exp === null || FINAL_EXPERIMENT_STATUSES.includes(exp.value.status)) {
      tlog.info({ status: exp?.value.status ?? "deleted" }, "experiment not running: dropping its trial");
      m.term();
      return;
    }
    // a redelivered (or, after a stop and resume, republished) trial may have finished meanwhile
    if (await hasResult(job)) {
      tlog.info("trial already has a result: not running it again");
      m.ack();
      return;
    }

    const evaluator = job.evaluator as unknown as EvaluatorSpec;
    let modulePath: string | undefined;
    try {
      // a trial job may come from an older gateway or straight from NATS: only registered evaluators run
      if ("module" in evaluator) throw new EvaluatorUnavailable('evaluator.module is no longer supported: name an evaluator registered by the operator, {"custom": "<name>"}');
      if (isCustomEvaluator(evaluator)) modulePath = await resolveCustomEvaluator(config.evaluatorsDir, evaluator.custom);
    } catch (err) {
      if (!(err instanceof EvaluatorUnavailable)) throw err;
      tlog.warn({ reason: err.message }, "trial names an unusable evaluator");
      return fail(m, job, err.message, { ...base, at: Date.now(), metrics: {}, intermediate: [], durationMs: 0 });
    }
    const key = `${job.experimentId}.${job.trialId}`;
    const ac = new AbortController();
    if (stopping) {
      m.nak();
      return;
    }
    running.set(key, ac);
    const intermediate: number[] = [];
    const keepAlive = setInterval(() => m.working(), Math.max(250, config.ackWaitMs / 3));
    const t0 = performance.now();
    let outcome: EvalOutcome;
    try {
      await publishEvent({ kind: "start", ...base, at: Date.now() }, `nas-start-${job.experimentId}-${job.trialId}-${m.seq}-${attempt}`);
      tlog.debug("evaluating trial");
      outcome = await slot.evaluate(
        { job, attempt, modulePath, device: { kind: device.kind, name: device.name }, providers },
        {
          timeoutMs: job.timeoutMs,
          signal: ac.signal,
          onReport: (step, value) => {
            intermediate[step - 1] = value;
            const values = Array.from(intermediate, (v) => v ?? NaN);
            publishEvent({ kind: "report", ...base, at: Date.now(), step, value, values }).catch((err) => tlog.warn({ err }, "could not publish an intermediate result"));
            m.working();
          },
        },
      );
    } catch (err) {
      outcome = { kind: "error", message: (err as Error).message, retryable: true };
    } finally {
      clearInterval(keepAlive);
      running.delete(key);
    }
    const durationMs = Math.round((performance.now() - t0) * 1000) / 1000;
    const values = Array.from(intermediate, (v) => v ?? NaN).filter(Number.isFinite);
    const result = { ...base, at: Date.now(), intermediate: values, durationMs };

    if (outcome.kind === "aborted") {
      const r = outcome.reason as AbortReason;
      if (r.kind === "drain") {
        tlog.info("worker draining: handing the trial back");
        m.nak();
      } else if (r.kind === "stop") {
        tlog.info({ reason: r.reason }, "experiment stopped: dropping the running trial");
        m.term();
      } else {
        tlog.info({ reason: r.reason }, "trial stopped early");
        await publishEvent({ kind: "done", status: "early_stopped", metrics: {}, error: r.reason, ...result }, `nas-done-${job.experimentId}-${job.trialId}`).then(
          () => m.ack(),
          (err) => {
            tlog.warn({ err }, "could not publish the result; the trial will be redelivered");
            m.nak(retryDelayMs(attempt));
          },
        );
      }
      return;
    }
    if (outcome.kind === "ok") {
      // JSON has no -Infinity (a singular NASWOT kernel) or NaN: such a metric is left out, and the
      // controller then judges the trial infeasible ("objective ... is missing or not finite")
      const metrics = Object.fromEntries(Object.entries(outcome.metrics).filter(([, v]) => Number.isFinite(v)));
      await publishEvent({ kind: "done", status: "succeeded", metrics, ...result }, `nas-done-${job.experimentId}-${job.trialId}`).then(
        () => m.ack(),
        (err) => {
          tlog.warn({ err }, "could not publish the result; the trial will be redelivered");
          m.nak(retryDelayMs(attempt));
        },
      );
      return;
    }
    const message = outcome.kind === "timeout" ? `trial timed out after ${outcome.timeoutMs} ms` : outcome.message;
    if (outcome.kind === "error" && outcome.retryable && attempt < config.maxDeliver && !stopping) {
      tlog.warn({ reason: message }, "retryable trial failure; it will be redelivered");
      m.nak(retryDelayMs(attempt));
      return;
    }
    if (outcome.kind === "error" && outcome.retryable && stopping) {
      m.nak();
      return;
    }
    tlog.info({ reason: message }, "trial failed");
    await fail(m, job, message, { ...result, metrics: {} });
  }

  /** One slot: pull a trial, run it, repeat. Resolves when the worker stops (an idle pull is not waited for). */
  async function loop(slot: EvaluatorProcess, index: number): Promise<void> {
    while (!stopping) {
      let m: JsMsg | null;
      try {
        m = await consumer.next({ expires: PULL_EXPIRES_MS });
      } catch (err) {
        if (stopping) break;
        log.warn({ err }, "pulling a trial failed; retrying");
        await new Promise((r) => setTimeout(r, 1_000));
        continue;
      }
      if (!m) continue;
      if (stopping) {
        m.nak();
        break;
      }
      const msg = m;
      const p = handle(msg, slot).catch((err) => {
        log.error({ err }, "trial handling failed; it will be redelivered");
        msg.nak(retryDelayMs(msg.info.deliveryCount));
      });
      handling[index] = p;
      await p;
      handling[index] = null;
    }
  }

  return {
    async start() {
      store = await NasStore.open(infra);
      await ensureConsumer();
      consumer = await infra.js.consumers.get(STREAMS.jobs, TRIALS_CONSUMER);
      control = infra.nc.subscribe(nasSubjects.controlAll, {
        callback: (err, msg) => {
          if (!err) onControl(msg.subject, msg.data);
        },
      });
      slots.forEach((s, i) => void loop(s, i));
      log.info({ slots: slots.length, device: deviceName }, "evaluating NAS trials");
    },
    async stop() {
      if (stopping) return;
      stopping = true;
      for (const ac of running.values()) ac.abort({ kind: "drain", reason: "worker stopping" } satisfies AbortReason);
      // idle slots may sit in a pull for up to PULL_EXPIRES_MS; a trial they get after this is nak'ed
      await Promise.allSettled(handling.filter((p) => p !== null));
      control?.unsubscribe();
      for (const s of slots) s.kill();
    },
    busy: () => running.size,
  };
}

function safeJson(data: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(data));
  } catch {
    return undefined;
  }
}
