/**
 * The contract of a custom evaluator. The operator registers evaluators by putting files in a directory and
 * naming it in `JETSHARD_EVALUATORS_DIR` on the workers; a spec names one, never a path:
 * `{"custom": "train", ...options}` runs `train.js`, `train.mjs` or `train.ts` from that directory (looked for in
 * that order; `.ts` works because jetshard runs under tsx). A name is letters, digits, '_' and '-' (at most 64);
 * an unregistered name, or a file that is a symlink to outside the directory, fails the trial (not retried).
 *
 *   export async function evaluate(arch, ctx) {
 *     for (let epoch = 1; epoch <= ctx.options.epochs; epoch++) {
 *       const acc = await trainOneEpoch(arch.model);
 *       ctx.report(epoch, acc);          // intermediate result: the median stopping rule judges these
 *     }
 *     return { val_acc: acc };           // final metrics: an object of finite numbers
 *   }
 *
 * It runs in a child process of the worker with a minimal environment (PATH, LANG/LC_*, TZ, LD_LIBRARY_PATH,
 * CUDA_VISIBLE_DEVICES, and HOME and TMPDIR set to a fresh temporary directory that is also its working
 * directory and is removed afterwards): no JETSHARD_* settings, NATS credentials or other secrets of the worker.
 * Files it needs are addressed from its own location (`import.meta.dirname`), not from the working directory.
 * A thrown error fails the trial with its message (set `retryable: true` on the error to have the trial retried
 * instead); a trial that outlives its timeout is killed.
 */
import type { Point } from "./search-space.js";

/** File extensions a registered evaluator may have, in the order they are looked for. */
export const CUSTOM_EVALUATOR_EXTENSIONS = [".js", ".mjs", ".ts"] as const;

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
  /** Every key of the evaluator spec except `custom`. */
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
