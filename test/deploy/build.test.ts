/**
 * The production build: `npm run build` (scripts/build.mjs) compiles services/ and shared/ into a folder that plain
 * `node` runs, with no TypeScript and no tsx on the import path. Built into a temp folder laid out like the image
 * (/app/dist beside /app/node_modules), then run: the CLI, and a compiled gateway and worker serving a real
 * inference. bin/jetshard.js's choice between dist/ and the sources is checked in the same layout.
 */
import t from "tap";
import { spawn, type ChildProcess } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { DEMO_MLP, DEMO_MLP_REQUEST, demoMlpBytes } from "#shared/demo.js";
import { addModel } from "#shared/model-repo.js";
import { ROOT, startStack, waitFor } from "../helpers/stack.js";

const tmp = mkdtempSync(path.join(os.tmpdir(), "jetshard-build-"));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
const app = path.join(tmp, "app");
const dist = path.join(app, "dist");
mkdirSync(app);
symlinkSync(path.join(ROOT, "node_modules"), path.join(app, "node_modules"), "dir");

/** This process's environment without what would load tsx (or tap's hooks) into a child. */
function plainEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra };
  delete env.NODE_OPTIONS;
  for (const k of Object.keys(env)) if (k.startsWith("JETSHARD_") && !(k in extra)) delete env[k];
  return env;
}

function run(args: string[], env: NodeJS.ProcessEnv, cwd = tmp): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, args, { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    p.stdout.on("data", (d: Buffer) => (out += d.toString()));
    p.stderr.on("data", (d: Buffer) => (out += d.toString()));
    p.once("exit", (code) => resolve({ code, out }));
  });
}

/** Files under `dir` (relative), recursively. */
function files(dir: string, base = dir): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? files(p, base) : [path.relative(base, p)];
  });
}

const build = await run([path.join(ROOT, "scripts/build.mjs"), "--out-dir", dist], plainEnv(), ROOT);

t.test("npm run build compiles services and shared into a self-contained folder", async (t) => {
  t.equal(build.code, 0, `build exits 0: ${build.out.slice(-3000)}`);
  const built = files(dist);
  t.ok(built.includes(path.join("services", "cli", "main.js")), "the CLI");
  t.ok(built.includes(path.join("services", "worker", "nas-eval-child.js")), "the NAS evaluator child");
  t.notOk(built.some((f) => f.endsWith(".ts")), "no TypeScript");
  t.notOk(built.some((f) => f.startsWith("test")), "no tests");
  const pkg = JSON.parse(readFileSync(path.join(dist, "package.json"), "utf8"));
  t.equal(pkg.type, "module");
  t.same(pkg.imports, { "#shared/*": "./shared/*" }, "#shared/x.js resolves to the compiled dist/shared/x.js");
  for (const f of ["nats.conf", "nats-auth.conf", path.join("bin", "jetshard.js")]) t.ok(built.includes(f), `${f} where jetshard up looks for it`);
  t.notMatch(readFileSync(path.join(dist, ".jetshard-build"), "utf8"), /^building/, "the build is marked complete");
  // run-time assets (pages, scripts, styles beside the code) travel with it
  const assets = ["services", "shared"].flatMap((d) => files(path.join(ROOT, d), ROOT)).filter((f) => !f.endsWith(".ts") && !f.endsWith(".tmp") && !path.basename(f).startsWith("."));
  for (const a of assets) t.ok(existsSync(path.join(dist, a)), `asset ${a} copied`);
});

t.test("the compiled CLI runs with plain node", async (t) => {
  const help = await run([path.join(dist, "bin", "jetshard.js"), "--help"], plainEnv());
  t.equal(help.code, 0, help.out.slice(-2000));
  t.match(help.out, /jetshard/);
  t.match(help.out, /worker/);
  const device = await run([path.join(dist, "services", "cli", "main.js"), "device"], plainEnv({ JETSHARD_DEVICE: "cpu" }));
  t.equal(device.code, 0, device.out.slice(-2000));
  t.match(JSON.parse(device.out.slice(device.out.indexOf("{"))), { device: { kind: "cpu" }, check: { ok: true } }, "ONNX Runtime loads and runs a model");
});

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

t.test("a compiled gateway and worker answer an inference", async (t) => {
  const stack = await startStack(t);
  const port = await freePort();
  const env = plainEnv({ ...stack.env, JETSHARD_PORT: String(port), JETSHARD_LOG_LEVEL: "warn" });
  const children: ChildProcess[] = [];
  let out = "";
  const start = (role: string) => {
    const c = spawn(process.execPath, [path.join(dist, "bin", "jetshard.js"), role], { cwd: tmp, env, stdio: ["ignore", "pipe", "pipe"] });
    c.stdout!.on("data", (d: Buffer) => (out = (out + d.toString()).slice(-4000)));
    c.stderr!.on("data", (d: Buffer) => (out = (out + d.toString()).slice(-4000)));
    children.push(c);
  };
  t.teardown(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGTERM");
    await Promise.all(children.map((c) => (c.exitCode !== null || c.signalCode !== null ? undefined : new Promise((r) => c.once("exit", r)))));
  });
  start("gateway");
  start("worker");
  const base = `http://127.0.0.1:${port}`;
  await waitFor(`the compiled gateway (${out})`, () => fetch(`${base}/v2/health/live`).then((r) => r.ok, () => false), 60_000, 100);
  t.match(await (await fetch(`${base}/v2`)).json(), { name: "jetshard" });
  await addModel(stack.infra, DEMO_MLP, demoMlpBytes());
  await waitFor(`the compiled worker to serve ${DEMO_MLP} (${out})`, () => fetch(`${base}/v2/models/${DEMO_MLP}/ready`).then((r) => r.ok, () => false), 60_000, 100);
  const res = await fetch(`${base}/v2/models/${DEMO_MLP}/infer`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(DEMO_MLP_REQUEST) });
  const body = (await res.json()) as { outputs?: { data: number[] }[] };
  t.equal(res.status, 200, JSON.stringify(body));
  t.equal(body.outputs?.[0]?.data.length, 3, "three class probabilities");
  t.ok(Math.abs(body.outputs![0]!.data.reduce((a, b) => a + b, 0) - 1) < 1e-5, "a softmax");
});

t.test("the compiled worker's NAS evaluator process runs a custom evaluator written in TypeScript", async (t) => {
  const dir = path.join(tmp, "evaluators");
  mkdirSync(dir);
  const evaluator = path.join(dir, "probe.ts");
  writeFileSync(
    evaluator,
    "export async function evaluate(arch: { point: { x: number } }, ctx: { options: { k: number }; report(v: number): void }) {\n" +
      "  const v: number = arch.point.x * ctx.options.k;\n  ctx.report(v);\n  return { score: v };\n}\n",
  );
  const script = path.join(tmp, "evaluate.mjs");
  writeFileSync(
    script,
    `import { pathToFileURL } from "node:url";
const [dist, modulePath] = process.argv.slice(2);
const { EvaluatorProcess } = await import(pathToFileURL(dist + "/services/worker/nas-evaluator.js").href);
const { silentLogger } = await import(pathToFileURL(dist + "/shared/log.js").href);
const ev = new EvaluatorProcess(silentLogger());
const reports = [];
const job = { experimentId: "e", trialId: "t", index: 0, family: "custom", point: { x: 3 }, evaluator: { custom: "probe", k: 2 }, timeoutMs: 30000 };
const out = await ev.evaluate({ job, attempt: 1, modulePath, device: { kind: "cpu", name: "cpu" }, providers: ["cpu"] },
  { timeoutMs: 30000, signal: new AbortController().signal, onReport: (s, v) => reports.push([s, v]) });
ev.kill();
process.stdout.write(JSON.stringify({ out, reports }));
`,
  );
  const r = await run([script, dist, evaluator], plainEnv());
  t.equal(r.code, 0, r.out.slice(-2000));
  t.same(JSON.parse(r.out), { out: { kind: "ok", metrics: { score: 6 } }, reports: [[1, 6]] }, "nas-eval-child.js beside it, tsx only for the evaluator");
});

t.test("bin/jetshard.js runs dist when it is complete and newer than the sources, else the sources through tsx", async (t) => {
  // the repository's layout in miniature: bin/, dist/, node_modules/, and sources whose main only says so
  mkdirSync(path.join(app, "bin"));
  writeFileSync(path.join(app, "package.json"), JSON.stringify({ type: "module" }));
  cpSync(path.join(ROOT, "bin", "jetshard.js"), path.join(app, "bin", "jetshard.js"));
  const main = path.join(app, "services", "cli", "main.ts");
  mkdirSync(path.dirname(main), { recursive: true });
  writeFileSync(main, 'const from: string = "the sources";\nprocess.stdout.write(`ran ${from}\\n`);\n');
  const bin = path.join(app, "bin", "jetshard.js");
  const stamp = path.join(dist, ".jetshard-build");
  const past = new Date(Date.now() - 3_600_000);
  const future = new Date(Date.now() + 3_600_000);

  utimesSync(main, past, past);
  let r = await run([bin, "--help"], plainEnv());
  t.match(r.out, /Usage/, "sources older than the build: the compiled CLI");
  t.notMatch(r.out, /ran the sources/);

  utimesSync(main, future, future);
  r = await run([bin, "--help"], plainEnv());
  t.match(r.out, /ran the sources/, "a source edited after the build: the sources, through tsx");
  r = await run([bin, "--help"], plainEnv({ JETSHARD_RUN_FROM: "dist" }));
  t.match(r.out, /Usage/, "JETSHARD_RUN_FROM=dist forces the build");

  utimesSync(main, past, past);
  r = await run([bin, "--help"], plainEnv({ JETSHARD_RUN_FROM: "src" }));
  t.match(r.out, /ran the sources/, "JETSHARD_RUN_FROM=src forces the sources");
  r = await run([bin, "--help"], plainEnv({ JETSHARD_RUN_FROM: "bogus" }));
  t.equal(r.code, 2, "an unknown JETSHARD_RUN_FROM is refused");
  t.match(r.out, /JETSHARD_RUN_FROM must be dist or src/);

  const complete = readFileSync(stamp, "utf8");
  writeFileSync(stamp, "building\n");
  r = await run([bin, "--help"], plainEnv());
  t.match(r.out, /ran the sources/, "an unfinished build is never run");
  r = await run([bin, "--help"], plainEnv({ JETSHARD_RUN_FROM: "dist" }));
  t.equal(r.code, 2, "and cannot be forced");
  writeFileSync(stamp, complete);
  utimesSync(stamp, new Date(), new Date());
});

t.test("the build refuses to empty a folder it did not make", async (t) => {
  const other = path.join(tmp, "not-a-build");
  mkdirSync(other);
  writeFileSync(path.join(other, "keep.txt"), "mine");
  const r = await run([path.join(ROOT, "scripts/build.mjs"), "--out-dir", other], plainEnv(), ROOT);
  t.equal(r.code, 1);
  t.match(r.out, /was not made by this build/);
  t.equal(readFileSync(path.join(other, "keep.txt"), "utf8"), "mine", "its files are untouched");
  const src = await run([path.join(ROOT, "scripts/build.mjs"), "--out-dir", ROOT], plainEnv(), ROOT);
  t.match(src.out, /refusing to build into/, "never into the sources");
});
