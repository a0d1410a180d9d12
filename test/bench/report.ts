/**
 * The benchmark's results: the rows measured, the issue's targets checked against them, and their rendering as
 * Markdown (printed and written) and JSON under bench-results/.
 */
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import type { LogSummary } from "./children.js";
import type { InProcessResult } from "./in-process.js";
import { JOB_SYSTEM_LABELS, JOB_SYSTEMS, type JobRow, type JobRun, type JobsReport } from "./jobs.js";
import type { LoadResult } from "./load.js";
import type { MachineInfo } from "./machine.js";
import type { ModelName } from "./models.js";
import { renderWire, type WireReport } from "./wire.js";

/** One HTTP configuration at one concurrency. */
export interface HttpRow {
  model: ModelName;
  /** floor: floor-server.ts, a minimal front → core NATS → ORT worker with no jetshard code (its own nats-server). */
  system: "plain" | "floor" | "jetshard";
  /** plain only: measured before the jetshard runs of this model, or after them (to show drift). */
  phase?: "before" | "after";
  /** jetshard only. */
  batching?: "off" | "on";
  /** jetshard only: shards the model was uploaded with. */
  shards?: number;
  /** jetshard only: worker processes. */
  workers?: number;
  connections: number;
  /** null when it was not measured (it failed or was skipped; see notes). */
  result: LoadResult | null;
  /** req/s over the plain server's (mean of its before and after runs) for the same model and concurrency. */
  ratio: number | null;
  notes: string[];
}

/** In-process ORT at one batch size. */
export interface InProcessRow extends InProcessResult {
  model: ModelName;
}

/** One of the issue's targets. */
export interface TargetCheck {
  target: string;
  /** What was measured, in words. */
  measured: string;
  /** null = not measured in this run. */
  met: boolean | null;
}

/** Everything one run produced; this is the JSON written to bench-results/. */
export interface Report {
  startedAt: string;
  elapsedS: number;
  /** 1-minute load average when the run ended (compare with machine.loadAvg1m at the start). */
  loadAvg1mAtEnd: number;
  /** codeFingerprint() when the run ended (compare with machine.code). */
  codeAtEnd: string;
  mode: "full" | "quick";
  /** The sections this run measured: "http" (in-process, plain server, sync infer) and/or "jobs" (job queues). */
  sections: Array<"http" | "jobs" | "wire">;
  /** What this run left out, and why. */
  skipped: string[];
  machine: MachineInfo;
  settings: Record<string, string | number>;
  inProcess: InProcessRow[];
  http: HttpRow[];
  targets: TargetCheck[];
  /** The job-queue section; null when it did not run. */
  jobs: JobsReport | null;
  /** The wire section (bytes per hop and latency per wire setting); null or absent when it did not run. */
  wire?: WireReport | null;
  /** Per jetshard stack: each worker's shards and processed/failed counts at the end of its runs. */
  deployments: Record<string, string[]>;
  /** Behaviour of jetshard noticed while setting up, outside any one measurement. */
  observations: string[];
  /** Warnings and errors each jetshard process logged, per stack ("small, 1 shard" → process → summary). */
  logs: Record<string, Record<string, LogSummary>>;
}

const findJetshard = (rows: HttpRow[], model: ModelName, c: number, batching: "off" | "on", shards = 1) =>
  rows.find((r) => r.model === model && r.connections === c && r.system === "jetshard" && r.batching === batching && r.shards === shards);

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

/** The plain server's figures for a model and concurrency: the mean of its before and after runs, or null. */
export function plainReference(rows: HttpRow[], model: ModelName, c: number): { reqPerS: number; p50Ms: number } | null {
  const rs = rows.filter((r) => r.system === "plain" && r.model === model && r.connections === c && r.result?.p50Ms != null).map((r) => r.result!);
  if (rs.length === 0) return null;
  return { reqPerS: mean(rs.map((r) => r.reqPerS)), p50Ms: mean(rs.map((r) => r.p50Ms!)) };
}

/** Sets each row's ratio to the plain server's reference at the same model and concurrency. */
export function fillRatios(rows: HttpRow[]): void {
  for (const r of rows) {
    const plain = plainReference(rows, r.model, r.connections);
    r.ratio = r.result && plain && plain.reqPerS > 0 ? r.result.reqPerS / plain.reqPerS : null;
  }
}

const cfg = (r: HttpRow) => `batching ${r.batching}, ${r.shards} shard${r.shards === 1 ? "" : "s"}`;

/** The floor system's row for a model and concurrency, when measured. */
const floorRow = (rows: HttpRow[], model: ModelName, c: number) => rows.find((r) => r.system === "floor" && r.model === model && r.connections === c && r.result);

/**
 * Issue 10's targets. The sync ones are judged on jetshard's default deployment (batching on, unsharded), with
 * the other configurations and the floor system (what any front → NATS → worker design costs on this machine)
 * beside them; the job-queue ones on no-op jobs, with raw JetStream beside them.
 */
export function checkTargets(rows: HttpRow[], inProcess: InProcessRow[], jobs: JobsReport | null): TargetCheck[] {
  const others = (model: ModelName, c: number, show: (r: HttpRow) => string) =>
    rows
      .filter((r) => r.system === "jetshard" && r.model === model && r.connections === c && r.result && !(r.batching === "on" && r.shards === 1))
      .map((r) => `${cfg(r)}: ${show(r)}`)
      .join("; ");
  const withFloor = (model: ModelName, c: number, show: (r: HttpRow) => string) => {
    const f = floorRow(rows, model, c);
    return f ? `; floor: ${show(f)}` : "";
  };
  const ratioCheck = (model: ModelName, c: number, min: number): TargetCheck => {
    const target = `${model}, c=${c}, batching on: ≥ ${min}× plain req/s`;
    const js = findJetshard(rows, model, c, "on");
    const plain = plainReference(rows, model, c);
    if (!js?.result || !plain || js.ratio === null) return { target, measured: "not measured", met: null };
    const also = others(model, c, (r) => `${fmtRatio(r.ratio)}`);
    return {
      target,
      measured: `${fmtRatio(js.ratio)} (${fmtRate(js.result.reqPerS)} vs ${fmtRate(plain.reqPerS)} req/s)${also ? `; also ${also}` : ""}${withFloor(model, c, (r) => `${fmtRatio(r.ratio)}`)}`,
      met: js.ratio >= min,
    };
  };
  const latency = (): TargetCheck => {
    const target = "small, c=1: p50 ≤ plain p50 + 0.5 ms";
    const js = findJetshard(rows, "small", 1, "on");
    const plain = plainReference(rows, "small", 1);
    if (js?.result?.p50Ms == null || !plain) return { target, measured: "not measured", met: null };
    const also = others("small", 1, (r) => `${fmtMs(r.result!.p50Ms)} ms`);
    return {
      target,
      measured: `${fmtMs(js.result.p50Ms)} ms vs ${fmtMs(plain.p50Ms)} ms (+${fmtMs(js.result.p50Ms - plain.p50Ms)} ms)${also ? `; also ${also}` : ""}${withFloor("small", 1, (r) => `${fmtMs(r.result!.p50Ms)} ms (+${fmtMs(r.result!.p50Ms! - plain.p50Ms)} ms)`)}`,
      met: js.result.p50Ms <= plain.p50Ms + 0.5,
    };
  };
  const batched = (): TargetCheck => {
    const target = "mid, c=64, batching on: ≥ 0.6 of in-process batch-32 rows/s";
    const js = findJetshard(rows, "mid", 64, "on");
    const limit = inProcess.find((r) => r.model === "mid" && r.batch === 32);
    if (!js?.result || !limit) return { target, measured: "not measured", met: null };
    const share = js.result.reqPerS / limit.rowsPerS;
    return { target, measured: `${share.toFixed(2)} (${fmtRate(js.result.reqPerS)} vs ${fmtRate(limit.rowsPerS)} rows/s)`, met: share >= 0.6 };
  };
  const jobTarget = (system: "jetshard-nats" | "jetshard-http", min: number): TargetCheck => {
    const target = `tracked async no-op jobs/s, ${system === "jetshard-nats" ? "NATS client" : "HTTP"}: ≥ ${min}× BullMQ`;
    const row = jobs?.rows.find((r) => r.system === system && r.kind === "noop");
    const raw = jobs?.rows.find((r) => r.system === "raw" && r.kind === "noop");
    if (!row?.throughput || row.ratio.jobsPerS === null) return { target, measured: "not measured", met: null };
    const rawNote = raw?.ratio.jobsPerS != null ? `; raw JetStream (publish → pull → reply, nothing tracked): ${fmtRatio(raw.ratio.jobsPerS)}` : "";
    return { target, measured: `${fmtRatio(row.ratio.jobsPerS)} (${fmtRate(row.throughput.jobsPerS)} jobs/s)${rawNote}`, met: row.ratio.jobsPerS >= min };
  };
  return [latency(), ratioCheck("small", 64, 0.6), ratioCheck("mid", 1, 0.9), batched(), jobTarget("jetshard-nats", 1.5), jobTarget("jetshard-http", 1.0)];
}

function fmtRate(v: number): string {
  return v >= 100 ? v.toFixed(0) : v.toFixed(1);
}
function fmtMs(v: number | null): string {
  if (v === null) return "–";
  return v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0);
}
function fmtRatio(v: number | null): string {
  return v === null ? "–" : `${v.toFixed(2)}×`;
}

/** A Markdown table with columns padded, so it reads in a terminal too. */
function table(head: string[], rows: string[][], right: boolean[]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => (right[i] ? c.padStart(w[i]!) : c.padEnd(w[i]!))).join(" | ")} |`;
  return [line(head), `|${w.map((n, i) => (right[i] ? `${"-".repeat(n + 1)}:` : `:${"-".repeat(n + 1)}`)).join("|")}|`, ...rows.map(line)].join("\n");
}

/** The report as Markdown: machine, settings, in-process table, HTTP table, targets, notes, logged warnings. */
export function renderMarkdown(r: Report): string {
  const m = r.machine;
  const out: string[] = [];
  out.push(`# jetshard benchmark (${r.mode}), ${r.startedAt}`, "");
  out.push(
    `Machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, ${m.os}; Node ${m.node}, nats-server ${m.natsServer}, onnxruntime-node ${m.onnxruntimeNode}, autocannon ${m.autocannon}; commit ${m.commit} (code ${m.code}); load average ${m.loadAvg1m} at start, ${r.loadAvg1mAtEnd} at end. Run took ${r.elapsedS.toFixed(0)} s.`,
    "",
  );
  if (r.codeAtEnd !== m.code) {
    out.push(`**Warning:** jetshard's code changed on disk during this run (code ${m.code} → ${r.codeAtEnd}): rows noted "code changed" measured different code from the ones before them.`, "");
  }
  const busy = Math.max(m.loadAvg1m, r.loadAvg1mAtEnd);
  if (busy > m.cores / 2) out.push(`**Warning:** the load average reached ${busy} on ${m.cores} cores: other processes were using the CPU, so these figures are less reliable than usual.`, "");
  if (Object.keys(r.settings).length) out.push(`Settings: ${Object.entries(r.settings).map(([k, v]) => `${k} ${v}`).join("; ")}.`, "");
  if (r.skipped.length) out.push(`Skipped: ${r.skipped.join("; ")}.`, "");

  if (r.sections.includes("http")) {
    out.push("## In-process ONNX Runtime (the limit)", "");
    out.push(
      table(
        ["model", "batch", "rows/s", "ms/run p50", "ms/run p99", "runs"],
        r.inProcess.map((x) => [x.model, String(x.batch), fmtRate(x.rowsPerS), fmtMs(x.p50Ms), fmtMs(x.p99Ms), String(x.runs)]),
        [false, true, true, true, true, true],
      ),
      "",
    );

    out.push("## Over HTTP (v2 JSON infer, one row per request)", "");
    const notes: string[] = [];
    const rows = r.http.map((h) => {
      const res = h.result;
      let note = "";
      if (h.notes.length) {
        const text = h.notes.join("; ");
        if (!notes.includes(text)) notes.push(text);
        note = `[${notes.indexOf(text) + 1}]`;
      }
      return [
        h.model,
        h.system === "plain" ? `plain Hono, ${h.phase}` : h.system === "floor" ? "floor: front → NATS → ORT" : "jetshard",
        h.batching ?? "–",
        h.shards === undefined ? "–" : String(h.shards),
        h.workers === undefined ? "–" : String(h.workers),
        String(h.connections),
        res ? fmtRate(res.reqPerS) : "–",
        res ? fmtMs(res.p50Ms) : "–",
        res ? fmtMs(res.p99Ms) : "–",
        res ? fmtMs(res.maxMs) : "–",
        res ? String(res.errors) : "–",
        res && h.connections > 1 ? `${res.perConnection.min}–${res.perConnection.max}` : "–",
        fmtRatio(h.ratio),
        note,
      ];
    });
    out.push(
      table(
        ["model", "system", "batching", "shards", "workers", "c", "req/s", "p50 ms", "p99 ms", "max ms", "errors", "per conn", "× plain", "note"],
        rows,
        [false, false, false, true, true, true, true, true, true, true, true, true, true, false],
      ),
      "",
    );
    if (notes.length) out.push(...notes.map((n, i) => `[${i + 1}] ${n}`), "");


    const errs = r.http.filter((h) => h.result && h.result.errors > 0);
    if (errs.length) {
      out.push("## Errors seen by the load generator", "");
      for (const h of errs) {
        const res = h.result!;
        const label = h.system === "plain" ? `${h.model} plain (${h.phase}) c=${h.connections}` : h.system === "floor" ? `${h.model} floor c=${h.connections}` : `${h.model} jetshard ${cfg(h)} c=${h.connections}`;
        const samples = Object.entries(res.errorSamples).map(([k, n]) => `${n}× ${k}`);
        out.push(`- ${label}: ${res.non2xx} non-2xx, ${res.socketErrors} socket errors (${res.timeouts} timeouts)${samples.length ? `: ${samples.join(" | ")}` : ""}`);
      }
      out.push("");
    }
  }
  if (r.jobs) renderJobs(r.jobs, out);
  if (r.targets.length) {
    out.push("## Targets (issue 10)", "");
    for (const t of r.targets) out.push(`- ${t.met === null ? "NOT MEASURED" : t.met ? "MET" : "NOT MET"}: ${t.target}: ${t.measured}`);
    out.push("");
  }
  if (r.wire) out.push(...renderWire(r.wire));

  const logged = Object.entries(r.logs).flatMap(([stack, procs]) =>
    Object.entries(procs)
      .filter(([, s]) => Object.keys(s.messages).length)
      .map(([proc, s]) => `- ${stack}, ${proc}: ${Object.entries(s.messages).map(([k, n]) => `${n}× ${k}`).join(" | ")}`),
  );
  const deployments = Object.entries(r.deployments);
  if (deployments.length) {
    out.push("## jetshard workers at the end of each deployment's runs", "");
    for (const [stack, lines] of deployments) out.push(`- ${stack}:`, ...lines.map((l) => `  - ${l}`));
    out.push("");
  }
  if (r.observations.length) out.push("## Observed while setting up", "", ...r.observations.map((o) => `- ${o}`), "");
  out.push("## Warnings and errors logged by the processes under test", "", ...(logged.length ? logged : ["none"]), "");
  if (r.sections.includes("http")) {
    out.push(
      "Columns (HTTP): req/s counts 2xx responses only; p50/p99/max are 2xx latencies seen by the load generator; errors = non-2xx + socket errors + timeouts; per conn = fewest–most responses completed by one connection (a wide spread means some callers starve); floor = floor-server.ts: a minimal Hono front sending raw FP32 bytes with one core NATS request to a minimal ORT worker process (its own nats-server, no jetshard code): the least any design with NATS between the HTTP front and the model pays on this machine; × plain = req/s over the plain server's at the same model and concurrency (the mean of its runs before and after jetshard's; their own ratios show how much the machine drifted meanwhile).",
    );
  }
  if (r.jobs) {
    out.push(
      "",
      "Columns (job queues): jobs/s = jobs completed with the right output per second, measured from the first submit to the last completion; p50/p99 = from submit to output in hand; × BullMQ = jobs/s over BullMQ's for the same job (above 1: more jobs/s than BullMQ), and one-at-a-time p50 over BullMQ's (above 1: slower than BullMQ), BullMQ's being the mean of its runs before and after the others (on its own rows: how far each was from that mean, i.e. how much the machine drifted); errors = failed, timed out or wrong output.",
    );
  }
  return out.join("\n") + "\n";
}

const jobLabel = (row: JobRow) => `${JOB_SYSTEM_LABELS[row.system]}${row.phase ? `, ${row.phase}` : ""}`;

function fmtRun(r: JobRun | null, f: (r: JobRun) => string): string {
  return r ? f(r) : "–";
}

/** The job-queue section: one row per system and job kind, then how each learns completion, then errors. */
function renderJobs(j: JobsReport, out: string[]): void {
  out.push(`## Job queues (submit → done with its output; ${j.inFlight} in flight, and one at a time)`, "");
  out.push(`Settings: ${Object.entries(j.settings).map(([k, v]) => `${k}: ${v}`).join("; ")}. Section took ${j.elapsedS.toFixed(0)} s.`, "");
  const notes: string[] = [];
  const rows = j.rows.map((row) => {
    let note = "";
    if (row.notes.length) {
      const text = row.notes.join("; ");
      if (!notes.includes(text)) notes.push(text);
      note = `[${notes.indexOf(text) + 1}]`;
    }
    const t = row.throughput;
    const s = row.sequential;
    return [
      jobLabel(row),
      row.kind,
      fmtRun(t, (x) => fmtRate(x.jobsPerS)),
      fmtRatio(row.ratio.jobsPerS),
      fmtRun(t, (x) => fmtMs(x.p50Ms)),
      fmtRun(t, (x) => fmtMs(x.p99Ms)),
      fmtRun(s, (x) => fmtMs(x.p50Ms)),
      fmtRatio(row.ratio.seqP50),
      fmtRun(s, (x) => fmtMs(x.p99Ms)),
      t || s ? String((t?.errors ?? 0) + (s?.errors ?? 0)) : "–",
      note,
    ];
  });
  out.push(
    table(
      ["system", "job", "jobs/s", "× BullMQ", "p50 ms", "p99 ms", "1-at-a-time p50 ms", "× BullMQ", "p99 ms", "errors", "note"],
      rows,
      [false, false, true, true, true, true, true, true, true, true, false],
    ),
    "",
  );
  if (notes.length) out.push(...notes.map((n, i) => `[${i + 1}] ${n}`), "");
  out.push("How each system learns that a job is done:", "", ...JOB_SYSTEMS.map((s) => `- ${JOB_SYSTEM_LABELS[s]}: ${j.completion[s]}.`), "");
  const errs = j.rows.flatMap((row) =>
    (
      [
        ["in flight", row.throughput],
        ["one at a time", row.sequential],
      ] as const
    )
      .filter(([, x]) => x && x.errors > 0)
      .map(([what, x]) => `- ${jobLabel(row)}, ${row.kind}, ${what}: ${Object.entries(x!.errorSamples).map(([k, n]) => `${n}× ${k}`).join(" | ")}`),
  );
  if (errs.length) out.push("Errors seen by the job-queue harness:", "", ...errs, "");
}

/** Writes `<timestamp>.json/.md` and `latest.json/.md` into `dir`; returns the timestamped Markdown path. */
export async function writeReport(dir: string, r: Report, markdown: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const stamp = r.startedAt.replace(/[:.]/g, "-");
  const json = JSON.stringify(r, null, 2) + "\n";
  await Promise.all([
    writeFile(path.join(dir, `${stamp}.json`), json),
    writeFile(path.join(dir, `${stamp}.md`), markdown),
    writeFile(path.join(dir, "latest.json"), json),
    writeFile(path.join(dir, "latest.md"), markdown),
  ]);
  return path.join(dir, `${stamp}.md`);
}
