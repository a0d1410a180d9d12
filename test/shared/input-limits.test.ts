import t, { type Test } from "tap";
import { connect, headers as natsHeaders } from "@nats-io/transport-node";
import { jetstreamManager, jetstream, DiscardPolicy } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { JobError, fromNatsError, isErrorCode, preview } from "#shared/errors.js";
import { splitBinaryBody, tensorsFromBinaryRequest } from "#shared/binary.js";
import { checkShape, isDatatype, typedArrayFromJson } from "#shared/tensor.js";
import { resolveBatching } from "#shared/model-repo.js";
import { kvKeys } from "#shared/nats.js";
import { InferRequestSchema, decodeFrame, encodeFrame, withinDepth } from "#shared/wire.js";
import { startTestNats } from "../helpers/nats.js";

/** Asserts `fn` throws a JobError with this code, HTTP status 4xx, and a message matching `re`. */
function throws4xx(t: Test, fn: () => unknown, code: string, re: RegExp, what: string) {
  try {
    fn();
    t.fail(`${what}: did not throw`);
  } catch (err) {
    t.ok(err instanceof JobError, `${what}: a JobError (${(err as Error).message})`);
    t.equal((err as JobError).code, code, `${what}: code ${code}`);
    t.ok((err as JobError).status >= 400 && (err as JobError).status < 500, `${what}: a 4xx`);
    t.match((err as Error).message, re, `${what}: names the field`);
  }
}

const deepArray = (depth: number) => JSON.parse("[".repeat(depth) + "1" + "]".repeat(depth)) as unknown;

t.test("JSON tensor data nested deeper than the shape's rank is a 400 naming the input, at any depth", async (t) => {
  throws4xx(t, () => typedArrayFromJson("FP32", [1, 4], deepArray(200_000), 'input "x"'), "INPUT_SHAPE", /input "x": data is nested deeper than shape \[1,4\] \(rank 2\)/, "200000 deep");
  throws4xx(t, () => typedArrayFromJson("FP32", [4], [[1, 2, 3, 4]], 'input "x"'), "INPUT_SHAPE", /rank 1/, "one level too deep");
  t.same(Array.from(typedArrayFromJson("FP32", [2, 2], [[1, 2], [3, 4]], "x") as Float32Array), [1, 2, 3, 4], "nested as deep as the rank is fine");
  t.same(Array.from(typedArrayFromJson("FP32", [2, 2], [1, 2, 3, 4], "x") as Float32Array), [1, 2, 3, 4], "and so is flat");
  t.same(Array.from(typedArrayFromJson("INT32", [], [7], "x") as Float32Array), [7], "a scalar may come as a one-element array");
  throws4xx(t, () => typedArrayFromJson("FP32", [2], [1, 2, 3], 'input "x"'), "INPUT_SHAPE", /needs 2 values, data has more/, "too many values");
  throws4xx(t, () => typedArrayFromJson("FP32", [1], [{ a: JSON.parse('{"b":'.repeat(100_000) + "1" + "}".repeat(100_000)) }], 'input "x"'), "INPUT_DATA", /data\[0\] must be a number for FP32, got an object/, "a deep object as a value");
});

t.test("shapes are checked before anything is allocated: huge, negative and fractional dimensions are 400s", async (t) => {
  throws4xx(t, () => typedArrayFromJson("FP64", [1e9, 1e9], [1], 'input "x"'), "INPUT_SHAPE", /input "x": shape \[1000000000,1000000000\] has more than 1073741824 elements/, "[1e9, 1e9]");
  throws4xx(t, () => typedArrayFromJson("FP32", [0, 2 ** 40], [], 'input "x"'), "INPUT_SHAPE", /more than/, "a zero dimension does not hide a huge one");
  throws4xx(t, () => checkShape([2, -1], 'input "x"'), "INPUT_SHAPE", /shape\[1\] = -1 is not a non-negative integer/, "negative");
  throws4xx(t, () => checkShape([1.5], 'input "x"'), "INPUT_SHAPE", /shape\[0\] = 1.5/, "fractional");
  throws4xx(t, () => checkShape(Array(65).fill(1), 'input "x"'), "INPUT_SHAPE", /65 dimensions/, "rank 65");
  t.equal(checkShape([0, 4], "x"), 0, "an empty batch is a valid shape");
});

t.test("inherited property names are not datatypes or error codes", async (t) => {
  for (const name of ["constructor", "__proto__", "toString", "hasOwnProperty"]) {
    t.notOk(isDatatype(name), `${name} is not a datatype`);
    t.notOk(isErrorCode(name), `${name} is not an error code`);
    throws4xx(t, () => typedArrayFromJson(name as "FP32", [1], [1], 'input "x"'), "INPUT_DATATYPE", /input "x": unsupported datatype/, `datatype ${name}`);
  }
});

t.test("preview describes any value briefly without recursing", async (t) => {
  t.equal(preview(deepArray(100_000)), "an array of 1");
  t.equal(preview("x".repeat(100)), `"${"x".repeat(39)}…`);
  t.equal(preview(null), "null");
  t.equal(preview({ a: 1 }), "an object");
});

t.test("a wrong Inference-Header-Content-Length is a 400 naming the header", async (t) => {
  const header = new TextEncoder().encode(JSON.stringify({ inputs: [] }));
  const body = new Uint8Array([...header, 1, 2, 3, 4]);
  for (const bad of ["-1", "0", "1e3", "1e1", "0x10", " 12", "12 ", "+5", "", "abc", "1.5", "99999999999999999999", String(body.length + 1), "NaN"]) {
    throws4xx(t, () => splitBinaryBody(body, bad), "BAD_REQUEST", /Inference-Header-Content-Length: .* is not a length within the \d+-byte body/, JSON.stringify(bad));
  }
  throws4xx(t, () => splitBinaryBody(body, String(header.length - 1)), "BAD_REQUEST", /are not valid JSON/, "a length cutting the JSON short");
  for (const json of ["5", "null", "[1]", '"s"']) {
    const b = new TextEncoder().encode(json);
    throws4xx(t, () => splitBinaryBody(b, String(b.length)), "BAD_REQUEST", /JSON but not an object/, `header ${json}`);
  }
  throws4xx(t, () => splitBinaryBody(new Uint8Array([0x7b, 0xff, 0x7d]), "3"), "BAD_REQUEST", /not valid JSON/, "invalid UTF-8");
  const ok = splitBinaryBody(body, String(header.length));
  t.same(ok.json, { inputs: [] });
  t.equal(ok.rest.length, 4);
});

t.test("binary_data_size must be a non-negative integer matching the shape", async (t) => {
  const req = (size: unknown) => InferRequestSchema.parse({ inputs: [{ name: "x", shape: [1, 2], datatype: "FP32", parameters: { binary_data_size: size } }] });
  const tail = new Uint8Array(8);
  for (const bad of [-1, 1.5, "8", null, [8], 2 ** 53, deepArray(20)]) {
    throws4xx(t, () => tensorsFromBinaryRequest(req(bad), tail), "INPUT_DATA", /input "x": parameters.binary_data_size must be a non-negative integer, got /, preview(bad));
  }
  throws4xx(t, () => tensorsFromBinaryRequest(req(12), new Uint8Array(12)), "INPUT_SHAPE", /binary_data_size 12 but shape \[1,2\] of FP32 needs 8 bytes/, "a size that does not fit the shape");
  throws4xx(t, () => tensorsFromBinaryRequest(req(8), new Uint8Array(4)), "INPUT_DATA", /body ends before its 8 bytes/, "a body too short");
  t.same(Array.from(tensorsFromBinaryRequest(req(8), tail)[0]!.data as Float32Array), [0, 0]);
});

t.test("v2 requests are bounded: names, counts, shapes and parameters", async (t) => {
  const input = { name: "x", shape: [1], datatype: "FP32", data: [1] };
  const issue = (body: unknown) => {
    const r = InferRequestSchema.safeParse(body);
    return r.success ? "valid" : `${r.error.issues[0]!.path.join(".")}: ${r.error.issues[0]!.message}`;
  };
  t.equal(issue({ inputs: [input] }), "valid");
  t.match(issue({ inputs: Array(257).fill(input) }), /^inputs: /, "at most 256 inputs");
  t.match(issue({ inputs: [input], outputs: Array(257).fill({ name: "y" }) }), /^outputs: /, "at most 256 outputs");
  t.match(issue({ inputs: [{ ...input, name: "" }] }), /^inputs.0.name: /, "a name is not empty");
  t.match(issue({ inputs: [{ ...input, name: "n".repeat(257) }] }), /^inputs.0.name: /, "a name is bounded");
  t.match(issue({ inputs: [{ ...input, shape: [2 ** 53] }] }), /^inputs.0.shape.0: /, "a dimension is a safe integer");
  t.match(issue({ inputs: [{ ...input, shape: Array(65).fill(1) }] }), /^inputs.0.shape: /, "at most 64 dimensions");
  t.match(issue({ inputs: [input], parameters: [] }), /^parameters: /, "parameters is an object, not an array");
  t.match(issue({ inputs: [input], parameters: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, i])) }), /^parameters: must have at most 64 keys/, "and has a bounded number of keys");
  t.match(issue({ inputs: [input], parameters: { timeout: deepArray(100_000) } }), /^parameters: must not nest deeper than 32 levels/, "and a bounded depth");
  t.equal(issue({ inputs: [input], parameters: { a: { b: [1, { c: 2 }] } } }), "valid", "ordinary nesting is fine");
  t.ok(withinDepth({ a: [[1]] }, 3));
  t.notOk(withinDepth({ a: [[1]] }, 2));
});

t.test("batching settings that the model record could not read back are a 400, not a poisoned model", async (t) => {
  const inputs = [{ name: "x", datatype: "FP32" as const, shape: [-1, 4] }];
  throws4xx(t, () => resolveBatching(inputs, { preferredBatchSizes: [0] }), "BAD_REQUEST", /^preferredBatchSizes\[0\]: /, "a preferred batch size of 0");
  throws4xx(t, () => resolveBatching(inputs, { maxBatchSize: 0 }), "BAD_REQUEST", /^maxBatchSize: /, "a max batch size of 0");
  t.same(resolveBatching(inputs, { maxBatchSize: 8, preferredBatchSizes: [2, 4] }), { maxBatchSize: 8, preferredBatchSizes: [2, 4], maxQueueDelayUs: 0 });
});

t.test("a frame whose header is not an object or whose tensors are out of range is refused", async (t) => {
  const frame = (header: string) => {
    const h = new TextEncoder().encode(header);
    const out = new Uint8Array((8 + h.length + 7) & ~7);
    out.set([0x4a, 0x53, 0x46, 0x31]);
    new DataView(out.buffer).setUint32(4, h.length, true);
    out.set(h, 8);
    return out;
  };
  throws4xx(t, () => decodeFrame(frame("null")), "BAD_REQUEST", /frame header must be a JSON object/, "null header");
  throws4xx(t, () => decodeFrame(frame('{"tensors":{"0":1}}')), "BAD_REQUEST", /tensors are an array/, "tensors not an array");
  throws4xx(t, () => decodeFrame(frame('{"tensors":[{"name":"x","datatype":"FP32","shape":[1e9,1e9],"offset":0,"length":0}]}')), "INPUT_SHAPE", /more than/, "a huge shape");
  const good = encodeFrame({ kind: "job" }, [{ name: "x", datatype: "FP32", shape: [2], data: Float32Array.of(1, 2) }]);
  t.same(Array.from(decodeFrame(good).tensors[0]!.data as Float32Array), [1, 2]);
});

t.test("NATS failures map to 503 NATS_UNAVAILABLE, a lost compare-and-set to 409, anything else to null", async (t) => {
  const nats = await startTestNats(t);
  const nc = await connect({ servers: nats.url });
  t.teardown(() => nc.close());

  const noResponders = await nc.request("nobody.listens", "x", { timeout: 1000 }).catch((e: unknown) => e);
  t.equal(fromNatsError(noResponders)?.code, "NATS_UNAVAILABLE", "no responders");
  t.equal(fromNatsError(noResponders)?.status, 503);

  nc.subscribe("silent.service", { callback: () => undefined });
  const timeout = await nc.request("silent.service", "x", { timeout: 50 }).catch((e: unknown) => e);
  t.equal(fromNatsError(timeout)?.code, "NATS_UNAVAILABLE", "a request timeout");

  const kv = await new Kvm(nc).create("limits_test", { history: 1 });
  await kv.create("k", "1");
  const conflict = await kv.update("k", "2", 999).catch((e: unknown) => e);
  t.equal(fromNatsError(conflict)?.code, "CONFLICT", "update with a stale revision");
  t.equal(fromNatsError(await kv.create("k", "3").catch((e: unknown) => e))?.code, "CONFLICT", "create of an existing key");

  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: "FULL", subjects: ["full.>"], max_msgs_per_subject: 1, discard: DiscardPolicy.New, discard_new_per_subject: true });
  const js = jetstream(nc);
  await js.publish("full.a", "1");
  const full = await js.publish("full.a", "2", { headers: natsHeaders() }).catch((e: unknown) => e);
  t.equal((full as { code?: number }).code, 10077, "a full subject is JetStream error 10077 (which publishJob maps to QUEUE_FULL)");

  t.equal(fromNatsError(new Error("anything")), null, "a plain error is not NATS's");
  t.equal(fromNatsError(new JobError("BAD_REQUEST", "x")), null, "a JobError stays as it is");

  const closed = await connect({ servers: nats.url });
  await closed.close();
  const afterClose = await closed.request("x", "y").catch((e: unknown) => e);
  t.equal(fromNatsError(afterClose)?.code, "NATS_UNAVAILABLE", "a closed connection");
});

t.test("kvKeys lists a bucket's keys in one request while its entries are being rewritten", async (t) => {
  const nats = await startTestNats(t);
  const nc = await connect({ servers: nats.url });
  t.teardown(() => nc.close());
  const jsm = await jetstreamManager(nc);
  const kv = await new Kvm(nc).create("keys_test", { history: 1 });
  for (let i = 0; i < 300; i++) await kv.put(`k${i}`, "v");
  await kv.put("a.b", "nested");
  await kv.delete("k0");
  let stop = false;
  const writer = (async () => {
    for (let i = 0; !stop; i++) await kv.put(`k${i % 300}`, String(i));
  })();
  const started = Date.now();
  const all = await kvKeys(jsm, "keys_test");
  const top = await kvKeys(jsm, "keys_test", "*");
  stop = true;
  await writer;
  t.equal(all.length, 301, "every key, the deleted one (its marker) included");
  t.ok(all.includes("a.b") && all.includes("k299"));
  t.notOk(top.includes("a.b"), '"*" matches single-token keys only');
  t.ok(Date.now() - started < 5000, "at once, however busy the bucket");
});
