/**
 * Read and admin commands on the running fleet, straight over NATS: `jetshard workers`, `jobs`, `dlq`, `device`.
 */
import { loadConfig } from "#shared/config.js";
import { JobError } from "#shared/errors.js";
import type { Infra } from "#shared/nats.js";
import { WorkerInfoSchema, isLive, type WorkerInfo } from "#shared/wire.js";
import { printJson, printLines, withInfra } from "./connect.js";
import { NotFoundError, UsageError } from "./errors.js";
import { formatBytes } from "./progress.js";

/** Live workers in the registry. */
async function liveWorkers(infra: Infra, ttlMs: number): Promise<WorkerInfo[]> {
  const out: WorkerInfo[] = [];
  for await (const k of await infra.workers.keys()) {
    const e = await infra.workers.get(k);
    if (e?.operation !== "PUT" || !e.value.length) continue;
    const w = WorkerInfoSchema.safeParse(e.json());
    if (w.success && isLive(w.data, ttlMs)) out.push(w.data);
  }
  return out.sort((a, b) => a.id.localeCompare(b.id));
}

/** The GPU a worker runs on: its bound device, or device 0 for a CUDA worker bound to none. */
function heldGpu(w: WorkerInfo) {
  if (w.device.kind !== "cuda" && w.device.gpuIndex === undefined) return undefined;
  const index = w.device.gpuIndex ?? 0;
  return { index, sample: w.resources?.gpus.find((g) => g.index === index) };
}

/** One line of `jetshard workers`: id, device (and GPU held), resources, load, models. */
export function workerLine(w: WorkerInfo): string {
  const gpu = heldGpu(w);
  const cols = [w.id, `${w.device.kind}:${w.device.name}${gpu ? ` (gpu ${gpu.index})` : ""}`];
  const r = w.resources;
  if (r) {
    cols.push(`cpu=${r.cpuPercent.toFixed(0)}%`, `rss=${formatBytes(r.rssBytes)}`);
    const s = gpu?.sample;
    if (s) {
      const mem = s.memUsedMb !== undefined && s.memTotalMb !== undefined ? ` mem=${(s.memUsedMb / 1024).toFixed(1)}/${(s.memTotalMb / 1024).toFixed(1)}GB` : "";
      cols.push(`gpu=${s.utilPercent !== undefined ? `${s.utilPercent.toFixed(0)}%` : "?"}${mem}`);
    }
  }
  cols.push(`in-flight=${w.inFlight}`, `processed=${w.processed}`, `models=${w.models.join(",")}`);
  return cols.join("\t");
}

/** `jetshard workers`. */
export async function workers(opts: { json?: boolean }): Promise<void> {
  const config = loadConfig();
  const rows = await withInfra((infra) => liveWorkers(infra, config.workerTtlMs));
  if (opts.json) return printJson({ workers: rows });
  printLines(rows.map(workerLine), "(no live workers)");
}

/** `jetshard jobs list`. */
export async function jobsList(opts: { status?: string; model?: string; limit: number; json?: boolean }): Promise<void> {
  const { listJobs, JOB_STATUSES } = await import("#shared/jobs.js");
  if (opts.status && !(JOB_STATUSES as readonly string[]).includes(opts.status)) throw new UsageError(`--status: use one of ${JOB_STATUSES.join(", ")}`);
  const jobs = await withInfra((infra) => listJobs(infra, { status: opts.status as never, model: opts.model, limit: opts.limit }));
  if (opts.json) return printJson({ jobs });
  printLines(
    jobs.map((j) => `${j.id}\t${j.model}\t${j.status}\tattempts=${j.attempts}\t${new Date(j.queuedAt).toISOString()}${j.error ? `\t${j.error.code}: ${j.error.message}` : ""}`),
    "(no jobs)",
  );
}

/** `jetshard jobs show`: the record as JSON (indented unless --json). */
export async function jobsShow(id: string, opts: { json?: boolean }): Promise<void> {
  const { getJob } = await import("#shared/jobs.js");
  const e = await withInfra((infra) => getJob(infra, id));
  if (!e) throw new NotFoundError(`job "${id}" not found`);
  printJson(e.record, !opts.json);
}

/** `jetshard jobs cancel`. */
export async function jobsCancel(id: string): Promise<void> {
  const { cancelJob } = await import("#shared/jobs.js");
  const was = await withInfra((infra) => cancelJob(infra, id)).catch((err) => {
    throw err instanceof JobError && err.code === "JOB_NOT_FOUND" ? new NotFoundError(err.message) : err;
  });
  process.stdout.write(`cancelled ${id} (was ${was})\n`);
}

/** `jetshard dlq list`. */
export async function dlqList(opts: { model?: string; json?: boolean }): Promise<void> {
  const { listDeadLetters } = await import("#shared/dlq.js");
  const dl = await withInfra((infra) => listDeadLetters(infra, { model: opts.model }));
  if (opts.json) return printJson({ deadLetters: dl });
  printLines(dl.map((d) => `${d.id}\t${d.subject}\t${d.code}\tattempts=${d.attempts}\t${d.failedAt}\t${d.error}`), "(no dead letters)");
}

/** `jetshard dlq replay`. */
export async function dlqReplay(id: string): Promise<void> {
  const { replayJob } = await import("#shared/jobs.js");
  await withInfra((infra) => replayJob(infra, id)).catch((err) => {
    throw err instanceof JobError && err.code === "JOB_NOT_FOUND" ? new NotFoundError(err.message) : err;
  });
  process.stdout.write(`replayed ${id}\n`);
}

/** `jetshard dlq rm`. */
export async function dlqRm(id: string): Promise<void> {
  const { deleteDeadLetter } = await import("#shared/dlq.js");
  if (!(await withInfra((infra) => deleteDeadLetter(infra, id)))) throw new NotFoundError(`dead letter "${id}" not found`);
  process.stdout.write(`deleted ${id}\n`);
}

/** `jetshard device`: what a worker here would run on, proven by a tiny model run. */
export async function device(opts: { json?: boolean }): Promise<void> {
  const { checkDevice } = await import("../worker/device.js");
  const { createLogger } = await import("#shared/log.js");
  const config = loadConfig();
  printJson(await checkDevice(config.device, createLogger({ level: "warn", name: "device" })), !opts.json);
}
