/**
 * Evaluates NAS trials published on jetshard.nas.<experiment>, through the one durable pull consumer
 * `nas_trials` that every trial-evaluating worker shares. The job runtime pulls a trial only when one of the
 * `nasConcurrency` slots is free (so a pulled trial starts at once and never waits out its lease in a buffer),
 * and each slot runs it in its own evaluator process (nas-evaluator.ts), which can be killed at any moment.
 *
 * The trial processor's outcomes, answered by the job runtime like any job:
 * - success / early stop: `done` event published to RESULTS (deduplicated by trial id), then ack;
 * - retryable failure: retried under the runtime's retry policy; terminal failure: dead letter, `done` event
 *   with the reason, term (also when its deliveries ran out, through the runtime or the max-deliveries advisory);
 * - its experiment was stopped or ended: term, no result (a resume publishes it again);
 * - it already has a result: ack;
 * - the worker drains: nak, so another worker takes it now.
 */
import type { Subscription } from "@nats-io/transport-node";
import type { JetshardConfig } from "#shared/config.js";
import { jobIdOf } from "#shared/envelope.js";
import { JobError } from "#shared/errors.js";
import type { Logger } from "#shared/log.js";
import { NasStore } from "#shared/nas/store.js";
import { isCustomEvaluator, type EvaluatorSpec } from "#shared/nas/spec.js";
import { ControlMessageSchema, FINAL_EXPERIMENT_STATUSES, TRIALS_CONSUMER, TrialJobSchema, nasSubjects, type TrialEvent, type TrialJob } from "#shared/nas/wire.js";
import type { Infra } from "#shared/nats.js";
import { STREAMS } from "#shared/subjects.js";
import { retryPolicy } from "./decide.js";
import { executionProviders, type DeviceInfo } from "./device.js";
import { createJobRuntime, jobConsumerConfig, openConsumer, type Held, type JobRef, type JobRuntime, type Processor } from "./job-runtime.js";
import { EvaluatorProcess, type EvalOutcome } from "./nas-evaluator.js";
import { EvaluatorUnavailable, resolveCustomEvaluator } from "./evaluator-registry.js";

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
  /** Its trial processor. */
  readonly processor: TrialProcessor;
}

/** How long one pull waits for a trial; also the longest an idle slot keeps pulling after `stop()`. */
const PULL_EXPIRES_MS = 2_000;

/** Why a running evaluation was abandoned. */
type AbortReason = { kind: "early_stop" | "stop" | "drain"; reason: string };

/** A parsed trial job, with what its evaluation reported so far (for the answer, whatever it is). */
export interface TrialRef extends JobRef {
  trial: TrialJob;
  intermediate: number[];
  startedAt?: number;
  durationMs?: number;
}

/** A finished evaluation. */
export interface TrialResult {
  status: "succeeded" | "early_stopped";
  metrics: Record<string, number>;
  error?: string;
}

export interface TrialProcessor extends Processor<TrialRef, TrialResult> {
  /** Trials evaluating now. */
  running(): number;
  /** Stops every running trial of `exp` (or just `trial`): a control message from the controller. */
  control(subject: string, data: Uint8Array): void;
  /** Kills the evaluator processes. */
  close(): void;
}

function eventBytes(ev: TrialEvent): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(ev));
}

/**
 * The trial processor. Its evaluator processes start on first use, so a worker that does not evaluate trials
 * can still answer a trial's terminal failure (the max-deliveries advisory).
 */
export function createTrialProcessor({ infra, config, log: rootLog, workerId, device }: TrialRunnerDeps): TrialProcessor {
  const log = rootLog.child({ component: "nas-runner" });
  const deviceName = `${device.kind}: ${device.name}`;
  const providers = executionProviders(device);
  const idle = Array.from({ length: config.nasConcurrency }, () => new EvaluatorProcess(log));
  const all = [...idle];
  /** Running trials by `<exp>.<trialId>`. */
  const running = new Map<string, AbortController>();
  let store: Promise<NasStore> | null = null;

  async function publishEvent(ev: TrialEvent, msgID?: string): Promise<void> {
    await infra.js.publish(nasSubjects.event(ev.experimentId, ev.trialId, ev.kind), eventBytes(ev), msgID ? { msgID } : undefined);
  }

  async function hasResult(job: TrialJob): Promise<boolean> {
    const m = await infra.jsm.streams.getMessage(STREAMS.results, { last_by_subj: nasSubjects.event(job.experimentId, job.trialId, "done") });
    return m !== null;
  }

  /**
   * The file of the trial's custom evaluator (undefined for built-in ones), resolved inside the operator's
   * directory. Throws a terminal BAD_REQUEST for a name this worker has not registered: retrying cannot help.
   */
  async function evaluatorModule(job: TrialJob): Promise<string | undefined> {
    const evaluator = job.evaluator as unknown as EvaluatorSpec;
    try {
      // a trial job may come from an older gateway or straight from NATS: only registered evaluators run
      if ("module" in evaluator) throw new EvaluatorUnavailable('evaluator.module is no longer supported: name an evaluator registered by the operator, {"custom": "<name>"}');
      return isCustomEvaluator(evaluator) ? await resolveCustomEvaluator(config.evaluatorsDir, evaluator.custom) : undefined;
    } catch (err) {
      if (err instanceof EvaluatorUnavailable) throw new JobError("BAD_REQUEST", err.message, { cause: err });
      throw err;
    }
  }

  async function evaluate(ref: TrialRef, held: Held, ac: AbortController, modulePath: string | undefined): Promise<EvalOutcome> {
    const job = ref.trial;
    const slot = idle.pop();
    if (!slot) throw new JobError("INTERNAL", "no free evaluator process", { retryable: true });
    const base = { experimentId: job.experimentId, trialId: job.trialId, worker: workerId, attempt: held.attempt, device: deviceName };
    try {
      return await slot.evaluate(
        { job, attempt: held.attempt, modulePath, device: { kind: device.kind, name: device.name }, providers },
        {
          timeoutMs: job.timeoutMs,
          signal: ac.signal,
          onReport: (step, value) => {
            ref.intermediate[step - 1] = value;
            const values = Array.from(ref.intermediate, (v) => v ?? NaN);
            publishEvent({ kind: "report", ...base, at: Date.now(), step, value, values }).catch((err) => log.warn({ err, trial: job.trialId }, "could not publish an intermediate result"));
            held.working();
          },
        },
      );
    } finally {
      idle.push(slot);
    }
  }

  /** The trial's ids, from a parsed job or, failing that, from whatever the message body says. */
  function idsOf(ref: TrialRef | undefined, held: Held): { experimentId: string; trialId: string } | null {
    if (ref) return ref.trial;
    const j = safeJson(held.data) as { experimentId?: unknown; trialId?: unknown } | undefined;
    return typeof j?.experimentId === "string" && typeof j.trialId === "string" && j.experimentId && j.trialId ? { experimentId: j.experimentId, trialId: j.trialId } : null;
  }

  return {
    name: "nas-trials",
    fallbackCode: "INTERNAL",
    running: () => running.size,

    parse(held) {
      const parsed = TrialJobSchema.safeParse(safeJson(held.data));
      if (!parsed.success) throw new JobError("BAD_REQUEST", `malformed trial job: ${parsed.error.issues[0]?.message ?? "invalid"}`);
      return { id: jobIdOf(held.env, held.seq), model: parsed.data.experimentId, entry: false, trial: parsed.data, intermediate: [] };
    },

    async run(ref, ctx) {
      const job = ref.trial;
      const exp = await (store ??= NasStore.open(infra))
        .then((s) => s.getExperiment(job.experimentId))
        .catch((err) => {
          store = null;
          throw new JobError("NATS_UNAVAILABLE", `could not read experiment ${job.experimentId}: ${(err as Error).message}`, { retryable: true, cause: err });
        });
      if (exp === null || FINAL_EXPERIMENT_STATUSES.includes(exp.value.status)) {
        return { kind: "dropped", reason: `experiment ${exp?.value.status ?? "deleted"}: dropping its trial` };
      }
      // a redelivered (or, after a stop and resume, republished) trial may have finished meanwhile
      const done = await hasResult(job).catch((err) => {
        throw new JobError("NATS_UNAVAILABLE", `could not look up the trial's result: ${(err as Error).message}`, { retryable: true, cause: err });
      });
      if (done) return { kind: "skipped", reason: "trial already has a result: not running it again" };
      if (ctx.signal.aborted) return { kind: "released", reason: "worker draining: handing the trial back" };
      const modulePath = await evaluatorModule(job);

      const key = `${job.experimentId}.${job.trialId}`;
      const ac = new AbortController();
      const onDrain = () => ac.abort({ kind: "drain", reason: "worker stopping" } satisfies AbortReason);
      ctx.signal.addEventListener("abort", onDrain, { once: true });
      running.set(key, ac);
      const t0 = performance.now();
      ref.startedAt = Date.now();
      let outcome: EvalOutcome;
      try {
        await publishEvent({ kind: "start", experimentId: job.experimentId, trialId: job.trialId, worker: workerId, attempt: ctx.held.attempt, device: deviceName, at: Date.now() }, `nas-start-${job.experimentId}-${job.trialId}-${ctx.held.seq}-${ctx.held.attempt}`);
        ctx.log().debug("evaluating trial");
        outcome = await evaluate(ref, ctx.held, ac, modulePath);
      } catch (err) {
        outcome = { kind: "error", message: (err as Error).message, retryable: true };
      } finally {
        ctx.signal.removeEventListener("abort", onDrain);
        running.delete(key);
        ref.durationMs = Math.round((performance.now() - t0) * 1000) / 1000;
      }
      switch (outcome.kind) {
        case "aborted": {
          const r = outcome.reason as AbortReason;
          if (r.kind === "drain") return { kind: "released", reason: "worker draining: handing the trial back" };
          if (r.kind === "stop") return { kind: "dropped", reason: `experiment stopped: dropping the running trial (${r.reason})` };
          ctx.log().info({ reason: r.reason }, "trial stopped early");
          return { kind: "succeeded", result: { status: "early_stopped", metrics: {}, error: r.reason } };
        }
        case "ok":
          // JSON has no -Infinity (a singular NASWOT kernel) or NaN: such a metric is left out, and the
          // controller then judges the trial infeasible ("objective ... is missing or not finite")
          return { kind: "succeeded", result: { status: "succeeded", metrics: Object.fromEntries(Object.entries(outcome.metrics).filter(([, v]) => Number.isFinite(v))) } };
        case "timeout":
          throw new JobError("TIMEOUT", `trial timed out after ${outcome.timeoutMs} ms`);
        case "error":
          throw new JobError("INFERENCE_FAILED", outcome.message, { retryable: outcome.retryable });
      }
    },

    async publish(final, held) {
      const ids = idsOf(final.job, held);
      if (!ids) return; // nothing names the trial: only the dead letter records it
      const ref = final.job;
      const event: TrialEvent = {
        kind: "done",
        ...ids,
        worker: workerId,
        attempt: Math.max(1, held.attempt),
        device: deviceName,
        at: Date.now(),
        intermediate: (ref?.intermediate ?? []).filter(Number.isFinite),
        durationMs: ref?.durationMs ?? 0,
        ...(final.ok ? { status: final.result.status, metrics: final.result.metrics, ...(final.result.error ? { error: final.result.error } : {}) } : { status: "failed", metrics: {}, error: final.error.message }),
      };
      await publishEvent(event, `nas-done-${ids.experimentId}-${ids.trialId}`);
    },

    control(subject, data) {
      const parsed = ControlMessageSchema.safeParse(safeJson(data));
      if (!parsed.success) return;
      const [exp, trial] = subject.slice(nasSubjects.control("").length).split(".");
      const reason: AbortReason = { kind: parsed.data.action, reason: parsed.data.reason };
      for (const [key, ac] of running) {
        if (trial ? key === `${exp}.${trial}` : key.startsWith(`${exp}.`)) ac.abort(reason);
      }
    },

    close() {
      for (const s of all) s.kill();
    },
  };
}

/** Evaluates trials from the shared `nas_trials` consumer with `nasConcurrency` slots. */
export function createTrialRunner(deps: TrialRunnerDeps): TrialRunner {
  const { infra, config, workerId } = deps;
  const processor = createTrialProcessor(deps);
  const log = deps.log.child({ component: "nas-runner" });
  let runtime: JobRuntime | null = null;
  let control: Subscription | null = null;

  return {
    async start() {
      runtime = createJobRuntime({
        name: "nas-trials",
        infra,
        log,
        workerId,
        policy: retryPolicy(config),
        ackWaitMs: config.ackWaitMs,
        concurrency: config.nasConcurrency,
        processor,
      });
      control = infra.nc.subscribe(nasSubjects.controlAll, {
        callback: (err, msg) => {
          if (!err) processor.control(msg.subject, msg.data);
        },
      });
      await runtime.add({
        key: TRIALS_CONSUMER,
        open: () => openConsumer(infra, STREAMS.jobs, TRIALS_CONSUMER, jobConsumerConfig(nasSubjects.trialsAll, config)),
        fetch: { mode: "on-demand" },
        expiresMs: PULL_EXPIRES_MS,
        restart: true,
      });
      log.info({ slots: config.nasConcurrency, device: `${deps.device.kind}: ${deps.device.name}` }, "evaluating NAS trials");
    },
    async stop() {
      // running trials are handed back (the runtime's signal aborts them); idle pulls are not waited for
      await runtime?.stop();
      control?.unsubscribe();
      processor.close();
    },
    busy: () => processor.running(),
    processor,
  };
}

function safeJson(data: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(data));
  } catch {
    return undefined;
  }
}
