/**
 * Experiment and trial state in NATS KV: creating experiments, reading them, and the user's requests
 * (stop, resume) as compare-and-set updates, so they never overwrite what a controller wrote meanwhile
 * (and the other way round). Used by the gateway, the CLI, the controller and workers.
 */
import { randomBytes, randomInt } from "node:crypto";
import { Kvm, type KV } from "@nats-io/kv";
import { fromNatsError } from "#shared/errors.js";
import { NAS_BUCKET_OPTS, kvKeys, mapLimit, openKv, type Infra } from "#shared/nats.js";
import { STREAMS } from "#shared/subjects.js";
import type { ExperimentSpec } from "./spec.js";
import {
  ExperimentRecordSchema,
  FINAL_EXPERIMENT_STATUSES,
  NAS_BUCKETS,
  TrialRecordSchema,
  emptyProgress,
  nasSubjects,
  type ControlMessage,
  type ExperimentRecord,
  type TrialRecord,
} from "./wire.js";

/** An experiment that does not exist (404) or a request its state does not allow (409). */
export class ExperimentError extends Error {
  override name = "ExperimentError";
  constructor(
    readonly status: 404 | 409,
    message: string,
  ) {
    super(message);
  }
}

export interface Versioned<T> {
  value: T;
  revision: number;
}

/** Changes a resume may make to the spec (e.g. more trials, or more tolerance for failures). */
export interface ResumeChanges {
  maxTrials?: number;
  maxFailedTrials?: number;
  concurrency?: number;
}

const encoder = new TextEncoder();

/** An experiment id: the spec name made token-safe, plus 6 random characters. */
export function newExperimentId(name: string): string {
  const slug = name.replace(/[^A-Za-z0-9_-]/g, "-").slice(0, 40);
  return `${slug}-${randomBytes(4).readUInt32BE(0).toString(36).padStart(6, "0").slice(-6)}`;
}

export class NasStore {
  private constructor(
    readonly infra: Infra,
    readonly experiments: KV,
    readonly trials: KV,
  ) {}

  /**
   * Binds to the `experiments` and `trials` buckets (creating them only when missing, like openInfra).
   * @throws NatsPermissionError when they are missing and this NATS user may not create them.
   */
  static async open(infra: Infra): Promise<NasStore> {
    const kvm = new Kvm(infra.nc);
    const opts = { ...NAS_BUCKET_OPTS, replicas: infra.replicas };
    const [experiments, trials] = await Promise.all([openKv(kvm, NAS_BUCKETS.experiments, opts), openKv(kvm, NAS_BUCKETS.trials, opts)]);
    return new NasStore(infra, experiments, trials);
  }

  /**
   * Stores a new experiment as `queued` (a controller picks it up). A spec without a seed gets a random
   * one, recorded in the stored spec so the run can be reproduced.
   */
  /** Stores a new experiment owned by `tenant` (absent: the operator's, e.g. created over NATS). */
  async createExperiment(spec: ExperimentSpec, tenant?: string): Promise<ExperimentRecord> {
    const now = Date.now();
    const stored: ExperimentSpec = { ...spec, seed: spec.seed ?? randomInt(0, 2 ** 31) };
    for (let attempt = 0; ; attempt++) {
      const rec: ExperimentRecord = {
        id: newExperimentId(spec.name),
        name: spec.name,
        ...(tenant ? { tenant } : {}),
        spec: stored as unknown as Record<string, unknown>,
        status: "queued",
        createdAt: now,
        updatedAt: now,
        progress: emptyProgress(spec.maxTrials),
        bestSeries: [],
        pareto: { objectives: [], front: [] },
        devices: [],
      };
      try {
        await this.experiments.create(rec.id, JSON.stringify(rec));
        return rec;
      } catch (err) {
        // only an id collision is worth another id; NATS being down is not
        if (attempt >= 3 || fromNatsError(err)?.code !== "CONFLICT") throw err;
      }
    }
  }

  /** An experiment record and its revision, or null. */
  async getExperiment(id: string): Promise<Versioned<ExperimentRecord> | null> {
    if (!isExperimentKey(id)) return null;
    const e = await this.experiments.get(id);
    if (!e || e.operation !== "PUT" || e.value.length === 0) return null;
    return { value: ExperimentRecordSchema.parse(e.json()), revision: e.revision };
  }

  /** Every experiment, newest first. */
  async listExperiments(): Promise<ExperimentRecord[]> {
    const out: ExperimentRecord[] = [];
    // not experiments.history(): while experiments are being written, its end may come only tens of seconds later
    const keys = await kvKeys(this.infra.jsm, NAS_BUCKETS.experiments, "*");
    for (const e of await mapLimit(keys, 32, (k) => this.experiments.get(k))) {
      if (!e || e.operation !== "PUT" || e.value.length === 0) continue;
      const r = ExperimentRecordSchema.safeParse(e.json());
      if (r.success) out.push(r.data);
    }
    return out.sort((a, b) => b.createdAt - a.createdAt);
  }

  /** An experiment's trials in proposal order, with their revisions. */
  async listTrials(id: string): Promise<Versioned<TrialRecord>[]> {
    const out: Versioned<TrialRecord>[] = [];
    const iter = await this.trials.history({ key: `${id}.*` });
    for await (const e of iter) {
      if (e.operation !== "PUT" || e.value.length === 0) continue;
      const r = TrialRecordSchema.safeParse(e.json());
      if (r.success) out.push({ value: r.data, revision: e.revision });
    }
    return out.sort((a, b) => a.value.index - b.value.index);
  }

  async getTrial(id: string, trialId: string): Promise<Versioned<TrialRecord> | null> {
    if (!isExperimentKey(id) || !isExperimentKey(trialId)) return null;
    const e = await this.trials.get(`${id}.${trialId}`);
    if (!e || e.operation !== "PUT" || e.value.length === 0) return null;
    return { value: TrialRecordSchema.parse(e.json()), revision: e.revision };
  }

  /**
   * Read-modify-write of an experiment with compare-and-set, retried on conflicts. `fn` returns the new
   * record, or null to leave it unchanged. Returns the stored record (new or unchanged).
   * @throws ExperimentError 404 if there is no such experiment.
   */
  async updateExperiment(id: string, fn: (rec: ExperimentRecord) => ExperimentRecord | null): Promise<{ record: ExperimentRecord; changed: boolean }> {
    for (let attempt = 0; ; attempt++) {
      const cur = await this.getExperiment(id);
      if (!cur) throw new ExperimentError(404, `experiment "${id}" not found`);
      const next = fn(cur.value);
      if (!next) return { record: cur.value, changed: false };
      next.updatedAt = Date.now();
      try {
        await this.experiments.update(id, JSON.stringify(next), cur.revision);
        return { record: next, changed: true };
      } catch (err) {
        if (attempt >= 20) throw err;
      }
    }
  }

  /**
   * Stops an experiment: no new trials are proposed, queued trial jobs are removed, running ones are told to
   * stop (they stay unfinished, and a resume runs them again). Stopping a stopped experiment is a no-op.
   * @throws ExperimentError 404, or 409 if it already completed or failed.
   */
  async stopExperiment(id: string, reason = "stopped by request"): Promise<ExperimentRecord> {
    const { record, changed } = await this.updateExperiment(id, (rec) => {
      if (rec.status === "stopped") return null;
      if (FINAL_EXPERIMENT_STATUSES.includes(rec.status)) throw new ExperimentError(409, `experiment "${id}" is ${rec.status}; only a queued or running experiment can be stopped`);
      return { ...rec, status: "stopped", reason };
    });
    if (changed) {
      await this.infra.jsm.streams.purge(STREAMS.jobs, { filter: nasSubjects.trials(id) }).catch(() => undefined);
      this.control(nasSubjects.control(id), { action: "stop", reason });
    }
    return record;
  }

  /**
   * Resumes a stopped or failed experiment (or a completed one given a larger maxTrials): it becomes
   * `queued` and a controller continues it from its trials. Unfinished trials run again, finished ones never.
   * @throws ExperimentError 404, or 409 if it is queued or running, or completed without a larger maxTrials.
   */
  async resumeExperiment(id: string, changes: ResumeChanges = {}): Promise<ExperimentRecord> {
    const { record } = await this.updateExperiment(id, (rec) => {
      const spec = { ...(rec.spec as unknown as ExperimentSpec), ...definedOnly(changes) };
      if (rec.status === "queued" || rec.status === "running") throw new ExperimentError(409, `experiment "${id}" is ${rec.status}; only a stopped, failed or completed one can be resumed`);
      if (rec.status === "completed" && !(spec.maxTrials > rec.progress.proposed)) {
        throw new ExperimentError(409, `experiment "${id}" completed all ${rec.progress.proposed} trials; resume it with a larger maxTrials`);
      }
      const { reason: _r, finishedAt: _f, ...rest } = rec;
      return { ...rest, spec: spec as unknown as Record<string, unknown>, status: "queued", progress: { ...rec.progress, maxTrials: spec.maxTrials } };
    });
    return record;
  }

  /** Publishes a control message (core NATS, best effort). */
  control(subject: string, msg: ControlMessage): void {
    this.infra.nc.publish(subject, encoder.encode(JSON.stringify(msg)));
  }
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Experiment and trial ids are single KV tokens (no '.', '*', '>'). */
function isExperimentKey(s: string): boolean {
  return /^[A-Za-z0-9_-]{1,128}$/.test(s);
}
