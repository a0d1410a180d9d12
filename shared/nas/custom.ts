/**
 * The contract of a custom (module) evaluator, `{"module": "path/to/eval.js", ...options}`:
 *
 *   export async function evaluate(arch, ctx) {
 *     for (let epoch = 1; epoch <= ctx.options.epochs; epoch++) {
 *       const acc = await trainOneEpoch(arch.model);
 *       ctx.report(epoch, acc);          // intermediate result: the median stopping rule judges these
 *     }
 *     return { val_acc: acc };           // final metrics: an object of finite numbers
 *   }
 *
 * The path is resolved against the worker's working directory; `.js`, `.mjs` and (since jetshard runs
 * under tsx) `.ts` modules work. A thrown error fails the trial with its message (set `retryable: true`
 * on the error to have the trial retried instead); a trial that outlives its timeout is killed.
 */
import type { Point } from "./search-space.js";

/** What is evaluated. */
export interface Architecture {
  /** The experiment's family (`mlp`, `cnn`, `cell` or `custom`). */
  family: string;
  /** The sampled point of the search space. */
  point: Point;
  /** The family's ONNX model for the point (built-in families only). */
  model?: Uint8Array;
  /** The spec's familyOptions, if any. */
  familyOptions?: Record<string, unknown>;
}

/** What an evaluator gets besides the architecture. */
export interface EvaluatorContext {
  experimentId: string;
  trialId: string;
  /** Delivery attempt, 1-based. */
  attempt: number;
  /** Every key of the evaluator spec except `module`. */
  options: Record<string, unknown>;
  /** The worker's device, e.g. `{ kind: "cpu", name: "AMD EPYC 7B13 x16" }`. */
  device: { kind: string; name: string };
  /** ORT execution providers of that device, e.g. ["cuda", "cpu"]. */
  providers: string[];
  /** Reports an intermediate result: `report(value)` (next step) or `report(step, value)` (1-based step). */
  report(stepOrValue: number, value?: number): void;
}

export type EvaluateFn = (arch: Architecture, ctx: EvaluatorContext) => unknown;

/** Finds `evaluate` in an imported module (a named export, or a default export function or object). */
export function evaluateFnOf(mod: Record<string, unknown>, where: string): EvaluateFn {
  const def = mod.default as { evaluate?: unknown } | undefined;
  const fn = mod.evaluate ?? (typeof def === "function" ? def : def?.evaluate);
  if (typeof fn !== "function") throw new Error(`${where} does not export an evaluate(arch, ctx) function`);
  return fn as EvaluateFn;
}

/**
 * Checks what `evaluate` returned: an object whose values are finite numbers.
 * @throws Error naming the offending key.
 */
export function checkMetrics(x: unknown, where: string): Record<string, number> {
  if (typeof x !== "object" || x === null || Array.isArray(x)) throw new Error(`${where}: evaluate() must return an object of numbers like {"accuracy": 0.9}, got ${JSON.stringify(x) ?? String(x)}`);
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(x)) {
    if (typeof v !== "number" || !Number.isFinite(v)) throw new Error(`${where}: metric "${k}" must be a finite number, got ${JSON.stringify(v) ?? String(v)}`);
    out[k] = v;
  }
  return out;
}
