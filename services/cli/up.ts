/**
 * `jetshard up` (= `npm start`): the whole stack on one machine. nats-server (unless JETSHARD_NATS_URL names
 * one; a local cluster with `--cluster N`), a gateway, a controller, JETSHARD_WORKERS workers (or one per GPU with
 * `--gpus`), the demo models. Every process it starts is supervised (supervisor.ts): one that dies is restarted
 * with backoff while the others keep serving. Ctrl-C or SIGTERM stops everything it started, workers, controller and
 * gateway first so they drain and deregister, nats-server last. Its nats-server has nats-auth.conf's users: `up`
 * generates their passwords once (credentials.ts), provisions streams and buckets as admin, and starts each
 * process as its role.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdir } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { loadConfig } from "#shared/config.js";
import { DEMO_CNN, DEMO_CNN_REQUEST, DEMO_CNN_SHARDS, DEMO_MLP, DEMO_MLP_REQUEST, demoCnnBytes, demoMlpBytes } from "#shared/demo.js";
import { listGpus } from "#shared/gpu.js";
import { createLogger } from "#shared/log.js";
import { addModel, getModel } from "#shared/model-repo.js";
import { connectNats, openInfra } from "#shared/nats.js";
import { findNatsServer, startNatsCluster, startNatsServer } from "#shared/nats-server.js";
import { credentialsFile, loadOrCreateCredentials, natsServerPasswordEnv, roleEnv, type NatsCredentials, type NatsRole } from "./credentials.js";
import { UsageError } from "./errors.js";
import { Supervisor } from "./supervisor.js";

const ROOT = path.resolve(import.meta.dirname, "../..");
/** Client and route ports of `--cluster N`: 4222.. and 6222.. (NATS' own defaults, counted up). */
const CLUSTER_CLIENT_PORT = 4222;
const CLUSTER_ROUTE_PORT = 6222;

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once("error", () => resolve(false));
    s.listen(port, "0.0.0.0", () => s.close(() => resolve(true)));
  });
}

/** Options of `jetshard up`. */
export interface UpOptions {
  /** Run a local NATS cluster of this many nodes instead of one server. */
  cluster?: number;
  /** One worker per GPU (as JETSHARD_WORKERS_PER_GPU=1). */
  gpus?: boolean;
}

/** A worker `up` starts: its name in logs and the variables that set it apart. */
export interface WorkerPlan {
  name: string;
  env: Record<string, string>;
}

export async function runUp(env: NodeJS.ProcessEnv = process.env, opts: UpOptions = {}): Promise<void> {
  const config = loadConfig(env);
  const log = createLogger({ level: config.logLevel, name: "up" });
  const apps = new Supervisor({ log });
  const servers = new Supervisor({ log, graceMs: 10_000 });
  /** Passwords per NATS user, when `up` runs its own nats-server (with nats.conf's users). */
  let creds: NatsCredentials | null = null;
  let natsUrl = config.natsServers.join(",");
  /** Variables every child gets on top of this process's environment. */
  const shared: Record<string, string> = {};
  let shuttingDown = false;

  const shutdown = async (code: number) => {
    if (shuttingDown) return;
    shuttingDown = true;
    log.info("stopping workers, controller and gateway");
    await apps.stop();
    log.info("stopping nats-server");
    await servers.stop();
    process.exit(code);
  };
  process.on("SIGINT", () => void shutdown(0));
  process.on("SIGTERM", () => void shutdown(0));
  process.on("exit", () => {
    apps.killAll();
    servers.killAll();
  });

  if (opts.cluster !== undefined && config.natsUrlGiven) throw new UsageError("--cluster starts its own NATS servers: unset JETSHARD_NATS_URL");
  if (!config.natsUrlGiven) {
    if (!findNatsServer()) throw new UsageError("nats-server not found. On Debian/Ubuntu: sudo apt-get install nats-server; elsewhere see https://docs.nats.io (or set JETSHARD_NATS_URL to an existing server)");
    creds = await loadOrCreateCredentials(config.dataDir);
    const natsEnv = { ...process.env, ...natsServerPasswordEnv(creds) };
    if (opts.cluster !== undefined) {
      const n = opts.cluster;
      const ports = Array.from({ length: n }, (_, i) => CLUSTER_CLIENT_PORT + i);
      const routes = Array.from({ length: n }, (_, i) => CLUSTER_ROUTE_PORT + i);
      for (const p of [...ports, ...routes]) {
        if (!(await portFree(p))) throw new UsageError(`--cluster ${n}: port ${p} is in use (the cluster takes ${ports[0]}-${ports.at(-1)} and ${routes[0]}-${routes.at(-1)}): is a nats-server already running?`);
      }
      const workDir = path.resolve(config.dataDir, "nats-cluster");
      await mkdir(workDir, { recursive: true });
      const cluster = await startNatsCluster({
        nodes: n,
        ports,
        clusterPorts: routes,
        workDir,
        extra: ['include "nats-auth.conf"', 'write_deadline: "10s"'].join("\n"),
        copyFiles: [path.join(ROOT, "nats-auth.conf")],
        env: natsEnv,
      });
      for (const node of cluster.nodes) {
        await servers.add(
          `nats-${node.name}`,
          async () => {
            await node.restart();
            return node.current()!.proc;
          },
          node.current()!.proc,
        );
      }
      natsUrl = cluster.urls.join(",");
      // three copies of every stream and bucket, unless the user chose otherwise
      if (env.JETSHARD_REPLICAS === undefined) shared.JETSHARD_REPLICAS = n >= 3 ? "3" : "1";
      log.info({ urls: natsUrl, workDir, replicas: shared.JETSHARD_REPLICAS ?? config.replicas, credentials: credentialsFile(config.dataDir) }, `NATS cluster of ${n} started`);
    } else {
      if (!(await portFree(4222))) {
        throw new UsageError("port 4222 is in use: is a nats-server already running? Use it with JETSHARD_NATS_URL=nats://127.0.0.1:4222 npm start");
      }
      const storeDir = path.resolve(config.dataDir, "nats");
      await mkdir(storeDir, { recursive: true });
      // restarted on the same store and port, so queued jobs, results and models survive its crash
      const startServer = async (): Promise<ChildProcess> => {
        const s = await startNatsServer({ configFile: path.join(ROOT, "nats.conf"), workDir: path.resolve(config.dataDir), storeDir, inheritOutput: false, env: { ...natsEnv, JETSHARD_NATS_STORE_DIR: storeDir } });
        natsUrl = s.url;
        return s.proc;
      };
      await servers.add("nats-server", startServer);
      log.info({ url: natsUrl, storeDir, credentials: credentialsFile(config.dataDir) }, "nats-server started from nats.conf");
    }
  }

  // provisioning is the admin's job: restricted roles (nats-auth.conf) only bind to what exists
  const adminNats = creds ? { user: "admin", password: creds.admin, inboxPrefix: "_INBOX.admin" } : config.nats;
  const provisionConfig = loadConfig({ ...env, ...shared });
  const nc = await connectNats({ natsServers: natsUrl.split(","), nats: adminNats }, "jetshard-up");
  const infra = await openInfra(nc, provisionConfig);
  if (config.seedDemo && !(await getModel(infra, DEMO_MLP))) {
    const mv = await addModel(infra, DEMO_MLP, demoMlpBytes());
    log.info({ model: DEMO_MLP, version: mv.version }, "seeded demo model");
  }
  if (config.seedDemo && !(await getModel(infra, DEMO_CNN))) {
    const mv = await addModel(infra, DEMO_CNN, demoCnnBytes(), { shards: DEMO_CNN_SHARDS });
    log.info({ model: DEMO_CNN, version: mv.version, shards: mv.shards.length }, "seeded sharded demo model");
  }
  await nc.drain();

  const workers = await planWorkers(config, opts, env, log);
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...shared, JETSHARD_NATS_URL: natsUrl };
  const bin = path.join(ROOT, "bin/jetshard.js");
  /** With our own nats-server, each child gets only its role's password (and the inbox prefix of that user). */
  const envFor = (role: NatsRole, extra: Record<string, string> = {}): NodeJS.ProcessEnv => {
    const e: NodeJS.ProcessEnv = { ...childEnv, ...extra };
    if (!creds) return e;
    for (const k of Object.keys(e)) if (k === "JETSHARD_NATS_TOKEN" || k === "JETSHARD_NATS_INBOX_PREFIX" || k.startsWith("JETSHARD_NATS_PASS_")) delete e[k];
    return { ...e, ...roleEnv(role, creds) };
  };
  // own process group: Ctrl-C reaches only `up`, which then stops children in order
  const start = (name: string, args: string[], role: NatsRole, extra: Record<string, string> = {}) =>
    apps.add(name, () => spawn(process.execPath, [bin, ...args], { env: envFor(role, extra), stdio: ["ignore", "inherit", "inherit"], detached: true }));
  await start("gateway", ["gateway"], "gateway");
  // each its own ops listener (/metrics, /health/*): ports counting up from JETSHARD_OPS_PORT, or all 0 (free ones)
  const opsPort = (i: number) => ({ JETSHARD_OPS_PORT: String(config.ops.port === 0 ? 0 : config.ops.port + i) });
  await start("controller", ["controller"], "controller", opsPort(0));
  for (const [i, w] of workers.entries()) await start(w.name, ["worker"], "worker", { ...opsPort(i + 1), ...w.env });

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
    `\njetshard is up: gateway ${base}, ${workers.length} worker(s), NATS ${natsUrl}\n\n` +
      `Try:\n  ${curl(DEMO_MLP, DEMO_MLP_REQUEST)}\n\n` +
      `A model split into ${DEMO_CNN_SHARDS} pipeline shards:\n  ${curl(DEMO_CNN, DEMO_CNN_REQUEST)}\n\n` +
      `A process that dies is restarted; Ctrl-C stops everything.\n\n`,
  );
}

/**
 * The workers to start: one per GPU nvidia-smi lists with `--gpus` / JETSHARD_WORKERS_PER_GPU=1, each bound by
 * JETSHARD_GPU_ID; else (or without GPUs) JETSHARD_WORKERS of them. CUDA_VISIBLE_DEVICES is left alone so a GPU
 * index means the same to the worker as to nvidia-smi; CUDA_DEVICE_ORDER=PCI_BUS_ID (unless set) makes CUDA count
 * GPUs in nvidia-smi's order.
 */
export async function planWorkers(config: ReturnType<typeof loadConfig>, opts: UpOptions, env: NodeJS.ProcessEnv, log: ReturnType<typeof createLogger>): Promise<WorkerPlan[]> {
  const cpu = (n: number) => Array.from({ length: n }, (_, i) => ({ name: `worker-${i + 1}`, env: {} }));
  if (!opts.gpus && !config.gpu.workerPerGpu) return cpu(config.workers);
  const gpus = await listGpus(config.gpu.nvidiaSmi);
  if (gpus.length === 0) {
    log.warn({ nvidiaSmi: config.gpu.nvidiaSmi }, `no GPU found (${config.gpu.nvidiaSmi} lists none): starting ${config.workers} CPU worker(s) (JETSHARD_WORKERS)`);
    return cpu(config.workers);
  }
  log.info({ gpus: gpus.map((g) => `${g.index}: ${g.name}`) }, `one worker per GPU: ${gpus.length}`);
  return gpus.map((g) => ({
    name: `worker-gpu${g.index}`,
    env: { JETSHARD_GPU_ID: String(g.index), ...(env.CUDA_DEVICE_ORDER ? {} : { CUDA_DEVICE_ORDER: "PCI_BUS_ID" }) },
  }));
}
