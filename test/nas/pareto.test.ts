import t from "tap";
import { checkConstraints, dominates, paretoFront, type ParetoObjective } from "#shared/nas/pareto.js";

const objectives: ParetoObjective[] = [
  { metric: "acc", direction: "maximize" },
  { metric: "latency_ms", direction: "minimize" },
];

t.test("dominance needs no worse on every objective and better on one", async (t) => {
  t.ok(dominates({ acc: 0.9, latency_ms: 1 }, { acc: 0.8, latency_ms: 2 }, objectives));
  t.ok(dominates({ acc: 0.9, latency_ms: 1 }, { acc: 0.9, latency_ms: 2 }, objectives));
  t.notOk(dominates({ acc: 0.9, latency_ms: 1 }, { acc: 0.9, latency_ms: 1 }, objectives), "equal points do not dominate");
  t.notOk(dominates({ acc: 0.9, latency_ms: 3 }, { acc: 0.8, latency_ms: 2 }, objectives), "a trade-off does not dominate");
  t.notOk(dominates({ acc: 0.9 }, { acc: 0.8, latency_ms: 2 }, objectives), "a missing metric dominates nothing");
});

t.test("the front keeps the non-dominated trials in input order", async (t) => {
  const trials = [
    { id: "a", metrics: { acc: 0.70, latency_ms: 0.5 } },
    { id: "b", metrics: { acc: 0.80, latency_ms: 1.0 } },
    { id: "c", metrics: { acc: 0.75, latency_ms: 1.2 } }, // dominated by b
    { id: "d", metrics: { acc: 0.90, latency_ms: 3.0 } },
    { id: "e", metrics: { acc: 0.90, latency_ms: 3.5 } }, // dominated by d
    { id: "f", metrics: { acc: 0.80, latency_ms: 1.0 } }, // equal to b: kept
    { id: "g", metrics: { acc: NaN, latency_ms: 0.1 } }, // unusable
  ];
  t.same(paretoFront(trials, objectives).map((x) => x.id), ["a", "b", "d", "f"]);
  t.same(paretoFront(trials, [{ metric: "acc", direction: "maximize" }]).map((x) => x.id), ["d", "e"], "one objective: the best ones");
  t.same(paretoFront([{ acc: 1, latency_ms: 1 }, { acc: 2, latency_ms: 2 }], objectives), [{ acc: 1, latency_ms: 1 }, { acc: 2, latency_ms: 2 }], "plain metric objects");
  t.same(paretoFront([], objectives), []);
});

t.test("constraints report each violation and treat a missing metric as one", async (t) => {
  const constraints = [{ metric: "latency_ms", max: 2 }, { metric: "params", min: 1000, max: 5000 }];
  t.same(checkConstraints({ latency_ms: 1.5, params: 3000 }, constraints), { ok: true, violations: [] });
  t.same(checkConstraints({ latency_ms: 2, params: 1000 }, constraints).ok, true, "bounds are inclusive");
  const bad = checkConstraints({ latency_ms: 3.1, params: 500 }, constraints);
  t.equal(bad.ok, false);
  t.same(bad.violations, ["latency_ms = 3.1 > max 2", "params = 500 < min 1000"]);
  t.same(checkConstraints({ params: 2000 }, constraints).violations, ["latency_ms is missing"]);
});
