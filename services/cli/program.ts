/**
 * The `jetshard` command line (commander): every command, its options and its --help, in one place. Commands
 * are implemented beside this file and loaded only when run, so `--help` stays fast.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import { readConfigFile, useConfigFile } from "#shared/config.js";
import { localNatsEnv, type NatsRole } from "./credentials.js";
import { EXIT_CODES_HELP } from "./errors.js";
import { NAS_HELP } from "./help.js";
import { KEYS_HELP } from "./keys.js";
import type { ModelAddOptions } from "./model.js";

const ROOT = path.resolve(import.meta.dirname, "../..");
const JOB_STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal"];

/** An option value that must be an integer >= min; commander names the flag in the error. */
const int = (min: number) => (v: string) => {
  if (!/^[0-9]+$/.test(v) || Number(v) < min) throw new InvalidArgumentError(`must be an integer >= ${min}.`);
  return Number(v);
};
/** A repeatable option. */
const collect = (v: string, prev: string[]) => [...prev, v];

const ENV_NOTE = `Every command reads JETSHARD_* environment variables and, with --config or JETSHARD_CONFIG, a
jetshard.yaml (the environment overrides the file); see the README or "jetshard config".
Admin commands (model, infer, workers, jobs, dlq, nas, keys, logs) talk to NATS directly (JETSHARD_NATS_URL),
so they work without a gateway. Next to a local "jetshard up" they use its generated NATS credentials.`;

const JSON_NOTE = "print one JSON document on stdout";

/** Where help and error messages go: stdout and stderr unless told (tests capture them). */
export interface ProgramOutput {
  writeOut?: (text: string) => void;
  writeErr?: (text: string) => void;
}

/** The program, ready for `parseAsync`. Errors from parsing are thrown as CommanderError (see main.ts). */
export function buildProgram(output: ProgramOutput = {}): Command {
  const version = (JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")) as { version: string }).version;
  const program = new Command("jetshard")
    .description("jetshard: ML jobs across a fleet of machines, on NATS JetStream")
    .usage("[--config <file>] <command> [options]")
    .version(version, "-V, --version", "print the version")
    .option("--config <file>", "read settings from this YAML file (sets JETSHARD_CONFIG before any config is read)")
    .exitOverride()
    .configureOutput({
      ...(output.writeOut ? { writeOut: output.writeOut } : {}),
      ...(output.writeErr ? { writeErr: output.writeErr } : {}),
      outputError: (str, write) => write(str.replace(/^error: /, "jetshard: ")),
    })
    .addHelpText("after", `\n${ENV_NOTE}\n\n${EXIT_CODES_HELP}\n\nUse "jetshard <command> --help" for a command's options.`);

  program.hook("preAction", (_root, action) => {
    const file = program.opts<{ config?: string }>().config;
    if (file) useConfigFile(file, process.env);
    let top = action;
    while (top.parent && top.parent !== program) top = top.parent;
    // next to a local `jetshard up`, connect with its generated credentials unless others are configured
    if (top.name() !== "up") {
      const role: NatsRole = top.name() === "gateway" || top.name() === "worker" || top.name() === "controller" ? (top.name() as NatsRole) : "admin";
      // the config file may name the NATS servers and the data dir: the environment over it, as loadConfig reads them
      const cfg = process.env.JETSHARD_CONFIG;
      Object.assign(process.env, localNatsEnv(cfg ? { ...readConfigFile(cfg), ...process.env } : process.env, role));
    }
  });

  program
    .command("up")
    .description("run the whole stack locally (nats-server, gateway, controller, workers, demo models), supervised")
    .option("--cluster <n>", "run a local n-node NATS JetStream cluster instead of one server (n >= 3 for replicas 3)", int(1))
    .option("--gpus", "one worker per GPU nvidia-smi lists (as JETSHARD_WORKERS_PER_GPU=1), instead of JETSHARD_WORKERS")
    .addHelpText(
      "after",
      `
Starts nats-server from nats.conf (unless JETSHARD_NATS_URL is set), the gateway on JETSHARD_PORT, a controller,
JETSHARD_WORKERS workers, seeds the demo models, and prints a curl to try.
Supervision: a gateway, worker, controller or nats-server that dies is restarted (backoff 0.5 s doubling to
30 s, reset once it stayed up 60 s) and the restart logged; the others keep serving. Only Ctrl-C or SIGTERM
stops everything: children get SIGTERM, then SIGKILL after 15 s.
nats-server runs with the users of nats-auth.conf; their passwords are generated once into
$JETSHARD_DATA_DIR/nats-credentials.json (mode 0600), and other jetshard commands run on this machine without
NATS credentials use them.
--cluster 3: nodes on 127.0.0.1:4222-4224 (routes 6222-6224), stores under $JETSHARD_DATA_DIR/nats-cluster;
  children get all three URLs and JETSHARD_REPLICAS=3.
--gpus: each worker gets JETSHARD_GPU_ID=<index> (CUDA_VISIBLE_DEVICES is left as it is, so GPU indexes match
  nvidia-smi's); without GPUs it says so and starts JETSHARD_WORKERS CPU workers.`,
    )
    .action(async (opts: { cluster?: number; gpus?: boolean }) => (await import("./up.js")).runUp(process.env, opts));

  program
    .command("gateway")
    .description("run the HTTP gateway (Open Inference Protocol v2 + /v1 API, /metrics, dashboard)")
    .addHelpText("after", "\nRuns the HTTP gateway on JETSHARD_HOST:JETSHARD_PORT, connected to JETSHARD_NATS_URL. SIGTERM stops it.")
    .action(async () => (await import("../gateway/main.js")).runGateway());

  program
    .command("worker")
    .description("run a stateless worker")
    .addHelpText(
      "after",
      `
Runs a worker. It serves every model in the repository, or those in JETSHARD_SERVE (comma-separated).
Concurrency: JETSHARD_WORKER_CONCURRENCY. Device: JETSHARD_DEVICE=auto|cpu|cuda; JETSHARD_GPU_ID binds it to one
GPU. SIGTERM drains it.`,
    )
    .action(async () => (await import("../worker/main.js")).runWorker());

  program
    .command("controller")
    .description("run the NAS controller (experiments, trials, resume)")
    .addHelpText(
      "after",
      `
Runs the NAS controller: drives experiments, holds a lease per experiment in KV (JETSHARD_CONTROLLER_LEASE_MS)
so two controllers never drive the same one, and resumes experiments whose controller died.`,
    )
    .action(async () => (await import("../controller/main.js")).runController());

  const nas = program.command("nas").description("run or inspect neural architecture search experiments");
  nas.addHelpText("after", `\n${NAS_HELP}`);
  nas
    .command("run <spec>")
    .description("start an experiment from a JSON spec and follow it until it ends (exit 1 if it failed or was stopped)")
    .option("--watch", "follow it with a live progress bar on stderr: trials done / total, best so far (the default)")
    .option("--detach", "return once it is queued")
    .option("--json", "print the final record as one JSON document on stdout (not the bare id)")
    .action(async (spec: string, opts: { watch?: boolean; detach?: boolean; json?: boolean }) => {
      if (opts.watch && opts.detach) throw new (await import("./errors.js")).UsageError("--watch and --detach exclude each other");
      return (await import("./nas.js")).nasRun(spec, opts);
    });
  nas
    .command("show <id>")
    .description("show an experiment: progress, best trial, Pareto front")
    .option("--trials", "list its trials too")
    .option("--json", JSON_NOTE)
    .action(async (id: string, opts: { trials?: boolean; json?: boolean }) => (await import("./nas.js")).nasShow(id, opts));
  nas
    .command("list")
    .description("list experiments")
    .option("--json", JSON_NOTE)
    .action(async (opts: { json?: boolean }) => (await import("./nas.js")).nasList(opts));
  nas
    .command("stop <id>")
    .description("stop an experiment (queued trials are kept)")
    .action(async (id: string) => (await import("./nas.js")).nasStop(id));
  nas
    .command("resume <id>")
    .description("resume a stopped, failed or completed experiment")
    .option("--max-trials <n>", "raise maxTrials", int(1))
    .option("--max-failed-trials <n>", "raise maxFailedTrials", int(0))
    .option("--concurrency <n>", "trials at once", int(1))
    .action(async (id: string, opts: { maxTrials?: number; maxFailedTrials?: number; concurrency?: number }) => (await import("./nas.js")).nasResume(id, opts));

  const model = program.command("model").description("manage the model repository");
  model
    .command("add <file>")
    .description("store an ONNX model (a new version if the name exists), with upload progress on stderr")
    .requiredOption("--name <name>", "model name")
    .option("--shards <k>", "split it into a k-stage pipeline", int(1))
    .option("--max-shard-bytes <n>", "split it into stages of at most n bytes", int(1))
    .addOption(new Option("--balance <how>", "what to balance stages on").choices(["bytes", "flops"]))
    .addOption(new Option("--compression <how>", "activations between stages: lz4 (lossless) or none").choices(["none", "lz4"]))
    .addOption(new Option("--wire-dtype <type>", "FP32 activations between stages sent as fp16 (lossy, half the bytes) or fp32").choices(["fp32", "fp16"]))
    .action(async (file: string, opts: ModelAddOptions) => (await import("./model.js")).modelAdd(file, opts));
  model
    .command("list")
    .description("list models and versions")
    .option("--json", JSON_NOTE)
    .action(async (opts: { json?: boolean }) => (await import("./model.js")).modelList(opts));
  model
    .command("rm <name>")
    .description("delete a model and all its versions")
    .action(async (name: string) => (await import("./model.js")).modelRm(name));

  program
    .command("infer <model>")
    .description("run one inference through NATS and print the v2 JSON response")
    .option("--json <request>", "the v2 request as JSON, or @file.json")
    .option("--input <name:DATATYPE:1x4:1,2,3,4>", "an input tensor (repeat for several)", collect, [])
    .option("--output <name>", "an output to return (repeat for several; default all)", collect, [])
    .option("--version <n>", "model version (default the latest)", int(1))
    .option("--timeout-ms <ms>", "how long to wait (default JETSHARD_REQUEST_TIMEOUT_MS)", int(1))
    .action(async (name: string, opts: { json?: string; input: string[]; output: string[]; version?: number; timeoutMs?: number }) => (await import("./model.js")).infer(name, opts));

  program
    .command("workers")
    .description("list live workers: device and GPU held, CPU %, memory, GPU use, jobs in flight, models")
    .option("--json", JSON_NOTE)
    .action(async (opts: { json?: boolean }) => (await import("./fleet.js")).workers(opts));

  program
    .command("device")
    .description("show the device a worker here would use, proven by a tiny model run")
    .option("--json", "print it on one line (it is JSON either way)")
    .addHelpText(
      "after",
      `
Detects what a worker on this host runs on (CUDA when ONNX Runtime's CUDA provider loads and nvidia-smi reports a
GPU; CPU otherwise, with the reason) and runs a tiny model there. JETSHARD_DEVICE=auto|cpu|cuda.`,
    )
    .action(async (opts: { json?: boolean }) => (await import("./fleet.js")).device(opts));

  const jobs = program.command("jobs").description("inspect and cancel async jobs");
  jobs
    .command("list")
    .description("list jobs, newest first")
    .addOption(new Option("--status <status>", "only jobs in this state").choices(JOB_STATUSES))
    .option("--model <m>", "only jobs for this model")
    .option("--limit <n>", "at most n jobs", int(1), 50)
    .option("--json", JSON_NOTE)
    .action(async (opts: { status?: string; model?: string; limit: number; json?: boolean }) => (await import("./fleet.js")).jobsList(opts));
  jobs
    .command("show <id>")
    .description("the job's record (status, attempts, timestamps, error), as JSON")
    .option("--json", "on one line")
    .action(async (id: string, opts: { json?: boolean }) => (await import("./fleet.js")).jobsShow(id, opts));
  jobs
    .command("cancel <id>")
    .description("a queued job never runs; a running one ends cancelled (exit 1 if it already ended)")
    .action(async (id: string) => (await import("./fleet.js")).jobsCancel(id));

  const dlq = program.command("dlq").description("inspect, replay and delete dead letters");
  dlq
    .command("list")
    .description("dead-lettered jobs with their error and attempts")
    .option("--model <m>", "only this model's")
    .option("--json", JSON_NOTE)
    .action(async (opts: { model?: string; json?: boolean }) => (await import("./fleet.js")).dlqList(opts));
  dlq
    .command("replay <id>")
    .description("publish the job again (same id, fresh attempts)")
    .action(async (id: string) => (await import("./fleet.js")).dlqReplay(id));
  dlq
    .command("rm <id>")
    .description("delete a dead letter")
    .action(async (id: string) => (await import("./fleet.js")).dlqRm(id));

  const keys = program.command("keys").description("API keys (tenants, scopes) for the HTTP gateway");
  keys.addHelpText("after", `\n${KEYS_HELP}`);
  keys
    .command("create")
    .description("create a key; it is printed once")
    .option("--tenant <t>", "the tenant it acts for")
    .option("--scopes <s1,s2,...>", "what it may do (see jetshard keys --help)")
    .option("--name <label>", "a label")
    .option("--json", "print the key and its record as one JSON document")
    .action(async (opts: { tenant?: string; scopes?: string; name?: string; json?: boolean }) => (await import("./keys.js")).keysCreate(opts));
  keys
    .command("list")
    .description("key ids, tenants, scopes, revoked or not (never the secrets)")
    .option("--json", JSON_NOTE)
    .action(async (opts: { json?: boolean }) => (await import("./keys.js")).keysList(opts));
  keys
    .command("revoke <id>")
    .description("the key stops working at once on every gateway")
    .action(async (id: string) => (await import("./keys.js")).keysRevoke(id));

  program
    .command("config")
    .description("print the effective configuration and where each value came from")
    .option("--json", JSON_NOTE)
    .addHelpText("after", "\nSources: default, file (--config or JETSHARD_CONFIG), env (JETSHARD_* variables; they override the file).")
    .action(async (opts: { json?: boolean }) => (await import("./config-cmd.js")).showConfig(opts));

  program
    .command("logs")
    .description("read (and follow) the central log of every process: gateway, workers, controller")
    .option("-f, --follow", "keep printing new records until Ctrl-C")
    .option("--job <id>", "only records about this job (every stage and retry)")
    .option("--service <s>", "only this process kind: gateway, worker or controller")
    .option("--level <level>", `this level and above: ${LOG_LEVELS.join(", ")}`)
    .option("--since <when>", "records from this long ago (90s, 15m, 2h, 1d) or since a time (2025-01-31T12:00:00Z); default all kept")
    .option("--limit <n>", "only the last n matching records (then, with -f, every new one)", int(1))
    .option("--json", "JSON lines, one record each (the default when stdout is not a terminal; pretty on one)")
    .addHelpText("after", "\nNeeds NATS admin credentials (the LOGS stream) and central logs on (JETSHARD_LOGS_STREAM, the default).")
    .action(async (opts: { follow?: boolean; job?: string; service?: string; level?: string; since?: string; limit?: number; json?: boolean }) =>
      (await import("./logs-cmd.js")).logs(opts),
    );

  return program;
}
