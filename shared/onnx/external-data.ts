/**
 * Refuses ONNX models with tensors stored outside the model bytes ("external data").
 *
 * A TensorProto may say `data_location: EXTERNAL` with `external_data { key: "location" value: "package.json" }`;
 * ONNX Runtime then reads that file (relative to the process's working directory when the model comes from
 * bytes) or, with ORT's special `_ORT_MEM_ADDR_` location, process memory. A model uploaded to jetshard
 * must be self-contained, so every tensor that uses external data, wherever it sits, is refused before ONNX
 * Runtime ever sees the bytes.
 *
 * The check reads the protobuf wire format itself instead of walking `onnx-proto`'s decoded objects, because
 * ONNX Runtime's C++ parser and protobufjs disagree on hostile bytes: protobufjs drops fields it does not know
 * (onnx-proto 8 lacks `FunctionProto.attribute_proto`, the defaults of function attributes) and keeps only the
 * last copy of a repeated singular message (a second `graph` field), where C++ protobuf merges the copies. Here
 * every occurrence of every tensor-bearing field is inspected, so what ORT would assemble is always covered.
 */
import { JobError } from "../errors.js";
import { encodeModel, type ModelProto } from "./builder.js";

/** Deepest nesting of subgraphs (If/Loop/Scan bodies inside bodies) accepted; deeper models are refused. */
export const MAX_SUBGRAPH_DEPTH = 64;

/** One tensor that uses external data. */
export interface ExternalTensor {
  /** Where it sits, e.g. `initializer "w" in subgraph then_branch of node "if1" (If) in graph "main"`. */
  place: string;
  /** Its `location` entry, when it has one (attacker-controlled text, shortened). */
  location?: string;
}

/** Most findings collected; one is enough to refuse a model. */
const MAX_FINDINGS = 20;
const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

/** Field numbers from onnx.proto (IR version 10). */
const F = {
  model: { graph: 7, trainingInfo: 20, functions: 25 },
  graph: { node: 1, name: 2, initializer: 5, sparseInitializer: 15 },
  node: { name: 3, opType: 4, attribute: 5 },
  attribute: { name: 1, t: 5, g: 6, tensors: 10, graphs: 11, sparseTensor: 22, sparseTensors: 23 },
  tensor: { name: 8, externalData: 13, dataLocation: 14 },
  sparse: { values: 1, indices: 2 },
  training: { initialization: 1, algorithm: 2 },
  function: { name: 1, node: 7, attributeProto: 11 },
  entry: { key: 1, value: 2 },
} as const;

interface Field {
  no: number;
  wire: number;
  /** Payload of a length-delimited field. */
  start: number;
  end: number;
  /** Value of a varint field; only "zero or not" is exact for values past 2^53. */
  value: number;
}

class Malformed extends Error {}

function readVarint(buf: Uint8Array, pos: number, end: number): [number, number] {
  let value = 0;
  for (let i = 0; i < 10; i++) {
    if (pos >= end) throw new Malformed(`truncated varint at byte ${pos}`);
    const b = buf[pos++]!;
    value += (b & 0x7f) * 2 ** (7 * i);
    if ((b & 0x80) === 0) return [value, pos];
  }
  throw new Malformed(`varint longer than 10 bytes at byte ${pos}`);
}

/** The fields of one message in `buf[start, end)`, every occurrence, in order. */
function fields(buf: Uint8Array, start: number, end: number): Field[] {
  const out: Field[] = [];
  let pos = start;
  while (pos < end) {
    const at = pos;
    let tag: number;
    [tag, pos] = readVarint(buf, pos, end);
    const no = Math.floor(tag / 8);
    const wire = tag % 8;
    if (no === 0) throw new Malformed(`field number 0 at byte ${at}`);
    let value = 0;
    let fStart = pos;
    switch (wire) {
      case WIRE_VARINT:
        [value, pos] = readVarint(buf, pos, end);
        break;
      case WIRE_I64:
        pos += 8;
        break;
      case WIRE_I32:
        pos += 4;
        break;
      case WIRE_LEN: {
        let len: number;
        [len, pos] = readVarint(buf, pos, end);
        fStart = pos;
        pos += len;
        break;
      }
      default:
        // groups (3, 4) never occur in ONNX; refusing them keeps this reader and ORT's in agreement
        throw new Malformed(`unsupported wire type ${wire} at byte ${at}`);
    }
    if (pos > end) throw new Malformed(`field ${no} at byte ${at} runs past the end of its message`);
    out.push({ no, wire, start: fStart, end: wire === WIRE_LEN ? pos : fStart, value });
  }
  return out;
}

const decoder = new TextDecoder();
const text = (buf: Uint8Array, f: Field) => decoder.decode(buf.subarray(f.start, f.end));
/** A name from the model, quoted and shortened (it is attacker-controlled and ends up in error messages). */
const quote = (s: string | undefined, fallback: string) => (s ? JSON.stringify(s.length > 80 ? `${s.slice(0, 80)}…` : s) : fallback);

/** Checks that a tensor-bearing field really is a length-delimited message, as ORT would need it to be. */
function sub(f: Field, what: string): Field {
  if (f.wire !== WIRE_LEN) throw new Malformed(`${what} (field ${f.no}) is not a length-delimited message`);
  return f;
}

interface TensorInfo {
  name?: string;
  external: boolean;
  location?: string;
}

function inspectTensor(buf: Uint8Array, t: Field): TensorInfo {
  const info: TensorInfo = { external: false };
  for (const f of fields(buf, t.start, t.end)) {
    if (f.no === F.tensor.name && f.wire === WIRE_LEN) info.name = text(buf, f);
    else if (f.no === F.tensor.dataLocation) {
      if (f.wire !== WIRE_VARINT) throw new Malformed("data_location (field 14) is not a varint");
      // EXTERNAL is 1; any other non-default value is refused too (C++ keeps the previous value for an unknown enum)
      if (f.value !== 0) info.external = true;
    } else if (f.no === F.tensor.externalData) {
      // strict: an entry is refused whatever data_location says (another copy of the field, or another ORT
      // version, may decide that it counts)
      info.external = true;
      const entry = fields(buf, sub(f, "external_data").start, f.end);
      const str = (no: number) => entry.filter((e) => e.no === no && e.wire === WIRE_LEN).map((e) => text(buf, e)).pop();
      const value = str(F.entry.value);
      if (str(F.entry.key) === "location" && value !== undefined) info.location ??= value.slice(0, 200);
    }
  }
  return info;
}

type Item =
  | { kind: "model"; field: Field }
  | { kind: "graph"; field: Field; depth: number; describe: (name: string | undefined) => string }
  | { kind: "node"; field: Field; depth: number; index: number; ctx: string }
  | { kind: "attribute"; field: Field; depth: number; owner: string; fallback: string }
  | { kind: "function"; field: Field; index: number }
  | { kind: "training"; field: Field; index: number };

/**
 * Every tensor in `model` that uses external data: graph initializers, sparse initializers (values and indices),
 * tensor / sparse-tensor attributes of nodes (a Constant's `value`), subgraphs of If/Loop/Scan at any depth,
 * training_info graphs, model-local functions (their nodes and attribute defaults). Pass the bytes when you have
 * them: a decoded `ModelProto` has already lost what onnx-proto does not know.
 * Throws JobError MODEL_INVALID (400) for bytes that are not a well-formed protobuf, for ORT-format
 * (flatbuffer) models, and for subgraphs nested deeper than {@link MAX_SUBGRAPH_DEPTH}.
 */
export function findExternalData(model: Uint8Array | ModelProto): ExternalTensor[] {
  let buf: Uint8Array;
  if (model instanceof Uint8Array) buf = model;
  else {
    try {
      buf = encodeModel(model);
    } catch (err) {
      throw new JobError("MODEL_INVALID", `not a valid ONNX model: ${(err as Error).message}`, { cause: err });
    }
  }
  // ORT treats bytes with the flatbuffer identifier "ORTM" at offset 4 as an ORT-format model, which this
  // reader cannot inspect
  if (buf.length > 8 && decoder.decode(buf.subarray(4, 8)) === "ORTM") {
    throw new JobError("MODEL_INVALID", "ORT-format (flatbuffer) models are not accepted: upload the ONNX (protobuf) model");
  }
  const found: ExternalTensor[] = [];
  const report = (info: TensorInfo, place: string) => {
    if (info.external && found.length < MAX_FINDINGS) found.push({ place, ...(info.location !== undefined ? { location: info.location } : {}) });
  };
  const sparse = (f: Field, what: (name: string) => string) => {
    let valuesName: string | undefined;
    const parts: Array<[string, TensorInfo]> = [];
    for (const s of fields(buf, sub(f, "sparse tensor").start, f.end)) {
      if (s.no === F.sparse.values) {
        const info = inspectTensor(buf, sub(s, "sparse values"));
        valuesName ??= info.name;
        parts.push(["values", info]);
      } else if (s.no === F.sparse.indices) parts.push(["indices", inspectTensor(buf, sub(s, "sparse indices"))]);
    }
    for (const [part, info] of parts) report(info, `${part} of ${what(quote(valuesName, "(unnamed)"))}`);
  };

  // breadth first with an explicit queue: no recursion, so a deeply nested model cannot overflow the stack
  const queue: Item[] = [{ kind: "model", field: { no: 0, wire: WIRE_LEN, start: 0, end: buf.length, value: 0 } }];
  try {
    for (let head = 0; head < queue.length; head++) {
      const item = queue[head]!;
      queue[head] = undefined as never; // let processed items be collected
      const fs = fields(buf, item.field.start, item.field.end);
      switch (item.kind) {
        case "model": {
          let fn = 0;
          let tr = 0;
          for (const f of fs) {
            if (f.no === F.model.graph) queue.push({ kind: "graph", field: sub(f, "graph"), depth: 0, describe: (n) => `graph ${quote(n, "(unnamed)")}` });
            else if (f.no === F.model.trainingInfo) queue.push({ kind: "training", field: sub(f, "training_info"), index: tr++ });
            else if (f.no === F.model.functions) queue.push({ kind: "function", field: sub(f, "function"), index: fn++ });
          }
          break;
        }
        case "training": {
          for (const f of fs) {
            const which = f.no === F.training.initialization ? "initialization" : f.no === F.training.algorithm ? "algorithm" : undefined;
            if (which) queue.push({ kind: "graph", field: sub(f, `training_info ${which}`), depth: 0, describe: (n) => `training_info[${item.index}] ${which} graph ${quote(n, "(unnamed)")}` });
          }
          break;
        }
        case "function": {
          const name = fs.filter((f) => f.no === F.function.name && f.wire === WIRE_LEN).map((f) => text(buf, f)).pop();
          const ctx = `function ${quote(name, `#${item.index}`)}`;
          let nodeIndex = 0;
          for (const f of fs) {
            if (f.no === F.function.node) queue.push({ kind: "node", field: sub(f, "function node"), depth: 0, index: nodeIndex++, ctx });
            else if (f.no === F.function.attributeProto) queue.push({ kind: "attribute", field: sub(f, "function attribute"), depth: 0, owner: `(a default) of ${ctx}`, fallback: "(unnamed)" });
          }
          break;
        }
        case "graph": {
          const name = fs.filter((f) => f.no === F.graph.name && f.wire === WIRE_LEN).map((f) => text(buf, f)).pop();
          const ctx = item.describe(name);
          let nodeIndex = 0;
          let init = 0;
          let sparseInit = 0;
          for (const f of fs) {
            if (f.no === F.graph.node) queue.push({ kind: "node", field: sub(f, "node"), depth: item.depth, index: nodeIndex++, ctx });
            else if (f.no === F.graph.initializer) {
              const info = inspectTensor(buf, sub(f, "initializer"));
              report(info, `initializer ${quote(info.name, `#${init}`)} in ${ctx}`);
              init++;
            } else if (f.no === F.graph.sparseInitializer) {
              const i = sparseInit++;
              sparse(f, (n) => `sparse initializer ${n === "(unnamed)" ? `#${i}` : n} in ${ctx}`);
            }
          }
          break;
        }
        case "node": {
          const str = (no: number) => fs.filter((f) => f.no === no && f.wire === WIRE_LEN).map((f) => text(buf, f)).pop();
          const opType = str(F.node.opType);
          const owner = `of node ${quote(str(F.node.name), `#${item.index}`)}${opType ? ` (${opType.slice(0, 80)})` : ""} in ${item.ctx}`;
          let a = 0;
          for (const f of fs) {
            if (f.no === F.node.attribute) queue.push({ kind: "attribute", field: sub(f, "attribute"), depth: item.depth, owner, fallback: `#${a}` });
            if (f.no === F.node.attribute) a++;
          }
          break;
        }
        case "attribute": {
          const rawName = fs.filter((f) => f.no === F.attribute.name && f.wire === WIRE_LEN).map((f) => text(buf, f)).pop();
          const attr = `attribute ${quote(rawName, item.fallback)} ${item.owner}`;
          const graphLabel = rawName ? rawName.slice(0, 80) : item.fallback;
          let tensors = 0;
          let graphs = 0;
          let sparses = 0;
          for (const f of fs) {
            if (f.no === F.attribute.t) report(inspectTensor(buf, sub(f, "attribute t")), attr);
            else if (f.no === F.attribute.tensors) report(inspectTensor(buf, sub(f, "attribute tensors")), `tensor [${tensors++}] of ${attr}`);
            else if (f.no === F.attribute.sparseTensor) sparse(f, (n) => `sparse tensor ${n} in ${attr}`);
            else if (f.no === F.attribute.sparseTensors) {
              const i = sparses++;
              sparse(f, (n) => `sparse tensor [${i}] ${n} in ${attr}`);
            } else if (f.no === F.attribute.g || f.no === F.attribute.graphs) {
              const label = f.no === F.attribute.g ? graphLabel : `${graphLabel}[${graphs++}]`;
              const depth = item.depth + 1;
              const where = `subgraph ${label} ${item.owner}`;
              if (depth > MAX_SUBGRAPH_DEPTH) {
                throw new JobError("MODEL_INVALID", `subgraphs are nested more than ${MAX_SUBGRAPH_DEPTH} deep (at ${shorten(where)}); jetshard refuses such models`);
              }
              queue.push({ kind: "graph", field: sub(f, "attribute graph"), depth, describe: () => where });
            }
          }
          break;
        }
      }
    }
  } catch (err) {
    if (err instanceof Malformed) throw new JobError("MODEL_INVALID", `not a valid ONNX model: malformed protobuf: ${err.message}`, { cause: err });
    throw err;
  }
  return found;
}

/** Keeps an error message readable when the place is a long chain of nested subgraphs. */
function shorten(place: string): string {
  const parts = place.split(" in ");
  if (parts.length <= 6) return place;
  return [...parts.slice(0, 3), `… (${parts.length - 5} levels) …`, ...parts.slice(-2)].join(" in ");
}

/**
 * Throws JobError MODEL_INVALID (400, never retryable) when any tensor of `model` uses external data, naming
 * the first such tensor and where it sits; also for malformed bytes (see {@link findExternalData}).
 * `where` prefixes the message, e.g. `shard m/1/0.onnx`.
 * Call it on every byte string before `ort.InferenceSession.create` unless this process built the model itself.
 */
export function assertNoExternalData(model: Uint8Array | ModelProto, where?: string): void {
  let found: ExternalTensor[];
  try {
    found = findExternalData(model);
  } catch (err) {
    if (err instanceof JobError && where) throw new JobError(err.code, `${where}: ${err.message}`, { cause: err });
    throw err;
  }
  const first = found[0];
  if (!first) return;
  const more = found.length >= MAX_FINDINGS ? " (and more)" : found.length > 1 ? ` (and ${found.length - 1} more)` : "";
  const loc = first.location !== undefined ? ` (location ${JSON.stringify(first.location)})` : "";
  throw new JobError(
    "MODEL_INVALID",
    `${where ? `${where}: ` : ""}external data is not accepted: ${shorten(first.place)} refers to data outside the model${loc}${more}; store every tensor inside the ONNX file`,
  );
}
