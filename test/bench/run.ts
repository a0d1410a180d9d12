/**
 * `npm run bench`: measures, side by side on one machine, in-process ONNX Runtime (the limit), a plain Hono
 * server running ORT per request (the baseline), and jetshard's sync v2 infer through the gateway (batching off
 * and on, unsharded and 2 shards) at concurrency 1 and 64; then, in its job-queue section, BullMQ + Redis, raw
 * JetStream and jetshard's tracked async jobs (NATS client and HTTP). Prints the tables, checks the targets
 * and writes JSON and Markdown to bench-results/. See test/bench/README.md.
 */
import { mkdtemp } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { installCleanup, stopAll, trackDir } from "./children.js";
import { measureInProcess } from "./in-process.js";
import { DEFAULT_JOBS, runJobsSection } from "./jobs.js";
import { loadTest, type LoadResult } from "./load.js";
import { codeFingerprint, describeMachine } from "./machine.js";
import { buildModel, MODEL_SPECS, type BenchModel, type ModelName } from "./models.js";
import { checkTargets, fillRatios, renderMarkdown, writeReport, type HttpRow, type InProcessRow, type Report } from "./report.js";
import { HEARTBEAT_MS, inferUrl, prime, ROOT, startFloor, startJetshard, startPlainServer, type JetshardStack } from "./systems.js";
import { runWireSection, type WireReport } from "./wire.js";

const HELP = `Usage: npm run bench [-- options]

  --quick            small model only, short runs, fewer jobs: about 3 minutes, under 2 with one section
                     (also: npm run bench --quick)
  --section NAME     run only one section: http (in-process, plain server, floor, jetshard sync infer), jobs (the
                     job-queue comparison: BullMQ + Redis, raw JetStream, jetshard async jobs) or wire (mid,
                     2 shards: bytes per hop and latency with activations uncompressed, lz4, lz4 + fp16);
                     default all (wire is left out of --quick unless named)
  --models LIST      comma-separated models to run: small,mid (default both)
  --duration S       measured seconds per load run (default 10; quick 3)
  --warmup S         discarded warmup seconds before each load run (default 2; quick 1)
  --out DIR          results folder (default bench-results/)
  --connections LIST concurrency levels to load with (default 1,64; the targets are judged at 1 and 64)
  --jobs N           jobs section: jobs per throughput cell (default ${DEFAULT_JOBS.full}; quick ${DEFAULT_JOBS.quick}); one-at-a-time cells run N/10
  --in-flight N      jobs section: jobs in flight in the throughput cells (default 64)
  --peer-concurrency N  jobs section: concurrency of the BullMQ and raw JetStream workers (default 64)
  -h, --help         this text

Worker knobs pass through from the environment (JETSHARD_WORKER_CONCURRENCY, JETSHARD_ORT_INTRA_THREADS, ...).`;

const CONNECTIONS = [1, 64] as const;
/** Upload parameters per batching mode ("off" = one request per run). */
// "on" is jetshard's default for a dynamic batch dimension: 32 rows, no added queue delay (batches form while a run is busy)
const BATCHING = { off: { maxBatchSize: "1" }, on: { maxBatchSize: "32", maxQueueDelayUs: "0" } } as const;
/** jetshard deployments measured: unsharded on one worker; two shards on two workers (either may run either shard). */
const DEPLOYMENTS = [
  { shards: 1, workers: 1 },
  { shards: 2, workers: 2 },
] as const;
const REQUEST_TIMEOUT_S = 30;
/** The report's sections, in the order they run. */
const SECTIONS = ["http", "jobs", "wire"] as const;
type Section = (typeof SECTIONS)[number];
/** How long a model may take to answer its first requests (mid: fetched from the object store, then loaded). */
const primeTimeoutMs = (m: BenchModel) => (m.name === "mid" ? 180_000 : 60_000);
const BUDGET_MS = { full: 630_000, quick: 130_000 };

const t0 = Date.now();
const say = (msg: string) => process.stderr.write(`[bench +${Math.round((Date.now() - t0) / 1000)}s] ${msg}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** One line of an error, with its cause (fetch's "fetch failed" says why only there). */
function errMsg(err: unknown): string {
  let msg = err instanceof Error ? err.message : String(err);
  const cause = err instanceof Error ? (err.cause as { message?: string; code?: string } | undefined) : undefined;
  if (cause?.message || cause?.code) msg += ` (${cause.message ?? cause.code})`;
  return msg.split("\n")[0]!.slice(0, 400);
}
/** What the stack's processes that died said last, if any did. */
const deadChildren = (stack: JetshardStack) =>
  stack.children
    .filter((c) => !c.alive())
    .map((c) => `; ${c.name} exited (${c.proc.exitCode ?? c.proc.signalCode}): ${c.tail().trim().split("\n").slice(-3).join(" / ").slice(-400)}`)
    .join("");

interface Options {
  quick: boolean;
  models: ModelName[];
  durationS: number;
  warmupS: number;
  outDir: string;
  connections: number[];
  sections: Section[];
  jobs: number;
  inFlight: number;
  peerConcurrency: number;
}

function parseOptions(argv: string[], env: NodeJS.ProcessEnv): Options {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      quick: { type: "boolean", default: false },
      models: { type: "string" },
      duration: { type: "string" },
      warmup: { type: "string" },
      out: { type: "string" },
      connections: { type: "string" },
      section: { type: "string" },
      jobs: { type: "string" },
      "in-flight": { type: "string" },
      "peer-concurrency": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(HELP + "\n");
    process.exit(0);
  }
  // `npm run bench --quick` reaches us as npm_config_quick=true rather than as an argument
  const quick = values.quick || env.npm_config_quick === "true";
  const models = (values.models ?? (quick ? "small" : "small,mid")).split(",").map((s) => s.trim()) as ModelName[];
  for (const m of models) if (!(m in MODEL_SPECS)) throw new Error(`--models: unknown model "${m}" (small, mid)`);
  const num = (v: string | undefined, def: number, what: string) => {
    const n = v === undefined ? def : Number(v);
    if (!(n > 0)) throw new Error(`--${what}: expected a positive number of seconds, got "${v}"`);
    return n;
  };
  const count = (v: string | undefined, def: number, what: string) => {
    const n = v === undefined ? def : Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${what}: "${v}" is not a positive integer`);
    return n;
  };
  // npm keeps options it does not know: `npm run bench --section=jobs` reaches us as npm_config_section=jobs, and
  // `npm run bench --section jobs` as npm_config_section=true plus the argument "jobs"
  const fromNpm = env.npm_config_section === "true" ? positionals.shift() : env.npm_config_section || undefined;
  if (positionals.length) throw new Error(`unexpected argument "${positionals[0]}" (see --help)`);
  const section = values.section ?? fromNpm;
  if (section !== undefined && !(SECTIONS as readonly string[]).includes(section)) throw new Error(`--section: unknown section "${section}" (${SECTIONS.join(", ")})`);
  return {
    quick,
    models,
    durationS: num(values.duration, quick ? 3 : 10, "duration"),
    warmupS: num(values.warmup, quick ? 1 : 2, "warmup"),
    outDir: path.resolve(values.out ?? path.join(ROOT, "bench-results")),
    connections: (values.connections ?? CONNECTIONS.join(","))
      .split(",")
      .map((v) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 1) throw new Error(`--connections: "${v}" is not a positive integer`);
        return n;
      }),
    sections: section === undefined ? [...SECTIONS] : [section as Section],
    jobs: count(values.jobs, quick ? DEFAULT_JOBS.quick : DEFAULT_JOBS.full, "jobs"),
    inFlight: count(values["in-flight"], 64, "in-flight"),
    peerConcurrency: count(values["peer-concurrency"], 64, "peer-concurrency"),
  };
}

async function main(): Promise<number> {
  const opts = parseOptions(process.argv.slice(2), process.env);
  installCleanup(say);
  const startedAt = new Date();
  const deadline = startedAt.getTime() + (opts.quick ? BUDGET_MS.quick : BUDGET_MS.full);
  const machine = describeMachine(ROOT);
  const skipped: string[] = [];
  const httpSection = opts.sections.includes("http");
  if (!httpSection) skipped.push(`the HTTP section (--section ${opts.sections.join(",")}): no in-process, plain server or sync infer runs, targets not checked`);
  else if (opts.quick) {
    skipped.push(
      `quick mode: only ${opts.models.join(", ")} (the mid target is not checked), no 2-shard run with batching off, ${opts.durationS} s runs after ${opts.warmupS} s warmup instead of 10 s after 2 s`,
    );
  } else if (!opts.models.includes("mid")) {
    skipped.push("model mid (--models)");
  }
  if (!opts.sections.includes("jobs")) skipped.push(`the job-queue section (--section ${opts.sections.join(",")})`);
  else if (opts.quick) skipped.push(`quick mode, job queues: ${opts.jobs} jobs per cell instead of ${DEFAULT_JOBS.full}`);
  const inProcess: InProcessRow[] = [];
  const http: HttpRow[] = [];
  const logs: Report["logs"] = {};
  const observations: string[] = [];
  const deployments: Report["deployments"] = {};
  let failures = 0;
  const tmp = trackDir(await mkdtemp(path.join(os.tmpdir(), "jetshard-bench-models-")));
  const bodies: string[] = [];

  /**
   * Load at c=64 for a few seconds, discarded, once per server and model before its first measurement: a fresh
   * process measured ~1.5 ms slower at c=1 than the same process a few thousand requests later (V8 still
   * optimizing), which favoured whichever configuration ran second.
   */
  async function warmUp(url: string, body: string) {
    await loadTest({ url, body, connections: 64, durationS: opts.quick ? 2 : 3, warmupS: 0, timeoutS: REQUEST_TIMEOUT_S });
    await sleep(1000);
  }

  /** Measures one configuration at every concurrency, appending rows; `url` null = it could not be set up. */
  async function measure(base: Omit<HttpRow, "connections" | "result" | "ratio" | "notes">, url: string | null, body: string, notes: string[], label: string) {
    for (const c of opts.connections) {
      const row: HttpRow = { ...base, connections: c, result: null, ratio: null, notes: [...notes] };
      http.push(row);
      if (!url) continue;
      if (Date.now() + (opts.warmupS + opts.durationS + 2) * 1000 > deadline) {
        row.notes.push("skipped: out of the run's time budget");
        skipped.push(`${label} c=${c} (time budget)`);
        continue;
      }
      try {
        const r: LoadResult = await loadTest({ url, body, connections: c, durationS: opts.durationS, warmupS: opts.warmupS, timeoutS: REQUEST_TIMEOUT_S });
        row.result = r;
        say(`${label} c=${c}: ${r.reqPerS.toFixed(1)} req/s, p50 ${r.p50Ms?.toFixed(2) ?? "–"} ms, p99 ${r.p99Ms?.toFixed(2) ?? "–"} ms, ${r.errors} errors`);
      } catch (err) {
        failures++;
        row.notes.push(`load run failed: ${errMsg(err)}`);
        say(`${label} c=${c}: failed: ${errMsg(err)}`);
      }
      // let requests still in flight when the load stopped finish before the next run
      await sleep(1000);
    }
  }

  /**
   * Starts a server for `model` (the plain server, the floor) and warms it; url null (and a note) when it does not
   * come up or never answers.
   */
  async function setUp<S extends { base: string }>(what: string, model: BenchModel, start: () => Promise<S>) {
    const notes: string[] = [];
    let url: string | null = null;
    const server = await start().catch((err) => {
      failures++;
      notes.push(`${what} did not start: ${errMsg(err)}`);
      return null;
    });
    if (server) {
      try {
        url = inferUrl(server.base, model.name);
        await prime(url, model.body, 4, primeTimeoutMs(model));
        await warmUp(url, model.body);
      } catch (err) {
        failures++;
        notes.push(`${what} never answered: ${errMsg(err)}`);
        url = null;
      }
    }
    return { server, url, notes };
  }

  /** Measures the floor system (floor-server.ts) on `model`: what any front → NATS → worker design costs here. */
  async function benchFloor(model: BenchModel) {
    const floor = await setUp("floor", model, () => startFloor(model.name, model.file));
    await measure({ model: model.name, system: "floor" }, floor.url, model.body, floor.notes, `${model.name} floor`);
    if (floor.server) {
      await floor.server.stop();
      logs[`${model.name}, floor`] = Object.fromEntries(floor.server.children.map((c) => [c.name, c.logs()]));
    }
  }

  /** Measures `model` on a fresh jetshard stack with `shards` shards on `workers` workers, each batching mode. */
  async function benchDeployment(model: BenchModel, shards: number, workers: number) {
    const stackLabel = `${model.name}, ${shards} shard${shards === 1 ? "" : "s"}, ${workers} worker${workers === 1 ? "" : "s"}`;
    const modes = opts.quick && shards > 1 ? (["on"] as const) : (["off", "on"] as const);
    const row = (batching: "off" | "on") => ({ model: model.name, system: "jetshard" as const, batching, shards, workers });
    // setting up a stack takes a while (mid: uploads of 160 MB); don't start one that has no time left to measure
    if (Date.now() + (opts.warmupS + opts.durationS + 2) * 1000 + 30_000 > deadline) {
      skipped.push(`${stackLabel} (time budget)`);
      for (const batching of modes) await measure(row(batching), null, model.body, ["skipped: out of the run's time budget"], "");
      return;
    }
    say(`${stackLabel}: starting nats-server, gateway, worker(s) and uploading…`);
    const code = codeFingerprint(ROOT);
    const codeNote = code === machine.code ? [] : [`jetshard's code changed since the run started (code ${machine.code} → ${code})`];
    let stack: JetshardStack | null = null;
    let stackError: string | null = null;
    try {
      stack = await startJetshard(workers);
    } catch (err) {
      failures++;
      stackError = `jetshard did not start: ${errMsg(err)}`;
    }
    // upload every batching variant first, so no upload lands inside a measurement
    const variants: Array<{ batching: "off" | "on"; url: string | null; notes: string[] }> = [];
    for (const batching of modes) {
      const notes = [...codeNote, ...(stackError ? [stackError] : [])];
      let url: string | null = null;
      if (stack) {
        const name = `${model.name}-batch-${batching}`;
        try {
          notes.push(...(await stack.upload(name, model.file, { ...BATCHING[batching], ...(shards > 1 ? { shards: String(shards) } : {}) })));
          await stack.waitReady(name, 60_000);
          say(`${stackLabel}: ${name} uploaded and ready`);
          url = inferUrl(stack.base, name);
        } catch (err) {
          failures++;
          notes.push(`setup failed: ${errMsg(err)}${deadChildren(stack)}`);
        }
      }
      variants.push({ batching, url, notes });
    }
    for (const v of variants) {
      if (v.url) {
        try {
          await prime(v.url, model.body, 8, primeTimeoutMs(model));
          await warmUp(v.url, model.body);
        } catch (err) {
          failures++;
          v.notes.push(`never answered: ${errMsg(err)}${stack ? deadChildren(stack) : ""}`);
          v.url = null;
        }
      }
      await measure(row(v.batching), v.url, model.body, v.notes, `${model.name} jetshard batching ${v.batching}, ${shards} shard${shards === 1 ? "" : "s"}`);
    }
    if (stack) {
      // wait for a heartbeat, so the processed counts cover the last run
      await sleep(HEARTBEAT_MS + 200);
      deployments[stackLabel] = await stack.workers().catch((err) => [`could not list workers: ${errMsg(err)}`]);
      await stack.stop();
      logs[stackLabel] = stack.logs();
      observations.push(...stack.observations.map((o) => `${stackLabel}: ${o}`));
    }
  }

  for (const name of httpSection ? opts.models : []) {
    say(`${name}: building ${MODEL_SPECS[name].description}…`);
    const model = await buildModel(name, tmp);
    bodies.push(`${name} ${model.body.length} B`);

    say(`${name}: in-process ORT, batch 1 and 32…`);
    for (const r of await measureInProcess(model.file, model.inputWidth, [1, 32], opts.quick ? 1 : 2)) inProcess.push({ model: name, ...r });

    // the baseline is measured before and after jetshard's runs: the difference shows how much the machine drifted
    const plain = await setUp("plain server", model, () => startPlainServer(model.name, model.file));
    await measure({ model: name, system: "plain", phase: "before" }, plain.url, model.body, plain.notes, `${name} plain (before)`);
    await benchFloor(model);
    for (const { shards, workers } of DEPLOYMENTS) await benchDeployment(model, shards, workers);
    await measure({ model: name, system: "plain", phase: "after" }, plain.url, model.body, plain.notes, `${name} plain (after)`);
    if (plain.server) {
      await plain.server.stop();
      logs[`${name}, plain server`] = { "plain-server": plain.server.child.logs() };
    }
  }

  let jobs: Report["jobs"] = null;
  if (opts.sections.includes("jobs")) {
    const code = codeFingerprint(ROOT);
    const jetshardNotes = code === machine.code ? [] : [`jetshard's code changed since the run started (code ${machine.code} → ${code})`];
    try {
      jobs = await runJobsSection({ quick: opts.quick, jobs: opts.jobs, inFlight: opts.inFlight, peerConcurrency: opts.peerConcurrency, tmpDir: tmp, jetshardNotes, say });
      failures += jobs.failures;
      skipped.push(...jobs.skipped);
      Object.assign(logs, jobs.logs);
      Object.assign(deployments, jobs.deployments);
      observations.push(...jobs.observations);
    } catch (err) {
      // keep what the HTTP section measured: report the section as not run
      failures++;
      skipped.push(`the job-queue section, which failed: ${errMsg(err)}`);
      say(`jobs: failed: ${errMsg(err)}`);
    }
  }

  let wire: WireReport | null = null;
  // mid only (small's activations are too small to pack); a quick run measures it only when asked by name
  if (opts.sections.includes("wire") && !(opts.quick && opts.sections.length > 1)) {
    try {
      const model = await buildModel("mid", tmp);
      wire = await runWireSection({ model, durationS: opts.durationS, warmupS: opts.warmupS, say });
      failures += wire.failures;
    } catch (err) {
      failures++;
      skipped.push(`the wire section, which failed: ${errMsg(err)}`);
      say(`wire: failed: ${errMsg(err)}`);
    }
  } else if (opts.quick) skipped.push("the wire section (quick mode; --section wire runs it)");

  fillRatios(http);
  const report: Report = {
    startedAt: startedAt.toISOString(),
    elapsedS: (Date.now() - startedAt.getTime()) / 1000,
    loadAvg1mAtEnd: Math.round(os.loadavg()[0]! * 100) / 100,
    codeAtEnd: codeFingerprint(ROOT),
    mode: opts.quick ? "quick" : "full",
    sections: opts.sections,
    skipped,
    machine,
    settings: !httpSection ? {} : {
      "measured s per run": opts.durationS,
      "warmup s": `${opts.warmupS} per run (at the run's concurrency), plus ${opts.quick ? 2 : 3} at c=64 per fresh server and model`,
      connections: opts.connections.join(" and "),
      "request timeout s": REQUEST_TIMEOUT_S,
      "request bodies": bodies.join(", "),
      "batching on": new URLSearchParams(BATCHING.on).toString(),
      "batching off": new URLSearchParams(BATCHING.off).toString(),
      "jetshard processes": "nats-server + gateway + 1 worker (1 shard) or 2 workers, each free to run either shard (2 shards)",
      "worker concurrency": process.env.JETSHARD_WORKER_CONCURRENCY ?? "the worker's default (listed per worker below)",
      "worker heartbeat ms": HEARTBEAT_MS,
      "ORT intra-op threads": process.env.JETSHARD_ORT_INTRA_THREADS ?? "the worker's default",
      "load generator": "autocannon in the harness process, sharing the CPU",
    },
    inProcess,
    http,
    targets: checkTargets(http, inProcess, jobs),
    jobs,
    wire,
    observations,
    deployments,
    logs,
  };
  const markdown = renderMarkdown(report);
  const file = await writeReport(opts.outDir, report, markdown);
  process.stdout.write(`\n${markdown}\n`);
  say(`written: ${path.relative(process.cwd(), file)} (and latest.md, latest.json) in ${report.elapsedS.toFixed(0)} s`);
  if (failures) say(`${failures} configuration(s) failed; see the notes in the table`);
  return failures ? 1 : 0;
}

let code = 1;
try {
  code = await main();
} catch (err) {
  say(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
} finally {
  await stopAll();
}
process.exit(code);
