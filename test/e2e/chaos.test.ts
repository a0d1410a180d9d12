/**
 * Chaos: crashes of every kind of process while jobs flow. Bounded (fixed job counts, time limits), loopback
 * only, and it stops by itself. A checker compares accepted job ids with terminal states and stored results.
 */
import t from "tap";
import type { ChildProcess } from "node:child_process";
import { JetshardClient } from "#shared/client.js";
import { newJobRecord } from "#shared/jobs.js";
import { addModel } from "#shared/model-repo.js";
import { encodeModel, mlp } from "#shared/onnx/builder.js";
import type { Tensor } from "#shared/tensor.js";
import { checkJobs, watchTerminalWrites } from "../helpers/checker.js";
import { startStack } from "../helpers/stack.js";

const BYTES = encodeModel(mlp({ layers: [16, 32, 4], seed: 21 }));
const input = (i: number): Tensor[] => [{ name: "input", datatype: "FP32", shape: [1, 16], data: Float32Array.from({ length: 16 }, (_, j) => Math.sin(i + j)) }];

/** Submits `n` jobs with `concurrency` in flight; returns the ids the system accepted (a submit that resolved). */
async function submitAll(n: number, concurrency: number, submit: (i: number) => Promise<string>, onAccepted?: (count: number) => void) {
  const accepted: string[] = [];
  let rejected = 0;
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) {
        const i = next++;
        try {
          accepted.push(await submit(i));
          onAccepted?.(accepted.length);
        } catch {
          rejected++;
        }
      }
    }),
  );
  return { accepted, rejected };
}

t.test("2,000 async jobs while workers are SIGKILLed about every second: every accepted job succeeds exactly once", async (t) => {
  const stack = await startStack(t, { JETSHARD_ACK_WAIT_MS: "1500", JETSHARD_MAX_DELIVER: "100", JETSHARD_HEARTBEAT_MS: "500" });
  await addModel(stack.infra, "chaos", BYTES);
  const terminal = await watchTerminalWrites(stack.infra);
  const workers: ChildProcess[] = await Promise.all([stack.workerProcess(), stack.workerProcess(), stack.workerProcess()]);
  let kills = 0;
  let chaos = true;
  const killer = (async () => {
    while (chaos) {
      await new Promise((r) => setTimeout(r, 700 + Math.random() * 600));
      if (!chaos) break;
      const live = workers.filter((w) => w.exitCode === null && w.signalCode === null);
      const victim = live[Math.floor(Math.random() * live.length)];
      if (!victim) continue;
      victim.kill("SIGKILL");
      kills++;
      // start the replacement without waiting for it, so kills keep coming about every second
      void stack.workerProcess().then((w) => workers.push(w), () => undefined);
    }
  })();
  const client = new JetshardClient(stack.infra.nc, { infra: stack.infra });
  t.teardown(() => client.close());
  const t0 = performance.now();
  const { accepted, rejected } = await submitAll(2000, 32, async (i) => (await client.submit("chaos", input(i))).id);
  const report = await checkJobs(stack.infra, accepted, 120_000, terminal);
  const seconds = (performance.now() - t0) / 1000;
  chaos = false;
  await killer;
  t.comment(`submitted 2000, accepted ${accepted.length}, rejected ${rejected}, succeeded ${report.succeeded}, failed ${report.failed.length}, lost ${report.lost.length}, duplicated ${report.duplicated.length}, worker kills ${kills}, ${(accepted.length / seconds).toFixed(0)} jobs/s end to end`);
  t.equal(accepted.length, 2000, "every submission accepted");
  t.same(report.lost, [], "none lost");
  t.same(report.duplicated, [], "no duplicates");
  t.same(report.failed, [], "none failed");
  t.equal(report.succeeded, accepted.length, "every accepted job succeeded");
  t.ok(kills >= 3, `workers were killed (${kills})`);
});

t.test("nats-server SIGKILLed and restarted on the same store mid-load: no accepted job is lost", async (t) => {
  const stack = await startStack(t, { JETSHARD_ACK_WAIT_MS: "2000" });
  await addModel(stack.infra, "chaos", BYTES);
  const terminal = await watchTerminalWrites(stack.infra);
  await stack.worker();
  await stack.worker();
  const client = new JetshardClient(stack.infra.nc, { infra: stack.infra });
  t.teardown(() => client.close());
  let crashed: Promise<void> | null = null;
  const { accepted, rejected } = await submitAll(1000, 16, async (i) => (await client.submit("chaos", input(i), { jobId: `n${i}` })).id, (n) => {
    if (n === 300 && !crashed) {
      crashed = (async () => {
        await stack.nats.kill();
        await new Promise((r) => setTimeout(r, 1000));
        await stack.nats.restart();
      })();
    }
  });
  await crashed;
  const report = await checkJobs(stack.infra, accepted, 120_000, terminal);
  t.comment(`submitted 1000, accepted ${accepted.length}, rejected during the outage ${rejected}, succeeded ${report.succeeded}, lost ${report.lost.length}, duplicated ${report.duplicated.length}`);
  for (const f of report.failed.slice(0, 5)) t.comment(`failed: ${f}`);
  t.ok(accepted.length >= 300, "jobs were accepted before and after the crash");
  t.same(report.lost, [], "no accepted job lost");
  t.same(report.duplicated, [], "no duplicates");
  t.same(report.failed, [], "none failed");
});

t.test("the gateway restarted mid-load: accepted jobs still complete and are readable from the new gateway", async (t) => {
  const stack = await startStack(t);
  await addModel(stack.infra, "chaos", BYTES);
  const terminal = await watchTerminalWrites(stack.infra);
  await stack.worker();
  let gw = await stack.gateway();
  let restarted: Promise<void> | null = null;
  const post = async (i: number) => {
    const r = await fetch(`${gw.url}/v1/jobs`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "chaos", inputs: [{ name: "input", shape: [1, 16], datatype: "FP32", data: Array.from(input(i)[0]!.data as Float32Array) }] }),
    });
    if (r.status !== 202) throw new Error(`status ${r.status}`);
    return ((await r.json()) as { id: string }).id;
  };
  const { accepted } = await submitAll(500, 8, post, (n) => {
    if (n === 200 && !restarted) {
      restarted = (async () => {
        const old = gw;
        gw = await stack.gateway();
        await old.stop();
      })();
    }
  });
  await restarted;
  const report = await checkJobs(stack.infra, accepted, 60_000, terminal);
  t.same(report.lost, [], "none lost");
  t.same(report.duplicated, [], "no duplicates");
  t.equal(report.succeeded, accepted.length);
  const sample = accepted[0]!;
  const r = (await (await fetch(`${gw.url}/v1/jobs/${sample}`)).json()) as any;
  t.match(r, { id: sample, status: "succeeded", result: { outputs: [{ shape: [1, 4] }] } }, "a job accepted by the old gateway is readable from the new one");
});

t.test("the checker itself: a job made terminal twice is a duplicate, one that succeeded without a result is lost", async (t) => {
  const stack = await startStack(t);
  const terminal = await watchTerminalWrites(stack.infra);
  const rec = { ...newJobRecord("twice", "m"), status: "succeeded" as const, result: Buffer.from("answer").toString("base64") };
  await stack.infra.jobs.put("twice", JSON.stringify(rec));
  // a second answer overwriting the first: what the worker's compare-and-set must never let happen
  await stack.infra.jobs.put("twice", JSON.stringify({ ...rec, worker: "another" }));
  await stack.infra.jobs.put("empty", JSON.stringify({ ...newJobRecord("empty", "m"), status: "succeeded" }));
  await stack.infra.jobs.put("once", JSON.stringify({ ...rec, id: "once" }));
  const report = await checkJobs(stack.infra, ["twice", "empty", "once"], 5_000, terminal);
  t.same(report.duplicated, ["twice"]);
  t.same(report.lost, ["empty"]);
  t.equal(report.succeeded, 3);
});
