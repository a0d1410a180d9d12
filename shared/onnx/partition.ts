/**
 * Layer-wise (pipeline) partitioning of an ONNX model into contiguous stages, each a standalone model.
 * Stage i+1 reads exactly what stage i writes, by name, so a runtime chains them without a tensor map:
 * stage 0 takes the original inputs, the last stage returns the original outputs.
 */
import type { Dim, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto } from "./builder.js";
import { valueInfo } from "./builder.js";
import {
  type TensorInfo,
  constantTensor,
  elemSize,
  getAttr,
  inferShapes,
  initializerBytes,
  nodeReads,
  numel,
  subgraphs,
  toNumber,
  topologicalOrder,
} from "./shape-inference.js";

export type { TensorInfo } from "./shape-inference.js";

/** Why a partition was refused. */
export type PartitionErrorCode =
  /** The requested stage count (`shards`) or budget option is invalid for this model. */
  | "BAD_SHARDS"
  /** `maxShardBytes` cannot be met: one node alone is heavier, or the requested `shards` are too few. */
  | "SHARD_TOO_BIG"
  /** The model itself is malformed: no graph, a cycle, a tensor nothing produces, an untyped boundary. */
  | "BAD_MODEL";

/** Raised by `partition` for bad options or models. Never retryable: the same input fails the same way. */
export class PartitionError extends Error {
  override readonly name = "PartitionError";
  readonly retryable = false;
  constructor(
    readonly code: PartitionErrorCode,
    message: string,
    opts?: { cause?: unknown },
  ) {
    super(message, opts);
  }
}

export interface PartitionOptions {
  /** Number of stages (`shards` in the API). Default: the smallest that fits `maxShardBytes`, else 1. */
  k?: number;
  /**
   * Upper bound on the weight bytes (initializers + Constant tensors) stored in one stage. Without `k` it picks
   * the smallest stage count whose stages all fit; with `k` it is checked.
   */
  maxShardBytes?: number;
  /** What to even out across stages: weight bytes (default) or estimated FLOPs. */
  balance?: "bytes" | "flops";
  /**
   * How much heavier (as a fraction) the heaviest stage may be than in the most even split, to buy
   * boundaries that carry fewer activation bytes. Default 0.1.
   */
  tolerance?: number;
}

/** One stage of a partition. Input and output names are exact: feed and read tensors by them. */
export interface StageInfo {
  index: number;
  /** Graph inputs in order. Stage 0: the original inputs some stage needs; later stages: the previous stage's outputs. */
  inputs: TensorInfo[];
  /** Graph outputs in order. The last stage: exactly the original outputs. */
  outputs: TensorInfo[];
  /** Weight bytes stored in this stage (initializers and Constant tensors; shared ones count in every stage holding a copy). */
  bytes: number;
  /** Estimated floating point operations for one batch row (symbolic dims counted as 1). */
  flops: number;
  /** Estimated bytes of the outputs for one batch row (symbolic dims counted as 1). */
  outputBytes: number;
  /** Nodes in the stage graph, copied Constant nodes included. */
  nodes: number;
}

export interface PartitionResult {
  /** Number of stages produced. */
  k: number;
  /** The stage models, in pipeline order. */
  stages: ModelProto[];
  /** Per-stage boundaries and costs, parallel to `stages`. */
  info: StageInfo[];
  balance: "bytes" | "flops";
  /** Set when the result differs from what was asked, e.g. a one-node model stored whole. */
  note?: string;
}

interface Unit {
  node: NodeProto;
  /** Activation tensors read (graph inputs or outputs of earlier units), outer-scope references included. */
  reads: string[];
  /** Initializers and Constant outputs read; copied into the stage rather than carried. */
  weights: string[];
  writes: string[];
}

/**
 * Splits `model` into contiguous stages in topological order.
 *
 * Stages are balanced by weight bytes (or FLOPs); among splits whose heaviest stage is within `tolerance` of
 * the most even one, the split carrying the fewest activation bytes across its cuts wins (symbolic dims = 1).
 * Tensors needed later (skip connections, inputs used late, outputs produced early) are passed through every
 * stage in between. Nodes with subgraphs (If, Loop, Scan) are never split. Each stage keeps the source model's
 * IR version and opset imports, holds copies of the initializers and Constant nodes it uses, and declares its
 * boundary tensors with inferred types and shapes (the symbolic batch dim kept). Deterministic.
 *
 * A model with at most one node comes back as a single stage with a `note`, whatever `k` asks for.
 * Cuts are made only where every value carried across is a tensor (stage boundaries are declared as tensors, so a
 * sequence, map or optional there would make a stage ORT cannot load); when fewer such cuts exist than `k` needs,
 * the result has fewer stages and a `note` saying so.
 * @throws PartitionError "BAD_SHARDS" when `k` is not a positive integer or exceeds the node count (top-level
 *   Constant nodes, which are copied where needed, do not count), or
 *   `maxShardBytes`/`balance`/`tolerance` is invalid; "SHARD_TOO_BIG" when `maxShardBytes` cannot be met;
 *   "BAD_MODEL" for a malformed graph.
 */
export function partition(model: ModelProto, opts: PartitionOptions = {}): PartitionResult {
  const { k: shards, maxShardBytes: budget, balance = "bytes", tolerance = 0.1 } = opts;
  if (shards !== undefined && !(Number.isInteger(shards) && shards >= 1))
    throw new PartitionError("BAD_SHARDS", `shards must be a positive integer, got ${shards}`);
  if (budget !== undefined && !(typeof budget === "number" && budget > 0))
    throw new PartitionError("BAD_SHARDS", `maxShardBytes must be a positive number of bytes, got ${budget}`);
  if (balance !== "bytes" && balance !== "flops")
    throw new PartitionError("BAD_SHARDS", `balance must be "bytes" or "flops", got ${String(balance)}`);
  if (!(tolerance >= 0)) throw new PartitionError("BAD_SHARDS", `tolerance must be a non-negative fraction, got ${tolerance}`);
  const graph = model.graph;
  if (!graph) throw new PartitionError("BAD_MODEL", "model has no graph");

  const a = analyse(graph);
  const n = a.units.length;

  if (budget !== undefined) {
    a.unitBytes.forEach((b, i) => {
      if (b > budget) {
        const nd = a.units[i]!.node;
        throw new PartitionError(
          "SHARD_TOO_BIG",
          `node ${nd.name || nd.opType} alone holds ${b} weight bytes, over maxShardBytes=${budget}; it cannot be split`,
        );
      }
    });
  }

  if (n <= 1) {
    const what = n === 0 ? "no nodes" : `a single node (${a.units[0]!.node.opType} ${JSON.stringify(a.units[0]!.node.name ?? "")})`;
    const asked = shards !== undefined && shards > 1 ? `shards=${shards} requested but the model` : "the model";
    const stage = buildStage(model, a, 0, 0, n, true);
    if (budget !== undefined && stage.info.bytes > budget)
      throw new PartitionError("SHARD_TOO_BIG", `the model holds ${stage.info.bytes} weight bytes, over maxShardBytes=${budget}`);
    return { k: 1, stages: [stage.model], info: [stage.info], balance, note: `${asked} has ${what}; stored whole in one stage` };
  }
  if (shards !== undefined && shards > n)
    throw new PartitionError("BAD_SHARDS", `shards=${shards} exceeds the ${n} nodes the model can be cut between`);

  const cost = balance === "bytes" ? a.approxBytes : a.flops.map((f) => Math.round(f));
  // A model without weights (or FLOP estimates) is balanced by node count instead.
  const metric = cost.some((c) => c > 0) ? cost : cost.map(() => 1);
  const limit = budget ?? Infinity;
  // Units between two allowed cuts move as one: the cut search works on these groups, never between their units.
  const starts = [0];
  for (let c = 1; c < n; c++) if (!a.blocked[c]) starts.push(c);
  const groups = starts.length;
  const sumGroups = (xs: number[]) => starts.map((st, g) => xs.slice(st, starts[g + 1] ?? n).reduce((s, x) => s + x, 0));
  const gMetric = sumGroups(metric);
  const gBytes = sumGroups(a.approxBytes);
  const gCross = [...starts.map((st) => a.cross[st]!), 0];
  const choose = (k: number, lim: number) => chooseCuts(gMetric, gBytes, gCross, k, lim, tolerance)?.map((g) => starts[g]!) ?? null;
  const build = (cuts: number[]) => {
    const bounds = [0, ...cuts, n];
    return bounds.slice(1).map((end, s) => buildStage(model, a, s, bounds[s]!, end, s === bounds.length - 2));
  };

  let stages: ReturnType<typeof build> | undefined;
  let note: string | undefined;
  if (shards !== undefined) {
    const k = Math.min(shards, groups);
    if (k < shards)
      note = `shards=${shards} requested but the model can be cut in only ${groups - 1} place(s) where every value carried across is a tensor (not a sequence, map or optional); stored in ${k} stage(s)`;
    const cuts = choose(k, limit);
    stages = cuts ? build(cuts) : undefined;
    if (!stages || (budget !== undefined && stages.some((s) => s.info.bytes > budget)))
      throw new PartitionError("SHARD_TOO_BIG", `shards=${shards} cannot keep every stage within maxShardBytes=${budget}`);
  } else if (budget !== undefined) {
    // Approximate bytes never exceed a stage's real bytes, so the fewest segments they allow is a lower bound.
    for (let k = Math.min(minSegments(gBytes, budget), groups); k <= groups && !stages; k++) {
      const cuts = choose(k, budget);
      const built = cuts ? build(cuts) : undefined;
      if (built && built.every((s) => s.info.bytes <= budget)) stages = built;
    }
    // Reachable only when values that are not tensors keep over-budget nodes together in one stage.
    if (!stages) throw new PartitionError("SHARD_TOO_BIG", `no stage count keeps every stage within maxShardBytes=${budget}`);
  } else {
    stages = build([]);
  }
  return { k: stages.length, stages: stages.map((s) => s.model), info: stages.map((s) => s.info), balance, ...(note ? { note } : {}) };
}

interface Analysis {
  graph: GraphProto;
  /** Units (every node but top-level Constants) in topological order. */
  units: Unit[];
  infos: Map<string, TensorInfo>;
  /** Initializers, sparse initializers and Constant nodes by the tensor they provide. */
  weights: Map<string, { bytes: number; init?: TensorProto; constant?: NodeProto; sparse?: true }>;
  /** Per unit: bytes of the distinct weights it reads. */
  unitBytes: number[];
  /** Per unit: its share of the weights it reads (a weight read by r nodes counts 1/r each), rounded down. */
  approxBytes: number[];
  flops: number[];
  /** cross[c]: estimated activation bytes carried over a cut before unit c (1 ≤ c < n). */
  cross: number[];
  /**
   * blocked[c]: a value that is not a tensor (a sequence, map, optional) would be carried over a cut before unit c.
   * A stage boundary declares what it carries as tensors, so such a cut would yield stages ORT refuses.
   */
  blocked: boolean[];
  /** Carried tensors in a fixed order: original inputs, then by producing unit. */
  live: Array<{ name: string; producedAt: number; lastUse: number }>;
  outputs: string[];
}

function analyse(graph: GraphProto): Analysis {
  const weights: Analysis["weights"] = new Map();
  for (const t of graph.initializer ?? []) if (t.name) weights.set(t.name, { bytes: initializerBytes(t), init: t });
  for (const s of graph.sparseInitializer ?? []) {
    const name = s.values?.name;
    if (name) weights.set(name, { bytes: initializerBytes(s.values!) + (s.indices ? initializerBytes(s.indices) : 0), sparse: true });
  }
  const nodes = graph.node ?? [];
  const others: NodeProto[] = [];
  for (const nd of nodes) {
    const out = nd.output?.[0];
    if (nd.opType === "Constant" && (nd.domain ?? "") === "" && out) {
      const t = constantTensor(nd);
      weights.set(out, { bytes: t ? initializerBytes(t) : 0, constant: nd });
    } else others.push(nd);
  }
  // Names listed both as input and initializer are overridable defaults; they are treated as weights.
  const inputs = (graph.input ?? []).map((i) => i.name ?? "").filter((name) => name && !weights.has(name));

  let order: number[];
  try {
    order = topologicalOrder(others);
  } catch (err) {
    throw new PartitionError("BAD_MODEL", (err as Error).message, { cause: err });
  }
  const producedAt = new Map<string, number>();
  inputs.forEach((name) => producedAt.set(name, -1));
  const units: Unit[] = order.map((idx, i) => {
    const nd = others[idx]!;
    const reads: string[] = [];
    const used: string[] = [];
    for (const r of nodeReads(nd)) (weights.has(r) ? used : reads).push(r);
    const writes = (nd.output ?? []).filter((o) => o !== "");
    for (const w of writes) {
      if (producedAt.has(w) || weights.has(w)) throw new PartitionError("BAD_MODEL", `tensor ${JSON.stringify(w)} is defined more than once`);
      producedAt.set(w, i);
    }
    return { node: nd, reads, weights: used, writes };
  });

  const outputs = (graph.output ?? []).map((o) => o.name ?? "");
  const lastUse = new Map<string, number>();
  units.forEach((u, i) => {
    for (const r of u.reads) {
      if (!producedAt.has(r))
        throw new PartitionError("BAD_MODEL", `node ${u.node.name || u.node.opType} reads ${JSON.stringify(r)}, which no node, input or initializer provides`);
      lastUse.set(r, i);
    }
  });
  for (const o of outputs) {
    if (!producedAt.has(o) && !weights.has(o)) throw new PartitionError("BAD_MODEL", `graph output ${JSON.stringify(o)} is never produced`);
    if (producedAt.has(o)) lastUse.set(o, units.length);
  }

  const infos = inferShapes(graph);
  const live: Analysis["live"] = [];
  // producedAt iterates in insertion order (inputs, then units), which is the carried order we want.
  for (const [name, at] of producedAt) {
    const last = lastUse.get(name);
    if (last !== undefined && last > at) live.push({ name, producedAt: at, lastUse: last });
  }

  const n = units.length;
  let fallback = 4;
  for (const [name, info] of infos) {
    const e = numel(info.shape);
    if (e !== null && !weights.has(name)) fallback = Math.max(fallback, e * (elemSize(info.elemType) || 4));
  }
  const diff = new Array<number>(n + 2).fill(0);
  const blocked = new Array<boolean>(n + 1).fill(false);
  for (const t of live) {
    if (infos.get(t.name)?.kind) for (let c = Math.max(1, t.producedAt + 1); c <= Math.min(n - 1, t.lastUse); c++) blocked[c] = true;
    const info = infos.get(t.name);
    const e = numel(info?.shape ?? null);
    // An unknown size is taken as the largest known activation, so the search avoids cutting there.
    const bytes = e === null ? fallback : e * (elemSize(info?.elemType ?? 0) || 4);
    const from = Math.max(1, t.producedAt + 1);
    const to = Math.min(n - 1, t.lastUse);
    if (from <= to) {
      diff[from]! += bytes;
      diff[to + 1]! -= bytes;
    }
  }
  const cross = new Array<number>(n + 1).fill(0);
  for (let c = 1, run = 0; c < n; c++) cross[c] = run += diff[c]!;

  // A weight read by several nodes is split evenly between them: summed over any stage this never exceeds
  // the bytes the stage really stores, and it pulls the readers of a tied weight towards one stage.
  const readers = new Map<string, number>();
  for (const u of units) for (const w of u.weights) readers.set(w, (readers.get(w) ?? 0) + 1);
  const approxBytes = units.map((u) => Math.floor(u.weights.reduce((s, w) => s + weights.get(w)!.bytes / readers.get(w)!, 0)));
  const unitBytes = units.map((u) => u.weights.reduce((s, w) => s + weights.get(w)!.bytes, 0));
  const flops = units.map((u) => estimateFlops(u.node, infos));
  return { graph, units, infos, weights, unitBytes, approxBytes, flops, cross, blocked, live, outputs };
}

/** Fewest contiguous segments with each segment's summed `bytes` ≤ budget (every single item must fit). */
function minSegments(bytes: number[], budget: number): number {
  let count = 1;
  let acc = 0;
  for (const b of bytes) {
    if (acc + b > budget) {
      count++;
      acc = 0;
    }
    acc += b;
  }
  return count;
}

/**
 * Cut positions (units before which a new stage starts) for exactly k stages, or null when `budget` (bytes per
 * stage) cannot be met. First finds the smallest achievable heaviest stage C*; then, among splits whose stages all
 * stay within C*·(1+tolerance) and the budget, minimises the summed boundary bytes, then the sum of squared
 * stage shares, then prefers earlier cuts.
 */
function chooseCuts(cost: number[], bytes: number[], cross: number[], k: number, budget: number, tolerance: number): number[] | null {
  const n = cost.length;
  const P = prefix(cost);
  const Q = prefix(bytes);
  const fits = (x: number): boolean => {
    let count = 1;
    let start = 0;
    for (let i = 0; i < n; i++) {
      if (cost[i]! > x || bytes[i]! > budget) return false;
      if (P[i + 1]! - P[start]! > x || Q[i + 1]! - Q[start]! > budget) {
        count++;
        start = i;
      }
    }
    return count <= k;
  };
  let lo = cost.reduce((m, c) => Math.max(m, c), 0);
  let hi = P[n]!;
  if (!fits(hi)) return null;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    if (fits(mid)) hi = mid;
    else lo = mid + 1;
  }
  const bound = hi * (1 + tolerance);
  const total = P[n]!;

  // first[i]: the earliest start p such that units p..i-1 fit in one stage; nondecreasing in i.
  const first = new Int32Array(n + 1);
  for (let i = 1, p = 0; i <= n; i++) {
    while (P[i]! - P[p]! > bound || Q[i]! - Q[p]! > budget) p++;
    first[i] = p;
  }
  let prevCross = new Float64Array(n + 1).fill(Infinity);
  let prevSq = new Float64Array(n + 1).fill(Infinity);
  for (let i = 1; i <= n; i++) {
    if (first[i] === 0) {
      prevCross[i] = 0;
      prevSq[i] = (P[i]! / total) ** 2;
    }
  }
  const parents: Int32Array[] = [];
  for (let j = 2; j <= k; j++) {
    const curCross = new Float64Array(n + 1).fill(Infinity);
    const curSq = new Float64Array(n + 1).fill(Infinity);
    const parent = new Int32Array(n + 1).fill(-1);
    for (let i = j; i <= n - (k - j); i++) {
      for (let p = Math.max(j - 1, first[i]!); p < i; p++) {
        if (prevCross[p] === Infinity) continue;
        const c = prevCross[p]! + cross[p]!;
        const s = prevSq[p]! + ((P[i]! - P[p]!) / total) ** 2;
        if (c < curCross[i]! || (c === curCross[i]! && s < curSq[i]!)) {
          curCross[i] = c;
          curSq[i] = s;
          parent[i] = p;
        }
      }
    }
    parents.push(parent);
    prevCross = curCross;
    prevSq = curSq;
  }
  if (prevCross[n] === Infinity) return null;
  const cuts: number[] = [];
  for (let j = k, i = n; j >= 2; j--) {
    i = parents[j - 2]![i]!;
    cuts.unshift(i);
  }
  return cuts;
}

function prefix(xs: number[]): number[] {
  const out = [0];
  for (const x of xs) out.push(out[out.length - 1]! + x);
  return out;
}

function buildStage(source: ModelProto, a: Analysis, index: number, from: number, to: number, last: boolean): { model: ModelProto; info: StageInfo } {
  const graph = a.graph;
  const units = a.units.slice(from, to);
  const liveAt = (c: number) => a.live.filter((t) => t.producedAt < c && c <= t.lastUse).map((t) => t.name);
  const inputs = liveAt(from);
  const outputs = last ? a.outputs : liveAt(to);

  const needed = new Set(units.flatMap((u) => u.weights));
  if (last) for (const o of a.outputs) if (a.weights.has(o)) needed.add(o);
  const produced = new Set(units.flatMap((u) => u.writes));
  const keptOutputs = new Set(outputs);

  const describe = (name: string, role: string): ValueInfoProto => {
    const info = a.infos.get(name);
    if (!info || info.elemType === 0)
      throw new PartitionError("BAD_MODEL", `cannot tell the element type of ${JSON.stringify(name)}, a ${role} of stage ${index}`);
    return valueInfo(name, info.elemType, info.shape);
  };
  const stageGraph: GraphProto = {
    name: `${graph.name || "graph"}_stage${index}`,
    node: [
      ...(graph.node ?? []).filter((nd) => nd.opType === "Constant" && needed.has(nd.output?.[0] ?? "") && a.weights.get(nd.output![0]!)?.constant === nd),
      ...units.map((u) => u.node),
    ],
    input: [
      ...inputs.map((name) => describe(name, "input")),
      // IR < 4 requires every initializer to be declared as a graph input as well.
      ...(toNumber(source.irVersion) < 4 ? (graph.input ?? []).filter((vi) => needed.has(vi.name ?? "")) : []),
    ],
    output: outputs.map((name) => describe(name, "output")),
    initializer: (graph.initializer ?? []).filter((t) => needed.has(t.name ?? "") && a.weights.get(t.name!)?.init === t),
    sparseInitializer: (graph.sparseInitializer ?? []).filter((s) => needed.has(s.values?.name ?? "")),
    valueInfo: (graph.valueInfo ?? []).filter((vi) => produced.has(vi.name ?? "") && !keptOutputs.has(vi.name ?? "")),
  };
  if (graph.docString) stageGraph.docString = graph.docString;

  const stageModel: ModelProto = {
    irVersion: source.irVersion,
    opsetImport: source.opsetImport,
    producerName: source.producerName,
    producerVersion: source.producerVersion,
    domain: source.domain,
    modelVersion: source.modelVersion,
    docString: source.docString,
    metadataProps: source.metadataProps,
    functions: source.functions,
    graph: stageGraph,
  };
  const info = (name: string): TensorInfo => {
    const t = a.infos.get(name)!;
    return { name, elemType: t.elemType, shape: t.shape };
  };
  let outputBytes = 0;
  for (const name of outputs) {
    const t = a.infos.get(name)!;
    outputBytes += (numel(t.shape) ?? 0) * elemSize(t.elemType);
  }
  return {
    model: stageModel,
    info: {
      index,
      inputs: inputs.map(info),
      outputs: outputs.map(info),
      bytes: [...needed].reduce((s, w) => s + a.weights.get(w)!.bytes, 0),
      flops: a.flops.slice(from, to).reduce((s, f) => s + f, 0),
      outputBytes,
      nodes: stageGraph.node!.length,
    },
  };
}

const SHAPE_ONLY = new Set(["Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Shape", "Size", "Constant", "Dropout"]);
const NORMALIZING = new Set(["Softmax", "LogSoftmax", "LayerNormalization", "BatchNormalization", "InstanceNormalization", "GroupNormalization"]);

/**
 * Rough FLOPs of one node for one batch row (symbolic dims = 1): 2·M·K·N for matrix products, 2 per
 * multiply-accumulate for convolutions, one per output element for element-wise ops, 0 for shape-only ops.
 */
function estimateFlops(nd: NodeProto, infos: ReadonlyMap<string, TensorInfo>): number {
  const shape = (name: string | undefined) => (name ? (infos.get(name)?.shape ?? null) : null);
  const size = (name: string | undefined) => numel(shape(name)) ?? 0;
  const dim = (d: Dim | undefined) => (typeof d === "number" ? d : 1);
  const op = nd.opType ?? "";
  const out = size(nd.output?.[0]);
  const in0 = size(nd.input?.[0]);
  if (SHAPE_ONLY.has(op)) return 0;
  if (NORMALIZING.has(op)) return 5 * in0;
  if (op.startsWith("Reduce") || op.startsWith("Global")) return in0;
  switch (op) {
    case "MatMul": {
      const s = shape(nd.input?.[0]);
      return 2 * out * dim(s?.[s.length - 1]);
    }
    case "Gemm": {
      const s = shape(nd.input?.[0]);
      const transA = toNumber(getAttr(nd, "transA")?.i) === 1;
      return 2 * out * dim(transA ? s?.[0] : s?.[1]) + out;
    }
    case "Conv":
    case "ConvTranspose": {
      const w = shape(nd.input?.[1]) ?? [];
      return 2 * (op === "Conv" ? out : in0) * w.slice(1).reduce<number>((p, d) => p * dim(d), 1);
    }
    case "MaxPool":
    case "AveragePool":
    case "LpPool":
      return out * (getAttr(nd, "kernel_shape")?.ints ?? []).reduce<number>((p, d) => p * toNumber(d), 1);
    case "If":
    case "Loop":
    case "Scan": {
      // Each branch/body once: trip counts are rarely static.
      const costs = subgraphs(nd).map((g) => {
        const inner = inferShapes(g, infos);
        const all = new Map([...infos, ...inner]);
        return (g.node ?? []).reduce((s, x) => s + estimateFlops(x, all), 0);
      });
      return op === "If" ? Math.max(0, ...costs) : costs.reduce((s, c) => s + c, 0);
    }
  }
  return out || in0;
}
