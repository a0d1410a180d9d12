import t from "tap";
import { medianStop } from "#shared/nas/early-stopping.js";

// Running averages at step 2: 0.5, 0.6, 0.7, 0.8 → median 0.65. At step 3 the short trial drops out.
const completed = [
  [0.4, 0.6, 0.8],
  [0.5, 0.7, 0.9],
  [0.6, 0.8, 1.0],
  [0.7, 0.9],
];

t.test("a trial whose best is below the median of running averages is stopped", async (t) => {
  const d = medianStop([0.3, 0.6], completed);
  t.equal(d.step, 2);
  t.equal(d.best, 0.6);
  t.ok(Math.abs(d.median! - 0.65) < 1e-12);
  t.equal(d.compared, 4);
  t.equal(d.stop, true);
});

t.test("a trial whose best reaches the median keeps running", async (t) => {
  t.equal(medianStop([0.7, 0.1], completed).stop, false, "best so far counts, not the latest value");
  t.equal(medianStop([0.65, 0.6], completed).stop, false, "equal to the median is not worse");
});

t.test("only completed trials that reached the step take part", async (t) => {
  // Step 3: running averages 0.6, 0.7, 0.8 → median 0.7.
  const d = medianStop([0.5, 0.6, 0.69], completed);
  t.equal(d.compared, 3);
  t.ok(Math.abs(d.median! - 0.7) < 1e-12);
  t.equal(d.stop, true);
  t.equal(medianStop([0.5, 0.6, 0.7, 0.8], completed).stop, false, "no completed trial reached step 4");
});

t.test("minTrials and minStep hold the rule back", async (t) => {
  t.equal(medianStop([0.1, 0.1], completed, { minTrials: 5 }).stop, false);
  t.equal(medianStop([0.1, 0.1], completed, { minTrials: 4 }).stop, true);
  t.equal(medianStop([0.1, 0.1], completed, { minStep: 3 }).stop, false);
  t.equal(medianStop([0.1, 0.1, 0.1], completed, { minStep: 3 }).stop, true);
  t.equal(medianStop([0.1], completed.slice(0, 2)).stop, false, "default minTrials is 3");
  t.equal(medianStop([], completed).stop, false, "nothing reported yet");
});

t.test("when minimizing, a best above the median is stopped", async (t) => {
  const losses = [
    [1.0, 0.8],
    [0.9, 0.7],
    [1.2, 1.0],
  ];
  // Step 2 running averages: 0.9, 0.8, 1.1 → median 0.9.
  t.equal(medianStop([1.5, 0.95], losses, { direction: "minimize" }).stop, true);
  t.equal(medianStop([1.5, 0.85], losses, { direction: "minimize" }).stop, false);
});

t.test("non-finite values are ignored", async (t) => {
  const d = medianStop([NaN, 0.9], completed);
  t.equal(d.best, 0.9);
  t.equal(d.stop, false);
});
