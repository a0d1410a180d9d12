/**
 * Static type and shape inference for ONNX graphs, enough for partitioning and cost estimates.
 * Symbolic dimensions stay strings ("N"); dimensions that cannot be worked out get fresh names ("unk__3").
 * It is deliberately forgiving: an op it does not know gets its first input's type and an unknown shape.
 */
import {
  type AttributeProto,
  type Dim,
  ElemType,
  type GraphProto,
  type NodeProto,
  type TensorProto,
  type ValueInfoProto,
} from "./builder.js";

/** What is known about one tensor. `elemType` is an ONNX TensorProto.DataType code (0 = unknown); `shape` null = unknown rank. */
export interface TensorInfo {
  name: string;
  elemType: number;
  shape: Dim[] | null;
  /** Set for a value that is not a dense tensor (a sequence, map, optional or sparse tensor); absent = a tensor. */
  kind?: ValueKind;
}

/** The kinds of ONNX values other than dense tensors. */
export type ValueKind = "sequence" | "map" | "optional" | "sparse_tensor";

/** Ops whose outputs are sequences, whatever their inputs. */
const SEQUENCE_OPS = new Set(["SequenceConstruct", "SequenceEmpty", "SplitToSequence", "SequenceInsert", "SequenceErase", "SequenceMap", "ZipMap"]);
/** Ops whose output is of the same kind as their first input (a sequence in, a sequence out). */
const SAME_KIND_OPS = new Set(["Identity", "OptionalGetElement"]);

type IntLike = number | { toNumber(): number } | null | undefined;

/** An int64 protobuf field (a number or a `Long`) as a JS number; null/undefined → 0. */
export function toNumber(v: IntLike): number {
  if (v == null) return 0;
  return typeof v === "number" ? v : v.toNumber();
}

const ELEM_BYTES: Record<number, number> = {
  1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8, 15: 16, 16: 2,
};

/** Bytes per element of an ONNX data type; 0 for unknown or variable-size types (STRING). */
export function elemSize(elemType: number): number {
  return ELEM_BYTES[elemType] ?? 0;
}

/** Number of elements of a shape, counting each symbolic dimension as `symbolicAs` (default 1); null shape → null. */
export function numel(shape: Dim[] | null, symbolicAs = 1): number | null {
  if (shape === null) return null;
  let n = 1;
  for (const d of shape) n *= typeof d === "number" ? d : symbolicAs;
  return n;
}

/** Stored size of an initializer in bytes (element count × element size; string tensors by their byte length). */
export function initializerBytes(t: TensorProto): number {
  if (t.dataType === ElemType.STRING) {
    if (t.rawData && t.rawData.length > 0) return t.rawData.length;
    return (t.stringData ?? []).reduce((a, s) => a + s.length, 0);
  }
  const n = (t.dims ?? []).reduce<number>((a, d) => a * toNumber(d), 1);
  return n * elemSize(t.dataType ?? 0);
}

/** The attribute `name` of a node, or undefined. */
export function getAttr(n: NodeProto, name: string): AttributeProto | undefined {
  return (n.attribute ?? []).find((a) => a.name === name);
}

function attrInt(n: NodeProto, name: string, dflt: number): number {
  const a = getAttr(n, name);
  return a ? toNumber(a.i) : dflt;
}

function attrInts(n: NodeProto, name: string): number[] | undefined {
  const a = getAttr(n, name);
  return a ? (a.ints ?? []).map(toNumber) : undefined;
}

function attrString(n: NodeProto, name: string, dflt: string): string {
  const s = getAttr(n, name)?.s;
  return s && s.length > 0 ? new TextDecoder().decode(s) : dflt;
}

/** The subgraphs held by a node's attributes (If branches, Loop/Scan bodies). */
export function subgraphs(n: NodeProto): GraphProto[] {
  const out: GraphProto[] = [];
  for (const a of n.attribute ?? []) {
    if (a.g) out.push(a.g);
    for (const g of a.graphs ?? []) out.push(g);
  }
  return out;
}

/**
 * Names a subgraph reads from enclosing scopes: used by its nodes (recursively) but defined by none of
 * its inputs, initializers or nodes.
 */
export function outerScopeRefs(g: GraphProto): string[] {
  const defined = new Set<string>();
  for (const i of g.input ?? []) if (i.name) defined.add(i.name);
  for (const i of g.initializer ?? []) if (i.name) defined.add(i.name);
  for (const n of g.node ?? []) for (const o of n.output ?? []) if (o) defined.add(o);
  const refs: string[] = [];
  const seen = new Set<string>();
  const use = (name: string) => {
    if (name && !defined.has(name) && !seen.has(name)) {
      seen.add(name);
      refs.push(name);
    }
  };
  for (const n of g.node ?? []) for (const name of nodeReads(n)) use(name);
  // A body may return an outer tensor unchanged.
  for (const o of g.output ?? []) if (o.name) use(o.name);
  return refs;
}

/** Every tensor a node reads: its non-empty inputs, then names its subgraphs take from the outer scope (deduplicated, in order). */
export function nodeReads(n: NodeProto): string[] {
  const names = (n.input ?? []).filter((x) => x !== "");
  for (const g of subgraphs(n)) names.push(...outerScopeRefs(g));
  return [...new Set(names)];
}

/**
 * Node indices in a topological order. Among ready nodes the one earliest in the list goes first, so an
 * already sorted list comes back unchanged. Reads of names no node produces (inputs, initializers, outer
 * scope) are treated as available.
 * @throws Error when the nodes form a cycle.
 */
export function topologicalOrder(nodes: NodeProto[]): number[] {
  const producer = new Map<string, number>();
  nodes.forEach((n, i) => {
    for (const o of n.output ?? []) if (o) producer.set(o, i);
  });
  const indegree = new Array<number>(nodes.length).fill(0);
  const consumers: number[][] = nodes.map(() => []);
  nodes.forEach((n, i) => {
    for (const r of new Set(nodeReads(n))) {
      const p = producer.get(r);
      // A node reading its own output counts as a cycle.
      if (p === undefined) continue;
      indegree[i]!++;
      consumers[p]!.push(i);
    }
  });
  const heap = new MinHeap();
  indegree.forEach((d, i) => d === 0 && heap.push(i));
  const order: number[] = [];
  while (heap.size > 0) {
    const i = heap.pop();
    order.push(i);
    for (const c of consumers[i]!) if (--indegree[c]! === 0) heap.push(c);
  }
  if (order.length !== nodes.length) {
    const stuck = nodes.find((_, i) => indegree[i]! > 0);
    throw new Error(`graph has a cycle (involving node ${stuck?.name || stuck?.opType})`);
  }
  return order;
}

class MinHeap {
  private a: number[] = [];
  get size(): number {
    return this.a.length;
  }
  push(v: number): void {
    const a = this.a;
    a.push(v);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p]! <= v) break;
      a[i] = a[p]!;
      i = p;
    }
    a[i] = v;
  }
  pop(): number {
    const a = this.a;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= a.length) break;
        const c = l + 1 < a.length && a[l + 1]! < a[l]! ? l + 1 : l;
        if (a[c]! >= last) break;
        a[i] = a[c]!;
        i = c;
      }
      a[i] = last;
    }
    return top;
  }
}

/** Type and shape declared by a ValueInfoProto (unknown dims get fresh names from `fresh`). */
export function fromValueInfo(vi: ValueInfoProto, fresh: () => string = freshNames()): TensorInfo {
  const tt = vi.type?.tensorType;
  const shape = tt?.shape
    ? (tt.shape.dim ?? []).map((d): Dim => (d.dimParam ? d.dimParam : d.dimValue != null ? toNumber(d.dimValue) : fresh()))
    : null;
  const kind = valueKind(vi.type);
  return { name: vi.name ?? "", elemType: tt?.elemType ?? 0, shape, ...(kind ? { kind } : {}) };
}

/** The kind a declared type names, or undefined for a tensor (or no type). */
function valueKind(type: ValueInfoProto["type"]): ValueKind | undefined {
  if (type?.sequenceType) return "sequence";
  if (type?.mapType) return "map";
  if (type?.optionalType) return "optional";
  if (type?.sparseTensorType) return "sparse_tensor";
  return undefined;
}

/**
 * The kind of output `j` of node `n`: sequence ops make sequences, Optional makes optionals, Identity keeps its
 * input's kind, and If/Loop/Scan outputs take the kind their subgraph declares. Undefined = a tensor.
 */
function outputKind(n: NodeProto, j: number, get: (name: string | undefined) => TensorInfo | undefined): ValueKind | undefined {
  const op = n.opType ?? "";
  if (SEQUENCE_OPS.has(op)) return "sequence";
  if (op === "Optional") return "optional";
  if (SAME_KIND_OPS.has(op)) {
    const k = get(n.input?.[0])?.kind;
    // an optional unwraps to what it holds, which is not recorded: assume a tensor
    return k === "optional" ? undefined : k;
  }
  const body = (name: string) => n.attribute?.find((a) => a.name === name)?.g;
  if (op === "If") return valueKind(body("then_branch")?.output?.[j]?.type) ?? valueKind(body("else_branch")?.output?.[j]?.type);
  // Loop body outputs: the condition, then the carried values and scan outputs in the node's output order
  if (op === "Loop") return valueKind(body("body")?.output?.[j + 1]?.type);
  if (op === "Scan") return valueKind(body("body")?.output?.[j]?.type);
  return undefined;
}

function freshNames(): () => string {
  let i = 0;
  return () => `unk__${i++}`;
}

function readInts(t: TensorProto): number[] | null {
  if (t.dataType !== ElemType.INT64 && t.dataType !== ElemType.INT32) return null;
  const raw = t.rawData;
  if (raw && raw.length > 0) {
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const out: number[] = [];
    if (t.dataType === ElemType.INT64) for (let o = 0; o + 8 <= raw.length; o += 8) out.push(Number(view.getBigInt64(o, true)));
    else for (let o = 0; o + 4 <= raw.length; o += 4) out.push(view.getInt32(o, true));
    return out;
  }
  return t.dataType === ElemType.INT64 ? (t.int64Data ?? []).map(toNumber) : [...(t.int32Data ?? [])];
}

/** The tensor a Constant node holds, for value / value_float(s) / value_int(s) forms; undefined for other forms. */
export function constantTensor(n: NodeProto): TensorProto | undefined {
  for (const a of n.attribute ?? []) {
    switch (a.name) {
      case "value":
        return a.t ?? undefined;
      case "value_float":
        return { dims: [], dataType: ElemType.FLOAT, floatData: [a.f ?? 0] };
      case "value_floats":
        return { dims: [(a.floats ?? []).length], dataType: ElemType.FLOAT, floatData: [...(a.floats ?? [])] };
      case "value_int":
        return { dims: [], dataType: ElemType.INT64, int64Data: [a.i ?? 0] };
      case "value_ints":
        return { dims: [(a.ints ?? []).length], dataType: ElemType.INT64, int64Data: [...(a.ints ?? [])] };
    }
  }
  return undefined;
}

/**
 * Infers elem type and shape of every tensor in `graph`: its inputs, initializers and all node outputs.
 * Declared entries (graph.valueInfo, graph.output) win where they give a type or shape; inference fills the rest.
 * `outer` supplies tensors of enclosing scopes when `graph` is a subgraph.
 * Unknown ops and inconsistent shapes do not throw; it records what it can.
 * @throws Error when the nodes form a cycle.
 */
export function inferShapes(graph: GraphProto, outer?: ReadonlyMap<string, TensorInfo>): Map<string, TensorInfo> {
  const fresh = freshNames();
  const infos = new Map<string, TensorInfo>();
  const consts = new Map<string, number[]>();
  const declared = new Map<string, TensorInfo>();
  for (const vi of [...(graph.valueInfo ?? []), ...(graph.output ?? [])]) if (vi.name) declared.set(vi.name, fromValueInfo(vi, fresh));

  for (const t of graph.initializer ?? []) {
    if (!t.name) continue;
    infos.set(t.name, { name: t.name, elemType: t.dataType ?? 0, shape: (t.dims ?? []).map(toNumber) });
    const v = readInts(t);
    if (v) consts.set(t.name, v);
  }
  for (const vi of graph.input ?? []) if (vi.name) infos.set(vi.name, fromValueInfo(vi, fresh));

  const get = (name: string | undefined): TensorInfo | undefined => (name ? infos.get(name) ?? outer?.get(name) : undefined);
  const nodes = graph.node ?? [];
  for (const i of topologicalOrder(nodes)) {
    const n = nodes[i]!;
    let results: Array<{ elemType: number; shape: Dim[] | null }>;
    try {
      results = inferNode(n, get, consts, fresh);
    } catch {
      results = [];
    }
    (n.output ?? []).forEach((name, j) => {
      if (!name) return;
      const r = results[j] ?? { elemType: get(n.input?.[0])?.elemType ?? 0, shape: null };
      const d = declared.get(name);
      const kind = d?.kind ?? outputKind(n, j, get);
      infos.set(name, {
        name,
        elemType: d && d.elemType !== 0 ? d.elemType : r.elemType,
        shape: kind ? null : d && d.shape !== null ? d.shape : r.shape,
        ...(kind ? { kind } : {}),
      });
    });
  }
  for (const [name, d] of declared) if (!infos.has(name) && !outer?.has(name)) infos.set(name, d);
  return infos;
}

type Getter = (name: string | undefined) => TensorInfo | undefined;
type Out = { elemType: number; shape: Dim[] | null };

const UNARY = new Set([
  "Relu", "Tanh", "Sigmoid", "Erf", "Sqrt", "Exp", "Log", "Abs", "Neg", "Reciprocal", "Floor", "Ceil", "Round",
  "Sign", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Identity", "LeakyRelu", "Elu", "Selu",
  "Celu", "HardSigmoid", "HardSwish", "Softplus", "Softsign", "Gelu", "Mish", "Clip", "Shrink", "ThresholdedRelu",
  "PRelu", "Softmax", "LogSoftmax", "Hardmax", "CumSum", "BatchNormalization", "InstanceNormalization",
  "LRN", "MeanVarianceNormalization", "Trilu", "BitwiseNot",
]);
const BROADCAST = new Set(["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Mod", "BitShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor"]);
const COMPARE = new Set(["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor"]);
const REDUCE = new Set(["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]);
const BOOL_UNARY = new Set(["Not", "IsNaN", "IsInf"]);

function inferNode(n: NodeProto, get: Getter, consts: Map<string, number[]>, fresh: () => string): Out[] {
  const ins = (n.input ?? []).map((x) => get(x));
  const x = ins[0];
  const t0 = x?.elemType ?? 0;
  const s0 = x?.shape ?? null;
  const op = n.opType ?? "";
  const constOf = (i: number): number[] | undefined => {
    const name = n.input?.[i];
    return name ? consts.get(name) : undefined;
  };

  if (op === "Constant") {
    const t = constantTensor(n);
    if (!t) return [];
    const v = readInts(t);
    if (v && n.output?.[0]) consts.set(n.output[0], v);
    return [{ elemType: t.dataType ?? 0, shape: (t.dims ?? []).map(toNumber) }];
  }
  if (UNARY.has(op)) return [{ elemType: t0, shape: s0 }, { elemType: op === "BatchNormalization" ? t0 : ElemType.BOOL, shape: null }];
  if (BOOL_UNARY.has(op)) return [{ elemType: ElemType.BOOL, shape: s0 }];
  if (op === "Dropout") return [{ elemType: t0, shape: s0 }, { elemType: ElemType.BOOL, shape: s0 }];
  if (BROADCAST.has(op)) return [{ elemType: t0, shape: broadcastAll(ins.map((i) => i?.shape ?? null), fresh) }];
  if (COMPARE.has(op)) return [{ elemType: ElemType.BOOL, shape: broadcastAll(ins.map((i) => i?.shape ?? null), fresh) }];
  if (op === "Where") return [{ elemType: ins[1]?.elemType ?? 0, shape: broadcastAll(ins.map((i) => i?.shape ?? null), fresh) }];
  if (op === "Cast") return [{ elemType: attrInt(n, "to", 0), shape: s0 }];
  if (op === "CastLike") return [{ elemType: ins[1]?.elemType ?? 0, shape: s0 }];

  switch (op) {
    case "MatMul":
      return [{ elemType: t0, shape: matmulShape(s0, ins[1]?.shape ?? null, fresh) }];
    case "Gemm": {
      const a = s0, b = ins[1]?.shape ?? null;
      if (!a || !b || a.length !== 2 || b.length !== 2) return [{ elemType: t0, shape: null }];
      const m = attrInt(n, "transA", 0) ? a[1]! : a[0]!;
      const nn = attrInt(n, "transB", 0) ? b[0]! : b[1]!;
      return [{ elemType: t0, shape: [m, nn] }];
    }
    case "LayerNormalization": {
      if (!s0) return [{ elemType: t0, shape: null }];
      const axis = normAxis(attrInt(n, "axis", -1), s0.length);
      const stat = s0.map((d, i) => (i >= axis ? 1 : d));
      const stash = attrInt(n, "stash_type", ElemType.FLOAT);
      return [{ elemType: t0, shape: s0 }, { elemType: stash, shape: stat }, { elemType: stash, shape: stat }];
    }
    case "Conv":
    case "MaxPool":
    case "AveragePool":
    case "LpPool":
      return convLike(n, op, t0, s0, ins[1]?.shape ?? null, fresh);
    case "GlobalAveragePool":
    case "GlobalMaxPool":
    case "GlobalLpPool":
      return [{ elemType: t0, shape: s0 ? s0.map((d, i) => (i < 2 ? d : 1)) : null }];
    case "Flatten": {
      if (!s0) return [{ elemType: t0, shape: null }];
      const axis = normAxis(attrInt(n, "axis", 1), s0.length + 1);
      return [{ elemType: t0, shape: [product(s0.slice(0, axis), fresh), product(s0.slice(axis), fresh)] }];
    }
    case "Reshape": {
      const target = constOf(1);
      if (!target) {
        const r = ins[1]?.shape?.[0];
        return [{ elemType: t0, shape: typeof r === "number" ? Array.from({ length: r }, fresh) : null }];
      }
      return [{ elemType: t0, shape: reshapeShape(s0, target, attrInt(n, "allowzero", 0) === 1, fresh) }];
    }
    case "Transpose": {
      if (!s0) return [{ elemType: t0, shape: null }];
      const perm = attrInts(n, "perm") ?? s0.map((_, i) => s0.length - 1 - i);
      return [{ elemType: t0, shape: perm.map((p) => s0[p] ?? fresh()) }];
    }
    case "Concat": {
      const shapes = ins.map((i) => i?.shape ?? null);
      if (shapes.length === 0 || shapes.some((s) => s === null)) return [{ elemType: t0, shape: null }];
      const first = shapes[0]!;
      const axis = normAxis(attrInt(n, "axis", 0), first.length);
      const along = shapes.map((s) => s![axis]);
      const sum = along.every((d) => typeof d === "number") ? (along as number[]).reduce((a, b) => a + b, 0) : fresh();
      return [{ elemType: t0, shape: first.map((d, i) => (i === axis ? sum : d)) }];
    }
    case "Shape": {
      if (!s0) return [{ elemType: ElemType.INT64, shape: [fresh()] }];
      const r = s0.length;
      const start = clampAxis(attrInt(n, "start", 0), r);
      const end = clampAxis(getAttr(n, "end") ? attrInt(n, "end", r) : r, r);
      return [{ elemType: ElemType.INT64, shape: [Math.max(0, end - start)] }];
    }
    case "Size":
      return [{ elemType: ElemType.INT64, shape: [] }];
    case "ArgMax":
    case "ArgMin": {
      if (!s0) return [{ elemType: ElemType.INT64, shape: null }];
      return [{ elemType: ElemType.INT64, shape: reduceShape(s0, [attrInt(n, "axis", 0)], attrInt(n, "keepdims", 1) === 1) }];
    }
    case "Gather": {
      const idx = ins[1]?.shape ?? null;
      if (!s0 || !idx) return [{ elemType: t0, shape: null }];
      const axis = normAxis(attrInt(n, "axis", 0), s0.length);
      return [{ elemType: t0, shape: [...s0.slice(0, axis), ...idx, ...s0.slice(axis + 1)] }];
    }
    case "Unsqueeze": {
      const axes = attrInts(n, "axes") ?? constOf(1);
      if (!s0 || !axes) return [{ elemType: t0, shape: null }];
      const rank = s0.length + axes.length;
      const set = new Set(axes.map((a) => normAxis(a, rank)));
      const out: Dim[] = [];
      let j = 0;
      for (let i = 0; i < rank; i++) out.push(set.has(i) ? 1 : s0[j++]!);
      return [{ elemType: t0, shape: out }];
    }
    case "Squeeze": {
      const axes = attrInts(n, "axes") ?? constOf(1);
      if (!s0) return [{ elemType: t0, shape: null }];
      if (!axes) return [{ elemType: t0, shape: s0.some((d) => typeof d === "string") ? null : s0.filter((d) => d !== 1) }];
      const set = new Set(axes.map((a) => normAxis(a, s0.length)));
      return [{ elemType: t0, shape: s0.filter((_, i) => !set.has(i)) }];
    }
    case "Expand": {
      const target = constOf(1);
      return [{ elemType: t0, shape: target ? broadcast(s0, target, fresh) : null }];
    }
    case "ConstantOfShape": {
      const target = constOf(0);
      const v = getAttr(n, "value")?.t;
      return [{ elemType: v?.dataType ?? ElemType.FLOAT, shape: target ?? null }];
    }
    case "Split":
      return splitShapes(n, t0, s0, constOf(1), fresh);
    case "Slice":
      return [{ elemType: t0, shape: sliceShape(n, s0, constOf, fresh) }];
    case "If": {
      const g = getAttr(n, "then_branch")?.g;
      return (g?.output ?? []).map((o) => fromValueInfo(o, fresh));
    }
    case "Loop": {
      const body = getAttr(n, "body")?.g;
      const outs = (body?.output ?? []).slice(1).map((o) => fromValueInfo(o, fresh));
      const carried = Math.max(0, (n.input ?? []).length - 2);
      return outs.map((o, i) => (i < carried ? o : { elemType: o.elemType, shape: o.shape ? [fresh(), ...o.shape] : null }));
    }
    case "Scan": {
      const body = getAttr(n, "body")?.g;
      const outs = (body?.output ?? []).map((o) => fromValueInfo(o, fresh));
      const numScanIn = attrInt(n, "num_scan_inputs", 0);
      const state = Math.max(0, (n.input ?? []).length - numScanIn);
      return outs.map((o, i) => (i < state ? o : { elemType: o.elemType, shape: o.shape ? [fresh(), ...o.shape] : null }));
    }
  }
  if (REDUCE.has(op)) {
    if (!s0) return [{ elemType: t0, shape: null }];
    const axes = attrInts(n, "axes") ?? constOf(1);
    const keep = attrInt(n, "keepdims", 1) === 1;
    if (!axes && (n.input ?? []).length > 1 && n.input![1]) return [{ elemType: t0, shape: keep ? s0.map(() => fresh()) : null }];
    if (!axes || axes.length === 0) {
      if (attrInt(n, "noop_with_empty_axes", 0) === 1) return [{ elemType: t0, shape: s0 }];
      return [{ elemType: t0, shape: keep ? s0.map(() => 1) : [] }];
    }
    return [{ elemType: t0, shape: reduceShape(s0, axes, keep) }];
  }
  return [];
}

function normAxis(a: number, rank: number): number {
  return a < 0 ? a + rank : a;
}

function clampAxis(a: number, rank: number): number {
  return Math.min(rank, Math.max(0, normAxis(a, rank)));
}

function reduceShape(s: Dim[], axes: number[], keep: boolean): Dim[] {
  const set = new Set(axes.map((a) => normAxis(a, s.length)));
  return keep ? s.map((d, i) => (set.has(i) ? 1 : d)) : s.filter((_, i) => !set.has(i));
}

/** Product of dims: numeric when all are numbers, the lone symbol when the rest multiply to 1, else a fresh name. */
function product(dims: Dim[], fresh: () => string): Dim {
  const syms = dims.filter((d): d is string => typeof d === "string");
  const num = dims.reduce<number>((a, d) => a * (typeof d === "number" ? d : 1), 1);
  if (syms.length === 0) return num;
  return syms.length === 1 && num === 1 ? syms[0]! : fresh();
}

function broadcast(a: Dim[] | null, b: Dim[] | null, fresh: () => string): Dim[] | null {
  if (!a || !b) return null;
  const rank = Math.max(a.length, b.length);
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    const x = a[a.length - rank + i] ?? 1;
    const y = b[b.length - rank + i] ?? 1;
    if (x === y || y === 1) out.push(x);
    else if (x === 1) out.push(y);
    else if (typeof x === "number") out.push(x);
    else if (typeof y === "number") out.push(y);
    else out.push(fresh());
  }
  return out;
}

function broadcastAll(shapes: Array<Dim[] | null>, fresh: () => string): Dim[] | null {
  if (shapes.length === 0) return null;
  return shapes.slice(1).reduce<Dim[] | null>((acc, s) => broadcast(acc, s, fresh), shapes[0]!);
}

function matmulShape(a: Dim[] | null, b: Dim[] | null, fresh: () => string): Dim[] | null {
  if (!a || !b || a.length === 0 || b.length === 0) return null;
  const aa = a.length === 1 ? [1, a[0]!] : a;
  const bb = b.length === 1 ? [b[0]!, 1] : b;
  const batch = broadcast(aa.slice(0, -2), bb.slice(0, -2), fresh)!;
  const out: Dim[] = [...batch];
  if (a.length > 1) out.push(aa[aa.length - 2]!);
  if (b.length > 1) out.push(bb[bb.length - 1]!);
  return out;
}

/** Output size of one spatial dim of a conv/pool window, keeping the symbol when the window preserves size. */
function windowDim(d: Dim, k: number, stride: number, dil: number, padSum: number, autoPad: string, ceil: boolean, fresh: () => string): Dim {
  const dk = (k - 1) * dil + 1;
  if (autoPad === "SAME_UPPER" || autoPad === "SAME_LOWER") {
    if (typeof d === "number") return Math.ceil(d / stride);
    return stride === 1 ? d : fresh();
  }
  const pads = autoPad === "VALID" ? 0 : padSum;
  if (typeof d === "number") {
    const r = (d + pads - dk) / stride;
    return (ceil ? Math.ceil(r) : Math.floor(r)) + 1;
  }
  return stride === 1 && pads === dk - 1 ? d : fresh();
}

function convLike(n: NodeProto, op: string, t0: number, x: Dim[] | null, w: Dim[] | null, fresh: () => string): Out[] {
  if (!x || x.length < 3) return [{ elemType: t0, shape: null }];
  const sp = x.length - 2;
  const kernel = attrInts(n, "kernel_shape") ?? (w && w.length === x.length ? w.slice(2).map((d) => (typeof d === "number" ? d : NaN)) : undefined);
  const channels: Dim = op === "Conv" ? (w?.[0] ?? fresh()) : x[1]!;
  if (!kernel || kernel.some((k) => Number.isNaN(k))) return [{ elemType: t0, shape: [x[0]!, channels, ...x.slice(2).map(() => fresh())] }];
  const strides = attrInts(n, "strides") ?? [];
  const dils = attrInts(n, "dilations") ?? [];
  const pads = attrInts(n, "pads") ?? [];
  const autoPad = attrString(n, "auto_pad", "NOTSET");
  const ceil = attrInt(n, "ceil_mode", 0) === 1;
  const spatial = x.slice(2).map((d, i) =>
    windowDim(d, kernel[i] ?? 1, strides[i] ?? 1, dils[i] ?? 1, (pads[i] ?? 0) + (pads[i + sp] ?? 0), autoPad, ceil, fresh),
  );
  const y: Dim[] = [x[0]!, channels, ...spatial];
  return op === "MaxPool" ? [{ elemType: t0, shape: y }, { elemType: ElemType.INT64, shape: y }] : [{ elemType: t0, shape: y }];
}

function reshapeShape(x: Dim[] | null, target: number[], allowZero: boolean, fresh: () => string): Dim[] {
  const out: Dim[] = target.map((t, i) => (t === 0 && !allowZero ? (x?.[i] ?? fresh()) : t));
  const hole = out.indexOf(-1);
  if (hole < 0) return out;
  if (!x) {
    out[hole] = fresh();
    return out;
  }
  // Cancel symbols present on both sides, then divide what is left of the input by what is fixed in the output.
  const inSyms = x.filter((d): d is string => typeof d === "string");
  let num = x.reduce<number>((a, d) => a * (typeof d === "number" ? d : 1), 1);
  for (let i = 0; i < out.length; i++) {
    if (i === hole) continue;
    const d = out[i]!;
    if (typeof d === "number") num /= d;
    else {
      const j = inSyms.indexOf(d);
      if (j >= 0) inSyms.splice(j, 1);
      else {
        out[hole] = fresh();
        return out;
      }
    }
  }
  if (inSyms.length === 0 && Number.isInteger(num)) out[hole] = num;
  else if (inSyms.length === 1 && num === 1) out[hole] = inSyms[0]!;
  else out[hole] = fresh();
  return out;
}

function splitShapes(n: NodeProto, t0: number, x: Dim[] | null, splitInput: number[] | undefined, fresh: () => string): Out[] {
  const count = (n.output ?? []).length;
  if (!x) return Array.from({ length: count }, () => ({ elemType: t0, shape: null }));
  const axis = normAxis(attrInt(n, "axis", 0), x.length);
  const sizes = attrInts(n, "split") ?? splitInput;
  const d = x[axis];
  return Array.from({ length: count }, (_, i) => {
    let size: Dim;
    if (sizes) size = sizes[i] ?? fresh();
    else if (typeof d === "number") size = d % count === 0 ? d / count : i < count - 1 ? Math.ceil(d / count) : d - Math.ceil(d / count) * (count - 1);
    else size = fresh();
    return { elemType: t0, shape: x.map((v, j) => (j === axis ? size : v)) };
  });
}

function sliceShape(n: NodeProto, x: Dim[] | null, constOf: (i: number) => number[] | undefined, fresh: () => string): Dim[] | null {
  if (!x) return null;
  // Opset < 10 keeps starts/ends/axes in attributes.
  const starts = attrInts(n, "starts") ?? constOf(1);
  const ends = attrInts(n, "ends") ?? constOf(2);
  if (!starts || !ends) return x.map(() => fresh());
  const axes = attrInts(n, "axes") ?? constOf(3) ?? starts.map((_, i) => i);
  const steps = constOf(4) ?? starts.map(() => 1);
  const out = [...x];
  axes.forEach((a, i) => {
    const ax = normAxis(a, x.length);
    const d = x[ax];
    const step = steps[i] ?? 1;
    if (typeof d !== "number" || step === 0) {
      out[ax] = fresh();
      return;
    }
    const clamp = (v: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, v < 0 ? v + d : v));
    const s = step > 0 ? clamp(starts[i]!, 0, d) : clamp(starts[i]!, -1, d - 1);
    const e = step > 0 ? clamp(ends[i]!, 0, d) : clamp(ends[i]!, -1, d - 1);
    out[ax] = Math.max(0, Math.ceil((e - s) / step));
  });
  return out;
}
