/**
 * What the benchmark ran on, recorded with every result (figures only compare within one machine and run).
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { findNatsServer } from "#shared/nats-server.js";

/** The machine and software versions of a run. */
export interface MachineInfo {
  cpu: string;
  cores: number;
  memoryGiB: number;
  os: string;
  node: string;
  natsServer: string;
  onnxruntimeNode: string;
  autocannon: string;
  /** Commit of the code measured, with "+dirty" when the working tree has uncommitted changes. */
  commit: string;
  /** codeFingerprint() when the run started. */
  code: string;
  /** 1-minute load average when the run started (high = something else is using the CPU). */
  loadAvg1m: number;
}

function tryRun(cmd: string, args: string[], cwd: string): string | null {
  try {
    return execFileSync(cmd, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return null;
  }
}

function packageVersion(root: string, name: string): string {
  try {
    return (JSON.parse(readFileSync(path.join(root, "node_modules", name, "package.json"), "utf8")) as { version: string }).version;
  } catch {
    return "?";
  }
}

/** Describes this machine; `root` is the repository root (for package versions and the commit). */
export function describeMachine(root: string): MachineInfo {
  const bin = findNatsServer();
  const commit = tryRun("git", ["rev-parse", "--short", "HEAD"], root);
  const dirty = tryRun("git", ["status", "--porcelain", "--untracked-files=no"], root);
  return {
    cpu: os.cpus()[0]?.model.trim() ?? "?",
    cores: os.cpus().length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    natsServer: (bin && tryRun(bin, ["--version"], root)?.replace(/^nats-server:\s*/, "")) || "?",
    onnxruntimeNode: packageVersion(root, "onnxruntime-node"),
    autocannon: packageVersion(root, "autocannon"),
    commit: commit ? `${commit}${dirty ? "+dirty" : ""}` : "?",
    code: codeFingerprint(root),
    loadAvg1m: Math.round(os.loadavg()[0]! * 100) / 100,
  };
}

/**
 * A short hash of jetshard's code as it is on disk now (every file under services/, shared/ and bin/). The
 * working tree may change while a benchmark runs; comparing fingerprints tells which rows measured which code.
 */
export function codeFingerprint(root: string): string {
  const hash = createHash("sha256");
  const walk = (dir: string) => {
    let entries;
    try {
      entries = readdirSync(path.join(root, dir), { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name));
    } catch {
      return;
    }
    for (const e of entries) {
      const rel = path.join(dir, e.name);
      if (e.isDirectory()) walk(rel);
      else if (e.isFile()) hash.update(rel).update("\0").update(readFileSync(path.join(root, rel))).update("\0");
    }
  };
  for (const dir of ["services", "shared", "bin"]) walk(dir);
  return hash.digest("hex").slice(0, 10);
}
