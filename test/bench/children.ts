/**
 * The processes and temp dirs of one benchmark run. Everything the harness starts is registered here and is
 * stopped when the run ends, fails or is interrupted (SIGINT/SIGTERM), so a benchmark never leaves servers behind.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { rmSync } from "node:fs";
import { rm } from "node:fs/promises";
import net from "node:net";

/** Warnings and errors a child logged (pino JSON lines at level ≥ warn, plus any non-JSON output). */
export interface LogSummary {
  /** Lines per level name ("warn", "error", "fatal", "other" for non-JSON output). */
  byLevel: Record<string, number>;
  /** Count per distinct "level: message (reason)". */
  messages: Record<string, number>;
}

/** A child process of the harness. */
export interface Child {
  readonly name: string;
  readonly proc: ChildProcess;
  /** The last few KB of its output, for error messages. */
  tail(): string;
  /** What it logged at warn level or above. */
  logs(): LogSummary;
  /** Whether it is still running. */
  alive(): boolean;
  /** SIGTERM, then SIGKILL after `graceMs` (default 5000); resolves once it has exited. */
  stop(graceMs?: number): Promise<void>;
}

const children = new Set<Child>();
const dirs = new Set<string>();
const LEVELS: Record<number, string> = { 10: "trace", 20: "debug", 30: "info", 40: "warn", 50: "error", 60: "fatal" };
const MAX_DISTINCT = 40;

function exited(proc: ChildProcess): Promise<void> {
  return new Promise((r) => (proc.exitCode !== null || proc.signalCode !== null ? r() : proc.once("exit", () => r())));
}

/**
 * How a child's output is read: pino JSON lines, nats-server's "[WRN]"-style lines, redis-server's lines (a `#`
 * after the timestamp marks a warning), or plain text (all counted).
 */
export type LogFormat = "pino" | "nats" | "redis" | "text";

function summarize(line: string, sum: LogSummary, format: LogFormat): void {
  const count = (level: string, key: string) => {
    sum.byLevel[level] = (sum.byLevel[level] ?? 0) + 1;
    // job ids and digests would make every line distinct
    const k = `${level}: ${key.replace(/\b(?=[0-9A-Za-z]*\d)[0-9A-Za-z]{16,}\b/g, "<id>")}`.slice(0, 240);
    if (k in sum.messages || Object.keys(sum.messages).length < MAX_DISTINCT) sum.messages[k] = (sum.messages[k] ?? 0) + 1;
  };
  if (format === "nats") {
    const m = /\[(WRN|ERR|FTL)\] (.*)$/.exec(line);
    if (m) count(m[1] === "WRN" ? "warn" : m[1] === "ERR" ? "error" : "fatal", m[2]!);
    return;
  }
  if (format === "redis") {
    // "pid:role dd Mon yyyy hh:mm:ss.mmm # message"; the levels are . - * #, and redis logs its start and stop at #
    const m = /^\d+:[A-Z] .*?\d\d:\d\d:\d\d\.\d+ # (.*)$/.exec(line);
    if (m && /warn|error|fail|refus|denied|oom|unable|can't/i.test(m[1]!)) count("warn", m[1]!);
    return;
  }
  if (format === "text") {
    count("other", line.trim());
    return;
  }
  interface PinoLine {
    level?: unknown;
    msg?: string;
    err?: { message?: string };
    reason?: string;
  }
  let rec: PinoLine | null = null;
  try {
    const v: unknown = JSON.parse(line);
    if (v && typeof v === "object") rec = v as PinoLine;
  } catch {
    // not a pino line
  }
  if (!rec) {
    count("other", line.trim());
    return;
  }
  // JSON without a level is a child's own protocol line (e.g. plain-server's {"listening":PORT})
  if (typeof rec.level !== "number" || rec.level < 40) return;
  const reason = rec.err?.message ?? rec.reason;
  count(LEVELS[rec.level] ?? String(rec.level), reason ? `${rec.msg} (${reason.split("\n")[0]})` : String(rec.msg));
}

/** Registers a process started elsewhere (e.g. by startNatsServer) so it is stopped with the rest. */
export function adopt(name: string, proc: ChildProcess, format: LogFormat = "pino"): Child {
  let out = "";
  let partial = "";
  const sum: LogSummary = { byLevel: {}, messages: {} };
  const onData = (d: Buffer) => {
    const s = d.toString();
    out = (out + s).slice(-8000);
    const lines = (partial + s).split("\n");
    partial = lines.pop() ?? "";
    for (const l of lines) if (l.trim()) summarize(l, sum, format);
  };
  proc.stdout?.on("data", onData);
  proc.stderr?.on("data", onData);
  const child: Child = {
    name,
    proc,
    tail: () => out,
    logs: () => sum,
    alive: () => proc.exitCode === null && proc.signalCode === null,
    async stop(graceMs = 5000) {
      if (child.alive()) {
        proc.kill("SIGTERM");
        const timer = setTimeout(() => child.alive() && proc.kill("SIGKILL"), graceMs);
        await exited(proc);
        clearTimeout(timer);
      }
      children.delete(child);
    },
  };
  children.add(child);
  proc.once("exit", () => {
    if (partial.trim()) summarize(partial, sum, format);
  });
  return child;
}

/** Starts `cmd args` with piped output and registers it. */
export function startChild(name: string, cmd: string, args: string[], opts: { env: NodeJS.ProcessEnv; cwd: string; format?: LogFormat }): Child {
  const proc = spawn(cmd, args, { cwd: opts.cwd, env: opts.env, stdio: ["ignore", "pipe", "pipe"] });
  return adopt(name, proc, opts.format);
}

/** Registers a temp dir to remove when the run ends. */
export function trackDir(dir: string): string {
  dirs.add(dir);
  return dir;
}

/** Removes a registered temp dir now. */
export async function removeDir(dir: string): Promise<void> {
  dirs.delete(dir);
  await rm(dir, { recursive: true, force: true });
}

/** Stops every registered child (all at once, each SIGTERM then SIGKILL) and removes the temp dirs. */
export async function stopAll(): Promise<void> {
  await Promise.all([...children].map((c) => c.stop()));
  await Promise.all([...dirs].map((d) => removeDir(d)));
}

/**
 * Makes sure children die with the harness: SIGINT/SIGTERM stop them and exit (130/143); on any other exit
 * whatever is still running is SIGKILLed and temp dirs are removed synchronously.
 */
export function installCleanup(say: (msg: string) => void): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    say(`${signal}: stopping ${children.size} child process(es)…`);
    void stopAll().finally(() => process.exit(signal === "SIGINT" ? 130 : 143));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  process.on("exit", () => {
    for (const c of children) if (c.alive()) c.proc.kill("SIGKILL");
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
}

/** A TCP port that was free on 127.0.0.1 a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Polls `fn` every `everyMs` until it returns a truthy value. Throws after `timeoutMs`, or as soon as one of
 * `watch` exits (with the end of its output).
 */
export async function waitUntil<T>(what: string, fn: () => Promise<T>, opts: { timeoutMs: number; everyMs?: number; watch?: Child[] }): Promise<NonNullable<T>> {
  const deadline = Date.now() + opts.timeoutMs;
  let last = "";
  for (;;) {
    for (const c of opts.watch ?? []) {
      if (!c.alive()) throw new Error(`${c.name} exited (code ${c.proc.exitCode ?? c.proc.signalCode}) while waiting for ${what}: ${c.tail().slice(-1500)}`);
    }
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${opts.timeoutMs} ms waiting for ${what}${last ? ` (last error: ${last})` : ""}`);
    await new Promise((r) => setTimeout(r, opts.everyMs ?? 100));
  }
}
