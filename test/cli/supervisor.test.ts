import t from "tap";
import { spawn, type ChildProcess } from "node:child_process";
import { pino } from "pino";
import { Supervisor } from "../../services/cli/supervisor.js";
import { waitFor } from "../helpers/stack.js";

/** A logger whose records the test reads back. */
function capture() {
  const records: Array<Record<string, any>> = [];
  const log = pino({ level: "info" }, { write: (s: string) => void records.push(JSON.parse(s)) });
  return { log, records, exits: () => records.filter((r) => /exited/.test(r.msg)) };
}

/** A node process running `code`. */
const node = (code: string) => () => spawn(process.execPath, ["-e", code], { stdio: "ignore" });
/** A node process running `code`, once it has printed its first line (its signal handlers are then in place). */
const ready = (code: string) => () =>
  new Promise<ChildProcess>((resolve) => {
    const c = spawn(process.execPath, ["-e", code], { stdio: ["ignore", "pipe", "ignore"] });
    c.stdout.once("data", () => resolve(c));
  });
const alive = (pid: number | undefined) => {
  if (pid === undefined) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

t.test("a process that keeps dying is restarted with a doubling, capped backoff, each exit logged", async (t) => {
  const { log, exits } = capture();
  const sup = new Supervisor({ log, initialDelayMs: 50, maxDelayMs: 200, resetAfterMs: 60_000, graceMs: 1_000 });
  t.teardown(() => sup.stop());
  await sup.add("crasher", node("process.exit(3)"));
  await waitFor("five exits", async () => exits().length >= 5, 20_000);
  await sup.stop();
  const seen = exits().slice(0, 5);
  t.same(seen.map((r) => r.restartInMs), [50, 100, 200, 200, 200], "0.05 s doubling to the 0.2 s cap");
  t.ok(seen.every((r) => r.process === "crasher" && r.code === 3 && r.signal === null), "names the process and its exit code");
  t.match(seen[0]!.msg, /crasher exited \(code 3\); restarting in 50 ms/);
  t.ok(sup.list()[0]!.restarts >= 4, "restarted each time");
});

t.test("a run that lasted resetAfterMs resets the backoff", async (t) => {
  const { log, exits } = capture();
  const sup = new Supervisor({ log, initialDelayMs: 50, maxDelayMs: 5_000, resetAfterMs: 300, graceMs: 1_000 });
  t.teardown(() => sup.stop());
  await sup.add("slow", node("setTimeout(() => process.exit(1), 400)"));
  await waitFor("three exits", async () => exits().length >= 3, 20_000);
  await sup.stop();
  t.same(exits().slice(0, 3).map((r) => r.restartInMs), [50, 50, 50], "never doubles: each run outlived the reset period");
});

t.test("killing one process restarts it and leaves the others running; stop ends all, SIGKILL after the grace", async (t) => {
  const { log, records } = capture();
  const sup = new Supervisor({ log, initialDelayMs: 50, graceMs: 500 });
  t.teardown(() => sup.stop());
  const a = await sup.add("a", node("setInterval(() => {}, 1000)"));
  // b ignores SIGTERM: only the SIGKILL after the grace ends it
  const b = await sup.add("b", ready("process.on('SIGTERM', () => {}); console.log('ready'); setInterval(() => {}, 1000)"));
  t.ok(records.some((r) => r.msg === "started a" && r.childPid === a.pid), "each start is logged with its pid");
  process.kill(a.pid!, "SIGKILL");
  await waitFor("a restarted", async () => sup.list()[0]!.pid !== undefined && sup.list()[0]!.pid !== a.pid, 10_000);
  t.match(records.find((r) => r.process === "a" && r.signal === "SIGKILL"), { msg: /a exited \(SIGKILL\); restarting in 50 ms/ });
  t.equal(sup.list()[1]!.pid, b.pid, "b kept running");
  t.equal(sup.list()[0]!.restarts, 1);
  const a2 = sup.list()[0]!.pid;
  const t0 = Date.now();
  await sup.stop();
  t.ok(Date.now() - t0 >= 400, "waited for the grace before SIGKILL");
  t.notOk(alive(a2), "a stopped");
  t.notOk(alive(b.pid), "b killed");
  t.same(sup.list().map((p) => p.pid), [undefined, undefined]);
  const n = records.length;
  await new Promise((r) => setTimeout(r, 200));
  t.equal(records.length, n, "nothing restarted after stop");
});

t.test("a process that cannot start at all is reported to the caller, not retried", async (t) => {
  const { log } = capture();
  const sup = new Supervisor({ log });
  await t.rejects(sup.add("broken", () => Promise.reject(new Error("no binary"))), /no binary/);
  await sup.stop();
});
