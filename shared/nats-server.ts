/**
 * Finding and running a local nats-server: `jetshard up` runs one from nats.conf, tests run throwaway ones
 * on free loopback ports with a temp store (the way nats.js' own test launcher does).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
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

