/**
 * Builds jetshard pieces for tests against a real nats-server: config from an env map, in-process gateways
 * and workers (built exactly as main.ts builds them), and worker child processes for crash tests.
 */
import { spawn, type ChildProcess } from "node:child_process";
import net from "node:net";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Test } from "tap";
import { loadConfig, type JetshardConfig } from "#shared/config.js";
import { silentLogger, createLogger } from "#shared/log.js";
import { connectNats, openInfra, type Infra } from "#shared/nats.js";
import { createGateway, type Gateway } from "../../services/gateway/gateway.js";
import { createWorker, type Worker } from "../../services/worker/worker.js";
import { startTestNats, type TestNats } from "./nats.js";

export const ROOT = path.resolve(import.meta.dirname, "../..");

const log = () => (process.env.TEST_LOG ? createLogger({ level: process.env.TEST_LOG }) : silentLogger());

export interface Stack {
  nats: TestNats;
  env: Record<string, string>;
  config: JetshardConfig;
  infra: Infra;
  gateway(extraEnv?: Record<string, string>): Promise<Gateway>;
  worker(extraEnv?: Record<string, string>): Promise<Worker>;
  /** A worker in its own process (for SIGKILL); resolves once it has registered. */
  workerProcess(extraEnv?: Record<string, string>): Promise<ChildProcess>;
}

/**
 * `opts.natsExtra`: extra nats-server config lines; `opts.nats`: the same plus files to copy beside the config and
 * nats-server's environment (a users file and its passwords).
 */
export async function startStack(t: Test, extraEnv: Record<string, string> = {}, opts: { natsExtra?: string; nats?: Parameters<typeof startTestNats>[1] } = {}): Promise<Stack> {
  const nats = await startTestNats(t, { extra: opts.natsExtra, ...opts.nats });
  return { nats, ...(await stackOn(t, nats.url, extraEnv)) };
}

/** What a stack is besides its NATS: built on `natsUrl` (one server, or a cluster's comma-separated URLs). */
export type StackPieces = Omit<Stack, "nats">;

/**
 * The jetshard side of a test stack on servers already running: a temp data dir, the env every process gets, the
 * test's own connection, and in-process gateways and workers or worker processes (stopped at teardown).
 */
export async function stackOn(t: Test, natsUrl: string, extraEnv: Record<string, string> = {}): Promise<StackPieces> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "jetshard-test-"));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  /** A model cache dir for one worker, inside the stack's data dir (removed with it). */
  const cacheDir = () => mkdtemp(path.join(dataDir, "cache-"));
  const env: Record<string, string> = {
    JETSHARD_NATS_URL: natsUrl,
    JETSHARD_HOST: "127.0.0.1",
    JETSHARD_PORT: "0",
    JETSHARD_DATA_DIR: dataDir,
    JETSHARD_HEARTBEAT_MS: "500",
    JETSHARD_WORKER_TTL_MS: "3000",
    JETSHARD_LOG_LEVEL: "silent",
    // workers and controllers each get a free ops port (tests run in parallel, several workers per process)
    JETSHARD_OPS_PORT: "0",
    ...extraEnv,
  };
  const config = loadConfig(env);
  const nc = await connectNats(config, "test");
  t.teardown(() => nc.close());
  const infra = await openInfra(nc, config);
  return {
    env,
    config,
    infra,
    async gateway(more = {}) {
      const g = createGateway({ config: loadConfig({ ...env, ...more }), log: log() });
      await g.start();
      t.teardown(() => g.stop());
      return g;
    },
    async worker(more = {}) {
      const cfg = loadConfig({ ...env, JETSHARD_CACHE_DIR: await cacheDir(), ...more });
      const w = createWorker({ config: cfg, log: log() });
      await w.start();
      t.teardown(() => w.stop());
      return w;
    },
    async workerProcess(more = {}) {
      return startWorkerProcess(t, { ...env, JETSHARD_LOG_LEVEL: "info", JETSHARD_CACHE_DIR: await cacheDir(), ...more });
    },
  };
}

/** A free loopback TCP port (closed again: whoever binds it next may race, so use it at once). */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/**
 * A worker in its own process with `env` on top of this one's (for SIGKILL); resolves once it has logged its start,
 * so `env` must leave JETSHARD_LOG_LEVEL at info or lower.
 */
export async function startWorkerProcess(t: Test, env: Record<string, string>): Promise<ChildProcess> {
  const child = spawn(process.execPath, ["--import", "tsx", path.join(ROOT, "services/cli/main.ts"), "worker"], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });
  let out = "";
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`worker process did not start: ${out.slice(-2000)}`)), 30_000);
    const onData = (d: Buffer) => {
      out += d.toString();
      if (out.includes('"worker started"')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
    child.once("exit", (code) => reject(new Error(`worker process exited (${code}): ${out.slice(-2000)}`)));
  });
  return child;
}

/** Polls `fn` until it returns a truthy value or `timeoutMs` passes (then throws with `what`). */
export async function waitFor<T>(what: string, fn: () => T | Promise<T>, timeoutMs = 10_000, everyMs = 50): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
