/**
 * Custom NAS evaluators are registered by the operator, never chosen by a caller: a spec names one
 * (`{"custom": "train"}`) and the worker looks for `train.js`, `train.mjs` or `train.ts` (in that order) in its
 * own `JETSHARD_EVALUATORS_DIR`. This is the check that counts: the gateway that accepted the spec may run on
 * another machine, and anyone allowed to publish on NATS can send a trial job without it.
 */
import { realpath, stat } from "node:fs/promises";
import path from "node:path";
import { CUSTOM_EVALUATOR_EXTENSIONS } from "#shared/nas/custom.js";
import { evaluatorNameProblem } from "#shared/nas/spec.js";

/** A custom evaluator that cannot be used; never retryable (the spec or the worker's setup has to change). */
export class EvaluatorUnavailable extends Error {
  override name = "EvaluatorUnavailable";
}

/**
 * The real path of the registered evaluator `name`.
 * The file is found by name and allowed extension inside `dir`, then resolved with realpath and must stay inside
 * realpath(dir): a symlink pointing out of the directory is refused. Messages name the evaluator, not the
 * directory (they end up in trial records that callers read).
 * @param dir `config.evaluatorsDir` (relative paths are taken from the worker's working directory); unset means
 *   no custom evaluator is available.
 * @throws EvaluatorUnavailable for a malformed or unregistered name, a missing directory or an escaping symlink.
 */
export async function resolveCustomEvaluator(dir: string | undefined, name: unknown): Promise<string> {
  if (typeof name !== "string") throw new EvaluatorUnavailable(`evaluator.custom must be a string, got ${JSON.stringify(name) ?? String(name)}`);
  const problem = evaluatorNameProblem(name);
  if (problem) throw new EvaluatorUnavailable(`evaluator.custom ${problem}`);
  if (!dir) throw new EvaluatorUnavailable(`custom evaluator "${name}" is not available: this worker has no evaluators directory (JETSHARD_EVALUATORS_DIR)`);
  let root: string;
  try {
    root = await realpath(path.resolve(dir));
  } catch (err) {
    throw new EvaluatorUnavailable(`custom evaluator "${name}" is not available: this worker's evaluators directory cannot be read (${(err as NodeJS.ErrnoException).code ?? "error"})`);
  }
  for (const ext of CUSTOM_EVALUATOR_EXTENSIONS) {
    let real: string;
    try {
      real = await realpath(path.join(root, name + ext));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw new EvaluatorUnavailable(`custom evaluator "${name}" cannot be read (${(err as NodeJS.ErrnoException).code ?? "error"})`);
    }
    const rel = path.relative(root, real);
    if (rel === "" || rel === ".." || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel)) {
      throw new EvaluatorUnavailable(`custom evaluator "${name}" is refused: its file is a link to outside the evaluators directory`);
    }
    if (!(await stat(real).then((st) => st.isFile(), () => false))) throw new EvaluatorUnavailable(`custom evaluator "${name}" is not a file`);
    return real;
  }
  throw new EvaluatorUnavailable(`custom evaluator "${name}" is not registered on this worker (no ${CUSTOM_EVALUATOR_EXTENSIONS.map((e) => name + e).join(", ")} in JETSHARD_EVALUATORS_DIR)`);
}
