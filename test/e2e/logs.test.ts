/**
 * Central logs: gateways, workers and controllers publish their records to the bounded LOGS stream; readLogs
 * follows one job through the gateway, every pipeline stage and its retries; publishing survives NATS going away.
 */
import t, { type Test } from "tap";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { loadConfig } from "#shared/config.js";
import { createLogger, type Logger } from "#shared/log.js";
import { attachLogs, logPublisherOf, readLogs, type LogRecord, type ReadLogsOptions } from "#shared/logs.js";
import { addModel } from "#shared/model-repo.js";
import { connectNats } from "#shared/nats.js";
import { encodeModel, mlp } from "#shared/onnx/builder.js";
import { STREAMS } from "#shared/subjects.js";
import { createGateway } from "../../services/gateway/gateway.js";
import { createWorker } from "../../services/worker/worker.js";
import { startStack, waitFor, type Stack } from "../helpers/stack.js";

const BYTES = encodeModel(mlp({ layers: [4, 16, 16, 3], seed: 3 }));
const INPUT = [{ name: "input", shape: [1, 4], datatype: "FP32", data: [1, 2, 3, 4] }];

/** A logger that publishes to LOGS (and writes nothing locally), as main.ts builds it for `name`. */
const central = (name: string, level = "debug") => createLogger({ level, name, central: true, destination: null });

async function read(stack: Stack, opts: ReadLogsOptions = {}): Promise<LogRecord[]> {
  const out: LogRecord[] = [];
  await readLogs(stack.infra.nc, opts, (r) => out.push(r));
  return out;
}

const send = async (url: string, method: string, body?: unknown) => {
  const r = await fetch(url, { method, headers: { "content-type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: r.status, body: (await r.json()) as any };
};

async function services(t: Test, stack: Stack) {
  const gw = createGateway({ config: loadConfig(stack.env), log: central("gateway") });
  await gw.start();
  t.teardown(() => gw.stop());
  const cache = await mkdtemp(path.join(os.tmpdir(), "jetshard-logs-cache-"));
  t.teardown(() => rm(cache, { recursive: true, force: true }));
  const worker = createWorker({ config: loadConfig({ ...stack.env, JETSHARD_CACHE_DIR: cache }), log: central("worker") });
  return { gw, worker };
}

t.test("one job submitted over HTTP is followed through the gateway, both stages of a 2-shard model and a retry", async (t) => {
  const stack = await startStack(t, { JETSHARD_MAX_ATTEMPTS: "10", JETSHARD_RETRY_BASE_MS: "100" });
  const { gw, worker } = await services(t, stack);
  const mv = await addModel(stack.infra, "pipe", BYTES, { shards: 2 });
  t.equal(mv.shards.length, 2);
  // shard 1 cannot be fetched until we put it back: its first runs fail with a retryable error
  const shard1 = mv.shards[1]!.object;
  const shard1Bytes = (await stack.infra.objects.getBlob(shard1))!;
  await stack.infra.objects.delete(shard1);
  await worker.start();
  t.teardown(() => worker.stop());

  // follow everything from now on
  const followed: LogRecord[] = [];
  const stop = new AbortController();
  const following = readLogs(stack.infra.nc, { follow: true, signal: stop.signal }, (r) => followed.push(r));
  t.teardown(() => stop.abort());

  const sub = await send(`${gw.url}/v1/jobs`, "POST", { model: "pipe", inputs: INPUT });
  t.equal(sub.status, 202, JSON.stringify(sub.body));
  const id: string = sub.body.id;
  const retry = await waitFor("a retry record of the job, followed live", () => followed.find((r) => r.record.job === id && r.level === "warn"), 20_000);
  t.match(retry, { service: "worker", record: { job: id, subject: "jetshard.stage.pipe.1", attempt: 1, msg: /will be redelivered/ } }, "the failed first run of shard 1");
  await stack.infra.objects.putBlob({ name: shard1 }, shard1Bytes);
  const done = (await send(`${gw.url}/v1/jobs/${id}?wait=20s`, "GET")).body;
  t.match(done, { status: "succeeded" });

  const steps = await waitFor("the job's last step in LOGS", async () => {
    const rs = await read(stack, { job: id });
    return rs.some((r) => r.record.subject === "jetshard.stage.pipe.1" && r.record.msg === "job step done") ? rs : null;
  });
  t.ok(steps.every((r) => r.record.job === id), "only the job's records");
  t.ok(steps.some((r) => r.service === "gateway" && r.record.msg === "job queued"), "the gateway queued it");
  t.ok(steps.some((r) => r.service === "worker" && r.record.subject === "jetshard.infer.pipe" && r.record.msg === "job step done"), "shard 0 ran it");
  const last = steps.find((r) => r.record.subject === "jetshard.stage.pipe.1" && r.record.msg === "job step done")!;
  t.ok((last.record.attempt as number) > 1, "shard 1 ran it on a later attempt");
  t.ok(steps.findIndex((r) => r.record.msg === "job queued") < steps.indexOf(last), "oldest first");
  t.ok(steps.every((r, i) => i === 0 || r.seq > steps[i - 1]!.seq), "in stream order");
  t.equal((await read(stack, { job: "no-such-job" })).length, 0, "another job id matches nothing");

  // filters
  const warns = await read(stack, { level: "warn" });
  t.ok(warns.length > 0 && warns.every((r) => (r.record.level as number) >= 40), "level: warn and above only");
  const fromGateway = await read(stack, { service: "gateway" });
  t.ok(fromGateway.some((r) => r.record.msg === "gateway listening"), "the gateway's own records");
  t.ok(fromGateway.every((r) => r.service === "gateway" && r.record.name === "gateway"), "service: the gateway's only");
  const lastTwo = await read(stack, { service: "gateway", limit: 2 });
  t.same(lastTwo.map((r) => r.seq), fromGateway.slice(-2).map((r) => r.seq), "limit: the last records");
  const all = await read(stack);
  t.same((await read(stack, { limit: 3 })).map((r) => r.seq), all.slice(-3).map((r) => r.seq), "limit without filters");

  // since: only what was logged from then on
  const mark = Date.now() + 2;
  await waitFor("the clock to pass the mark", () => Date.now() > mark, 1_000, 1);
  const gwLog = central("gateway");
  attachLogs(gwLog, stack.infra.nc);
  gwLog.info({ probe: "after-mark" }, "logged after the mark");
  const since = await waitFor("the record after the mark", async () => {
    const rs = await read(stack, { since: mark });
    return rs.length > 0 ? rs : null;
  });
  t.same(since.map((r) => r.record.msg), ["logged after the mark"], "since: nothing older");
  await t.rejects(read(stack, { level: "loud" }), { code: "BAD_REQUEST", message: /level: must be one of/ });
  await t.rejects(read(stack, { service: "db" }), { code: "BAD_REQUEST", message: /service: must be one of gateway, worker, controller/ });

  stop.abort();
  t.ok((await following) >= 1, "following ends when aborted");
});

t.test("follow mode delivers a record logged after it started, and the last stored ones first with a limit", async (t) => {
  const stack = await startStack(t);
  const nc = await connectNats(stack.config, "logs-follow");
  t.teardown(() => nc.close());
  const log = central("controller", "info");
  attachLogs(log, nc);
  for (let i = 0; i < 5; i++) log.info({ i }, "before");
  await waitFor("the records in LOGS", async () => (await read(stack, { service: "controller" })).length === 5);
  const got: LogRecord[] = [];
  const stop = new AbortController();
  const following = readLogs(stack.infra.nc, { follow: true, service: "controller", limit: 2, signal: stop.signal }, (r) => got.push(r));
  await waitFor("the last two stored records", () => got.length === 2);
  t.same(got.map((r) => r.record.i), [3, 4]);
  log.warn({ i: 5 }, "after");
  await waitFor("the new record", () => got.length === 3);
  t.match(got[2], { service: "controller", level: "warn", record: { i: 5, msg: "after", name: "controller" } });
  stop.abort();
  t.equal(await following, 3);
});

t.test("LOGS stays within its byte limit, discarding the oldest records", async (t) => {
  const stack = await startStack(t, { JETSHARD_LOGS_MAX_MB: "0.05" });
  const info = await stack.infra.jsm.streams.info(STREAMS.logs);
  t.equal(info.config.max_bytes, Math.floor(0.05 * 1024 * 1024));
  const log = central("worker", "info");
  attachLogs(log, stack.infra.nc);
  const pad = "x".repeat(400);
  for (let i = 0; i < 400; i++) log.info({ i, pad }, "filler");
  await stack.infra.nc.flush();
  const state = await waitFor("the last record stored", async () => {
    const s = (await stack.infra.jsm.streams.info(STREAMS.logs)).state;
    return s.last_seq >= 400 ? s : null;
  });
  t.ok(state.bytes <= 0.05 * 1024 * 1024, `${state.bytes} bytes stored`);
  t.ok(state.first_seq > 1, "the oldest were discarded");
  const rest = await read(stack, { service: "worker" });
  t.equal(rest.at(-1)?.record.i, 399, "the newest are kept");
  t.equal(logPublisherOf(log)?.stats().dropped, 0, "nothing dropped on the publishing side");
});

t.test("a process keeps logging while NATS is down, bounded and without blocking, and catches up after", async (t) => {
  const stack = await startStack(t);
  const nc = await connectNats(stack.config, "logs-outage");
  t.teardown(() => nc.close());
  const log = central("worker", "info");
  attachLogs(log, nc);
  const publisher = logPublisherOf(log)!;
  log.info("before the outage");
  await waitFor("the first record", async () => (await read(stack, { service: "worker" })).length === 1);

  await stack.nats.kill();
  await waitFor("the publisher to notice", () => !publisher.stats().connected);
  const pad = "y".repeat(500);
  const t0 = performance.now();
  for (let i = 0; i < 20_000; i++) log.info({ i, pad }, "during the outage");
  const ms = performance.now() - t0;
  t.ok(ms < 10_000, `20000 records logged in ${Math.round(ms)} ms without NATS`);
  const s = publisher.stats();
  t.ok(s.dropped > 0, `${s.dropped} dropped once the buffer was full`);
  t.ok(s.buffered > 0 && s.buffered * 500 <= 4 * 1024 * 1024, `${s.buffered} buffered, within the bound`);

  await stack.nats.restart();
  const after = await waitFor("the buffered records and the drop report", async () => {
    // the reading connection reconnects too: a request may time out meanwhile
    const rs = await read(stack, { service: "worker" }).catch(() => []);
    return rs.some((r) => r.record.i === 19_999) && rs.some((r) => typeof r.record.dropped === "number") ? rs : null;
  }, 30_000, 200);
  const report = after.find((r) => typeof r.record.dropped === "number")!;
  t.match(report, { level: "warn", record: { msg: /dropped records while NATS was unavailable/ } });
  t.equal(report.record.dropped, s.dropped, "the report counts every dropped record");
  log.info("after the outage");
  await waitFor("a record after recovery", async () => (await read(stack, { service: "worker", limit: 1 }))[0]?.record.msg === "after the outage");
});

t.test("a worker process started as main.ts does publishes its records, and they survive a NATS restart", async (t) => {
  const stack = await startStack(t);
  const child = await stack.workerProcess();
  const started = await waitFor("the worker's start record in LOGS", async () => (await read(stack, { service: "worker" })).find((r) => r.record.msg === "worker started"), 20_000);
  t.equal(started.record.pid, child.pid, "from the child process");
  await stack.nats.kill();
  await stack.nats.restart();
  const back = await waitFor("its disconnect record, logged while NATS was down", async () => (await read(stack, { service: "worker", level: "warn" }).catch(() => [])).find((r) => r.record.pid === child.pid && r.record.status === "disconnect"), 30_000, 200);
  t.ok(back, "delivered after the restart");
  t.equal(child.exitCode, null, "the worker is still running");
});

/** A logger whose local output we can read (JSON lines), also publishing centrally. */
function capture(name: string): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: createLogger({ level: "info", name, central: true, destination: { write: (l: string) => void lines.push(l) } }), lines };
}

t.test("records also go to the local destination unchanged, and a logger without central logs publishes nothing", async (t) => {
  const stack = await startStack(t);
  const { log, lines } = capture("gateway");
  attachLogs(log, stack.infra.nc);
  log.child({ job: "j-local" }).info("both");
  const plain = createLogger({ level: "info", name: "gateway", destination: { write: () => undefined } });
  t.equal(logPublisherOf(plain), undefined, "no publisher without central");
  attachLogs(plain, stack.infra.nc);
  plain.info({ job: "j-local" }, "local only");
  const rs = await waitFor("the record", async () => {
    const r = await read(stack, { job: "j-local" });
    return r.length > 0 ? r : null;
  });
  t.same(rs.map((r) => r.line), [lines[0]!.trimEnd()], "the same JSON line");
  t.same(rs.map((r) => r.record.msg), ["both"]);
});
