import t from "tap";
import { checkMetrics, evaluateFnOf } from "#shared/nas/custom.js";

t.test("evaluateFnOf finds a named evaluate, a default function or a default object", async (t) => {
  const f = () => ({});
  t.equal(evaluateFnOf({ evaluate: f }, "m"), f);
  t.equal(evaluateFnOf({ default: f }, "m"), f);
  t.equal(evaluateFnOf({ default: { evaluate: f } }, "m"), f);
  t.throws(() => evaluateFnOf({ run: f }, "mod.js"), /mod\.js does not export an evaluate\(arch, ctx\) function/);
});

t.test("checkMetrics accepts an object of finite numbers and names what is wrong otherwise", async (t) => {
  t.same(checkMetrics({ acc: 0.5, loss: 2 }, "m"), { acc: 0.5, loss: 2 });
  t.throws(() => checkMetrics(0.5, "m"), /m: evaluate\(\) must return an object of numbers/);
  t.throws(() => checkMetrics(null, "m"), /must return an object/);
  t.throws(() => checkMetrics([1], "m"), /must return an object/);
  t.throws(() => checkMetrics({ acc: "high" }, "m"), /metric "acc" must be a finite number, got "high"/);
  t.throws(() => checkMetrics({ acc: NaN }, "m"), /metric "acc" must be a finite number/);
});
