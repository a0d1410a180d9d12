import t from "tap";
import { STREAMS } from "#shared/subjects.js";
import { startStack } from "../helpers/stack.js";
import { EVALUATORS_DIR, controller, experimentsApi, trialEvents } from "../helpers/nas.js";

/** Registered as test/nas/fixtures/evaluators.ts in the workers' JETSHARD_EVALUATORS_DIR. */
const EVALUATOR = "evaluators";
const custom = (name: string, values: number[], evaluator: Record<string, unknown>, more: Record<string, unknown> = {}) => ({
  name,
  family: "custom",
  searchSpace: { x: { _type: "choice", _value: values } },
  strategy: "grid",
  objective: { metric: "score", direction: "maximize" },
  maxTrials: values.length,
  concurrency: values.length,
  maxFailedTrials: 100,
  evaluator: { custom: EVALUATOR, ...evaluator },
  ...more,
});

const stack = await startStack(t, { JETSHARD_NAS_CONCURRENCY: "2", JETSHARD_EVALUATORS_DIR: EVALUATORS_DIR });
const gw = await stack.gateway();
await Promise.all([stack.worker(), stack.worker()]);
await controller(t, stack);
const api = experimentsApi(gw.url);

async function run(spec: unknown, timeoutMs = 30_000) {
  const r = await api.create(spec);
  if (r.status !== 201) throw new Error(JSON.stringify(r.body));
  const rec = await api.waitStatus(r.body.id, ["completed", "failed", "stopped"], timeoutMs);
  const trials = (await api.trials(r.body.id)).body.trials as any[];
  return { rec, trials, id: r.body.id as string };
}

t.test("a custom evaluator that throws fails that trial with its message, dead-lettered", async (t) => {
  const { rec, trials, id } = await run(custom("throws", [0, 1, 2, 3], { behavior: "throw-odd" }));
  t.equal(rec.status, "completed");
  t.match(rec.progress, { succeeded: 2, failed: 2 });
  t.same(trials.map((x) => [x.point.x, x.status]), [[0, "succeeded"], [1, "failed"], [2, "succeeded"], [3, "failed"]]);
  t.equal(trials[1].error, "evaluator rejected x=1");
  t.equal(trials[3].error, "evaluator rejected x=3");
  t.equal(rec.best.trialId, "t0002");
  const dlq = await stack.infra.jsm.streams.getMessage(STREAMS.dlq, { last_by_subj: `jetshard.dlq.nas.${id}` });
  t.match(dlq?.header.get("Jetshard-Error"), /evaluator rejected x=[13]/, "failed trial copied to the DLQ with its error");
});

t.test("a custom evaluator that no worker has registered fails each trial at once, without retries", async (t) => {
  // the gateway need not share the workers' directory: the spec is accepted, and the workers refuse to run it
  const { rec, trials, id } = await run({ ...custom("unregistered", [0, 1], {}), evaluator: { custom: "nope" } });
  t.equal(rec.status, "completed");
  t.same(trials.map((x) => x.status), ["failed", "failed"]);
  for (const x of trials) {
    t.match(x.error, /^custom evaluator "nope" is not registered on this worker \(no nope\.js, nope\.mjs, nope\.ts in JETSHARD_EVALUATORS_DIR\)$/);
    t.equal(x.attempts, 1, "not retried");
    t.notMatch(x.error, EVALUATORS_DIR, "the error does not reveal the operator's directory");
  }
  const started = (await trialEvents(stack.infra, id)).filter((e) => e.kind === "start");
  t.equal(started.length, 0, "no evaluation was started");
});

t.test("a hanging custom evaluator is stopped by the trial timeout", async (t) => {
  const t0 = Date.now();
  const { rec, trials } = await run(custom("hangs", [0, 1, 2, 3], { behavior: "hang" }, { trialTimeoutMs: 1500 }));
  t.equal(rec.status, "completed");
  t.same(trials.map((x) => x.status), ["succeeded", "failed", "failed", "succeeded"]);
  t.equal(trials[1].error, "trial timed out after 1500 ms", "a synchronous spin is killed");
  t.equal(trials[2].error, "trial timed out after 1500 ms", "a promise that never settles is abandoned");
  t.ok(Date.now() - t0 < 15_000, "and nothing waits for them");
});

t.test("a trial whose intermediate results trail the median is stopped early", async (t) => {
  // grid order: x = 5, 4, 3 complete; x = 1 reports 1/6, 2/6, ... while the others averaged far more
  const spec = custom("curves", [5, 4, 3, 1], { behavior: "curve", steps: 6, delayMs: 120 }, { concurrency: 1, earlyStopping: { rule: "median", minTrials: 3, minStep: 2 } });
  const { rec, trials, id } = await run(spec);
  t.equal(rec.status, "completed");
  t.same(trials.map((x) => x.status), ["succeeded", "succeeded", "succeeded", "early_stopped"]);
  t.same(trials[0].intermediate, [5 / 6, 10 / 6, 15 / 6, 20 / 6, 25 / 6, 5], "intermediate results are kept");
  t.ok(trials[3].intermediate.length < 6, `stopped after ${trials[3].intermediate.length} of 6 steps`);
  t.match(trials[3].error, /median stopping rule/);
  t.match(rec.progress, { succeeded: 3, early_stopped: 1, failed: 0 });
  const reports = (await trialEvents(stack.infra, id)).filter((e) => e.kind === "report" && e.trialId === "t0003");
  t.ok(reports.length >= 2, "the worker published the intermediate results");
});

t.test("maxFailedTrials stops the experiment as failed with the reason", async (t) => {
  const { rec, trials } = await run(custom("fails", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], { behavior: "throw-all" }, { concurrency: 1, maxFailedTrials: 2 }));
  t.equal(rec.status, "failed");
  t.match(rec.reason, /^3 trials failed, more than maxFailedTrials \(2\); last: t0002: always fails \(x=2\)/);
  t.equal(trials.length, 3, "no trial proposed after the limit");
  t.ok(trials.every((x) => x.status === "failed"));
});

t.test("an architecture with a singular NASWOT kernel finishes as an infeasible trial, not a stuck one", async (t) => {
  const edges = ["edge_0_1", "edge_0_2", "edge_1_2", "edge_0_3", "edge_1_3", "edge_2_3"];
  const { rec, trials } = await run({
    name: "dead-cell",
    family: "cell",
    familyOptions: { inputShape: [3, 4, 4], channels: 4 },
    searchSpace: Object.fromEntries(edges.map((e) => [e, { _type: "choice", _value: e === "edge_0_3" ? ["none", "conv3x3"] : ["none"] }])),
    strategy: "grid",
    objective: { metric: "naswot", direction: "maximize" },
    maxTrials: 2,
    evaluator: { metrics: ["naswot", "params"], batch: 8 },
  });
  t.equal(rec.status, "completed");
  t.match(trials[0], { status: "succeeded", feasible: false, violations: ["objective naswot is missing or not finite"] }, "all-none cell: zero output, singular kernel");
  t.ok(Number.isFinite(trials[0].metrics.params), "its other metrics are kept");
  t.match(trials[1], { status: "succeeded", feasible: true });
  t.equal(rec.best.trialId, "t0001");
});
