import t, { type Test } from "tap";
import { mkdir, mkdtemp, realpath, rm, symlink, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { EvaluatorUnavailable, resolveCustomEvaluator } from "../../services/worker/evaluator-registry.js";
import { evaluatorEnv } from "../../services/worker/nas-evaluator.js";

/** A temp tree: `evaluators/` (the registered dir) and `outside/` next to it. */
async function tree(t: Test) {
  const root = await realpath(await mkdtemp(path.join(os.tmpdir(), "jetshard-registry-")));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const dir = path.join(root, "evaluators");
  const outside = path.join(root, "outside");
  await mkdir(dir);
  await mkdir(outside);
  const src = "export function evaluate() { return { score: 1 }; }\n";
  await writeFile(path.join(dir, "train.js"), src);
  await writeFile(path.join(dir, "both.ts"), src);
  await writeFile(path.join(dir, "both.mjs"), src);
  await writeFile(path.join(dir, "notes.txt"), "not an evaluator");
  await writeFile(path.join(outside, "evil.js"), src);
  await writeFile(path.join(root, "secret.js"), src);
  await symlink(path.join(outside, "evil.js"), path.join(dir, "escape.js"));
  await symlink(path.join(dir, "train.js"), path.join(dir, "alias.js"));
  await mkdir(path.join(dir, "folder.js"));
  return { root, dir };
}

async function refusal(t: Test, p: Promise<unknown>, want: RegExp) {
  try {
    await p;
    t.fail(`expected a refusal matching ${want}`);
  } catch (err) {
    t.ok(err instanceof EvaluatorUnavailable, `an EvaluatorUnavailable: ${String(err)}`);
    t.match((err as Error).message, want);
  }
}

t.test("a registered name resolves to its real file inside the directory, .js before .mjs before .ts", async (t) => {
  const { dir } = await tree(t);
  t.equal(await resolveCustomEvaluator(dir, "train"), path.join(dir, "train.js"));
  t.equal(await resolveCustomEvaluator(dir, "both"), path.join(dir, "both.mjs"));
  t.equal(await resolveCustomEvaluator(dir, "alias"), path.join(dir, "train.js"), "a symlink that stays inside the directory is fine");
});

t.test("a relative evaluators directory is taken from the working directory", async (t) => {
  const { dir } = await tree(t);
  t.equal(await resolveCustomEvaluator(path.relative(process.cwd(), dir), "train"), path.join(dir, "train.js"));
});

t.test("a name that is not registered, or no directory at all, is refused with a clear message", async (t) => {
  const { dir } = await tree(t);
  await refusal(t, resolveCustomEvaluator(dir, "nope"), /^custom evaluator "nope" is not registered on this worker \(no nope\.js, nope\.mjs, nope\.ts in JETSHARD_EVALUATORS_DIR\)$/);
  await refusal(t, resolveCustomEvaluator(dir, "notes"), /"notes" is not registered/);
  await refusal(t, resolveCustomEvaluator(undefined, "train"), /^custom evaluator "train" is not available: this worker has no evaluators directory \(JETSHARD_EVALUATORS_DIR\)$/);
  await refusal(t, resolveCustomEvaluator(path.join(dir, "missing"), "train"), /evaluators directory cannot be read \(ENOENT\)/);
  await refusal(t, resolveCustomEvaluator(dir, "folder"), /"folder" is not a file/);
});

t.test("a symlink in the directory that points outside it is refused", async (t) => {
  const { dir } = await tree(t);
  await refusal(t, resolveCustomEvaluator(dir, "escape"), /^custom evaluator "escape" is refused: its file is a link to outside the evaluators directory$/);
});

t.test("paths and file names never reach the file system: the worker re-checks the name a job carries", async (t) => {
  const { dir, root } = await tree(t);
  await refusal(t, resolveCustomEvaluator(dir, "../secret"), /^evaluator\.custom must be the name of an evaluator registered by the operator .*not a path/);
  await refusal(t, resolveCustomEvaluator(dir, path.join(root, "secret")), /not a path/);
  await refusal(t, resolveCustomEvaluator(dir, "sub/train"), /not a path/);
  await refusal(t, resolveCustomEvaluator(dir, "train.js"), /without an extension \("train", not "train\.js"\)/);
  await refusal(t, resolveCustomEvaluator(dir, 42), /must be a string/);
  await refusal(t, resolveCustomEvaluator(dir, ""), /must not be empty/);
});

t.test("an evaluator process's environment keeps only the minimal variables and points HOME and TMPDIR at its directory", async (t) => {
  const env = evaluatorEnv(
    { PATH: "/usr/bin", LANG: "C.UTF-8", CUDA_VISIBLE_DEVICES: "1", JETSHARD_NATS_PASSWORD: "s3cret", NATS_TOKEN: "t", AWS_SECRET_ACCESS_KEY: "k", NODE_OPTIONS: "--require evil", HOME: "/root" },
    "/tmp/jetshard-eval-x",
  );
  t.same(env, { PATH: "/usr/bin", LANG: "C.UTF-8", CUDA_VISIBLE_DEVICES: "1", HOME: "/tmp/jetshard-eval-x", TMPDIR: "/tmp/jetshard-eval-x" });
});
