/**
 * Hostile ONNX models for the external-data tests: tensors whose bytes ONNX Runtime would read from a file on
 * the serving host (`package.json` by default, relative to the process's working directory), hidden in the
 * places a model can hold a tensor. All built with onnx-proto, plus raw protobuf where onnx-proto cannot go.
 */
import { ElemType, encodeModel, model, node, onnx, valueInfo, type GraphProto, type ModelProto, type NodeProto, type TensorProto } from "#shared/onnx/builder.js";

/** Bytes each leaking tensor reads: x (UINT8 [LEAK_LEN]) + w gives w's bytes back when x is zeros. */
export const LEAK_LEN = 64;

const A = onnx.AttributeProto.AttributeType;

/** A UINT8 [length] tensor whose data is `length` bytes of `location` from offset 0. */
export function externalTensor(name: string, opts: { location?: string; length?: number; dataLocation?: boolean } = {}): TensorProto {
  const length = opts.length ?? LEAK_LEN;
  return {
    name,
    dims: [length],
    dataType: ElemType.UINT8,
    ...(opts.dataLocation === false ? {} : { dataLocation: onnx.TensorProto.DataLocation.EXTERNAL }),
    externalData: [
      { key: "location", value: opts.location ?? "package.json" },
      { key: "offset", value: "0" },
      { key: "length", value: String(length) },
    ],
  };
}

const io = {
  inputs: [valueInfo("x", ElemType.UINT8, [LEAK_LEN])],
  outputs: [valueInfo("y", ElemType.UINT8, [LEAK_LEN])],
};

/** y = x + w with `w` an initializer read from `location`: the plainest leak. */
export function leakyInitializer(opts: { location?: string; dataLocation?: boolean } = {}): ModelProto {
  return model({ name: "main", nodes: [node("Add", ["x", "w"], ["y"], {}, "add")], ...io, initializers: [externalTensor("w", opts)] });
}

/** y = x + w with `w` the output of a Constant node (named c1) whose `value` is read from a file. */
export function leakyConstant(): ModelProto {
  const c: NodeProto = { opType: "Constant", name: "c1", input: [], output: ["w"], domain: "", attribute: [{ name: "value", type: A.TENSOR, t: externalTensor("wc") }] };
  return model({ name: "main", nodes: [c, node("Add", ["x", "w"], ["y"], {}, "add")], ...io });
}

/** y = x + dense(s) with `s` a sparse initializer whose values are read from a file. */
export function leakySparse(): ModelProto {
  const values = externalTensor("s");
  const indices: TensorProto = { name: "s_idx", dims: [LEAK_LEN], dataType: ElemType.INT64, int64Data: Array.from({ length: LEAK_LEN }, (_, i) => i) };
  const m = model({ name: "main", nodes: [node("Add", ["x", "s"], ["y"], {}, "add")], ...io });
  m.graph!.sparseInitializer = [{ values, indices, dims: [LEAK_LEN] }];
  return m;
}

/** A subgraph returning `w`, an initializer of the subgraph itself, read from a file. */
function leakyBranch(name: string): GraphProto {
  return {
    name,
    node: [node("Identity", ["w"], [`${name}_out`], {}, `${name}_id`)],
    initializer: [externalTensor("w")],
    input: [],
    output: [valueInfo(`${name}_out`, ElemType.UINT8, [LEAK_LEN])],
  };
}

function cleanBranch(name: string): GraphProto {
  return { name, node: [node("Identity", ["x"], [`${name}_out`], {}, `${name}_id`)], input: [], output: [valueInfo(`${name}_out`, ElemType.UINT8, [LEAK_LEN])] };
}

/** y = If(c) { w read from a file, in then_branch } else { x }; the If node is named if1. */
export function leakyIf(): ModelProto {
  return model({
    name: "main",
    nodes: [node("If", ["c"], ["y"], { then_branch: leakyBranch("then"), else_branch: cleanBranch("else") }, "if1")],
    inputs: [...io.inputs, valueInfo("c", ElemType.BOOL, [])],
    outputs: io.outputs,
  });
}

/** An If (if1) whose then_branch runs a Loop (loop1) whose body holds the leaking initializer. */
export function leakyLoopInIf(): ModelProto {
  const body: GraphProto = {
    name: "body",
    node: [node("Identity", ["cond_in"], ["cond_out"], {}, "b_cond"), node("Identity", ["w"], ["v_out"], {}, "b_id")],
    initializer: [externalTensor("w")],
    input: [valueInfo("iter", ElemType.INT64, []), valueInfo("cond_in", ElemType.BOOL, []), valueInfo("v_in", ElemType.UINT8, [LEAK_LEN])],
    output: [valueInfo("cond_out", ElemType.BOOL, []), valueInfo("v_out", ElemType.UINT8, [LEAK_LEN])],
  };
  const thenBranch: GraphProto = {
    name: "then",
    node: [node("Loop", ["", "c", "x"], ["then_out"], { body }, "loop1")],
    input: [],
    output: [valueInfo("then_out", ElemType.UINT8, [LEAK_LEN])],
  };
  return model({
    name: "main",
    nodes: [node("If", ["c"], ["y"], { then_branch: thenBranch, else_branch: cleanBranch("else") }, "if1")],
    inputs: [...io.inputs, valueInfo("c", ElemType.BOOL, [])],
    outputs: io.outputs,
  });
}

/** The same model as the clean reference, y = x + w, with `w` embedded (all zeros). */
export function cleanAdd(): ModelProto {
  return model({ name: "main", nodes: [node("Add", ["x", "w"], ["y"], {}, "add")], ...io, initializers: [{ name: "w", dims: [LEAK_LEN], dataType: ElemType.UINT8, rawData: new Uint8Array(LEAK_LEN) }] });
}

/**
 * `depth` Ifs nested in each other's then_branch (the innermost returns x), as onnx-proto objects.
 * Depth 1 = one If in the main graph with one level of subgraph.
 */
export function nestedIfs(depth: number): ModelProto {
  let inner: GraphProto = cleanBranch(`g${depth}`);
  for (let d = depth - 1; d >= 1; d--) {
    inner = { name: `g${d}`, node: [node("If", ["c"], [`g${d}_out`], { then_branch: inner, else_branch: cleanBranch(`e${d}`) }, `if${d}`)], input: [], output: [valueInfo(`g${d}_out`, ElemType.UINT8, [LEAK_LEN])] };
  }
  return model({
    name: "main",
    nodes: [node("If", ["c"], ["y"], { then_branch: inner, else_branch: cleanBranch("e0") }, "if0")],
    inputs: [...io.inputs, valueInfo("c", ElemType.BOOL, [])],
    outputs: io.outputs,
  });
}

/** A length-delimited protobuf field: tag, length, payload. */
export function ld(field: number, payload: Uint8Array): Uint8Array {
  const varint = (n: number) => {
    const out: number[] = [];
    while (n > 0x7f) {
      out.push((n & 0x7f) | 0x80);
      n = Math.floor(n / 128);
    }
    out.push(n);
    return out;
  };
  const head = [...varint(field * 8 + 2), ...varint(payload.length)];
  const out = new Uint8Array(head.length + payload.length);
  out.set(head);
  out.set(payload, head.length);
  return out;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * Raw bytes of a model with `depth` subgraphs nested in each other (graph → node → attribute g → graph …),
 * built without onnx-proto, whose encoder recurses: thousands of levels are cheap to make this way.
 */
export function deeplyNestedBytes(depth: number): Uint8Array {
  const enc = new TextEncoder();
  let graph: Uint8Array = new Uint8Array(0);
  for (let d = 0; d < depth; d++) {
    const attr = concat(ld(1, enc.encode("then_branch")), ld(6, graph));
    const nodeBytes = concat(ld(3, enc.encode(`if${d}`)), ld(4, enc.encode("If")), ld(5, attr));
    graph = ld(1, nodeBytes);
  }
  return ld(7, graph);
}

/**
 * A clean model followed by a second `graph` field holding the leaking initializer first: C++ protobuf (ORT)
 * merges the two graphs, so the initializer is there; protobufjs keeps only the last copy and never sees it.
 */
export function mergedGraphBytes(): Uint8Array {
  const leaky = encodeModel(leakyInitializer());
  const overwrite = onnx.ModelProto.encode(onnx.ModelProto.create({ graph: { name: "main" } })).finish();
  return concat(leaky, overwrite);
}

/**
 * A clean model plus a model-local function whose attribute default (FunctionProto.attribute_proto, field 11,
 * unknown to onnx-proto 8) is a tensor read from a file.
 */
export function functionDefaultBytes(): Uint8Array {
  const fn = onnx.FunctionProto.encode(onnx.FunctionProto.create({ name: "leaky_fn", domain: "local", input: ["a"], output: ["b"], node: [node("Identity", ["a"], ["b"], {}, "fn_id")] })).finish();
  const attr = onnx.AttributeProto.encode(onnx.AttributeProto.create({ name: "value", type: A.TENSOR, t: externalTensor("wd") })).finish();
  return concat(encodeModel(cleanAdd()), ld(25, concat(fn, ld(11, attr))));
}
