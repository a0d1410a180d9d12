/**
 * Wire contracts of NAS experiments: bucket, subject, consumer and header names, and the zod schemas of
 * every record and message the gateway, controller and workers exchange. Everyone validates on read.
 *
 * Layout (all on the JetStream infra of shared/nats.ts):
 * - KV `experiments`: `<exp>` → ExperimentRecord; `lease.<exp>` → LeaseRecord (the controller driving it).
 * - KV `trials`: `<exp>.<trialId>` → TrialRecord.
 * - JOBS stream, subject `jetshard.nas.<exp>`: one TrialJob per trial, `Nats-Msg-Id` = `nas-<exp>-<trialId>`;
 *   workers share the durable consumer `nas_trials` (filter `jetshard.nas.>`).
 * - RESULTS stream, `jetshard.results.nas.<exp>.<trialId>.<event>`: TrialEvents (`start`, `report`, `done`)
 *   published by workers; the driving controller reads them through the durable consumer `nasres_<exp>`.
 * - Core NATS `jetshard.control.nas.<exp>[.<trialId>]`: ControlMessages (stop an experiment's running
 *   trials, early-stop one trial). Best effort; everything that must not be lost goes through streams or KV.
 */
import { z } from "zod";

export const NAS_BUCKETS = {
  /** Experiment records and controller leases. */
  experiments: "experiments",
  /** Trial records, key `<exp>.<trialId>`. */
  trials: "trials",
} as const;

/** Durable pull consumer on JOBS shared by every worker that evaluates trials. */
export const TRIALS_CONSUMER = "nas_trials";

/** Durable consumer on RESULTS through which the driving controller reads one experiment's trial events. */
export function resultsConsumerName(exp: string): string {
  return `nasres_${exp}`;
}

export const nasSubjects = {
  /** Trial jobs of an experiment (JOBS stream). */
  trials: (exp: string) => `jetshard.nas.${exp}`,
  trialsAll: "jetshard.nas.>",
  /** A trial event in RESULTS. */
  event: (exp: string, trialId: string, kind: TrialEvent["kind"]) => `jetshard.results.nas.${exp}.${trialId}.${kind}`,
  /** Every event of an experiment. */
  events: (exp: string) => `jetshard.results.nas.${exp}.>`,
  /** Controls for every running trial of an experiment (core NATS). */
  control: (exp: string) => `jetshard.control.nas.${exp}`,
  /** Controls for one trial (core NATS). */
  trialControl: (exp: string, trialId: string) => `jetshard.control.nas.${exp}.${trialId}`,
  controlAll: "jetshard.control.nas.>",
} as const;

/** KV key of an experiment's lease (in the experiments bucket). */
export const leaseKey = (exp: string) => `lease.${exp}`;
/** KV key of a trial (in the trials bucket). */
export const trialKey = (exp: string, trialId: string) => `${exp}.${trialId}`;
/** `Nats-Msg-Id` of a trial job: deterministic, so a republished trial is deduplicated by JOBS. */
export const trialMsgId = (exp: string, trialId: string) => `nas-${exp}-${trialId}`;
/** Deterministic trial id of the `index`-th proposal (0-based): t0000, t0001, ... */
export const trialIdOf = (index: number) => `t${String(index).padStart(4, "0")}`;

export const EXPERIMENT_STATUSES = ["queued", "running", "completed", "stopped", "failed"] as const;
export type ExperimentStatus = (typeof EXPERIMENT_STATUSES)[number];
/** Statuses a controller does not drive. */
export const FINAL_EXPERIMENT_STATUSES: readonly ExperimentStatus[] = ["completed", "stopped", "failed"];

export const TRIAL_STATUSES = ["queued", "running", "succeeded", "failed", "early_stopped"] as const;
export type TrialStatus = (typeof TRIAL_STATUSES)[number];
export const FINAL_TRIAL_STATUSES: readonly TrialStatus[] = ["succeeded", "failed", "early_stopped"];
export const isFinalTrial = (s: TrialStatus) => FINAL_TRIAL_STATUSES.includes(s);

const Scalar = z.union([z.number(), z.string(), z.boolean()]);
export const PointSchema = z.record(z.string(), z.union([Scalar, z.array(Scalar)]));
const MetricsSchema = z.record(z.string(), z.number());

/** What a worker needs to evaluate a trial: self-contained, so workers need not read the spec. */
export const TrialJobSchema = z.object({
  experimentId: z.string().min(1),
  trialId: z.string().min(1),
  index: z.number().int().min(0),
  family: z.string(),
  familyOptions: z.record(z.string(), z.unknown()).optional(),
  point: PointSchema,
  /** The experiment's evaluator spec (built-in metrics or a module). */
  evaluator: z.record(z.string(), z.unknown()),
  /** The trial is stopped and fails after this long, milliseconds. */
  timeoutMs: z.number().int().positive(),
});
export type TrialJob = z.infer<typeof TrialJobSchema>;

const EventBase = {
  experimentId: z.string(),
  trialId: z.string(),
  worker: z.string(),
  /** Delivery attempt of the trial job (1-based). */
  attempt: z.number().int().min(1),
  /** Epoch ms. */
  at: z.number(),
};

/** A worker started evaluating a trial (one per evaluation: counting them counts evaluations). */
export const TrialStartSchema = z.object({ kind: z.literal("start"), ...EventBase, device: z.string() });
/** An intermediate result reported by a custom evaluator; `values` is the whole series so far. */
export const TrialReportSchema = z.object({ kind: z.literal("report"), ...EventBase, step: z.number().int().min(1), value: z.number(), values: z.array(z.number()) });
/** A trial's outcome. */
export const TrialDoneSchema = z.object({
  kind: z.literal("done"),
  ...EventBase,
  status: z.enum(["succeeded", "failed", "early_stopped"]),
  metrics: MetricsSchema.default({}),
  /** Intermediate results reported, in step order. */
  intermediate: z.array(z.number()).default([]),
  error: z.string().optional(),
  /** Device the metrics (latency in particular) were measured on, e.g. "cpu: AMD EPYC 7B13 x16". */
  device: z.string(),
  /** Evaluation wall time, milliseconds. */
  durationMs: z.number(),
});
export const TrialEventSchema = z.discriminatedUnion("kind", [TrialStartSchema, TrialReportSchema, TrialDoneSchema]);
export type TrialEvent = z.infer<typeof TrialEventSchema>;
export type TrialDone = z.infer<typeof TrialDoneSchema>;

/** Controls sent over core NATS (best effort). */
export const ControlMessageSchema = z.object({
  action: z.enum(["stop", "early_stop"]),
  reason: z.string(),
});
export type ControlMessage = z.infer<typeof ControlMessageSchema>;

export const TrialRecordSchema = z.object({
  experimentId: z.string(),
  trialId: z.string(),
  /** Proposal order (0-based); the strategy is restored from the trials in this order. */
  index: z.number().int().min(0),
  point: PointSchema,
  status: z.enum(TRIAL_STATUSES),
  /** Evaluations started (a retried trial has more than one). */
  attempts: z.number().int().min(0).default(0),
  /** Times its job was published again after it went missing (0 for the first publication). */
  generation: z.number().int().min(0).default(0),
  /** Controller that proposed it. */
  proposedBy: z.string(),
  worker: z.string().optional(),
  device: z.string().optional(),
  metrics: MetricsSchema.optional(),
  intermediate: z.array(z.number()).optional(),
  /** Within the constraints (only for succeeded trials). */
  feasible: z.boolean().optional(),
  violations: z.array(z.string()).optional(),
  error: z.string().optional(),
  createdAt: z.number(),
  startedAt: z.number().optional(),
  finishedAt: z.number().optional(),
  /** 1-based order in which trials finished. */
  finishedSeq: z.number().int().optional(),
  durationMs: z.number().optional(),
});
export type TrialRecord = z.infer<typeof TrialRecordSchema>;

export const ProgressSchema = z.object({
  maxTrials: z.number().int(),
  proposed: z.number().int(),
  queued: z.number().int(),
  running: z.number().int(),
  succeeded: z.number().int(),
  failed: z.number().int(),
  early_stopped: z.number().int(),
  finished: z.number().int(),
});
export type Progress = z.infer<typeof ProgressSchema>;

export const BestSchema = z.object({ trialId: z.string(), value: z.number(), metrics: MetricsSchema, point: PointSchema });
export type Best = z.infer<typeof BestSchema>;

export const ExperimentRecordSchema = z.object({
  id: z.string(),
  name: z.string(),
  /** The tenant that created it; only it (or an admin) sees it and its trials. */
  tenant: z.string().optional(),
  /** The normalized spec (parseExperimentSpec output, seed filled in). */
  spec: z.record(z.string(), z.unknown()),
  status: z.enum(EXPERIMENT_STATUSES),
  /** Why it is failed or stopped. */
  reason: z.string().optional(),
  createdAt: z.number(),
  updatedAt: z.number(),
  startedAt: z.number().optional(),
  finishedAt: z.number().optional(),
  /** Controller that last drove it. */
  controller: z.string().optional(),
  progress: ProgressSchema,
  best: BestSchema.optional(),
  /** Best objective value so far after each improvement: `finished` trials had finished at that point. */
  bestSeries: z.array(z.object({ finished: z.number().int(), trialId: z.string(), value: z.number() })).default([]),
  /** Non-dominated feasible trials over `objectives`. */
  pareto: z
    .object({
      objectives: z.array(z.object({ metric: z.string(), direction: z.enum(["maximize", "minimize"]) })),
      front: z.array(z.object({ trialId: z.string(), metrics: MetricsSchema })),
    })
    .default({ objectives: [], front: [] }),
  /** Devices trials were measured on (latency is per device: hardware-aware search). */
  devices: z.array(z.string()).default([]),
});
export type ExperimentRecord = z.infer<typeof ExperimentRecordSchema>;

export const LeaseRecordSchema = z.object({
  holder: z.string(),
  /** Epoch ms of the last renewal by the holder. */
  renewedAt: z.number(),
  acquiredAt: z.number(),
});
export type LeaseRecord = z.infer<typeof LeaseRecordSchema>;

/** An empty progress block for a new experiment. */
export function emptyProgress(maxTrials: number): Progress {
  return { maxTrials, proposed: 0, queued: 0, running: 0, succeeded: 0, failed: 0, early_stopped: 0, finished: 0 };
}
