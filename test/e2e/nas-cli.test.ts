import t from "tap";
import { spawn } from "node:child_process";
import { mkdtemp, writeFile } from "node:fs/promises";
import path from "node:path";
import { ROOT, startStack } from "../helpers/stack.js";
import { controller } from "../helpers/nas.js";
import { NAS_HELP } from "../../services/cli/nas.js";

function cli(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ["--import", "tsx", path.join(ROOT, "services/cli/main.ts"), ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    p.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    p.once("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

t.test("jetshard nas run follows an experiment to the end and nas show reports it", async (t) => {
  const stack = await startStack(t);
  await stack.worker();
  await controller(t, stack);
  const dir = await mkdtemp(path.join(stack.config.dataDir, "nas-cli-"));
  const specFile = path.join(dir, "spec.json");
  const spec = {
    name: "cli-mlp",
    family: "mlp",
    familyOptions: { inputShape: [16] },
    searchSpace: { depth: { _type: "choice", _value: [1, 2, 3] }, width: { _type: "choice", _value: [8, 16, 32] } },
    strategy: "grid",
    objective: { metric: "naswot", direction: "maximize" },
    maxTrials: 6,
    concurrency: 2,
    evaluator: { metrics: ["naswot", "params", "flops"], batch: 16 },
  };
  await writeFile(specFile, JSON.stringify(spec));
  const run = await cli(["nas", "run", specFile], stack.env);
  t.equal(run.code, 0, run.stderr);
  const id = run.stdout.split("\n")[0]!;
  t.match(id, /^cli-mlp-[a-z0-9]{6}$/, "prints the experiment id first");
  t.match(run.stderr, /progress 6\/6 status=completed succeeded=6/, "plain progress lines when stderr is not a terminal");
  t.match(run.stdout, /experiment cli-mlp-\w+ \(cli-mlp\): completed/);
  t.match(run.stdout, /best t\d{4}: naswot=/);

  const show = await cli(["nas", "show", id, "--json", "--trials"], stack.env);
  t.equal(show.code, 0, show.stderr);
  const rec = JSON.parse(show.stdout);
  t.equal(rec.status, "completed");
  t.equal(rec.trials.length, 6);

  const badFile = path.join(dir, "bad.json");
  await writeFile(badFile, JSON.stringify({ ...spec, maxTrials: 0 }));
  const bad = await cli(["nas", "run", badFile], stack.env);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /bad\.json: maxTrials: must be >= 1/, "a bad spec is refused naming the field");
  t.equal((await cli(["nas", "show", "nope"], stack.env)).code, 1, "an unknown experiment exits 1 (not found)");
  t.match(NAS_HELP, /jetshard nas run <spec\.json>/, "help names the commands");
});
