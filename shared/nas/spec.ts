/**
 * The NAS experiment spec, as submitted by users:
 *
 *   {
 *     "name": "cells-1", "family": "cell", "strategy": { "name": "evolution", "population": 20, "sample": 5 },
 *     "objective": { "metric": "naswot", "direction": "maximize" },
 *     "constraints": [{ "metric": "latency_ms", "max": 2 }],
 *     "maxTrials": 200, "concurrency": 8, "maxFailedTrials": 5,
 *     "evaluator": { "metrics": ["naswot", "latency", "params", "flops"], "batch": 64 }
 *   }
 *
 * or, with an evaluator the operator registered: `"evaluator": { "custom": "train", "epochs": 10 }`.
 *
 * `parseExperimentSpec` validates and normalizes it, throwing NasSpecError naming the field.
 */
import { z } from "zod";
import { NasSpecError, describeIssue, fromZodError } from "./errors.js";
import { preview } from "#shared/errors.js";
import { FAMILY_NAMES, cellSearchSpace, checkFamilySize, checkFamilySpace } from "./families.js";
import { DEFAULT_GRID_STEPS, parseSearchSpace, type SearchSpace } from "./search-space.js";
import { DEFAULT_POPULATION, DEFAULT_SAMPLE, STRATEGY_NAMES, type Direction, type NormalizedStrategy } from "./strategies.js";

/** Families a spec may name; `custom` means the custom evaluator builds and scores the trial itself. */
export const SPEC_FAMILIES = [...FAMILY_NAMES, "custom"] as const;
export type SpecFamily = (typeof SPEC_FAMILIES)[number];

/** Built-in evaluators (see evaluators.ts). */
export const BUILTIN_EVALUATORS = ["naswot", "latency", "params", "flops"] as const;
export type BuiltinEvaluator = (typeof BUILTIN_EVALUATORS)[number];
/** The metric name each built-in evaluator reports, as used by `objective` and `constraints`. */
export const METRIC_OUTPUT: Record<BuiltinEvaluator, string> = { naswot: "naswot", latency: "latency_ms", params: "params", flops: "flops" };

/** Built-in evaluators and their options. */
export interface BuiltinEvaluatorSpec {
  metrics: BuiltinEvaluator[];
  /** NASWOT minibatch size (default 64). */
  batch?: number;
  /** Latency: timed runs (default 20) and warmup runs (default 3). */
  runs?: number;
  warmup?: number;
  /** NASWOT synthetic-input seed (default 0). */
  seed?: number;
  /** ORT intra-op threads. */
  threads?: number;
  /**
   * NASWOT inputs instead of the synthetic dataset: a minibatch uploaded with the spec, `shape` [N, ...per-sample]
   * and `data` as little-endian FP32 bytes in base64 (or plain numbers), row-major.
   */
  input?: { shape: number[]; data: string | number[] };
}

/**
 * A custom evaluator registered by the operator (a file `<name>.js|.mjs|.ts` in `JETSHARD_EVALUATORS_DIR` on the
 * workers), named by `custom`; every other key is passed to it as an option. A spec never names a path.
 */
export interface CustomEvaluatorSpec {
  custom: string;
  [option: string]: unknown;
}

/** Built-in metrics or a registered custom evaluator. */
export type EvaluatorSpec = BuiltinEvaluatorSpec | CustomEvaluatorSpec;

/** True for `{"custom": ...}` evaluators. */
export function isCustomEvaluator(e: EvaluatorSpec): e is CustomEvaluatorSpec {
  return "custom" in e;
}

/** What a registered evaluator's name looks like: its file name without the extension. */
export const EVALUATOR_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

/**
 * Why `name` cannot name a registered evaluator, or null if it can. Paths (a '/', '\\', '..', a leading '.',
 * a drive letter) and file names with an extension are refused: the operator decides which files run.
 */
export function evaluatorNameProblem(name: string): string | null {
  if (EVALUATOR_NAME_RE.test(name)) return null;
  if (name === "") return "must not be empty";
  const shown = JSON.stringify(name.length > 80 ? `${name.slice(0, 80)}...` : name);
  if (/[/\\]|\.\.|^\.|^[A-Za-z]:/.test(name)) {
    return `must be the name of an evaluator registered by the operator (a file in JETSHARD_EVALUATORS_DIR), not a path: got ${shown}`;
  }
  const ext = /^([A-Za-z0-9][A-Za-z0-9_-]*)\.[A-Za-z0-9]+$/.exec(name);
  if (ext) return `must be the evaluator's name without an extension ("${ext[1]}", not ${shown})`;
  return `must start with a letter or digit and contain only letters, digits, '_' and '-' (at most 64 characters): got ${shown}`;
}

/** Ceilings an operator sets on experiments (`config.limits`); each refusal names the field and the setting. */
export interface SpecLimits {
  /** Largest `maxTrials` (JETSHARD_MAX_TRIALS). */
  maxTrials: number;
  /** Largest `concurrency` (JETSHARD_MAX_TRIAL_CONCURRENCY). */
  maxTrialConcurrency: number;
  /** Largest `trialTimeoutMs` (JETSHARD_MAX_TRIAL_TIMEOUT_MS). */
  maxTrialTimeoutMs: number;
}

/**
 * Checks the fields of a spec (or of a resume request) that `limits` bound; absent fields pass.
 * @throws NasSpecError, e.g. `maxTrials: must be <= 10000 (the limit JETSHARD_MAX_TRIALS)`.
 */
export function checkSpecLimits(x: { maxTrials?: number; concurrency?: number; trialTimeoutMs?: number }, limits: SpecLimits): void {
  const over = (field: string, v: number | undefined, max: number, env: string) => {
    if (v !== undefined && v > max) throw new NasSpecError(field, `must be <= ${max} (the limit ${env}), got ${v}`);
  };
  over("maxTrials", x.maxTrials, limits.maxTrials, "JETSHARD_MAX_TRIALS");
  over("concurrency", x.concurrency, limits.maxTrialConcurrency, "JETSHARD_MAX_TRIAL_CONCURRENCY");
  over("trialTimeoutMs", x.trialTimeoutMs, limits.maxTrialTimeoutMs, "JETSHARD_MAX_TRIAL_TIMEOUT_MS");
}

const int = (min: number, max = Number.MAX_SAFE_INTEGER) => z.number().int().min(min).max(max);

const familyOptionsSchema = z.strictObject({
  inputShape: z.array(int(1, 1 << 20)).min(1).max(8).optional(),
  classes: int(1, 1 << 20).optional(),
  seed: int(0, 0xffffffff).optional(),
  channels: int(1, 4096).optional(),
  cells: int(1, 64).optional(),
});

const strategyObjectSchemas: Record<(typeof STRATEGY_NAMES)[number], z.ZodType<NormalizedStrategy>> = {
  random: z.strictObject({ name: z.literal("random") }),
  grid: z.strictObject({ name: z.literal("grid"), steps: int(1, 1000).default(DEFAULT_GRID_STEPS) }),
  evolution: z
    .strictObject({ name: z.literal("evolution"), population: int(2, 100_000).default(DEFAULT_POPULATION), sample: int(1, 100_000).default(DEFAULT_SAMPLE) })
    .refine((s) => s.sample <= s.population, { path: ["sample"], message: "must be <= population" }),
};

/** Runs a sub-schema and re-emits its issues under `ctx`, so the first issue keeps its precise path. */
function subParse<T>(schema: z.ZodType<T>, value: unknown, ctx: z.RefinementCtx): T | typeof z.NEVER {
  const r = schema.safeParse(value, { reportInput: true });
  if (r.success) return r.data;
  for (const issue of r.error.issues) {
    const { path, message } = describeIssue(issue);
    ctx.addIssue({ code: "custom", path: path as (string | number)[], message });
  }
  return z.NEVER;
}

const unknownStrategy = (name: unknown) => `unknown strategy ${preview(name)} (expected one of ${STRATEGY_NAMES.join(", ")})`;

const strategySchema = z.unknown().transform((v, ctx): NormalizedStrategy => {
  if (typeof v === "string") {
    if (!Object.hasOwn(strategyObjectSchemas, v)) {
      ctx.addIssue({ code: "custom", message: unknownStrategy(v) });
      return z.NEVER;
    }
    return subParse(strategyObjectSchemas[v as keyof typeof strategyObjectSchemas], { name: v }, ctx);
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    ctx.addIssue({ code: "custom", message: v === undefined ? "is required" : 'must be a strategy name or an object like {"name": "evolution"}' });
    return z.NEVER;
  }
  const name = (v as { name?: unknown }).name;
  if (typeof name !== "string" || !Object.hasOwn(strategyObjectSchemas, name)) {
    ctx.addIssue({ code: "custom", path: ["name"], message: name === undefined ? "is required" : unknownStrategy(name) });
    return z.NEVER;
  }
  return subParse(strategyObjectSchemas[name as keyof typeof strategyObjectSchemas], v, ctx);
});

const builtinEvaluatorSchema = z.strictObject({
  metrics: z
    .array(
      z.string().refine((m) => (BUILTIN_EVALUATORS as readonly string[]).includes(m), {
        error: (iss) => `unknown evaluator ${JSON.stringify(iss.input)} (expected one of ${BUILTIN_EVALUATORS.join(", ")})`,
      }),
    )
    .min(1)
    .superRefine((ms, ctx) => {
      ms.forEach((m, i) => {
        if (ms.indexOf(m) !== i) ctx.addIssue({ code: "custom", path: [i], message: `duplicate evaluator "${m}"` });
      });
    }),
  batch: int(1, 4096).optional(),
  runs: int(1, 10_000).optional(),
  warmup: int(0, 10_000).optional(),
  seed: int(0, 0xffffffff).optional(),
  threads: int(1, 1024).optional(),
  input: z
    .strictObject({
      shape: z.array(int(1, 1 << 20)).min(2).max(8),
      data: z.union([z.string().min(1), z.array(z.number())]),
    })
    .superRefine((inp, ctx) => {
      const n = inp.shape.reduce((a, b) => a * b, 1);
      const got = typeof inp.data === "string" ? Buffer.from(inp.data, "base64").byteLength / 4 : inp.data.length;
      if (got !== n) ctx.addIssue({ code: "custom", path: ["data"], message: `shape [${inp.shape}] needs ${n} FP32 values, data has ${got}` });
    })
    .optional(),
});

/** The FP32 values of an uploaded NASWOT input. */
export function naswotInput(input: { shape: number[]; data: string | number[] }): { batch: number; sample: number[]; values: Float32Array } {
  const values =
    typeof input.data === "string"
      ? (() => {
          const b = Buffer.from(input.data, "base64");
          const copy = new Uint8Array(b.byteLength);
          copy.set(b);
          return new Float32Array(copy.buffer);
        })()
      : Float32Array.from(input.data);
  return { batch: input.shape[0]!, sample: input.shape.slice(1), values };
}

const customEvaluatorSchema = z.looseObject({
  custom: z.string().superRefine((name, ctx) => {
    const problem = evaluatorNameProblem(name);
    if (problem) ctx.addIssue({ code: "custom", message: problem });
  }),
});

const evaluatorSchema = z.unknown().transform((v, ctx): EvaluatorSpec => {
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    ctx.addIssue({ code: "custom", message: v === undefined ? "is required" : 'must be an object: {"metrics": [...]} or {"custom": "<registered evaluator>"}' });
    return z.NEVER;
  }
  // the old contract named a file to import; a spec may only name what the operator registered
  if ("module" in v) {
    ctx.addIssue({
      code: "custom",
      path: ["module"],
      message: 'is no longer accepted: name an evaluator registered by the operator instead, {"custom": "<name>", ...options} (the files in JETSHARD_EVALUATORS_DIR)',
    });
    return z.NEVER;
  }
  if ("custom" in v) return subParse(customEvaluatorSchema, v, ctx) as CustomEvaluatorSpec;
  if ("metrics" in v) return subParse(builtinEvaluatorSchema, v, ctx) as BuiltinEvaluatorSpec;
  ctx.addIssue({ code: "custom", message: 'needs "metrics" (built-in evaluators) or "custom" (an evaluator registered by the operator)' });
  return z.NEVER;
});

const constraintSchema = z
  .strictObject({ metric: z.string().min(1), min: z.number().optional(), max: z.number().optional() })
  .refine((c) => c.min !== undefined || c.max !== undefined, { message: "needs min or max" })
  .refine((c) => c.min === undefined || c.max === undefined || c.min <= c.max, { path: ["min"], message: "must be <= max" });

/** Zod schema of the spec as submitted (before cross-field checks); prefer `parseExperimentSpec`. */
export const experimentSpecSchema = z.strictObject({
  name: z
    .string()
    .min(1)
    .max(128)
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, { message: "must start with a letter or digit and contain only letters, digits, '.', '_' and '-'" }),
  family: z.string().refine((f) => (SPEC_FAMILIES as readonly string[]).includes(f), {
    error: (iss) => `unknown family ${JSON.stringify(iss.input)} (expected one of ${SPEC_FAMILIES.join(", ")})`,
  }),
  familyOptions: familyOptionsSchema.optional(),
  searchSpace: z.unknown().optional(),
  strategy: strategySchema,
  objective: z.strictObject({
    metric: z.string().min(1),
    direction: z.enum(["maximize", "minimize"]),
  }),
  constraints: z.array(constraintSchema).default([]),
  maxTrials: int(1, 1_000_000),
  concurrency: int(1, 1024).default(1),
  maxFailedTrials: int(0).default(5),
  evaluator: evaluatorSchema,
  seed: int(0, 0xffffffff).optional(),
  trialTimeoutMs: int(1).optional(),
  earlyStopping: z
    .strictObject({ rule: z.literal("median"), minTrials: int(1).optional(), minStep: int(1).optional() })
    .optional(),
});

/** A validated, normalized experiment spec. */
export interface ExperimentSpec {
  name: string;
  family: SpecFamily;
  /** Non-searched family options (input shape, classes, weight seed, cell channels/stacking). */
  familyOptions?: z.infer<typeof familyOptionsSchema>;
  /** Always set: for `cell` it defaults to `cellSearchSpace()`. */
  searchSpace: SearchSpace;
  /** Object form with defaults filled in. */
  strategy: NormalizedStrategy;
  objective: { metric: string; direction: Direction };
  /** Default []. */
  constraints: { metric: string; min?: number; max?: number }[];
  maxTrials: number;
  /** Trials evaluated at once (default 1). */
  concurrency: number;
  /** The experiment fails once more than this many trials have failed (default 5; 0 = at the first failure). */
  maxFailedTrials: number;
  evaluator: EvaluatorSpec;
  /** Seed of the strategy; absent means the controller picks (and records) one. */
  seed?: number;
  trialTimeoutMs?: number;
  /** Median stopping for trials that report intermediate results. */
  earlyStopping?: { rule: "median"; minTrials?: number; minStep?: number };
}

/** Metrics the evaluator reports, or null if a custom evaluator may report anything. */
export function producedMetrics(e: EvaluatorSpec): string[] | null {
  return isCustomEvaluator(e) ? null : e.metrics.map((m) => METRIC_OUTPUT[m]);
}

/**
 * Validates and normalizes an experiment spec.
 * Beyond the field checks: the search space must be valid NNI and fit the family (required for every
 * family but `cell`), and no point of it may make a model larger than `MAX_ARCH_PARAMS`; `custom` needs a
 * custom evaluator, named (never a path: see `evaluatorNameProblem`); with built-in evaluators,
 * `objective.metric` and constraint metrics must be among those they report (`naswot`, `latency_ms`, `params`,
 * `flops`); an mlp scored by `naswot` may only use the `relu` activation (NASWOT reads ReLU codes).
 * @param limits the operator's ceilings (the gateway passes `config.limits`); absent, only the schema's bounds
 *   apply (a controller re-validating a stored spec must not fail it because a limit was lowered since).
 * @throws NasSpecError naming the field, e.g. `maxTrials: must be >= 1`, `family: unknown family "x" (...)`,
 *   `strategy: unknown strategy "y" (...)`, `evaluator.metrics[1]: unknown evaluator "z" (...)`,
 *   `evaluator.custom: must be the name of an evaluator registered by the operator (...), not a path: ...`,
 *   `concurrency: must be <= 64 (the limit JETSHARD_MAX_TRIAL_CONCURRENCY), got 100`.
 */
export function parseExperimentSpec(x: unknown, limits?: SpecLimits): ExperimentSpec {
  const r = experimentSpecSchema.safeParse(x, { reportInput: true });
  if (!r.success) throw fromZodError(r.error, "");
  const raw = r.data;
  const family = raw.family as SpecFamily;
  if (limits) checkSpecLimits(raw, limits);

  let searchSpace: SearchSpace;
  if (raw.searchSpace === undefined) {
    if (family !== "cell") throw new NasSpecError("searchSpace", `is required for family "${family}"`);
    searchSpace = cellSearchSpace();
  } else searchSpace = parseSearchSpace(raw.searchSpace, "searchSpace");
  if (family !== "custom") checkFamilySpace(family, searchSpace, "searchSpace");
  const rank = family === "mlp" ? 1 : family === "custom" ? undefined : 3;
  const inputShape = raw.familyOptions?.inputShape;
  if (rank !== undefined && inputShape && inputShape.length !== rank) {
    throw new NasSpecError("familyOptions.inputShape", `family "${family}" takes ${rank === 1 ? "[features]" : "[channels, height, width]"}, got [${inputShape}]`);
  }
  if (family !== "custom") checkFamilySize(family, searchSpace, raw.familyOptions, "searchSpace");

  const evaluator = raw.evaluator;
  const activation = searchSpace.activation;
  if (family === "mlp" && !isCustomEvaluator(evaluator) && evaluator.metrics.includes("naswot") && activation?._type === "choice") {
    const i = activation._value.findIndex((v) => v !== "relu");
    if (i >= 0) throw new NasSpecError(`searchSpace.activation._value[${i}]`, `naswot reads ReLU activation codes, so an mlp scored by naswot must use "relu" (got ${JSON.stringify(activation._value[i])})`);
  }
  if (family === "custom" && !isCustomEvaluator(evaluator)) throw new NasSpecError("evaluator", 'family "custom" needs a custom evaluator ({"custom": "<registered evaluator>"})');
  const produced = producedMetrics(evaluator);
  if (produced) {
    const missing = (m: string) => `metric "${m}" is not reported by the evaluator (it reports ${produced.join(", ")})`;
    if (!produced.includes(raw.objective.metric)) throw new NasSpecError("objective.metric", missing(raw.objective.metric));
    raw.constraints.forEach((c, i) => {
      if (!produced.includes(c.metric)) throw new NasSpecError(`constraints[${i}].metric`, missing(c.metric));
    });
  }

  return { ...raw, family, searchSpace, evaluator };
}
