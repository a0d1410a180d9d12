import t, { type Test } from "tap";
import ort from "onnxruntime-node";
import { encodeModel, rng, type ModelProto } from "#shared/onnx/builder.js";
import { buildModel, cellArchString, cellSearchSpace, checkFamilySpace, type Family, type FamilyOptions } from "#shared/nas/families.js";
import { parseSearchSpace, sample, type Point } from "#shared/nas/search-space.js";
import { expectSpecError } from "./helpers.js";

/** Runs the model in onnxruntime-node on a batch of 3 and returns the output. */
async function run(m: ModelProto, inputShape: number[]): Promise<ort.Tensor> {
  const session = await ort.InferenceSession.create(encodeModel(m));
  try {
    const shape = [3, ...inputShape];
    const r = rng(1);
    const data = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => r() * 2 - 1);
    const out = await session.run({ input: new ort.Tensor("float32", data, shape) });
    return out["output"]!;
  } finally {
    await session.release();
  }
}

async function checkRuns(t: Test, family: Family, point: Point, inputShape: number[], opts: FamilyOptions = {}) {
  const out = await run(buildModel(family, point, opts), inputShape);
  t.same(out.dims, [3, opts.classes ?? 10], `${family} ${JSON.stringify(point)}: output [3, classes]`);
  t.ok((out.data as Float32Array).every(Number.isFinite), "finite outputs");
}

const spaces: Record<Family, ReturnType<typeof parseSearchSpace>> = {
  mlp: parseSearchSpace({
    depth: { _type: "choice", _value: [1, 2, 3] },
    width: { _type: "choice", _value: [8, 32] },
    activation: { _type: "choice", _value: ["relu", "tanh", "sigmoid"] },
  }),
  cnn: parseSearchSpace({
    stages: { _type: "randint", _value: [1, 4] },
    channels: { _type: "choice", _value: [4, 8] },
    kernel: { _type: "choice", _value: [3, 5] },
    residual: { _type: "choice", _value: [true, false] },
  }),
  cell: cellSearchSpace(),
};

t.test("every family builds models that load and run in onnxruntime-node", async (t) => {
  const r = rng(2);
  for (const family of ["mlp", "cnn", "cell"] as Family[]) {
    for (let i = 0; i < 4; i++) await checkRuns(t, family, sample(spaces[family], r), family === "mlp" ? [64] : [3, 16, 16]);
  }
  await checkRuns(t, "mlp", { widths: [16, 8, 4] }, [20], { inputShape: [20], classes: 3 });
  await checkRuns(t, "mlp", { depth: 2, width: 16, width_1: 5 }, [64]);
  await checkRuns(t, "cnn", { stages: 2, blocks: 2, residual: true, kernel: 3, channels: 4 }, [1, 12, 12], { inputShape: [1, 12, 12] });
});

t.test("cells with dead nodes or no live path still build valid graphs", async (t) => {
  const ops = (o: string[]) => Object.fromEntries(["edge_0_1", "edge_0_2", "edge_1_2", "edge_0_3", "edge_1_3", "edge_2_3"].map((e, i) => [e, o[i]!]));
  const cases = {
    "node 1 has no live input": ops(["none", "conv3x3", "conv1x1", "skip", "conv3x3", "avgpool3x3"]),
    "node 2 has no live input": ops(["conv1x1", "none", "none", "conv3x3", "skip", "conv3x3"]),
    "nodes 1 and 2 are dead": ops(["none", "none", "skip", "conv1x1", "conv3x3", "avgpool3x3"]),
    "the output has no live input": ops(["conv3x3", "conv3x3", "conv3x3", "none", "none", "none"]),
    "every edge is none": ops(["none", "none", "none", "none", "none", "none"]),
    "only a skip to the output": ops(["none", "none", "none", "skip", "none", "none"]),
  };
  for (const [name, point] of Object.entries(cases)) {
    t.comment(name);
    await checkRuns(t, "cell", point, [3, 16, 16]);
    await checkRuns(t, "cell", point, [3, 8, 8], { cells: 3, channels: 4, inputShape: [3, 8, 8] });
  }
  const m = buildModel("cell", cases["the output has no live input"]);
  t.notOk(m.graph!.node!.some((n) => n.opType === "Conv" && n.name!.includes("_e")), "edges that cannot reach the output are pruned");
  const out = await run(m, [3, 16, 16]);
  const d = out.data as Float32Array;
  t.same([...d.slice(0, 10)], [...d.slice(10, 20)], "a zero cell makes every input give the same logits");
});

t.test("the same point and seed give the same bytes; another seed other weights", async (t) => {
  const p = sample(cellSearchSpace(), rng(4));
  t.same(encodeModel(buildModel("cell", p)), encodeModel(buildModel("cell", p)));
  t.not(Buffer.from(encodeModel(buildModel("cell", p, { seed: 2 }))).toString("hex"), Buffer.from(encodeModel(buildModel("cell", p))).toString("hex"));
});

t.test("cellSearchSpace has six choice parameters and cells print as NAS-Bench-201 strings", async (t) => {
  const space = cellSearchSpace();
  t.equal(Object.keys(space).length, 6);
  t.ok(Object.values(space).every((s) => s._type === "choice" && s._value.length === 5));
  t.equal(
    cellArchString({ edge_0_1: "conv3x3", edge_0_2: "none", edge_1_2: "skip", edge_0_3: "conv1x1", edge_1_3: "avgpool3x3", edge_2_3: "none" }),
    "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|nor_conv_1x1~0|avg_pool_3x3~1|none~2|",
  );
});

t.test("points and spaces a family cannot use are NasSpecErrors naming the field", async (t) => {
  expectSpecError(t, () => buildModel("mlp", { depth: 0 }), "point.depth", /integer in \[1, 64\]/);
  expectSpecError(t, () => buildModel("mlp", { activation: "gelu" }), "point.activation", /must be one of/);
  expectSpecError(t, () => buildModel("cnn", { kernel: 4 }), "point.kernel", /must be one of/);
  expectSpecError(t, () => buildModel("cell", { edge_0_1: "conv3x3" }), "point.edge_0_2", /required/);
  expectSpecError(t, () => checkFamilySpace("cnn", parseSearchSpace({ kernel: { _type: "choice", _value: [3, 4] } })), "searchSpace.kernel._value[1]", /must be one of 1, 3, 5, 7/);
  expectSpecError(t, () => checkFamilySpace("mlp", parseSearchSpace({ width: { _type: "uniform", _value: [8, 64] } })), "searchSpace.width._type", /must be an integer: use choice, randint or quniform/);
  expectSpecError(t, () => checkFamilySpace("cell", parseSearchSpace({ edge_0_1: { _type: "choice", _value: ["none"] } })), "searchSpace", /needs parameter "edge_0_2"/);
  t.doesNotThrow(() => checkFamilySpace("mlp", parseSearchSpace({ width: { _type: "quniform", _value: [8, 64, 8] }, lr: { _type: "loguniform", _value: [1e-4, 1] } })));
});
