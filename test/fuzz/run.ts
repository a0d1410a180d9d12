/**
 * `npm run fuzz`: a long mutation fuzz of the HTTP API. Starts its own stack on loopback (nats-server, a gateway
 * and one worker, in this process so a crash or an unhandled rejection is seen), uploads the models the
 * generator aims at, sends the requests, prints the status counts per route and the answers that break the
 * contract, and exits non-zero if there was any (a 5xx other than 503, a 504 before the deadline, no answer, a
 * crash, or a gateway that is no longer healthy at the end).
 *
 *   npm run fuzz -- --requests 100000 --seed 1 --concurrency 16 --max-seconds 1200
 */
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { loadConfig } from "#shared/config.js";
import { silentLogger } from "#shared/log.js";
import { removeDir, startNatsServer } from "#shared/nats-server.js";
import { createGateway } from "../../services/gateway/gateway.js";
import { createWorker } from "../../services/worker/worker.js";
import { SERVED, capturingLogger, failureCount, formatReport, prepareTargets, runFuzz, send, validRequest, watchCrashes } from "./harness.js";
import http from "node:http";

const HELP = `Usage: npm run fuzz [-- options]

  --requests N      requests to send (default 100000)
  --seed S          PRNG seed (default 1); the same seed sends the same requests
  --concurrency C   requests in flight at once (default 16)
  --max-seconds T   stop sending after T seconds, whatever is left (default 1800)
  -h, --help        this text`;

const { values } = parseArgs({
  options: {
    requests: { type: "string", default: "100000" },
    seed: { type: "string", default: "1" },
    concurrency: { type: "string", default: "16" },
    "max-seconds": { type: "string", default: "1800" },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (values.help) {
  process.stdout.write(HELP + "\n");
  process.exit(0);
}
const num = (name: string, v: string, min: number) => {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min) {
    process.stderr.write(`--${name}: ${JSON.stringify(v)} is not an integer >= ${min}\n${HELP}\n`);
    process.exit(2);
  }
  return n;
};
const requests = num("requests", values.requests!, 1);
const seed = num("seed", values.seed!, 0);
const concurrency = num("concurrency", values.concurrency!, 1);
const maxSeconds = num("max-seconds", values["max-seconds"]!, 1);

const say = (msg: string) => process.stderr.write(`[fuzz] ${msg}\n`);
const crashes = watchCrashes();
const nats = await startNatsServer({ watchParent: true });
const dataDir = await mkdtemp(path.join(os.tmpdir(), "jetshard-fuzz-"));
const stops: Array<() => Promise<void>> = [];
let code = 1;
try {
  const env = {
    JETSHARD_NATS_URL: nats.url,
    JETSHARD_HOST: "127.0.0.1",
    JETSHARD_PORT: "0",
    JETSHARD_OPS_PORT: "0",
    JETSHARD_DATA_DIR: dataDir,
    JETSHARD_LOG_LEVEL: "error",
    JETSHARD_HEARTBEAT_MS: "1000",
  };
  const config = loadConfig(env);
  const gwLog = capturingLogger();
  const gateway = createGateway({ config, log: gwLog.log });
  await gateway.start();
  stops.push(() => gateway.stop());
  const worker = createWorker({ config: loadConfig({ ...env, JETSHARD_SERVE: SERVED.join(","), JETSHARD_CACHE_DIR: path.join(dataDir, "cache") }), log: silentLogger() });
  await worker.start();
  stops.push(() => worker.stop());
  say(`stack up at ${gateway.url}; seed ${seed}, ${requests} requests, concurrency ${concurrency}, at most ${maxSeconds} s`);
  const targets = await prepareTargets(gateway.url);
  const report = await runFuzz({
    url: gateway.url,
    seed,
    requests,
    targets,
    concurrency,
    timeBudgetMs: maxSeconds * 1000,
    requestTimeoutMs: config.requestTimeoutMs + 30_000,
    gatewayTimeoutMs: config.requestTimeoutMs,
    onProgress: (sent, r) => sent % 10_000 === 0 && say(`${sent} sent, ${failureCount(r)} failures so far`),
  });
  process.stdout.write(formatReport(report) + "\n");

  // still healthy: ready, and a valid inference of every served model succeeds
  const agent = new http.Agent();
  const ready = await send(gateway.url, agent, { route: "", method: "GET", path: "/v2/health/ready", headers: {}, note: "" }, 10_000);
  const unhealthy: string[] = ready.status === 200 ? [] : [`GET /v2/health/ready: ${ready.status} ${ready.body}`];
  for (const m of targets.models) {
    const body = new TextEncoder().encode(JSON.stringify(validRequest(m)));
    const res = await send(gateway.url, agent, { route: "", method: "POST", path: `/v2/models/${m.name}/infer`, headers: { "content-type": "application/json" }, body, note: "" }, 30_000);
    if (res.status !== 200) unhealthy.push(`infer ${m.name}: ${res.status} ${res.body.slice(0, 200)}`);
  }
  agent.destroy();
  const logged = Object.entries(gwLog.errors());
  if (logged.length) process.stdout.write(`gateway error logs:\n${logged.map(([k, n]) => `  ${n} × ${k}`).join("\n")}\n`);
  for (const c of crashes.crashes) process.stdout.write(`CRASH: ${c}\n`);
  for (const u of unhealthy) process.stdout.write(`UNHEALTHY: ${u}\n`);
  code = failureCount(report) === 0 && crashes.crashes.length === 0 && unhealthy.length === 0 ? 0 : 1;
  process.stdout.write(code === 0 ? "fuzz: OK\n" : "fuzz: FAILED\n");
} catch (err) {
  say(`fuzz run failed: ${(err as Error).stack}`);
} finally {
  for (const stop of stops.reverse()) await stop().catch(() => undefined);
  await nats.stop();
  await removeDir(path.dirname(nats.storeDir)).catch(() => undefined);
  await rm(dataDir, { recursive: true, force: true });
  crashes.stop();
}
process.exit(code);
