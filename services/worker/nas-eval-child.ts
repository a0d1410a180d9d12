/**
 * The process a worker evaluates trials in (one per NAS slot, reused from trial to trial). It exists so
 * that a trial can be abandoned at any moment: a hung custom evaluator or an early-stopped trial is ended
 * with SIGKILL, which is safe where terminating a worker thread in the middle of an ONNX Runtime call is
 * not (it aborts the whole process). Speaks the protocol of nas-evaluator.ts over the IPC channel.
 */
import { pathToFileURL } from "node:url";
import { checkMetrics, evaluateFnOf, type Architecture, type EvaluatorContext } from "#shared/nas/custom.js";
import { evaluateBuiltins } from "#shared/nas/evaluators.js";
import { buildModel, type Family } from "#shared/nas/families.js";
import { naswotInput, type BuiltinEvaluatorSpec, type CustomEvaluatorSpec } from "#shared/nas/spec.js";
import { encodeModel } from "#shared/onnx/builder.js";
import type { ChildMessage, EvalRequest } from "./nas-evaluator.js";

function send(msg: ChildMessage): void {
  process.send?.(msg);
}

async function run(req: EvalRequest): Promise<Record<string, number>> {
  const { job } = req;
  const familyOptions = (job.familyOptions ?? {}) as Parameters<typeof buildModel>[2];
  const builtIn = job.family !== "custom";
  if (!req.modulePath) {
    if (!builtIn) throw new Error('family "custom" needs a custom evaluator ({"custom": "<registered evaluator>"})');
    const ev = job.evaluator as unknown as BuiltinEvaluatorSpec;
    const model = buildModel(job.family as Family, job.point, familyOptions);
    const uploaded = ev.input ? naswotInput(ev.input) : undefined;
    return evaluateBuiltins(model, ev.metrics, {
      batch: uploaded?.batch ?? ev.batch,
      input: uploaded?.values,
      runs: ev.runs,
      warmup: ev.warmup,
      seed: ev.seed,
      threads: ev.threads,
      inputShape: uploaded?.sample ?? familyOptions?.inputShape,
      providers: req.providers,
    });
  }
  const { custom: name, ...options } = job.evaluator as CustomEvaluatorSpec;
  // named, not by path: trial errors are read by callers, the operator's directory layout is not theirs
  const where = `custom evaluator "${name}"`;
  const mod = (await import(pathToFileURL(req.modulePath).href)) as Record<string, unknown>;
  const evaluate = evaluateFnOf(mod, where);
  const arch: Architecture = {
    family: job.family,
    point: job.point,
    ...(builtIn ? { model: encodeModel(buildModel(job.family as Family, job.point, familyOptions)) } : {}),
    ...(job.familyOptions ? { familyOptions: job.familyOptions } : {}),
  };
  let step = 0;
  const ctx: EvaluatorContext = {
    experimentId: job.experimentId,
    trialId: job.trialId,
    attempt: req.attempt,
    options,
    device: req.device,
    providers: req.providers,
    report(stepOrValue, value) {
      const [s, v] = value === undefined ? [step + 1, stepOrValue] : [stepOrValue, value];
      if (!Number.isInteger(s) || s < 1 || typeof v !== "number") throw new Error(`report(step, value): step must be an integer >= 1 and value a number, got (${s}, ${v})`);
      step = s;
      send({ type: "report", step: s, value: v });
    },
  };
  return checkMetrics(await evaluate(arch, ctx), where);
}

process.on("message", (req: EvalRequest) => {
  run(req).then(
    (metrics) => send({ type: "result", metrics }),
    (err: unknown) => {
      const e = err as { message?: unknown; retryable?: unknown };
      send({ type: "error", message: typeof e?.message === "string" && e.message ? e.message : String(err), retryable: e?.retryable === true });
    },
  );
});
// the worker went away (even by SIGKILL): the IPC channel closes, and so do we
process.on("disconnect", () => process.exit(0));
send({ type: "ready" });
