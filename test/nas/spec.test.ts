import t from "tap";
import { cellSearchSpace } from "#shared/nas/families.js";
import { parseExperimentSpec } from "#shared/nas/spec.js";
import { expectSpecError } from "./helpers.js";

const base = {
  name: "mlp-search",
  family: "mlp",
  searchSpace: { depth: { _type: "choice", _value: [1, 2, 3] }, width: { _type: "choice", _value: [16, 64] } },
  strategy: { name: "evolution", population: 10, sample: 3 },
  objective: { metric: "naswot", direction: "maximize" },
  constraints: [{ metric: "latency_ms", max: 2 }],
  maxTrials: 50,
  concurrency: 4,
  maxFailedTrials: 3,
  evaluator: { metrics: ["naswot", "latency", "params", "flops"], batch: 32 },
};

t.test("a valid spec parses and is normalized", async (t) => {
  const spec = parseExperimentSpec(base);
  t.same(spec.strategy, { name: "evolution", population: 10, sample: 3 });
  t.equal(spec.maxTrials, 50);
  t.same(parseExperimentSpec({ ...base, strategy: "evolution" }).strategy, { name: "evolution", population: 20, sample: 5 });
  t.same(parseExperimentSpec({ ...base, strategy: "grid" }).strategy, { name: "grid", steps: 5 });
  const minimal = parseExperimentSpec({ name: "c", family: "cell", strategy: "random", objective: { metric: "params", direction: "minimize" }, maxTrials: 1, evaluator: { metrics: ["params"] } });
  t.same(minimal.searchSpace, cellSearchSpace(), "cell defaults to its own space");
  t.equal(minimal.concurrency, 1);
  t.same(minimal.constraints, []);
  const custom = parseExperimentSpec({ ...base, family: "custom", evaluator: { custom: "train", epochs: 3 }, objective: { metric: "val_acc", direction: "maximize" } });
  t.same(custom.evaluator, { custom: "train", epochs: 3 }, "custom evaluator options pass through");
});

t.test("bad specs are NasSpecErrors naming the field", async (t) => {
  expectSpecError(t, () => parseExperimentSpec({ ...base, maxTrials: 0 }), "maxTrials", /^maxTrials: must be >= 1$/);
  expectSpecError(t, () => parseExperimentSpec({ ...base, maxTrials: 2.5 }), "maxTrials", /integer/);
  expectSpecError(t, () => parseExperimentSpec({ ...base, family: "x" }), "family", /unknown family "x"/);
  expectSpecError(t, () => parseExperimentSpec({ ...base, strategy: "y" }), "strategy", /unknown strategy "y"/);
  expectSpecError(t, () => parseExperimentSpec({ ...base, strategy: { name: "y" } }), "strategy.name", /unknown strategy "y"/);
  expectSpecError(t, () => parseExperimentSpec({ ...base, strategy: { name: "evolution", population: 4, sample: 5 } }), "strategy.sample", /<= population/);
  expectSpecError(t, () => parseExperimentSpec({ ...base, evaluator: { metrics: ["naswot", "z"] } }), "evaluator.metrics[1]", /unknown evaluator "z"/);
  expectSpecError(t, () => parseExperimentSpec({ ...base, evaluator: { metrics: [] } }), "evaluator.metrics", /at least 1/);
  expectSpecError(t, () => parseExperimentSpec({ ...base, evaluator: {} }), "evaluator", /"metrics"/);
  expectSpecError(t, () => parseExperimentSpec({ ...base, searchSpace: { depth: { _type: "foo", _value: [1] } } }), "searchSpace.depth._type", /unknown type "foo"/);
  expectSpecError(t, () => parseExperimentSpec({ ...base, searchSpace: { depth: { _type: "choice", _value: [] } } }), "searchSpace.depth._value", /at least one value/);
  expectSpecError(t, () => parseExperimentSpec({ ...base, searchSpace: { depth: { _type: "choice", _value: [1, 100] } } }), "searchSpace.depth._value[1]", /integer in \[1, 64\]/);
  expectSpecError(t, () => parseExperimentSpec({ ...base, searchSpace: undefined }), "searchSpace", /required for family "mlp"/);
  expectSpecError(t, () => parseExperimentSpec({ ...base, objective: { metric: "latency", direction: "minimize" } }), "objective.metric", /not reported/);
  expectSpecError(t, () => parseExperimentSpec({ ...base, objective: { metric: "naswot", direction: "up" } }), "objective.direction", /"maximize", "minimize"/);
  expectSpecError(t, () => parseExperimentSpec({ ...base, constraints: [{ metric: "acc", max: 1 }] }), "constraints[0].metric", /not reported/);
  expectSpecError(t, () => parseExperimentSpec({ ...base, constraints: [{ metric: "params" }] }), "constraints[0]", /min or max/);
  expectSpecError(t, () => parseExperimentSpec({ ...base, family: "custom" }), "evaluator", /needs a custom evaluator/);
  expectSpecError(t, () => parseExperimentSpec({ ...base, concurrency: 0 }), "concurrency", />= 1/);
  expectSpecError(t, () => parseExperimentSpec({ ...base, maxTrial: 5 }), "maxTrial", /unknown field/);
  expectSpecError(t, () => parseExperimentSpec({ ...base, name: "a b" }), "name", /letters, digits/);
  expectSpecError(t, () => parseExperimentSpec({ ...base, familyOptions: { inputShape: [3, 16, 16] } }), "familyOptions.inputShape", /\[features\]/);
  expectSpecError(t, () => parseExperimentSpec({ ...base, familyOptions: { depth: 3 } }), "familyOptions.depth", /unknown field/);
  const { objective: _, ...noObjective } = base;
  expectSpecError(t, () => parseExperimentSpec(noObjective), "objective", /is required/);
  expectSpecError(t, () => parseExperimentSpec("nope"), "spec", /must be an object/);
});

t.test("an mlp scored by naswot must keep ReLU activations", async (t) => {
  const space = { ...base.searchSpace, activation: { _type: "choice", _value: ["relu", "tanh"] } };
  expectSpecError(t, () => parseExperimentSpec({ ...base, searchSpace: space }), "searchSpace.activation._value[1]", /naswot reads ReLU activation codes/);
  const noNaswot = { ...base, searchSpace: space, objective: { metric: "params", direction: "minimize" }, constraints: [], evaluator: { metrics: ["params"] } };
  t.equal(parseExperimentSpec(noNaswot).family, "mlp", "fine without naswot");
});
