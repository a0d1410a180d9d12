/**
 * What an experiment's trials add up to: progress counts, the best feasible trial, the best-so-far series
 * and the Pareto front. Pure functions of (spec, trial records), so any controller (or a reader) gets the
 * same answer from the same KV contents.
 */
import { checkConstraints, paretoFront, type ParetoObjective } from "./pareto.js";
import { producedMetrics, type ExperimentSpec } from "./spec.js";
import { emptyProgress, type Best, type ExperimentRecord, type Progress, type TrialRecord } from "./wire.js";

/** Which way the built-in metrics are better (used for the Pareto front). */
export const METRIC_DIRECTIONS: Readonly<Record<string, "maximize" | "minimize">> = {
  naswot: "maximize",
  latency_ms: "minimize",
  params: "minimize",
  flops: "minimize",
};

/**
 * The objectives of the Pareto front: the experiment's objective first, then every other metric the
 * evaluator reports whose direction is known (built-ins). A module evaluator contributes only the objective.
 */
export function paretoObjectives(spec: Pick<ExperimentSpec, "objective" | "evaluator">): ParetoObjective[] {
  const out: ParetoObjective[] = [{ metric: spec.objective.metric, direction: spec.objective.direction }];
  for (const m of producedMetrics(spec.evaluator) ?? []) {
    const direction = METRIC_DIRECTIONS[m];
    if (direction && m !== spec.objective.metric) out.push({ metric: m, direction });
  }
  return out;
}

/** Whether a succeeded trial's metrics satisfy the constraints and report the objective. */
export function judgeMetrics(spec: Pick<ExperimentSpec, "objective" | "constraints">, metrics: Record<string, number>): { feasible: boolean; violations: string[] } {
  const { violations } = checkConstraints(metrics, spec.constraints);
  const v = metrics[spec.objective.metric];
  if (v === undefined || !Number.isFinite(v)) violations.unshift(`objective ${spec.objective.metric} is missing or not finite`);
  return { feasible: violations.length === 0, violations };
}

/**
 * The score the strategy learns from: the objective of a succeeded, feasible trial; null for a failed,
 * early-stopped or infeasible one; undefined while it is still queued or running.
 */
export function trialScore(spec: Pick<ExperimentSpec, "objective">, t: TrialRecord): number | null | undefined {
  if (t.status === "queued" || t.status === "running") return undefined;
  if (t.status !== "succeeded" || t.feasible === false) return null;
  const v = t.metrics?.[spec.objective.metric];
  return v !== undefined && Number.isFinite(v) ? v : null;
}

export type Summary = Pick<ExperimentRecord, "progress" | "best" | "bestSeries" | "pareto" | "devices">;

/** Counts of trials by status. */
export function progressOf(maxTrials: number, trials: readonly TrialRecord[]): Progress {
  const p = emptyProgress(maxTrials);
  p.proposed = trials.length;
  for (const t of trials) p[t.status]++;
  p.finished = p.succeeded + p.failed + p.early_stopped;
  return p;
}

/** Summarizes trials (in any order) for the experiment record. */
export function summarize(spec: Pick<ExperimentSpec, "objective" | "evaluator" | "maxTrials">, trials: readonly TrialRecord[]): Summary {
  const better = (a: number, b: number) => (spec.objective.direction === "maximize" ? a > b : a < b);
  const good = trials
    .filter((t) => t.status === "succeeded" && t.feasible !== false && Number.isFinite(t.metrics?.[spec.objective.metric]))
    .sort((a, b) => (a.finishedSeq ?? Infinity) - (b.finishedSeq ?? Infinity) || a.index - b.index);
  let best: Best | undefined;
  const bestSeries: Summary["bestSeries"] = [];
  for (const t of good) {
    const value = t.metrics![spec.objective.metric]!;
    if (!best || better(value, best.value)) {
      best = { trialId: t.trialId, value, metrics: t.metrics!, point: t.point };
      bestSeries.push({ finished: t.finishedSeq ?? 0, trialId: t.trialId, value });
    }
  }
  const objectives = paretoObjectives(spec);
  const front = paretoFront(good, objectives, (t) => t.metrics!)
    .sort((a, b) => a.index - b.index)
    .map((t) => ({ trialId: t.trialId, metrics: Object.fromEntries(objectives.map((o) => [o.metric, t.metrics![o.metric]!])) }));
  const devices = [...new Set(trials.map((t) => t.device).filter((d): d is string => !!d))].sort();
  return { progress: progressOf(spec.maxTrials, trials), best, bestSeries, pareto: { objectives, front }, devices };
}
