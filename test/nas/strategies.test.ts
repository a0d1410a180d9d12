import t from "tap";
import { rng } from "#shared/onnx/builder.js";
import { gridSize, parseSearchSpace, pointKey, spaceSize, type Point, type SearchSpace } from "#shared/nas/search-space.js";
import { createStrategy, type Strategy, type StrategySpec, type TrialRecord } from "#shared/nas/strategies.js";
import { expectSpecError } from "./helpers.js";

const NAMES = ["a", "b", "c", "d"];
/** 4 choice parameters of 6 values: 1,296 points. */
const space = parseSearchSpace(Object.fromEntries(NAMES.map((n) => [n, { _type: "choice", _value: [0, 1, 2, 3, 4, 5] }])));
const evolution: StrategySpec = { name: "evolution", population: 16, sample: 4 };

/** Minus the Euclidean distance to `opt`: 0 at the optimum. */
const scorer = (opt: number[]) => (p: Point) => -Math.sqrt(NAMES.reduce((acc, n, i) => acc + ((p[n] as number) - opt[i]!) ** 2, 0));

/**
 * Drives a strategy like a controller with `concurrency` slots: fill the free slots with next(), then
 * report the pending trial picked by `pick` (so reports arrive out of order). Returns every trial in
 * proposal order, with scores for those reported.
 */
function drive(s: Strategy, score: (p: Point) => number, opts: { budget: number; concurrency: number; pick?: (n: number) => number; records?: TrialRecord[]; stopAfterProposals?: number }): TrialRecord[] {
  const records = opts.records ?? [];
  const pick = opts.pick ?? (() => 0);
  const pending = () => records.filter((r) => r.score === undefined);
  for (;;) {
    while (pending().length < opts.concurrency && records.length < opts.budget) {
      if (opts.stopAfterProposals !== undefined && records.length >= opts.stopAfterProposals) return records;
      const p = s.next();
      if (!p) break;
      records.push({ trialId: `t${records.length}`, point: p });
    }
    const open = pending();
    if (open.length === 0) return records;
    const r = open[pick(open.length) % open.length]!;
    r.score = score(r.point);
    s.report(r.trialId, r.point, r.score);
  }
}

const best = (records: TrialRecord[]) => Math.max(...records.map((r) => r.score ?? -Infinity));
const keys = (sp: SearchSpace, records: TrialRecord[]) => records.map((r) => pointKey(sp, r.point));

t.test("random and evolution repeat their proposals for the same seed and differ for another", async (t) => {
  const score = scorer([1, 4, 2, 5]);
  for (const spec of ["random", evolution] as StrategySpec[]) {
    const a = drive(createStrategy(spec, space, { seed: 11 }), score, { budget: 60, concurrency: 3, pick: (n) => n - 1 });
    const b = drive(createStrategy(spec, space, { seed: 11 }), score, { budget: 60, concurrency: 3, pick: (n) => n - 1 });
    const c = drive(createStrategy(spec, space, { seed: 12 }), score, { budget: 60, concurrency: 3, pick: (n) => n - 1 });
    t.same(keys(space, a), keys(space, b), `${JSON.stringify(spec)}: same seed, same points`);
    t.not(keys(space, a).join(), keys(space, c).join(), `${JSON.stringify(spec)}: another seed, other points`);
  }
});

t.test("a strategy rebuilt from history continues exactly like the original", async (t) => {
  const score = scorer([3, 0, 5, 2]);
  const pick = (() => {
    const r = rng(5);
    return (n: number) => Math.floor(r() * n);
  })();
  for (const spec of ["random", "grid", evolution] as StrategySpec[]) {
    const original = createStrategy(spec, space, { seed: 3 });
    const records = drive(original, score, { budget: 200, concurrency: 4, pick, stopAfterProposals: 41 });
    t.ok(records.some((r) => r.score === undefined), "some trials are still running at the restart");
    const history = records.map((r) => ({ ...r }));
    const restored = createStrategy(spec, space, { seed: 3, history });
    t.equal(restored.proposed, original.proposed);

    // Both continue with the same reports in the same order.
    const pick2 = () => {
      const r = rng(9);
      return (n: number) => Math.floor(r() * n);
    };
    const a = drive(original, score, { budget: 120, concurrency: 4, pick: pick2(), records: records.map((r) => ({ ...r })) });
    const b = drive(restored, score, { budget: 120, concurrency: 4, pick: pick2(), records: history });
    t.same(keys(space, b), keys(space, a), `${JSON.stringify(spec)} resumes identically`);
  }
});

t.test("evolution's next proposal does not depend on the order results arrived in", async (t) => {
  const score = scorer([2, 2, 2, 2]);
  const records = drive(createStrategy(evolution, space, { seed: 4 }), score, { budget: 50, concurrency: 1 });
  const a = createStrategy(evolution, space, { seed: 4, history: records });
  // The same trials, all still running at the restart; their results then arrive newest first.
  const b = createStrategy(evolution, space, { seed: 4, history: records.map((r) => ({ trialId: r.trialId, point: r.point })) });
  for (const r of [...records].reverse()) b.report(r.trialId, r.point, r.score!);
  for (let i = 0; i < 10; i++) t.same(b.next(), a.next());
});

t.test("grid proposes every point exactly once, then null", async (t) => {
  const small = parseSearchSpace({ a: { _type: "choice", _value: ["x", "y", "z"] }, n: { _type: "randint", _value: [0, 4] }, u: { _type: "uniform", _value: [0, 1] } });
  const g = createStrategy({ name: "grid", steps: 3 }, small);
  const seen: string[] = [];
  for (let p = g.next(); p; p = g.next()) seen.push(pointKey(small, p));
  t.equal(seen.length, gridSize(small, 3));
  t.equal(seen.length, 36);
  t.equal(new Set(seen).size, seen.length);
  t.equal(g.next(), null);
});

t.test("random and evolution do not repeat points of a finite space and stop when it is exhausted", async (t) => {
  const small = parseSearchSpace({ a: { _type: "choice", _value: [0, 1, 2] }, b: { _type: "quniform", _value: [0, 1, 0.25] } });
  const score = (p: Point) => (p["a"] as number) + (p["b"] as number);
  for (const spec of ["random", { name: "evolution", population: 3, sample: 2 }] as StrategySpec[]) {
    const records = drive(createStrategy(spec, small, { seed: 1 }), score, { budget: 100, concurrency: 2 });
    t.equal(records.length, spaceSize(small), `${JSON.stringify(spec)} proposed every point`);
    t.equal(new Set(keys(small, records)).size, records.length, "each once");
  }
});

t.test("evolution finds better best scores than random search on a 1,296-point space", async (t) => {
  const seeds = 30;
  let evo = 0;
  let rand = 0;
  let evoWins = 0;
  for (let seed = 0; seed < seeds; seed++) {
    const r = rng(1000 + seed);
    const score = scorer(NAMES.map(() => Math.floor(r() * 6)));
    const e = best(drive(createStrategy(evolution, space, { seed }), score, { budget: 100, concurrency: 4 }));
    const b = best(drive(createStrategy("random", space, { seed }), score, { budget: 100, concurrency: 4 }));
    evo += e / seeds;
    rand += b / seeds;
    if (e > b) evoWins++;
  }
  t.ok(evo > rand, `mean best: evolution ${evo.toFixed(3)} > random ${rand.toFixed(3)}`);
  t.ok(evoWins > seeds / 2, `evolution strictly better on ${evoWins}/${seeds} seeds`);
});

t.test("minimizing a loss proposes the same points as maximizing its negation", async (t) => {
  const score = scorer([5, 1, 0, 3]);
  const max = drive(createStrategy(evolution, space, { seed: 8 }), score, { budget: 60, concurrency: 2 });
  const min = drive(createStrategy(evolution, space, { seed: 8, direction: "minimize" }), (p) => -score(p), { budget: 60, concurrency: 2 });
  t.same(keys(space, min), keys(space, max));
});

t.test("a repeated report is ignored and failed trials do not join the population", async (t) => {
  const score = scorer([0, 0, 0, 0]);
  const once = createStrategy(evolution, space, { seed: 2 });
  const twice = createStrategy(evolution, space, { seed: 2 });
  for (let i = 0; i < 40; i++) {
    const p = once.next()!;
    t.same(twice.next(), p);
    // Every third trial fails; the others are reported, and to `twice` a second time with a bogus score.
    const s = i % 3 === 0 ? null : score(p);
    once.report(`t${i}`, p, s);
    twice.report(`t${i}`, p, s);
    twice.report(`t${i}`, p, 1000);
  }
  for (let i = 0; i < 5; i++) t.same(twice.next(), once.next());
});

t.test("bad strategy specs are NasSpecErrors naming the field", async (t) => {
  expectSpecError(t, () => createStrategy("annealing" as StrategySpec, space), "strategy", /unknown strategy "annealing"/);
  expectSpecError(t, () => createStrategy({ name: "evolution", population: 4, sample: 5 }, space), "strategy.sample", /<= population/);
  expectSpecError(t, () => createStrategy({ name: "evolution", population: 1, sample: 1 }, space), "strategy.population", />= 2/);
  expectSpecError(t, () => createStrategy({ name: "grid", steps: 0 }, space), "strategy.steps", />= 1/);
});
