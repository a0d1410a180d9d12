import t from "tap";
import { startStack } from "../helpers/stack.js";
import { experimentsApi } from "../helpers/nas.js";

t.test("the experiment API refuses evaluator paths, specs over the operator's limits and oversized models with a 400 naming the field", async (t) => {
  const stack = await startStack(t, { JETSHARD_MAX_TRIALS: "50", JETSHARD_MAX_TRIAL_CONCURRENCY: "4", JETSHARD_MAX_TRIAL_TIMEOUT_MS: "10000" });
  const gw = await stack.gateway();
  const api = experimentsApi(gw.url);
  const spec = {
    name: "limited",
    family: "custom",
    searchSpace: { x: { _type: "choice", _value: [1, 2, 3] } },
    strategy: "random",
    objective: { metric: "score", direction: "maximize" },
    maxTrials: 50,
    concurrency: 4,
    trialTimeoutMs: 10_000,
    evaluator: { custom: "train" },
  };
  const cases: Array<[string, unknown, string, RegExp]> = [
    ["absolute path", { ...spec, evaluator: { custom: "/etc/passwd" } }, "evaluator.custom", /not a path/],
    ["relative path with ..", { ...spec, evaluator: { custom: "../../x" } }, "evaluator.custom", /not a path/],
    ["name with a slash", { ...spec, evaluator: { custom: "a/b" } }, "evaluator.custom", /not a path/],
    ["name with an extension", { ...spec, evaluator: { custom: "train.js" } }, "evaluator.custom", /without an extension/],
    ["the old module key", { ...spec, evaluator: { module: "test/nas/fixtures/evaluators.ts" } }, "evaluator.module", /no longer accepted/],
    ["maxTrials over the limit", { ...spec, maxTrials: 51 }, "maxTrials", /must be <= 50 \(the limit JETSHARD_MAX_TRIALS\)/],
    ["concurrency over the limit", { ...spec, concurrency: 5 }, "concurrency", /must be <= 4 \(the limit JETSHARD_MAX_TRIAL_CONCURRENCY\)/],
    ["trialTimeoutMs over the limit", { ...spec, trialTimeoutMs: 10_001 }, "trialTimeoutMs", /must be <= 10000 \(the limit JETSHARD_MAX_TRIAL_TIMEOUT_MS\)/],
    [
      "an mlp of 64 layers of 65536",
      { ...spec, family: "mlp", searchSpace: { depth: { _type: "choice", _value: [64] }, width: { _type: "choice", _value: [65536] } }, objective: { metric: "params", direction: "minimize" }, evaluator: { metrics: ["params"] } },
      "searchSpace",
      /more than the most jetshard builds/,
    ],
    ["a cell of 4096 channels", { ...spec, family: "cell", searchSpace: undefined, familyOptions: { channels: 4096, cells: 8 }, objective: { metric: "params", direction: "minimize" }, evaluator: { metrics: ["params"] } }, "familyOptions", /largest cell model/],
    ["a choice of 2000 values", { ...spec, searchSpace: { x: { _type: "choice", _value: Array.from({ length: 2000 }, (_, i) => i) } } }, "searchSpace.x._value", /more than 1024/],
  ];
  for (const [what, body, field, want] of cases) {
    const r = await api.create(body);
    t.equal(r.status, 400, `${what}: 400`);
    t.equal(r.body.field, field, `${what}: names ${field}`);
    t.match(r.body.error, want, `${what}: ${r.body.error}`);
  }

  const ok = await api.create(spec);
  t.equal(ok.status, 201, "at the limits: accepted");
  t.match(await api.stop(ok.body.id), { status: 200 });
  for (const [body, field, want] of [
    [{ maxTrials: 51 }, "maxTrials", /must be <= 50/],
    [{ concurrency: 5 }, "concurrency", /must be <= 4/],
  ] as const) {
    const r = await api.resume(ok.body.id, body);
    t.equal(r.status, 400, `resume ${JSON.stringify(body)}: 400`);
    t.equal(r.body.field, field);
    t.match(r.body.error, want);
  }
  t.match(await api.resume(ok.body.id, { concurrency: 4 }), { status: 200, body: { status: "queued" } }, "a resume within the limits is accepted");
});
