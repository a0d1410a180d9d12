import t from "tap";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { checkMetrics, evaluateFnOf } from "#shared/nas/custom.js";
import { parseExperimentSpec } from "#shared/nas/spec.js";
import { resolveCustomEvaluator } from "../../services/worker/evaluator-registry.js";

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

t.test("the example spec names the example evaluator, which keeps the contract", async (t) => {
  const root = path.resolve(import.meta.dirname, "../..");
  const spec = parseExperimentSpec(JSON.parse(await readFile(path.join(root, "deploy/examples/nas-custom.json"), "utf8")));
  const ev = spec.evaluator as { custom: string; epochs: number };
  const file = await resolveCustomEvaluator(path.join(root, "deploy/examples/evaluators"), ev.custom);
  const evaluate = evaluateFnOf(await import(pathToFileURL(file).href), ev.custom);
  const reports: number[][] = [];
  const ctx = { options: { epochs: 3 }, report: (s: number, v?: number) => void reports.push([s, v!]) } as never;
  const metrics = checkMetrics(await evaluate({ family: "custom", point: { lr: 0.01, layers: 4 } }, ctx), ev.custom);
  t.same(reports.map(([s]) => s), [1, 2, 3], "one intermediate result per epoch");
  t.ok(metrics.val_acc! > 0 && metrics.val_acc! < 1, `val_acc ${metrics.val_acc}`);
  t.equal(metrics.val_acc, reports[2]![1], "the last report is the final metric");
});
