import t, { type Test } from "tap";
import * as ort from "onnxruntime-node";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { JobError } from "#shared/errors.js";
import { inspectModel } from "#shared/model-repo.js";
import { latency, naswot } from "#shared/nas/evaluators.js";
import { ElemType, decodeModel, encodeModel, mlp, node, onnx } from "#shared/onnx/builder.js";
import { MAX_SUBGRAPH_DEPTH, assertNoExternalData, findExternalData } from "#shared/onnx/external-data.js";
import {
  LEAK_LEN,
  cleanAdd,
  deeplyNestedBytes,
  externalTensor,
  functionDefaultBytes,
  ld,
  leakyConstant,
  leakyIf,
  leakyInitializer,
  leakyLoopInIf,
  leakySparse,
  mergedGraphBytes,
  nestedIfs,
} from "../helpers/hostile-models.js";

/** The MODEL_INVALID JobError `fn` throws (fails the test when it throws nothing or something else). */
function refusal(t: Test, fn: () => unknown): JobError {
  try {
    fn();
  } catch (err) {
    t.type(err, JobError);
    t.equal((err as JobError).code, "MODEL_INVALID");
    t.equal((err as JobError).status, 400);
    t.equal((err as JobError).retryable, false);
    return err as JobError;
  }
  t.fail("expected a MODEL_INVALID refusal");
  return new JobError("INTERNAL", "not thrown");
}

t.test("a clean model passes, as bytes and as a decoded ModelProto", async (t) => {
  const m = mlp({ layers: [4, 8, 3], seed: 1 });
  t.same(findExternalData(encodeModel(m)), []);
  t.same(findExternalData(m), []);
  t.doesNotThrow(() => assertNoExternalData(encodeModel(cleanAdd())));
  t.doesNotThrow(() => assertNoExternalData(encodeModel(nestedIfs(3))), "clean subgraphs pass");
});

t.test("an external tensor is refused with a message naming where it sits", async (t) => {
  const cases: Array<[string, Uint8Array, string]> = [
    ["initializer", encodeModel(leakyInitializer()), 'initializer "w" in graph "main"'],
    ["sparse initializer", encodeModel(leakySparse()), 'values of sparse initializer "s" in graph "main"'],
    ["Constant node", encodeModel(leakyConstant()), 'attribute "value" of node "c1" (Constant) in graph "main"'],
    ["If then_branch", encodeModel(leakyIf()), 'initializer "w" in subgraph then_branch of node "if1" (If) in graph "main"'],
    [
      "Loop body inside an If",
      encodeModel(leakyLoopInIf()),
      'initializer "w" in subgraph body of node "loop1" (Loop) in subgraph then_branch of node "if1" (If) in graph "main"',
    ],
  ];
  for (const [what, bytes, place] of cases) {
    const err = refusal(t, () => assertNoExternalData(bytes, "upload"));
    t.equal(
      err.message,
      `upload: external data is not accepted: ${place} refers to data outside the model (location "package.json"); store every tensor inside the ONNX file`,
      what,
    );
    t.same(findExternalData(bytes), [{ place, location: "package.json" }], `${what}: found exactly once`);
    t.same(findExternalData(decodeModel(bytes)), [{ place, location: "package.json" }], `${what}: found in the decoded ModelProto too`);
  }
});

t.test("tensor lists, sparse attributes, training graphs and functions are searched too", async (t) => {
  const A = onnx.AttributeProto.AttributeType;
  const withAttr = (attr: object) => {
    const m = cleanAdd();
    m.graph!.node!.push({ opType: "Custom", name: "n1", domain: "x", input: [], output: ["z"], attribute: [attr] });
    return encodeModel(m);
  };
  const sparseT = { values: externalTensor("sv"), indices: { name: "si", dims: [1], dataType: ElemType.INT64, int64Data: [0] }, dims: [LEAK_LEN] };
  t.same(findExternalData(withAttr({ name: "ts", type: A.TENSORS, tensors: [{ name: "ok", dims: [1], dataType: 2, rawData: new Uint8Array(1) }, externalTensor("bad")] })), [
    { place: 'tensor [1] of attribute "ts" of node "n1" (Custom) in graph "main"', location: "package.json" },
  ]);
  t.same(findExternalData(withAttr({ name: "sp", type: A.SPARSE_TENSOR, sparseTensor: sparseT })), [
    { place: 'values of sparse tensor "sv" in attribute "sp" of node "n1" (Custom) in graph "main"', location: "package.json" },
  ]);
  t.same(findExternalData(withAttr({ name: "sps", type: A.SPARSE_TENSORS, sparseTensors: [sparseT] })), [
    { place: 'values of sparse tensor [0] "sv" in attribute "sps" of node "n1" (Custom) in graph "main"', location: "package.json" },
  ]);

  const training = cleanAdd();
  training.trainingInfo = [{ initialization: { name: "init", initializer: [externalTensor("w0")] } }];
  t.same(findExternalData(encodeModel(training)), [{ place: 'initializer "w0" in training_info[0] initialization graph "init"', location: "package.json" }]);

  const fnBody = cleanAdd();
  fnBody.functions = [{ name: "f", domain: "local", input: [], output: ["o"], node: [{ opType: "Constant", name: "fc", output: ["o"], attribute: [{ name: "value", type: A.TENSOR, t: externalTensor("wf") }] }] }];
  t.same(findExternalData(encodeModel(fnBody)), [{ place: 'attribute "value" of node "fc" (Constant) in function "f"', location: "package.json" }]);
});

t.test("external data is refused even where onnx-proto cannot see it", async (t) => {
  // protobuf merges a repeated `graph` field; protobufjs keeps only the last copy
  const merged = mergedGraphBytes();
  t.equal(decodeModel(merged).graph?.initializer?.length ?? 0, 0, "onnx-proto sees no initializer at all");
  t.match(refusal(t, () => assertNoExternalData(merged)).message, /initializer "w" in graph "main" refers to data outside the model/);

  // FunctionProto.attribute_proto (field 11) is unknown to onnx-proto 8, which drops it
  const fnDefault = functionDefaultBytes();
  t.equal(decodeModel(fnDefault).functions.length, 1);
  t.match(refusal(t, () => assertNoExternalData(fnDefault)).message, /attribute "value" \(a default\) of function "leaky_fn" refers to data outside the model/);

  // a location entry without data_location = EXTERNAL, and a data_location without any entry
  const noFlag = encodeModel(leakyInitializer({ dataLocation: false }));
  t.match(refusal(t, () => assertNoExternalData(noFlag)).message, /external data is not accepted: initializer "w"/);
  const flagOnly = cleanAdd();
  flagOnly.graph!.initializer![0]!.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
  t.equal(refusal(t, () => assertNoExternalData(encodeModel(flagOnly))).message, 'external data is not accepted: initializer "w" in graph "main" refers to data outside the model; store every tensor inside the ONNX file');
});

t.test("subgraphs nested up to the limit pass; one level deeper is refused; thousands deep do not overflow the stack", async (t) => {
  t.doesNotThrow(() => assertNoExternalData(encodeModel(nestedIfs(MAX_SUBGRAPH_DEPTH))), `${MAX_SUBGRAPH_DEPTH} levels pass`);
  const err = refusal(t, () => assertNoExternalData(encodeModel(nestedIfs(MAX_SUBGRAPH_DEPTH + 1)), "upload"));
  t.match(err.message, /^upload: subgraphs are nested more than 64 deep \(at subgraph then_branch of node "if64" \(If\) in .*levels.* in graph "main"\)/);
  t.ok(err.message.length < 500, "the message stays short");

  const deep = deeplyNestedBytes(2000);
  t.match(refusal(t, () => assertNoExternalData(deep)).message, /nested more than 64 deep/);
});

t.test("bytes that are not a protobuf, or an ORT-format model, are refused as invalid models", async (t) => {
  t.match(refusal(t, () => assertNoExternalData(new Uint8Array([1, 2, 3, 4, 5]))).message, /^not a valid ONNX model: malformed protobuf: field number 0/);
  const truncated = encodeModel(leakyIf()).subarray(0, 40);
  t.match(refusal(t, () => assertNoExternalData(truncated)).message, /^not a valid ONNX model: malformed protobuf: .*(past the end|truncated)/);
  t.match(refusal(t, () => assertNoExternalData(ld(7, new Uint8Array([0x0b])))).message, /unsupported wire type 3/);
  const ortFormat = new Uint8Array(64);
  ortFormat.set(new TextEncoder().encode("ORTM"), 4);
  t.match(refusal(t, () => assertNoExternalData(ortFormat, "shard m/1/0.onnx")).message, /^shard m\/1\/0\.onnx: ORT-format \(flatbuffer\) models are not accepted/);
});

t.test("ONNX Runtime really reads the file for these models, and inspectModel refuses them before it can", async (t) => {
  const pkg = new Uint8Array(await readFile(path.join(process.cwd(), "package.json"))).subarray(0, LEAK_LEN);
  // without the check: ORT hands back the file's bytes (what the upload path used to allow)
  for (const [what, bytes] of [["plain", encodeModel(leakyInitializer())], ["merged graphs", mergedGraphBytes()]] as const) {
    const s = await ort.InferenceSession.create(bytes);
    const r = await s.run({ x: new ort.Tensor("uint8", new Uint8Array(LEAK_LEN), [LEAK_LEN]) });
    await s.release();
    t.same(Array.from(r.y!.data as Uint8Array), Array.from(pkg), `${what}: ORT alone leaks package.json`);
  }
  for (const bytes of [encodeModel(leakyInitializer()), mergedGraphBytes(), encodeModel(leakyConstant()), encodeModel(leakyIf())]) {
    await t.rejects(inspectModel(bytes), { code: "MODEL_INVALID", message: /external data is not accepted/ });
  }
  const clean = await inspectModel(encodeModel(cleanAdd()));
  t.same(clean.inputs, [{ name: "x", datatype: "UINT8", shape: [LEAK_LEN] }], "a clean model still loads");
});

t.test("the NAS latency and naswot evaluators refuse a model with external data before ORT loads it", async (t) => {
  const m = leakyInitializer();
  m.graph!.node = [node("Add", ["x", "w"], ["a"], {}, "add"), node("Relu", ["a"], ["y"], {}, "relu")];
  await t.rejects(latency(encodeModel(m), { runs: 1, warmup: 0 }), { code: "MODEL_INVALID", message: /^latency: external data is not accepted: initializer "w"/ });
  await t.rejects(naswot(encodeModel(m), { batch: 2 }), { code: "MODEL_INVALID", message: /^naswot: external data is not accepted: initializer "w"/ });
  await t.rejects(naswot(m, { batch: 2 }), { code: "MODEL_INVALID", message: /external data is not accepted/ }, "a ModelProto too");
});
