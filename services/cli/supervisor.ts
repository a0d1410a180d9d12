/**
 * Keeps the processes of `jetshard up` running: one that exits is started again after a backoff (0.5 s doubling to
 * 30 s, back to 0.5 s once a run lasted 60 s), and each exit and restart is logged with the process's name, exit
 * code or signal and the next delay. Only `stop()` ends them: SIGTERM to all, SIGKILL to those still running after
 * the grace period. The model is systemd's `Restart=always` with `RestartSec` backoff, and Erlang supervisors'
 * one-for-one strategy: a crash restarts only the process that crashed.
 */
import type { ChildProcess } from "node:child_process";
import type { Logger } from "#shared/log.js";

export interface SupervisorOptions {
  log: Logger;
  /** First restart delay, ms (default 500); doubles per crash in a row. */
  initialDelayMs?: number;
  /** Longest restart delay, ms (default 30 000). */
  maxDelayMs?: number;
  /** A run at least this long (ms) resets the delay to `initialDelayMs` (default 60 000). */
  resetAfterMs?: number;
  /** How long `stop()` waits after SIGTERM before SIGKILL, ms (default 15 000). */
  graceMs?: number;
}

/** One supervised process as the supervisor sees it. */
export interface SupervisedInfo {
  name: string;
  /** Its current pid, or undefined while it is down. */
  pid: number | undefined;
  /** How often it was restarted. */
  restarts: number;
}

interface Entry {
  name: string;
  start: () => Promise<ChildProcess> | ChildProcess;
  proc: ChildProcess | null;
  startedAt: number;
  delayMs: number;
  restarts: number;
  timer: NodeJS.Timeout | null;
}

const alive = (p: ChildProcess | null): p is ChildProcess => p !== null && p.exitCode === null && p.signalCode === null;

function exited(p: ChildProcess): Promise<void> {
  return new Promise((r) => (p.exitCode !== null || p.signalCode !== null ? r() : p.once("exit", () => r())));
}

/** Restarts processes that die, until stopped. */
export class Supervisor {
  private readonly entries: Entry[] = [];
  private stopping = false;
  private readonly log: Logger;
  private readonly initialDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly resetAfterMs: number;
  private readonly graceMs: number;

  constructor(opts: SupervisorOptions) {
    this.log = opts.log;
    this.initialDelayMs = opts.initialDelayMs ?? 500;
    this.maxDelayMs = opts.maxDelayMs ?? 30_000;
    this.resetAfterMs = opts.resetAfterMs ?? 60_000;
    this.graceMs = opts.graceMs ?? 15_000;
  }

  /**
   * Starts a process with `start` and keeps it running. `start` is called again for each restart; it resolves
   * once the process is up (e.g. nats-server accepting clients). Pass `running` to adopt a process already started.
   * @throws what the first `start` throws (a process that cannot start at all is not retried).
   */
  async add(name: string, start: () => Promise<ChildProcess> | ChildProcess, running?: ChildProcess): Promise<SupervisedInfo> {
    const e: Entry = { name, start, proc: null, startedAt: 0, delayMs: this.initialDelayMs, restarts: 0, timer: null };
    this.entries.push(e);
    this.watch(e, running ?? (await start()));
    this.log.info({ process: name, childPid: e.proc?.pid }, `started ${name}`);
    return this.info(e);
  }

  /** Every supervised process, in the order added. */
  list(): SupervisedInfo[] {
    return this.entries.map((e) => this.info(e));
  }

  /** SIGTERM to every process (in parallel), SIGKILL after the grace period; resolves once all have exited. */
  async stop(): Promise<void> {
    this.stopping = true;
    for (const e of this.entries) if (e.timer) clearTimeout(e.timer);
    const procs = this.entries.map((e) => e.proc).filter(alive);
    for (const p of procs) p.kill("SIGTERM");
    const timer = setTimeout(() => procs.filter(alive).forEach((p) => p.kill("SIGKILL")), this.graceMs);
    await Promise.all(procs.map(exited));
    clearTimeout(timer);
  }

  /** SIGKILL everything at once (the supervisor's own process is exiting). */
  killAll(): void {
    this.stopping = true;
    for (const e of this.entries) {
      if (e.timer) clearTimeout(e.timer);
      if (alive(e.proc)) e.proc.kill("SIGKILL");
    }
  }

  private info(e: Entry): SupervisedInfo {
    return { name: e.name, pid: alive(e.proc) ? e.proc.pid : undefined, restarts: e.restarts };
  }

  private watch(e: Entry, proc: ChildProcess): void {
    e.proc = proc;
    e.startedAt = Date.now();
    proc.once("exit", (code, signal) => {
      if (this.stopping) return;
      if (Date.now() - e.startedAt >= this.resetAfterMs) e.delayMs = this.initialDelayMs;
      this.log.error({ process: e.name, childPid: proc.pid, code, signal, restartInMs: e.delayMs }, `${e.name} exited (${signal ?? `code ${code}`}); restarting in ${e.delayMs} ms`);
      this.schedule(e);
    });
  }

  private schedule(e: Entry): void {
    const delay = e.delayMs;
    e.delayMs = Math.min(e.delayMs * 2, this.maxDelayMs);
    e.timer = setTimeout(() => void this.restart(e), delay);
  }

  private async restart(e: Entry): Promise<void> {
    e.timer = null;
    if (this.stopping) return;
    let proc: ChildProcess;
    try {
      proc = await e.start();
    } catch (err) {
      this.log.error({ process: e.name, err, restartInMs: e.delayMs }, `${e.name} did not start; trying again in ${e.delayMs} ms`);
      return this.schedule(e);
    }
    if (this.stopping) {
      proc.kill("SIGTERM");
      return;
    }
    e.restarts++;
    this.watch(e, proc);
    this.log.warn({ process: e.name, childPid: proc.pid, restarts: e.restarts }, `restarted ${e.name}`);
  }
}
