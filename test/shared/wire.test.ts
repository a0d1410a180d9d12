import t from "tap";
import { ConfigError, loadConfig } from "#shared/config.js";
import { JobError } from "#shared/errors.js";
import { fromHalf, toHalf, typedArrayFromJson, typedArrayToJson } from "#shared/tensor.js";
import { decodeFrame, encodeFrame } from "#shared/wire.js";

t.test("a frame round-trips metadata and tensors of every width, aligned for zero-copy views", async (t) => {
  const tensors = [
    { name: "a", datatype: "UINT8" as const, shape: [3], data: Uint8Array.of(1, 2, 3) },
    { name: "b", datatype: "FP64" as const, shape: [2], data: Float64Array.of(Math.E, -0) },
    { name: "c", datatype: "INT64" as const, shape: [1, 2], data: BigInt64Array.of(-5n, 2n ** 62n) },
    { name: "d", datatype: "FP32" as const, shape: [0, 4], data: new Float32Array(0) },
  ];
  const bytes = encodeFrame({ kind: "job", id: "j1" }, tensors);
  const { meta, tensors: back } = decodeFrame(bytes);
  t.same(meta, { kind: "job", id: "j1" });
  t.same(back.map((x) => [x.name, x.datatype, x.shape]), tensors.map((x) => [x.name, x.datatype, x.shape]));
  t.same(back[1]!.data, tensors[1]!.data);
  t.same(back[2]!.data, tensors[2]!.data);
  t.equal(back[1]!.data.buffer, bytes.buffer, "FP64 tensor is a view over the message bytes, not a copy");

  // the same bytes at an odd offset still decode (copied where misaligned)
  const shifted = new Uint8Array(bytes.length + 1);
  shifted.set(bytes, 1);
  t.same(decodeFrame(shifted.subarray(1)).tensors[1]!.data, tensors[1]!.data);
});

t.test("malformed frames are rejected with a reason", async (t) => {
  t.throws(() => decodeFrame(new Uint8Array([1, 2, 3])), /missing JSF1 magic/);
  const good = encodeFrame({ kind: "job" }, [{ name: "x", datatype: "FP32", shape: [4], data: new Float32Array(4) }]);
  t.throws(() => decodeFrame(good.subarray(0, good.length - 8)), /bytes out of range/);
  const lying = encodeFrame({ kind: "job" }, [{ name: "x", datatype: "FP32", shape: [5], data: new Float32Array(4) }]);
  t.throws(() => decodeFrame(lying), /needs 20 bytes, got 16/);
});

t.test("JSON tensors are range-checked and FP16 converts both ways", async (t) => {
  t.throws(() => typedArrayFromJson("UINT8", [1], [-1], "input x"), JobError);
  t.throws(() => typedArrayFromJson("INT32", [1], [1.5], "input x"), /not a valid INT32/);
  t.throws(() => typedArrayFromJson("BOOL", [1], ["yes"], "input x"), /true or false/);
  t.same(typedArrayToJson("BOOL", typedArrayFromJson("BOOL", [2], [true, 0], "b")), [true, false]);
  for (const v of [0, 1, -2, 0.5, 65504, 1e-4, -3.140625]) t.ok(Math.abs(fromHalf(toHalf(v)) - v) <= Math.abs(v) * 1e-3, `fp16 ${v}`);
  t.equal(fromHalf(toHalf(1e6)), Infinity, "overflow becomes infinity");
});

t.test("config is parsed once with defaults and names the bad variable", async (t) => {
  const c = loadConfig({});
  t.equal(c.port, 8080);
  t.equal(c.workers, 2);
  t.same(c.natsServers, ["nats://127.0.0.1:4222"]);
  t.equal(c.natsUrlGiven, false);
  t.same(loadConfig({ JETSHARD_NATS_URL: "nats://a:1, nats://b:2" }).natsServers, ["nats://a:1", "nats://b:2"]);
  t.throws(() => loadConfig({ JETSHARD_PORT: "http" }), ConfigError);
  t.throws(() => loadConfig({ JETSHARD_WORKERS: "-1" }), /JETSHARD_WORKERS/);
});
