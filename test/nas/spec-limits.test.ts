import t from "tap";
import { MAX_ARCH_PARAMS, archParams, buildModel, cellSearchSpace, type Family } from "#shared/nas/families.js";
import { NasSpecError } from "#shared/nas/errors.js";
import { parseSearchSpace } from "#shared/nas/search-space.js";
import { parseExperimentSpec, type SpecLimits } from "#shared/nas/spec.js";
import { expectSpecError } from "./helpers.js";

const custom = {
  name: "c",
  family: "custom",
  searchSpace: { x: { _type: "choice", _value: [1, 2] } },
  strategy: "random",
  objective: { metric: "score", direction: "maximize" },
  maxTrials: 10,
  evaluator: { custom: "train", epochs: 3 },
};
const mlp = (searchSpace: unknown, familyOptions?: unknown) => ({
  ...custom,
  family: "mlp",
  searchSpace,
  ...(familyOptions ? { familyOptions } : {}),
  objective: { metric: "params", direction: "minimize" },
  evaluator: { metrics: ["params"] },
});
const limits: SpecLimits = { maxTrials: 100, maxTrialConcurrency: 8, maxTrialTimeoutMs: 60_000 };

t.test("a custom evaluator is named; its other keys are options", async (t) => {
  t.same(parseExperimentSpec(custom).evaluator, { custom: "train", epochs: 3 });
  for (const name of ["a", "train_v2", "Train-3", "x".repeat(64)]) t.equal((parseExperimentSpec({ ...custom, evaluator: { custom: name } }).evaluator as { custom: string }).custom, name);
});

t.test("an evaluator that looks like a path is refused naming evaluator.custom", async (t) => {
  const ev = (custom_: unknown) => () => parseExperimentSpec({ ...custom, evaluator: { custom: custom_ } });
  expectSpecError(t, ev("/etc/evil.js"), "evaluator.custom", /registered by the operator.*not a path: got "\/etc\/evil\.js"/);
  expectSpecError(t, ev("../../tmp/evil"), "evaluator.custom", /not a path/);
  expectSpecError(t, ev(".."), "evaluator.custom", /not a path/);
  expectSpecError(t, ev(".hidden"), "evaluator.custom", /not a path/);
  expectSpecError(t, ev("sub/train"), "evaluator.custom", /not a path/);
  expectSpecError(t, ev("sub\\train"), "evaluator.custom", /not a path/);
  expectSpecError(t, ev("C:evil"), "evaluator.custom", /not a path/);
  expectSpecError(t, ev("train.js"), "evaluator.custom", /without an extension \("train", not "train\.js"\)/);
  expectSpecError(t, ev("train.ts"), "evaluator.custom", /without an extension/);
  expectSpecError(t, ev("has space"), "evaluator.custom", /letters, digits, '_' and '-'/);
  expectSpecError(t, ev("x".repeat(65)), "evaluator.custom", /at most 64 characters/);
  expectSpecError(t, ev("_leading"), "evaluator.custom", /must start with a letter or digit/);
  expectSpecError(t, ev(""), "evaluator.custom", /must not be empty/);
  expectSpecError(t, ev(7), "evaluator.custom", /string/);
});

t.test("the old module key is refused with a pointer to registered evaluators", async (t) => {
  expectSpecError(t, () => parseExperimentSpec({ ...custom, evaluator: { module: "test/nas/fixtures/evaluators.ts" } }), "evaluator.module", /no longer accepted.*\{"custom": "<name>"/);
  expectSpecError(t, () => parseExperimentSpec({ ...custom, evaluator: { module: "x.js", custom: "x" } }), "evaluator.module", /no longer accepted/);
  expectSpecError(t, () => parseExperimentSpec({ ...custom, evaluator: { epochs: 3 } }), "evaluator", /"custom"/);
});

t.test("maxTrials, concurrency and trialTimeoutMs above the operator's limits are refused naming the field and the limit", async (t) => {
  t.ok(parseExperimentSpec({ ...custom, maxTrials: 100, concurrency: 8, trialTimeoutMs: 60_000 }, limits), "at the limits: fine");
  expectSpecError(t, () => parseExperimentSpec({ ...custom, maxTrials: 101 }, limits), "maxTrials", /^maxTrials: must be <= 100 \(the limit JETSHARD_MAX_TRIALS\), got 101$/);
  expectSpecError(t, () => parseExperimentSpec({ ...custom, concurrency: 9 }, limits), "concurrency", /must be <= 8 \(the limit JETSHARD_MAX_TRIAL_CONCURRENCY\), got 9/);
  expectSpecError(t, () => parseExperimentSpec({ ...custom, trialTimeoutMs: 60_001 }, limits), "trialTimeoutMs", /must be <= 60000 \(the limit JETSHARD_MAX_TRIAL_TIMEOUT_MS\), got 60001/);
  t.ok(parseExperimentSpec({ ...custom, maxTrials: 101 }), "without limits (a controller re-reading a stored spec) only the schema bounds apply");
});

t.test("a search space is bounded: parameters, choice values, value sizes, numeric bounds, quniform steps", async (t) => {
  const space = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`p${i}`, { _type: "choice", _value: [1] }]));
  t.ok(parseSearchSpace(space(128)), "128 parameters: fine");
  expectSpecError(t, () => parseSearchSpace(space(129)), "searchSpace", /has 129 parameters, more than 128/);
  expectSpecError(t, () => parseSearchSpace({ x: { _type: "choice", _value: Array.from({ length: 1025 }, (_, i) => i) } }), "searchSpace.x._value", /1025 values, more than 1024/);
  expectSpecError(t, () => parseSearchSpace({ x: { _type: "choice", _value: ["a".repeat(1025)] } }), "searchSpace.x._value[0]", /at most 1024/);
  expectSpecError(t, () => parseSearchSpace({ x: { _type: "choice", _value: [Array.from({ length: 1025 }, () => 1)] } }), "searchSpace.x._value[0]", /at most 1024/);
  expectSpecError(t, () => parseSearchSpace({ x: { _type: "randint", _value: [0, 2 ** 60] } }), "searchSpace.x._value[1]", /within ±1000000000000000/);
  expectSpecError(t, () => parseSearchSpace({ x: { _type: "uniform", _value: [-1e300, 1e300] } }), "searchSpace.x._value[0]", /within ±/);
  expectSpecError(t, () => parseSearchSpace({ x: { _type: "quniform", _value: [0, 1, 1e-12] } }), "searchSpace.x._value[2]", /q is too small/);
  expectSpecError(t, () => parseSearchSpace({ ["p".repeat(129)]: { _type: "choice", _value: [1] } }), `searchSpace.${"p".repeat(129)}`, /at most 128 characters/);
});

t.test("an mlp space whose largest model is too big is refused naming searchSpace", async (t) => {
  t.ok(parseExperimentSpec(mlp({ depth: { _type: "choice", _value: [1, 2, 3] }, width: { _type: "choice", _value: [16, 1024] } })), "small: fine");
  expectSpecError(t, () => parseExperimentSpec(mlp({ depth: { _type: "randint", _value: [1, 65] }, width: { _type: "choice", _value: [16, 65536] } })), "searchSpace", /largest mlp model .* parameters, more than the most jetshard builds \(25000000\)/);
  expectSpecError(t, () => parseExperimentSpec(mlp({ widths: { _type: "choice", _value: [[16], [8192, 8192]] } })), "searchSpace", /"widths":\[8192,8192\]/);
  expectSpecError(t, () => parseExperimentSpec(mlp({ width_0: { _type: "choice", _value: [16, 4096] } }, { inputShape: [8192] })), "searchSpace", /more than the most jetshard builds/);
  // depth 1 with a huge first layer is the largest: the check does not just take the deepest net
  const shallow = mlp({ depth: { _type: "choice", _value: [1, 2] }, width_0: { _type: "choice", _value: [30_000] }, width_1: { _type: "choice", _value: [1] } }, { inputShape: [10], classes: 1000 });
  expectSpecError(t, () => parseExperimentSpec(shallow), "searchSpace", /"depth":1/);
  const bigInput = { ...mlp({ stages: { _type: "choice", _value: [1] } }, { inputShape: [3, 1024, 1024] }), family: "cnn" };
  expectSpecError(t, () => parseExperimentSpec(bigInput), "familyOptions.inputShape", /an input sample of \[3,1024,1024\] has 3145728 values, more than 1048576/);
});

t.test("a cnn or cell spec whose largest model is too big is refused naming the field", async (t) => {
  const cnn = (searchSpace: unknown) => ({ ...mlp(searchSpace), family: "cnn" });
  t.ok(parseExperimentSpec(cnn({ stages: { _type: "choice", _value: [1, 2, 3] }, channels: { _type: "choice", _value: [16, 32] } })), "small: fine");
  expectSpecError(t, () => parseExperimentSpec(cnn({ stages: { _type: "choice", _value: [6] }, channels: { _type: "choice", _value: [1024] }, kernel: { _type: "choice", _value: [7] } })), "searchSpace", /largest cnn model/);
  const cell = (familyOptions: unknown) => ({ ...mlp(undefined, familyOptions), family: "cell", searchSpace: undefined });
  t.ok(parseExperimentSpec(cell({ channels: 64, cells: 5 })), "a 5-cell net of 64 channels: fine");
  expectSpecError(t, () => parseExperimentSpec(cell({ channels: 4096, cells: 64 })), "familyOptions", /largest cell model of this spec \(channels 4096 and cells 64\)/);
  // a cell space without conv edges stays small whatever its width
  const noConv = Object.fromEntries(Object.keys(cellSearchSpace()).map((k) => [k, { _type: "choice", _value: ["skip", "avgpool3x3"] }]));
  t.ok(parseExperimentSpec({ ...cell({ channels: 1024, cells: 64 }), searchSpace: noConv }), "no conv edges: fine");
});

t.test("archParams counts exactly the weights buildModel makes (an upper bound for pruned cells)", async (t) => {
  const cases: Array<[Family, Record<string, unknown>, Record<string, unknown>]> = [
    ["mlp", {}, {}],
    ["mlp", { depth: 3, width: 32, width_1: 7 }, { inputShape: [12], classes: 5 }],
    ["mlp", { widths: [9, 4, 3] }, {}],
    ["cnn", {}, {}],
    ["cnn", { stages: 3, blocks: 2, channels: 8, kernel: 5, residual: true }, { inputShape: [2, 16, 16], classes: 4 }],
    ["cell", Object.fromEntries(Object.keys(cellSearchSpace()).map((k) => [k, "conv3x3"])), { channels: 8, cells: 2 }],
  ];
  for (const [family, point, opts] of cases) {
    const m = buildModel(family, point as never, opts);
    const weights = (m.graph!.initializer ?? []).reduce((n, x) => n + (x.dims ?? []).reduce((a: number, b) => a * Number(b), 1), 0);
    const counted = archParams(family, point as never, opts);
    if (family === "cell") t.ok(counted >= weights && counted - weights <= 1, `cell: ${counted} bounds ${weights}`);
    else t.equal(counted, weights, `${family} ${JSON.stringify(point)}`);
  }
});

t.test("buildModel refuses a point beyond MAX_ARCH_PARAMS before allocating it (stored specs, direct publishers)", async (t) => {
  t.throws(() => buildModel("mlp", { depth: 64, width: 65536 }), NasSpecError);
  expectSpecError(t, () => buildModel("mlp", { depth: 64, width: 65536 }), "point", new RegExp(`more than the most jetshard builds \\(${MAX_ARCH_PARAMS}\\)`));
});
