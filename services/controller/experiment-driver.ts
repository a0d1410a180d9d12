/**
 * Drives one experiment while its controller holds the lease: proposes trials (strategy), publishes them
 * as jobs, applies the workers' trial events, applies the median stopping rule, and keeps the experiment
 * record's status and summary current.
 *
 * Everything it knows is in NATS, so any controller can take over:
 * - a trial is recorded in KV (`trials`, `kv.create`) before its job is published, so a proposal is never
 *   lost and the strategy is restored from the trial list in proposal order;
 * - trial events come through a durable consumer on RESULTS and are acknowledged only after they are
 *   applied; applying one twice is harmless (a finished trial ignores further events);
 * - on start, an unfinished trial whose job is no longer in JOBS and whose result is not in RESULTS is
 *   published again (with a new generation in its message id, since the old id may still be in the
 *   duplicate window), and nothing else is: no finished trial runs again.
 */
import { AckPolicy, DeliverPolicy, type ConsumerMessages, type JsMsg } from "@nats-io/jetstream";
import type { JetshardConfig } from "#shared/config.js";
import type { Logger } from "#shared/log.js";
import { medianStop } from "#shared/nas/early-stopping.js";
import { parseExperimentSpec, type ExperimentSpec } from "#shared/nas/spec.js";
import { ExperimentError, type NasStore, type Versioned } from "#shared/nas/store.js";
import { createStrategy, type Strategy } from "#shared/nas/strategies.js";
import { judgeMetrics, summarize, trialScore } from "#shared/nas/summary.js";
import {
  TrialEventSchema,
  TrialJobSchema,
  isFinalTrial,
  nasSubjects,
  resultsConsumerName,
  trialIdOf,
  trialKey,
  trialMsgId,
  type ExperimentRecord,
  type ExperimentStatus,
  type TrialEvent,
  type TrialJob,
  type TrialRecord,
} from "#shared/nas/wire.js";
import type { Infra } from "#shared/nats.js";
import { STREAMS } from "#shared/subjects.js";
import { zodMessage } from "#shared/wire.js";
import type { Lease } from "./lease.js";

const ns = (ms: number) => ms * 1_000_000;
/** The experiment record is rewritten at most this often while results stream in. */
const SUMMARY_EVERY_MS = 200;

export interface DriverDeps {
  infra: Infra;
  store: NasStore;
  config: JetshardConfig;
  log: Logger;
  controllerId: string;
  lease: Lease;
  /** Called once when the driver stops driving; `failed` when it stopped because something went wrong. */
  onExit: (experimentId: string, failed: boolean) => void;
}

/** Thrown inside the driver when it must stop driving at once (lease lost, another controller writing). */
class LostControl extends Error {}

export class ExperimentDriver {
  readonly id: string;
  private readonly log: Logger;
  private spec!: ExperimentSpec;
  private strategy!: Strategy;
  private readonly trials = new Map<string, Versioned<TrialRecord>>();
  private readonly order: string[] = [];
  private readonly unfinished = new Set<string>();
  private exhausted = false;
  private finishedSeq = 0;
  private halted = false;
  private exited = false;
  private msgs: ConsumerMessages | null = null;
  private chain: Promise<unknown> = Promise.resolve();
  private summaryTimer: NodeJS.Timeout | null = null;
  private readonly earlyStopSent = new Set<string>();

  constructor(private readonly deps: DriverDeps) {
    this.id = deps.lease.experimentId;
    this.log = deps.log.child({ experiment: this.id });
  }

  /** The lease it drives under (the controller renews it). */
  get lease(): Lease {
    return this.deps.lease;
  }

  /** Starts driving (restores state, reconciles, consumes events, proposes). Never throws. */
  start(): Promise<void> {
    return this.serial(async () => {
      const ok = await this.restore();
      if (!ok) return;
      void this.consumeLoop();
      await this.fill();
      await this.checkFinished();
      this.scheduleSummary();
    });
  }

  /**
   * The experiment record changed under us (a user stopped it, or it was deleted): stop driving. Running
   * trials go back to `queued`; a resume publishes them again unless their results arrive meanwhile.
   */
  external(rec: ExperimentRecord | null): Promise<void> {
    return this.serial(async () => {
      if (this.halted) return;
      if (rec && (rec.status === "queued" || rec.status === "running")) return;
      this.log.info({ status: rec?.status ?? "deleted" }, "experiment no longer runnable; stop driving it");
      if (rec?.status === "stopped") {
        for (const id of this.unfinished) {
          const t = this.trials.get(id)!;
          if (t.value.status === "running") await this.writeTrial({ ...t.value, status: "queued" });
        }
        await this.writeSummary(false);
      }
      await this.exit(true);
    });
  }

  /** Stops driving; with `release`, gives the lease up so another controller may take over at once. */
  halt(why: string, release = true): Promise<void> {
    if (this.halted) return Promise.resolve();
    this.log.info({ why }, "stop driving experiment");
    this.halted = true;
    return this.serial(() => this.exit(release));
  }

  /** Runs `fn` after everything queued before it; a failure stops driving (the lease is released). */
  private serial(fn: () => Promise<void>): Promise<void> {
    const p = this.chain.then(async () => {
      if (this.exited) return;
      try {
        await fn();
      } catch (err) {
        if (err instanceof LostControl) {
          this.log.warn({ reason: err.message }, "lost control of the experiment");
          await this.exit(false);
        } else {
          this.log.error({ err }, "driver failed; releasing the experiment");
          await this.exit(true, true);
        }
      }
    });
    this.chain = p;
    return p;
  }

  private async exit(release: boolean, failed = false): Promise<void> {
    if (this.exited) return;
    this.halted = true;
    this.exited = true;
    if (this.summaryTimer) clearTimeout(this.summaryTimer);
    // not awaited: exit may run inside the consume loop's own callback, and close() waits for that loop
    void this.msgs?.close().catch(() => undefined);
    if (release) await this.deps.lease.release();
    this.deps.onExit(this.id, failed);
  }

  private ensureLease(): void {
    if (this.halted) throw new LostControl("driver halted");
    if (!this.deps.lease.valid) throw new LostControl("lease not renewed in time");
  }

  // ---- start-up

  /** Loads the experiment and its trials, restores the strategy and republishes lost trial jobs. */
  private async restore(): Promise<boolean> {
    const { store, infra, controllerId } = this.deps;
    const cur = await store.getExperiment(this.id);
    if (!cur || (cur.value.status !== "queued" && cur.value.status !== "running")) {
      await this.exit(true);
      return false;
    }
    try {
      this.spec = parseExperimentSpec(cur.value.spec);
    } catch (err) {
      await this.finish("failed", `stored spec is invalid: ${(err as Error).message}`);
      return false;
    }
    this.ensureLease();
    const started = await store.updateExperiment(this.id, (rec) => {
      if (rec.status !== "queued" && rec.status !== "running") return null;
      return { ...rec, status: "running", startedAt: rec.startedAt ?? Date.now(), controller: controllerId };
    });
    if (started.record.status !== "running") {
      await this.exit(true);
      return false;
    }

    const name = resultsConsumerName(this.id);
    try {
      await infra.jsm.consumers.info(STREAMS.results, name);
    } catch {
      await infra.jsm.consumers.add(STREAMS.results, {
        durable_name: name,
        filter_subject: nasSubjects.events(this.id),
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        // a controller that dies holding unacknowledged events: they come back about when its lease expires
        ack_wait: ns(Math.max(2_000, this.deps.config.controllerLeaseMs)),
        max_deliver: -1,
        max_ack_pending: 1_000,
      });
    }

    for (const t of await store.listTrials(this.id)) {
      this.trials.set(t.value.trialId, t);
      this.order.push(t.value.trialId);
      if (!isFinalTrial(t.value.status)) this.unfinished.add(t.value.trialId);
      this.finishedSeq = Math.max(this.finishedSeq, t.value.finishedSeq ?? 0);
    }
    this.order.forEach((id, i) => {
      if (this.trials.get(id)!.value.index !== i) throw new Error(`trial list has a gap at index ${i}`);
    });
    this.strategy = createStrategy(this.spec.strategy, this.spec.searchSpace, {
      seed: this.spec.seed ?? 0,
      direction: this.spec.objective.direction,
      history: this.order.map((id) => {
        const t = this.trials.get(id)!.value;
        return { trialId: id, point: t.point, score: trialScore(this.spec, t) };
      }),
    });
    this.log.info({ trials: this.order.length, unfinished: this.unfinished.size, strategy: this.spec.strategy.name }, "driving experiment");
    await this.reconcile();
    return true;
  }

  /** Republishes unfinished trials that have neither a job in JOBS nor a result in RESULTS. */
  private async reconcile(): Promise<void> {
    if (this.unfinished.size === 0) return;
    const { jsm } = this.deps.infra;
    // JOBS first: a job acked after this scan had its result published before the ack, so RESULTS has it
    const present = new Set<string>();
    for (let seq = 1; ; ) {
      const m = await jsm.streams.getMessage(STREAMS.jobs, { seq, next_by_subj: nasSubjects.trials(this.id) } as never).catch(() => null);
      if (!m) break;
      const job = TrialJobSchema.safeParse(safeJson(m.data));
      if (job.success) present.add(job.data.trialId);
      seq = m.seq + 1;
    }
    for (const id of [...this.unfinished]) {
      if (present.has(id)) continue;
      const done = await jsm.streams.getMessage(STREAMS.results, { last_by_subj: nasSubjects.event(this.id, id, "done") }).catch(() => null);
      if (done) continue;
      const t = this.trials.get(id)!.value;
      this.log.info({ trial: id, status: t.status }, "trial job missing: publishing it again");
      const next = await this.writeTrial({ ...t, status: "queued", generation: (t.generation ?? 0) + 1 });
      await this.publish(next);
    }
  }

  // ---- proposing

  private async fill(): Promise<void> {
    while (!this.halted && this.unfinished.size < this.spec.concurrency && this.order.length < this.spec.maxTrials && !this.exhausted) {
      this.ensureLease();
      const point = this.strategy.next();
      if (!point) {
        this.exhausted = true;
        break;
      }
      const index = this.order.length;
      const rec: TrialRecord = {
        experimentId: this.id,
        trialId: trialIdOf(index),
        index,
        point,
        status: "queued",
        attempts: 0,
        generation: 0,
        proposedBy: this.deps.controllerId,
        createdAt: Date.now(),
      };
      let revision: number;
      try {
        revision = await this.deps.store.trials.create(trialKey(this.id, rec.trialId), JSON.stringify(rec));
      } catch {
        throw new LostControl(`trial ${rec.trialId} already exists: another controller is proposing`);
      }
      this.trials.set(rec.trialId, { value: rec, revision });
      this.order.push(rec.trialId);
      this.unfinished.add(rec.trialId);
      await this.publish(rec);
    }
  }

  private async publish(t: TrialRecord): Promise<void> {
    const job: TrialJob = {
      experimentId: this.id,
      trialId: t.trialId,
      index: t.index,
      family: this.spec.family,
      familyOptions: this.spec.familyOptions,
      point: t.point,
      evaluator: this.spec.evaluator as Record<string, unknown>,
      timeoutMs: this.spec.trialTimeoutMs ?? this.deps.config.trialTimeoutMs,
    };
    const gen = t.generation ?? 0;
    const msgID = gen === 0 ? trialMsgId(this.id, t.trialId) : `${trialMsgId(this.id, t.trialId)}-${gen}`;
    await this.deps.infra.js.publish(nasSubjects.trials(this.id), JSON.stringify(job), { msgID });
  }

  // ---- events

  private async consumeLoop(): Promise<void> {
    try {
      const consumer = await this.deps.infra.js.consumers.get(STREAMS.results, resultsConsumerName(this.id));
      this.msgs = await consumer.consume({ max_messages: 64, expires: 5_000 });
      if (this.halted) await this.msgs.close();
      for await (const m of this.msgs) {
        if (this.halted) break;
        let applied = false;
        await this.serial(async () => {
          await this.onEvent(m);
          applied = true;
        });
        if (applied) m.ack();
      }
    } catch (err) {
      if (!this.halted) {
        this.log.error({ err }, "event consumer failed");
        await this.halt("event consumer failed");
      }
    }
  }

  private async onEvent(m: JsMsg): Promise<void> {
    if (this.halted) return;
    const data = safeJson(m.data);
    const parsed = TrialEventSchema.safeParse(data);
    if (!parsed.success) {
      // a result we cannot read must still end its trial, or the trial would stay unfinished forever
      const { kind, trialId } = (data ?? {}) as { kind?: unknown; trialId?: unknown };
      const cur = typeof trialId === "string" ? this.trials.get(trialId) : undefined;
      this.log.warn({ subject: m.subject }, "malformed trial event");
      if (kind === "done" && cur && !isFinalTrial(cur.value.status)) {
        const error = `malformed result: ${zodMessage(parsed.error)}`;
        await this.onDone(cur.value, { kind: "done", experimentId: this.id, trialId: cur.value.trialId, worker: cur.value.worker ?? "", attempt: Math.max(1, cur.value.attempts), at: Date.now(), status: "failed", metrics: {}, intermediate: [], error, device: cur.value.device ?? "", durationMs: 0 });
      }
      return;
    }
    const ev = parsed.data;
    const cur = this.trials.get(ev.trialId);
    if (!cur || isFinalTrial(cur.value.status)) return;
    if (ev.kind === "start") {
      await this.writeTrial({ ...cur.value, status: "running", attempts: Math.max(cur.value.attempts, ev.attempt), worker: ev.worker, device: ev.device, startedAt: cur.value.startedAt ?? ev.at });
      this.scheduleSummary();
    } else if (ev.kind === "report") {
      this.judgeIntermediate(cur.value, ev);
    } else {
      await this.onDone(cur.value, ev);
    }
  }

  private judgeIntermediate(t: TrialRecord, ev: Extract<TrialEvent, { kind: "report" }>): void {
    const es = this.spec.earlyStopping;
    if (!es || this.earlyStopSent.has(t.trialId)) return;
    const completed = this.order
      .map((id) => this.trials.get(id)!.value)
      .filter((x) => x.status === "succeeded" && (x.intermediate?.length ?? 0) > 0)
      .map((x) => x.intermediate!);
    const d = medianStop(ev.values, completed, { direction: this.spec.objective.direction, minTrials: es.minTrials, minStep: es.minStep });
    if (!d.stop) return;
    const reason = `median stopping rule: best ${fmt(d.best)} by step ${d.step} is worse than the median ${fmt(d.median!)} of ${d.compared} completed trials`;
    this.log.info({ trial: t.trialId, step: d.step }, reason);
    this.earlyStopSent.add(t.trialId);
    this.deps.store.control(nasSubjects.trialControl(this.id, t.trialId), { action: "early_stop", reason });
  }

  private async onDone(t: TrialRecord, ev: Extract<TrialEvent, { kind: "done" }>): Promise<void> {
    const judged = ev.status === "succeeded" ? judgeMetrics(this.spec, ev.metrics) : undefined;
    const next: TrialRecord = {
      ...t,
      status: ev.status,
      attempts: Math.max(t.attempts, ev.attempt),
      worker: ev.worker,
      device: ev.device,
      metrics: ev.metrics,
      intermediate: ev.intermediate.length ? ev.intermediate : undefined,
      feasible: judged?.feasible,
      violations: judged?.violations.length ? judged.violations : undefined,
      error: ev.error,
      finishedAt: ev.at,
      finishedSeq: this.finishedSeq + 1,
      durationMs: ev.durationMs,
    };
    await this.writeTrial(next);
    this.finishedSeq++;
    this.unfinished.delete(t.trialId);
    this.strategy.report(t.trialId, t.point, trialScore(this.spec, next) ?? null);
    this.log.info({ trial: t.trialId, status: ev.status, worker: ev.worker, error: ev.error }, "trial finished");

    const failed = this.order.filter((id) => this.trials.get(id)!.value.status === "failed").length;
    if (ev.status === "failed" && failed > this.spec.maxFailedTrials) {
      await this.finish("failed", `${failed} trials failed, more than maxFailedTrials (${this.spec.maxFailedTrials}); last: ${t.trialId}: ${ev.error ?? "failed"}`);
      return;
    }
    await this.fill();
    await this.checkFinished();
    this.scheduleSummary();
  }

  private async checkFinished(): Promise<void> {
    if (this.halted || this.unfinished.size > 0) return;
    if (this.order.length >= this.spec.maxTrials || this.exhausted) {
      await this.finish("completed", this.exhausted && this.order.length < this.spec.maxTrials ? `search space exhausted after ${this.order.length} trials` : undefined);
    }
  }

  /** Ends the experiment as completed or failed; tells workers to drop its remaining trials. */
  private async finish(status: Extract<ExperimentStatus, "completed" | "failed">, reason?: string): Promise<void> {
    this.ensureLease();
    this.halted = true;
    const summary = this.spec && this.strategy ? summarize(this.spec, this.allTrials()) : undefined;
    await this.deps.store.updateExperiment(this.id, (rec) => {
      if (rec.status !== "running" && rec.status !== "queued") return null;
      const { reason: _r, ...rest } = rec;
      return { ...rest, ...summary, status, ...(reason ? { reason } : {}), finishedAt: Date.now(), controller: this.deps.controllerId };
    });
    this.log.info({ status, reason }, "experiment finished");
    if (status === "failed") {
      await this.deps.infra.jsm.streams.purge(STREAMS.jobs, { filter: nasSubjects.trials(this.id) }).catch(() => undefined);
      this.deps.store.control(nasSubjects.control(this.id), { action: "stop", reason: `experiment failed: ${reason}` });
    }
    await this.exit(true);
  }

  // ---- persistence

  private allTrials(): TrialRecord[] {
    return this.order.map((id) => this.trials.get(id)!.value);
  }

  /** Compare-and-set of a trial record; a conflict means another controller writes it: stop driving. */
  private async writeTrial(t: TrialRecord): Promise<TrialRecord> {
    this.ensureLease();
    const cur = this.trials.get(t.trialId)!;
    try {
      const revision = await this.deps.store.trials.update(trialKey(this.id, t.trialId), JSON.stringify(t), cur.revision);
      this.trials.set(t.trialId, { value: t, revision });
      return t;
    } catch (err) {
      throw new LostControl(`trial ${t.trialId} changed under us: ${(err as Error).message}`);
    }
  }

  private scheduleSummary(): void {
    if (this.summaryTimer || this.halted) return;
    this.summaryTimer = setTimeout(() => {
      this.summaryTimer = null;
      void this.serial(() => this.writeSummary(true));
    }, SUMMARY_EVERY_MS);
  }

  /** Rewrites the experiment's summary; with `running`, only while it is still running. */
  private async writeSummary(running: boolean): Promise<void> {
    if (running && this.halted) return;
    this.ensureLease();
    const summary = summarize(this.spec, this.allTrials());
    let stoppedMeanwhile: ExperimentRecord | null = null;
    try {
      await this.deps.store.updateExperiment(this.id, (rec) => {
        if (running && rec.status !== "running") {
          stoppedMeanwhile = rec;
          return null;
        }
        return { ...rec, ...summary };
      });
    } catch (err) {
      if (err instanceof ExperimentError) stoppedMeanwhile = null;
      else throw err;
    }
    if (stoppedMeanwhile) void this.external(stoppedMeanwhile);
  }
}

function safeJson(data: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(data));
  } catch {
    return undefined;
  }
}

function fmt(x: number): string {
  return Number.isFinite(x) ? String(Math.round(x * 1e4) / 1e4) : String(x);
}
