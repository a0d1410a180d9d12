/**
 * Tensors as jetshard moves them: a v2 datatype, a shape and a typed array of little-endian values.
 * Converts JSON tensors (Open Inference Protocol v2) to typed arrays with validation, and back.
 */
import { JobError, preview } from "./errors.js";
import { float16BitsToFloat32, float32ToFloat16Bits } from "./float16.js";

export const DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"] as const;
export type Datatype = (typeof DATATYPES)[number];

export type TypedArray =
  | Uint8Array
  | Uint16Array
  | Uint32Array
  | BigUint64Array
  | Int8Array
  | Int16Array
  | Int32Array
  | BigInt64Array
  | Float32Array
  | Float64Array;

export interface Tensor {
  name: string;
  datatype: Datatype;
  shape: number[];
  data: TypedArray;
}

interface TypeInfo {
  ort: string;
  bytes: number;
  ctor: { new (n: number | ArrayBufferLike, off?: number, len?: number): TypedArray; from(a: ArrayLike<any>): TypedArray };
  onnx: number;
  min?: number;
  max?: number;
  bigint?: boolean;
}

const INFO: Record<Datatype, TypeInfo> = {
  BOOL: { ort: "bool", bytes: 1, ctor: Uint8Array, onnx: 9 },
  UINT8: { ort: "uint8", bytes: 1, ctor: Uint8Array, onnx: 2, min: 0, max: 255 },
  UINT16: { ort: "uint16", bytes: 2, ctor: Uint16Array, onnx: 4, min: 0, max: 65535 },
  UINT32: { ort: "uint32", bytes: 4, ctor: Uint32Array, onnx: 12, min: 0, max: 4294967295 },
  UINT64: { ort: "uint64", bytes: 8, ctor: BigUint64Array as any, onnx: 13, min: 0, max: Number.MAX_SAFE_INTEGER, bigint: true },
  INT8: { ort: "int8", bytes: 1, ctor: Int8Array, onnx: 3, min: -128, max: 127 },
  INT16: { ort: "int16", bytes: 2, ctor: Int16Array, onnx: 5, min: -32768, max: 32767 },
  INT32: { ort: "int32", bytes: 4, ctor: Int32Array, onnx: 6, min: -2147483648, max: 2147483647 },
  INT64: { ort: "int64", bytes: 8, ctor: BigInt64Array as any, onnx: 7, min: Number.MIN_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER, bigint: true },
  FP16: { ort: "float16", bytes: 2, ctor: Uint16Array, onnx: 10 },
  FP32: { ort: "float32", bytes: 4, ctor: Float32Array, onnx: 1 },
  FP64: { ort: "float64", bytes: 8, ctor: Float64Array, onnx: 11 },
};

/** Whether `x` names a v2 datatype (own keys only: "constructor" or "__proto__" are not datatypes). */
export function isDatatype(x: unknown): x is Datatype {
  return typeof x === "string" && Object.hasOwn(INFO, x);
}

/** The type info of `dt`; a JobError INPUT_DATATYPE (400) for anything that is not a datatype. */
function infoOf(dt: string, where = "tensor"): TypeInfo {
  if (!isDatatype(dt)) throw new JobError("INPUT_DATATYPE", `${where}: unsupported datatype ${preview(dt)} (use one of ${DATATYPES.join(", ")})`);
  return INFO[dt];
}

export function bytesPerElement(dt: Datatype): number {
  return infoOf(dt).bytes;
}

export function ortType(dt: Datatype): string {
  return infoOf(dt).ort;
}

const ORT_TO_DT = new Map(Object.entries(INFO).map(([dt, i]) => [i.ort, dt as Datatype]));
const ONNX_TO_DT = new Map(Object.entries(INFO).map(([dt, i]) => [i.onnx, dt as Datatype]));

/** The v2 datatype for an onnxruntime tensor type ("float32" → "FP32"); undefined for strings and unknowns. */
export function datatypeFromOrt(t: string): Datatype | undefined {
  return ORT_TO_DT.get(t);
}

/** The v2 datatype for an ONNX TensorProto.DataType code. */
export function datatypeFromOnnx(code: number): Datatype | undefined {
  return ONNX_TO_DT.get(code);
}

export function onnxElemType(dt: Datatype): number {
  return infoOf(dt).onnx;
}

export function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Most dimensions a tensor may have (ONNX has no limit; no real model comes near this). */
export const MAX_RANK = 64;

/**
 * Most elements one tensor may have (2^30): far beyond any request body the gateway accepts, and small enough
 * that the element count of a valid shape, times 8 bytes, is a safe integer and an allocatable size.
 */
export const MAX_TENSOR_ELEMENTS = 2 ** 30;

/**
 * Checks a tensor shape supplied from outside: an array of at most MAX_RANK non-negative safe integers whose
 * product is at most MAX_TENSOR_ELEMENTS. Returns the element count. Throws JobError INPUT_SHAPE (400) naming
 * `where`, before anything is allocated for the tensor.
 */
export function checkShape(shape: unknown, where: string): number {
  if (!Array.isArray(shape)) throw new JobError("INPUT_SHAPE", `${where}: shape must be an array of dimensions, got ${preview(shape)}`);
  if (shape.length > MAX_RANK) throw new JobError("INPUT_SHAPE", `${where}: shape has ${shape.length} dimensions; at most ${MAX_RANK} are supported`);
  let n = 1;
  for (const [i, d] of shape.entries()) {
    if (typeof d !== "number" || !Number.isSafeInteger(d) || d < 0) {
      throw new JobError("INPUT_SHAPE", `${where}: shape[${i}] = ${preview(d)} is not a non-negative integer`);
    }
    n *= d;
  }
  // a zero dimension makes the product 0 however large the others are: bound every dimension too
  if (n > MAX_TENSOR_ELEMENTS || shape.some((d: number) => d > MAX_TENSOR_ELEMENTS)) {
    throw new JobError("INPUT_SHAPE", `${where}: shape [${shape.join(",")}] has more than ${MAX_TENSOR_ELEMENTS} elements`);
  }
  return n;
}

/** A view over `bytes` as the typed array of `dt`, copying only when the bytes are misaligned. */
export function typedArrayFromBytes(dt: Datatype, bytes: Uint8Array): TypedArray {
  const info = infoOf(dt);
  if (bytes.byteLength % info.bytes !== 0) throw new JobError("INPUT_DATA", `${bytes.byteLength} bytes is not a whole number of ${dt} values`);
  const n = bytes.byteLength / info.bytes;
  if (bytes.byteOffset % info.bytes === 0) return new info.ctor(bytes.buffer, bytes.byteOffset, n);
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return new info.ctor(copy.buffer, 0, n);
}

export function bytesOf(a: TypedArray): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/**
 * Flattens nested JSON arrays (row-major), the way v2 allows `data` to be given: flat, or nested at most as deep
 * as the shape's rank (a scalar's data may still be a one-element array). Iterative, so no nesting depth can
 * overflow the stack, and it stops as soon as the data is nested too deep or holds more than `expected` values.
 * Throws JobError INPUT_SHAPE (400) naming `where`.
 */
function flatten(data: unknown, rank: number, expected: number, where: string, shape: readonly number[]): unknown[] {
  if (!Array.isArray(data)) return [data];
  const maxDepth = Math.max(rank, 1);
  const out: unknown[] = [];
  const stack: Array<{ a: unknown[]; i: number }> = [{ a: data, i: 0 }];
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    if (top.i >= top.a.length) {
      stack.pop();
      continue;
    }
    const x = top.a[top.i++];
    if (Array.isArray(x)) {
      if (stack.length >= maxDepth) {
        throw new JobError("INPUT_SHAPE", `${where}: data is nested deeper than shape [${shape.join(",")}] (rank ${rank}) allows`);
      }
      stack.push({ a: x, i: 0 });
      continue;
    }
    if (out.length >= expected) {
      throw new JobError("INPUT_SHAPE", `${where}: shape [${shape.join(",")}] needs ${expected} values, data has more`);
    }
    out.push(x);
  }
  return out;
}

/** float → IEEE half bits, round to nearest even (shared/float16.ts). */
export function toHalf(v: number): number {
  return float32ToFloat16Bits(v);
}

/** IEEE half bits → float (exact). */
export function fromHalf(h: number): number {
  return float16BitsToFloat32(h);
}

/**
 * Converts a v2 JSON tensor's `data` to a typed array, checking count, kind and range.
 * `where` names the tensor in errors, e.g. `input "x"`. Throws JobError INPUT_DATA / INPUT_SHAPE.
 */
export function typedArrayFromJson(dt: Datatype, shape: number[], data: unknown, where: string): TypedArray {
  const info = infoOf(dt, where);
  const expected = checkShape(shape, where);
  const flat = flatten(data, shape.length, expected, where, shape);
  if (flat.length !== expected) {
    throw new JobError("INPUT_SHAPE", `${where}: shape [${shape.join(",")}] needs ${expected} values, data has ${flat.length}`);
  }
  const out = new info.ctor(expected);
  for (let i = 0; i < expected; i++) {
    let v = flat[i];
    if (dt === "BOOL") {
      if (typeof v !== "boolean" && v !== 0 && v !== 1) throw new JobError("INPUT_DATA", `${where}: data[${i}] must be true or false for BOOL, got ${preview(v)}`);
      (out as Uint8Array)[i] = v ? 1 : 0;
      continue;
    }
    if (typeof v !== "number") {
      throw new JobError("INPUT_DATA", `${where}: data[${i}] must be a number for ${dt}, got ${preview(v)}`);
    }
    if (info.min !== undefined) {
      if (!Number.isInteger(v) || v < info.min || v > info.max!) {
        throw new JobError("INPUT_DATA", `${where}: data[${i}] = ${v} is not a valid ${dt} (integer in [${info.min}, ${info.max}])`);
      }
      if (info.bigint) {
        (out as BigInt64Array)[i] = BigInt(v);
        continue;
      }
    } else if (dt === "FP16") {
      v = toHalf(v);
    }
    (out as Float32Array)[i] = v as number;
  }
  return out;
}

/** A typed array as JSON-ready numbers (or booleans for BOOL). 64-bit integers become JS numbers. */
export function typedArrayToJson(dt: Datatype, a: TypedArray): Array<number | boolean> {
  if (dt === "BOOL") return Array.from(a as Uint8Array, (x) => x !== 0);
  if (dt === "FP16") return Array.from(a as Uint16Array, fromHalf);
  if (infoOf(dt).bigint) return Array.from(a as BigInt64Array, (x) => Number(x));
  return Array.from(a as Float32Array);
}
