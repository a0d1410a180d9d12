import t from "tap";
import { rng } from "#shared/onnx/builder.js";
import { NasSpecError } from "#shared/nas/errors.js";
import { expectSpecError } from "./helpers.js";
import { gridPoints, gridSize, inSpace, mutate, parseSearchSpace, pointKey, sample, spaceSize, type SearchSpace } from "#shared/nas/search-space.js";

const mixed = parseSearchSpace({
  depth: { _type: "choice", _value: [2, 3, 4] },
  act: { _type: "choice", _value: ["relu", "tanh"] },
  units: { _type: "randint", _value: [8, 12] },
  drop: { _type: "quniform", _value: [0, 0.5, 0.1] },
  p: { _type: "uniform", _value: [-1, 1] },
  lr: { _type: "loguniform", _value: [1e-4, 0.1] },
});

t.test("parseSearchSpace names the field of each mistake", async (t) => {
  expectSpecError(t, () => parseSearchSpace({ depth: { _type: "foo", _value: [1] } }), "searchSpace.depth._type", /unknown type "foo"/);
  expectSpecError(t, () => parseSearchSpace({ depth: { _type: "choice", _value: [] } }), "searchSpace.depth._value", /at least one value/);
  expectSpecError(t, () => parseSearchSpace({ depth: { _type: "choice", _value: [1, 2, 1] } }), "searchSpace.depth._value[2]", /duplicate/);
  expectSpecError(t, () => parseSearchSpace({ n: { _type: "randint", _value: [5, 5] } }), "searchSpace.n._value", /low \(5\) must be < high \(5\)/);
  expectSpecError(t, () => parseSearchSpace({ n: { _type: "randint", _value: [1.5, 5] } }), "searchSpace.n._value[0]", /integer/);
  expectSpecError(t, () => parseSearchSpace({ x: { _type: "uniform", _value: [2, 1] } }), "searchSpace.x._value", /must be < high/);
  expectSpecError(t, () => parseSearchSpace({ lr: { _type: "loguniform", _value: [0, 0.1] } }), "searchSpace.lr._value[0]", /loguniform low must be > 0/);
  expectSpecError(t, () => parseSearchSpace({ q: { _type: "quniform", _value: [0, 1, 0] } }), "searchSpace.q._value[2]", /q must be > 0/);
  expectSpecError(t, () => parseSearchSpace({ q: { _type: "quniform", _value: [0, 1] } }), "searchSpace.q._value", /\[low, high, q\]/);
  expectSpecError(t, () => parseSearchSpace({ a: { _type: "choice", _value: [1], extra: true } }), "searchSpace.a.extra", /unknown field/);
  expectSpecError(t, () => parseSearchSpace({ a: 3 }), "searchSpace.a", /must be an object/);
  expectSpecError(t, () => parseSearchSpace({}), "searchSpace", /at least one parameter/);
  expectSpecError(t, () => parseSearchSpace([1]), "searchSpace", /must be an object/);
});

t.test("sampled points stay inside the space and repeat with the seed", async (t) => {
  const a = rng(7);
  const b = rng(7);
  for (let i = 0; i < 200; i++) {
    const p = sample(mixed, a);
    t.ok(inSpace(mixed, p), JSON.stringify(p));
    t.same(sample(mixed, b), p);
  }
  const seen = new Set<unknown>();
  const r = rng(1);
  for (let i = 0; i < 500; i++) seen.add(sample(mixed, r)["drop"]);
  t.same([...seen].sort(), [0, 0.1, 0.2, 0.3, 0.4, 0.5], "quniform yields the q multiples");
});

t.test("spaceSize multiplies the value counts and is Infinity with a continuous parameter", async (t) => {
  t.equal(spaceSize(parseSearchSpace({ a: { _type: "choice", _value: [1, 2, 3] }, n: { _type: "randint", _value: [0, 10] }, q: { _type: "quniform", _value: [0, 1, 0.25] } })), 3 * 10 * 5);
  t.equal(spaceSize(mixed), Infinity);
});

t.test("gridPoints enumerates every combination once, cutting continuous parameters into steps", async (t) => {
  const points = gridPoints(mixed, { steps: 3 });
  t.equal(points.length, 3 * 2 * 4 * 6 * 3 * 3);
  t.equal(points.length, gridSize(mixed, 3));
  t.equal(new Set(points.map((p) => pointKey(mixed, p))).size, points.length, "no duplicates");
  t.same([...new Set(points.map((p) => p["p"]))], [-1, 0, 1], "uniform: evenly spaced, both ends");
  t.same([...new Set(points.map((p) => p["lr"]))], [0.0001, 0.00316227766017, 0.1], "loguniform: geometric");
  t.same(points[0], { depth: 2, act: "relu", units: 8, drop: 0, p: -1, lr: 0.0001 }, "first point is all lows");
  t.same(points[1]!["lr"], 0.00316227766017, "last parameter varies fastest");
  t.throws(() => gridPoints(mixed, { steps: 10, maxPoints: 1000 }), NasSpecError);
});

t.test("mutate changes exactly one parameter to another valid value", async (t) => {
  const space: SearchSpace = parseSearchSpace({
    a: { _type: "choice", _value: [1, 2, 3] },
    fixed: { _type: "choice", _value: ["only"] },
    n: { _type: "randint", _value: [0, 4] },
    lr: { _type: "loguniform", _value: [1e-4, 0.1] },
  });
  const r = rng(3);
  const changed = new Set<string>();
  for (let i = 0; i < 300; i++) {
    const p = sample(space, r);
    const c = mutate(space, p, r);
    const diff = Object.keys(space).filter((k) => c[k] !== p[k]);
    t.equal(diff.length, 1, JSON.stringify([p, c]));
    t.ok(inSpace(space, c));
    diff.forEach((d) => changed.add(d));
  }
  t.same([...changed].sort(), ["a", "lr", "n"], "the single-valued parameter never changes");
});
