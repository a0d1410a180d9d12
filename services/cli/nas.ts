/**
 * `jetshard nas ...`: NAS experiments from the command line. Like the other admin commands it talks to
 * NATS directly (JETSHARD_NATS_URL), writing and watching the same KV records the gateway does, so it
 * needs no gateway; a controller (`jetshard controller`, or `jetshard up`) must be running to drive them.
 */
import { readFile } from "node:fs/promises";
import { ConfigError, loadConfig } from "#shared/config.js";
import { NasSpecError } from "#shared/nas/errors.js";
import { checkSpecLimits, parseExperimentSpec, type ExperimentSpec } from "#shared/nas/spec.js";
import { ExperimentError, NasStore } from "#shared/nas/store.js";
import { ExperimentRecordSchema, FINAL_EXPERIMENT_STATUSES, type ExperimentRecord } from "#shared/nas/wire.js";
import { connectNats, openInfra } from "#shared/nats.js";
import { parse, UsageError } from "./args.js";

export const NAS_HELP = `Usage:
  jetshard nas run <spec.json> [--detach] [--json]   start an experiment and follow its progress
  jetshard nas show <id> [--trials] [--json]         show an experiment (and its trials)
  jetshard nas list                                  list experiments
  jetshard nas stop <id>                             stop an experiment (queued trials are kept)
  jetshard nas resume <id> [--max-trials N] [--max-failed-trials N] [--concurrency N]

Talks to NATS directly (JETSHARD_NATS_URL, default nats://127.0.0.1:4222); a controller must be running
(jetshard controller, or jetshard up). "run" prints the experiment id on stdout, then a live progress bar
on stderr (plain progress lines when stderr is not a terminal), and exits when the experiment ends:
0 if it completed, 1 if it failed or was stopped. Ctrl-C stops following, not the experiment.
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

async function withStore<T>(fn: (store: NasStore) => Promise<T>): Promise<T> {
  const config = loadConfig();
  const nc = await connectNats(config, "jetshard-cli").catch((err) => {
    if (err instanceof ConfigError) throw err;
    throw new UsageError(`cannot reach NATS at ${config.natsServers.join(",")} (set JETSHARD_NATS_URL): ${err.message}`);
  });
  try {
    return await fn(await NasStore.open(await openInfra(nc, config)));
  } catch (err) {
    if (err instanceof ExperimentError) throw new UsageError(err.message);
    throw err;
  } finally {
    await nc.drain().catch(() => undefined);
  }
}

const num = (x: number) => (Number.isInteger(x) ? String(x) : x.toPrecision(5));

function bestText(r: ExperimentRecord): string {
  const spec = r.spec as unknown as ExperimentSpec;
  return r.best ? `best ${spec.objective.metric}=${num(r.best.value)} (${r.best.trialId})` : "best -";
}

function progressLine(r: ExperimentRecord, elapsedMs: number, width = 24): string {
  const p = r.progress;
  const done = Math.min(width, Math.round((p.finished / Math.max(1, p.maxTrials)) * width));
  const bar = "#".repeat(done) + "-".repeat(width - done);
  const stopped = p.early_stopped ? ` early-stopped ${p.early_stopped}` : "";
  return `[${bar}] ${p.finished}/${p.maxTrials} ${r.status}  ok ${p.succeeded} failed ${p.failed}${stopped} running ${p.running}  ${bestText(r)}  ${(elapsedMs / 1000).toFixed(1)}s`;
}

function summaryText(r: ExperimentRecord): string {
  const spec = r.spec as unknown as ExperimentSpec;
  const p = r.progress;
  const lines = [
    `experiment ${r.id} (${r.name}): ${r.status}${r.reason ? ` - ${r.reason}` : ""}`,
    `  family ${spec.family}, strategy ${spec.strategy.name}, objective ${spec.objective.direction} ${spec.objective.metric}, seed ${spec.seed ?? "-"}`,
    `  trials ${p.finished}/${p.maxTrials} finished: ${p.succeeded} succeeded, ${p.failed} failed, ${p.early_stopped} early-stopped; ${p.running} running, ${p.queued} queued`,
  ];
  if (r.best) lines.push(`  best ${r.best.trialId}: ${Object.entries(r.best.metrics).map(([k, v]) => `${k}=${num(v)}`).join(" ")}`, `    point ${JSON.stringify(r.best.point)}`);
  if (r.pareto.front.length > 1) {
    lines.push(`  pareto front over ${r.pareto.objectives.map((o) => `${o.direction === "maximize" ? "max" : "min"} ${o.metric}`).join(", ")}:`);
    for (const f of r.pareto.front) lines.push(`    ${f.trialId}: ${Object.entries(f.metrics).map(([k, v]) => `${k}=${num(v)}`).join(" ")}`);
  }
  if (r.devices.length) lines.push(`  measured on: ${r.devices.join("; ")}`);
  return lines.join("\n");
}

async function readSpec(file: string): Promise<ExperimentSpec> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new UsageError(`cannot read ${file}: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`${file} is not valid JSON: ${(err as Error).message}`);
  }
  try {
    return parseExperimentSpec(json, loadConfig().limits);
  } catch (err) {
    if (err instanceof NasSpecError) throw new UsageError(`${file}: ${err.message}`);
    throw err;
  }
}

/** Follows an experiment until it ends (or Ctrl-C); returns its last record. */
async function follow(store: NasStore, id: string, opts: { json: boolean }): Promise<ExperimentRecord | null> {
  const tty = process.stderr.isTTY === true && !opts.json;
  const t0 = Date.now();
  const watch = await store.experiments.watch({ key: id });
  let last: ExperimentRecord | null = null;
  let lastLine = "";
  let warned = false;
  const hint = setTimeout(() => {
    if (last?.status === "queued" && !warned) {
      warned = true;
      process.stderr.write(`${tty ? "\n" : ""}still queued: is a controller running? (jetshard controller, or jetshard up)\n`);
    }
  }, 5_000);
  const onSigint = () => watch.stop();
  process.once("SIGINT", onSigint);
  const redraw = tty ? setInterval(() => last && process.stderr.write(`\r\x1b[2K${progressLine(last, Date.now() - t0)}`), 500) : null;
  try {
    for await (const e of watch) {
      if (e.operation !== "PUT" || e.value.length === 0) break;
      const r = ExperimentRecordSchema.safeParse(e.json());
      if (!r.success) continue;
      last = r.data;
      if (tty) process.stderr.write(`\r\x1b[2K${progressLine(last, Date.now() - t0)}`);
      else {
        const line = `progress ${last.progress.finished}/${last.progress.maxTrials} status=${last.status} succeeded=${last.progress.succeeded} failed=${last.progress.failed} early_stopped=${last.progress.early_stopped} running=${last.progress.running} ${bestText(last).replace(" ", "=")}`;
        if (line !== lastLine && !opts.json) process.stderr.write(line + "\n");
        lastLine = line;
      }
      if (FINAL_EXPERIMENT_STATUSES.includes(last.status)) break;
    }
  } finally {
    clearTimeout(hint);
    if (redraw) clearInterval(redraw);
    process.off("SIGINT", onSigint);
    watch.stop();
    if (tty) process.stderr.write("\n");
  }
  if (last && !FINAL_EXPERIMENT_STATUSES.includes(last.status)) process.stderr.write(`stopped following; the experiment goes on: jetshard nas show ${id}\n`);
  return last;
}

export async function cmdNas(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv;
  if (!sub || sub === "--help" || sub === "-h" || sub === "help") {
    process.stdout.write(NAS_HELP + "\n");
    return;
  }
  const { values, positionals } = parse(rest, {
    detach: { type: "boolean" },
    json: { type: "boolean" },
    trials: { type: "boolean" },
    "max-trials": { type: "string" },
    "max-failed-trials": { type: "string" },
    concurrency: { type: "string" },
  });
  if (values.help) {
    process.stdout.write(NAS_HELP + "\n");
    return;
  }
  const arg = positionals[0];
  switch (sub) {
    case "run": {
      if (!arg) throw new UsageError("nas run needs <spec.json>");
      const spec = await readSpec(arg);
      await withStore(async (store) => {
        const rec = await store.createExperiment(spec);
        process.stdout.write(`${rec.id}\n`);
        process.stderr.write(`experiment ${rec.id} queued (${spec.maxTrials} trials, ${spec.family}/${spec.strategy.name})\n`);
        if (values.detach) return;
        const last = await follow(store, rec.id, { json: values.json === true });
        if (!last) return;
        process.stdout.write((values.json ? JSON.stringify(last, null, 2) : summaryText(last)) + "\n");
        if (last.status === "failed" || last.status === "stopped") process.exitCode = 1;
      });
      return;
    }
    case "show": {
      if (!arg) throw new UsageError("nas show needs <id>");
      await withStore(async (store) => {
        const e = await store.getExperiment(arg);
        if (!e) throw new UsageError(`experiment "${arg}" not found`);
        const trials = values.trials ? (await store.listTrials(arg)).map((t) => t.value) : undefined;
        if (values.json) {
          process.stdout.write(JSON.stringify(trials ? { ...e.value, trials } : e.value, null, 2) + "\n");
          return;
        }
        process.stdout.write(summaryText(e.value) + "\n");
        for (const t of trials ?? []) {
          const metrics = Object.entries(t.metrics ?? {}).map(([k, v]) => `${k}=${num(v)}`).join(" ");
          process.stdout.write(`  ${t.trialId} ${t.status.padEnd(13)} ${metrics}${t.error ? `  error: ${t.error}` : ""}  ${JSON.stringify(t.point)}\n`);
        }
      });
      return;
    }
    case "list":
      await withStore(async (store) => {
        const all = await store.listExperiments();
        for (const r of all) process.stdout.write(`${r.id}\t${r.status}\t${r.progress.finished}/${r.progress.maxTrials}\t${bestText(r)}\n`);
        if (all.length === 0) process.stdout.write("(no experiments)\n");
      });
      return;
    case "stop":
      if (!arg) throw new UsageError("nas stop needs <id>");
      await withStore(async (store) => process.stdout.write(`${arg}: ${(await store.stopExperiment(arg)).status}\n`));
      return;
    case "resume": {
      if (!arg) throw new UsageError("nas resume needs <id>");
      const int = (flag: string, v: string | undefined, min: number) => {
        if (v === undefined) return undefined;
        const n = Number(v);
        if (!Number.isInteger(n) || n < min) throw new UsageError(`--${flag} must be an integer >= ${min}`);
        return n;
      };
      const changes = {
        maxTrials: int("max-trials", values["max-trials"], 1),
        maxFailedTrials: int("max-failed-trials", values["max-failed-trials"], 0),
        concurrency: int("concurrency", values.concurrency, 1),
      };
      try {
        checkSpecLimits(changes, loadConfig().limits);
      } catch (err) {
        if (err instanceof NasSpecError) throw new UsageError(err.message);
        throw err;
      }
      await withStore(async (store) => process.stdout.write(`${arg}: ${(await store.resumeExperiment(arg, changes)).status}\n`));
      return;
    }
    default:
      throw new UsageError(`unknown nas command "${sub}" (run, show, list, stop, resume)`);
  }
}
