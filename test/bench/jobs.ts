/**
 * The job-queue section of `npm run bench`: one job = submit, then wait until it is done and its output is in
 * hand, for
 * - BullMQ + Redis: a real redis-server (memory only) and a BullMQ Worker in its own process (job-peer.ts);
 * - raw JetStream: publish → pull worker (job-peer.ts) → reply, no jetshard code: the floor under jetshard's path;
 * - jetshard tracked jobs over the NATS client (`JetshardClient.submit`) and over HTTP (`POST /v1/jobs`, then
 *   `GET /v1/jobs/{id}?wait=`), one `jetshard worker` process;
 * each with "noop" jobs (jetshard: an Identity model on a [1,1] tensor, so the job path is measured, not a model)
 * and "small" jobs (the bench's `small` MLP, one row). Figures per system and kind: jobs/s with 64 in flight and
 * latency one job at a time, as absolutes and as ratios to BullMQ. See test/bench/README.md.
 */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, writeFile } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { Queue, QueueEvents } from "bullmq";
import { connect, createInbox, headers as natsHeaders, nuid, type NatsConnection } from "@nats-io/transport-node";
import { DiscardPolicy, jetstream, jetstreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { Kvm, KvWatchInclude } from "@nats-io/kv";
import * as ort from "onnxruntime-node";
import { JetshardClient } from "#shared/client.js";
import type { JobRecord } from "#shared/jobs.js";
import { startNatsServer } from "#shared/nats-server.js";
import { ElemType, encodeModel, model as onnxModel, node, valueInfo } from "#shared/onnx/builder.js";
import { BUCKETS } from "#shared/subjects.js";
import { adopt, freePort, startChild, trackDir, waitUntil, type Child, type LogSummary } from "./children.js";
import { BULLMQ_QUEUE, JOB_KINDS, RAW, type JobKind } from "./job-protocol.js";
import { percentile } from "./load.js";
import { buildModel, requestBody } from "./models.js";
import { ROOT, startJetshard, type JetshardStack } from "./systems.js";

/** The systems compared, in the order they are measured and listed. */
export const JOB_SYSTEMS = ["bullmq", "raw", "jetshard-nats", "jetshard-http"] as const;
export type JobSystem = (typeof JOB_SYSTEMS)[number];

/** How each system is listed in the report. */
export const JOB_SYSTEM_LABELS: Record<JobSystem, string> = {
  bullmq: "BullMQ + Redis (memory)",
  raw: "raw JetStream (publish → pull worker → reply)",
  "jetshard-nats": "jetshard tracked jobs, NATS client",
  "jetshard-http": "jetshard tracked jobs, HTTP",
};

/** How each system learns that a job is done (and gets its output): printed with the report. */
export const COMPLETION: Record<JobSystem, string> = {
  bullmq: "`Queue.add`, then BullMQ's own completion notice: one `QueueEvents` listener for the run (the mechanism behind `job.waitUntilFinished`), reading the events stream from its start, whose `completed` event carries the return value",
  raw: "`js.publish` (awaiting the stream's ack, with a msgID like jetshard's) with a reply subject in a header; the worker publishes the output there before it acks",
  "jetshard-nats":
    "`client.submit`, then one watch on the whole `jobs` KV bucket (a single ordered consumer for the run, pushing every record change; no per-job watch, no polling) until the record is terminal, whose small output is in the record itself (`client.result(id, record)` decodes it; a larger one it would read from RESULTS)",
  "jetshard-http": "`POST /v1/jobs` (v2 JSON inputs), then `GET /v1/jobs/{id}?wait=30s` (the gateway holds it until the record is terminal and answers with the result), over keep-alive connections",
};

/** One measured run: `inFlight` jobs at a time until `jobs` completed (or the cell's time cap). Latencies in ms. */
export interface JobRun {
  inFlight: number;
  /** Jobs asked for. */
  jobs: number;
  /** Jobs that completed with the expected output. */
  ok: number;
  /** Jobs that failed, timed out or returned a wrong output. */
  errors: number;
  /** From the first submit to the last completion, s. */
  elapsedS: number;
  /** ok / elapsedS. */
  jobsPerS: number;
  p50Ms: number | null;
  p99Ms: number | null;
  maxMs: number | null;
  /** Up to 5 distinct error messages with their counts. */
  errorSamples: Record<string, number>;
  /** True when the time cap stopped it before `jobs` were submitted. */
  capped: boolean;
}

/** One system and job kind: its throughput and sequential runs, and their ratios to BullMQ's. */
export interface JobRow {
  system: JobSystem;
  kind: JobKind;
  /** BullMQ only: measured before the other systems' runs of this kind, or after them (to show drift). */
  phase?: "before" | "after";
  /** `inFlight` jobs at a time (64); null when not measured (see notes). */
  throughput: JobRun | null;
  /** One job at a time; null when not measured. */
  sequential: JobRun | null;
  /**
   * jobs/s over BullMQ's, and sequential p50 over BullMQ's (above 1 = slower than BullMQ), BullMQ's being the mean
   * of its before and after runs of the same kind; null when either is missing.
   */
  ratio: { jobsPerS: number | null; seqP50: number | null };
  notes: string[];
}

/** The section's part of the report. */
export interface JobsReport {
  settings: Record<string, string | number>;
  /** Jobs in flight in the throughput runs. */
  inFlight: number;
  /** How each system learns completion (COMPLETION). */
  completion: Record<JobSystem, string>;
  rows: JobRow[];
  skipped: string[];
  elapsedS: number;
  /** Per stack: each jetshard worker's counts at the end, like the HTTP section's deployments. */
  deployments: Record<string, string[]>;
  /** Warnings and errors logged by each process, per system. */
  logs: Record<string, Record<string, LogSummary>>;
  /** What jetshard did while being set up that a client would trip over (JetshardStack.observations). */
  observations: string[];
  /** Configurations that could not be measured at all. */
  failures: number;
}

/** What the section is asked to do. */
export interface JobsOptions {
  quick: boolean;
  /** Jobs per throughput cell; sequential cells run a tenth of it (at least 100). */
  jobs: number;
  /** Jobs in flight in the throughput cells. */
  inFlight: number;
  /** Concurrency of the BullMQ and raw JetStream workers (jetshard's worker runs at its own defaults). */
  peerConcurrency: number;
  /** Where to write the models. */
  tmpDir: string;
  /** Added to the jetshard rows' notes, e.g. that jetshard's code changed on disk since the run started. */
  jetshardNotes?: string[];
  say: (msg: string) => void;
}

/** Default jobs per throughput cell, full and quick. */
export const DEFAULT_JOBS = { full: 3000, quick: 1000 } as const;
/** Longest one cell may run before it stops submitting, ms (keeps the section bounded when a system is slow). */
const CELL_CAP_MS = { full: 10_000, quick: 6_000 };
/**
 * The measurements' budget, ms, counted once everything is set up (on a busy host setting up alone took 40 s):
 * cells that would end after it are skipped, except BullMQ's second run, the other half of the reference.
 */
const SECTION_BUDGET_MS = { full: 150_000, quick: 60_000 };
const JOB_TIMEOUT_MS = 30_000;
/** Names the jetshard models are uploaded as. */
const JETSHARD_MODEL: Record<JobKind, string> = { noop: "bench-noop", small: "bench-small" };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `p`, or a rejection after `ms`; a later rejection of `p` is then ignored (not an unhandled rejection). */
async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  p.catch(() => undefined);
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no completion within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}
const errText = (err: unknown) => (err instanceof Error ? err.message : String(err)).split("\n")[0]!.slice(0, 300);

/** Submits one job of `kind` and resolves once it is done with the expected output; rejects otherwise. */
type RunJob = (kind: JobKind) => Promise<void>;

interface Target {
  run: RunJob;
  close(): Promise<void>;
}

/** The inputs of each kind, the outputs they must produce, and both in each system's format. */
interface Fixture {
  input: Float32Array;
  expected: Float32Array;
  /** BullMQ job data. */
  bullData: { input: number[] };
  /** Raw JetStream payload (little-endian float32). */
  rawPayload: Uint8Array;
  /** POST /v1/jobs body. */
  httpBody: string;
}

/** Throws unless `got` matches `want` (to 1e-4 relative: batched runs may round differently). */
function checkOutput(got: ArrayLike<number> | undefined, want: Float32Array, who: string): void {
  if (!got || got.length !== want.length) throw new Error(`${who}: expected ${want.length} output values, got ${got?.length ?? "none"}`);
  for (let i = 0; i < want.length; i++) {
    if (!(Math.abs(got[i]! - want[i]!) <= 1e-4 * Math.max(1, Math.abs(want[i]!)))) throw new Error(`${who}: output[${i}] is ${got[i]}, expected ${want[i]}`);
  }
}

/** An Identity on a fixed [1,1] float tensor: a job that costs (next to) nothing to run. */
function noopModel(): Uint8Array {
  return encodeModel(
    onnxModel({
      nodes: [node("Identity", ["input"], ["output"])],
      inputs: [valueInfo("input", ElemType.FLOAT, [1, 1])],
      outputs: [valueInfo("output", ElemType.FLOAT, [1, 1])],
    }),
  );
}

async function buildFixtures(dir: string): Promise<{ files: Record<JobKind, string>; fixtures: Record<JobKind, Fixture> }> {
  const noopFile = path.join(dir, "bench-noop.onnx");
  await writeFile(noopFile, noopModel());
  const small = await buildModel("small", dir);
  const smallData = (JSON.parse(requestBody(small.inputWidth)) as { inputs: Array<{ data: number[] }> }).inputs[0]!.data;
  const smallInput = Float32Array.from(smallData);
  // the reference output, computed here: every system must return it
  const session = await ort.InferenceSession.create(small.file);
  const out = await session.run({ [session.inputNames[0]!]: new ort.Tensor("float32", smallInput, [1, small.inputWidth]) });
  const smallExpected = Float32Array.from(out[session.outputNames[0]!]!.data as Float32Array);
  await session.release();
  const fixture = (kind: JobKind, input: Float32Array, expected: Float32Array, values: number[]): Fixture => ({
    input,
    expected,
    bullData: { input: values },
    rawPayload: new Uint8Array(input.buffer.slice(0)),
    httpBody: JSON.stringify({ model: JETSHARD_MODEL[kind], inputs: [{ name: "input", shape: [1, input.length], datatype: "FP32", data: values }] }),
  });
  return {
    files: { noop: noopFile, small: small.file },
    fixtures: { noop: fixture("noop", Float32Array.of(0.5), Float32Array.of(0.5), [0.5]), small: fixture("small", smallInput, smallExpected, smallData) },
  };
}

/**
 * Runs `run` with `inFlight` jobs at a time until `jobs` have been submitted and answered, or `capMs` passed
 * (then no more are submitted). Each job is timed from its submit to its verified output.
 */
async function drive(run: () => Promise<void>, o: { inFlight: number; jobs: number; capMs: number }): Promise<JobRun> {
  const latencies: number[] = [];
  const errorSamples: Record<string, number> = {};
  let started = 0;
  let errors = 0;
  let capped = false;
  const t0 = performance.now();
  let last = t0;
  await Promise.all(
    Array.from({ length: o.inFlight }, async () => {
      while (started < o.jobs) {
        if (performance.now() - t0 > o.capMs) {
          capped = true;
          return;
        }
        started++;
        const s = performance.now();
        try {
          await withTimeout(run(), JOB_TIMEOUT_MS);
          latencies.push(performance.now() - s);
        } catch (err) {
          errors++;
          const k = errText(err);
          if (k in errorSamples || Object.keys(errorSamples).length < 5) errorSamples[k] = (errorSamples[k] ?? 0) + 1;
        }
        last = performance.now();
      }
    }),
  );
  latencies.sort((a, b) => a - b);
  const elapsedS = (last - t0) / 1000;
  return {
    inFlight: o.inFlight,
    jobs: o.jobs,
    ok: latencies.length,
    errors,
    elapsedS,
    jobsPerS: elapsedS > 0 ? latencies.length / elapsedS : 0,
    p50Ms: percentile(latencies, 0.5),
    p99Ms: percentile(latencies, 0.99),
    maxMs: latencies.at(-1) ?? null,
    errorSamples,
    capped,
  };
}

/** Settles jobs by id from a stream of completion notices that may arrive before the submit returned the id. */
class Completions<T> {
  private readonly waiting = new Map<string, { resolve: (v: T) => void; reject: (e: Error) => void }>();
  private readonly early = new Map<string, { value?: T; error?: Error }>();

  /** Resolves with the job's value once `done`/`failed` is called for `id` (before or after this call). */
  wait(id: string): Promise<T> {
    const e = this.early.get(id);
    if (e) {
      this.early.delete(id);
      return e.error ? Promise.reject(e.error) : Promise.resolve(e.value as T);
    }
    return new Promise((resolve, reject) => this.waiting.set(id, { resolve, reject }));
  }

  done(id: string, value: T): void {
    const w = this.waiting.get(id);
    if (w) {
      this.waiting.delete(id);
      w.resolve(value);
    } else this.early.set(id, { value });
  }

  failed(id: string, error: Error): void {
    const w = this.waiting.get(id);
    if (w) {
      this.waiting.delete(id);
      w.reject(error);
    } else this.early.set(id, { error });
  }
}

/** redis-server's path: REDIS_SERVER_BIN, else PATH and the usual places; null when not installed. */
export function findRedisServer(): string | null {
  if (process.env.REDIS_SERVER_BIN && existsSync(process.env.REDIS_SERVER_BIN)) return process.env.REDIS_SERVER_BIN;
  const dirs = [...(process.env.PATH ?? "").split(path.delimiter), "/usr/bin", "/usr/sbin", "/usr/local/bin"];
  for (const d of dirs) if (d && existsSync(path.join(d, "redis-server"))) return path.join(d, "redis-server");
  return null;
}

/** True when a Redis at 127.0.0.1:`port` answers PING. */
function redisPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect(port, "127.0.0.1");
    let got = "";
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(1000, () => done(false));
    sock.on("error", () => done(false));
    sock.on("connect", () => sock.write("PING\r\n"));
    sock.on("data", (d) => {
      got += d.toString();
      if (got.includes("\r\n")) done(got.startsWith("+PONG"));
    });
  });
}

/** Starts redis-server on a free loopback port, in a temp dir, memory only (no RDB snapshots, no AOF). */
async function startRedis(bin: string): Promise<{ port: number; child: Child }> {
  const dir = trackDir(await mkdtemp(path.join(os.tmpdir(), "jetshard-bench-redis-")));
  const port = await freePort();
  const child = startChild(
    "redis-server",
    bin,
    ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction", "--daemonize", "no"],
    { cwd: dir, env: process.env, format: "redis" },
  );
  await waitUntil("redis-server to answer PING", async () => redisPing(port), { timeoutMs: 15_000, everyMs: 50, watch: [child] });
  return { port, child };
}

/** Starts a job-peer.ts worker process and waits until it takes jobs. */
async function startPeer(name: string, system: "bullmq" | "raw", url: string, smallFile: string, concurrency: number): Promise<Child> {
  const child = startChild(name, process.execPath, ["--import", "tsx", path.join(ROOT, "test/bench/job-peer.ts"), "--system", system, "--url", url, "--model", smallFile, "--concurrency", String(concurrency)], {
    cwd: ROOT,
    env: process.env,
  });
  await waitUntil(`${name} to take jobs`, async () => child.tail().includes('{"ready":true}'), { timeoutMs: 60_000, everyMs: 50, watch: [child] });
  return child;
}

async function bullmqTarget(port: number, fixtures: Record<JobKind, Fixture>): Promise<Target> {
  const connection = { host: "127.0.0.1", port };
  const queue = new Queue(BULLMQ_QUEUE, { connection });
  // By default QueueEvents reads from the stream's end as of its first XREAD, which may come after the first job
  // completed (that event is then lost). Redis is fresh and the events stream empty: read it from the start.
  const events = new QueueEvents(BULLMQ_QUEUE, { connection, lastEventId: "0-0" });
  const completions = new Completions<unknown>();
  events.on("completed", ({ jobId, returnvalue }) => completions.done(jobId, returnvalue));
  events.on("failed", ({ jobId, failedReason }) => completions.failed(jobId, new Error(`BullMQ job failed: ${failedReason}`)));
  await Promise.all([queue.waitUntilReady(), events.waitUntilReady()]);
  return {
    async run(kind) {
      const job = await queue.add(kind, fixtures[kind].bullData);
      const value = await completions.wait(job.id!);
      // the event carries the return value as JSON text in some versions, parsed in others
      const out = (typeof value === "string" ? JSON.parse(value) : value) as number[];
      checkOutput(out, fixtures[kind].expected, "BullMQ");
    },
    async close() {
      await Promise.all([events.close(), queue.close()]);
    },
  };
}

/** The stream the raw reference publishes to: what jetshard's JOBS stream is (file, work queue, dedup window). */
async function createRawStream(nc: NatsConnection): Promise<void> {
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({
    name: RAW.stream,
    subjects: [RAW.subjects],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    discard: DiscardPolicy.New,
    max_bytes: 1024 * 1024 * 1024,
    duplicate_window: 120_000_000_000,
    num_replicas: 1,
  });
}

async function rawTarget(nc: NatsConnection, fixtures: Record<JobKind, Fixture>): Promise<Target> {
  const js = jetstream(nc);
  const inbox = createInbox();
  const completions = new Completions<Uint8Array>();
  const sub = nc.subscribe(`${inbox}.*`, {
    callback: (err, msg) => {
      if (!err) completions.done(msg.subject.slice(inbox.length + 1), msg.data);
    },
  });
  return {
    async run(kind) {
      const id = nuid.next();
      const result = completions.wait(id);
      const h = natsHeaders();
      h.set(RAW.replyHeader, `${inbox}.${id}`);
      await js.publish(RAW.subject(kind), fixtures[kind].rawPayload, { msgID: id, headers: h });
      const bytes = await result;
      checkOutput(new Float32Array(new Uint8Array(bytes).buffer), fixtures[kind].expected, "raw JetStream");
    },
    async close() {
      sub.unsubscribe();
    },
  };
}

async function jetshardNatsTarget(natsUrl: string, fixtures: Record<JobKind, Fixture>): Promise<Target> {
  const client = await JetshardClient.connect(natsUrl);
  const kv = await new Kvm(client.nc).open(BUCKETS.jobs);
  const completions = new Completions<JobRecord>();
  // one watch for the whole run, started before the first submit: only changes from now on
  const watch = await kv.watch({ include: KvWatchInclude.UpdatesOnly });
  void (async () => {
    for await (const e of watch) {
      if (e.operation !== "PUT" || e.value.length === 0) continue;
      const rec = e.json<JobRecord>();
      if (rec.status === "succeeded") completions.done(e.key, rec);
      else if (rec.status === "failed" || rec.status === "cancelled") completions.failed(e.key, new Error(`jetshard job ${rec.status}: ${rec.error?.code ?? ""} ${rec.error?.message ?? ""}`));
    }
  })();
  const inputs = (kind: JobKind) => [{ name: "input", datatype: "FP32" as const, shape: [1, fixtures[kind].input.length], data: fixtures[kind].input }];
  return {
    async run(kind) {
      const { id } = await client.submit(JETSHARD_MODEL[kind], inputs(kind));
      // a small output is in the record the watch delivered; a larger one is read from RESULTS
      const res = await client.result(id, await completions.wait(id));
      checkOutput(res?.outputs[0]?.data as Float32Array | undefined, fixtures[kind].expected, "jetshard (NATS client)");
    },
    async close() {
      watch.stop();
      await client.close();
    },
  };
}

async function jetshardHttpTarget(base: string, fixtures: Record<JobKind, Fixture>): Promise<Target> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  const call = (method: string, url: string, body?: string) =>
    new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = http.request(`${base}${url}`, { method, agent, headers: body === undefined ? {} : { "content-type": "application/json", "content-length": Buffer.byteLength(body) } }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
        res.on("error", reject);
      });
      req.on("error", reject);
      req.end(body);
    });
  return {
    async run(kind) {
      const post = await call("POST", "/v1/jobs", fixtures[kind].httpBody);
      if (post.status !== 202) throw new Error(`POST /v1/jobs: ${post.status} ${post.text.slice(0, 200)}`);
      const { id } = JSON.parse(post.text) as { id: string };
      for (;;) {
        const get = await call("GET", `/v1/jobs/${id}?wait=30s`);
        if (get.status !== 200) throw new Error(`GET /v1/jobs/{id}?wait=30s: ${get.status} ${get.text.slice(0, 200)}`);
        const rec = JSON.parse(get.text) as { status: string; error?: { code: string; message: string }; result?: { outputs?: Array<{ data?: number[] }> } };
        if (rec.status === "queued" || rec.status === "running") continue;
        if (rec.status !== "succeeded") throw new Error(`jetshard job ${rec.status}: ${rec.error?.code ?? ""} ${rec.error?.message ?? ""}`);
        checkOutput(rec.result?.outputs?.[0]?.data, fixtures[kind].expected, "jetshard (HTTP)");
        return;
      }
    },
    async close() {
      agent.destroy();
    },
  };
}

function packageVersion(name: string): string {
  try {
    return (JSON.parse(readFileSync(path.join(ROOT, "node_modules", name, "package.json"), "utf8")) as { version: string }).version;
  } catch {
    return "?";
  }
}

function redisVersion(bin: string | null): string {
  if (!bin) return "not installed";
  try {
    return /v=(\S+)/.exec(execFileSync(bin, ["--version"], { encoding: "utf8" }))?.[1] ?? "?";
  } catch {
    return "?";
  }
}

const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);

/** Sets each row's ratios to BullMQ's figures for the same kind: the mean of its before and after runs. */
export function fillJobRatios(rows: JobRow[]): void {
  for (const r of rows) {
    const b = rows.filter((x) => x.system === "bullmq" && x.kind === r.kind);
    const tp = mean(b.filter((x) => x.throughput?.ok).map((x) => x.throughput!.jobsPerS));
    const seq = mean(b.filter((x) => x.sequential?.p50Ms != null).map((x) => x.sequential!.p50Ms!));
    r.ratio = {
      jobsPerS: r.throughput?.ok && tp ? r.throughput.jobsPerS / tp : null,
      seqP50: r.sequential?.p50Ms != null && seq ? r.sequential.p50Ms / seq : null,
    };
  }
}

/**
 * Runs the job-queue section: starts every system, measures each kind on each, stops them all again.
 * A system that cannot be set up gets rows with a note (and counts as a failure); the others still run.
 */
export async function runJobsSection(o: JobsOptions): Promise<JobsReport> {
  const started = Date.now();
  const mode = o.quick ? "quick" : "full";
  const capMs = CELL_CAP_MS[mode];
  const seqJobs = Math.max(100, Math.round(o.jobs / 10));
  const warmJobs = Math.max(100, Math.round(o.jobs / 10));
  const say = (msg: string) => o.say(`jobs: ${msg}`);
  const rows: JobRow[] = [];
  const skipped: string[] = [];
  const logs: JobsReport["logs"] = {};
  const deployments: JobsReport["deployments"] = {};
  const observations: string[] = [];
  let failures = 0;
  const setupError: Partial<Record<JobSystem, string>> = {};
  // Each cell opens its own client side and closes it after: an idle one would still use the harness's CPU (the
  // NATS client's watch of the jobs bucket would see every HTTP job too). BullMQ's is the exception (see bullmqTarget).
  const targets: Partial<Record<JobSystem, () => Promise<Target>>> = {};
  let bullmq: Target | null = null;
  const redisBin = findRedisServer();

  say("building the noop (Identity [1,1]) and small models…");
  const { files, fixtures } = await buildFixtures(o.tmpDir);

  // BullMQ + Redis
  let redis: { port: number; child: Child } | null = null;
  let bullPeer: Child | null = null;
  try {
    if (!redisBin) throw new Error("redis-server not found: install it (Debian: apt-get install redis-server; npm run bench does) or set REDIS_SERVER_BIN");
    say("starting redis-server and the BullMQ worker…");
    redis = await startRedis(redisBin);
    bullPeer = await startPeer("bullmq-worker", "bullmq", `redis://127.0.0.1:${redis.port}`, files.small, o.peerConcurrency);
    const shared = (bullmq = await bullmqTarget(redis.port, fixtures));
    targets.bullmq = async () => ({ run: shared.run, close: async () => undefined });
  } catch (err) {
    setupError.bullmq = `BullMQ not set up: ${errText(err)}`;
  }

  // raw JetStream, on its own nats-server
  let rawNats: { child: Child; url: string } | null = null;
  let rawPeer: Child | null = null;
  let rawNc: NatsConnection | null = null;
  try {
    say("starting a nats-server and the raw JetStream worker…");
    const n = await startNatsServer();
    trackDir(path.dirname(n.storeDir));
    rawNats = { child: adopt("nats-server", n.proc, "nats"), url: n.url };
    rawNc = await connect({ servers: n.url, name: "bench-raw-producer" });
    await createRawStream(rawNc);
    rawPeer = await startPeer("raw-worker", "raw", n.url, files.small, o.peerConcurrency);
    const nc = rawNc;
    targets.raw = () => rawTarget(nc, fixtures);
  } catch (err) {
    setupError.raw = `raw JetStream not set up: ${errText(err)}`;
  }

  // jetshard: nats-server, gateway, one worker
  let stack: JetshardStack | null = null;
  try {
    say("starting jetshard (nats-server, gateway, 1 worker) and uploading both models…");
    stack = await startJetshard(1);
    for (const kind of JOB_KINDS) {
      const notes = await stack.upload(JETSHARD_MODEL[kind], files[kind], {});
      if (notes.length) say(`${JETSHARD_MODEL[kind]}: ${notes.join("; ")}`);
      await stack.waitReady(JETSHARD_MODEL[kind], 60_000);
    }
    const { natsUrl, base } = stack;
    targets["jetshard-nats"] = () => jetshardNatsTarget(natsUrl, fixtures);
    targets["jetshard-http"] = () => jetshardHttpTarget(base, fixtures);
  } catch (err) {
    setupError["jetshard-nats"] = setupError["jetshard-http"] = `jetshard not set up: ${errText(err)}`;
  }

  // BullMQ, the reference, runs before and after the others: the difference shows how much the machine drifted
  const deadline = Date.now() + SECTION_BUDGET_MS[mode];
  const plan = JOB_KINDS.flatMap((kind) => [
    { kind, system: "bullmq" as const, phase: "before" as const },
    ...JOB_SYSTEMS.filter((s) => s !== "bullmq").map((system) => ({ kind, system, phase: undefined })),
    { kind, system: "bullmq" as const, phase: "after" as const },
  ]);
  for (const { kind, system, phase } of plan) {
    const notes = system.startsWith("jetshard") ? [...(o.jetshardNotes ?? [])] : [];
    const row: JobRow = { system, kind, ...(phase ? { phase } : {}), throughput: null, sequential: null, ratio: { jobsPerS: null, seqP50: null }, notes };
    rows.push(row);
    const makeTarget = targets[system];
    const label = `${JOB_SYSTEM_LABELS[system]}${phase ? ` (${phase})` : ""}, ${kind}`;
    if (!makeTarget) {
      failures++;
      row.notes.push(setupError[system] ?? "not set up");
      continue;
    }
    if (phase !== "after" && Date.now() + capMs * 2 + 5_000 > deadline) {
      row.notes.push("skipped: out of the section's time budget");
      skipped.push(`${label} (time budget)`);
      continue;
    }
    let target: Target | null = null;
    try {
      const opened = (target = await makeTarget());
      const run = () => opened.run(kind);
      // first use loads the model on the worker: until one job succeeds, nothing is measured
      await waitUntil(`a first ${kind} job on ${JOB_SYSTEM_LABELS[system]}`, async () => (await withTimeout(run(), JOB_TIMEOUT_MS), true), { timeoutMs: 60_000, everyMs: 200 });
      await drive(run, { inFlight: o.inFlight, jobs: warmJobs, capMs });
      await drive(run, { inFlight: 1, jobs: Math.min(50, seqJobs), capMs });
      row.throughput = await drive(run, { inFlight: o.inFlight, jobs: o.jobs, capMs });
      await sleep(200);
      row.sequential = await drive(run, { inFlight: 1, jobs: seqJobs, capMs });
      const t = row.throughput;
      const s = row.sequential;
      say(
        `${label}: ${t.jobsPerS.toFixed(0)} jobs/s at ${o.inFlight} in flight (p50 ${t.p50Ms?.toFixed(2) ?? "–"} ms); one at a time p50 ${s.p50Ms?.toFixed(2) ?? "–"} ms; ${t.errors + s.errors} errors`,
      );
      for (const [what, r] of [["in flight", t] as const, ["one at a time", s] as const]) {
        if (r.capped) row.notes.push(`${what}: stopped after ${capMs / 1000} s with ${r.ok} of ${r.jobs} jobs done`);
      }
    } catch (err) {
      failures++;
      row.notes.push(`failed: ${errText(err)}`);
      say(`${label}: failed: ${errText(err)}`);
    } finally {
      await target?.close().catch(() => undefined);
    }
    await sleep(300);
  }
  fillJobRatios(rows);

  say("stopping…");
  await bullmq?.close().catch(() => undefined);
  if (stack) {
    deployments["jobs: jetshard, 1 worker"] = await stack.workers().catch((err) => [`could not list workers: ${errText(err)}`]);
    await stack.stop();
    logs["jobs: jetshard"] = stack.logs();
    observations.push(...stack.observations.map((x) => `jobs: ${x}`));
  }
  await rawNc?.close().catch(() => undefined);
  for (const c of [bullPeer, redis?.child, rawPeer, rawNats?.child]) await c?.stop();
  logs["jobs: BullMQ"] = Object.fromEntries([bullPeer, redis?.child].filter((c): c is Child => !!c).map((c) => [c.name, c.logs()]));
  logs["jobs: raw JetStream"] = Object.fromEntries([rawPeer, rawNats?.child].filter((c): c is Child => !!c).map((c) => [c.name, c.logs()]));

  return {
    settings: {
      "jobs per cell": `${o.jobs} with ${o.inFlight} in flight, ${seqJobs} one at a time, after ${warmJobs} + ${Math.min(50, seqJobs)} discarded`,
      "cell time cap s": capMs / 1000,
      "job timeout s": JOB_TIMEOUT_MS / 1000,
      bullmq: `${packageVersion("bullmq")} (ioredis ${packageVersion("ioredis")}), Worker concurrency ${o.peerConcurrency}, default job options`,
      redis: `${redisVersion(redisBin)}, --save "" --appendonly no (memory only)`,
      "raw JetStream": `own nats-server, file stream like jetshard's JOBS (work queue), 1 pull consumer, worker concurrency ${o.peerConcurrency}`,
      "jetshard worker": `1 process at its defaults (concurrency ${process.env.JETSHARD_WORKER_CONCURRENCY ?? "default, listed under the workers below"}); models uploaded without parameters (small: batching on by default; noop: fixed shape, no batching)`,
      "noop job": "BullMQ and raw: the processor returns its one-value input; jetshard: an Identity model on a [1,1] FP32 tensor",
      "small job": "one row of the small MLP (784 inputs, 10 outputs) through onnxruntime-node (default options) in every worker",
      "outputs": "every job's output is checked against the expected values; a wrong one counts as an error",
    },
    inFlight: o.inFlight,
    completion: COMPLETION,
    rows,
    skipped,
    elapsedS: (Date.now() - started) / 1000,
    deployments,
    logs,
    observations,
    failures,
  };
}
