/**
 * Multi-objective helpers: Pareto dominance and fronts over named metrics, and metric constraints.
 */
import type { Direction } from "./strategies.js";

/** A metric and which way is better. */
export interface ParetoObjective {
  metric: string;
  direction: Direction;
}

/** A bound on a metric: `min <= value <= max` (either side optional, both inclusive). */
export interface Constraint {
  metric: string;
  min?: number;
  max?: number;
}

/** Named metric values of one trial. */
export type Metrics = Readonly<Record<string, number>>;

function usable(m: Metrics, objectives: readonly ParetoObjective[]): boolean {
  return objectives.every((o) => Number.isFinite(m[o.metric]));
}

/**
 * True if `a` dominates `b`: at least as good on every objective and strictly better on one.
 * A side with a missing or non-finite metric dominates nothing and is dominated by nothing.
 */
export function dominates(a: Metrics, b: Metrics, objectives: readonly ParetoObjective[]): boolean {
  if (!usable(a, objectives) || !usable(b, objectives)) return false;
  let better = false;
  for (const o of objectives) {
    const d = o.direction === "maximize" ? a[o.metric]! - b[o.metric]! : b[o.metric]! - a[o.metric]!;
    if (d < 0) return false;
    if (d > 0) better = true;
  }
  return better;
}

/**
 * The non-dominated items, in input order. Items lacking a finite value for some objective are left out;
 * items with equal metrics are all kept. O(n²) comparisons.
 * @param metricsOf how to read an item's metrics (default: the item itself, or its `metrics` field).
 */
export function paretoFront<T>(items: readonly T[], objectives: readonly ParetoObjective[], metricsOf: (item: T) => Metrics = defaultMetrics): T[] {
  const ms = items.map(metricsOf);
  return items.filter((_, i) => usable(ms[i]!, objectives) && !ms.some((other, j) => j !== i && dominates(other, ms[i]!, objectives)));
}

function defaultMetrics(item: unknown): Metrics {
  const o = item as { metrics?: Metrics };
  return o.metrics && typeof o.metrics === "object" ? o.metrics : (item as Metrics);
}

/**
 * Checks metrics against constraints, e.g. `[{ metric: "latency_ms", max: 2 }]`.
 * A missing or non-finite metric violates its constraint.
 * @returns ok, and one message per violation (`latency_ms = 3.1 > max 2`).
 */
export function checkConstraints(metrics: Metrics, constraints: readonly Constraint[]): { ok: boolean; violations: string[] } {
  const violations: string[] = [];
  for (const c of constraints) {
    const v = metrics[c.metric];
    if (v === undefined || !Number.isFinite(v)) violations.push(`${c.metric} is missing`);
    else if (c.min !== undefined && v < c.min) violations.push(`${c.metric} = ${v} < min ${c.min}`);
    else if (c.max !== undefined && v > c.max) violations.push(`${c.metric} = ${v} > max ${c.max}`);
  }
  return { ok: violations.length === 0, violations };
}
