/**
 * One evaluation slot of a worker: a child process (nas-eval-child.ts) started on first use and reused,
 * killed and restarted when a trial must be abandoned (timeout, early stop, experiment stopped, drain).
 * The child runs operator-registered code on caller-chosen inputs, so it gets only what it needs: a minimal
 * environment (`evaluatorEnv`) and a fresh temporary working directory, removed when it exits.
 */
import { fork, type ChildProcess } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Logger } from "#shared/log.js";
import type { TrialJob } from "#shared/nas/wire.js";

/** Worker → child. */
export interface EvalRequest {
  job: TrialJob;
  attempt: number;
  /** Real path of the registered custom evaluator (resolved by evaluator-registry.ts), if the evaluator is one. */
  modulePath?: string;
  device: { kind: string; name: string };
  providers: string[];
}

/** Child → worker. */
export type ChildMessage =
  | { type: "ready" }
  | { type: "report"; step: number; value: number }
  | { type: "result"; metrics: Record<string, number> }
  | { type: "error"; message: string; retryable: boolean };

/** How an evaluation ended. */
export type EvalOutcome =
  | { kind: "ok"; metrics: Record<string, number> }
  | { kind: "error"; message: string; retryable: boolean }
  | { kind: "timeout"; timeoutMs: number }
  /** `signal.abort(reason)` was called; the reason is passed through. */
  | { kind: "aborted"; reason: unknown };

// compiled (dist/, `npm run build`) this file is nas-evaluator.js and its child nas-eval-child.js beside it
const CHILD = fileURLToPath(new URL(import.meta.url.endsWith(".ts") ? "./nas-eval-child.ts" : "./nas-eval-child.js", import.meta.url));
/**
 * tsx's loader, by absolute URL, so the child loads TypeScript whatever its working directory: the child itself
 * from the sources, and custom evaluators written in TypeScript (`<name>.ts`) in either case.
 */
const TSX = import.meta.resolve("tsx");
/** How long a fresh evaluator process may take to load (tsx, ONNX Runtime). */
const START_TIMEOUT_MS = 60_000;

/**
 * Variables passed from the worker's environment to an evaluator process: locale and time zone, where programs
 * and shared libraries are (ONNX Runtime's CUDA provider loads CUDA and cuDNN through LD_LIBRARY_PATH), and which
 * GPUs the worker was given. Nothing else: no JETSHARD_* settings, NATS credentials, cloud keys.
 */
export const EVALUATOR_ENV_PASSED = ["PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES"] as const;

/**
 * The environment of an evaluator process: the `EVALUATOR_ENV_PASSED` variables that `parent` has, and HOME and
 * TMPDIR set to `dir` (its private working directory). tsx is loaded through `--import` in execArgv, so no
 * NODE_OPTIONS is needed (and the worker's is not passed on).
 */
export function evaluatorEnv(parent: Record<string, string | undefined>, dir: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const k of EVALUATOR_ENV_PASSED) {
    const v = parent[k];
    if (v !== undefined) env[k] = v;
  }
  return { ...env, HOME: dir, TMPDIR: dir };
}

export class EvaluatorProcess {
  private child: ChildProcess | null = null;
  private ready: Promise<ChildProcess> | null = null;

  constructor(private readonly log: Logger) {}

  private start(): Promise<ChildProcess> {
    if (this.ready) return this.ready;
    const dir = mkdtempSync(path.join(os.tmpdir(), "jetshard-eval-"));
    const child = fork(CHILD, [], {
      cwd: dir,
      env: evaluatorEnv(process.env, dir),
      execArgv: ["--import", TSX],
      serialization: "advanced",
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    this.child = child;
    // 'close' comes after 'exit' and after 'error' for a process that never started: the directory goes either way
    child.once("close", () => void rm(dir, { recursive: true, force: true }).catch((err) => this.log.warn({ err, dir }, "could not remove an evaluator directory")));
    child.on("error", (err) => this.log.warn({ err }, "evaluator process error"));
    this.ready = new Promise<ChildProcess>((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error(`evaluator process did not start within ${START_TIMEOUT_MS} ms`)), START_TIMEOUT_MS);
      const fail = (err: Error) => {
        clearTimeout(timer);
        child.off("message", onMsg);
        this.kill();
        reject(err);
      };
      const onMsg = (m: ChildMessage) => {
        if (m.type !== "ready") return;
        clearTimeout(timer);
        child.off("message", onMsg);
        child.off("exit", onExit);
        resolve(child);
      };
      const onExit = (code: number | null, signal: string | null) => fail(new Error(`evaluator process exited while starting (code ${code}, signal ${signal})`));
      child.on("message", onMsg);
      child.once("exit", onExit);
    });
    child.once("exit", () => {
      if (this.child === child) {
        this.child = null;
        this.ready = null;
      }
    });
    return this.ready;
  }

  /**
   * Evaluates one trial. Never throws: every ending is an EvalOutcome. The timeout counts from when the
   * evaluator process is ready (its one-time start-up is not the trial's fault).
   */
  async evaluate(req: EvalRequest, opts: { timeoutMs: number; signal: AbortSignal; onReport: (step: number, value: number) => void }): Promise<EvalOutcome> {
    let child: ChildProcess;
    try {
      child = await this.start();
    } catch (err) {
      return { kind: "error", message: (err as Error).message, retryable: true };
    }
    if (opts.signal.aborted) return { kind: "aborted", reason: opts.signal.reason };
    return new Promise<EvalOutcome>((resolve) => {
      let settled = false;
      const done = (o: EvalOutcome, kill: boolean) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        child.off("message", onMsg);
        child.off("exit", onExit);
        opts.signal.removeEventListener("abort", onAbort);
        if (kill) this.kill();
        resolve(o);
      };
      const onMsg = (m: ChildMessage) => {
        if (m.type === "report") opts.onReport(m.step, m.value);
        else if (m.type === "result") done({ kind: "ok", metrics: m.metrics }, false);
        else if (m.type === "error") done({ kind: "error", message: m.message, retryable: m.retryable }, false);
      };
      const onExit = (code: number | null, signal: string | null) =>
        done({ kind: "error", message: `evaluator process exited during the trial (code ${code}, signal ${signal})`, retryable: true }, false);
      const onAbort = () => done({ kind: "aborted", reason: opts.signal.reason }, true);
      const timer = setTimeout(() => done({ kind: "timeout", timeoutMs: opts.timeoutMs }, true), opts.timeoutMs);
      child.on("message", onMsg);
      child.once("exit", onExit);
      opts.signal.addEventListener("abort", onAbort, { once: true });
      child.send(req, (err) => {
        if (err) done({ kind: "error", message: `could not reach the evaluator process: ${err.message}`, retryable: true }, true);
      });
    });
  }

  /** Kills the process (SIGKILL); the next evaluation starts a fresh one. */
  kill(): void {
    const c = this.child;
    this.child = null;
    this.ready = null;
    if (c && c.exitCode === null && c.signalCode === null) {
      this.log.debug({ pid: c.pid }, "killing evaluator process");
      c.kill("SIGKILL");
    }
  }
}
