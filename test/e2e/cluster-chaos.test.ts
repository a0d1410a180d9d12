/**
 * Chaos on a real 3-node NATS cluster with replicas 3: NATS nodes and workers SIGKILLed while thousands of async
 * jobs are in flight and more are submitted over HTTP. Bounded (job counts capped), loopback only, paced by
 * conditions (accepted counts, queue depth, stream leaders), not sleeps. Every accepted job must reach exactly one
 * terminal state with one stored result; a refused submission must be a 503 with Retry-After, never a 500.
 */
import t from "tap";
import type { ChildProcess } from "node:child_process";
import { addModel } from "#shared/model-repo.js";
import { ElemType, encodeModel, model, node, valueInfo } from "#shared/onnx/builder.js";
import { STREAMS } from "#shared/subjects.js";
import { checkJobs, watchTerminalWrites } from "../helpers/checker.js";
import { startClusterStack } from "../helpers/cluster.js";
import { waitFor } from "../helpers/stack.js";

/** Accepted before the workers start: the backlog in flight when the first node is killed. */
const BACKLOG = 6000;
/** Submissions stop here even if the faults are not over (a bound, not a target). */
const MAX_JOBS = 9000;
const CONCURRENCY = 32;
/** The cheapest model there is: output = input. */
const IDENTITY = encodeModel(
  model({
    nodes: [node("Identity", ["input"], ["output"])],
    inputs: [valueInfo("input", ElemType.FLOAT, ["N", 4])],
    outputs: [valueInfo("output", ElemType.FLOAT, ["N", 4])],
  }),
);

interface Answer {
  sent: number;
  at: number;
  status: number;
  retryAfter: boolean;
  error?: string;
}

interface Fault {
  name: string;
  node: string;
  /** performance.now() of the SIGKILL, and of the restarted node having caught up (every replica current). */
  killedAt: number;
  end: number;
  inFlight: number;
  restartMs: number;
}

// about 3 minutes alone on 2 cores (6,000 jobs, two leader elections, restarts); more beside other test files
t.setTimeout(360_000);

t.test("3-node cluster, replicas 3: NATS nodes and workers SIGKILLed with 5,000 async jobs in flight, none lost or duplicated, no 500s", async (t) => {
  const stack = await startClusterStack(t, { JETSHARD_ACK_WAIT_MS: "3000", JETSHARD_MAX_DELIVER: "100" });
  await addModel(stack.infra, "tiny", IDENTITY);
  const terminal = await watchTerminalWrites(stack.infra);
  const gw = await stack.gateway();

  const answers: Answer[] = [];
  const accepted: string[] = [];
  let next = 0;
  let submitting = true;
  /** Submits job `i` until it is accepted, as a polite client does: on a 503 it waits Retry-After and sends it again. */
  const submit = async (i: number): Promise<void> => {
    for (;;) {
      const sent = performance.now();
      const res = await fetch(`${gw.url}/v1/jobs`, {
        method: "POST",
        // the idempotency key keeps a resubmission after a refusal one job
        headers: { "content-type": "application/json", "idempotency-key": `job-${i}` },
        body: JSON.stringify({ model: "tiny", inputs: [{ name: "input", shape: [1, 4], datatype: "FP32", data: [i, 1, 2, 3] }] }),
      });
      const body = (await res.json()) as { id?: string; error?: string };
      answers.push({ sent, at: performance.now(), status: res.status, retryAfter: res.headers.has("retry-after"), ...(body.error ? { error: body.error } : {}) });
      if (res.status === 202 || res.status === 200) {
        accepted.push(body.id!);
        return;
      }
      if (res.status !== 503) return;
      await new Promise((r) => setTimeout(r, 1000 * Number(res.headers.get("retry-after") ?? 1)));
    }
  };
  const lanes = (until: () => boolean) =>
    Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (!until() && next < MAX_JOBS) await submit(next++);
    }));

  // 1. a backlog of 6,000 accepted jobs, no worker yet
  const t0 = performance.now();
  await lanes(() => next >= BACKLOG);
  t.comment(`backlog: ${accepted.length} jobs accepted in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  /** Jobs in flight (queued or running: JOBS is a work queue, a job leaves it when acked), and jobs finished. */
  const queued = async () => (await stack.infra.jsm.streams.info(STREAMS.jobs)).state.messages;
  const results = async () => terminal.counts.size;

  // 2. workers start on it; submissions go on until both faults are over
  const workers: ChildProcess[] = await Promise.all([stack.workerProcess(), stack.workerProcess(), stack.workerProcess()]);
  const more = lanes(() => !submitting);

  // Worker SIGKILLs: one with each NATS kill, one after each restart, and one each time 500 more jobs have
  // finished. The replacement starts in the background (so kills keep coming while it loads); the last live worker
  // is spared, so the backlog always has someone to drain it.
  let workerKills = 0;
  const replacing: Array<Promise<unknown>> = [];
  const alive = () => workers.filter((w) => w.exitCode === null && w.signalCode === null);
  const killWorker = async () => {
    // on a loaded host a replacement may still be starting: wait for it rather than skip the kill
    if (alive().length < 2) await Promise.allSettled(replacing);
    const live = alive();
    if (live.length < 2) return;
    live[workerKills % live.length]!.kill("SIGKILL");
    workerKills++;
    replacing.push(stack.workerProcess().then((w) => workers.push(w), (err: Error) => t.comment(`a replacement worker did not start: ${err.message.slice(-600)}`)));
  };
  let chaos = true;
  const killer = (async () => {
    while (chaos) {
      const mark = await results();
      await waitFor("500 more jobs finished", async () => !chaos || (await results()) >= mark + 500, 120_000, 200).catch(() => undefined);
      if (chaos) await killWorker();
    }
  })();

  const faults: Fault[] = [];
  const leaderOf = async (stream: string) => (await stack.infra.jsm.streams.info(stream)).cluster?.leader;
  /**
   * SIGKILLs the node leading `stream` (another one if that one was killed before), waits until 50 more jobs are
   * accepted, restarts it and waits until every replica is current.
   */
  const fault = async (name: string, stream: string) => {
    const leader = await waitFor(`a leader for ${stream}`, () => leaderOf(stream).catch(() => undefined), 30_000);
    const killedBefore = new Set(faults.map((f) => f.node));
    const victim = stack.cluster.nodes.find((n) => n.name === leader && !killedBefore.has(n.name)) ?? stack.cluster.nodes.find((n) => !killedBefore.has(n.name))!;
    const inFlight = await queued();
    const role = victim.name === leader ? `leader of ${stream}` : `${stream} follower`;
    const f: Fault = { name: `${name}: SIGKILL ${victim.name} (${role})`, node: victim.name, killedAt: performance.now(), end: 0, inFlight, restartMs: 0 };
    faults.push(f);
    await victim.kill();
    await killWorker();
    const before = accepted.length;
    await waitFor("submissions accepted again after the kill", () => accepted.length >= before + 50, 60_000);
    const r0 = performance.now();
    await victim.restart();
    await stack.cluster.waitForCurrent(60_000);
    f.restartMs = performance.now() - r0;
    f.end = performance.now();
    await killWorker();
  };
  try {
    await waitFor("the first jobs to finish", async () => (await results()) >= 1, 60_000, 100);
    await fault("fault 1", STREAMS.jobs);
    // the next node dies as soon as the first is back and current (quorum needs it)
    await fault("fault 2", "KV_jobs");
  } finally {
    submitting = false;
    chaos = false;
  }
  await more;
  await killer;
  await Promise.all(replacing);
  const report = await checkJobs(stack.infra, accepted, 120_000, terminal);
  if (report.lost.length > 0) {
    t.comment(`alive worker processes: ${workers.filter((w) => w.exitCode === null && w.signalCode === null).length} of ${workers.length}`);
    for await (const c of stack.infra.jsm.consumers.list(STREAMS.jobs)) {
      t.comment(`consumer ${c.name}: pending ${c.num_pending}, ack pending ${c.num_ack_pending}, waiting ${c.num_waiting}, redelivered ${c.num_redelivered}, leader ${c.cluster?.leader}`);
    }
  }

  for (const f of faults) {
    const during = answers.filter((a) => a.sent >= f.killedAt && a.sent <= f.end);
    const ok = during.filter((a) => a.status === 202 || a.status === 200).length;
    const refused = during.filter((a) => a.status === 503).length;
    const firstAccept = answers.find((a) => a.sent > f.killedAt && (a.status === 202 || a.status === 200));
    const slowest = Math.max(0, ...during.map((a) => a.at - a.sent));
    t.comment(
      `${f.name} with ${f.inFlight} jobs in flight: ${during.length} submissions, ${((100 * ok) / Math.max(1, during.length)).toFixed(1)} % accepted, ` +
        `${refused} × 503, slowest answer among them ${(slowest / 1000).toFixed(1)} s, first submission sent after the kill accepted ${firstAccept ? ((firstAccept.at - f.killedAt) / 1000).toFixed(1) : "-"} s after it, ` +
        `restarted node caught up in ${(f.restartMs / 1000).toFixed(1)} s`,
    );
    const reasons = new Map<string, number>();
    for (const a of during) if (a.error) reasons.set(`${a.status} ${a.error}`, (reasons.get(`${a.status} ${a.error}`) ?? 0) + 1);
    for (const [e, n] of reasons) t.comment(`  ${n} × ${e}`);
    t.ok(during.length > 0 && ok / during.length >= 0.95, `${f.name}: ≥ 95 % of submissions accepted`);
  }
  const statuses = new Map<number, number>();
  for (const a of answers) statuses.set(a.status, (statuses.get(a.status) ?? 0) + 1);
  t.comment(`answers by status: ${[...statuses].map(([s, n]) => `${s} × ${n}`).join(", ")}`);
  t.comment(`accepted ${accepted.length}, succeeded ${report.succeeded}, failed ${report.failed.length}, lost ${report.lost.length}, duplicated ${report.duplicated.length}, worker kills ${workerKills}, ${((performance.now() - t0) / 1000).toFixed(0)} s in all`);
  t.same([...statuses.keys()].filter((s) => s !== 202 && s !== 200 && s !== 503), [], "no answer but 202 or 503 (no 500)");
  t.ok(answers.filter((a) => a.status === 503).every((a) => a.retryAfter), "every 503 carries Retry-After");
  t.equal(new Set(accepted).size, accepted.length, "each accepted job accepted once (the idempotency key held)");
  t.ok(faults[0]!.inFlight >= 5000, "≥ 5,000 accepted jobs in flight when the first node is killed");
  t.same(report.lost, [], "none lost");
  t.same(report.duplicated, [], "none duplicated");
  t.same(report.failed, [], "none failed");
  t.equal(report.succeeded, accepted.length, "every accepted job succeeded exactly once");
  t.ok(workerKills >= 3, `workers were SIGKILLed (${workerKills})`);
});
