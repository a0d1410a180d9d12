/** Long help texts shown after a command's options (kept apart from the commands, so --help loads nothing heavy). */

/**
 * Text after the options in `jetshard nas --help`: the commands at a glance and the spec format.
 */
export const NAS_HELP = `Commands at a glance:
  jetshard nas run <spec.json> [--watch | --detach] [--json]   start an experiment and follow its progress
  jetshard nas show <id> [--trials] [--json]                   show an experiment (and its trials)
  jetshard nas list [--json]                                   list experiments
  jetshard nas stop <id>                                       stop an experiment (queued trials are kept)
  jetshard nas resume <id> [--max-trials N] [--max-failed-trials N] [--concurrency N]

Talks to NATS directly (JETSHARD_NATS_URL, default nats://127.0.0.1:4222); a controller must be running
(jetshard controller, or jetshard up). "run" prints the experiment id on stdout, then follows it (--watch, the
default): a live progress bar on stderr (trials done / total, best so far; plain progress lines when stderr is
not a terminal), and exits when the experiment ends: 0 if it completed, 1 if it failed or was stopped.
Ctrl-C stops following, not the experiment. --detach returns once it is queued.
The same operations over HTTP: POST /v1/experiments, GET /v1/experiments/{id}, ... (see README).

Spec (JSON): {"name", "family": "mlp|cnn|cell|custom", "searchSpace" (NNI format; optional for cell),
  "strategy": "random|grid|evolution" or {"name": "evolution", "population": 20, "sample": 5},
  "objective": {"metric", "direction": "maximize|minimize"}, "constraints": [{"metric", "min"?, "max"?}],
  "maxTrials", "concurrency" (1), "maxFailedTrials" (5), "seed"?, "trialTimeoutMs"?,
  "evaluator": {"metrics": ["naswot", "latency", "params", "flops"], "batch"?, "runs"?} or {"custom": "<name>", ...options},
  "earlyStopping": {"rule": "median", "minTrials"?, "minStep"?}}. Examples: deploy/examples/nas-*.json
A "custom" evaluator is one the operator registered: <name>.js|.mjs|.ts in the workers' JETSHARD_EVALUATORS_DIR
(a spec names it, never a path). maxTrials, concurrency and trialTimeoutMs are capped by JETSHARD_MAX_TRIALS,
JETSHARD_MAX_TRIAL_CONCURRENCY and JETSHARD_MAX_TRIAL_TIMEOUT_MS.`;
