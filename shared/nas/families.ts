/**
 * Model families: turn a sampled point into an ONNX model (float32, input "input" with symbolic batch "N",
 * output "output" of shape [N, classes], weights from a seeded generator so equal points give equal bytes).
 *
 * - `mlp`: `depth` hidden layers of `width` units (per layer `width_<i>`, or a `widths` list), `activation`.
 * - `cnn`: `stages` stages of `blocks` conv blocks, `channels` doubling per stage, `kernel`, `residual`.
 * - `cell`: a NAS-Bench-201-style cell (see `buildCell`), its space given by `cellSearchSpace()`.
 *
 * Hidden activations are ReLU where the design allows, so that NASWOT has ReLU codes to read.
 */
import { ElemType, floatTensor, mlp, model, node, randomFloats, rng, valueInfo, type ModelProto, type NodeProto, type TensorProto } from "#shared/onnx/builder.js";
import { NasSpecError } from "./errors.js";
import { gridValueAt, paramSize, type ParamSpec, type ParamValue, type Point, type SearchSpace } from "./search-space.js";

/** Families that build their own models. */
export const FAMILY_NAMES = ["mlp", "cnn", "cell"] as const;
export type Family = (typeof FAMILY_NAMES)[number];

/** Options of a family that are not searched. */
export interface FamilyOptions {
  /**
   * Input shape without the batch dimension: mlp `[features]` (default [64]);
   * cnn and cell `[channels, height, width]` (default [3, 16, 16]).
   */
  inputShape?: number[];
  /** Output width (default 10). */
  classes?: number;
  /** Weight seed (default 1). */
  seed?: number;
  /** cell: channels of the stem and every cell (default 16). */
  channels?: number;
  /** cell: how many cells are stacked, each with its own weights (default 1). */
  cells?: number;
}

/** Ops of a cell edge: zero, identity, ReLU-Conv1x1, ReLU-Conv3x3, 3x3 average pooling. */
export const CELL_OPS = ["none", "skip", "conv1x1", "conv3x3", "avgpool3x3"] as const;
export type CellOp = (typeof CELL_OPS)[number];
/** NAS-Bench-201 names of the same ops, for `cellArchString`. */
const NB201_OP_NAMES: Record<CellOp, string> = {
  none: "none",
  skip: "skip_connect",
  conv1x1: "nor_conv_1x1",
  conv3x3: "nor_conv_3x3",
  avgpool3x3: "avg_pool_3x3",
};
/** The six edges i→j (i < j) of a 4-node cell, in NAS-Bench-201 order: parameter `edge_<i>_<j>`. */
export const CELL_EDGES: readonly (readonly [number, number])[] = [
  [0, 1],
  [0, 2],
  [1, 2],
  [0, 3],
  [1, 3],
  [2, 3],
];
const edgeParam = (i: number, j: number) => `edge_${i}_${j}`;

/** The cell family's search space: one `choice` of `CELL_OPS` per edge (5^6 = 15,625 cells). */
export function cellSearchSpace(): SearchSpace {
  const space: SearchSpace = {};
  for (const [i, j] of CELL_EDGES) space[edgeParam(i, j)] = { _type: "choice", _value: [...CELL_OPS] };
  return space;
}

/** A cell point as a NAS-Bench-201 architecture string, e.g. `|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...|`. */
export function cellArchString(point: Point): string {
  const nodes: string[] = [];
  for (let j = 1; j <= 3; j++) {
    const ops: string[] = [];
    for (let i = 0; i < j; i++) ops.push(`${NB201_OP_NAMES[cellOp(point, i, j)]}~${i}`);
    nodes.push(`|${ops.join("|")}|`);
  }
  return nodes.join("+");
}

type Check = (v: ParamValue) => string | null;

/** Checks of integer parameters, which a continuous (`uniform`, `loguniform`) parameter can never satisfy. */
const integral = new WeakSet<Check>();
const intIn = (min: number, max: number): Check => {
  const check: Check = (v) =>
    typeof v === "number" && Number.isInteger(v) && v >= min && v <= max ? null : `must be an integer in [${min}, ${max}], got ${JSON.stringify(v)}`;
  integral.add(check);
  return check;
};
const oneOf =
  (values: readonly (string | number)[]): Check =>
  (v) =>
    (values as readonly unknown[]).includes(v) ? null : `must be one of ${values.map((x) => JSON.stringify(x)).join(", ")}, got ${JSON.stringify(v)}`;
const boolish: Check = (v) => (toBool(v) === undefined ? `must be a boolean, got ${JSON.stringify(v)}` : null);
const intList =
  (min: number, max: number): Check =>
  (v) =>
    Array.isArray(v) && v.length > 0 && v.every((x) => intIn(min, max)(x) === null)
      ? null
      : `must be a non-empty list of integers in [${min}, ${max}], got ${JSON.stringify(v)}`;

function toBool(v: ParamValue): boolean | undefined {
  if (v === true || v === 1 || v === "true") return true;
  if (v === false || v === 0 || v === "false") return false;
  return undefined;
}

const MAX_WIDTH = 65_536;
const ACTIVATIONS = { relu: "Relu", tanh: "Tanh", sigmoid: "Sigmoid" } as const;

/** The parameters each family reads, with their checks; other parameters are ignored by the builders. */
const FAMILY_PARAMS: Record<Family, { params: Record<string, Check>; pattern?: [RegExp, Check]; required?: string[] }> = {
  mlp: {
    params: { depth: intIn(1, 64), width: intIn(1, MAX_WIDTH), widths: intList(1, MAX_WIDTH), activation: oneOf(Object.keys(ACTIVATIONS)) },
    pattern: [/^width_\d+$/, intIn(1, MAX_WIDTH)],
  },
  cnn: {
    params: { stages: intIn(1, 6), blocks: intIn(1, 8), channels: intIn(1, 1024), kernel: oneOf([1, 3, 5, 7]), residual: boolish },
  },
  cell: {
    params: Object.fromEntries(CELL_EDGES.map(([i, j]) => [edgeParam(i, j), oneOf(CELL_OPS)])),
    required: CELL_EDGES.map(([i, j]) => edgeParam(i, j)),
  },
};

function checkFor(family: Family, name: string): Check | undefined {
  const f = FAMILY_PARAMS[family];
  if (f.params[name]) return f.params[name];
  if (f.pattern && f.pattern[0].test(name)) return f.pattern[1];
  return undefined;
}

/** Finite parameters up to this many values are checked value by value; larger ones at a few probes. */
const MAX_CHECKED_VALUES = 10_000;

/**
 * Checks that a search space fits a family: every parameter the family reads can only take values it
 * accepts, and required parameters (the cell's six edges) are present. Unknown parameters are allowed
 * (a custom evaluator may read them).
 * @throws NasSpecError naming e.g. `searchSpace.kernel._value[1]` or `searchSpace`.
 */
export function checkFamilySpace(family: Family, space: SearchSpace, field = "searchSpace"): void {
  for (const name of FAMILY_PARAMS[family].required ?? []) {
    if (!(name in space)) throw new NasSpecError(field, `family "${family}" needs parameter "${name}"`);
  }
  for (const [name, spec] of Object.entries(space)) {
    const check = checkFor(family, name);
    if (!check) continue;
    if (integral.has(check) && (spec._type === "uniform" || spec._type === "loguniform")) {
      throw new NasSpecError(`${field}.${name}._type`, `${family} parameter "${name}" must be an integer: use choice, randint or quniform, not ${spec._type}`);
    }
    for (const [v, path] of probeValues(spec)) {
      const err = check(v);
      if (err) throw new NasSpecError(`${field}.${name}._value${path}`, `${family} parameter "${name}" ${err}`);
    }
  }
}

function probeValues(spec: ParamSpec): [ParamValue, string][] {
  const n = paramSize(spec);
  if (spec._type === "choice") return spec._value.map((v, i) => [v, `[${i}]`]);
  if (Number.isFinite(n) && n <= MAX_CHECKED_VALUES) return Array.from({ length: n }, (_, i) => [gridValueAt(spec, i), ""]);
  if (spec._type === "randint") return [[spec._value[0], ""], [spec._value[1] - 1, ""]];
  const [low, high] = spec._value;
  return [[low, ""], [(low + high) / 2, ""], [high, ""]];
}

function read<T>(family: Family, point: Point, name: string, fallback: T, convert: (v: ParamValue) => T): T {
  const v = point[name];
  if (v === undefined) return fallback;
  const err = checkFor(family, name)?.(v);
  if (err) throw new NasSpecError(`point.${name}`, `${family} parameter "${name}" ${err}`);
  return convert(v);
}

const asNumber = (v: ParamValue) => v as number;

function positiveInts(field: string, v: number[] | undefined, len: number, fallback: number[]): number[] {
  if (v === undefined) return fallback;
  if (v.length !== len || !v.every((x) => Number.isInteger(x) && x >= 1)) throw new NasSpecError(field, `must be ${len} positive integers, got [${v}]`);
  return v;
}

/**
 * An MLP: `input [N, F]` → hidden layers (MatMul + Add + activation) → `output [N, classes]` (no softmax).
 * Point: `depth` (default 2), `width` (default 64), `width_<i>` per hidden layer i (0-based, overrides
 * `width`), or `widths` (a list, overrides both), `activation` relu|tanh|sigmoid (default relu).
 * @throws NasSpecError (`point.<param>`) for a value the family does not accept.
 */
export function buildMlp(point: Point, opts: FamilyOptions = {}): ModelProto {
  const activation = read("mlp", point, "activation", "Relu" as const, (v) => ACTIVATIONS[v as keyof typeof ACTIVATIONS]);
  return mlp({ layers: mlpLayers(point, opts), seed: opts.seed ?? 1, activation });
}

/** The layer widths of an mlp point: [features, ...hidden, classes]. */
function mlpLayers(point: Point, opts: FamilyOptions): number[] {
  const [features] = positiveInts("familyOptions.inputShape", opts.inputShape, 1, [64]);
  const classes = opts.classes ?? 10;
  const widths = read("mlp", point, "widths", undefined as number[] | undefined, (v) => v as number[]);
  const depth = read("mlp", point, "depth", 2, asNumber);
  const width = read("mlp", point, "width", 64, asNumber);
  const hidden = widths ?? Array.from({ length: depth }, (_, i) => read("mlp", point, `width_${i}`, width, asNumber));
  return [features!, ...hidden, classes];
}

/** Accumulates nodes and He-uniform weights for conv nets. */
class ConvNet {
  readonly nodes: NodeProto[] = [];
  readonly inits: TensorProto[] = [];
  private readonly rand: () => number;
  private n = 0;

  constructor(seed: number) {
    this.rand = rng(seed);
  }

  name(prefix: string): string {
    return `${prefix}_${this.n++}`;
  }

  op(opType: string, inputs: string[], prefix: string, attrs: Parameters<typeof node>[3] = {}): string {
    const out = this.name(prefix);
    this.nodes.push(node(opType, inputs, [out], attrs));
    return out;
  }

  /** Bias-free conv with "same" padding (as in NAS-Bench-201, where BN follows every conv). */
  conv(x: string, cin: number, cout: number, k: number, stride: number, prefix: string): string {
    const w = this.name(`${prefix}_w`);
    this.inits.push(floatTensor(w, [cout, cin, k, k], randomFloats(cout * cin * k * k, this.rand, Math.sqrt(6 / (cin * k * k)))));
    const p = Math.floor(k / 2);
    return this.op("Conv", [x, w], prefix, { kernel_shape: [k, k], strides: [stride, stride], pads: [p, p, p, p] });
  }

  /** Global average pool, flatten, and a linear layer to `output`. */
  head(x: string, cin: number, classes: number): void {
    const pooled = this.op("GlobalAveragePool", [x], "gap");
    const flat = this.op("Flatten", [pooled], "flatten", { axis: 1 });
    const w = this.name("fc_w");
    const b = this.name("fc_b");
    this.inits.push(floatTensor(w, [cin, classes], randomFloats(cin * classes, this.rand, Math.sqrt(6 / (cin + classes)))));
    this.inits.push(floatTensor(b, [classes], randomFloats(classes, this.rand, 0.1)));
    const mm = this.op("MatMul", [flat, w], "fc");
    this.nodes.push(node("Add", [mm, b], ["output"]));
  }

  model(name: string, inputShape: number[], classes: number): ModelProto {
    return model({
      name,
      nodes: this.nodes,
      inputs: [valueInfo("input", ElemType.FLOAT, ["N", ...inputShape])],
      outputs: [valueInfo("output", ElemType.FLOAT, ["N", classes])],
      initializers: this.inits,
    });
  }
}

/**
 * A plain or residual CNN: stem Conv(k)+ReLU to `channels`; then `stages` stages of `blocks` blocks,
 * channels doubling and resolution halving (stride 2 in the first block) from the second stage on; a block
 * is Conv(k)+ReLU+Conv(k), plus (if `residual`) the input (1x1 conv where shapes change), then ReLU; then
 * global average pool and a linear classifier.
 * Point: `stages` (default 2), `blocks` (default 1), `channels` (default 16), `kernel` 1|3|5|7 (default 3),
 * `residual` (default false). Input default [N, 3, 16, 16].
 * @throws NasSpecError (`point.<param>`) for a value the family does not accept.
 */
export function buildCnn(point: Point, opts: FamilyOptions = {}): ModelProto {
  const { inputShape, classes, stages, blocks, channels, k, residual } = cnnShape(point, opts);
  const net = new ConvNet(opts.seed ?? 1);
  let x = net.op("Relu", [net.conv("input", inputShape[0]!, channels, k, 1, "stem")], "stem_relu");
  let cin = channels;
  for (let s = 0; s < stages; s++) {
    const cout = channels * 2 ** s;
    for (let b = 0; b < blocks; b++) {
      const stride = s > 0 && b === 0 ? 2 : 1;
      const tag = `s${s}b${b}`;
      let y = net.op("Relu", [net.conv(x, cin, cout, k, stride, `${tag}_conv1`)], `${tag}_relu1`);
      y = net.conv(y, cout, cout, k, 1, `${tag}_conv2`);
      if (residual) {
        const shortcut = stride === 1 && cin === cout ? x : net.conv(x, cin, cout, 1, stride, `${tag}_proj`);
        y = net.op("Add", [y, shortcut], `${tag}_add`);
      }
      x = net.op("Relu", [y], `${tag}_relu2`);
      cin = cout;
    }
  }
  net.head(x, cin, classes);
  return net.model(`cnn_s${stages}_b${blocks}_c${channels}_k${k}${residual ? "_res" : ""}`, inputShape, classes);
}

/** The hyperparameters of a cnn point, defaults filled in. */
function cnnShape(point: Point, opts: FamilyOptions) {
  return {
    inputShape: positiveInts("familyOptions.inputShape", opts.inputShape, 3, [3, 16, 16]),
    classes: opts.classes ?? 10,
    stages: read("cnn", point, "stages", 2, asNumber),
    blocks: read("cnn", point, "blocks", 1, asNumber),
    channels: read("cnn", point, "channels", 16, asNumber),
    k: read("cnn", point, "kernel", 3, asNumber),
    residual: read("cnn", point, "residual", false, (v) => toBool(v)!),
  };
}

function cellOp(point: Point, i: number, j: number): CellOp {
  const name = edgeParam(i, j);
  const v = point[name];
  if (v === undefined) throw new NasSpecError(`point.${name}`, `cell parameter "${name}" is required`);
  const err = checkFor("cell", name)!(v);
  if (err) throw new NasSpecError(`point.${name}`, `cell parameter "${name}" ${err}`);
  return v as CellOp;
}

/**
 * A NAS-Bench-201-style network: stem Conv3x3 (to `channels`), `cells` copies of the cell, ReLU, global
 * average pool, linear classifier. Input default [N, 3, 16, 16].
 *
 * The cell has nodes 0..3; node 0 is the cell input, node j the sum of op(i→j)(node i) over its incoming
 * edges, node 3 the cell output. Ops (`CELL_OPS`): `skip` identity, `conv1x1`/`conv3x3` ReLU then bias-free
 * conv (BN is left out: at initialization in inference mode it is the identity), `avgpool3x3` stride 1 with
 * padding not counted. `none` edges are dropped. A node with no live input is zero, so its out-edges are
 * dropped too; nodes that cannot reach node 3 are pruned. If node 3 has no live input the cell outputs
 * zeros (input × 0), as in NAS-Bench-201, and the graph stays valid.
 * Point: `edge_<i>_<j>` for the six edges (`cellSearchSpace()`).
 * @throws NasSpecError (`point.edge_i_j`) for a missing or unknown op.
 */
export function buildCell(point: Point, opts: FamilyOptions = {}): ModelProto {
  const inputShape = positiveInts("familyOptions.inputShape", opts.inputShape, 3, [3, 16, 16]);
  const classes = opts.classes ?? 10;
  const c = opts.channels ?? 16;
  const cells = opts.cells ?? 1;
  const ops = new Map(CELL_EDGES.map(([i, j]) => [`${i}${j}`, cellOp(point, i, j)]));
  const live = (i: number, j: number) => ops.get(`${i}${j}`) !== "none";

  const reached = [true, false, false, false];
  for (let j = 1; j <= 3; j++) for (let i = 0; i < j; i++) if (reached[i] && live(i, j)) reached[j] = true;
  const useful = [false, false, false, true];
  for (let i = 2; i >= 0; i--) for (let j = i + 1; j <= 3; j++) if (useful[j] && live(i, j)) useful[i] = true;
  const used = (i: number, j: number) => live(i, j) && reached[i]! && useful[j]!;

  const net = new ConvNet(opts.seed ?? 1);
  let x = net.conv("input", inputShape[0]!, c, 3, 1, "stem");
  let zero: string | undefined;
  for (let cell = 0; cell < cells; cell++) {
    const nodes: (string | undefined)[] = [x];
    for (let j = 1; j <= 3; j++) {
      const terms: string[] = [];
      for (let i = 0; i < j; i++) {
        if (!used(i, j)) continue;
        const src = nodes[i]!;
        const tag = `c${cell}_e${i}${j}`;
        const op = ops.get(`${i}${j}`)!;
        if (op === "skip") terms.push(src);
        else if (op === "avgpool3x3") terms.push(net.op("AveragePool", [src], `${tag}_pool`, { kernel_shape: [3, 3], strides: [1, 1], pads: [1, 1, 1, 1], count_include_pad: 0 }));
        else terms.push(net.conv(net.op("Relu", [src], `${tag}_relu`), c, c, op === "conv1x1" ? 1 : 3, 1, `${tag}_conv`));
      }
      nodes[j] = terms.length === 0 ? undefined : terms.length === 1 ? terms[0] : net.op("Sum", terms, `c${cell}_n${j}`);
    }
    if (nodes[3] === undefined) {
      if (!zero) {
        zero = net.name("zero");
        net.inits.push(floatTensor(zero, [], [0]));
      }
      x = net.op("Mul", [x, zero], `c${cell}_zeros`);
    } else x = nodes[3];
  }
  net.head(net.op("Relu", [x], "lastact"), c, classes);
  return net.model(`cell_${CELL_EDGES.map(([i, j]) => ops.get(`${i}${j}`)).join("_")}`, inputShape, classes);
}

/**
 * Builds the model of `family` for `point`.
 * @throws NasSpecError for a point the family does not accept.
 */
export function buildModel(family: Family, point: Point, opts: FamilyOptions = {}): ModelProto {
  // checked before a single weight is allocated: the gateway builds these models on request
  const params = archParams(family, point, opts);
  if (params > MAX_ARCH_PARAMS) throw new NasSpecError("point", `the ${family} architecture has ${params} parameters, more than the most jetshard builds (${MAX_ARCH_PARAMS})`);
  switch (family) {
    case "mlp":
      return buildMlp(point, opts);
    case "cnn":
      return buildCnn(point, opts);
    case "cell":
      return buildCell(point, opts);
  }
}

/**
 * Most parameters (FP32 weights) of a model a family builds: 25 M, 100 MB. The gateway builds trial models in
 * memory (GET .../model.onnx, POST .../deploy) and so do workers, so specs whose space reaches beyond are refused.
 */
export const MAX_ARCH_PARAMS = 25_000_000;
/** Most values of one input sample (the product of `familyOptions.inputShape`): 1 Mi. */
export const MAX_INPUT_ELEMENTS = 1 << 20;

/**
 * Parameters (weights and biases) of `buildModel(family, point, opts)`, computed without building it: exact for
 * mlp and cnn, an upper bound for cell (edges that pruning drops are counted).
 * @throws NasSpecError (`point.<param>`) for a value the family does not accept.
 */
export function archParams(family: Family, point: Point, opts: FamilyOptions = {}): number {
  switch (family) {
    case "mlp": {
      const l = mlpLayers(point, opts);
      let n = 0;
      for (let i = 0; i + 1 < l.length; i++) n += l[i]! * l[i + 1]! + l[i + 1]!;
      return n;
    }
    case "cnn": {
      const { inputShape, classes, stages, blocks, channels, k, residual } = cnnShape(point, opts);
      let n = inputShape[0]! * channels * k * k;
      let cin = channels;
      for (let s = 0; s < stages; s++) {
        const cout = channels * 2 ** s;
        for (let b = 0; b < blocks; b++) {
          const stride = s > 0 && b === 0 ? 2 : 1;
          n += cin * cout * k * k + cout * cout * k * k;
          if (residual && !(stride === 1 && cin === cout)) n += cin * cout;
          cin = cout;
        }
      }
      return n + cin * classes + classes;
    }
    case "cell": {
      const inputShape = positiveInts("familyOptions.inputShape", opts.inputShape, 3, [3, 16, 16]);
      const c = opts.channels ?? 16;
      const classes = opts.classes ?? 10;
      let perCell = 0;
      for (const [i, j] of CELL_EDGES) {
        const op = cellOp(point, i, j);
        if (op === "conv1x1") perCell += c * c;
        else if (op === "conv3x3") perCell += c * c * 9;
      }
      return inputShape[0]! * c * 9 + (opts.cells ?? 1) * perCell + c * classes + classes + 1;
    }
  }
}

/** A parameter's values (every one when there are at most MAX_CHECKED_VALUES, else its probes). */
function numericValues(spec: ParamSpec): number[] {
  return probeValues(spec)
    .map(([v]) => v)
    .filter((v): v is number => typeof v === "number");
}

/**
 * The point of `space` whose model is largest (for mlp, one per depth: a deeper mlp is not always larger).
 * Relies on `checkFamilySpace` having passed: every parameter the family reads has acceptable values.
 */
function largestPoints(family: Family, space: SearchSpace): Point[] {
  const max = (name: string): Point => {
    const spec = space[name];
    if (!spec) return {};
    const vs = numericValues(spec);
    return vs.length ? { [name]: Math.max(...vs) } : {};
  };
  switch (family) {
    case "mlp": {
      const widths = space.widths;
      if (widths?._type === "choice") return widths._value.map((w) => ({ widths: w }));
      const perLayer = Object.keys(space)
        .filter((n) => /^width_\d+$/.test(n))
        .reduce<Point>((p, n) => ({ ...p, ...max(n) }), max("width"));
      const depths = space.depth ? [...new Set(numericValues(space.depth))] : [undefined];
      return depths.map((d) => (d === undefined ? perLayer : { ...perLayer, depth: d }));
    }
    case "cnn": {
      const residual = space.residual ? probeValues(space.residual).some(([v]) => toBool(v) === true) : false;
      return [{ ...max("stages"), ...max("blocks"), ...max("channels"), ...max("kernel"), ...(residual ? { residual: true } : {}) }];
    }
    case "cell": {
      const cost = (op: ParamValue) => (op === "conv3x3" ? 2 : op === "conv1x1" ? 1 : 0);
      const point: Point = {};
      for (const [i, j] of CELL_EDGES) {
        const spec = space[edgeParam(i, j)]!;
        const ops = spec._type === "choice" ? spec._value : ["conv3x3"];
        point[edgeParam(i, j)] = ops.reduce((a, b) => (cost(b) > cost(a) ? b : a));
      }
      return [point];
    }
  }
}

/**
 * Checks that no point of `space` makes a model larger than MAX_ARCH_PARAMS, and that an input sample has at
 * most MAX_INPUT_ELEMENTS values. Call after `checkFamilySpace`.
 * @throws NasSpecError naming `familyOptions.inputShape`, `searchSpace` (mlp, cnn) or `familyOptions` (cell: its
 *   size comes from channels, cells, inputShape and classes).
 */
export function checkFamilySize(family: Family, space: SearchSpace, opts: FamilyOptions = {}, field = "searchSpace"): void {
  const elements = (opts.inputShape ?? []).reduce((a, b) => a * b, 1);
  if (elements > MAX_INPUT_ELEMENTS) {
    throw new NasSpecError("familyOptions.inputShape", `an input sample of [${opts.inputShape}] has ${elements} values, more than ${MAX_INPUT_ELEMENTS}`);
  }
  let worst: { params: number; point: Point } | null = null;
  for (const point of largestPoints(family, space)) {
    const params = archParams(family, point, opts);
    if (!worst || params > worst.params) worst = { params, point };
  }
  if (worst && worst.params > MAX_ARCH_PARAMS) {
    const where = family === "cell" ? "familyOptions" : field;
    const what = family === "cell" ? `channels ${opts.channels ?? 16} and cells ${opts.cells ?? 1}` : `the point ${JSON.stringify(worst.point)}`;
    throw new NasSpecError(where, `the largest ${family} model of this spec (${what}) has ${worst.params} parameters, more than the most jetshard builds (${MAX_ARCH_PARAMS}): make it smaller`);
  }
}
