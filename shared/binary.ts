/**
 * The Open Inference Protocol's binary tensor data extension (as Triton implements it): a request or response
 * body is a JSON header of `Inference-Header-Content-Length` bytes followed by raw little-endian tensor bytes,
 * each tensor's length given by `parameters.binary_data_size` in the header.
 */
import { JobError, preview } from "./errors.js";
import { DATATYPES, bytesOf, bytesPerElement, checkShape, isDatatype, typedArrayFromBytes, typedArrayFromJson, type Tensor } from "./tensor.js";
import type { InferRequest, InferResponseJson } from "./wire.js";

export const HEADER_LENGTH = "Inference-Header-Content-Length";

/**
 * Splits a binary-extension body into its JSON header and tensor bytes. The header length must be plain decimal
 * digits (no sign, exponent, hex or spaces) within the body, and the header a JSON object.
 * Throws JobError BAD_REQUEST (400) naming the header.
 */
export function splitBinaryBody(body: Uint8Array, headerLength: string): { json: unknown; rest: Uint8Array } {
  const n = /^[0-9]{1,15}$/.test(headerLength) ? Number(headerLength) : NaN;
  if (!Number.isSafeInteger(n) || n <= 0 || n > body.byteLength) {
    throw new JobError("BAD_REQUEST", `${HEADER_LENGTH}: ${preview(headerLength)} is not a length within the ${body.byteLength}-byte body`);
  }
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body.subarray(0, n)));
  } catch {
    throw new JobError("BAD_REQUEST", `the first ${n} bytes (${HEADER_LENGTH}) are not valid JSON`);
  }
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    throw new JobError("BAD_REQUEST", `the first ${n} bytes (${HEADER_LENGTH}) are JSON but not an object (got ${preview(json)})`);
  }
  return { json, rest: body.subarray(n) };
}

/**
 * Tensors of a request whose inputs may carry `parameters.binary_data_size` (bytes taken in input order from
 * `rest`) or JSON `data`. Throws JobError (400) naming the input.
 */
export function tensorsFromBinaryRequest(req: InferRequest, rest: Uint8Array): Tensor[] {
  let off = 0;
  const out = req.inputs.map((inp, i) => {
    const where = `input "${inp.name}"`;
    if (!isDatatype(inp.datatype)) throw new JobError("INPUT_DATATYPE", `${where}: unsupported datatype ${preview(inp.datatype)} (use one of ${DATATYPES.join(", ")})`);
    const size = inp.parameters?.binary_data_size;
    if (size === undefined) {
      if (inp.data === undefined) throw new JobError("INPUT_DATA", `${where}: needs "data" or parameters.binary_data_size (inputs[${i}])`);
      return { name: inp.name, datatype: inp.datatype, shape: inp.shape, data: typedArrayFromJson(inp.datatype, inp.shape, inp.data, where) };
    }
    if (inp.data !== undefined) throw new JobError("INPUT_DATA", `${where}: has both "data" and parameters.binary_data_size`);
    if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) {
      throw new JobError("INPUT_DATA", `${where}: parameters.binary_data_size must be a non-negative integer, got ${preview(size)}`);
    }
    const expected = checkShape(inp.shape, where) * bytesPerElement(inp.datatype);
    if (size !== expected) {
      throw new JobError("INPUT_SHAPE", `${where}: binary_data_size ${size} but shape [${inp.shape.join(",")}] of ${inp.datatype} needs ${expected} bytes`);
    }
    if (expected > rest.byteLength - off) throw new JobError("INPUT_DATA", `${where}: body ends before its ${expected} bytes`);
    const data = typedArrayFromBytes(inp.datatype, rest.subarray(off, off + expected));
    off += expected;
    return { name: inp.name, datatype: inp.datatype, shape: inp.shape, data };
  });
  if (off !== rest.byteLength) throw new JobError("BAD_REQUEST", `${rest.byteLength - off} bytes after the last binary input are not claimed by any input`);
  return out;
}

/** Which outputs the request wants as binary: the request-level `binary_data_output` or per-output `binary_data`. */
export function binaryOutputs(req: InferRequest): (name: string) => boolean {
  const all = req.parameters?.binary_data_output === true;
  const per = new Map((req.outputs ?? []).map((o) => [o.name, o.parameters?.binary_data]));
  return (name) => {
    const v = per.get(name);
    return v === undefined ? all : v === true;
  };
}

/** Moves the chosen outputs' data out of the JSON into a binary tail. Returns the body and header length. */
export function encodeBinaryResponse(res: InferResponseJson, outputs: readonly Tensor[], binary: (name: string) => boolean): { body: Uint8Array; headerLength: number } | null {
  const chosen = outputs.filter((t) => binary(t.name));
  if (chosen.length === 0) return null;
  const header = {
    ...res,
    outputs: res.outputs.map((o) => {
      const t = outputs.find((x) => x.name === o.name);
      if (!t || !binary(o.name)) return o;
      const { data: _d, ...rest } = o;
      return { ...rest, parameters: { ...(o.parameters ?? {}), binary_data_size: t.data.byteLength } };
    }),
  };
  const head = new TextEncoder().encode(JSON.stringify(header));
  const total = head.byteLength + chosen.reduce((a, t) => a + t.data.byteLength, 0);
  const body = new Uint8Array(total);
  body.set(head, 0);
  let off = head.byteLength;
  for (const o of header.outputs) {
    const t = chosen.find((x) => x.name === o.name);
    if (!t) continue;
    body.set(bytesOf(t.data), off);
    off += t.data.byteLength;
  }
  return { body, headerLength: head.byteLength };
}
