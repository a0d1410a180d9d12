/**
 * A seeded generator of mutated HTTP requests for every route of the gateway, shared by the bounded fuzz test
 * (test/e2e/fuzz.test.ts) and the long run (`npm run fuzz`, test/fuzz/run.ts).
 *
 * The core is mutation of valid requests (a v2 infer body built from the served models' metadata, an async job, an
 * experiment spec, an ONNX upload): flip types, drop fields, nest arrays deep, change shapes, wrong datatypes, wrong
 * lengths, prototype keys, unicode, huge numbers. Around it: every route with odd ids and queries, unknown routes,
 * odd methods and content types, empty bodies. The same seed and targets give the same sequence of requests.
 *
 * To send credentials once authentication is on, pass `headers` (e.g. `{ authorization: "Bearer …" }`, or a
 * function of the request) to `createRequestGenerator`.
 */
import { Buffer } from "node:buffer";

/** A small, fast, seeded PRNG (sfc32, seeded through splitmix32): the same seed gives the same sequence. */
export interface Rng {
  /** A float in [0, 1). */
  float(): number;
  /** An integer in [0, n). */
  int(n: number): number;
  /** An integer in [lo, hi]. */
  range(lo: number, hi: number): number;
  pick<T>(a: readonly T[]): T;
  chance(p: number): boolean;
  bytes(n: number): Uint8Array;
}

export function createRng(seed: number): Rng {
  let s = seed >>> 0;
  const splitmix = () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
  let a = splitmix();
  let b = splitmix();
  let c = splitmix();
  let d = splitmix();
  const u32 = () => {
    const t = (((a + b) >>> 0) + d) >>> 0;
    d = (d + 1) >>> 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) >>> 0;
    c = ((c << 21) | (c >>> 11)) >>> 0;
    c = (c + t) >>> 0;
    return t;
  };
  for (let i = 0; i < 12; i++) u32();
  const rng: Rng = {
    float: () => u32() / 2 ** 32,
    int: (n) => Math.floor(rng.float() * n),
    range: (lo, hi) => lo + rng.int(hi - lo + 1),
    pick: (arr) => arr[rng.int(arr.length)]!,
    chance: (p) => rng.float() < p,
    bytes: (n) => Uint8Array.from({ length: n }, () => u32() & 0xff),
  };
  return rng;
}

/** A tensor as model metadata gives it: -1 for a dynamic dimension. */
export interface FuzzTensorSpec {
  name: string;
  datatype: string;
  shape: number[];
}

/** A model the stack serves (metadata as `GET /v2/models/{m}` answers it). */
export interface FuzzModel {
  name: string;
  inputs: FuzzTensorSpec[];
  outputs: FuzzTensorSpec[];
}

/** What the generator aims at. The id pools grow as the runner reads ids out of responses. */
export interface FuzzTargets {
  /** Served models: valid requests are built from their metadata. Never uploaded to or deleted. */
  models: FuzzModel[];
  /** Model names the fuzzer may upload to and delete. */
  scratchModels: string[];
  /** A valid ONNX model to upload (whole, mutated or truncated). */
  onnx: Uint8Array;
  /** A valid experiment spec to mutate. */
  experimentSpec: Record<string, unknown>;
  /** Ids of jobs created during the run. */
  jobIds: string[];
  /** Ids of experiments created during the run. */
  experimentIds: string[];
}

export interface FuzzRequest {
  /** The route pattern, for counting: "POST /v2/models/:model/infer". */
  route: string;
  method: string;
  /** Path and query string. */
  path: string;
  headers: Record<string, string>;
  body?: Uint8Array;
  /**
   * For infer routes: the deadline the request asked for (parameters.timeout) in ms, when it set one; a 504 is a
   * right answer only once that (or the gateway's own request timeout) has passed.
   */
  deadlineMs?: number;
  /** What was done to the request, for failure reports. */
  note: string;
}

export interface GeneratorOptions {
  seed: number;
  targets: FuzzTargets;
  /** Headers added to every request (e.g. Authorization), or a function giving them per request. */
  headers?: Record<string, string> | ((req: FuzzRequest) => Record<string, string>);
}

const DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"];
const PROTO_KEYS = ["__proto__", "constructor", "prototype", "toString", "valueOf", "hasOwnProperty", "__defineGetter__"];
const ODD_STRINGS = [
  "",
  " ",
  "0",
  "-1",
  "1e3",
  "0x10",
  "NaN",
  "Infinity",
  "null",
  "true",
  "FP128",
  "fp32",
  "constructor",
  "__proto__",
  "toString",
  "\u0000",
  "\ud800",
  "\u202e",
  "ünïcödé",
  "😀😀😀",
  "a.b",
  "a*",
  ">",
  "../..",
  "%2e%2e",
  "<script>",
  "x".repeat(300),
];
const ODD_NUMBERS = [0, -0, -1, 1, 0.5, -0.5, 1.5, 255, 256, 65536, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 2 ** 64, 1e21, 1e308, -1e308, 5e-324, Number.MAX_SAFE_INTEGER];
/** Placeholders replaced by deep nesting after JSON.stringify (which would itself overflow building it). */
const DEEP = "\u0001deep\u0001";

/** A value `JSON.parse` gives back with `__proto__` as an own key, the way a request body carries it. */
function protoObject(inner: unknown): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  Object.defineProperty(o, "__proto__", { value: inner, enumerable: true, writable: true, configurable: true });
  return o;
}

function setKey(o: Record<string, unknown>, k: string, v: unknown): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

const clone = <T>(v: T): T => (v === undefined ? v : (JSON.parse(JSON.stringify(v)) as T));

/** Bytes of deep nesting one body may carry: the first placeholders get their depth, later ones a shallow one. */
const DEEP_BUDGET = 2_000_000;

/** Serializes a mutated value, expanding deep-nesting placeholders. */
function serialize(v: unknown): string {
  const text = JSON.stringify(v) ?? "null";
  if (!text.includes("deep")) return text;
  let budget = DEEP_BUDGET;
  return text.replace(/"\\u0001deep\\u0001(array|object):(\d+)"/g, (_m, kind: string, n: string) => {
    const depth = Number(n) * (kind === "array" ? 2 : 6) <= budget ? Number(n) : 3;
    budget -= depth * (kind === "array" ? 2 : 6);
    return kind === "array" ? "[".repeat(depth) + "1" + "]".repeat(depth) : '{"a":'.repeat(depth) + "1" + "}".repeat(depth);
  });
}

const deep = (kind: "array" | "object", depth: number) => `${DEEP}${kind}:${depth}`;

interface Slot {
  parent: Record<string, unknown> | unknown[] | null;
  key: string | number;
  value: unknown;
  path: string;
}

/** Every node of a (small) JSON value with where it sits, root first. Iterative. */
function slots(root: unknown): Slot[] {
  const out: Slot[] = [{ parent: null, key: "", value: root, path: "$" }];
  for (let i = 0; i < out.length && out.length < 2000; i++) {
    const { value, path } = out[i]!;
    if (Array.isArray(value)) value.forEach((v, k) => out.push({ parent: value, key: k, value: v, path: `${path}[${k}]` }));
    else if (value !== null && typeof value === "object") {
      for (const k of Object.keys(value)) out.push({ parent: value as Record<string, unknown>, key: k, value: (value as Record<string, unknown>)[k], path: `${path}.${k}` });
    }
  }
  return out;
}

export class Mutator {
  constructor(private readonly rng: Rng) {}

  /** A value chosen to break parsers: odd numbers and strings, empty and nested containers, prototype keys. */
  oddValue(): unknown {
    const r = this.rng;
    switch (r.int(10)) {
      case 0:
      case 1:
        return r.pick(ODD_NUMBERS);
      case 2:
      case 3:
        return r.pick(ODD_STRINGS);
      case 4:
        return r.pick([null, true, false]);
      case 5:
        return r.pick([[], [[]], [null], ["a"], [1.5], [true], [[1, 2], [3]]]);
      case 6:
        return r.pick([{}, { a: 1 }, protoObject({ polluted: true }), { constructor: { prototype: { x: 1 } } }]);
      case 7:
        return deep(r.pick(["array", "object"] as const), r.pick([3, 10, 100, 5000, 100_000]));
      case 8:
        return "x".repeat(r.pick([1000, 70_000]));
      default:
        return r.range(-1000, 1000);
    }
  }

  /** The value with one to three random mutations; the value itself is not changed. */
  mutate<T>(value: T, times = this.rng.range(1, 3)): { value: unknown; note: string } {
    let v: unknown = clone(value);
    const notes: string[] = [];
    for (let i = 0; i < times; i++) {
      const r = this.mutateOnce(v);
      v = r.value;
      notes.push(r.note);
    }
    return { value: v, note: notes.join("; ") };
  }

  private mutateOnce(root: unknown): { value: unknown; note: string } {
    const r = this.rng;
    const all = slots(root);
    const s = r.pick(all);
    const put = (v: unknown) => {
      if (s.parent === null) return v;
      if (Array.isArray(s.parent)) s.parent[s.key as number] = v;
      else setKey(s.parent, s.key as string, v);
      return root;
    };
    const v = s.value;
    switch (r.int(12)) {
      case 0:
      case 1: {
        const odd = this.oddValue();
        return { value: put(odd), note: `${s.path} = ${String(JSON.stringify(odd)).slice(0, 40)}` };
      }
      case 2:
        if (s.parent === null) return { value: undefined, note: "no body" };
        if (Array.isArray(s.parent)) s.parent.splice(s.key as number, 1);
        else delete s.parent[s.key as string];
        return { value: root, note: `drop ${s.path}` };
      case 3:
        if (Array.isArray(v) && v.length > 0) {
          const n = r.pick([1, 2, 100, 5000]);
          for (let i = 0; i < n; i++) v.push(clone(v[r.int(v.length)]));
          return { value: root, note: `${s.path} +${n} items` };
        }
        return { value: put([v]), note: `wrap ${s.path}` };
      case 4:
        return { value: put(deep("array", r.pick([2, 5, 64, 1000, 200_000]))), note: `deep array at ${s.path}` };
      case 5: {
        let w: unknown = v;
        const n = r.range(1, 6);
        for (let i = 0; i < n; i++) w = [w];
        return { value: put(w), note: `nest ${s.path} ${n} deeper` };
      }
      case 6: {
        // flip the type
        let w: unknown;
        if (typeof v === "number") w = r.pick([String(v), [v], v !== 0, { value: v }]);
        else if (typeof v === "string") w = r.pick([Number(v) || 1, [v], v.length > 0, null]);
        else if (typeof v === "boolean") w = r.pick([String(v), Number(v), [v]]);
        else if (Array.isArray(v)) w = r.pick([Object.fromEntries(v.map((x, i) => [String(i), x])), JSON.stringify(v), v.length]);
        else if (v !== null && typeof v === "object") w = r.pick([Object.values(v), JSON.stringify(v), Object.keys(v)]);
        else w = r.pick([0, "", [], {}]);
        return { value: put(w), note: `flip type of ${s.path}` };
      }
      case 7: {
        const objects = all.filter((x) => x.value !== null && typeof x.value === "object" && !Array.isArray(x.value));
        if (objects.length === 0) return { value: root, note: "nothing to add to" };
        const o = r.pick(objects);
        const key = r.chance(0.6) ? r.pick(PROTO_KEYS) : r.pick([...ODD_STRINGS, "extra", "inputs", "parameters", "data"]);
        setKey(o.value as Record<string, unknown>, key, this.oddValue());
        return { value: root, note: `add ${o.path}.${key}` };
      }
      case 8:
        if (typeof v === "number") {
          const w = r.pick([-v, v + 0.5, v * 1e6, -1, 1e308, 2 ** 53 + 2, 0]);
          return { value: put(w), note: `${s.path} = ${w}` };
        }
        return { value: put(r.pick(ODD_NUMBERS)), note: `${s.path} = odd number` };
      case 9:
        if (Array.isArray(v)) {
          const n = r.int(Math.max(1, v.length));
          v.length = n;
          return { value: root, note: `truncate ${s.path} to ${n}` };
        }
        return { value: put(r.pick(ODD_STRINGS)), note: `${s.path} = odd string` };
      case 10:
        return { value: put(protoObject(this.oddValue())), note: `${s.path} = {"__proto__": …}` };
      default:
        return { value: put(r.pick(["", null, [], {}])), note: `empty ${s.path}` };
    }
  }
}

/** Values for `datatype` in the right JSON form, e.g. [true, false] for BOOL. */
function sampleData(datatype: string, n: number, rng: Rng): Array<number | boolean> {
  return Array.from({ length: n }, (_, i) => {
    switch (datatype) {
      case "BOOL":
        return i % 2 === 0;
      case "FP16":
      case "FP32":
      case "FP64":
        return Math.round((rng.float() * 4 - 2) * 1000) / 1000;
      case "UINT8":
      case "UINT16":
      case "UINT32":
      case "UINT64":
        return rng.int(100);
      default:
        return rng.range(-50, 50);
    }
  });
}

const BYTES: Record<string, number> = { BOOL: 1, UINT8: 1, INT8: 1, UINT16: 2, INT16: 2, FP16: 2, UINT32: 4, INT32: 4, FP32: 4, UINT64: 8, INT64: 8, FP64: 8 };

/** The little-endian bytes of `data` as `datatype` (the v2 binary extension's tensor layout). */
function tensorBytes(datatype: string, data: Array<number | boolean>): Uint8Array {
  const n = data.length;
  const buf = Buffer.alloc(n * (BYTES[datatype] ?? 4));
  data.forEach((x, i) => {
    const v = Number(x);
    switch (datatype) {
      case "BOOL":
      case "UINT8":
        buf.writeUInt8(v & 0xff, i);
        break;
      case "INT8":
        buf.writeInt8(v, i);
        break;
      case "UINT16":
      case "FP16":
        buf.writeUInt16LE(v & 0xffff, i * 2);
        break;
      case "INT16":
        buf.writeInt16LE(v, i * 2);
        break;
      case "UINT32":
        buf.writeUInt32LE(v >>> 0, i * 4);
        break;
      case "INT32":
        buf.writeInt32LE(v, i * 4);
        break;
      case "UINT64":
        buf.writeBigUInt64LE(BigInt(Math.abs(Math.trunc(v))), i * 8);
        break;
      case "INT64":
        buf.writeBigInt64LE(BigInt(Math.trunc(v)), i * 8);
        break;
      case "FP64":
        buf.writeDoubleLE(v, i * 8);
        break;
      default:
        buf.writeFloatLE(v, i * 4);
    }
  });
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Nests a flat array by `shape` (row-major), the other form v2 allows. */
function nest(flat: unknown[], shape: number[]): unknown {
  if (shape.length <= 1) return flat;
  const [, ...inner] = shape;
  const size = inner.reduce((a, b) => a * b, 1);
  if (size === 0) return [];
  const out: unknown[] = [];
  for (let i = 0; i < flat.length; i += size) out.push(nest(flat.slice(i, i + size), inner));
  return out;
}

const enc = (s: string) => new TextEncoder().encode(s);
/** A path or query component; a lone surrogate (which encodeURIComponent refuses) becomes its invalid UTF-8 bytes. */
const u = (s: string) => {
  try {
    return encodeURIComponent(s);
  } catch {
    return encodeURIComponent(s.replace(/[\ud800-\udfff]/g, "")) + "%ED%A0%80";
  }
};

/** Parses a timeout the way the gateway does, to know when a 504 is due. */
function deadlineOf(v: unknown): number | undefined {
  if (typeof v === "number" && Number.isFinite(v) && v > 0) return Math.round(v);
  if (typeof v === "string") {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(v.trim());
    if (m) return Math.round(Number(m[1]) * (m[2] === "m" ? 60_000 : m[2] === "s" ? 1000 : 1));
  }
  return undefined;
}

/** `deadlineMs` of a v2 request whose parameters set a timeout. */
function deadlineOfRequest(body: unknown): Partial<FuzzRequest> {
  const params = (body as { parameters?: unknown } | null | undefined)?.parameters;
  if (params === null || typeof params !== "object" || !Object.hasOwn(params, "timeout")) return {};
  const ms = deadlineOf((params as { timeout?: unknown }).timeout);
  return ms === undefined ? {} : { deadlineMs: ms };
}

/** One request factory per route; `weight` is its share of the mix. */
interface RouteGen {
  weight: number;
  make(): FuzzRequest;
}

/**
 * Builds the generator. `next()` returns the next request; requests depend only on the seed and on the targets
 * (including the id pools as they stand when it is called).
 */
export function createRequestGenerator(opts: GeneratorOptions): { next(): FuzzRequest; readonly rng: Rng } {
  const rng = createRng(opts.seed);
  const m = new Mutator(rng);
  const t = opts.targets;
  const json = { "content-type": "application/json" };

  const req = (route: string, method: string, path: string, body: unknown, note: string, headers: Record<string, string> = json, extra: Partial<FuzzRequest> = {}): FuzzRequest => ({
    route,
    method,
    path,
    headers,
    ...(body === undefined ? {} : { body: body instanceof Uint8Array ? body : enc(typeof body === "string" ? body : serialize(body)) }),
    note,
    ...extra,
  });

  const oddName = () => u(String(rng.pick([...ODD_STRINGS.filter((s) => s !== ""), "nope", "a".repeat(129), "m-1", "1", "_x"])));
  const modelName = () => {
    const r = rng.float();
    if (r < 0.6 && t.models.length) return rng.pick(t.models).name;
    if (r < 0.75) return rng.pick(t.scratchModels);
    return oddName();
  };
  const versionSeg = () => rng.pick(["1", "1", "2", "0", "-1", "01", "1e3", "1.0", "abc", "99999999999999999999", "%20", "__proto__"]);
  const oddQuery = () =>
    rng.pick(["", "", "?x=1", "?__proto__=1", "?constructor=a&constructor=b", "?%ZZ=1", "?a=%E0%A4%A", "?" + "k=v&".repeat(200), "?limit=1e308", "?wait=-1", "?status[]=x"]);
  const odd = (base: () => FuzzRequest, p = 0.1) => (): FuzzRequest => {
    const r = base();
    if (!rng.chance(p)) return r;
    // the wrong method, an odd content type or an unexpected body on a valid route
    switch (rng.int(3)) {
      case 0:
        // never DELETE: a swapped GET /v1/models/{served} would delete a model the run depends on
        return { ...r, method: rng.pick(["GET", "POST", "PUT", "PATCH", "OPTIONS", "HEAD"]), note: `${r.note}; method swapped` };
      case 1:
        return { ...r, headers: { "content-type": rng.pick(["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/json; charset=utf-16", "application/octet-stream", "*/*", ";;"]) }, note: `${r.note}; odd content-type` };
      default:
        return { ...r, body: rng.chance(0.5) ? new Uint8Array() : rng.bytes(rng.range(1, 512)), note: `${r.note}; odd body` };
    }
  };

  /** A valid v2 request for `model`, dynamic dims given small sizes, data flat or nested. */
  const validInfer = (model: FuzzModel, batch = rng.pick([1, 1, 1, 2, 3, 8])) => {
    const inputs = model.inputs.map((s) => {
      const shape = s.shape.map((d, i) => (d >= 0 ? d : i === 0 ? batch : rng.range(1, 3)));
      const n = shape.reduce((a, b) => a * b, 1);
      const flat = sampleData(s.datatype, n, rng);
      return { name: s.name, shape, datatype: s.datatype, data: rng.chance(0.3) ? nest(flat, shape) : flat };
    });
    const body: Record<string, unknown> = { id: `fuzz-${rng.int(1e6)}`, inputs };
    if (rng.chance(0.2)) body.outputs = model.outputs.filter(() => rng.chance(0.6)).map((o) => ({ name: o.name }));
    if (rng.chance(0.15)) body.parameters = { binary_data_output: true };
    return body;
  };

  /** Mutations that know the v2 request's structure: shapes, datatypes, lengths, parameters. */
  const inferMutation = (model: FuzzModel, body: Record<string, unknown>): string => {
    const inputs = body.inputs as Array<Record<string, unknown>>;
    const inp = rng.pick(inputs);
    const shape = inp.shape as number[];
    const flat = Array.isArray(inp.data) ? (inp.data as unknown[]).flat(64) : [];
    switch (rng.int(10)) {
      case 0: {
        // another shape that still matches its data: a valid request of another batch size, or an empty one
        const batch = rng.pick([0, 0, 1, 4, 16, 33, 64]);
        const s = model.inputs.find((x) => x.name === inp.name)!;
        for (const i of inputs) {
          const spec = model.inputs.find((x) => x.name === i.name)!;
          const sh = spec.shape.map((d, k) => (d >= 0 ? d : k === 0 ? batch : 1));
          i.shape = sh;
          i.data = sampleData(spec.datatype, sh.reduce((a, b) => a * b, 1), rng);
        }
        return `batch ${batch} (${s.name})`;
      }
      case 1:
        inp.shape = rng.pick([[], [0], [1], [1e9, 1e9], [2 ** 31, 2 ** 31, 4], [-1, 4], [1.5, 4], [...shape, 1], shape.slice(1), Array(65).fill(1), Array(5000).fill(1), [2 ** 53, 2]]);
        return `${inp.name}.shape = [${String(inp.shape).slice(0, 40)}]`;
      case 2:
        inp.datatype = rng.pick([...DATATYPES, "constructor", "__proto__", "toString", "hasOwnProperty", "fp32", "STRING", "BYTES", ""]);
        if (rng.chance(0.5) && inp.data !== undefined) inp.data = sampleData(String(inp.datatype), flat.length, rng);
        return `${inp.name}.datatype = ${inp.datatype}`;
      case 3:
        inp.data = deep("array", rng.pick([shape.length + 1, 50, 5000, 150_000]));
        return `${inp.name}.data nested deep`;
      case 4: {
        inp.data = rng.pick([[...flat, 1], flat.slice(1), [...flat, ...flat], [flat], [[flat]], flat.map(String), flat.map(() => null), flat.map(() => 1e308), flat.map(() => -1), flat.map(() => 2 ** 53 + 2), flat.map(() => 0.5)]);
        return `${inp.name}.data changed`;
      }
      case 5:
        body.parameters = rng.pick<Record<string, unknown> | unknown>([
          { timeout: rng.pick([1, "1ms", "5ms", 0, -1, "0", "1e3", "abc", 1e308, "99999999999999999999s", null, [], {}, deep("object", 1000)]) },
          { priority: rng.pick(["high", "normal", "low", 1, null, "__proto__"]) },
          { binary_data_output: rng.pick([true, "true", 1]) },
          [],
          "x",
          null,
          protoObject({ timeout: 1 }),
          Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`k${i}`, i])),
        ]);
        return `parameters = ${String(JSON.stringify(body.parameters)).slice(0, 40)}`;
      case 6:
        body.outputs = rng.pick([[{ name: "nope" }], [{ name: "" }], [{}], "all", [{ name: model.outputs[0]?.name, parameters: { binary_data: rng.pick([true, "yes", null]) } }], Array(300).fill({ name: "x" })]);
        return "outputs changed";
      case 7:
        body.id = rng.pick([1, null, "", "x".repeat(300), {}, "\u0000"]);
        return "id changed";
      case 8:
        inputs.push(clone(inp));
        return `${inp.name} given twice`;
      default:
        body.inputs = rng.pick([[], {}, null, Array(300).fill(inp), "x"]);
        return "inputs replaced";
    }
  };

  const inferPath = (model: string) => (rng.chance(0.8) ? `/v2/models/${model}/infer` : `/v2/models/${model}/versions/${versionSeg()}/infer`);
  const inferRoute = (path: string) => (path.includes("/versions/") ? "POST /v2/models/:model/versions/:version/infer" : "POST /v2/models/:model/infer");

  const inferJson = (): FuzzRequest => {
    const model = rng.pick(t.models);
    const body = validInfer(model);
    let note = "valid";
    let value: unknown = body;
    const r = rng.float();
    if (r < 0.45) note = inferMutation(model, body);
    else if (r < 0.85) ({ value, note } = m.mutate(body));
    const name = rng.chance(0.9) ? model.name : modelName();
    const path = inferPath(name);
    return req(inferRoute(path), "POST", path, value === undefined ? "" : value, note, json, deadlineOfRequest(value));
  };

  /** A v2 binary-extension request: JSON header of Inference-Header-Content-Length bytes, then raw tensors. */
  const inferBinary = (): FuzzRequest => {
    const model = rng.pick(t.models);
    const body = validInfer(model);
    const inputs = body.inputs as Array<{ name: string; shape: number[]; datatype: string; data: unknown; parameters?: Record<string, unknown> }>;
    const tails: Uint8Array[] = [];
    for (const inp of inputs) {
      if (rng.chance(0.9)) {
        const bytes = tensorBytes(inp.datatype, (inp.data as Array<number | boolean>[]).flat(64) as Array<number | boolean>);
        tails.push(bytes);
        delete (inp as { data?: unknown }).data;
        inp.parameters = { binary_data_size: bytes.byteLength };
      }
    }
    let note = "valid binary";
    let header: unknown = body;
    let tail: Uint8Array = Buffer.concat(tails);
    const r = rng.float();
    if (r < 0.25) ({ value: header, note } = m.mutate(body));
    else if (r < 0.45) {
      const inp = rng.pick(inputs);
      inp.parameters = { binary_data_size: rng.pick([-1, 0, 1, 1.5, "8", null, 2 ** 53, 1e308, -0, [], {}, deep("array", 100_000), (inp.parameters?.binary_data_size as number) + 1]) };
      note = `binary_data_size = ${String(JSON.stringify(inp.parameters.binary_data_size)).slice(0, 30)}`;
    } else if (r < 0.55) {
      note = inferMutation(model, body);
    } else if (r < 0.65) {
      tail = rng.pick([tail.subarray(0, Math.max(0, tail.length - 1)), Buffer.concat([tail, rng.bytes(rng.range(1, 9))]), new Uint8Array(), rng.bytes(tail.length)]);
      note = `tail of ${tail.length} bytes`;
    }
    const head = enc(header === undefined ? "" : serialize(header));
    let len = String(head.byteLength);
    const total = head.byteLength + tail.byteLength;
    if (rng.chance(0.3)) {
      len = rng.pick([String(head.byteLength + 1), String(head.byteLength - 1), "0", "-1", "-0", "1e3", "1e1", " 12", "12 ", "0x10", "+5", "abc", "", "NaN", "Infinity", String(total + 1), String(total), "99999999999999999999", String(2 ** 53 + 1), "1.5", "%31"]);
      note += `; header length "${len}"`;
    }
    const path = inferPath(rng.chance(0.95) ? model.name : modelName());
    const ct = rng.pick(["application/octet-stream", "application/octet-stream", "application/json", "text/plain"]);
    return req(inferRoute(path), "POST", path, Buffer.concat([head, tail]), note, { "content-type": ct, "inference-header-content-length": len }, deadlineOfRequest(header));
  };

  const modelGet = (): FuzzRequest => {
    const name = modelName();
    const kind = rng.int(4);
    const v = versionSeg();
    const paths: Array<[string, string]> = [
      ["GET /v2/models/:model", `/v2/models/${name}`],
      ["GET /v2/models/:model/versions/:version", `/v2/models/${name}/versions/${v}`],
      ["GET /v2/models/:model/ready", `/v2/models/${name}/ready`],
      ["GET /v2/models/:model/versions/:version/ready", `/v2/models/${name}/versions/${v}/ready`],
    ];
    const [route, path] = paths[kind]!;
    return req(route, "GET", path + oddQuery(), undefined, "model metadata");
  };

  const health = (): FuzzRequest => {
    const [route, path] = rng.pick([
      ["GET /v2/health/live", "/v2/health/live"],
      ["GET /v2/health/ready", "/v2/health/ready"],
      ["GET /v2", "/v2"],
      ["GET /v1/workers", "/v1/workers"],
      ["GET /v1/models", "/v1/models"],
      ["GET /metrics", "/metrics"],
      ["GET /", "/"],
    ] as const);
    return req(route, "GET", path + oddQuery(), undefined, "read");
  };

  const uploadQuery = () => {
    if (rng.chance(0.3)) return "";
    const parts: string[] = [];
    const n = rng.range(1, 3);
    for (let i = 0; i < n; i++) {
      const k = rng.pick(["shards", "shards", "maxShardBytes", "balance", "maxBatchSize", "maxQueueDelayUs", "preferredBatchSizes", "config", "__proto__", "constructor", "x"]);
      let v: string;
      if (k === "config") {
        const cfg = m.mutate({ shards: 2, balance: "bytes", batching: { maxBatchSize: 8, preferredBatchSizes: [2, 4] } });
        v = cfg.value === undefined ? "" : serialize(cfg.value);
      } else {
        v = String(rng.pick(["1", "2", "3", "16", "17", "0", "-1", "1.5", "1e3", "abc", "", "bytes", "flops", "99999999999999999999", "1,2,,3", "1,2", "4096", "4097", " 2"]));
      }
      parts.push(`${u(k)}=${u(v)}`);
    }
    return "?" + parts.join("&");
  };

  const modelPut = (): FuzzRequest => {
    const name = rng.chance(0.85) ? rng.pick(t.scratchModels) : oddName();
    let body: Uint8Array;
    let note: string;
    switch (rng.int(5)) {
      case 0:
        body = t.onnx;
        note = "valid ONNX";
        break;
      case 1: {
        const flipped = Uint8Array.from(t.onnx);
        const flips = rng.range(1, 8);
        for (let i = 0; i < flips; i++) {
          const at = rng.int(flipped.length);
          flipped[at] = flipped[at]! ^ (1 << rng.int(8));
        }
        body = flipped;
        note = `ONNX with ${flips} bit flips`;
        break;
      }
      case 2:
        body = t.onnx.subarray(0, rng.int(t.onnx.length));
        note = "truncated ONNX";
        break;
      case 3:
        body = rng.chance(0.2) ? new Uint8Array() : rng.bytes(rng.range(1, 4096));
        note = "garbage bytes";
        break;
      default:
        body = enc(serialize(m.mutate(validInfer(rng.pick(t.models))).value ?? null));
        note = "JSON instead of ONNX";
    }
    const ct = rng.pick(["application/octet-stream", "application/json", "text/plain", ""]);
    return req("PUT /v1/models/:model", "PUT", `/v1/models/${name}${uploadQuery()}`, body, note, ct ? { "content-type": ct } : {});
  };

  const modelOther = (): FuzzRequest => {
    if (rng.chance(0.5)) return req("GET /v1/models/:model", "GET", `/v1/models/${modelName()}${oddQuery()}`, undefined, "model record");
    // deleting is for scratch models only: the served ones must stay
    const name = rng.chance(0.7) ? rng.pick(t.scratchModels) : oddName();
    return req("DELETE /v1/models/:model", "DELETE", `/v1/models/${name}`, undefined, "delete model");
  };

  const jobId = () => (t.jobIds.length && rng.chance(0.6) ? rng.pick(t.jobIds) : oddName());

  const jobSubmit = (): FuzzRequest => {
    const model = rng.pick(t.models);
    const v = validInfer(model);
    const body: Record<string, unknown> = { model: model.name, inputs: v.inputs };
    if (rng.chance(0.3)) body.priority = "high";
    if (rng.chance(0.3)) body.timeout = rng.pick([1000, "10s", "2m"]);
    if (rng.chance(0.2)) body.id = `fz${rng.int(1e9)}`;
    let value: unknown = body;
    let note = "valid job";
    const r = rng.float();
    if (r < 0.35) note = inferMutation(model, body);
    else if (r < 0.8) ({ value, note } = m.mutate(body));
    const headers: Record<string, string> = { ...json };
    if (rng.chance(0.2)) headers["idempotency-key"] = rng.pick(["k1", "k1", "a b", "x".repeat(300), "__proto__", "x", ""]);
    return req("POST /v1/jobs", "POST", "/v1/jobs", value === undefined ? "" : value, note, headers);
  };

  const jobRead = (): FuzzRequest => {
    switch (rng.int(4)) {
      case 0: {
        // short waits on jobs that exist; any wait on ids that do not
        const id = jobId();
        const known = t.jobIds.includes(id);
        const wait = known ? rng.pick(["", "?wait=10", "?wait=50ms", "?wait=0", "?wait=-1", "?wait=abc"]) : rng.pick(["", "?wait=1e308", "?wait=60s", "?wait=99999999999999999999m", "?wait=1.5s", "?wait=%00"]);
        return req("GET /v1/jobs/:id", "GET", `/v1/jobs/${id}${wait}`, undefined, "job status");
      }
      case 1: {
        const q = rng.pick(["", "?status=queued", "?status=succeeded&limit=5", "?status=nope", "?limit=0", "?limit=-1", "?limit=1e3", "?limit=10001", "?limit=abc", "?model=__proto__", `?model=${rng.pick(t.models).name}&limit=3`, "?limit=99999999999999999999"]);
        return req("GET /v1/jobs", "GET", `/v1/jobs${q}`, undefined, "list jobs");
      }
      case 2:
        return req("DELETE /v1/jobs/:id", "DELETE", `/v1/jobs/${jobId()}`, undefined, "cancel job");
      default: {
        const k = rng.int(3);
        if (k === 0) return req("GET /v1/dead-letters", "GET", `/v1/dead-letters${rng.pick(["", "?limit=5", "?limit=0", "?limit=-3", "?limit=1e308", "?limit=x", "?model=__proto__"])}`, undefined, "dead letters");
        if (k === 1) return req("POST /v1/dead-letters/:id/replay", "POST", `/v1/dead-letters/${jobId()}/replay`, undefined, "replay dead letter");
        return req("DELETE /v1/dead-letters/:id", "DELETE", `/v1/dead-letters/${jobId()}`, undefined, "delete dead letter");
      }
    }
  };

  const experimentId = () => (t.experimentIds.length && rng.chance(0.6) ? rng.pick(t.experimentIds) : oddName());

  const experiments = (): FuzzRequest => {
    const k = rng.int(10);
    if (k <= 2) {
      const spec = { ...t.experimentSpec, name: `fz-${rng.int(1e6)}` };
      const r = rng.float();
      // few valid specs: each one is an experiment stored for the rest of the run
      const { value, note } = r < 0.08 ? { value: spec as unknown, note: "valid spec" } : m.mutate(spec);
      const body = value === undefined ? "" : value;
      return req("POST /v1/experiments", "POST", "/v1/experiments", body, note);
    }
    if (k === 3) return req("GET /v1/experiments", "GET", `/v1/experiments${oddQuery()}`, undefined, "list experiments");
    const id = experimentId();
    const trial = rng.pick(["t1", "0", "__proto__", "a.b", "x".repeat(200), "%00"]);
    switch (k) {
      case 4:
        return req("GET /v1/experiments/:id", "GET", `/v1/experiments/${id}`, undefined, "experiment");
      case 5:
        return req("GET /v1/experiments/:id/trials", "GET", `/v1/experiments/${id}/trials${rng.pick(["", "?status=succeeded", "?status=nope", "?x=1", "?status=a&status=b"])}`, undefined, "trials");
      case 6:
        return rng.chance(0.5)
          ? req("GET /v1/experiments/:id/trials/:trial", "GET", `/v1/experiments/${id}/trials/${trial}`, undefined, "trial")
          : req("GET /v1/experiments/:id/trials/:trial/model.onnx", "GET", `/v1/experiments/${id}/trials/${trial}/model.onnx`, undefined, "trial model");
      case 7:
        return req("POST /v1/experiments/:id/stop", "POST", `/v1/experiments/${id}/stop`, rng.chance(0.8) ? undefined : m.mutate({}).value ?? "", "stop");
      case 8: {
        const { value, note } = m.mutate({ maxTrials: 8, maxFailedTrials: 1, concurrency: 2 });
        return req("POST /v1/experiments/:id/resume", "POST", `/v1/experiments/${id}/resume`, value === undefined ? "" : value, note);
      }
      default: {
        const { value, note } = m.mutate({ name: rng.pick(t.scratchModels), trial: "t1" });
        return req("POST /v1/experiments/:id/deploy", "POST", `/v1/experiments/${id}/deploy`, value === undefined ? "" : value, note);
      }
    }
  };

  const keys = (): FuzzRequest => {
    switch (rng.int(3)) {
      case 0:
        return req("GET /v1/keys", "GET", "/v1/keys", undefined, "list keys");
      case 1: {
        const { value, note } = m.mutate({ tenant: "t1", scopes: ["infer"], name: "k" });
        return req("POST /v1/keys", "POST", "/v1/keys", value === undefined ? "" : value, note);
      }
      default:
        return req("DELETE /v1/keys/:id", "DELETE", `/v1/keys/${oddName()}`, undefined, "revoke key");
    }
  };

  const unknown = (): FuzzRequest => {
    const path = rng.pick([
      "/v2/models",
      "/v2/models/",
      "/v2//models//infer",
      "/v3",
      "/v1",
      "/v1/jobs/a/b",
      "/v2/models/a/versions//infer",
      "/%2e%2e/%2e%2e/etc/passwd",
      "/v2/models/../../v1/models",
      `/${"a/".repeat(500)}`,
      `/v2/models/${"m".repeat(4000)}/infer`,
      "/__proto__",
      "/constructor/prototype",
      "/v2/models/%ff%fe/infer",
      "/v1/models/%00",
      "/ünïcödé",
      "/metrics/x",
      "/index.html",
    ]);
    const method = rng.pick(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "PROPFIND", "MKCOL"]);
    const body = ["GET", "HEAD"].includes(method) ? undefined : rng.pick([undefined, "", "{}", "[]", "null", serialize(deep("array", 1000))]);
    return req("(unknown route)", method, path, body, `${method} ${path.slice(0, 40)}`);
  };

  const gens: RouteGen[] = [
    { weight: 26, make: odd(inferJson, 0.05) },
    { weight: 12, make: odd(inferBinary, 0.03) },
    { weight: 8, make: odd(modelGet) },
    { weight: 5, make: odd(health) },
    { weight: 4, make: odd(modelPut, 0.05) },
    { weight: 4, make: odd(modelOther) },
    { weight: 11, make: odd(jobSubmit, 0.05) },
    { weight: 8, make: odd(jobRead) },
    { weight: 10, make: odd(experiments) },
    { weight: 2, make: odd(keys) },
    { weight: 5, make: unknown },
  ];
  const total = gens.reduce((a, g) => a + g.weight, 0);
  const extra = opts.headers;

  return {
    rng,
    next() {
      let x = rng.int(total);
      const g = gens.find((g) => (x -= g.weight) < 0)!;
      const r = g.make();
      const add = typeof extra === "function" ? extra(r) : extra;
      return add ? { ...r, headers: { ...r.headers, ...add } } : r;
    },
  };
}
