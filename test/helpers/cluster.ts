/**
 * A real 3-node nats-server cluster per test file (loopback, temp stores, killed and removed at teardown) and a
 * jetshard stack on it: every process is given all the nodes' URLs and JETSHARD_REPLICAS=3, as on a real cluster.
 */
import type { Test } from "tap";
import { removeDir, startNatsCluster, type ClusterOptions, type RunningCluster } from "#shared/nats-server.js";
import { stackOn, type StackPieces } from "./stack.js";

/** Starts a cluster (3 nodes unless `opts.nodes` says otherwise), stopped and removed at teardown. */
export async function startTestCluster(t: Test, opts: Omit<ClusterOptions, "watchParent" | "workDir"> = {}): Promise<RunningCluster> {
  const cluster = await startNatsCluster({ ...opts, watchParent: true });
  t.teardown(async () => {
    await Promise.all(cluster.nodes.map((n) => n.kill()));
    await removeDir(cluster.workDir);
  });
  return cluster;
}

export interface ClusterStack extends StackPieces {
  cluster: RunningCluster;
}

/** A stack on a fresh 3-node cluster with JETSHARD_REPLICAS=3 (overridable through `extraEnv`). */
export async function startClusterStack(t: Test, extraEnv: Record<string, string> = {}, opts: Omit<ClusterOptions, "watchParent" | "workDir"> = {}): Promise<ClusterStack> {
  const cluster = await startTestCluster(t, opts);
  return { cluster, ...(await stackOn(t, cluster.urls.join(","), { JETSHARD_REPLICAS: "3", ...extraEnv })) };
}
