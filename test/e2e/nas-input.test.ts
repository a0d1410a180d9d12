import t from "tap";
import { buildModel } from "#shared/nas/families.js";
import { naswot } from "#shared/nas/evaluators.js";
import { parseExperimentSpec } from "#shared/nas/spec.js";
import { rng } from "#shared/onnx/builder.js";
import { startStack } from "../helpers/stack.js";
import { controller, experimentsApi } from "../helpers/nas.js";

const N = 16;
const rand = rng(99);
const values = Float32Array.from({ length: N * 8 }, () => rand() * 4 - 2);
const spec = {
  name: "uploaded-input",
  family: "mlp",
  familyOptions: { inputShape: [8], classes: 3 },
  searchSpace: { depth: { _type: "choice", _value: [1, 2] }, width: { _type: "choice", _value: [8, 16] } },
  strategy: "grid",
  objective: { metric: "naswot", direction: "maximize" },
  maxTrials: 4,
  evaluator: { metrics: ["naswot"], input: { shape: [N, 8], data: Buffer.from(values.buffer).toString("base64") } },
  seed: 3,
};

t.test("an uploaded NASWOT minibatch is validated against its shape", async (t) => {
  t.ok(parseExperimentSpec(spec), "parses");
  t.throws(() => parseExperimentSpec({ ...spec, evaluator: { metrics: ["naswot"], input: { shape: [N, 9], data: spec.evaluator.input.data } } }), /evaluator\.input\.data: shape \[16,9\] needs 144 FP32 values, data has 128/);
});

t.test("trials score NASWOT on the uploaded minibatch, not the synthetic one", async (t) => {
  const stack = await startStack(t);
  const gw = await stack.gateway();
  await stack.worker();
  await controller(t, stack);
  const api = experimentsApi(gw.url);
  const created = await api.create(spec);
  t.equal(created.status, 201, JSON.stringify(created.body));
  const done = await api.waitStatus(created.body.id, ["completed", "failed"], 60_000);
  t.equal(done.status, "completed", done.reason ?? "");
  const trials = (await api.trials(created.body.id)).body.trials;
  t.equal(trials.length, 4);
  for (const tr of trials) {
    const model = buildModel("mlp", tr.point, { inputShape: [8], classes: 3 });
    const want = await naswot(model, { batch: N, input: values });
    if (!Number.isFinite(want)) continue;
    const synthetic = await naswot(model, { batch: N, seed: 0 });
    t.ok(Number.isFinite(want) ? Math.abs(tr.metrics.naswot - want) < 1e-6 : tr.metrics.naswot === undefined, `trial ${tr.trialId}: ${tr.metrics.naswot} = ${want}`);
    t.not(tr.metrics.naswot, synthetic, "differs from the synthetic score");
  }
});
