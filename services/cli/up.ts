/**
 * `jetshard up` (= `npm start`): the whole stack on one machine. nats-server (unless JETSHARD_NATS_URL names
 * one), a gateway, JETSHARD_WORKERS workers, the demo models; Ctrl-C stops everything it started, workers first
 * so they drain and deregister, nats-server last. Its nats-server has nats-auth.conf's users: `up` generates their
 * passwords once (credentials.ts), provisions streams and buckets as admin, and starts each process as its role.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdir } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { loadConfig } from "#shared/config.js";
import { DEMO_CNN, DEMO_CNN_REQUEST, DEMO_CNN_SHARDS, DEMO_MLP, DEMO_MLP_REQUEST, demoCnnBytes, demoMlpBytes } from "#shared/demo.js";
import { createLogger } from "#shared/log.js";
import { addModel, getModel } from "#shared/model-repo.js";
import { connectNats, openInfra } from "#shared/nats.js";
import { findNatsServer, startNatsServer, type RunningNats } from "#shared/nats-server.js";
import { UsageError } from "./args.js";
import { credentialsFile, loadOrCreateCredentials, natsServerPasswordEnv, roleEnv, type NatsCredentials, type NatsRole } from "./credentials.js";

const ROOT = path.resolve(import.meta.dirname, "../..");

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once("error", () => resolve(false));
    s.listen(port, "0.0.0.0", () => s.close(() => resolve(true)));
  });
}

function exited(p: ChildProcess): Promise<void> {
  return new Promise((r) => (p.exitCode !== null || p.signalCode !== null ? r() : p.once("exit", () => r())));
}

export async function runUp(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const config = loadConfig(env);
  const log = createLogger({ level: config.logLevel, name: "up" });
  const children: ChildProcess[] = [];
  let nats: RunningNats | null = null;
  /** Passwords per NATS user, when `up` runs its own nats-server (with nats.conf's users). */
  let creds: NatsCredentials | null = null;
  let natsUrl = config.natsServers.join(",");
  let shuttingDown = false;

  const shutdown = async (code: number) => {
    if (shuttingDown) return;
    shuttingDown = true;
    log.info("stopping workers and gateway");
    for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
    const timer = setTimeout(() => children.forEach((c) => c.exitCode === null && c.kill("SIGKILL")), 15_000);
    await Promise.all(children.map(exited));
    clearTimeout(timer);
    if (nats) {
      log.info("stopping nats-server");
      await nats.stop();
    }
    process.exit(code);
  };
  process.on("SIGINT", () => void shutdown(0));
  process.on("SIGTERM", () => void shutdown(0));
  process.on("exit", () => {
    for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
    if (nats && nats.proc.exitCode === null) nats.proc.kill("SIGKILL");
  });

  if (!config.natsUrlGiven) {
    if (!findNatsServer()) throw new UsageError("nats-server not found. On Debian/Ubuntu: sudo apt-get install nats-server; elsewhere see https://docs.nats.io (or set JETSHARD_NATS_URL to an existing server)");
    if (!(await portFree(4222))) {
      throw new UsageError("port 4222 is in use: is a nats-server already running? Use it with JETSHARD_NATS_URL=nats://127.0.0.1:4222 npm start");
    }
    const storeDir = path.resolve(config.dataDir, "nats");
    await mkdir(storeDir, { recursive: true });
    creds = await loadOrCreateCredentials(config.dataDir);
    const natsEnv = { ...process.env, JETSHARD_NATS_STORE_DIR: storeDir, ...natsServerPasswordEnv(creds) };
    nats = await startNatsServer({ configFile: path.join(ROOT, "nats.conf"), workDir: path.resolve(config.dataDir), storeDir, inheritOutput: false, env: natsEnv });
    natsUrl = nats.url;
    log.info({ url: natsUrl, storeDir, credentials: credentialsFile(config.dataDir) }, "nats-server started from nats.conf");
  }

  // provisioning is the admin's job: restricted roles (nats-auth.conf) only bind to what exists
  const adminNats = creds ? { user: "admin", password: creds.admin, inboxPrefix: "_INBOX.admin" } : config.nats;
  const nc = await connectNats({ natsServers: natsUrl.split(","), nats: adminNats }, "jetshard-up");
  const infra = await openInfra(nc, config);
  if (config.seedDemo && !(await getModel(infra, DEMO_MLP))) {
    const mv = await addModel(infra, DEMO_MLP, demoMlpBytes());
    log.info({ model: DEMO_MLP, version: mv.version }, "seeded demo model");
  }
  if (config.seedDemo && !(await getModel(infra, DEMO_CNN))) {
    const mv = await addModel(infra, DEMO_CNN, demoCnnBytes(), { shards: DEMO_CNN_SHARDS });
    log.info({ model: DEMO_CNN, version: mv.version, shards: mv.shards.length }, "seeded sharded demo model");
  }
  await nc.drain();

  const childEnv = { ...process.env, JETSHARD_NATS_URL: natsUrl };
  const bin = path.join(ROOT, "bin/jetshard.js");
  /** With our own nats-server, each child gets only its role's password (and the inbox prefix of that user). */
  const envFor = (role: NatsRole): NodeJS.ProcessEnv => {
    if (!creds) return childEnv;
    const env: NodeJS.ProcessEnv = { ...childEnv, ...roleEnv(role, creds) };
    for (const k of Object.keys(env)) if (k === "JETSHARD_NATS_TOKEN" || k === "JETSHARD_NATS_INBOX_PREFIX" || k.startsWith("JETSHARD_NATS_PASS_")) delete env[k];
    return env;
  };
  const start = (args: string[], role: NatsRole) => {
    // own process group: Ctrl-C reaches only `up`, which then stops children in order
    const c = spawn(process.execPath, [bin, ...args], { env: envFor(role), stdio: ["ignore", "inherit", "inherit"], detached: true });
    c.once("exit", (code, signal) => {
      if (!shuttingDown) log.error({ args, code, signal }, "a jetshard process exited; stopping the stack");
      void shutdown(1);
    });
    children.push(c);
  };
  start(["gateway"], "gateway");
  start(["controller"], "controller");
  for (let i = 0; i < config.workers; i++) start(["worker"], "worker");

  const base = `http://127.0.0.1:${config.port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    const ok = await Promise.all([DEMO_MLP, DEMO_CNN].map((m) => fetch(`${base}/v2/models/${m}/ready`).then((r) => r.ok, () => false))).then((a) => a.every(Boolean));
    if (ok || !config.seedDemo) break;
    if (Date.now() > deadline) {
      log.error("stack did not become ready within 60 s");
      return shutdown(1);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  const curl = (m: string, req: unknown) => `curl -s ${base}/v2/models/${m}/infer -H 'content-type: application/json' -d '${JSON.stringify(req)}'`;
  process.stdout.write(
    `\njetshard is up: gateway ${base}, ${config.workers} worker(s), NATS ${natsUrl}\n\n` +
      `Try:\n  ${curl(DEMO_MLP, DEMO_MLP_REQUEST)}\n\n` +
      `A model split into ${DEMO_CNN_SHARDS} pipeline shards:\n  ${curl(DEMO_CNN, DEMO_CNN_REQUEST)}\n\nCtrl-C stops everything.\n\n`,
  );
}
