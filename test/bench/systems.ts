/**
 * Starting the systems under test as separate processes, like production: the plain Hono server, and a
 * jetshard stack (nats-server, gateway, workers). Both answer the same v2 infer URL shape.
 */
import { mkdtemp, readFile } from "node:fs/promises";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { startNatsServer } from "#shared/nats-server.js";
import { adopt, freePort, startChild, trackDir, waitUntil, type Child, type LogSummary } from "./children.js";

/** The repository root. */
export const ROOT = path.resolve(import.meta.dirname, "../..");

/** v2 infer URL of `model` on the server at `base`. */
export const inferUrl = (base: string, model: string) => `${base}/v2/models/${model}/infer`;

/**
 * Worker heartbeat for the benchmark (default 5000): shorter, so the per-worker processed counts read after a
 * run are current. One KV write a second per worker costs nothing measurable. JETSHARD_HEARTBEAT_MS overrides.
 */
export const HEARTBEAT_MS = Number(process.env.JETSHARD_HEARTBEAT_MS ?? 1000);

/**
 * Node flags of every jetshard process: JETSHARD_BENCH_CPU_PROF=DIR writes a V8 CPU profile of each gateway and
 * worker into DIR when it exits (`node --cpu-prof` is not allowed in NODE_OPTIONS).
 */
const nodeFlags = process.env.JETSHARD_BENCH_CPU_PROF ? ["--cpu-prof", `--cpu-prof-dir=${process.env.JETSHARD_BENCH_CPU_PROF}`] : [];

/** Env of every jetshard process: the caller's (so JETSHARD_WORKER_CONCURRENCY etc. pass through) plus ours. */
function jetshardEnv(natsUrl: string, dataDir: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    JETSHARD_NATS_URL: natsUrl,
    JETSHARD_HOST: "127.0.0.1",
    JETSHARD_DATA_DIR: dataDir,
    JETSHARD_LOG_LEVEL: "warn",
    JETSHARD_NAS: "0",
    JETSHARD_SEED_DEMO: "0",
    JETSHARD_HEARTBEAT_MS: String(HEARTBEAT_MS),
    // several workers per host: each a free ops port
    JETSHARD_OPS_PORT: "0",
    ...extra,
  };
}

/**
 * One HTTP request on its own connection. Not fetch: its pooled keep-alive sockets fail the next request with
 * "other side closed" when a server answered early without reading an upload body and then closed the socket.
 */
export function request(method: string, url: string, body?: string | Buffer, contentType = "application/json", timeoutMs = 30_000): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent: false, timeout: timeoutMs, headers: body === undefined ? {} : { "content-type": contentType, "content-length": Buffer.byteLength(body) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
      res.on("error", reject);
    });
    // an early answer may close the socket while the body is still being written; the answer is what counts
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error(`${method} ${url}: no answer within ${timeoutMs} ms`)));
    req.end(body);
  });
}

async function getJson(url: string): Promise<unknown> {
  const res = await request("GET", url);
  if (res.status !== 200) throw new Error(`GET ${url}: ${res.status} ${res.text.slice(0, 300)}`);
  return JSON.parse(res.text);
}

/** A running plain server. */
export interface PlainServer {
  base: string;
  child: Child;
  stop(): Promise<void>;
}

/** Starts test/bench/plain-server.ts serving `file` as `name`; resolves once it listens. */
export async function startPlainServer(name: string, file: string): Promise<PlainServer> {
  const child = startChild("plain-server", process.execPath, ["--import", "tsx", path.join(ROOT, "test/bench/plain-server.ts"), "--model", file, "--name", name, "--port", "0"], {
    cwd: ROOT,
    env: process.env,
  });
  const port = await waitUntil("the plain server to listen", async () => /\{"listening":(\d+)\}/.exec(child.tail())?.[1], { timeoutMs: 60_000, watch: [child] });
  return { base: `http://127.0.0.1:${port}`, child, stop: () => child.stop() };
}

/** A running floor system (floor-server.ts): its own nats-server, one front, one worker. */
export interface FloorSystem {
  base: string;
  children: Child[];
  stop(): Promise<void>;
}

/** Starts the floor: a nats-server, one minimal ORT worker for `file`, and the minimal front; resolves once it listens. */
export async function startFloor(name: string, file: string): Promise<FloorSystem> {
  const nats = await startNatsServer();
  const natsChild = adopt("floor nats-server", nats.proc, "nats");
  trackDir(path.dirname(nats.storeDir));
  const script = path.join(ROOT, "test/bench/floor-server.ts");
  const children: Child[] = [natsChild];
  const stop = async () => {
    for (const c of children.slice(1).reverse()) await c.stop();
    await natsChild.stop();
  };
  try {
    const worker = startChild("floor-worker", process.execPath, ["--import", "tsx", script, "--role", "worker", "--nats", nats.url, "--model", file], { cwd: ROOT, env: process.env });
    children.push(worker);
    await waitUntil("the floor worker to subscribe", async () => worker.tail().includes('{"ready":true}'), { timeoutMs: 60_000, watch: [worker] });
    const front = startChild("floor-front", process.execPath, ["--import", "tsx", script, "--role", "front", "--nats", nats.url, "--name", name], { cwd: ROOT, env: process.env });
    children.push(front);
    const port = await waitUntil("the floor front to listen", async () => /\{"listening":(\d+)\}/.exec(front.tail())?.[1], { timeoutMs: 60_000, watch: [front] });
    return { base: `http://127.0.0.1:${port}`, children, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** Model settings asked for at upload (query parameters of PUT /v1/models/{m}). */
export type UploadParams = Record<string, string>;

/** A running jetshard: nats-server, one gateway, `workers` workers, each its own process. */
export interface JetshardStack {
  base: string;
  /** The stack's nats-server, for clients that talk to jetshard over NATS (shared/client.ts). */
  natsUrl: string;
  children: Child[];
  /**
   * Uploads `file` as `name` with `params`; returns notes on what the gateway did with them: rejected (then
   * uploaded again without them), or not visible in the model record/metadata (probably ignored).
   */
  upload(name: string, file: string, params: UploadParams): Promise<string[]>;
  /** Things jetshard did that a client would trip over, seen while setting up (not specific to one configuration). */
  readonly observations: string[];
  /** Waits until the gateway says `name` is ready and every worker lists it. */
  waitReady(name: string, timeoutMs: number): Promise<void>;
  /** One line per live worker: the shards it serves and the jobs it has processed (as of its last heartbeat). */
  workers(): Promise<string[]>;
  /** Warnings and errors each jetshard process logged so far. */
  logs(): Record<string, LogSummary>;
  stop(): Promise<void>;
}

/** First value of `key` anywhere in `v` (depth-first), or undefined. */
function findKey(v: unknown, key: string): unknown {
  if (!v || typeof v !== "object") return undefined;
  if (key in v) return (v as Record<string, unknown>)[key];
  for (const x of Object.values(v)) {
    const found = findKey(x, key);
    if (found !== undefined) return found;
  }
  return undefined;
}

/** Starts nats-server (temp store, free ports), a gateway and `workers` workers. */
export async function startJetshard(workers: number): Promise<JetshardStack> {
  const nats = await startNatsServer();
  const natsChild = adopt("nats-server", nats.proc, "nats");
  trackDir(path.dirname(nats.storeDir));
  const children: Child[] = [natsChild];
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const bin = path.join(ROOT, "bin/jetshard.js");
  const gwDir = trackDir(await mkdtemp(path.join(os.tmpdir(), "jetshard-bench-gw-")));
  const gateway = startChild("gateway", process.execPath, [...nodeFlags, bin, "gateway"], { cwd: ROOT, env: jetshardEnv(nats.url, gwDir, { JETSHARD_PORT: String(port) }) });
  children.push(gateway);
  const stack: JetshardStack = {
    base,
    natsUrl: nats.url,
    children,
    observations: [],
    async upload(name, file, params) {
      const notes: string[] = [];
      const bytes = await readFile(file);
      const put = (qs: URLSearchParams) => request("PUT", `${base}/v1/models/${name}${qs.size ? `?${qs}` : ""}`, bytes, "application/octet-stream", 180_000);
      // Ask for everything; if the gateway refuses, drop the batching settings, then everything.
      const shardsOnly: UploadParams = params.shards === undefined ? {} : { shards: params.shards };
      const candidates = [params, shardsOnly, {}].filter((p, i, all) => all.findIndex((q) => JSON.stringify(q) === JSON.stringify(p)) === i);
      let r = { status: 0, text: "" };
      let used: UploadParams = {};
      for (const p of candidates) {
        used = p;
        r = await put(new URLSearchParams(p));
        if (r.status < 400 || r.status >= 500 || Object.keys(p).length === 0) break;
        notes.push(`gateway rejected ?${new URLSearchParams(p)} (${r.status} ${r.text.slice(0, 160)})`);
      }
      if (notes.length) notes.push(`uploaded with ${Object.keys(used).length ? `?${new URLSearchParams(used)}` : "no parameters"}`);
      if (r.status >= 300) throw new Error(`PUT /v1/models/${name}: ${r.status} ${r.text.slice(0, 300)}`);
      // the gateway answers from a mirror of the models bucket, which may lag its own write
      const t0 = Date.now();
      let tries = 0;
      const record = await waitUntil(
        `GET /v1/models/${name} after its upload`,
        async () => {
          tries++;
          return getJson(`${base}/v1/models/${name}`);
        },
        { timeoutMs: 15_000, everyMs: 20 },
      );
      if (tries > 1) stack.observations.push(`GET /v1/models/${name} did not find the model for ~${Date.now() - t0} ms after its PUT had returned ${r.status}`);
      const metadata = await getJson(`${base}/v2/models/${name}`);
      const seen = [JSON.parse(r.text) as unknown, record, metadata];
      for (const key of ["maxBatchSize", "maxQueueDelayUs"]) {
        if (used[key] === undefined) continue;
        const got = seen.map((v) => findKey(v, key)).find((v) => v !== undefined);
        if (got === undefined) notes.push(`${key} not in model record or metadata (ignored?)`);
        else if (Number(got) !== Number(params[key])) notes.push(`${key} is ${String(got)}, asked ${params[key]}`);
      }
      const rec = record as { latest?: number; versions?: Array<{ version: number; shards?: unknown[] }> };
      const shards = rec.versions?.find((v) => v.version === rec.latest)?.shards?.length;
      const wanted = Number(params.shards ?? 1);
      if (shards !== wanted) notes.push(`asked ${wanted} shard(s), model has ${shards ?? "?"}`);
      return notes;
    },
    async waitReady(name, timeoutMs) {
      await waitUntil(
        `model ${name} to be ready on ${workers} worker(s)`,
        async () => {
          if ((await request("GET", `${base}/v2/models/${name}/ready`)).status !== 200) return false;
          const list = (await getJson(`${base}/v1/workers`)) as { workers?: Array<{ models?: string[] }> };
          return (list.workers ?? []).filter((w) => w.models?.includes(name)).length >= workers;
        },
        { timeoutMs, everyMs: 200, watch: children },
      );
    },
    async workers() {
      const list = (await getJson(`${base}/v1/workers`)) as { workers?: Array<{ id: string; shards?: string[]; processed?: number; failed?: number; concurrency?: number }> };
      return (list.workers ?? []).map((w) => `${w.id}: serves ${w.shards?.join(", ") || "nothing"}; concurrency ${w.concurrency ?? "?"}; processed ${w.processed ?? "?"}, failed ${w.failed ?? "?"}`);
    },
    logs: () => Object.fromEntries(children.map((c) => [c.name, c.logs()])),
    async stop() {
      // workers first (they drain), then the gateway, then NATS
      await Promise.all(children.filter((c) => c.name.startsWith("worker")).map((c) => c.stop()));
      await gateway.stop();
      await natsChild.stop();
    },
  };
  try {
    await waitUntil("the gateway to listen", async () => (await request("GET", `${base}/v2/health/live`)).status === 200, { timeoutMs: 60_000, watch: children });
    // Workers start once the gateway has created the streams, buckets and object stores: processes that create
    // them at the same moment on a fresh server can race (one saw "object store not found" and exited).
    for (let i = 1; i <= workers; i++) {
      const dir = trackDir(await mkdtemp(path.join(os.tmpdir(), "jetshard-bench-worker-")));
      children.push(startChild(`worker-${i}`, process.execPath, [...nodeFlags, bin, "worker"], { cwd: ROOT, env: jetshardEnv(nats.url, dir, { JETSHARD_PORT: "0" }) }));
    }
    await waitUntil(
      `${workers} worker(s) to register`,
      async () => (((await getJson(`${base}/v1/workers`)) as { workers?: unknown[] }).workers?.length ?? 0) >= workers,
      { timeoutMs: 60_000, everyMs: 200, watch: children },
    );
  } catch (err) {
    await stack.stop();
    throw err;
  }
  return stack;
}

/**
 * Sends `parallel` requests at a time until two rounds in a row all succeed, so first-use costs (fetching the
 * model from the object store, creating ORT sessions on every worker) stay out of the measurement.
 * Throws with the last failure after `timeoutMs`.
 */
export async function prime(url: string, body: string, parallel: number, timeoutMs: number): Promise<void> {
  let good = 0;
  await waitUntil(
    `${url} to answer`,
    async () => {
      try {
        await Promise.all(
          Array.from({ length: parallel }, async () => {
            const res = await request("POST", url, body);
            if (res.status !== 200) throw new Error(`${res.status} ${res.text.slice(0, 300)}`);
          }),
        );
      } catch (err) {
        good = 0;
        throw err;
      }
      return ++good >= 2;
    },
    { timeoutMs, everyMs: 50 },
  );
}
