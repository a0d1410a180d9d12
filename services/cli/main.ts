/**
 * The `jetshard` command. Each subcommand has --help. Admin commands (model, infer, workers) talk to NATS
 * directly (JETSHARD_NATS_URL), so they work without a gateway.
 */
import { readFile } from "node:fs/promises";
import { JetshardClient } from "#shared/client.js";
import { loadConfig, ConfigError } from "#shared/config.js";
import { JobError } from "#shared/errors.js";
import { addModel, deleteModel, listModels } from "#shared/model-repo.js";
import { NatsPermissionError, connectNats, openInfra, type Infra } from "#shared/nats.js";
import { typedArrayToJson, type Tensor } from "#shared/tensor.js";
import { tensorsFromJson } from "#shared/validate.js";
import { InferRequestSchema, WorkerInfoSchema, isLive, zodMessage } from "#shared/wire.js";
import { parse, UsageError } from "./args.js";
import { localNatsEnv } from "./credentials.js";

const HELP: Record<string, string> = {
  main: `jetshard: ML jobs across a fleet of machines, on NATS JetStream

Usage: jetshard <command> [options]

Commands:
  up                     run the whole stack locally (nats-server, gateway, workers, demo model)
  gateway                run the HTTP gateway (Open Inference Protocol v2 + /v1 API)
  worker                 run a stateless worker
  controller             run the NAS controller (experiments, trials, resume)
  nas run|show           run or inspect a neural architecture search experiment
  model add|list|rm      manage the model repository
  infer <model>          run one inference through NATS
  workers                list live workers
  device                 show the device a worker here would use, proven by a tiny model run
  jobs list|show|cancel  inspect and cancel async jobs
  dlq list|replay|rm     inspect, replay and delete dead letters
  keys create|list|revoke  API keys (tenants, scopes) for the HTTP gateway

Every command reads JETSHARD_* environment variables (see README). Use "jetshard <command> --help".`,
  up: `Usage: jetshard up

Starts nats-server from nats.conf (unless JETSHARD_NATS_URL is set), the gateway on JETSHARD_PORT,
JETSHARD_WORKERS workers, seeds the demo models, and prints a curl to try. Ctrl-C stops everything it started.
nats-server runs with the users of nats-auth.conf; their passwords are generated once into
$JETSHARD_DATA_DIR/nats-credentials.json (mode 0600), and other jetshard commands run on this machine without
NATS credentials use them.`,
  gateway: `Usage: jetshard gateway

Runs the HTTP gateway on JETSHARD_HOST:JETSHARD_PORT, connected to JETSHARD_NATS_URL.`,
  worker: `Usage: jetshard worker

Runs a worker. It serves every model in the repository, or those in JETSHARD_SERVE (comma-separated).
Concurrency: JETSHARD_WORKER_CONCURRENCY. Device: JETSHARD_DEVICE=auto|cpu|cuda. SIGTERM drains it.`,
  model: `Usage:
  jetshard model add <file.onnx> --name <name>   store a model (a new version if the name exists)
      [--shards K | --max-shard-bytes N] [--balance bytes|flops]   split it into a K-stage pipeline
  jetshard model list                            list models and versions
  jetshard model rm <name>                       delete a model and all its versions`,
  infer: `Usage: jetshard infer <model> (--json '<v2 request>' | --json @request.json | --input name:DATATYPE:1x4:1,2,3,4 ...)
        [--version N] [--output name ...] [--timeout-ms 30000]

Publishes one job straight to JetStream and prints the v2 JSON response.`,
  jobs: `Usage:
  jetshard jobs list [--status queued|running|succeeded|failed|cancelled] [--model M] [--limit N]
  jetshard jobs show <id>        the job's record (status, attempts, timestamps, error)
  jetshard jobs cancel <id>      a queued job never runs; a running one ends cancelled`,
  dlq: `Usage:
  jetshard dlq list [--model M]  dead-lettered jobs with their error and attempts
  jetshard dlq replay <id>       publish the job again (same id, fresh attempts)
  jetshard dlq rm <id>           delete a dead letter`,
  device: `Usage: jetshard device

Detects what a worker on this host runs on (CUDA when ONNX Runtime's CUDA provider loads and nvidia-smi reports a
GPU; CPU otherwise, with the reason) and runs a tiny model there. JETSHARD_DEVICE=auto|cpu|cuda.`,
  controller: `Usage: jetshard controller

Runs the NAS controller: drives experiments, holds a lease per experiment in KV (JETSHARD_CONTROLLER_LEASE_MS)
so two controllers never drive the same one, and resumes experiments whose controller died.`,
  workers: `Usage: jetshard workers

Lists live workers: id, device, models served, jobs in flight.`,
};

function help(cmd: string): void {
  process.stdout.write(HELP[cmd] + "\n");
}

async function withInfra<T>(fn: (infra: Infra) => Promise<T>): Promise<T> {
  const config = loadConfig();
  const nc = await connectNats(config, "jetshard-cli").catch((err) => {
    if (err instanceof ConfigError) throw err;
    throw new UsageError(`cannot reach NATS at ${config.natsServers.join(",")} (set JETSHARD_NATS_URL): ${err.message}`);
  });
  try {
    return await fn(await openInfra(nc, config));
  } finally {
    await nc.drain();
  }
}

function parseInputFlag(s: string): Tensor {
  const [name, datatype, shape, data] = s.split(":");
  if (!name || !datatype || !shape || data === undefined) throw new UsageError(`--input ${s}: expected name:DATATYPE:1x4:1,2,3,4`);
  const dims = shape.split("x").map(Number);
  const values = data.split(",").map((v) => (v === "true" ? true : v === "false" ? false : Number(v)));
  const req = InferRequestSchema.parse({ inputs: [{ name, datatype, shape: dims, data: values }] });
  return tensorsFromJson(req)[0]!;
}

async function cmdModel(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv;
  if (!sub || sub === "--help" || sub === "-h") return help("model");
  const { values, positionals } = parse(rest, { name: { type: "string" }, shards: { type: "string" }, "max-shard-bytes": { type: "string" }, balance: { type: "string" } });
  if (values.help) return help("model");
  if (sub === "add") {
    const file = positionals[0];
    if (!file || !values.name) throw new UsageError("model add needs <file.onnx> and --name");
    const num = (flag: string, v: string | undefined) => {
      if (v === undefined) return undefined;
      if (!/^[0-9]+$/.test(v)) throw new UsageError(`--${flag}: "${v}" is not a positive integer`);
      return Number(v);
    };
    const balance = values.balance;
    if (balance !== undefined && balance !== "bytes" && balance !== "flops") throw new UsageError(`--balance: use bytes or flops`);
    const bytes = new Uint8Array(await readFile(file));
    const mv = await withInfra((infra) =>
      addModel(infra, values.name!, bytes, { shards: num("shards", values.shards), maxShardBytes: num("max-shard-bytes", values["max-shard-bytes"]), balance }),
    );
    console.log(JSON.stringify({ name: values.name, version: mv.version, inputs: mv.inputs, outputs: mv.outputs, shards: mv.shards.length, ...(mv.note ? { note: mv.note } : {}) }));
  } else if (sub === "list") {
    const models = await withInfra(listModels);
    for (const m of models) console.log(`${m.name}\tlatest=${m.latest}\tversions=${m.versions.map((v) => v.version).join(",")}`);
    if (models.length === 0) console.log("(no models)");
  } else if (sub === "rm") {
    const name = positionals[0];
    if (!name) throw new UsageError("model rm needs <name>");
    const ok = await withInfra((infra) => deleteModel(infra, name));
    if (!ok) throw new UsageError(`model "${name}" not found`);
    console.log(`deleted ${name}`);
  } else {
    throw new UsageError(`unknown model command "${sub}" (add, list, rm)`);
  }
}

async function cmdInfer(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, {
    json: { type: "string" },
    input: { type: "string", multiple: true },
    output: { type: "string", multiple: true },
    version: { type: "string" },
    "timeout-ms": { type: "string" },
  });
  if (values.help) return help("infer");
  const model = positionals[0];
  if (!model) throw new UsageError("infer needs <model>");
  let inputs: Tensor[];
  let requestId: string | undefined;
  let outputs = values.output;
  if (values.json) {
    const text = values.json.startsWith("@") ? await readFile(values.json.slice(1), "utf8") : values.json;
    const parsed = InferRequestSchema.safeParse(JSON.parse(text));
    if (!parsed.success) throw new UsageError(zodMessage(parsed.error, "--json"));
    inputs = tensorsFromJson(parsed.data);
    requestId = parsed.data.id;
    outputs ??= parsed.data.outputs?.map((o) => o.name);
  } else if (values.input?.length) {
    inputs = values.input.map(parseInputFlag);
  } else {
    throw new UsageError("infer needs --json or --input");
  }
  const config = loadConfig();
  const client = await JetshardClient.connect(config.natsServers, config.nats);
  try {
    const r = await client.infer(model, inputs, {
      outputs,
      requestId,
      version: values.version ? Number(values.version) : undefined,
      timeoutMs: values["timeout-ms"] ? Number(values["timeout-ms"]) : config.requestTimeoutMs,
    });
    console.log(
      JSON.stringify({
        model_name: r.model,
        model_version: String(r.version ?? ""),
        id: r.requestId,
        parameters: { job_id: r.id, worker: r.worker },
        outputs: r.outputs.map((t) => ({ name: t.name, datatype: t.datatype, shape: t.shape, data: typedArrayToJson(t.datatype, t.data) })),
      }),
    );
  } finally {
    await client.close();
  }
}

async function cmdWorkers(argv: string[]): Promise<void> {
  const { values } = parse(argv, {});
  if (values.help) return help("workers");
  const config = loadConfig();
  const rows = await withInfra(async (infra) => {
    const out = [];
    for await (const k of await infra.workers.keys()) {
      const e = await infra.workers.get(k);
      if (e?.operation === "PUT" && e.value.length) {
        const w = WorkerInfoSchema.parse(e.json());
        if (isLive(w, config.workerTtlMs)) out.push(w);
      }
    }
    return out;
  });
  for (const w of rows) console.log(`${w.id}\t${w.device.kind}:${w.device.name}\tin-flight=${w.inFlight}\tprocessed=${w.processed}\tmodels=${w.models.join(",")}`);
  if (rows.length === 0) console.log("(no live workers)");
}

async function cmdJobs(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv;
  if (!sub || sub === "--help" || sub === "-h") return help("jobs");
  const { values, positionals } = parse(rest, { status: { type: "string" }, model: { type: "string" }, limit: { type: "string" } });
  if (values.help) return help("jobs");
  const { listJobs, getJob, cancelJob, JOB_STATUSES } = await import("#shared/jobs.js");
  if (sub === "list") {
    if (values.status && !(JOB_STATUSES as readonly string[]).includes(values.status)) throw new UsageError(`--status: use one of ${JOB_STATUSES.join(", ")}`);
    const jobs = await withInfra((infra) => listJobs(infra, { status: values.status as never, model: values.model, limit: values.limit ? Number(values.limit) : 50 }));
    for (const j of jobs) console.log(`${j.id}\t${j.model}\t${j.status}\tattempts=${j.attempts}\t${new Date(j.queuedAt).toISOString()}${j.error ? `\t${j.error.code}: ${j.error.message}` : ""}`);
    if (jobs.length === 0) console.log("(no jobs)");
  } else if (sub === "show") {
    const id = positionals[0];
    if (!id) throw new UsageError("jobs show needs <id>");
    const e = await withInfra((infra) => getJob(infra, id));
    if (!e) throw new UsageError(`job "${id}" not found`);
    console.log(JSON.stringify(e.record, null, 2));
  } else if (sub === "cancel") {
    const id = positionals[0];
    if (!id) throw new UsageError("jobs cancel needs <id>");
    const was = await withInfra((infra) => cancelJob(infra, id));
    console.log(`cancelled ${id} (was ${was})`);
  } else {
    throw new UsageError(`unknown jobs command "${sub}" (list, show, cancel)`);
  }
}

async function cmdDlq(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv;
  if (!sub || sub === "--help" || sub === "-h") return help("dlq");
  const { values, positionals } = parse(rest, { model: { type: "string" } });
  if (values.help) return help("dlq");
  const { listDeadLetters, deleteDeadLetter } = await import("#shared/dlq.js");
  const { replayJob } = await import("#shared/jobs.js");
  if (sub === "list") {
    const dl = await withInfra((infra) => listDeadLetters(infra, { model: values.model }));
    for (const d of dl) console.log(`${d.id}\t${d.subject}\t${d.code}\tattempts=${d.attempts}\t${d.failedAt}\t${d.error}`);
    if (dl.length === 0) console.log("(no dead letters)");
  } else if (sub === "replay" || sub === "rm") {
    const id = positionals[0];
    if (!id) throw new UsageError(`dlq ${sub} needs <id>`);
    if (sub === "replay") {
      await withInfra((infra) => replayJob(infra, id));
      console.log(`replayed ${id}`);
    } else {
      if (!(await withInfra((infra) => deleteDeadLetter(infra, id)))) throw new UsageError(`dead letter "${id}" not found`);
      console.log(`deleted ${id}`);
    }
  } else {
    throw new UsageError(`unknown dlq command "${sub}" (list, replay, rm)`);
  }
}

export async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === "--help" || cmd === "-h" || cmd === "help") return help("main");
  const wantsHelp = rest.includes("--help") || rest.includes("-h");
  if (cmd !== "up" && !wantsHelp) {
    // next to a local `jetshard up`, connect with its generated credentials unless others are configured
    const role = cmd === "gateway" || cmd === "worker" || cmd === "controller" ? cmd : "admin";
    Object.assign(process.env, localNatsEnv(process.env, role));
  }
  switch (cmd) {
    case "up":
      if (wantsHelp) return help("up");
      return (await import("./up.js")).runUp();
    case "gateway":
      if (wantsHelp) return help("gateway");
      return (await import("../gateway/main.js")).runGateway();
    case "worker":
      if (wantsHelp) return help("worker");
      return (await import("../worker/main.js")).runWorker();
    case "controller":
      if (wantsHelp) return help("controller");
      return (await import("../controller/main.js")).runController();
    case "nas": {
      const nas = await import("./nas.js");
      if (rest.length === 0 || rest[0] === "--help" || rest[0] === "-h") return void process.stdout.write(nas.NAS_HELP + "\n");
      return nas.cmdNas(rest);
    }
    case "model":
      return cmdModel(rest);
    case "infer":
      return cmdInfer(rest);
    case "workers":
      return cmdWorkers(rest);
    case "device": {
      if (wantsHelp) return help("device");
      const { checkDevice } = await import("../worker/device.js");
      const { createLogger } = await import("#shared/log.js");
      const config = loadConfig();
      console.log(JSON.stringify(await checkDevice(config.device, createLogger({ level: "warn", name: "device" })), null, 2));
      return;
    }
    case "jobs":
      return cmdJobs(rest);
    case "dlq":
      return cmdDlq(rest);
    case "keys":
      return (await import("./keys.js")).cmdKeys(rest, withInfra);
    default:
      throw new UsageError(`unknown command "${cmd}"; see jetshard --help`);
  }
}

main(process.argv.slice(2)).catch((err) => {
  if (err instanceof UsageError || err instanceof ConfigError || err instanceof JobError || err instanceof NatsPermissionError) {
    process.stderr.write(`jetshard: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`jetshard: ${err?.stack ?? err}\n`);
  process.exit(1);
});

