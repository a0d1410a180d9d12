import t from "tap";
import { parseExperimentSpec } from "#shared/nas/spec.js";
import { judgeMetrics, paretoObjectives, progressOf, summarize, trialScore } from "#shared/nas/summary.js";
import type { TrialRecord } from "#shared/nas/wire.js";

const spec = parseExperimentSpec({
  name: "s",
  family: "cell",
  strategy: "random",
  objective: { metric: "naswot", direction: "maximize" },
  constraints: [{ metric: "latency_ms", max: 2 }],
  maxTrials: 10,
  evaluator: { metrics: ["naswot", "latency", "params"] },
});

let seq = 0;
function trial(index: number, status: TrialRecord["status"], metrics?: Record<string, number>, finishedSeq?: number): TrialRecord {
  const judged = status === "succeeded" && metrics ? judgeMetrics(spec, metrics) : undefined;
  return {
    experimentId: "e",
    trialId: `t${String(index).padStart(4, "0")}`,
    index,
    point: { i: index },
    status,
    attempts: 1,
    generation: 0,
    proposedBy: "c",
    createdAt: 0,
    ...(metrics ? { metrics } : {}),
    ...(judged ? { feasible: judged.feasible } : {}),
    ...(status !== "queued" && status !== "running" ? { finishedSeq: finishedSeq ?? ++seq } : {}),
  };
}

t.test("summary: best feasible trial, best-so-far series in finishing order, Pareto front and counts", async (t) => {
  const trials = [
    trial(0, "succeeded", { naswot: 10, latency_ms: 1, params: 100 }, 2),
    trial(1, "succeeded", { naswot: 50, latency_ms: 5, params: 10 }, 1), // best naswot but infeasible (latency > 2)
    trial(2, "succeeded", { naswot: 12, latency_ms: 1.5, params: 300 }, 4),
    trial(3, "failed", undefined, 3),
    trial(4, "succeeded", { naswot: 8, latency_ms: 0.5, params: 50 }, 5),
    trial(5, "running"),
    trial(6, "early_stopped", {}, 6),
    trial(7, "queued"),
  ];
  const s = summarize(spec, trials);
  t.match(s.best, { trialId: "t0002", value: 12 });
  t.same(s.bestSeries, [{ finished: 2, trialId: "t0000", value: 10 }, { finished: 4, trialId: "t0002", value: 12 }]);
  t.same(s.pareto.objectives, [
    { metric: "naswot", direction: "maximize" },
    { metric: "latency_ms", direction: "minimize" },
    { metric: "params", direction: "minimize" },
  ]);
  t.same(s.pareto.front.map((f) => f.trialId), ["t0000", "t0002", "t0004"], "infeasible t0001 is left out; the three trade off");
  t.same(s.progress, { maxTrials: 10, proposed: 8, queued: 1, running: 1, succeeded: 4, failed: 1, early_stopped: 1, finished: 6 });
  t.same(progressOf(3, []), { maxTrials: 3, proposed: 0, queued: 0, running: 0, succeeded: 0, failed: 0, early_stopped: 0, finished: 0 });
});

t.test("the strategy's score: objective when feasible, null when failed or infeasible, undefined while unfinished", async (t) => {
  t.equal(trialScore(spec, trial(0, "succeeded", { naswot: 3, latency_ms: 1, params: 1 })), 3);
  t.equal(trialScore(spec, trial(1, "succeeded", { naswot: 3, latency_ms: 9, params: 1 })), null);
  t.equal(trialScore(spec, trial(2, "failed")), null);
  t.equal(trialScore(spec, trial(3, "early_stopped", {})), null);
  t.equal(trialScore(spec, trial(4, "running")), undefined);
  t.equal(trialScore(spec, trial(5, "queued")), undefined);
});

t.test("judgeMetrics names violated constraints and a missing objective", async (t) => {
  t.same(judgeMetrics(spec, { naswot: 1, latency_ms: 1 }), { feasible: true, violations: [] });
  t.same(judgeMetrics(spec, { naswot: 1, latency_ms: 3 }), { feasible: false, violations: ["latency_ms = 3 > max 2"] });
  t.same(judgeMetrics(spec, { latency_ms: 1 }).violations, ["objective naswot is missing or not finite"]);
});

t.test("a custom evaluator's Pareto front has only the objective", async (t) => {
  const custom = parseExperimentSpec({
    name: "c",
    family: "custom",
    searchSpace: { x: { _type: "uniform", _value: [0, 1] } },
    strategy: "random",
    objective: { metric: "acc", direction: "maximize" },
    maxTrials: 1,
    evaluator: { custom: "e" },
  });
  t.same(paretoObjectives(custom), [{ metric: "acc", direction: "maximize" }]);
});

t.test("a stored (normalized) spec parses to itself, so controllers can re-validate what the gateway stored", async (t) => {
  const again = parseExperimentSpec(JSON.parse(JSON.stringify({ ...spec, seed: 42 })));
  t.same(again, { ...spec, seed: 42 });
});
