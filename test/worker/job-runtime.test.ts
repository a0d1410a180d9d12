/**
 * The job runtime on a real nats-server with small test processors (no ONNX): leases, retries, the terminal
 * path, draining, deliveries that ran out, and consume loops whose consumer disappears.
 */
import t, { type Test } from "tap";
import { DLQ_HEADERS } from "#shared/dlq.js";
import { JobError } from "#shared/errors.js";
import { silentLogger } from "#shared/log.js";
import { STREAMS, subjects } from "#shared/subjects.js";
import { retryPolicy } from "../../services/worker/decide.js";
import { createJobRuntime, jobConsumerConfig, openConsumer, type Final, type JobRef, type JobRuntimeDeps, type Processor, type RunContext, type RunResult, type SourceSpec } from "../../services/worker/job-runtime.js";
import { addModel } from "#shared/model-repo.js";
import { encodeModel, mlp } from "#shared/onnx/builder.js";
import { JetshardClient } from "#shared/client.js";
import { WorkerInfoSchema } from "#shared/wire.js";
import { startStack, waitFor, type Stack } from "../helpers/stack.js";

const stack = await startStack(t);
const { infra } = stack;
let n = 0;

/** A processor whose run is given by the test; it records deliveries and final answers. */
function testProcessor(run: (job: JobRef, ctx: RunContext) => Promise<RunResult<string>>) {
  const deliveries: number[] = [];
  const finals: Array<Final<JobRef, string>> = [];
  const processor: Processor<JobRef, string> = {
    name: "test",
    parse: (held) => ({ id: new TextDecoder().decode(held.data), model: "rt", entry: false }),
    run: (job, ctx) => {
      deliveries.push(ctx.held.attempt);
      return run(job, ctx);
    },
    publish: async (final) => {
      finals.push(final);
    },
  };
  return { processor, deliveries, finals };
}

/** A runtime on a fresh subject and consumer; returns it with a `publish` for that subject. */
async function setup(t: Test, processor: Processor<JobRef, string>, opts: Partial<JobRuntimeDeps> & { ackWaitMs?: number; maxDeliver?: number; source?: Partial<SourceSpec> } = {}) {
  const model = `rt${++n}`;
  const ackWaitMs = opts.ackWaitMs ?? 500;
  const policy = retryPolicy({ maxAttempts: 3, maxDeliver: opts.maxDeliver ?? 5, retryBaseMs: 50 });
  const consumer = `test_${model}`;
  const open = () => openConsumer(infra, STREAMS.jobs, consumer, jobConsumerConfig(subjects.infer(model), { ackWaitMs, maxDeliver: policy.maxDeliver }));
  const runtime = createJobRuntime({ name: model, infra, log: silentLogger(), workerId: "w-test", policy, ackWaitMs, concurrency: 2, processor, ...opts });
  t.teardown(() => runtime.stop());
  const spec: SourceSpec = { key: model, open, fetch: { mode: "stream", buffer: 4 }, restart: false, ...opts.source };
  return {
    model,
    consumer,
    runtime,
    spec,
    start: () => runtime.add(spec),
    publish: (id: string) => infra.js.publish(subjects.infer(model), id, { msgID: `${model}-${id}` }),
    queued: async () => (await infra.jsm.streams.info(STREAMS.jobs, { subjects_filter: subjects.infer(model) })).state.subjects?.[subjects.infer(model)] ?? 0,
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test("a job held three times longer than its ack wait keeps its lease and runs once", async (t) => {
  const { processor, deliveries, finals } = testProcessor(async () => {
    await sleep(1_600);
    return { kind: "succeeded", result: "done" };
  });
  const rt = await setup(t, processor, { ackWaitMs: 500 });
  await rt.start();
  await rt.publish("slow");
  await waitFor("answered", () => finals.length === 1, 10_000);
  await waitFor("acked", async () => (await rt.queued()) === 0);
  await sleep(700); // longer than an ack wait: a lost lease would show as a second delivery
  t.same(deliveries, [1], "one delivery");
  t.match(finals[0], { ok: true, jobId: "slow", result: "done" });
  t.same(rt.runtime.stats, { succeeded: 1, failed: 0 });
});

t.test("retryable failures are retried with backoff, then fail terminally: dead letter first, then the answer", async (t) => {
  const { processor, deliveries, finals } = testProcessor(async () => {
    throw new JobError("MODEL_UNAVAILABLE", "object missing", { retryable: true });
  });
  const rt = await setup(t, processor);
  const before = (await infra.jsm.streams.info(STREAMS.dlq)).state.last_seq;
  await rt.start();
  await rt.publish("flaky");
  await waitFor("failed", () => finals.length === 1, 10_000);
  t.same(deliveries, [1, 2, 3], "maxAttempts runs");
  t.match(finals[0], { ok: false, jobId: "flaky", error: { code: "MODEL_UNAVAILABLE", message: "failed after 3 attempts: object missing" } });
  const dl = await infra.jsm.streams.getMessage(STREAMS.dlq, { last_by_subj: `jetshard.dlq.infer.${rt.model}` });
  t.ok(dl && dl.seq > before, "dead-lettered");
  t.equal(dl?.header.get(DLQ_HEADERS.attempts), "3");
  t.equal(dl?.header.get(DLQ_HEADERS.errorCode), "MODEL_UNAVAILABLE");
  await waitFor("gone from JOBS", async () => (await rt.queued()) === 0);
  t.same(rt.runtime.stats, { succeeded: 0, failed: 1 });
});

t.test("the delivery after maxDeliver fails the job without running it", async (t) => {
  const { processor, deliveries, finals } = testProcessor(async () => ({ kind: "succeeded", result: "ran" }));
  const rt = await setup(t, processor, { ackWaitMs: 500, maxDeliver: 2 });
  await rt.publish("lost");
  // two workers take it and die without answering
  const c = await rt.spec.open();
  for (let i = 1; i <= 2; i++) t.equal((await c.next({ expires: 5_000 }))?.info.deliveryCount, i);
  await rt.start();
  await waitFor("failed", () => finals.length === 1, 10_000);
  t.same(deliveries, [], "never run");
  t.match(finals[0], { ok: false, error: { code: "MAX_ATTEMPTS", message: /was delivered 2 times without finishing/ } });
  await waitFor("gone from JOBS", async () => (await rt.queued()) === 0);
});

t.test("stopping hands back running and unstarted work so another worker takes it at once, none lost in a stale pull", async (t) => {
  const started: string[] = [];
  const { processor, finals } = testProcessor(async (job, ctx) => {
    started.push(job.id);
    // long work that gives up when the runtime stops
    await new Promise((r) => ctx.signal.addEventListener("abort", r, { once: true }));
    return { kind: "released", reason: "stopping" };
  });
  const rt = await setup(t, processor, { ackWaitMs: 30_000 });
  await rt.start();
  for (const id of ["a", "b", "c", "d", "e"]) await rt.publish(id);
  await waitFor("two running", () => started.length === 2);
  await rt.runtime.stop();
  t.same(finals, [], "nothing answered");
  // with a 30 s ack wait, only a nak makes them available again now
  const second = testProcessor(async () => ({ kind: "succeeded", result: "ok" }));
  const rt2 = createJobRuntime({ name: "second", infra, log: silentLogger(), workerId: "w2", policy: retryPolicy({ maxAttempts: 3, maxDeliver: 5, retryBaseMs: 50 }), ackWaitMs: 30_000, concurrency: 4, processor: second.processor });
  t.teardown(() => rt2.stop());
  await rt2.add({ ...rt.spec });
  // long before the 30 s ack wait: each was nak'ed (once our pulls had expired, so none was lost in them)
  await waitFor("all five taken over", () => new Set(second.finals.map((f) => f.jobId)).size === 5, 15_000);
  t.same([...new Set(second.finals.map((f) => f.jobId))].sort(), ["a", "b", "c", "d", "e"]);
});

t.test("a consumer deleted under a restartable source is re-created and consuming goes on", async (t) => {
  const { processor, finals } = testProcessor(async () => ({ kind: "succeeded", result: "ok" }));
  const rt = await setup(t, processor, { source: { restart: true } });
  await rt.start();
  await rt.publish("before");
  await waitFor("first", () => finals.length === 1);
  await infra.jsm.consumers.delete(STREAMS.jobs, rt.consumer);
  await waitFor("consumer re-created", () => infra.jsm.consumers.info(STREAMS.jobs, rt.consumer).then(() => true, () => false), 10_000, 100);
  await rt.publish("after");
  await waitFor("second", () => finals.length === 2, 10_000);
  t.same(finals.map((f) => f.jobId), ["before", "after"]);
  t.ok(rt.runtime.has(rt.model), "still a source");
});

t.test("a source that may not restart is dropped when its consumer is deleted, and its owner is told", async (t) => {
  const ended: string[] = [];
  const { processor } = testProcessor(async () => ({ kind: "succeeded", result: "ok" }));
  const rt = await setup(t, processor, { onSourceEnded: (key) => ended.push(key) });
  await rt.start();
  await infra.jsm.consumers.delete(STREAMS.jobs, rt.consumer);
  await waitFor("told", () => ended.length === 1, 10_000);
  t.same(ended, [rt.model]);
  t.notOk(rt.runtime.has(rt.model), "dropped");
});

t.test("a worker whose shard consumer is deleted stops advertising the shard, then serves it again", async (t) => {
  const s: Stack = await startStack(t, { JETSHARD_NAS: "0" });
  await addModel(s.infra, "m", encodeModel(mlp({ layers: [3, 4], seed: 3 })));
  const w = await s.worker();
  const advertised = async () => WorkerInfoSchema.parse((await s.infra.workers.get(w.id))!.json()).shards;
  t.same(await advertised(), ["m:0"]);
  await s.infra.jsm.consumers.delete(STREAMS.jobs, "infer_m_0");
  await waitFor("shard no longer advertised", async () => !(await advertised()).includes("m:0"), 10_000, 20);
  await waitFor("served again", async () => (await advertised()).includes("m:0"), 10_000, 20);
  const client = new JetshardClient(s.infra.nc);
  t.teardown(() => client.close());
  const res = await client.infer("m", [{ name: "input", datatype: "FP32", shape: [1, 3], data: Float32Array.of(1, 2, 3) }], { timeoutMs: 10_000 });
  t.equal(res.worker, w.id, "jobs are consumed again");
});
