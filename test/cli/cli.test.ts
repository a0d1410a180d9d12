import t from "tap";
import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { encodeModel, mlp } from "#shared/onnx/builder.js";
import { CommanderError } from "commander";
import { buildProgram } from "../../services/cli/program.js";
import { BIN, cli } from "../helpers/cli.js";
import { ROOT, freePort, startStack, waitFor } from "../helpers/stack.js";

/** `jetshard <args>` parsed in this process (help and usage errors only: no command runs). */
async function parseOnly(...args: string[]): Promise<{ exitCode: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const program = buildProgram({ writeOut: (s) => void (out += s), writeErr: (s) => void (err += s) });
  try {
    await program.parseAsync(args, { from: "user" });
    return { exitCode: 0, out, err };
  } catch (e) {
    if (!(e instanceof CommanderError)) throw e;
    return { exitCode: e.exitCode, out, err };
  }
}

t.test("every command has --help", async (t) => {
  const commands = [[], ["up"], ["gateway"], ["worker"], ["controller"], ["model"], ["model", "add"], ["model", "list"], ["model", "rm"], ["infer"], ["workers"], ["nas"],
    ["nas", "run"], ["nas", "show"], ["nas", "list"], ["jobs"], ["jobs", "list"], ["jobs", "show"], ["dlq"], ["dlq", "list"], ["device"], ["keys"], ["keys", "list"], ["config"], ["logs"]];
  for (const cmd of commands) {
    const r = await parseOnly(...cmd, "--help");
    t.equal(r.exitCode, 0, `jetshard ${cmd.join(" ")} --help exits 0`);
    t.match(r.out, /Usage/, `jetshard ${cmd.join(" ")} --help prints usage`);
  }
  const main = (await parseOnly("--help")).out;
  t.match(main, /Exit codes:[\s\S]*0 +ok[\s\S]*1 +failure[\s\S]*2 +usage[\s\S]*3 +unavailable[\s\S]*4 +permission denied/, "the exit codes are documented");
  t.match(main, /--config <file>/, "the global --config option is documented");
  for (const cmd of [["workers"], ["model", "list"], ["jobs", "list"], ["jobs", "show"], ["dlq", "list"], ["nas", "show"], ["nas", "list"], ["keys", "list"], ["device"], ["config"]]) {
    t.match((await parseOnly(...cmd, "--help")).out, /--json/, `jetshard ${cmd.join(" ")} takes --json`);
  }
  t.match((await parseOnly("nas", "run", "--help")).out, /--watch[\s\S]*--detach/);
  t.match((await parseOnly("up", "--help")).out, /--cluster <n>[\s\S]*--gpus[\s\S]*restarted/);
  t.match((await parseOnly("logs", "--help")).out, /-f, --follow[\s\S]*--job <id>[\s\S]*--service <s>[\s\S]*--level <level>[\s\S]*--since <when>/);

  // the real command, once
  const help = await cli({}, "--help");
  t.equal(help.code, 0);
  t.match(help.stdout, /Usage: jetshard/);
  const dev = await cli({ JETSHARD_DEVICE: "cpu" }, "device");
  t.equal(dev.code, 0, dev.stderr);
  t.match(JSON.parse(dev.stdout), { device: { kind: "cpu", note: /JETSHARD_DEVICE=cpu/ }, providers: ["cpu"], check: { ok: true, output: [Number, Number] } }, "device check runs a model");
  const bad = await cli({}, "frobnicate");
  t.equal(bad.code, 2);
  t.match(bad.stderr, /unknown command 'frobnicate'/);
});

t.test("usage errors exit 2 naming the flag, an unreachable NATS exits 3", async (t) => {
  const flag = await cli({}, "workers", "--frob");
  t.equal(flag.code, 2);
  t.match(flag.stderr, /unknown option '--frob'/);
  // parse errors (exit 2 through main.ts as above), checked in this process
  const value = await parseOnly("jobs", "list", "--limit", "0");
  t.not(value.exitCode, 0);
  t.match(value.err, /jetshard: option '--limit <n>' argument '0' is invalid/);
  t.match((await parseOnly("jobs", "list", "--status", "done")).err, /--status[\s\S]*queued/);
  t.match((await parseOnly("model", "add", "m.onnx")).err, /required option '--name <name>'/);
  t.match((await parseOnly("model", "add", "m.onnx", "--name", "m", "--balance", "size")).err, /--balance[\s\S]*bytes, flops/);
  t.match((await parseOnly("infer")).err, /missing required argument 'model'/);
  t.match((await parseOnly("workers", "extra")).err, /too many arguments/);
  const config = await cli({ JETSHARD_PORT: "eighty" }, "workers");
  t.equal(config.code, 2, "a bad setting is a usage error");
  t.match(config.stderr, /JETSHARD_PORT/);
  const port = await freePort();
  const down = await cli({ JETSHARD_NATS_URL: `nats://127.0.0.1:${port}` }, "workers");
  t.equal(down.code, 3, down.stderr);
  t.match(down.stderr, /cannot reach NATS/);
});

t.test("jetshard config shows each value and its source, from --config and the environment", async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "jetshard-config-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, "jetshard.yaml");
  await writeFile(file, "port: 9999\nworkers: 5\n");
  const r = await cli({ JETSHARD_WORKERS: "3" }, "--config", file, "config", "--json");
  t.equal(r.code, 0, r.stderr);
  const doc = JSON.parse(r.stdout);
  t.equal(doc.file, file);
  const byName = Object.fromEntries(doc.settings.map((s: any) => [s.name, s]));
  t.match(byName.JETSHARD_PORT, { value: 9999, source: `file ${file}` });
  t.match(byName.JETSHARD_WORKERS, { value: 3, source: "env" }, "the environment overrides the file");
  t.match(byName.JETSHARD_HOST, { value: "127.0.0.1", source: "default" });
  const text = await cli({}, "config", "--config", file);
  t.match(text.stdout, /JETSHARD_PORT +9999 +file /, "--config works after the command too");
  await writeFile(file, "prot: 1\n");
  const bad = await cli({}, "--config", file, "config");
  t.equal(bad.code, 2);
  t.match(bad.stderr, /unknown setting "prot"/);
});

t.test("model add, list, infer, workers and rm from the command line", async (t) => {
  const stack = await startStack(t);
  const env = { JETSHARD_NATS_URL: stack.nats.url, JETSHARD_WORKER_TTL_MS: stack.env.JETSHARD_WORKER_TTL_MS! };
  const dir = await mkdtemp(path.join(stack.config.dataDir, "cli-"));
  const file = path.join(dir, "m.onnx");
  await writeFile(file, encodeModel(mlp({ layers: [2, 2], seed: 4 })));

  const added = await cli(env, "model", "add", file, "--name", "clim");
  t.equal(added.code, 0, added.stderr);
  t.match(JSON.parse(added.stdout), { name: "clim", version: 1, inputs: [{ name: "input", datatype: "FP32", shape: [-1, 2] }] });
  t.match(added.stderr, /stored shard 1: /, "upload progress on stderr, as plain lines off a terminal");
  t.match((await cli(env, "model", "list")).stdout, /clim\tlatest=1\tversions=1/);
  t.match(JSON.parse((await cli(env, "model", "list", "--json")).stdout), { models: [{ name: "clim", latest: 1 }] });
  const deep = path.join(dir, "deep.onnx");
  await writeFile(deep, encodeModel(mlp({ layers: [2, 8, 8, 2], seed: 4 })));
  const sharded = await cli(env, "model", "add", deep, "--name", "deep", "--shards", "3");
  t.equal(sharded.code, 0, sharded.stderr);
  t.equal(JSON.parse(sharded.stdout).shards, 3, "--shards splits the model");
  t.match(sharded.stderr, /stored shard 1\/3[\s\S]*stored shard 2\/3[\s\S]*stored shard 3\/3/, "progress per shard");
  const badShards = await cli(env, "model", "add", deep, "--name", "deep", "--shards", "0");
  t.equal(badShards.code, 2);
  t.match(badShards.stderr, /shards/);
  const missingName = await cli(env, "model", "add", file);
  t.equal(missingName.code, 2);
  t.match(missingName.stderr, /--name/);

  const w = await stack.worker();
  const inf = await cli(env, "infer", "clim", "--input", "input:FP32:1x2:0.5,-1");
  t.equal(inf.code, 0, inf.stderr);
  const body = JSON.parse(inf.stdout);
  t.match(body, { model_name: "clim", outputs: [{ name: "output", datatype: "FP32", shape: [1, 2] }], parameters: { worker: w.id } });
  const json = await cli(env, "infer", "clim", "--json", JSON.stringify({ id: "x1", inputs: [{ name: "input", shape: [1, 2], datatype: "FP32", data: [0.5, -1] }] }));
  t.same(JSON.parse(json.stdout).outputs, body.outputs, "--json and --input give the same answer");
  const badInput = await cli(env, "infer", "clim", "--input", "input:FP32:1x3:1,2,3");
  t.equal(badInput.code, 2);
  t.match(badInput.stderr, /input "input": expected shape \[-1,2\]/);

  t.match((await cli(env, "workers")).stdout, new RegExp(`${w.id}\\tcpu:`));
  t.match(JSON.parse((await cli(env, "workers", "--json")).stdout), { workers: [{ id: w.id, device: { kind: "cpu" } }] });

  // async jobs and dead letters
  const { JetshardClient } = await import("#shared/client.js");
  const client = new JetshardClient(stack.infra.nc, { infra: stack.infra });
  t.teardown(() => client.close());
  const sub = await client.submit("clim", [{ name: "input", datatype: "FP32", shape: [1, 2], data: Float32Array.of(1, 2) }], { jobId: "cli-job-1" });
  const { waitJob } = await import("#shared/jobs.js");
  await waitJob(stack.infra, sub.id, 10_000);
  t.match((await cli(env, "jobs", "list", "--status", "succeeded")).stdout, /cli-job-1\tclim\tsucceeded\tattempts=1/);
  t.match(JSON.parse((await cli(env, "jobs", "list", "--json")).stdout), { jobs: [{ id: "cli-job-1", status: "succeeded" }] });
  t.match(JSON.parse((await cli(env, "jobs", "show", "cli-job-1")).stdout), { id: "cli-job-1", status: "succeeded" });
  const shown = await cli(env, "jobs", "show", "cli-job-1", "--json");
  t.equal(shown.stdout.trim().split("\n").length, 1, "--json is one line");
  t.match(JSON.parse(shown.stdout), { id: "cli-job-1", status: "succeeded" });
  const missing = await cli(env, "jobs", "show", "no-such-job");
  t.equal(missing.code, 1, "not found exits 1");
  t.match(missing.stderr, /job "no-such-job" not found/);
  const cancel = await cli(env, "jobs", "cancel", "cli-job-1");
  t.equal(cancel.code, 1, "cancelling a finished job fails");
  t.match(cancel.stderr, /already succeeded/);
  t.match((await cli(env, "dlq", "list")).stdout, /no dead letters/);
  t.same(JSON.parse((await cli(env, "dlq", "list", "--json")).stdout), { deadLetters: [] });
  t.equal((await cli(env, "model", "rm", "clim")).code, 0);
  t.equal((await cli(env, "model", "rm", "deep")).code, 0);
  t.match((await cli(env, "model", "list")).stdout, /no models/);
});

t.test("jetshard up starts gateway and workers, seeds demo-mlp, prints a working curl, and Ctrl-C stops it all", async (t) => {
  const stack = await startStack(t);
  const port = await freePort();
  const child = spawn(process.execPath, [BIN, "up"], {
    cwd: ROOT,
    env: { ...process.env, JETSHARD_NATS_URL: stack.nats.url, JETSHARD_PORT: String(port), JETSHARD_OPS_PORT: "0", JETSHARD_WORKERS: "2", JETSHARD_DATA_DIR: stack.env.JETSHARD_DATA_DIR!, JETSHARD_LOG_LEVEL: "warn" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  t.teardown(() => {
    if (child.exitCode === null) child.kill("SIGKILL");
  });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (out += d.toString()));
  const deadline = Date.now() + 90_000;
  while (!/curl .*-d '.*'/.test(out)) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`up did not print a curl: ${out.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const line = out.split("\n").find((l) => l.trim().startsWith("curl "))!.trim();
  const url = line.match(/curl -s (\S+)/)![1]!;
  const body = line.match(/-d '(.*)'$/)![1]!;
  t.equal(url, `http://127.0.0.1:${port}/v2/models/demo-mlp/infer`);
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body });
  t.equal(res.status, 200, "the printed curl works");
  const j = (await res.json()) as any;
  t.equal(j.outputs[0].name, "probabilities");
  t.equal(j.outputs[0].data.length, 3);
  t.ok(Math.abs(j.outputs[0].data.reduce((a: number, b: number) => a + b, 0) - 1) < 1e-5, "softmax sums to 1");

  const cnnLine = out.split("\n").find((l) => l.includes("demo-cnn/infer"))!.trim();
  const cnnRes = await fetch(cnnLine.match(/curl -s (\S+)/)![1]!, { method: "POST", headers: { "content-type": "application/json" }, body: cnnLine.match(/-d '(.*)'$/)![1]! });
  t.equal(cnnRes.status, 200, "the sharded demo's curl works");
  t.same(((await cnnRes.json()) as any).outputs[0].shape, [1, 3]);
  const cnnInfo = (await (await fetch(`http://127.0.0.1:${port}/v1/models/demo-cnn`)).json()) as any;
  t.equal(cnnInfo.versions[0].shards.length, 2, "demo-cnn is stored as 2 shards");

  // up prints the curl once the demo answers, which one worker suffices for: the second may still be registering
  const listWorkers = async () => ((await (await fetch(`http://127.0.0.1:${port}/v1/workers`)).json()) as any).workers as Array<{ pid: number }>;
  await waitFor("both workers registered", async () => (await listWorkers()).length >= 2, 60_000, 200).catch(() => undefined);
  const workers = await listWorkers();
  t.equal(workers.length, 2, "two workers");
  child.kill("SIGINT");
  const code = await new Promise((r) => child.once("exit", r));
  t.equal(code, 0, "up exits cleanly on Ctrl-C");
  await new Promise((r) => setTimeout(r, 500));
  const left = await fetch(`http://127.0.0.1:${port}/v2/health/live`).then(() => "still up", () => "down");
  t.equal(left, "down", "gateway stopped");
  for (const w of workers) t.throws(() => process.kill(w.pid, 0), `worker ${w.pid} stopped`);
});
