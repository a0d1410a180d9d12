/**
 * NAS test helpers on top of stack.ts: controllers (in-process, or as a child process for SIGKILL),
 * the experiment API over a real socket, and reading the trial events workers published.
 */
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import type { Test } from "tap";
import { loadConfig } from "#shared/config.js";
import { createLogger, silentLogger } from "#shared/log.js";
import { TrialEventSchema, nasSubjects, type TrialEvent } from "#shared/nas/wire.js";
import type { Infra } from "#shared/nats.js";
import { STREAMS } from "#shared/subjects.js";
import { createController, type Controller } from "../../services/controller/controller.js";
import { ROOT, waitFor, type Stack } from "./stack.js";

/** Operator-registered evaluators for tests (JETSHARD_EVALUATORS_DIR): `evaluators` and `env-probe`. */
export const EVALUATORS_DIR = path.join(ROOT, "test/nas/fixtures");

/** A 40-trial evolution search over small NAS-Bench-201-style cells, scored by NASWOT and latency. */
export const CELL_SPEC = {
  name: "cells",
  family: "cell",
  familyOptions: { inputShape: [3, 8, 8], channels: 8 },
  strategy: { name: "evolution", population: 10, sample: 3 },
  objective: { metric: "naswot", direction: "maximize" },
  constraints: [{ metric: "latency_ms", max: 1000 }],
  maxTrials: 40,
  concurrency: 4,
  evaluator: { metrics: ["naswot", "latency"], batch: 16, runs: 3, warmup: 1 },
  seed: 7,
};

const log = () => (process.env.TEST_LOG ? createLogger({ level: process.env.TEST_LOG }) : silentLogger());

/** A controller in this process, stopped at teardown. */
export async function controller(t: Test, stack: Stack, env: Record<string, string> = {}): Promise<Controller> {
  const c = createController({ config: loadConfig({ ...stack.env, ...env }), log: log() });
  await c.start();
  t.teardown(() => c.stop());
  return c;
}

/** `jetshard controller` in its own process (for SIGKILL); resolves once it has started. */
export async function controllerProcess(t: Test, stack: Stack, env: Record<string, string> = {}): Promise<ChildProcess & { output(): string }> {
  const child = spawn(process.execPath, ["--import", "tsx", path.join(ROOT, "services/cli/main.ts"), "controller"], {
    cwd: ROOT,
    env: { ...process.env, ...stack.env, JETSHARD_LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`controller process did not start: ${out.slice(-2000)}`)), 30_000);
    const check = () => {
      if (out.includes('"controller started"')) {
        clearTimeout(timer);
        child.stdout!.off("data", check);
        child.off("exit", onExit);
        resolve();
      }
    };
    const onExit = (code: number | null) => reject(new Error(`controller process exited (${code}): ${out.slice(-2000)}`));
    child.stdout!.on("data", check);
    child.once("exit", onExit);
  });
  return Object.assign(child, { output: () => out });
}

/** A small JSON client for /v1/experiments. */
export function experimentsApi(base: string) {
  const call = async (method: string, p: string, body?: unknown) => {
    const res = await fetch(`${base}/v1/experiments${p}`, {
      method,
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    });
    const text = await res.text();
    let json: any;
    try {
      json = JSON.parse(text);
    } catch {
      json = text;
    }
    return { status: res.status, body: json };
  };
  return {
    call,
    create: (spec: unknown) => call("POST", "", spec),
    get: (id: string) => call("GET", `/${id}`),
    trials: (id: string) => call("GET", `/${id}/trials`),
    stop: (id: string) => call("POST", `/${id}/stop`),
    resume: (id: string, body?: unknown) => call("POST", `/${id}/resume`, body),
    /** Polls until the experiment is in one of `statuses`; returns its record. */
    async waitStatus(id: string, statuses: string[], timeoutMs = 30_000): Promise<any> {
      return waitFor(`experiment ${id} to be ${statuses.join("|")}`, async () => {
        const r = await call("GET", `/${id}`);
        return statuses.includes(r.body?.status) ? r.body : null;
      }, timeoutMs, 100);
    },
  };
}

/** Every trial event of an experiment in RESULTS, in stream order. */
export async function trialEvents(infra: Infra, exp: string): Promise<TrialEvent[]> {
  const out: TrialEvent[] = [];
  for (let seq = 1; ; ) {
    const m = await infra.jsm.streams.getMessage(STREAMS.results, { seq, next_by_subj: nasSubjects.events(exp) } as never).catch(() => null);
    if (!m) break;
    out.push(TrialEventSchema.parse(m.json()));
    seq = m.seq + 1;
  }
  return out;
}

/** How many evaluations of each trial started (from the workers' `start` events). */
export function evaluationsPerTrial(events: readonly TrialEvent[]): Map<string, number> {
  const n = new Map<string, number>();
  for (const e of events) if (e.kind === "start") n.set(e.trialId, (n.get(e.trialId) ?? 0) + 1);
  return n;
}
