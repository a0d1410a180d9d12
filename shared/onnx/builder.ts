/**
 * A small, dependency-free way to build ONNX models in code (tests, demos, NAS families).
 * Everything here produces plain `onnx.ModelProto` objects from `onnx-proto`; `encodeModel` turns one into bytes.
 */
import onnxProto from "onnx-proto";

export const { onnx } = onnxProto;
export type ModelProto = onnxProto.onnx.IModelProto;
export type GraphProto = onnxProto.onnx.IGraphProto;
export type NodeProto = onnxProto.onnx.INodeProto;
export type TensorProto = onnxProto.onnx.ITensorProto;
export type ValueInfoProto = onnxProto.onnx.IValueInfoProto;
export type AttributeProto = onnxProto.onnx.IAttributeProto;

/** ONNX TensorProto.DataType values used by jetshard. */
export const ElemType = {
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  UINT16: 4,
  INT16: 5,
  INT32: 6,
  INT64: 7,
  STRING: 8,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  UINT32: 12,
  UINT64: 13,
} as const;
export type ElemTypeCode = (typeof ElemType)[keyof typeof ElemType];

/** Default opset: supported by every onnxruntime-node release since 1.14. */
export const DEFAULT_OPSET = 17;
/** IR version matching opset 17. */
export const DEFAULT_IR_VERSION = 8;

/** A dimension: a number is fixed, a string is symbolic (e.g. "N" for the batch). */
export type Dim = number | string;

export function valueInfo(name: string, elemType: number, shape: Dim[] | null): ValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: shape === null ? undefined : { dim: shape.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

/** A float32 initializer stored as raw little-endian bytes. */
export function floatTensor(name: string, dims: number[], values: Float32Array | number[]): TensorProto {
  const arr = values instanceof Float32Array ? values : Float32Array.from(values);
  if (arr.length !== dims.reduce((a, b) => a * b, 1)) throw new Error(`initializer ${name}: ${arr.length} values for dims [${dims}]`);
  return { name, dims, dataType: ElemType.FLOAT, rawData: new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength) };
}

/** An int64 initializer (shapes, axes) stored as raw little-endian bytes. */
export function int64Tensor(name: string, dims: number[], values: number[]): TensorProto {
  const arr = BigInt64Array.from(values.map((v) => BigInt(v)));
  return { name, dims, dataType: ElemType.INT64, rawData: new Uint8Array(arr.buffer) };
}

type AttrValue = number | string | number[] | Float32Array | { float: number } | { floats: number[] } | GraphProto;

function attribute(name: string, v: AttrValue): AttributeProto {
  const A = onnx.AttributeProto.AttributeType;
  if (typeof v === "number") return Number.isInteger(v) ? { name, type: A.INT, i: v } : { name, type: A.FLOAT, f: v };
  if (typeof v === "string") return { name, type: A.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return { name, type: A.INTS, ints: v };
  if (v instanceof Float32Array) return { name, type: A.FLOATS, floats: Array.from(v) };
  if ("float" in v) return { name, type: A.FLOAT, f: v.float };
  if ("floats" in v) return { name, type: A.FLOATS, floats: v.floats };
  return { name, type: A.GRAPH, g: v };
}

/** A node; attributes are inferred by JS type (integers → INT, non-integers → FLOAT, use `{float: 1}` to force). */
export function node(opType: string, inputs: string[], outputs: string[], attrs: Record<string, AttrValue> = {}, name?: string): NodeProto {
  return {
    opType,
    input: inputs,
    output: outputs,
    name: name ?? `${opType}_${outputs[0]}`,
    attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    domain: "",
  };
}

export interface GraphSpec {
  name?: string;
  nodes: NodeProto[];
  inputs: ValueInfoProto[];
  outputs: ValueInfoProto[];
  initializers?: TensorProto[];
  valueInfo?: ValueInfoProto[];
}

export function model(spec: GraphSpec, opts: { opset?: number; producer?: string } = {}): ModelProto {
  return {
    irVersion: DEFAULT_IR_VERSION,
    producerName: opts.producer ?? "jetshard",
    opsetImport: [{ domain: "", version: opts.opset ?? DEFAULT_OPSET }],
    graph: {
      name: spec.name ?? "graph",
      node: spec.nodes,
      input: spec.inputs,
      output: spec.outputs,
      initializer: spec.initializers ?? [],
      valueInfo: spec.valueInfo ?? [],
    },
  };
}

export function encodeModel(m: ModelProto): Uint8Array {
  return onnx.ModelProto.encode(onnx.ModelProto.create(m)).finish();
}

export function decodeModel(bytes: Uint8Array): onnxProto.onnx.ModelProto {
  return onnx.ModelProto.decode(bytes);
}

/**
 * Deterministic pseudo-random numbers (mulberry32). Same seed, same weights, on every machine.
 */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Uniform(-scale, scale) float32 values from a seeded generator. */
export function randomFloats(n: number, rand: () => number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (rand() * 2 - 1) * scale;
  return out;
}

export interface MlpSpec {
  /** Layer widths including input and output, e.g. [784, 256, 256, 10]. */
  layers: number[];
  seed?: number;
  activation?: "Relu" | "Tanh" | "Sigmoid";
  inputName?: string;
  outputName?: string;
  /** Apply Softmax to the last layer. */
  softmax?: boolean;
}

/**
 * A fully connected network: MatMul + Add (+ activation) per layer, batch dimension "N" symbolic.
 * Weights are Glorot-uniform from a seeded generator so the model is bit-identical across runs.
 */
export function mlp(spec: MlpSpec): ModelProto {
  const { layers, seed = 1, activation = "Relu" } = spec;
  if (layers.length < 2) throw new Error("mlp needs at least input and output widths");
  const rand = rng(seed);
  const inputName = spec.inputName ?? "input";
  const outputName = spec.outputName ?? "output";
  const nodes: NodeProto[] = [];
  const inits: TensorProto[] = [];
  let cur = inputName;
  for (let i = 0; i < layers.length - 1; i++) {
    const fanIn = layers[i]!;
    const fanOut = layers[i + 1]!;
    const scale = Math.sqrt(6 / (fanIn + fanOut));
    inits.push(floatTensor(`W${i}`, [fanIn, fanOut], randomFloats(fanIn * fanOut, rand, scale)));
    inits.push(floatTensor(`B${i}`, [fanOut], randomFloats(fanOut, rand, 0.1)));
    const last = i === layers.length - 2;
    nodes.push(node("MatMul", [cur, `W${i}`], [`mm${i}`]));
    const addOut = last && !spec.softmax ? outputName : `fc${i}`;
    nodes.push(node("Add", [`mm${i}`, `B${i}`], [addOut]));
    cur = addOut;
    if (!last) {
      nodes.push(node(activation, [cur], [`act${i}`]));
      cur = `act${i}`;
    } else if (spec.softmax) {
      nodes.push(node("Softmax", [cur], [outputName], { axis: -1 }));
    }
  }
  return model({
    name: `mlp_${layers.join("_")}`,
    nodes,
    inputs: [valueInfo(inputName, ElemType.FLOAT, ["N", layers[0]!])],
    outputs: [valueInfo(outputName, ElemType.FLOAT, ["N", layers[layers.length - 1]!])],
    initializers: inits,
  });
}
