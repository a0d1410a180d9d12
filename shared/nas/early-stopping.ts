/**
 * Median stopping rule (Golovin et al. 2017, "Google Vizier"; NNI's Medianstop assessor): stop a trial at
 * step s if its best intermediate result so far is strictly worse than the median of the running averages,
 * up to step s, of the completed trials' intermediate results.
 */
import type { Direction } from "./strategies.js";

/** Options of `medianStop`. */
export interface MedianStopOptions {
  /** Direction of the intermediate results (default "maximize"). */
  direction?: Direction;
  /** Never stop while fewer than this many completed trials reached step s (default 3). */
  minTrials?: number;
  /** Never stop before this step, 1-based (default 1). */
  minStep?: number;
}

/** What `medianStop` decided and why. */
export interface MedianStopDecision {
  stop: boolean;
  /** The step judged: the number of intermediate results of the trial. */
  step: number;
  /** The trial's best result so far (NaN if it has none). */
  best: number;
  /** Median of the completed trials' running averages at `step`, if there were enough of them. */
  median?: number;
  /** How many completed trials took part. */
  compared: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/**
 * Decides whether a running trial should stop. Pure.
 *
 * @param trial the trial's intermediate results so far, one per step (step s is `trial[s - 1]`);
 *   the trial is judged at step `trial.length`.
 * @param completed intermediate results of trials that ran to completion (not stopped or failed ones).
 *   As in NNI, only those that reached step s take part; their running average is the mean of their first
 *   s results. Non-finite values are skipped in both.
 */
export function medianStop(trial: readonly number[], completed: readonly (readonly number[])[], opts: MedianStopOptions = {}): MedianStopDecision {
  const maximize = (opts.direction ?? "maximize") === "maximize";
  const minTrials = opts.minTrials ?? 3;
  const minStep = opts.minStep ?? 1;
  const step = trial.length;
  const finite = trial.filter(Number.isFinite);
  const best = finite.length === 0 ? NaN : maximize ? Math.max(...finite) : Math.min(...finite);
  const averages: number[] = [];
  for (const history of completed) {
    if (history.length < step) continue;
    const upTo = history.slice(0, step).filter(Number.isFinite);
    if (upTo.length > 0) averages.push(upTo.reduce((a, b) => a + b, 0) / upTo.length);
  }
  const decision: MedianStopDecision = { stop: false, step, best, compared: averages.length };
  if (step < Math.max(1, minStep) || averages.length < Math.max(1, minTrials) || Number.isNaN(best)) return decision;
  decision.median = median(averages);
  decision.stop = maximize ? best < decision.median : best > decision.median;
  return decision;
}
