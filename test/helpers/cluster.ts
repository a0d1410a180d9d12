/**
 * A real 3-node nats-server cluster per test file (loopback, temp stores, killed and removed at teardown) and a
 * jetshard stack on it: every process is given all the nodes' URLs and JETSHARD_REPLICAS=3, as on a real cluster.
 */
import type { ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Test } from "tap";
import { loadConfig, type JetshardConfig } from "#shared/config.js";
import { createLogger, silentLogger } from "#shared/log.js";
import { connectNats, openInfra, type Infra } from "#shared/nats.js";
import { removeDir, startNatsCluster, type ClusterOptions, type RunningCluster } from "#shared/nats-server.js";
import { createGateway, type Gateway } from "../../services/gateway/gateway.js";
import { createWorker, type Worker } from "../../services/worker/worker.js";
import { startWorkerProcess } from "./stack.js";

const log = () => (process.env.TEST_LOG ? createLogger({ level: process.env.TEST_LOG }) : silentLogger());

/** Starts a cluster (3 nodes unless `opts.nodes` says otherwise), stopped and removed at teardown. */
export async function startTestCluster(t: Test, opts: Omit<ClusterOptions, "watchParent" | "workDir"> = {}): Promise<RunningCluster> {
  const cluster = await startNatsCluster({ ...opts, watchParent: true });
  t.teardown(async () => {
    await Promise.all(cluster.nodes.map((n) => n.kill()));
    await removeDir(cluster.workDir);
  });
  return cluster;
}

export interface ClusterStack {
  cluster: RunningCluster;
  env: Record<string, string>;
  config: JetshardConfig;
  /** The test's own connection (to every node, like the services). */
  infra: Infra;
  gateway(extraEnv?: Record<string, string>): Promise<Gateway>;
  worker(extraEnv?: Record<string, string>): Promise<Worker>;
  /** A worker in its own process (for SIGKILL); resolves once it has registered. */
  workerProcess(extraEnv?: Record<string, string>): Promise<ChildProcess>;
}

/** A stack on a fresh 3-node cluster with JETSHARD_REPLICAS=3 (overridable through `extraEnv`). */
export async function startClusterStack(t: Test, extraEnv: Record<string, string> = {}, opts: Omit<ClusterOptions, "watchParent" | "workDir"> = {}): Promise<ClusterStack> {
  const cluster = await startTestCluster(t, opts);
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "jetshard-test-"));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const cacheDir = () => mkdtemp(path.join(dataDir, "cache-"));
  const env: Record<string, string> = {
    JETSHARD_NATS_URL: cluster.urls.join(","),
    JETSHARD_REPLICAS: "3",
    JETSHARD_HOST: "127.0.0.1",
    JETSHARD_PORT: "0",
    JETSHARD_OPS_PORT: "0",
    JETSHARD_DATA_DIR: dataDir,
    JETSHARD_HEARTBEAT_MS: "500",
    JETSHARD_WORKER_TTL_MS: "3000",
    JETSHARD_LOG_LEVEL: "silent",
    ...extraEnv,
  };
  const config = loadConfig(env);
  const nc = await connectNats(config, "test");
  t.teardown(() => nc.close());
  const infra = await openInfra(nc, config);
  return {
    cluster,
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
      const w = createWorker({ config: loadConfig({ ...env, JETSHARD_CACHE_DIR: await cacheDir(), ...more }), log: log() });
      await w.start();
      t.teardown(() => w.stop());
      return w;
    },
    async workerProcess(more = {}) {
      return startWorkerProcess(t, { ...env, JETSHARD_LOG_LEVEL: "info", JETSHARD_CACHE_DIR: await cacheDir(), ...more });
    },
  };
}
