/**
 * `jetshard nas ...`: NAS experiments from the command line. Like the other admin commands it talks to
 * NATS directly (JETSHARD_NATS_URL), writing and watching the same KV records the gateway does, so it
 * needs no gateway; a controller (`jetshard controller`, or `jetshard up`) must be running to drive them.
 */
import { readFile } from "node:fs/promises";
import { loadConfig } from "#shared/config.js";
import { NasSpecError } from "#shared/nas/errors.js";
import { checkSpecLimits, parseExperimentSpec, type ExperimentSpec } from "#shared/nas/spec.js";
import { ExperimentError, NasStore } from "#shared/nas/store.js";
import { ExperimentRecordSchema, FINAL_EXPERIMENT_STATUSES, type ExperimentRecord } from "#shared/nas/wire.js";
import { printJson, printLines, withInfra } from "./connect.js";
import { EXIT, FailedError, NotFoundError, UsageError } from "./errors.js";
import { Progress, bar } from "./progress.js";

export { NAS_HELP } from "./help.js";

async function withStore<T>(fn: (store: NasStore) => Promise<T>): Promise<T> {
  try {
    return await withInfra(async (infra) => fn(await NasStore.open(infra)));
  } catch (err) {
    if (err instanceof ExperimentError) throw err.status === 404 ? new NotFoundError(err.message) : new FailedError(err.message);
    throw err;
  }
}

const num = (x: number) => (Number.isInteger(x) ? String(x) : x.toPrecision(5));

function bestText(r: ExperimentRecord): string {
  const spec = r.spec as unknown as ExperimentSpec;
  return r.best ? `best ${spec.objective.metric}=${num(r.best.value)} (${r.best.trialId})` : "best -";
}

function progressLine(r: ExperimentRecord, elapsedMs: number): string {
  const p = r.progress;
  const stopped = p.early_stopped ? ` early-stopped ${p.early_stopped}` : "";
  return `${bar(p.finished / Math.max(1, p.maxTrials))} ${p.finished}/${p.maxTrials} ${r.status}  ok ${p.succeeded} failed ${p.failed}${stopped} running ${p.running}  ${bestText(r)}  ${(elapsedMs / 1000).toFixed(1)}s`;
}

function plainLine(r: ExperimentRecord): string {
  const p = r.progress;
  return `progress ${p.finished}/${p.maxTrials} status=${r.status} succeeded=${p.succeeded} failed=${p.failed} early_stopped=${p.early_stopped} running=${p.running} ${bestText(r).replace(" ", "=")}`;
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

/** Follows an experiment until it ends (or Ctrl-C), drawing its progress on stderr; returns its last record. */
async function follow(store: NasStore, id: string): Promise<ExperimentRecord | null> {
  const progress = new Progress();
  const t0 = Date.now();
  const watch = await store.experiments.watch({ key: id });
  let last: ExperimentRecord | null = null;
  const hint = setTimeout(() => {
    if (last?.status === "queued") progress.note("still queued: is a controller running? (jetshard controller, or jetshard up)");
  }, 5_000);
  const onSigint = () => watch.stop();
  process.once("SIGINT", onSigint);
  // the elapsed time keeps moving between updates on a terminal
  const ticker = progress.tty ? setInterval(() => last && progress.update(progressLine(last, Date.now() - t0), null), 500) : null;
  try {
    for await (const e of watch) {
      if (e.operation !== "PUT" || e.value.length === 0) break;
      const r = ExperimentRecordSchema.safeParse(e.json());
      if (!r.success) continue;
      last = r.data;
      progress.update(progressLine(last, Date.now() - t0), plainLine(last));
      if (FINAL_EXPERIMENT_STATUSES.includes(last.status)) break;
    }
  } finally {
    clearTimeout(hint);
    if (ticker) clearInterval(ticker);
    process.off("SIGINT", onSigint);
    watch.stop();
    progress.end();
  }
  if (last && !FINAL_EXPERIMENT_STATUSES.includes(last.status)) process.stderr.write(`stopped following; the experiment goes on: jetshard nas show ${id}\n`);
  return last;
}

/** `jetshard nas run`: exits 1 (via exitCode) when the experiment failed or was stopped. */
export async function nasRun(file: string, opts: { detach?: boolean; json?: boolean }): Promise<void> {
  const spec = await readSpec(file);
  await withStore(async (store) => {
    const rec = await store.createExperiment(spec);
    if (!opts.json) process.stdout.write(`${rec.id}\n`);
    process.stderr.write(`experiment ${rec.id} queued (${spec.maxTrials} trials, ${spec.family}/${spec.strategy.name})\n`);
    if (opts.detach) {
      if (opts.json) printJson(rec, true);
      return;
    }
    const last = await follow(store, rec.id);
    if (!last) return;
    process.stdout.write((opts.json ? JSON.stringify(last, null, 2) : summaryText(last)) + "\n");
    if (last.status === "failed" || last.status === "stopped") process.exitCode = EXIT.failure;
  });
}

/** `jetshard nas show`. */
export async function nasShow(id: string, opts: { trials?: boolean; json?: boolean }): Promise<void> {
  await withStore(async (store) => {
    const e = await store.getExperiment(id);
    if (!e) throw new NotFoundError(`experiment "${id}" not found`);
    const trials = opts.trials ? (await store.listTrials(id)).map((t) => t.value) : undefined;
    if (opts.json) return printJson(trials ? { ...e.value, trials } : e.value, true);
    process.stdout.write(summaryText(e.value) + "\n");
    for (const t of trials ?? []) {
      const metrics = Object.entries(t.metrics ?? {}).map(([k, v]) => `${k}=${num(v)}`).join(" ");
      process.stdout.write(`  ${t.trialId} ${t.status.padEnd(13)} ${metrics}${t.error ? `  error: ${t.error}` : ""}  ${JSON.stringify(t.point)}\n`);
    }
  });
}

/** `jetshard nas list`. */
export async function nasList(opts: { json?: boolean }): Promise<void> {
  await withStore(async (store) => {
    const all = await store.listExperiments();
    if (opts.json) return printJson({ experiments: all });
    printLines(all.map((r) => `${r.id}\t${r.status}\t${r.progress.finished}/${r.progress.maxTrials}\t${bestText(r)}`), "(no experiments)");
  });
}

/** `jetshard nas stop`. */
export async function nasStop(id: string): Promise<void> {
  await withStore(async (store) => process.stdout.write(`${id}: ${(await store.stopExperiment(id)).status}\n`));
}

/** `jetshard nas resume`: the changes are checked against the operator's limits first. */
export async function nasResume(id: string, changes: { maxTrials?: number; maxFailedTrials?: number; concurrency?: number }): Promise<void> {
  try {
    checkSpecLimits(changes, loadConfig().limits);
  } catch (err) {
    if (err instanceof NasSpecError) throw new UsageError(err.message);
    throw err;
  }
  await withStore(async (store) => process.stdout.write(`${id}: ${(await store.resumeExperiment(id, changes)).status}\n`));
}
