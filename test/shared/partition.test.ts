import t from "tap";
import * as ort from "onnxruntime-node";
import {
  ElemType,
  type ModelProto,
  type NodeProto,
  decodeModel,
  encodeModel,
  floatTensor,
  int64Tensor,
  mlp,
  model,
  node,
  randomFloats,
  rng,
  valueInfo,
} from "#shared/onnx/builder.js";
import { cnn, transformerBlock } from "#shared/onnx/families.js";
import { PartitionError, type PartitionResult, partition } from "#shared/onnx/partition.js";
import { inferShapes } from "#shared/onnx/shape-inference.js";

type Feeds = Record<string, ort.Tensor>;
type Assert = Pick<typeof t, "same" | "ok">;
const BATCH = 3;

/** Random feeds for every graph input, the symbolic batch dim set to BATCH. */
function feedsFor(m: ModelProto, seed = 7): Feeds {
  const rand = rng(seed);
  const feeds: Feeds = {};
  for (const vi of m.graph!.input!) {
    const tt = vi.type!.tensorType!;
    const dims = tt.shape!.dim!.map((d) => (d.dimParam ? BATCH : Number(d.dimValue)));
    const n = dims.reduce((a, b) => a * b, 1);
    feeds[vi.name!] =
      tt.elemType === ElemType.BOOL
        ? new ort.Tensor("bool", Uint8Array.from({ length: n }, () => (rand() < 0.5 ? 1 : 0)), dims)
        : new ort.Tensor("float32", randomFloats(n, rand), dims);
  }
  return feeds;
}

async function run(m: ModelProto, feeds: Feeds): Promise<Record<string, ort.Tensor>> {
  const session = await ort.InferenceSession.create(encodeModel(m));
  try {
    return await session.run(feeds);
  } finally {
    await session.release();
  }
}

/** Runs the stages as a pipeline: stage 0 gets the original feeds, each later stage only its predecessor's outputs. */
async function chain(t: Assert, r: PartitionResult, feeds: Feeds): Promise<Record<string, ort.Tensor>> {
  let available: Record<string, ort.Tensor> = feeds;
  for (const [i, stage] of r.stages.entries()) {
    const names = r.info[i]!.inputs.map((x) => x.name);
    if (i > 0) t.same(names, r.info[i - 1]!.outputs.map((x) => x.name), `stage ${i} reads exactly what stage ${i - 1} writes`);
    const stageFeeds: Feeds = {};
    for (const name of names) {
      if (!available[name]) throw new Error(`stage ${i} needs ${name}, which nothing before it provides`);
      stageFeeds[name] = available[name]!;
    }
    available = await run(stage, stageFeeds);
  }
  return available;
}

function maxAbsDiff(a: ort.Tensor, b: ort.Tensor): number {
  const x = a.data as Float32Array;
  const y = b.data as Float32Array;
  if (x.length !== y.length) return Infinity;
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]! - y[i]!));
  return m;
}

async function checkEquivalent(t: Assert, whole: ModelProto, r: PartitionResult): Promise<void> {
  const feeds = feedsFor(whole);
  const expected = await run(whole, feeds);
  const got = await chain(t, r, feeds);
  const outputNames = whole.graph!.output!.map((o) => o.name!);
  t.same(Object.keys(got).sort(), [...outputNames].sort(), "the last stage returns the original outputs");
  t.same(r.info.at(-1)!.outputs.map((o) => o.name), outputNames, "in the original order");
  for (const name of outputNames) {
    t.same(got[name]!.dims, expected[name]!.dims, `${name} has the whole model's dims`);
    t.ok(maxAbsDiff(got[name]!, expected[name]!) <= 1e-5, `${name} matches the whole model (max abs diff ${maxAbsDiff(got[name]!, expected[name]!)})`);
  }
}

/** Every initializer a stage holds is read by one of its nodes (or subgraphs). */
function ownInitializersOnly(t: Assert, r: PartitionResult): void {
  for (const [i, stage] of r.stages.entries()) {
    const g = stage.graph!;
    const reads = new Set<string>();
    const walk = (nodes: NodeProto[]) => {
      for (const n of nodes) {
        for (const x of n.input ?? []) reads.add(x);
        for (const a of n.attribute ?? []) if (a.g) walk(a.g.node ?? []);
      }
    };
    walk(g.node ?? []);
    const stray = (g.initializer ?? []).map((x) => x.name!).filter((name) => !reads.has(name));
    t.same(stray, [], `stage ${i} holds only initializers it reads`);
  }
}

const uniformMlp = (layers = 8, width = 64) => mlp({ layers: Array.from({ length: layers + 1 }, () => width), seed: 3 });
const LAYER_BYTES = 64 * 64 * 4 + 64 * 4;

t.test("chained stages reproduce the whole model for an MLP, a residual CNN and transformer blocks", async (t) => {
  const families: Array<[string, ModelProto]> = [
    ["mlp", mlp({ layers: [32, 64, 48, 10], seed: 5, softmax: true })],
    ["cnn", cnn({ channels: 8, blocks: 2, inputHW: 6, classes: 5, seed: 2 })],
    ["cnn-matmul-head", cnn({ channels: 4, blocks: 1, inputHW: [5, 7], head: "MatMul", seed: 4 })],
    ["transformer", transformerBlock({ dModel: 16, heads: 2, seqLen: 6, ffn: 32, seed: 3 })],
    ["transformer-decomposed", transformerBlock({ dModel: 8, heads: 1, seqLen: 4, ffn: 16, layers: 2, activation: "Relu", decomposeLayerNorm: true })],
  ];
  for (const [name, m] of families) {
    for (const k of [2, 3]) {
      await t.test(`${name} in ${k} stages`, async (t) => {
        const r = partition(m, { k });
        t.equal(r.k, k);
        t.equal(r.stages.length, k);
        t.equal(r.note, undefined);
        t.same(r.info[0]!.inputs.map((x) => x.name), ["input"], "stage 0 takes the original input");
        for (const s of r.stages) {
          t.equal(s.irVersion, m.irVersion, "keeps the IR version");
          t.same(s.opsetImport, m.opsetImport, "keeps the opset imports");
        }
        const total = r.info.reduce((s, i) => s + i.nodes, 0);
        t.ok(total >= m.graph!.node!.length, "every node lands in a stage");
        ownInitializersOnly(t, r);
        await checkEquivalent(t, m, r);
      });
    }
  }
});

t.test("partitioning is deterministic", async (t) => {
  const m = transformerBlock({ layers: 2 });
  const a = partition(m, { k: 3 }).stages.map((s) => Buffer.from(encodeModel(s)).toString("base64"));
  const b = partition(m, { k: 3 }).stages.map((s) => Buffer.from(encodeModel(s)).toString("base64"));
  t.same(a, b);
});

t.test("stages of a uniform MLP hold about an equal share of the weights", async (t) => {
  const m = uniformMlp(8);
  const total = 8 * LAYER_BYTES;
  for (const k of [2, 3, 4]) {
    const r = partition(m, { k });
    t.equal(r.info.reduce((s, i) => s + i.bytes, 0), total, `k=${k}: weights are neither lost nor duplicated`);
    for (const info of r.info) t.ok(info.bytes <= 1.5 * (total / k), `k=${k}: stage ${info.index} holds ${info.bytes} of a fair ${total / k}`);
  }
});

t.test("balancing by FLOPs evens out compute where bytes and FLOPs disagree", async (t) => {
  // Convolutions over 16x16 maps are cheap in bytes and costly in FLOPs; the wide classifier is the reverse.
  const m = cnn({ channels: 8, blocks: 1, inputHW: 16, classes: 200 });
  const byBytes = partition(m, { k: 2 });
  const byFlops = partition(m, { k: 2, balance: "flops" });
  const maxFlops = (r: PartitionResult) => Math.max(...r.info.map((i) => i.flops));
  const total = byFlops.info.reduce((s, i) => s + i.flops, 0);
  t.equal(byFlops.balance, "flops");
  t.ok(maxFlops(byFlops) <= 1.25 * (total / 2), `heaviest stage ${maxFlops(byFlops)} FLOPs of a fair ${total / 2}`);
  t.ok(maxFlops(byFlops) < maxFlops(byBytes), "more even in FLOPs than the byte-balanced split");
  await checkEquivalent(t, m, byFlops);
});

t.test("a residual tensor is carried across a cut inside its block", async (t) => {
  // Stem, the block's two convs and the head weigh 896, 2336, 2336 and 360 bytes: the even cut splits the block.
  const m = cnn({ channels: 8, blocks: 1, inputHW: 6, classes: 8 });
  const r = partition(m, { k: 2 });
  const carried = r.info[0]!.outputs.map((o) => o.name);
  t.ok(carried.includes("b0_in"), `the skip tensor crosses the cut (carried: ${carried})`);
  const stage1 = r.stages[1]!.graph!;
  t.ok(stage1.node!.some((n) => n.opType === "Add" && n.input!.includes("b0_in")), "the residual Add sits in stage 1");
  t.notOk(stage1.node!.some((n) => n.output!.includes("b0_in")), "and reads it as a stage input");
  await checkEquivalent(t, m, r);
});

t.test("late-used inputs and early outputs pass through the stages in between", async (t) => {
  const rand = rng(9);
  const inits = [0, 1, 2].map((i) => floatTensor(`W${i}`, [8, 8], randomFloats(64, rand, 0.5)));
  const m = model({
    nodes: [
      node("MatMul", ["a", "W0"], ["early"]),
      node("MatMul", ["early", "W1"], ["h1"]),
      node("MatMul", ["h1", "W2"], ["h2"]),
      node("Add", ["h2", "b"], ["out"]),
    ],
    inputs: [valueInfo("b", ElemType.FLOAT, ["N", 8]), valueInfo("a", ElemType.FLOAT, ["N", 8]), valueInfo("unused", ElemType.FLOAT, [1])],
    outputs: [valueInfo("out", ElemType.FLOAT, ["N", 8]), valueInfo("early", ElemType.FLOAT, ["N", 8])],
    initializers: inits,
  });
  const r = partition(m, { k: 3 });
  t.same(r.info[0]!.inputs.map((x) => x.name), ["b", "a"], "stage 0 takes the inputs some stage needs, in the original order");
  t.same(r.info[1]!.inputs.map((x) => x.name), ["b", "early"], "stage 1 receives the late input and the early output");
  t.same(r.info[1]!.outputs.map((x) => x.name), ["b", "early", "h1"], "and passes them on");
  const feeds = feedsFor(m);
  delete feeds.unused;
  const expected = await run(m, { ...feeds, unused: new ort.Tensor("float32", new Float32Array(1), [1]) });
  const got = await chain(t, r, feeds);
  t.same(Object.keys(got), ["out", "early"]);
  for (const name of ["out", "early"]) t.ok(maxAbsDiff(got[name]!, expected[name]!) <= 1e-5, `${name} matches`);
});

t.test("shared initializers and Constant nodes are copied into every stage that reads them", async (t) => {
  const rand = rng(5);
  const m = model({
    nodes: [
      // builder's node() would store a tensor attribute as a graph, so this one is written out.
      { opType: "Constant", name: "bias", input: [], output: ["bias"], attribute: [{ name: "value", type: 4, t: floatTensor("bias", [8], randomFloats(8, rand)) }] },
      node("MatMul", ["x", "W"], ["h0"]),
      node("Add", ["h0", "bias"], ["h1"]),
      node("MatMul", ["h1", "W"], ["h2"]),
      node("Add", ["h2", "bias"], ["y"]),
    ],
    inputs: [valueInfo("x", ElemType.FLOAT, ["N", 8])],
    outputs: [valueInfo("y", ElemType.FLOAT, ["N", 8])],
    initializers: [floatTensor("W", [8, 8], randomFloats(64, rand))],
  });
  const r = partition(m, { k: 2 });
  for (const [i, stage] of r.stages.entries()) {
    t.same(stage.graph!.initializer!.map((x) => x.name), ["W"], `stage ${i} holds the tied weight`);
    t.equal(stage.graph!.node!.filter((n) => n.opType === "Constant").length, 1, `stage ${i} holds the Constant`);
    t.equal(r.info[i]!.bytes, (64 + 8) * 4, `stage ${i} counts both`);
  }
  await checkEquivalent(t, m, r);
});

t.test("model families are deterministic for a seed", async (t) => {
  const bytes = (m: ModelProto) => Buffer.from(encodeModel(m)).toString("base64");
  t.equal(bytes(cnn({ seed: 4 })), bytes(cnn({ seed: 4 })));
  t.not(bytes(cnn({ seed: 4 })), bytes(cnn({ seed: 5 })));
  t.equal(bytes(transformerBlock({ seed: 4 })), bytes(transformerBlock({ seed: 4 })));
  t.not(bytes(transformerBlock({ seed: 4 })), bytes(transformerBlock({ seed: 5 })));
  t.throws(() => transformerBlock({ dModel: 10, heads: 3 }), /heads/);
});

t.test("nodes listed out of order are sorted topologically before cutting", async (t) => {
  const m = uniformMlp(4);
  const shuffled: ModelProto = { ...m, graph: { ...m.graph!, node: [...m.graph!.node!].reverse() } };
  const r = partition(shuffled, { k: 2 });
  t.same(r.info.map((i) => i.bytes), [2 * LAYER_BYTES, 2 * LAYER_BYTES]);
  await checkEquivalent(t, m, r);
});

t.test("an If node is never cut and its outer-scope reads become stage inputs", async (t) => {
  const rand = rng(11);
  const branch = (name: string, op: string) => ({
    name,
    node: [node(op, ["h", "bias"], [`${name}_out`])],
    input: [],
    output: [valueInfo(`${name}_out`, ElemType.FLOAT, ["N", 8])],
    initializer: [],
  });
  const m = model({
    nodes: [
      node("MatMul", ["x", "W0"], ["h"]),
      node("If", ["cond"], ["y"], { then_branch: branch("then", "Add"), else_branch: branch("else", "Sub") }),
      node("MatMul", ["y", "W1"], ["out"]),
    ],
    inputs: [valueInfo("x", ElemType.FLOAT, ["N", 8]), valueInfo("cond", ElemType.BOOL, [])],
    outputs: [valueInfo("out", ElemType.FLOAT, ["N", 8])],
    initializers: [
      floatTensor("W0", [8, 8], randomFloats(64, rand)),
      floatTensor("bias", [8], randomFloats(8, rand)),
      floatTensor("W1", [8, 8], randomFloats(64, rand)),
    ],
  });
  const r = partition(m, { k: 3 });
  const ifStage = r.info.findIndex((i) => r.stages[i.index]!.graph!.node!.some((n) => n.opType === "If"));
  t.same(r.info[ifStage]!.inputs.map((x) => x.name).sort(), ["cond", "h"], "the If stage reads the condition and the outer tensor");
  t.ok(r.stages[ifStage]!.graph!.initializer!.some((x) => x.name === "bias"), "the branch's outer initializer is copied in");
  for (const cond of [0, 1]) {
    const feeds = { ...feedsFor(m), cond: new ort.Tensor("bool", Uint8Array.of(cond), []) };
    const expected = await run(m, feeds);
    const got = await chain(t, r, feeds);
    t.ok(maxAbsDiff(got.out!, expected.out!) <= 1e-5, `cond=${cond}: matches the whole model`);
  }
});

t.test("bad shard counts are rejected with BAD_SHARDS", async (t) => {
  const m = uniformMlp(2); // 5 nodes
  for (const k of [0, -1, 1.5, 6, Number.NaN]) {
    t.throws(() => partition(m, { k }), { name: "PartitionError", code: "BAD_SHARDS", message: /shards/ }, `k=${k}`);
  }
  t.throws(() => partition(m, { maxShardBytes: 0 }), { code: "BAD_SHARDS" });
  t.equal(partition(m, { k: 5 }).stages.length, 5, "one node per stage is allowed");
  try {
    partition(m, { k: 0 });
  } catch (err) {
    t.ok(err instanceof PartitionError);
    t.equal((err as PartitionError).retryable, false);
  }
});

t.test("malformed graphs are rejected with BAD_MODEL", async (t) => {
  const graph = (nodes: NodeProto[]) =>
    model({ nodes, inputs: [valueInfo("x", ElemType.FLOAT, ["N", 2])], outputs: [valueInfo("y", ElemType.FLOAT, ["N", 2])] });
  t.throws(() => partition(graph([node("Add", ["x", "z"], ["y"]), node("Relu", ["y"], ["z"])]), { k: 2 }), { code: "BAD_MODEL", message: /cycle/ });
  t.throws(() => partition(graph([node("Add", ["x", "ghost"], ["y"]), node("Relu", ["y"], ["z"])]), { k: 2 }), { code: "BAD_MODEL", message: /ghost/ });
  t.throws(() => partition(graph([node("Relu", ["x"], ["z"]), node("Relu", ["z"], ["z"])]), { k: 2 }), { code: "BAD_MODEL" });
  t.throws(() => partition({ irVersion: 8 }, { k: 2 }), { code: "BAD_MODEL", message: /no graph/ });
});

t.test("a one-node model comes back as one stage with a note", async (t) => {
  const rand = rng(1);
  const m = model({
    nodes: [node("Gemm", ["input", "W", "B"], ["output"], { transB: 1 })],
    inputs: [valueInfo("input", ElemType.FLOAT, ["N", 4])],
    outputs: [valueInfo("output", ElemType.FLOAT, ["N", 3])],
    initializers: [floatTensor("W", [3, 4], randomFloats(12, rand)), floatTensor("B", [3], randomFloats(3, rand))],
  });
  const r = partition(m, { k: 2 });
  t.equal(r.k, 1);
  t.match(r.note, /stored whole/);
  t.equal(r.info[0]!.bytes, 15 * 4);
  await checkEquivalent(t, m, r);
});

t.test("maxShardBytes picks the smallest stage count whose stages fit", async (t) => {
  const m = uniformMlp(8);
  const r = partition(m, { maxShardBytes: 2.5 * LAYER_BYTES });
  t.equal(r.k, 4, "three stages would need 8/3 layers each");
  for (const info of r.info) t.ok(info.bytes <= 2.5 * LAYER_BYTES);
  t.equal(partition(m, { maxShardBytes: 3 * LAYER_BYTES }).k, 3);
  t.equal(partition(m, { maxShardBytes: 100 * LAYER_BYTES }).k, 1);
  t.throws(() => partition(m, { maxShardBytes: 10_000 }), { code: "SHARD_TOO_BIG", message: /MatMul/ }, "one weight matrix is over budget");
  t.throws(() => partition(m, { k: 2, maxShardBytes: 2.5 * LAYER_BYTES }), { code: "SHARD_TOO_BIG", message: /shards=2/ });
  await checkEquivalent(t, m, r);
});

t.test("boundary tensors keep the symbolic batch dim", async (t) => {
  const m = transformerBlock({ layers: 2 });
  const r = partition(m, { k: 3 });
  for (const info of r.info) {
    for (const b of [...info.inputs, ...info.outputs]) {
      t.equal(b.elemType, ElemType.FLOAT, `${b.name} is float`);
      t.equal(b.shape?.[0], "N", `${b.name} keeps N (${JSON.stringify(b.shape)})`);
      t.ok(b.shape!.slice(1).every((d) => typeof d === "number"), `${b.name} has its other dims`);
    }
  }
  for (const s of r.stages) for (const vi of [...s.graph!.input!, ...s.graph!.output!]) t.equal(vi.type!.tensorType!.shape!.dim![0]!.dimParam, "N");
});

t.test("a model decoded from bytes partitions like the one it was built from", async (t) => {
  const m = cnn({ blocks: 2 });
  const decoded = decodeModel(encodeModel(m));
  const a = partition(m, { k: 3 });
  const b = partition(decoded, { k: 3 });
  t.same(b.info, a.info);
  await checkEquivalent(t, m, b);
});

t.test("shape inference handles reshape, conv, pooling, flatten, concat, matmul and unknown ops", async (t) => {
  const rand = rng(2);
  const m = model({
    nodes: [
      node("Conv", ["x", "Wc"], ["c"], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }),
      node("MaxPool", ["c"], ["p"], { kernel_shape: [2, 2], strides: [2, 2] }),
      node("Flatten", ["p"], ["f"], { axis: 1 }),
      node("Reshape", ["c", "shape"], ["r"]),
      node("Transpose", ["r"], ["tr"], { perm: [0, 2, 1] }),
      node("Concat", ["f", "f"], ["cat"], { axis: 1 }),
      node("MatMul", ["tr", "Wm"], ["mm"]),
      node("ReduceMean", ["mm"], ["rm"], { axes: [-1], keepdims: 0 }),
      node("Mystery", ["mm"], ["myst"]),
      node("Mystery", ["mm"], ["declared"]),
      node("Cast", ["mm"], ["i"], { to: ElemType.INT64 }),
    ],
    inputs: [valueInfo("x", ElemType.FLOAT, ["N", 3, 9, 9])],
    outputs: [valueInfo("cat", ElemType.FLOAT, null)],
    valueInfo: [valueInfo("declared", ElemType.FLOAT, ["N", 7])],
    initializers: [
      floatTensor("Wc", [4, 3, 3, 3], randomFloats(108, rand)),
      int64Tensor("shape", [3], [0, 4, -1]),
      floatTensor("Wm", [4, 6], randomFloats(24, rand)),
    ],
  });
  const s = inferShapes(m.graph!);
  t.same(s.get("c")!.shape, ["N", 4, 5, 5]);
  t.same(s.get("p")!.shape, ["N", 4, 2, 2]);
  t.same(s.get("f")!.shape, ["N", 16]);
  t.same(s.get("r")!.shape, ["N", 4, 25]);
  t.same(s.get("tr")!.shape, ["N", 25, 4]);
  t.same(s.get("cat")!.shape, ["N", 32], "inference fills in what the declared output leaves out");
  t.same(s.get("mm")!.shape, ["N", 25, 6]);
  t.same(s.get("rm")!.shape, ["N", 25]);
  t.same(s.get("myst"), { name: "myst", elemType: ElemType.FLOAT, shape: null }, "unknown ops take the first input's type");
  t.same(s.get("declared")!.shape, ["N", 7], "declared value info is used");
  t.equal(s.get("i")!.elemType, ElemType.INT64);
});

t.test("cuts never carry a sequence: every stage loads in ONNX Runtime and the chain equals the whole model", async (t) => {
  // s (a sequence) lives from the first node to ConcatFromSequence; the byte-even 3-way cut would fall inside that span
  const rand = rng(21);
  const m = model({
    nodes: [
      node("SplitToSequence", ["x"], ["s"], { axis: 1 }),
      node("MatMul", ["x", "W0"], ["a"]),
      node("MatMul", ["a", "W1"], ["b"]),
      node("ConcatFromSequence", ["s"], ["d"], { axis: 1 }),
      node("Add", ["b", "d"], ["e"]),
      node("MatMul", ["e", "W2"], ["out"]),
    ],
    inputs: [valueInfo("x", ElemType.FLOAT, ["N", 8])],
    outputs: [valueInfo("out", ElemType.FLOAT, ["N", 8])],
    initializers: [0, 1, 2].map((i) => floatTensor(`W${i}`, [8, 8], randomFloats(64, rand, 0.5))),
  });
  const infos = inferShapes(m.graph!);
  t.equal(infos.get("s")?.kind, "sequence", "shape inference knows SplitToSequence makes a sequence");
  t.equal(infos.get("d")?.kind, undefined, "and ConcatFromSequence a tensor");

  for (const k of [2, 3]) {
    await t.test(`${k} stages`, async (t) => {
      const r = partition(m, { k });
      t.equal(r.k, k);
      t.equal(r.note, undefined);
      for (const [i, info] of r.info.entries()) {
        t.notOk([...info.inputs, ...info.outputs].some((x) => x.name === "s"), `stage ${i} does not carry the sequence`);
      }
      await checkEquivalent(t, m, r);
    });
  }

  await t.test("more stages than tensor-only cuts allow: fewer stages, with a note", async (t) => {
    const r = partition(m, { k: 4 });
    t.equal(r.k, 3, "the two cuts after ConcatFromSequence are the only ones");
    t.match(r.note, /shards=4 requested .* 2 place\(s\) .* stored in 3 stage\(s\)/);
    await checkEquivalent(t, m, r);
  });
});
