/**
 * Built-in, training-free metrics of an ONNX model: parameter count, MACs, CPU latency and the NASWOT
 * score (Mellor et al. 2021, "Neural Architecture Search without Training").
 *
 * `params` and `flops` are pure; `latency` and `naswot` run the model once or more in onnxruntime-node.
 * Models are taken as `ModelProto` objects (from the families or `decodeModel`) or encoded bytes.
 */
import ort from "onnxruntime-node";
import { ElemType, decodeModel, encodeModel, rng, valueInfo, type Dim, type ModelProto, type NodeProto, type TensorProto, type ValueInfoProto } from "#shared/onnx/builder.js";
import { assertNoExternalData } from "#shared/onnx/external-data.js";
import { NasSpecError } from "./errors.js";
import { gaussian } from "./search-space.js";
import { METRIC_OUTPUT, type BuiltinEvaluator } from "./spec.js";

type AnyModel = ModelProto | Uint8Array;

function asModel(m: AnyModel): ModelProto {
  return m instanceof Uint8Array ? decodeModel(m) : m;
}

/** protobufjs may hand 64-bit integers back as Long objects. */
function num(x: unknown): number {
  if (typeof x === "number") return x;
  if (typeof x === "bigint") return Number(x);
  if (x && typeof x === "object" && "toNumber" in x && typeof x.toNumber === "function") return x.toNumber() as number;
  return Number(x);
}

function product(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

/**
 * Number of parameters: the summed element counts of all initializers, except int32/int64 ones
 * (shapes, axes and indices rather than weights).
 */
export function params(m: AnyModel): number {
  const model = asModel(m);
  let n = 0;
  for (const t of model.graph?.initializer ?? []) {
    if (t.dataType === ElemType.INT64 || t.dataType === ElemType.INT32) continue;
    n += product((t.dims ?? []).map(num));
  }
  return n;
}

/** The model's data input (the first graph input that is not an initializer). */
function dataInput(model: ModelProto): ValueInfoProto {
  const inits = new Set((model.graph?.initializer ?? []).map((t) => t.name));
  const input = (model.graph?.input ?? []).find((i) => !inits.has(i.name));
  if (!input?.name) throw new Error("model has no data input");
  return input;
}

function declaredDims(vi: ValueInfoProto): Dim[] | undefined {
  const dims = vi.type?.tensorType?.shape?.dim;
  if (!dims) return undefined;
  return dims.map((d) => (d.dimParam ? d.dimParam : d.dimValue !== undefined && d.dimValue !== null ? num(d.dimValue) : "?"));
}

/**
 * The per-sample input shape: `inputShape` if given, else the declared input dims after the batch dim.
 * @throws Error if the model leaves a non-batch dim symbolic and no `inputShape` is given.
 */
export function modelInputShape(m: AnyModel, inputShape?: readonly number[]): { name: string; batchDim: Dim; shape: number[] } {
  const model = asModel(m);
  const input = dataInput(model);
  const dims = declaredDims(input);
  const batchDim = dims?.[0] ?? "N";
  if (inputShape) return { name: input.name!, batchDim, shape: [...inputShape] };
  const rest = dims?.slice(1);
  if (!rest || rest.some((d) => typeof d !== "number")) throw new Error(`input ${input.name}: shape [${dims ?? "?"}] is not fixed after the batch dim; pass inputShape`);
  return { name: input.name!, batchDim, shape: rest as number[] };
}

type Shape = Dim[] | undefined;

function attr(n: NodeProto, name: string) {
  return n.attribute?.find((a) => a.name === name);
}
function attrInt(n: NodeProto, name: string, fallback: number): number {
  const a = attr(n, name);
  return a?.i !== undefined && a.i !== null ? num(a.i) : fallback;
}
function attrInts(n: NodeProto, name: string): number[] | undefined {
  const a = attr(n, name);
  return a?.ints && a.ints.length > 0 ? a.ints.map(num) : undefined;
}
function attrString(n: NodeProto, name: string, fallback: string): string {
  const s = attr(n, name)?.s;
  return s && s.length > 0 ? new TextDecoder().decode(s) : fallback;
}

function int64Values(t: TensorProto): number[] | undefined {
  if (t.dataType !== ElemType.INT64) return undefined;
  if (t.int64Data && t.int64Data.length > 0) return t.int64Data.map(num);
  if (!t.rawData) return undefined;
  const bytes = Uint8Array.from(t.rawData);
  return Array.from(new BigInt64Array(bytes.buffer, 0, bytes.length / 8), Number);
}

/** Numpy broadcasting over possibly symbolic dims; undefined when it cannot be decided. */
function broadcast(shapes: Shape[]): Shape {
  if (shapes.some((s) => s === undefined)) return undefined;
  const rank = Math.max(...shapes.map((s) => s!.length));
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    let d: Dim = 1;
    for (const s of shapes) {
      const x = s![s!.length - rank + i];
      if (x === undefined || x === 1) continue;
      if (d === 1 || d === x) d = x;
      else if (typeof d === "string" && typeof x === "number") d = x;
      else if (typeof d === "number" && typeof x === "string") continue;
      else return undefined;
    }
    out.push(d);
  }
  return out;
}

/** Product of dims: a number, a lone symbol (times 1s), or undefined. */
function dimProduct(dims: readonly Dim[]): Dim | undefined {
  const syms = dims.filter((d) => typeof d === "string");
  const n = product(dims.filter((d): d is number => typeof d === "number"));
  if (syms.length === 0) return n;
  return syms.length === 1 && n === 1 ? syms[0] : undefined;
}

function poolLike(x: Dim[], k: number[], n: NodeProto): Shape {
  const spatial = x.slice(2);
  const strides = attrInts(n, "strides") ?? k.map(() => 1);
  const dil = attrInts(n, "dilations") ?? k.map(() => 1);
  const pads = attrInts(n, "pads") ?? k.map(() => 0).concat(k.map(() => 0));
  const autoPad = attrString(n, "auto_pad", "NOTSET");
  const ceil = attrInt(n, "ceil_mode", 0) === 1;
  const out: Dim[] = [];
  for (let i = 0; i < spatial.length; i++) {
    const d = spatial[i];
    if (typeof d !== "number") return undefined;
    const s = strides[i] ?? 1;
    if (autoPad === "SAME_UPPER" || autoPad === "SAME_LOWER") out.push(Math.ceil(d / s));
    else {
      const eff = (dil[i] ?? 1) * ((k[i] ?? 1) - 1) + 1;
      const span = d + (autoPad === "VALID" ? 0 : (pads[i] ?? 0) + (pads[i + spatial.length] ?? 0)) - eff;
      out.push((ceil ? Math.ceil(span / s) : Math.floor(span / s)) + 1);
    }
  }
  return out;
}

const SAME_SHAPE_OPS = new Set([
  "Relu", "LeakyRelu", "PRelu", "Tanh", "Sigmoid", "HardSigmoid", "HardSwish", "Softmax", "LogSoftmax", "Identity",
  "Dropout", "BatchNormalization", "InstanceNormalization", "LayerNormalization", "Clip", "Elu", "Selu", "Gelu", "Erf",
  "Exp", "Log", "Sqrt", "Abs", "Neg", "Cast", "Softplus", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Mish",
]);
const BROADCAST_OPS = new Set(["Add", "Sub", "Mul", "Div", "Pow", "Sum", "Max", "Min", "Mean", "Where", "Equal", "Less", "Greater"]);

function inferNode(n: NodeProto, shapeOf: (name: string) => Shape, constant: (name: string) => number[] | undefined): Shape {
  const ins = (n.input ?? []).map((name) => (name === "" ? undefined : shapeOf(name)));
  const x = ins[0];
  const op = n.opType ?? "";
  if (SAME_SHAPE_OPS.has(op)) return x;
  if (BROADCAST_OPS.has(op)) return broadcast(ins);
  if (!x) return undefined;
  switch (op) {
    case "MatMul": {
      const b = ins[1];
      if (!b) return undefined;
      const a2 = x.length === 1 ? [1, x[0]!] : x;
      const b2 = b.length === 1 ? [b[0]!, 1] : b;
      const lead = broadcast([a2.slice(0, -2), b2.slice(0, -2)]);
      if (!lead) return undefined;
      const out = [...lead, a2[a2.length - 2]!, b2[b2.length - 1]!];
      if (x.length === 1) out.splice(out.length - 2, 1);
      if (b.length === 1) out.pop();
      return out;
    }
    case "Gemm": {
      const b = ins[1];
      if (!b || x.length !== 2 || b.length !== 2) return undefined;
      return [attrInt(n, "transA", 0) ? x[1]! : x[0]!, attrInt(n, "transB", 0) ? b[0]! : b[1]!];
    }
    case "Conv": {
      const w = ins[1];
      if (!w) return undefined;
      const k = attrInts(n, "kernel_shape") ?? (w.slice(2) as number[]);
      const sp = poolLike(x, k, n);
      return sp && [x[0]!, w[0]!, ...sp];
    }
    case "ConvTranspose": {
      const w = ins[1];
      if (!w) return undefined;
      const k = attrInts(n, "kernel_shape") ?? (w.slice(2) as number[]);
      const strides = attrInts(n, "strides") ?? k.map(() => 1);
      const pads = attrInts(n, "pads") ?? k.map(() => 0).concat(k.map(() => 0));
      const outPad = attrInts(n, "output_padding") ?? k.map(() => 0);
      const sp: number[] = [];
      for (let i = 0; i < k.length; i++) {
        const d = x[i + 2];
        if (typeof d !== "number") return undefined;
        sp.push((strides[i] ?? 1) * (d - 1) + (outPad[i] ?? 0) + (k[i] ?? 1) - (pads[i] ?? 0) - (pads[i + k.length] ?? 0));
      }
      const cout = typeof w[1] === "number" ? w[1] * attrInt(n, "group", 1) : undefined;
      return cout === undefined ? undefined : [x[0]!, cout, ...sp];
    }
    case "AveragePool":
    case "MaxPool": {
      const k = attrInts(n, "kernel_shape");
      const sp = k && poolLike(x, k, n);
      return sp && [x[0]!, x[1]!, ...sp];
    }
    case "GlobalAveragePool":
    case "GlobalMaxPool":
      return [x[0]!, x[1]!, ...x.slice(2).map(() => 1)];
    case "Flatten": {
      let axis = attrInt(n, "axis", 1);
      if (axis < 0) axis += x.length;
      const a = dimProduct(x.slice(0, axis));
      const b = dimProduct(x.slice(axis));
      return a === undefined || b === undefined ? undefined : [a, b];
    }
    case "Transpose": {
      const perm = attrInts(n, "perm") ?? x.map((_, i) => x.length - 1 - i);
      return perm.map((p) => x[p]!);
    }
    case "Concat": {
      if (ins.some((s) => !s)) return undefined;
      let axis = attrInt(n, "axis", 0);
      if (axis < 0) axis += x.length;
      const parts = ins.map((s) => s![axis]!);
      if (parts.some((d) => typeof d !== "number")) return undefined;
      const out = [...x];
      out[axis] = (parts as number[]).reduce((a, b) => a + b, 0);
      return out;
    }
    case "Reshape": {
      const target = constant(n.input?.[1] ?? "");
      if (!target) return undefined;
      const out: Dim[] = target.map((d, i) => (d === 0 ? x[i]! : d));
      const hole = out.indexOf(-1);
      if (hole < 0) return out;
      const copied = new Set(target.flatMap((d, i) => (d === 0 ? [i] : [])));
      const restIn = x.filter((_, i) => !copied.has(i));
      if (restIn.some((d) => typeof d !== "number")) return undefined;
      const known = product(out.filter((d, i) => i !== hole && !copied.has(i)) as number[]);
      out[hole] = product(restIn as number[]) / known;
      return out;
    }
    case "ReduceMean":
    case "ReduceSum":
    case "ReduceMax": {
      const axes = (attrInts(n, "axes") ?? constant(n.input?.[1] ?? "") ?? x.map((_, i) => i)).map((a) => (a < 0 ? a + x.length : a));
      const keep = attrInt(n, "keepdims", 1) === 1;
      return x.flatMap((d, i) => (axes.includes(i) ? (keep ? [1] : []) : [d]));
    }
    default:
      return undefined;
  }
}

/**
 * Shapes of every tensor of the graph, inferred from the data input `[batchDim, ...inputShape]` for the
 * ops the families and common CNN/MLP exports use; tensors after an unsupported op fall back to the
 * graph's declared value_info or stay unknown (undefined).
 */
export function inferShapes(m: AnyModel, inputShape?: readonly number[], batchDim?: Dim): Map<string, Shape> {
  const model = asModel(m);
  const graph = model.graph ?? {};
  const input = modelInputShape(model, inputShape);
  const shapes = new Map<string, Shape>();
  const consts = new Map<string, number[]>();
  for (const t of graph.initializer ?? []) {
    shapes.set(t.name!, (t.dims ?? []).map(num));
    const v = int64Values(t);
    if (v) consts.set(t.name!, v);
  }
  shapes.set(input.name, [batchDim ?? input.batchDim, ...input.shape]);
  const declared = new Map<string, Dim[]>();
  for (const vi of [...(graph.valueInfo ?? []), ...(graph.output ?? [])]) {
    const d = declaredDims(vi);
    if (vi.name && d && !d.includes("?")) declared.set(vi.name, d);
  }
  for (const n of graph.node ?? []) {
    if (n.opType === "Constant") {
      const t = attr(n, "value")?.t;
      if (t) {
        shapes.set(n.output![0]!, (t.dims ?? []).map(num));
        const v = int64Values(t);
        if (v) consts.set(n.output![0]!, v);
      }
      continue;
    }
    const s = inferNode(n, (name) => shapes.get(name), (name) => consts.get(name));
    n.output?.forEach((o, i) => {
      if (o) shapes.set(o, (i === 0 ? s : undefined) ?? declared.get(o));
    });
  }
  return shapes;
}

/**
 * Multiply-accumulates of one forward pass of ONE sample (batch 1), for MatMul, Gemm, Conv and
 * ConvTranspose (the ops that dominate); every other op (activations, adds, pooling, normalization)
 * counts zero. Biases are not counted.
 * @param inputShape per-sample input shape; default: the model's declared dims after the batch dim.
 * @throws Error if the input shape of a counted op cannot be inferred.
 */
export function flops(m: AnyModel, inputShape?: readonly number[]): number {
  const model = asModel(m);
  const shapes = inferShapes(model, inputShape, 1);
  const known = (name: string | undefined, n: NodeProto): number[] => {
    const s = name ? shapes.get(name) : undefined;
    if (!s || s.some((d) => typeof d !== "number")) throw new Error(`flops: cannot infer the shape of ${name} (input of ${n.opType} node ${n.name ?? "?"})`);
    return s as number[];
  };
  let macs = 0;
  for (const n of model.graph?.node ?? []) {
    switch (n.opType) {
      case "MatMul":
      case "Gemm": {
        const a = known(n.input?.[0], n);
        const k = n.opType === "Gemm" && attrInt(n, "transA", 0) ? a[0]! : a[a.length - 1]!;
        macs += product(known(n.output?.[0], n)) * k;
        break;
      }
      case "Conv": {
        const w = known(n.input?.[1], n);
        macs += product(known(n.output?.[0], n)) * product(w.slice(1));
        break;
      }
      case "ConvTranspose": {
        const w = known(n.input?.[1], n);
        macs += product(known(n.input?.[0], n)) * product(w.slice(1));
        break;
      }
    }
  }
  return macs;
}

/** Options of `latency`. */
export interface LatencyOptions {
  /** Batch size of each run (default 1). */
  batch?: number;
  /** Timed runs (default 20). */
  runs?: number;
  /** Untimed runs first (default 3). */
  warmup?: number;
  /** Per-sample input shape; default from the model. */
  inputShape?: number[];
  /** ORT intra-op threads (default: ORT's choice). */
  threads?: number;
  /** ORT execution providers, e.g. ["cuda", "cpu"] to time on the GPU (default: CPU). */
  providers?: string[];
}

/** Latency statistics of the timed runs, in milliseconds. */
export interface LatencyResult {
  /** Median of the timed runs, milliseconds. */
  p50Ms: number;
  p90Ms: number;
  meanMs: number;
  minMs: number;
  runs: number;
}

function quantile(sorted: readonly number[], q: number): number {
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

function sessionOptions(threads?: number, providers?: string[]): ort.InferenceSession.SessionOptions {
  return {
    ...(threads ? { intraOpNumThreads: threads, interOpNumThreads: 1 } : {}),
    ...(providers?.length ? { executionProviders: providers as ort.InferenceSession.ExecutionProviderConfig[] } : {}),
  };
}

/**
 * Wall-clock latency of `session.run` in onnxruntime-node (on the CPU unless `providers` says otherwise),
 * on seeded uniform inputs.
 * Session creation and the warmup runs are not timed.
 */
export async function latency(bytes: Uint8Array, opts: LatencyOptions = {}): Promise<LatencyResult> {
  const batch = opts.batch ?? 1;
  const runs = opts.runs ?? 20;
  const warmup = opts.warmup ?? 3;
  if (runs < 1) throw new Error("latency: runs must be >= 1");
  const input = modelInputShape(bytes, opts.inputShape);
  const shape = [batch, ...input.shape];
  const rand = rng(1);
  const data = Float32Array.from({ length: product(shape) }, () => rand() * 2 - 1);
  // exported for evaluator modules, which may pass bytes from anywhere: refuse tensors that point at files
  assertNoExternalData(bytes, "latency");
  const session = await ort.InferenceSession.create(bytes, sessionOptions(opts.threads, opts.providers));
  try {
    const feeds = { [input.name]: new ort.Tensor("float32", data, shape) };
    for (let i = 0; i < warmup; i++) await session.run(feeds);
    const times: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      await session.run(feeds);
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    return { p50Ms: quantile(times, 0.5), p90Ms: quantile(times, 0.9), meanMs: times.reduce((a, b) => a + b, 0) / runs, minMs: times[0]!, runs };
  } finally {
    await session.release();
  }
}

/**
 * Sign and log of the absolute determinant of a square matrix (row-major, n×n), by LU decomposition
 * with partial pivoting in float64. A singular matrix gives `{ sign: 0, logAbsDet: -Infinity }`.
 * The input is not modified.
 */
export function slogdet(matrix: ArrayLike<number>, n: number): { sign: number; logAbsDet: number } {
  if (matrix.length !== n * n) throw new Error(`slogdet: ${matrix.length} values for a ${n}x${n} matrix`);
  const a = Float64Array.from(matrix);
  let sign = 1;
  let logAbsDet = 0;
  for (let col = 0; col < n; col++) {
    let pivot = col;
    for (let r = col + 1; r < n; r++) if (Math.abs(a[r * n + col]!) > Math.abs(a[pivot * n + col]!)) pivot = r;
    const p = a[pivot * n + col]!;
    if (p === 0) return { sign: 0, logAbsDet: -Infinity };
    if (pivot !== col) {
      for (let c = 0; c < n; c++) {
        const t = a[col * n + c]!;
        a[col * n + c] = a[pivot * n + c]!;
        a[pivot * n + c] = t;
      }
      sign = -sign;
    }
    if (p < 0) sign = -sign;
    logAbsDet += Math.log(Math.abs(p));
    for (let r = col + 1; r < n; r++) {
      const f = a[r * n + col]! / p;
      if (f === 0) continue;
      for (let c = col + 1; c < n; c++) a[r * n + c]! -= f * a[col * n + c]!;
    }
  }
  return { sign, logAbsDet };
}

function popcount(x: number): number {
  x = x - ((x >>> 1) & 0x55555555);
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (Math.imul((x + (x >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24) & 0xff;
}

/** Options of `naswot`. */
export interface NaswotOptions {
  /** Minibatch size N (default 64; the paper uses 128). K_H is N×N. */
  batch?: number;
  /** Per-sample input shape; default from the model. */
  inputShape?: number[];
  /** Seed of the synthetic inputs (default 0). */
  seed?: number;
  /** Inputs to use instead of the synthetic ones: `batch × prod(inputShape)` floats, row-major. */
  input?: Float32Array;
  /** ORT intra-op threads (default: ORT's choice). */
  threads?: number;
  /** ORT execution providers (default: CPU). */
  providers?: string[];
}

/** The model with every Relu output added as a graph output (shapes inferred where possible). */
function exposeRelus(model: ModelProto, inputShape: readonly number[] | undefined): { model: ModelProto; relus: string[] } {
  const graph = model.graph ?? {};
  const relus = [...new Set((graph.node ?? []).filter((n) => n.opType === "Relu").map((n) => n.output?.[0]).filter((o): o is string => !!o))];
  const existing = new Set((graph.output ?? []).map((o) => o.name));
  let shapes: Map<string, Shape>;
  try {
    shapes = inferShapes(model, inputShape);
  } catch {
    shapes = new Map();
  }
  const extra = relus.filter((r) => !existing.has(r)).map((r) => valueInfo(r, ElemType.FLOAT, shapes.get(r) ?? null));
  return { model: { ...model, graph: { ...graph, output: [...(graph.output ?? []), ...extra] } }, relus };
}

/**
 * NASWOT score (Mellor et al. 2021): for a minibatch of N inputs, the binary code c_i of input i has one
 * bit per ReLU unit of the network (1 if its pre-activation is > 0, i.e. its output is > 0); the kernel
 * K_H[i][j] = N_A − Hamming(c_i, c_j) counts the units where codes i and j agree; the score is
 * log|det K_H| (via `slogdet`). Every Relu node's output is read in one ORT run.
 *
 * Inputs are `opts.input`, or by default a synthetic minibatch: i.i.d. standard normal values
 * (mulberry32(seed) + Box-Muller), a stand-in for real data that needs no data set. Higher is better.
 * A singular K_H (e.g. two inputs with identical codes) gives -Infinity.
 * @throws NasSpecError (`evaluator.metrics`) if the model has no Relu node.
 */
export async function naswot(m: AnyModel, opts: NaswotOptions = {}): Promise<number> {
  const model = asModel(m);
  const batch = opts.batch ?? 64;
  const input = modelInputShape(model, opts.inputShape);
  const { model: probed, relus } = exposeRelus(model, opts.inputShape);
  if (relus.length === 0) throw new NasSpecError("evaluator.metrics", "naswot needs a model with Relu nodes; this one has none");
  const shape = [batch, ...input.shape];
  const size = product(shape);
  let data = opts.input;
  if (data && data.length !== size) throw new Error(`naswot: input has ${data.length} values, expected ${size} for [${shape}]`);
  if (!data) {
    const rand = rng(opts.seed ?? 0);
    data = Float32Array.from({ length: size }, () => gaussian(rand));
  }
  const probedBytes = encodeModel(probed);
  // `m` may be bytes or a model from anywhere (evaluator modules call this): refuse tensors that point at files
  assertNoExternalData(probedBytes, "naswot");
  const session = await ort.InferenceSession.create(probedBytes, sessionOptions(opts.threads, opts.providers));
  let outputs: ort.InferenceSession.ReturnType;
  try {
    outputs = await session.run({ [input.name]: new ort.Tensor("float32", data, shape) }, relus);
  } finally {
    await session.release();
  }
  const hamming = new Float64Array(batch * batch);
  let units = 0;
  for (const name of relus) {
    const values = outputs[name]!.data as Float32Array;
    const per = values.length / batch;
    units += per;
    const words = Math.ceil(per / 32);
    const codes = new Uint32Array(batch * words);
    for (let i = 0; i < batch; i++) {
      const base = i * per;
      for (let u = 0; u < per; u++) if (values[base + u]! > 0) codes[i * words + (u >>> 5)]! |= 1 << (u & 31);
    }
    for (let i = 0; i < batch; i++) {
      for (let j = i + 1; j < batch; j++) {
        let h = 0;
        for (let w = 0; w < words; w++) h += popcount(codes[i * words + w]! ^ codes[j * words + w]!);
        hamming[i * batch + j]! += h;
      }
    }
  }
  const k = new Float64Array(batch * batch);
  for (let i = 0; i < batch; i++) {
    k[i * batch + i] = units;
    for (let j = i + 1; j < batch; j++) k[i * batch + j] = k[j * batch + i] = units - hamming[i * batch + j]!;
  }
  return slogdet(k, batch).logAbsDet;
}

/** Options of `evaluateBuiltins`: the union of the metrics' options. */
export interface BuiltinOptions {
  batch?: number;
  inputShape?: number[];
  seed?: number;
  runs?: number;
  warmup?: number;
  threads?: number;
  /** ORT execution providers for latency and naswot (default: CPU). */
  providers?: string[];
  /** NASWOT inputs instead of the synthetic dataset (`batch × prod(inputShape)` floats). */
  input?: Float32Array;
}

/**
 * Runs the named built-in evaluators and returns their metrics under their output names
 * (`naswot`, `latency_ms` (p50), `params`, `flops`; see METRIC_OUTPUT). `batch` is NASWOT's minibatch
 * (default 64); latency is measured at batch 1.
 */
export async function evaluateBuiltins(m: AnyModel, metrics: readonly BuiltinEvaluator[], opts: BuiltinOptions = {}): Promise<Record<string, number>> {
  const model = asModel(m);
  const out: Record<string, number> = {};
  for (const metric of metrics) {
    switch (metric) {
      case "params":
        out[METRIC_OUTPUT.params] = params(model);
        break;
      case "flops":
        out[METRIC_OUTPUT.flops] = flops(model, opts.inputShape);
        break;
      case "latency":
        out[METRIC_OUTPUT.latency] = (await latency(encodeModel(model), { inputShape: opts.inputShape, runs: opts.runs, warmup: opts.warmup, threads: opts.threads, providers: opts.providers })).p50Ms;
        break;
      case "naswot":
        out[METRIC_OUTPUT.naswot] = await naswot(model, { batch: opts.batch, inputShape: opts.inputShape, seed: opts.seed, threads: opts.threads, providers: opts.providers, input: opts.input });
        break;
    }
  }
  return out;
}
