import t from "tap";
import { spawn } from "node:child_process";
import { DEMO_MLP, DEMO_MLP_REQUEST } from "#shared/demo.js";
import { BIN } from "../helpers/cli.js";
import { ROOT, freePort, startStack, waitFor } from "../helpers/stack.js";

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

t.test("jetshard up restarts a SIGKILLed worker and gateway, and async jobs accepted before, during and after all complete", async (t) => {
  const stack = await startStack(t);
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const up = spawn(process.execPath, [BIN, "up"], {
    cwd: ROOT,
    env: {
      ...process.env,
      ...stack.env,
      JETSHARD_PORT: String(port),
      JETSHARD_WORKERS: "2",
      JETSHARD_LOG_LEVEL: "info",
      JETSHARD_LOG_FORMAT: "json",
      // a killed worker's job is redelivered after this
      JETSHARD_ACK_WAIT_MS: "2000",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  t.teardown(() => {
    if (up.exitCode === null && up.signalCode === null) up.kill("SIGKILL");
  });
  let out = "";
  up.stdout.on("data", (d: Buffer) => (out += d.toString()));
  up.stderr.on("data", (d: Buffer) => (out += d.toString()));
  /** `up`'s own log records (its children log to the same stream). */
  const upLogs = () =>
    out
      .split("\n")
      .filter((l) => l.startsWith("{") && l.includes('"name":"up"'))
      .map((l) => JSON.parse(l) as Record<string, any>);
  await waitFor("jetshard is up", () => {
    if (up.exitCode !== null) throw new Error(`up exited: ${out.slice(-3000)}`);
    return out.includes("jetshard is up");
  }, 60_000, 100);
  t.match(out, /A process that dies is restarted; Ctrl-C stops everything/);

  /** Submits one async job, retrying while the gateway is down (connection refused) or not ready. */
  const submit = async (): Promise<string> => {
    const id = await waitFor("a job accepted", async () => {
      const res = await fetch(`${base}/v1/jobs`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: DEMO_MLP, inputs: DEMO_MLP_REQUEST.inputs }) }).catch(() => null);
      if (!res || res.status === 503) return null;
      t.equal(res.status, 202, "accepted");
      return ((await res.json()) as { id: string }).id;
    }, 30_000, 100);
    return id;
  };
  const batch = (n: number) => Promise.all(Array.from({ length: n }, submit));
  const workers = async () => {
    const res = await fetch(`${base}/v1/workers`).catch(() => null);
    return res?.ok ? ((await res.json()) as { workers: Array<{ id: string; pid: number }> }).workers : null;
  };

  const before = await batch(5);

  const victim = (await waitFor("two workers", async () => ((await workers())?.length === 2 ? (await workers())! : null), 20_000))[0]!;
  process.kill(victim.pid, "SIGKILL");
  const during = await batch(5);
  await waitFor("the worker restarted", () => upLogs().some((r) => r.msg === "restarted worker-1" || r.msg === "restarted worker-2"), 20_000);
  const exit = upLogs().find((r) => r.childPid === victim.pid && /exited/.test(r.msg));
  t.match(exit, { level: 50, signal: "SIGKILL", restartInMs: 500, msg: /^worker-\d exited \(SIGKILL\); restarting in 500 ms$/ }, "the worker's death is logged with its signal and the next delay");

  const gateway = upLogs().find((r) => r.msg === "started gateway");
  t.ok(gateway?.childPid, "up logged the gateway's pid");
  process.kill(gateway!.childPid, "SIGKILL");
  const duringGateway = await batch(5);
  t.match(upLogs().find((r) => r.process === "gateway" && r.signal === "SIGKILL"), { msg: /gateway exited \(SIGKILL\); restarting in 500 ms/ });
  t.ok(upLogs().some((r) => r.msg === "restarted gateway"), "the gateway was restarted");

  await waitFor("two workers again, one of them new", async () => {
    const ws = await workers();
    return ws?.length === 2 && !ws.some((w) => w.pid === victim.pid);
  }, 20_000);
  const after = await batch(5);

  const ids = [...before, ...during, ...duringGateway, ...after];
  t.equal(new Set(ids).size, 20, "20 distinct jobs");
  for (const id of ids) {
    const rec = await waitFor(`job ${id} finished`, async () => {
      const res = await fetch(`${base}/v1/jobs/${id}?wait=5s`).catch(() => null);
      const body = res?.ok ? ((await res.json()) as { status: string }) : null;
      return body && ["succeeded", "failed", "cancelled"].includes(body.status) ? body : null;
    }, 30_000, 100);
    t.equal(rec.status, "succeeded", `job ${id} succeeded`);
  }

  const pids = (await workers())!.map((w) => w.pid);
  up.kill("SIGTERM");
  const code = await new Promise<number | null>((r) => up.once("exit", (c) => r(c)));
  t.equal(code, 0, "up exits cleanly on SIGTERM");
  t.equal(await fetch(`${base}/v2/health/live`).then(() => "up", () => "down"), "down", "the gateway stopped");
  for (const pid of pids) t.notOk(alive(pid), `worker ${pid} stopped`);
  t.notOk(upLogs().some((r) => /exited/.test(r.msg) && r.signal === "SIGTERM"), "children stopped by up are not restarted or reported as crashes");
});
