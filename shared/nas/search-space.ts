/**
 * Search spaces in the NNI format (https://nni.readthedocs.io/en/stable/hpo/search_space.html):
 *
 *   { "depth": { "_type": "choice", "_value": [2, 3, 4] }, "lr": { "_type": "loguniform", "_value": [1e-4, 0.1] } }
 *
 * Supported `_type`s: `choice`, `randint` ([low, high) integers), `uniform` ([low, high]),
 * `quniform` ([low, high, q]: clip(round(uniform(low, high) / q) * q, low, high)) and `loguniform`
 * ([low, high], low > 0). Nested choices (NNI's `_name` objects) are not supported; a choice value is a
 * number, string, boolean or an array of those (e.g. a list of layer widths).
 *
 * Bounds, so that a spec stays small and sampling exact: at most `MAX_SPACE_PARAMS` parameters, `MAX_CHOICE_VALUES`
 * values per choice, strings and lists of at most `MAX_CHOICE_VALUE_LENGTH`, numeric bounds within ±`MAX_BOUND`.
 *
 * Every function here is pure; randomness comes in as a `() => number` in [0, 1) (see `rng` in the builder).
 */
import { z } from "zod";
import { NasSpecError, fromZodError } from "./errors.js";

/** A scalar choice value. */
export type Scalar = number | string | boolean;
/** One parameter's value in a point. */
export type ParamValue = Scalar | Scalar[];
/** A point of a search space: one value per parameter. */
export type Point = Record<string, ParamValue>;

/** One parameter's distribution, in NNI form. */
export type ParamSpec =
  | { _type: "choice"; _value: ParamValue[] }
  | { _type: "randint"; _value: [number, number] }
  | { _type: "uniform"; _value: [number, number] }
  | { _type: "quniform"; _value: [number, number, number] }
  | { _type: "loguniform"; _value: [number, number] };

/** Parameter name → distribution. Key order fixes sampling and grid order. */
export type SearchSpace = Record<string, ParamSpec>;

/** Supported `_type`s. */
export const PARAM_TYPES = ["choice", "randint", "uniform", "quniform", "loguniform"] as const;
export type ParamType = (typeof PARAM_TYPES)[number];

/** Values `uniform` and `loguniform` parameters are cut into by `gridPoints` and the grid strategy. */
export const DEFAULT_GRID_STEPS = 5;
/** `gridPoints` refuses to materialize more points than this unless told otherwise. */
export const DEFAULT_MAX_GRID_POINTS = 100_000;

/** Most parameters in a search space (an mlp with a width per layer needs 64 + depth + activation). */
export const MAX_SPACE_PARAMS = 128;
/** Most values of one `choice`. */
export const MAX_CHOICE_VALUES = 1024;
/** Longest string, and longest list, that a `choice` value may be. */
export const MAX_CHOICE_VALUE_LENGTH = 1024;
/** Largest magnitude of a numeric bound (`randint`, `uniform`, `quniform`, `loguniform`): sampling stays exact. */
export const MAX_BOUND = 1e15;
/** Most q-steps of a `quniform` ((high - low) / q). */
export const MAX_QUNIFORM_STEPS = 1e9;

const scalarSchema = z.union([z.number(), z.string().max(MAX_CHOICE_VALUE_LENGTH), z.boolean()]);
const choiceValueSchema = z.union([scalarSchema, z.array(scalarSchema).max(MAX_CHOICE_VALUE_LENGTH)]);

const paramSchema = z
  .record(z.string(), z.unknown())
  .superRefine((p, ctx) => {
    for (const key of Object.keys(p)) {
      if (key !== "_type" && key !== "_value") ctx.addIssue({ code: "custom", path: [key], message: "unknown field" });
    }
    const type = p["_type"];
    if (typeof type !== "string") {
      ctx.addIssue({ code: "custom", path: ["_type"], message: type === undefined ? "is required" : "must be a string" });
      return;
    }
    if (!(PARAM_TYPES as readonly string[]).includes(type)) {
      ctx.addIssue({ code: "custom", path: ["_type"], message: `unknown type "${type}" (expected one of ${PARAM_TYPES.join(", ")})` });
      return;
    }
    const value = p["_value"];
    if (!Array.isArray(value)) {
      ctx.addIssue({ code: "custom", path: ["_value"], message: value === undefined ? "is required" : "must be an array" });
      return;
    }
    const bad = (message: string, ...path: (string | number)[]) => ctx.addIssue({ code: "custom", path: ["_value", ...path], message });
    if (type === "choice") {
      if (value.length === 0) return bad("choice needs at least one value");
      if (value.length > MAX_CHOICE_VALUES) return bad(`choice has ${value.length} values, more than ${MAX_CHOICE_VALUES}`);
      const seen = new Set<string>();
      value.forEach((v, i) => {
        if (!choiceValueSchema.safeParse(v).success) {
          return bad(`must be a number, string or boolean, or an array of those (strings and arrays of at most ${MAX_CHOICE_VALUE_LENGTH})`, i);
        }
        const key = JSON.stringify(v);
        if (seen.has(key)) bad(`duplicate value ${key}`, i);
        seen.add(key);
      });
      return;
    }
    const arity = type === "quniform" ? 3 : 2;
    const shape = type === "quniform" ? "[low, high, q]" : "[low, high]";
    if (value.length !== arity) return bad(`${type} needs ${shape}`);
    for (let i = 0; i < arity; i++) {
      const v: unknown = value[i];
      if (typeof v !== "number" || !Number.isFinite(v)) return bad("must be a finite number", i);
      if (type === "randint" && !Number.isInteger(v)) return bad("must be an integer", i);
      if (Math.abs(v) > MAX_BOUND) return bad(`must be within ±${MAX_BOUND}`, i);
    }
    const [low, high, q] = value as number[];
    if (low! >= high!) return bad(`low (${low}) must be < high (${high})`);
    if (type === "loguniform" && low! <= 0) return bad("loguniform low must be > 0", 0);
    if (type === "quniform" && q! <= 0) return bad("q must be > 0", 2);
    if (type === "quniform" && (high! - low!) / q! > MAX_QUNIFORM_STEPS) return bad(`q is too small: more than ${MAX_QUNIFORM_STEPS} steps between low and high`, 2);
  })
  .transform((p) => p as unknown as ParamSpec);

/** Zod schema of a search space; prefer `parseSearchSpace`, which throws a NasSpecError. */
export const searchSpaceSchema = z
  .record(z.string(), paramSchema)
  .refine((s) => Object.keys(s).length > 0, { message: "must define at least one parameter" })
  .refine((s) => Object.keys(s).length <= MAX_SPACE_PARAMS, { error: (iss) => `has ${Object.keys(iss.input as object).length} parameters, more than ${MAX_SPACE_PARAMS}` })
  .superRefine((s, ctx) => {
    for (const name of Object.keys(s)) {
      if (name === "") ctx.addIssue({ code: "custom", path: [name], message: "parameter names must not be empty" });
      else if (name.length > 128) ctx.addIssue({ code: "custom", path: [name], message: "parameter names must be at most 128 characters" });
    }
  });

/**
 * Validates an NNI search space. Throws NasSpecError naming the field, e.g.
 * `searchSpace.depth._type: unknown type "foo" (...)` or `searchSpace.lr._value[0]: loguniform low must be > 0`.
 * @param field the path prefix used in errors (default `searchSpace`).
 */
export function parseSearchSpace(x: unknown, field = "searchSpace"): SearchSpace {
  const r = searchSpaceSchema.safeParse(x, { reportInput: true });
  if (!r.success) throw fromZodError(r.error, field);
  return r.data;
}

/** Rounds to 12 significant digits so that 3 * 0.1 reads 0.3 in points and keys. */
function tidy(x: number): number {
  return Number.parseFloat(x.toPrecision(12));
}

function quniformRange(spec: { _value: [number, number, number] }): { kLo: number; kHi: number } {
  const [low, high, q] = spec._value;
  return { kLo: Math.round(low / q), kHi: Math.round(high / q) };
}

function quantize(spec: { _value: [number, number, number] }, k: number): number {
  const [low, high, q] = spec._value;
  return tidy(Math.min(high, Math.max(low, k * q)));
}

/** Number of distinct values a parameter can take (Infinity for `uniform` and `loguniform`). */
export function paramSize(spec: ParamSpec): number {
  switch (spec._type) {
    case "choice":
      return spec._value.length;
    case "randint":
      return spec._value[1] - spec._value[0];
    case "quniform": {
      const { kLo, kHi } = quniformRange(spec);
      return kHi - kLo + 1;
    }
    case "uniform":
    case "loguniform":
      return Infinity;
  }
}

/** Number of distinct points in the space: the product of `paramSize`s, Infinity if any is continuous. */
export function spaceSize(space: SearchSpace): number {
  let n = 1;
  for (const spec of Object.values(space)) n *= paramSize(spec);
  return n;
}

/** Number of grid values of a parameter: its `paramSize`, or `steps` for a continuous one. */
export function gridParamSize(spec: ParamSpec, steps = DEFAULT_GRID_STEPS): number {
  const n = paramSize(spec);
  return Number.isFinite(n) ? n : steps;
}

/**
 * The `i`-th grid value of a parameter. Continuous parameters are cut into `steps` values including both
 * ends: evenly spaced for `uniform`, geometrically for `loguniform` (one step gives the (geometric) midpoint).
 * `quniform` uses its q-multiples and is never cut further.
 */
export function gridValueAt(spec: ParamSpec, i: number, steps = DEFAULT_GRID_STEPS): ParamValue {
  switch (spec._type) {
    case "choice":
      return spec._value[i]!;
    case "randint":
      return spec._value[0] + i;
    case "quniform":
      return quantize(spec, quniformRange(spec).kLo + i);
    case "uniform": {
      const [low, high] = spec._value;
      return tidy(steps === 1 ? (low + high) / 2 : low + ((high - low) * i) / (steps - 1));
    }
    case "loguniform": {
      const [a, b] = [Math.log(spec._value[0]), Math.log(spec._value[1])];
      return tidy(Math.exp(steps === 1 ? (a + b) / 2 : a + ((b - a) * i) / (steps - 1)));
    }
  }
}

/** Size of the grid over the space (product of `gridParamSize`s). */
export function gridSize(space: SearchSpace, steps = DEFAULT_GRID_STEPS): number {
  let n = 1;
  for (const spec of Object.values(space)) n *= gridParamSize(spec, steps);
  return n;
}

/**
 * The `index`-th grid point, in the order of nested loops over the parameters in key order
 * (the last parameter varies fastest). `index` must be in [0, gridSize).
 */
export function gridPointAt(space: SearchSpace, index: number, steps = DEFAULT_GRID_STEPS): Point {
  const names = Object.keys(space);
  const point: Point = {};
  let rest = index;
  for (let p = names.length - 1; p >= 0; p--) {
    const spec = space[names[p]!]!;
    const n = gridParamSize(spec, steps);
    point[names[p]!] = gridValueAt(spec, rest % n, steps);
    rest = Math.floor(rest / n);
  }
  // Keep the key order of the space for readable points.
  const ordered: Point = {};
  for (const name of names) ordered[name] = point[name]!;
  return ordered;
}

/**
 * Every grid point (see `gridPointAt` for order and `gridValueAt` for how continuous parameters are cut).
 * @param opts.steps values per continuous parameter (default 5)
 * @param opts.maxPoints refuse larger grids (default 100,000)
 * @throws NasSpecError (`searchSpace`) if the grid has more than `maxPoints` points.
 */
export function gridPoints(space: SearchSpace, opts: { maxPoints?: number; steps?: number } = {}): Point[] {
  const steps = opts.steps ?? DEFAULT_GRID_STEPS;
  const maxPoints = opts.maxPoints ?? DEFAULT_MAX_GRID_POINTS;
  const n = gridSize(space, steps);
  if (n > maxPoints) throw new NasSpecError("searchSpace", `grid has ${n} points, more than maxPoints (${maxPoints})`);
  const out: Point[] = [];
  for (let i = 0; i < n; i++) out.push(gridPointAt(space, i, steps));
  return out;
}

/** Samples one parameter; consumes exactly one random number. */
export function sampleParam(spec: ParamSpec, rand: () => number): ParamValue {
  const r = rand();
  switch (spec._type) {
    case "choice":
      return spec._value[Math.floor(r * spec._value.length)]!;
    case "randint":
      return spec._value[0] + Math.floor(r * (spec._value[1] - spec._value[0]));
    case "uniform":
      return spec._value[0] + r * (spec._value[1] - spec._value[0]);
    case "quniform": {
      const [low, high, q] = spec._value;
      return quantize(spec, Math.round((low + r * (high - low)) / q));
    }
    case "loguniform": {
      const [a, b] = [Math.log(spec._value[0]), Math.log(spec._value[1])];
      return Math.exp(a + r * (b - a));
    }
  }
}

/** A random point: each parameter sampled independently, in key order, one random number each. */
export function sample(space: SearchSpace, rand: () => number): Point {
  const point: Point = {};
  for (const [name, spec] of Object.entries(space)) point[name] = sampleParam(spec, rand);
  return point;
}

/** Index of `value` among a finite parameter's values, or -1 if it is not one of them. */
function valueIndex(spec: ParamSpec, value: ParamValue | undefined): number {
  if (value === undefined) return -1;
  switch (spec._type) {
    case "choice": {
      const key = JSON.stringify(value);
      return spec._value.findIndex((v) => JSON.stringify(v) === key);
    }
    case "randint":
      return typeof value === "number" && Number.isInteger(value) && value >= spec._value[0] && value < spec._value[1] ? value - spec._value[0] : -1;
    case "quniform": {
      if (typeof value !== "number") return -1;
      const { kLo, kHi } = quniformRange(spec);
      for (const k of [Math.round(value / spec._value[2]), kLo, kHi]) {
        if (k >= kLo && k <= kHi && quantize(spec, k) === value) return k - kLo;
      }
      return -1;
    }
    default:
      return -1;
  }
}

/** Standard normal deviate (Box-Muller) from a uniform generator; consumes two numbers. */
export function gaussian(rand: () => number): number {
  const u = 1 - rand();
  const v = rand();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/** Standard deviation of a continuous mutation, as a fraction of the (log-)range. */
export const MUTATION_SCALE = 0.2;

/**
 * Mutates one parameter of `point` (the evolution strategy's mutation; Real et al. 2019 change one op).
 * The parameter is picked uniformly among those with more than one value. A finite parameter gets a
 * different value picked uniformly; a continuous one moves by a Gaussian step of `MUTATION_SCALE` of its
 * range (in log space for `loguniform`), reflected back into range. Returns a new point; a space where
 * no parameter can change returns a copy.
 */
export function mutate(space: SearchSpace, point: Point, rand: () => number): Point {
  const names = Object.keys(space).filter((n) => paramSize(space[n]!) > 1);
  const child: Point = { ...point };
  if (names.length === 0) return child;
  const name = names[Math.floor(rand() * names.length)]!;
  const spec = space[name]!;
  if (spec._type === "uniform" || spec._type === "loguniform") {
    const log = spec._type === "loguniform";
    const f = (x: number) => (log ? Math.log(x) : x);
    const [lo, hi] = [f(spec._value[0]), f(spec._value[1])];
    const cur = typeof point[name] === "number" ? f(point[name] as number) : (lo + hi) / 2;
    let x = cur + gaussian(rand) * MUTATION_SCALE * (hi - lo);
    if (x < lo) x = 2 * lo - x;
    if (x > hi) x = 2 * hi - x;
    x = Math.min(hi, Math.max(lo, x));
    child[name] = log ? Math.exp(x) : x;
    return child;
  }
  const n = paramSize(spec);
  const cur = valueIndex(spec, point[name]);
  let j: number;
  if (cur < 0) j = Math.floor(rand() * n);
  else {
    j = Math.floor(rand() * (n - 1));
    if (j >= cur) j++;
  }
  child[name] = gridValueAt(spec, j);
  return child;
}

/**
 * A canonical string for a point (values in the space's key order), for deduplication and maps.
 * Parameters outside the space are ignored.
 */
export function pointKey(space: SearchSpace, point: Point): string {
  return JSON.stringify(Object.keys(space).map((n) => point[n] ?? null));
}

/** True if every parameter of the space has a value the space can produce. */
export function inSpace(space: SearchSpace, point: Point): boolean {
  return Object.entries(space).every(([name, spec]) => {
    const v = point[name];
    if (spec._type === "uniform" || spec._type === "loguniform") return typeof v === "number" && v >= spec._value[0] && v <= spec._value[1];
    return valueIndex(spec, v) >= 0;
  });
}
