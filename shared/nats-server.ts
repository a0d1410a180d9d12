/**
 * Finding and running a local nats-server: `jetshard up` runs one from nats.conf, tests run throwaway ones
 * on free loopback ports with a temp store (the way nats.js' own test launcher does).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

const CANDIDATES = ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"];

/** Path of the nats-server binary ($NATS_SERVER_BIN, PATH, then the usual places), or null. */
export function findNatsServer(env: NodeJS.ProcessEnv = process.env): string | null {
  if (env.NATS_SERVER_BIN && existsSync(env.NATS_SERVER_BIN)) return env.NATS_SERVER_BIN;
  for (const dir of (env.PATH ?? "").split(path.delimiter)) {
    const p = path.join(dir, "nats-server");
    if (dir && existsSync(p)) return p;
  }
  return CANDIDATES.find((p) => existsSync(p)) ?? null;
}

export interface RunningNats {
  /** nats://127.0.0.1:PORT */
  url: string;
  port: number;
  monitorUrl?: string;
  storeDir: string;
  proc: ChildProcess;
  /** SIGTERM and wait for exit. */
  stop(): Promise<void>;
  /** SIGKILL and wait for exit (a crash). */
  kill(): Promise<void>;
}

async function waitForPortsFile(dir: string, pid: number, proc: ChildProcess, timeoutMs: number, stderr: () => string) {
  const deadline = Date.now() + timeoutMs;
  const file = path.join(dir, `nats-server_${pid}.ports`);
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`nats-server exited with code ${proc.exitCode}: ${stderr().slice(-2000)}`);
    try {
      const ports = JSON.parse(await readFile(file, "utf8")) as { nats?: string[]; monitoring?: string[] };
      if (ports.nats?.length) return ports;
    } catch {
      // not written yet
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`nats-server did not report its ports within ${timeoutMs} ms: ${stderr().slice(-2000)}`);
}

function exited(proc: ChildProcess): Promise<void> {
  return new Promise((r) => (proc.exitCode !== null || proc.signalCode !== null ? r() : proc.once("exit", () => r())));
}

export interface StartOptions {
  /** Fixed client port (for restarts on the same port); -1 = a free one. */
  port?: number;
  /** JetStream store dir; a fresh temp dir when omitted. */
  storeDir?: string;
  /** Extra config lines. */
  extra?: string;
  /**
   * Files copied next to the generated config, so `extra` can `include "<basename>"` them: nats-server 2.9 resolves
   * includes relative to the including file and does not take absolute paths.
   */
  copyFiles?: string[];
  /** nats-server's environment (config `$VARIABLE`s are read from it); default this process's. */
  env?: NodeJS.ProcessEnv;
  /** Pass stdout/stderr through (jetshard up). */
  inheritOutput?: boolean;
  /** A config file to use as is (jetshard up); ports are then learned from it via ports_file_dir. */
  configFile?: string;
  workDir?: string;
  /**
   * Kill the server if this process dies without stopping it (a test runner timing out a file), through a small
   * watchdog shell, so no orphan servers pile up.
   */
  watchParent?: boolean;
}

/** Starts nats-server with JetStream on loopback and resolves once it accepts clients. */
export async function startNatsServer(opts: StartOptions = {}): Promise<RunningNats> {
  const bin = findNatsServer();
  if (!bin) throw new Error("nats-server not found: install it (Debian: apt-get install nats-server) or set NATS_SERVER_BIN");
  const workDir = opts.workDir ?? (await mkdtemp(path.join(os.tmpdir(), "jetshard-nats-")));
  const storeDir = opts.storeDir ?? path.join(workDir, "js");
  const portsDir = path.join(workDir, "ports");
  await rm(portsDir, { recursive: true, force: true });
  await mkdir(portsDir, { recursive: true });
  let args: string[];
  if (opts.configFile) {
    args = ["-c", opts.configFile, "--ports_file_dir", portsDir];
  } else {
    const conf = [
      `listen: "127.0.0.1:${opts.port ?? -1}"`,
      `http: "127.0.0.1:-1"`,
      `max_payload: 8MB`,
      `jetstream { store_dir: "${storeDir}" }`,
      opts.extra ?? "",
    ].join("\n");
    const confFile = path.join(workDir, "nats.conf");
    for (const f of opts.copyFiles ?? []) await copyFile(f, path.join(workDir, path.basename(f)));
    await writeFile(confFile, conf);
    args = ["-c", confFile, "--ports_file_dir", portsDir];
  }
  const proc = spawn(bin, args, { stdio: opts.inheritOutput ? "inherit" : ["ignore", "ignore", "pipe"], env: opts.env ?? process.env });
  let err = "";
  proc.stderr?.on("data", (d: Buffer) => {
    err = (err + d.toString()).slice(-8000);
  });
  if (opts.watchParent) {
    const watchdog = spawn(
      "sh",
      ["-c", `while kill -0 ${process.pid} 2>/dev/null && kill -0 ${proc.pid} 2>/dev/null; do sleep 1; done; kill -0 ${process.pid} 2>/dev/null || kill -9 ${proc.pid} 2>/dev/null`],
      { detached: true, stdio: "ignore" },
    );
    watchdog.unref();
  }
  const ports = await waitForPortsFile(portsDir, proc.pid!, proc, 15_000, () => err);
  const url = ports.nats![0]!.replace("0.0.0.0", "127.0.0.1");
  const port = Number(new URL(url).port);
  return {
    url,
    port,
    monitorUrl: ports.monitoring?.[0],
    storeDir,
    proc,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGTERM");
      await exited(proc);
    },
    async kill() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
      await exited(proc);
    },
  };
}

/** Removes a temp dir made by startNatsServer (the parent of its store). */
export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}


/** One server of a cluster started by startNatsCluster. */
export interface ClusterNode {
  /** Its `server_name` (n1, n2, ...). */
  readonly name: string;
  /** nats://127.0.0.1:PORT; the same after a restart. */
  readonly url: string;
  readonly port: number;
  /** The route port the other servers dial. */
  readonly clusterPort: number;
  readonly storeDir: string;
  /** The running process, or null while it is killed or stopped. */
  current(): RunningNats | null;
  /** SIGKILL (a crash) and wait for the exit. */
  kill(): Promise<void>;
  /** SIGTERM and wait for the exit. */
  stop(): Promise<void>;
  /** Starts it again (killing it first if it runs) on the same ports and store. */
  restart(): Promise<void>;
}

/** A local cluster started by startNatsCluster. */
export interface RunningCluster {
  nodes: ClusterNode[];
  /** Every node's client URL: give all of them to every client (JETSHARD_NATS_URL, comma-separated). */
  urls: string[];
  /** Parent of every node's config and store. */
  workDir: string;
  /**
   * Resolves once every running node knows the same JetStream meta leader (streams can then be created and
   * placed); a node just restarted has then caught up with the cluster. Throws after `timeoutMs` (default 30 s).
   */
  waitForMetaLeader(timeoutMs?: number): Promise<string>;
  /**
   * Resolves once every stream and every replicated consumer on the running nodes has a leader and all its replicas
   * current (as its leader reports them): a restarted node has caught up, and losing another one now keeps quorum.
   * Single-replica consumers (nats.js' ordered consumers behind KV watches) are left out: one that lived on a killed
   * node has no leader until the server drops it. Throws after `timeoutMs` (default 60 s) naming what still lags.
   */
  waitForCurrent(timeoutMs?: number): Promise<void>;
  /** Stops every node (SIGTERM). */
  stop(): Promise<void>;
}

export interface ClusterOptions {
  /** Servers in the cluster (default 3). */
  nodes?: number;
  /** Cluster name (default "jetshard"). */
  name?: string;
  /** Fixed client ports, one per node (jetshard up); free ones when omitted. */
  ports?: number[];
  /** Fixed route ports, one per node; free ones when omitted. */
  clusterPorts?: number[];
  /** Parent dir of each node's dir (`<workDir>/<name>/`, holding its config and `js` store); a temp dir by default. */
  workDir?: string;
  /** As startNatsServer takes them, applied to every node (e.g. `include "nats-auth.conf"` and that file). */
  extra?: string;
  copyFiles?: string[];
  env?: NodeJS.ProcessEnv;
  inheritOutput?: boolean;
  watchParent?: boolean;
}

/** The parts of nats-server's /jsz?streams=true&consumers=true&config=true report that waitForCurrent reads. */
interface JszReport {
  account_details?: Array<{
    stream_detail?: Array<{
      name: string;
      cluster?: JszCluster;
      consumer_detail?: Array<{ name: string; cluster?: JszCluster; config?: { num_replicas?: number } }>;
    }>;
  }>;
}
interface JszCluster {
  leader?: string;
  replicas?: Array<{ name: string; current?: boolean; offline?: boolean }>;
}

/**
 * Free loopback TCP ports below the kernel's ephemeral range (bound and released at once; the servers take them
 * right after). Not port 0's pick: that comes from the ephemeral range, where the nodes' own outgoing route
 * connections also take their local ports and could grab a port before its node listens on it (at start, or when
 * a killed node restarts on it).
 */
async function freePorts(n: number): Promise<number[]> {
  const low = await readFile("/proc/sys/net/ipv4/ip_local_port_range", "utf8")
    .then((s) => Number(s.trim().split(/\s+/)[0]))
    .catch(() => 32768);
  const top = Number.isInteger(low) && low > 12_000 ? low - 1 : 32767;
  const ports: number[] = [];
  for (let tries = 0; ports.length < n; tries++) {
    if (tries > 200) throw new Error(`startNatsCluster: no ${n} free ports found below ${top + 1}`);
    const port = 10_000 + Math.floor(Math.random() * (top - 10_000));
    if (ports.includes(port)) continue;
    const free = await new Promise<boolean>((resolve) => {
      const s: Server = createServer();
      s.once("error", () => resolve(false));
      s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
    });
    if (free) ports.push(port);
  }
  return ports;
}

/**
 * Starts a local nats-server cluster on loopback with JetStream on every node (nats-server 2.9 clustering: a
 * `cluster { name, listen, routes }` block per node, each routing to all the others, a unique `server_name` and
 * its own store). Client and route ports are fixed at start, so a killed node restarts where clients and routes
 * look for it. Resolves once every node accepts clients and the JetStream meta leader is elected.
 * @throws Error when nats-server is missing, a node exits at start, or no meta leader is elected within 30 s.
 */
export async function startNatsCluster(opts: ClusterOptions = {}): Promise<RunningCluster> {
  const n = opts.nodes ?? 3;
  if (!Number.isInteger(n) || n < 1) throw new Error(`startNatsCluster: nodes must be a positive integer, got ${n}`);
  const workDir = opts.workDir ?? (await mkdtemp(path.join(os.tmpdir(), "jetshard-cluster-")));
  const ports = opts.ports ?? (await freePorts(n));
  const clusterPorts = opts.clusterPorts ?? (await freePorts(n));
  if (ports.length !== n || clusterPorts.length !== n) throw new Error(`startNatsCluster: give ${n} ports and ${n} cluster ports`);
  const clusterName = opts.name ?? "jetshard";
  const nodeConfig = (i: number) =>
    [
      `server_name: n${i + 1}`,
      `cluster {`,
      `  name: ${clusterName}`,
      `  listen: "127.0.0.1:${clusterPorts[i]}"`,
      `  routes: [${clusterPorts.filter((_, j) => j !== i).map((p) => `"nats-route://127.0.0.1:${p}"`).join(", ")}]`,
      `}`,
      opts.extra ?? "",
    ].join("\n");
  const startNode = async (i: number) => {
    const dir = path.join(workDir, `n${i + 1}`);
    await mkdir(dir, { recursive: true });
    return startNatsServer({
      port: ports[i],
      storeDir: path.join(dir, "js"),
      workDir: dir,
      extra: nodeConfig(i),
      copyFiles: opts.copyFiles,
      env: opts.env,
      inheritOutput: opts.inheritOutput,
      watchParent: opts.watchParent,
    });
  };
  const started = await Promise.allSettled(Array.from({ length: n }, (_, i) => startNode(i)));
  const failed = started.find((s): s is PromiseRejectedResult => s.status === "rejected");
  if (failed) {
    // leave nothing running (its output pipes would keep this process alive)
    await Promise.all(started.map((s) => (s.status === "fulfilled" ? s.value.kill() : undefined)));
    throw failed.reason;
  }
  const running: Array<RunningNats | null> = started.map((s) => (s as PromiseFulfilledResult<RunningNats>).value);
  const nodes: ClusterNode[] = running.map((_, i) => ({
    name: `n${i + 1}`,
    url: `nats://127.0.0.1:${ports[i]}`,
    port: ports[i]!,
    clusterPort: clusterPorts[i]!,
    storeDir: path.join(workDir, `n${i + 1}`, "js"),
    current: () => running[i] ?? null,
    async kill() {
      await running[i]?.kill();
      running[i] = null;
    },
    async stop() {
      await running[i]?.stop();
      running[i] = null;
    },
    async restart() {
      await running[i]?.kill();
      running[i] = null;
      running[i] = await startNode(i);
    },
  }));
  const cluster: RunningCluster = {
    nodes,
    urls: nodes.map((x) => x.url),
    workDir,
    async waitForMetaLeader(timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      let seen = "";
      for (;;) {
        const live = running.filter((r): r is RunningNats => r !== null && Boolean(r.monitorUrl));
        const leaders = await Promise.all(
          live.map(async (r) => {
            try {
              const res = await fetch(`${r.monitorUrl!.replace("0.0.0.0", "127.0.0.1")}/jsz`, { signal: AbortSignal.timeout(2000) });
              const jsz = (await res.json()) as { meta_cluster?: { leader?: string; replicas?: Array<{ current?: boolean; offline?: boolean }> } };
              return jsz.meta_cluster?.leader ?? "";
            } catch {
              return "";
            }
          }),
        );
        seen = leaders.join(",");
        if (live.length > 0 && leaders[0] && leaders.every((l) => l === leaders[0])) return leaders[0];
        if (Date.now() > deadline) throw new Error(`no JetStream meta leader agreed on within ${timeoutMs} ms (nodes report: ${seen || "nothing"})`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async waitForCurrent(timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const lagging: string[] = [];
        await this.waitForMetaLeader(Math.max(1, deadline - Date.now()));
        for (const [i, r] of running.entries()) {
          if (!r?.monitorUrl) continue;
          const jsz = await fetch(`${r.monitorUrl.replace("0.0.0.0", "127.0.0.1")}/jsz?streams=true&consumers=true&config=true`, { signal: AbortSignal.timeout(2000) })
            .then((res) => res.json() as Promise<JszReport>)
            .catch(() => null);
          if (!jsz) {
            lagging.push(`n${i + 1} (no answer)`);
            continue;
          }
          for (const a of jsz.account_details ?? []) {
            for (const s of a.stream_detail ?? []) {
              const replicated = (s.consumer_detail ?? []).filter((c) => c.config?.num_replicas !== 1);
              for (const [what, cl] of [[s.name, s.cluster] as const, ...replicated.map((c) => [`${s.name}/${c.name}`, c.cluster] as const)]) {
                if (!cl?.leader) lagging.push(`${what} (no leader)`);
                else if (cl.leader === `n${i + 1}` && cl.replicas?.some((p) => !p.current || p.offline)) lagging.push(`${what} (replica behind)`);
              }
            }
          }
        }
        if (lagging.length === 0) return;
        if (Date.now() > deadline) throw new Error(`the cluster did not catch up within ${timeoutMs} ms: ${lagging.slice(0, 10).join(", ")}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    },
    async stop() {
      await Promise.all(nodes.map((x) => x.stop()));
    },
  };
  try {
    await cluster.waitForMetaLeader();
  } catch (err) {
    await Promise.all(nodes.map((x) => x.kill()));
    throw err;
  }
  return cluster;
}
