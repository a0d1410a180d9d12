/**
 * Drives a fuzz run against a running gateway: uploads the models the generator aims at, sends the generated
 * requests with bounded concurrency and time, counts statuses per route and keeps every answer that breaks the
 * contract (a 5xx other than 503, a 504 before the request's deadline, no answer at all). Shared by
 * test/e2e/fuzz.test.ts and `npm run fuzz`.
 */
import http from "node:http";
import { Writable } from "node:stream";
import { pino, type Logger } from "pino";
import { DEMO_CNN, DEMO_CNN_SHARDS, DEMO_MLP, demoCnnBytes, demoMlpBytes } from "#shared/demo.js";
import { encodeModel, mlp } from "#shared/onnx/builder.js";
import { identityAllTypes } from "../helpers/models.js";
import { createRequestGenerator, type FuzzModel, type FuzzRequest, type FuzzTargets, type GeneratorOptions } from "./requests.js";

/** The identity model of every JSON datatype (test/helpers/models.ts). */
export const IDENTITY = "identity-types";

/** Models the fuzz stack serves; a worker should serve exactly these (JETSHARD_SERVE). */
export const SERVED = [DEMO_MLP, IDENTITY, DEMO_CNN];

/** A valid experiment spec for the generator to mutate: small, with an uploaded NASWOT minibatch to get wrong. */
export const EXPERIMENT_SPEC = {
  name: "fz",
  family: "mlp",
  familyOptions: { inputShape: [4], classes: 3 },
  searchSpace: { depth: { _type: "choice", _value: [1, 2] }, width: { _type: "choice", _value: [8, 16] } },
  strategy: { name: "evolution", population: 4, sample: 2 },
  objective: { metric: "naswot", direction: "maximize" },
  constraints: [{ metric: "params", max: 100000 }],
  maxTrials: 4,
  concurrency: 1,
  evaluator: { metrics: ["naswot", "params"], input: { shape: [2, 4], data: Buffer.from(new Float32Array([1, 2, 3, 4, 5, 6, 7, 8]).buffer).toString("base64") } },
  seed: 1,
};

/** The last request sent on each keep-alive socket: a request that finds its socket closed names it. */
const lastOnSocket = new WeakMap<object, string>();

export interface Answer {
  /** HTTP status; 0: no answer (`error` says why); -1: Node refused to send the request. */
  status: number;
  body: string;
  error?: string;
  /** The server had closed the reused keep-alive socket: the request was sent again on a new connection. */
  resent?: string;
}

/**
 * One plain HTTP exchange on a keep-alive agent. When a reused socket turns out to be closed (the server closed
 * it as the request went out: any HTTP client meets this race), the request is sent once more on a new
 * connection, as undici does for idempotent requests, and `resent` says what had used the socket.
 */
export async function send(base: string, agent: http.Agent, r: FuzzRequest, timeoutMs: number): Promise<Answer> {
  const first = await sendOnce(base, agent, r, timeoutMs);
  if (!first.reusedClosed) return first;
  const again = await sendOnce(base, false, r, timeoutMs);
  return { ...again, resent: first.error };
}

function sendOnce(base: string, agent: http.Agent | false, r: FuzzRequest, timeoutMs: number): Promise<Answer & { reusedClosed?: boolean }> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (v: Answer & { reusedClosed?: boolean }) => {
      if (!settled) {
        settled = true;
        resolve(v);
      }
    };
    let req: http.ClientRequest;
    try {
      req = http.request(base + r.path, {
        method: r.method,
        agent,
        timeout: timeoutMs,
        headers: { ...r.headers, ...(r.body ? { "content-length": String(r.body.byteLength) } : {}) },
      });
    } catch (err) {
      // Node refused to send it (a character not allowed in a header or path): not the server's doing
      return done({ status: -1, body: "", error: (err as Error).message });
    }
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (c: Buffer) => {
        if (size < 64 * 1024) chunks.push(c);
        size += c.length;
      });
      res.on("end", () => done({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", (err) => done({ status: res.statusCode ?? 0, body: "", error: err.message }));
    });
    let previous: string | undefined;
    req.on("socket", (socket) => {
      previous = lastOnSocket.get(socket);
      lastOnSocket.set(socket, `${r.method} ${r.path.slice(0, 80)} [${r.note}]`);
    });
    req.on("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on("error", (err) => {
      const code = (err as NodeJS.ErrnoException).code;
      // req.reusedSocket misses a socket handed straight from one queued request to the next
      const reusedClosed = previous !== undefined && (code === "ECONNRESET" || code === "EPIPE");
      done({ status: 0, body: "", error: `${err.message}${previous ? ` (socket last used by ${previous})` : " (fresh socket)"}`, reusedClosed });
    });
    req.end(r.body);
  });
}

async function call(base: string, method: string, path: string, body?: Uint8Array | string, headers: Record<string, string> = {}) {
  const res = await fetch(base + path, { method, body: body as RequestInit["body"], headers });
  const text = await res.text();
  return { status: res.status, text };
}

/** Polls `fn` until it returns true or `timeoutMs` passes (then throws naming `what`). */
async function until(what: string, fn: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Uploads the served models through the gateway at `base`, waits until each is ready, and returns the targets:
 * the models' metadata as the gateway reports it, scratch names to upload to, a small ONNX model, a spec.
 */
export async function prepareTargets(base: string, headers: Record<string, string> = {}): Promise<FuzzTargets> {
  const uploads: Array<[string, Uint8Array, string]> = [
    [DEMO_MLP, demoMlpBytes(), ""],
    [IDENTITY, identityAllTypes(), ""],
    [DEMO_CNN, demoCnnBytes(), `?shards=${DEMO_CNN_SHARDS}`],
  ];
  const models: FuzzModel[] = [];
  for (const [name, bytes, q] of uploads) {
    const up = await call(base, "PUT", `/v1/models/${name}${q}`, bytes, { ...headers, "content-type": "application/octet-stream" });
    if (up.status !== 201) throw new Error(`uploading ${name}: ${up.status} ${up.text}`);
    await until(`model ${name} ready`, async () => (await call(base, "GET", `/v2/models/${name}/ready`, undefined, headers)).status === 200);
    const meta = JSON.parse((await call(base, "GET", `/v2/models/${name}`, undefined, headers)).text) as FuzzModel;
    models.push({ name, inputs: meta.inputs, outputs: meta.outputs });
  }
  return {
    models,
    scratchModels: ["fz-a", "fz-b", "fz-c"],
    onnx: encodeModel(mlp({ layers: [4, 8, 3], seed: 5 })),
    experimentSpec: EXPERIMENT_SPEC,
    jobIds: [],
    experimentIds: [],
  };
}

/** A valid v2 request for a served model (what the health check at the end sends). */
export function validRequest(model: FuzzModel): { inputs: unknown[] } {
  return {
    inputs: model.inputs.map((s) => {
      const shape = s.shape.map((d) => (d < 0 ? 1 : d));
      const n = shape.reduce((a, b) => a * b, 1);
      return { name: s.name, shape, datatype: s.datatype, data: Array.from({ length: n }, (_, i) => (s.datatype === "BOOL" ? i % 2 === 0 : i % 3)) };
    }),
  };
}

/** An answer that breaks the contract. */
export interface FuzzFailure {
  index: number;
  route: string;
  method: string;
  path: string;
  status: number;
  ms: number;
  note: string;
  /** The start of the request body. */
  body: string;
  answer: string;
}

export interface FuzzReport {
  seed: number;
  sent: number;
  elapsedMs: number;
  /** Whether the time budget ran out before every request was sent. */
  stoppedEarly: boolean;
  /** Status counts per route ("0": no answer, "-1": the client refused to send it). */
  byRoute: Record<string, Record<string, number>>;
  failures: FuzzFailure[];
  /** Failures by kind: "500 POST /v1/jobs", "no answer GET /", … */
  failureKinds: Record<string, number>;
  /** The first answer of each route and status other than 2xx, 400 and 404 ("413 PUT /v1/models/:model" → …). */
  examples: Record<string, string>;
  /** Requests sent again because the server had closed their keep-alive socket, by what had used it last. */
  resent: number;
  resentAfter: string[];
}

export interface RunOptions {
  /** Base URL of the gateway. */
  url: string;
  seed: number;
  requests: number;
  targets: FuzzTargets;
  /** Requests in flight at once. */
  concurrency?: number;
  /** Stop sending after this long (what is in flight still finishes). */
  timeBudgetMs?: number;
  /** Client-side limit per request; past it the request counts as unanswered. */
  requestTimeoutMs?: number;
  /** The gateway's JETSHARD_REQUEST_TIMEOUT_MS: a 504 before it (or the request's own deadline) is a failure. */
  gatewayTimeoutMs: number;
  headers?: GeneratorOptions["headers"];
  onProgress?: (sent: number, report: FuzzReport) => void;
}

const INFER_ROUTE = /\/infer$/;

/** Why an answer breaks the contract, or null when it does not. */
export function judge(r: FuzzRequest, status: number, ms: number, gatewayTimeoutMs: number): string | null {
  if (status === -1) return null;
  if (status === 0) return "no answer";
  if (status < 500 || status === 503) return null;
  if (status === 504 && INFER_ROUTE.test(r.route)) {
    // a deadline is genuine only once it has passed
    const deadline = Math.min(r.deadlineMs ?? gatewayTimeoutMs, gatewayTimeoutMs);
    if (ms >= deadline - 5) return null;
  }
  return String(status);
}

/** Sends `requests` generated requests (or as many as the time budget allows) and reports. */
export async function runFuzz(opts: RunOptions): Promise<FuzzReport> {
  const concurrency = opts.concurrency ?? 8;
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const gen = createRequestGenerator({ seed: opts.seed, targets: opts.targets, headers: opts.headers });
  const report: FuzzReport = { seed: opts.seed, sent: 0, elapsedMs: 0, stoppedEarly: false, byRoute: {}, failures: [], failureKinds: {}, examples: {}, resent: 0, resentAfter: [] };
  const t0 = Date.now();
  const budget = opts.timeBudgetMs ?? Infinity;
  const pool = (ids: string[], id: unknown) => {
    if (typeof id !== "string") return;
    ids.push(id);
    if (ids.length > 200) ids.shift();
  };
  let next = 0;
  const lane = async () => {
    while (next < opts.requests) {
      if (Date.now() - t0 > budget) {
        report.stoppedEarly = true;
        return;
      }
      const index = next++;
      const r = gen.next();
      const start = performance.now();
      const res = await send(opts.url, agent, r, opts.requestTimeoutMs ?? 60_000);
      const ms = performance.now() - start;
      report.sent++;
      if (res.resent) {
        report.resent++;
        if (report.resentAfter.length < 20) report.resentAfter.push(res.resent.slice(0, 300));
      }
      const counts = (report.byRoute[r.route] ??= {});
      counts[String(res.status)] = (counts[String(res.status)] ?? 0) + 1;
      const key = `${res.status} ${r.route}`;
      if (!(res.status < 300 || res.status === 400 || res.status === 404) && !(key in report.examples)) {
        report.examples[key] = `${r.method} ${r.path.slice(0, 100)} [${r.note.slice(0, 100)}] → ${(res.error ?? res.body).slice(0, 200)}`;
      }
      const why = judge(r, res.status, ms, opts.gatewayTimeoutMs);
      if (why) {
        const kind = `${why} ${r.route}`;
        report.failureKinds[kind] = (report.failureKinds[kind] ?? 0) + 1;
        if (report.failures.length < 200) {
          const body = r.body ? Buffer.from(r.body.subarray(0, 300)).toString("utf8") : "";
          report.failures.push({ index, route: r.route, method: r.method, path: r.path.slice(0, 200), status: res.status, ms: Math.round(ms), note: r.note, body, answer: (res.error ?? res.body).slice(0, 300) });
        }
      }
      if (res.status >= 200 && res.status < 300) {
        try {
          if (r.route === "POST /v1/jobs") pool(opts.targets.jobIds, (JSON.parse(res.body) as { id?: unknown }).id);
          if (r.route === "POST /v1/experiments") pool(opts.targets.experimentIds, (JSON.parse(res.body) as { id?: unknown }).id);
        } catch {
          // not JSON: nothing to learn
        }
      }
      if (report.sent % 1000 === 0) opts.onProgress?.(report.sent, report);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
  agent.destroy();
  report.elapsedMs = Date.now() - t0;
  return report;
}

/** Total of answers that break the contract. */
export const failureCount = (r: FuzzReport) => Object.values(r.failureKinds).reduce((a, b) => a + b, 0);

/** The report as a table: one row per route, one column per status, then the failures. */
export function formatReport(r: FuzzReport): string {
  const statuses = [...new Set(Object.values(r.byRoute).flatMap((c) => Object.keys(c)))].sort((a, b) => Number(a) - Number(b));
  const routes = Object.keys(r.byRoute).sort();
  const w = Math.max(...routes.map((x) => x.length), 5);
  const lines = [
    `seed ${r.seed}: ${r.sent} requests in ${(r.elapsedMs / 1000).toFixed(1)} s${r.stoppedEarly ? " (time budget reached)" : ""}`,
    `${"route".padEnd(w)} ${statuses.map((s) => s.padStart(6)).join(" ")}`,
    ...routes.map((route) => `${route.padEnd(w)} ${statuses.map((s) => String(r.byRoute[route]![s] ?? "").padStart(6)).join(" ")}`),
  ];
  const total = failureCount(r);
  lines.push("first answer of each other status:", ...Object.entries(r.examples).sort().map(([k, v]) => `  ${k}: ${v}`));
  if (r.resent) lines.push(`sent again on a new connection (the server had closed the keep-alive socket): ${r.resent}`, ...r.resentAfter.slice(0, 5).map((x) => `  ${x}`));
  lines.push(`responses >= 500 other than 503 (and 504 past the deadline), or no answer: ${total}`);
  for (const [k, n] of Object.entries(r.failureKinds)) lines.push(`  ${n} × ${k}`);
  for (const f of r.failures.slice(0, 20)) lines.push(`  #${f.index} ${f.status} ${f.method} ${f.path} (${f.ms} ms) [${f.note}] → ${f.answer.slice(0, 160)} | body: ${f.body.slice(0, 120)}`);
  return lines.join("\n");
}

/**
 * A pino logger that keeps what the services log at error level (the 500s' causes), besides writing nothing.
 * `errors()` gives the distinct "msg: err stack (first lines)" seen, with counts.
 */
export function capturingLogger(): { log: Logger; errors(): Record<string, number> } {
  const seen: Record<string, number> = {};
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split("\n")) {
        if (!line) continue;
        try {
          const j = JSON.parse(line) as { level?: number; msg?: string; err?: { message?: string; stack?: string } };
          if ((j.level ?? 0) >= 50) {
            const k = `${j.msg}: ${(j.err?.stack ?? j.err?.message ?? "").split("\n").slice(0, 3).join(" | ")}`.slice(0, 400);
            if (k in seen || Object.keys(seen).length < 100) seen[k] = (seen[k] ?? 0) + 1;
          }
        } catch {
          // not a log line
        }
      }
      cb();
    },
  });
  return { log: pino({ level: "error" }, sink), errors: () => ({ ...seen }) };
}

/** Records unhandled rejections and uncaught exceptions in this process while a run lasts. */
export function watchCrashes(): { crashes: string[]; stop(): void } {
  const crashes: string[] = [];
  const onRejection = (reason: unknown) => crashes.push(`unhandled rejection: ${reason instanceof Error ? reason.stack : String(reason)}`);
  const onException = (err: Error) => crashes.push(`uncaught exception: ${err.stack}`);
  process.on("unhandledRejection", onRejection);
  process.on("uncaughtException", onException);
  return {
    crashes,
    stop() {
      process.off("unhandledRejection", onRejection);
      process.off("uncaughtException", onException);
    },
  };
}
