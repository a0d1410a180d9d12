import t from "tap";
import { existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { EVALUATOR_ENV_PASSED } from "../../services/worker/nas-evaluator.js";
import { ROOT, startStack, waitFor } from "../helpers/stack.js";
import { EVALUATORS_DIR, controller, experimentsApi } from "../helpers/nas.js";

t.test("a custom evaluator runs with a minimal environment in a private directory removed afterwards", async (t) => {
  const stack = await startStack(t, { JETSHARD_EVALUATORS_DIR: EVALUATORS_DIR });
  const gw = await stack.gateway();
  // the only worker, in its own process: its environment holds the stack's JETSHARD_* settings and secrets
  await stack.workerProcess({ SECRET_TEST_VAR: "hunter2", AWS_SECRET_ACCESS_KEY: "not-for-evaluators" });
  await controller(t, stack);
  const api = experimentsApi(gw.url);
  const created = await api.create({
    name: "env-probe",
    family: "custom",
    searchSpace: { x: { _type: "choice", _value: [0, 1, 2] } },
    strategy: "grid",
    objective: { metric: "leaked", direction: "minimize" },
    maxTrials: 3,
    concurrency: 1,
    maxFailedTrials: 10,
    trialTimeoutMs: 3_000,
    evaluator: { custom: "env-probe" },
  });
  t.equal(created.status, 201, JSON.stringify(created.body));
  const rec = await api.waitStatus(created.body.id, ["completed", "failed"], 60_000);
  t.equal(rec.status, "completed");
  const [probe, listing, hang] = (await api.trials(created.body.id)).body.trials as any[];

  t.match(probe, { status: "succeeded", metrics: { leaked: 0, home_is_cwd: 1 } }, "no JETSHARD_*, NATS_*, AWS_* or SECRET_TEST_VAR; HOME is its directory");

  t.equal(listing.status, "failed");
  const seen = JSON.parse(listing.error) as { env: string[]; cwd: string; home: string; tmpdir: string; nodeOptions?: string };
  const allowed = new Set<string>([...EVALUATOR_ENV_PASSED, "HOME", "TMPDIR"]);
  // tap's process-info hook adds its own variables (and a NODE_OPTIONS loading it) to every process spawned under it
  const byTap = (k: string) => k.startsWith("_TAPJS_") || (k === "NODE_OPTIONS" && /^(\s*"?--import=[^"\s]*@tapjs[^"\s]*"?)+\s*$/.test(seen.nodeOptions ?? ""));
  t.same(seen.env.filter((k) => !allowed.has(k) && !byTap(k)), [], `only the minimal variables: ${seen.env.join(", ")} (NODE_OPTIONS ${JSON.stringify(seen.nodeOptions)})`);
  t.ok(seen.env.includes("PATH"), "PATH is passed on");
  t.equal(seen.home, seen.cwd);
  t.equal(seen.tmpdir, seen.cwd);
  t.ok(path.basename(seen.cwd).startsWith("jetshard-eval-"), `a fresh temporary directory: ${seen.cwd}`);
  t.equal(path.dirname(seen.cwd), os.tmpdir());
  t.notOk(seen.cwd.startsWith(ROOT), "not the repository");

  // the hanging trial is killed by its timeout; with its process goes its directory
  t.match(hang, { status: "failed", error: "trial timed out after 3000 ms" });
  await waitFor("the evaluator directory removed", () => !existsSync(seen.cwd), 10_000);
  t.pass("the directory was removed once its process ended");
});
