import t, { type Test } from "tap";
import { headers as natsHeaders } from "@nats-io/transport-node";
import { encodeModel, mlp } from "#shared/onnx/builder.js";
import { addModel } from "#shared/model-repo.js";
import { HEADERS, STREAMS, consumerName, subjects } from "#shared/subjects.js";
import { AckPolicy } from "@nats-io/jetstream";
import { slowModel } from "../helpers/models.js";
import { startStack, waitFor } from "../helpers/stack.js";

const BYTES = encodeModel(mlp({ layers: [4, 8, 3], seed: 5 }));
const INPUT = [{ name: "input", shape: [1, 4], datatype: "FP32", data: [1, 2, 3, 4] }];
const SLOW_INPUT = [{ name: "input", shape: [64, 1024], datatype: "FP32", data: Array(64 * 1024).fill(0.01) }];

const json = async (r: Response) => ({ status: r.status, headers: r.headers, body: (await r.json()) as any });
const send = (url: string, method: string, body?: unknown, headers: Record<string, string> = {}) =>
  fetch(url, { method, headers: { "content-type": "application/json", ...headers }, body: body === undefined ? undefined : JSON.stringify(body) }).then(json);

t.test("an async job is queued, runs, and its status and result are readable with long polling", async (t) => {
  const stack = await startStack(t);
  const gw = await stack.gateway();
  await addModel(stack.infra, "m", BYTES);
  await stack.worker();
  const sub = await send(`${gw.url}/v1/jobs`, "POST", { model: "m", inputs: INPUT });
  t.equal(sub.status, 202);
  t.match(sub.body, { id: /\w+/, status: "queued" });
  t.equal(sub.headers.get("location"), `/v1/jobs/${sub.body.id}`);
  const got = await send(`${gw.url}/v1/jobs/${sub.body.id}?wait=10s`, "GET");
  t.equal(got.status, 200);
  t.match(got.body, { id: sub.body.id, model: "m", status: "succeeded", attempts: 1, priority: "normal" });
  t.ok(got.body.queuedAt <= got.body.startedAt && got.body.startedAt <= got.body.finishedAt, "timestamps in order");
  const sync = await send(`${gw.url}/v2/models/m/infer`, "POST", { inputs: INPUT });
  t.same(got.body.result.outputs, sync.body.outputs, "the async result equals the sync one");

  const list = await send(`${gw.url}/v1/jobs?status=succeeded&model=m`, "GET");
  t.same(list.body.jobs.map((j: any) => j.id), [sub.body.id]);
  t.equal((await send(`${gw.url}/v1/jobs?status=bogus`, "GET")).status, 400);
  t.equal((await send(`${gw.url}/v1/jobs/nope`, "GET")).status, 404);
  t.equal((await send(`${gw.url}/v1/jobs`, "POST", { model: "zzz", inputs: INPUT })).status, 404);
  const bad = await send(`${gw.url}/v1/jobs`, "POST", { model: "m", inputs: [{ ...INPUT[0], shape: [1, 5], data: [1, 2, 3, 4, 5] }] });
  t.equal(bad.status, 400);
  t.match(bad.body.error, /input "input": expected shape/);
  t.match((await send(`${gw.url}/v1/jobs`, "POST", { model: "m", inputs: INPUT, timeout: "soon" })).body.error, /timeout: "soon" is not a duration/);
});

t.test("an idempotency key or client id makes a resubmission return the existing job, run once", async (t) => {
  const stack = await startStack(t);
  const gw = await stack.gateway();
  await addModel(stack.infra, "m", BYTES);
  const a = await send(`${gw.url}/v1/jobs`, "POST", { model: "m", inputs: INPUT }, { "Idempotency-Key": "order-42" });
  const b = await send(`${gw.url}/v1/jobs`, "POST", { model: "m", inputs: INPUT }, { "Idempotency-Key": "order-42" });
  t.equal(a.status, 202);
  t.equal(b.status, 200);
  t.equal(b.headers.get("idempotent-replayed"), "true");
  t.equal(a.body.id, b.body.id, "same job");
  const c = await send(`${gw.url}/v1/jobs`, "POST", { model: "m", inputs: INPUT, id: "client-7" });
  const d = await send(`${gw.url}/v1/jobs`, "POST", { model: "m", inputs: INPUT, id: "client-7" });
  t.equal(c.body.id, d.body.id);
  const w = await stack.worker();
  for (const id of [a.body.id, c.body.id]) t.match((await send(`${gw.url}/v1/jobs/${id}?wait=10s`, "GET")).body, { status: "succeeded", result: { outputs: [{ shape: [1, 3] }] } });
  t.equal(w.info().processed, 2, "each ran once");
  const info = await stack.infra.jsm.streams.info(STREAMS.results);
  t.equal(info.state.messages, 0, "their small results are kept in their records, not in RESULTS");
});

t.test("cancelling: a queued job never runs; a running one ends cancelled and its result is discarded", async (t) => {
  const stack = await startStack(t);
  const gw = await stack.gateway();
  await addModel(stack.infra, "m", BYTES);
  await addModel(stack.infra, "slow", slowModel(1024, 480));
  const q = await send(`${gw.url}/v1/jobs`, "POST", { model: "m", inputs: INPUT });
  const del = await send(`${gw.url}/v1/jobs/${q.body.id}`, "DELETE");
  t.match(del.body, { status: "cancelled", was: "queued" });
  t.equal((await send(`${gw.url}/v1/jobs/${q.body.id}`, "DELETE")).status, 409, "cancelling twice is a conflict");
  const w = await stack.worker();
  const r = await send(`${gw.url}/v1/jobs`, "POST", { model: "slow", inputs: SLOW_INPUT });
  await waitFor("running", async () => (await send(`${gw.url}/v1/jobs/${r.body.id}`, "GET")).body.status === "running", 20_000);
  t.match((await send(`${gw.url}/v1/jobs/${r.body.id}`, "DELETE")).body, { status: "cancelled", was: "running" });
  await waitFor("worker idle", () => w.info().inFlight === 0 && w.info().processed >= 1, 30_000);
  const after = await send(`${gw.url}/v1/jobs/${r.body.id}`, "GET");
  t.equal(after.body.status, "cancelled", "stays cancelled after the run finished");
  t.notOk(after.body.result, "no result shown");
  const qa = await send(`${gw.url}/v1/jobs/${q.body.id}`, "GET");
  t.equal(qa.body.status, "cancelled");
  t.equal(qa.body.startedAt, undefined, "the queued job never started");
  t.equal(w.info().processed, 1, "the worker ran only the slow job");
});

t.test("high-priority jobs queued with normal ones are taken first", async (t) => {
  const stack = await startStack(t, { JETSHARD_WORKER_CONCURRENCY: "1" });
  const gw = await stack.gateway();
  await addModel(stack.infra, "slow", slowModel(1024, 60));
  const ids: Array<{ id: string; prio: string }> = [];
  for (let i = 0; i < 8; i++) ids.push({ id: (await send(`${gw.url}/v1/jobs`, "POST", { model: "slow", inputs: SLOW_INPUT })).body.id, prio: "normal" });
  for (let i = 0; i < 8; i++) ids.push({ id: (await send(`${gw.url}/v1/jobs`, "POST", { model: "slow", inputs: SLOW_INPUT, priority: "high" })).body.id, prio: "high" });
  await stack.worker();
  const done = [];
  for (const j of ids) done.push({ ...j, rec: (await send(`${gw.url}/v1/jobs/${j.id}?wait=30s`, "GET")).body });
  t.ok(done.every((d) => d.rec.status === "succeeded"), "all succeeded");
  const order = done.sort((a, b) => a.rec.startedAt - b.rec.startedAt).map((d) => d.prio[0]).join("");
  // a worker may already hold one normal job in its buffer when the first high one arrives
  t.match(order, /^n?h{8}/, `start order ${order}`);
});

t.test("a job past its deadline is not run and fails with DEADLINE_EXCEEDED", async (t) => {
  const stack = await startStack(t);
  const gw = await stack.gateway();
  await addModel(stack.infra, "m", BYTES);
  const sub = await send(`${gw.url}/v1/jobs`, "POST", { model: "m", inputs: INPUT, timeout: "200ms" });
  await new Promise((r) => setTimeout(r, 400));
  const w = await stack.worker();
  const rec = (await send(`${gw.url}/v1/jobs/${sub.body.id}?wait=10s`, "GET")).body;
  t.match(rec, { status: "failed", error: { code: "DEADLINE_EXCEEDED" } });
  t.equal(w.info().processed, 0, "not run");
  const dl = await send(`${gw.url}/v1/dead-letters`, "GET");
  t.same(dl.body.deadLetters, [], "an expired deadline is not a dead letter");
});

t.test("a full model queue answers 429 with Retry-After and loses nothing it accepted", async (t) => {
  const stack = await startStack(t, { JETSHARD_QUEUE_MAX_MSGS: "5" });
  const gw = await stack.gateway();
  await addModel(stack.infra, "m", BYTES);
  const res = [];
  for (let i = 0; i < 8; i++) res.push(await send(`${gw.url}/v1/jobs`, "POST", { model: "m", inputs: INPUT }));
  t.same(res.map((r) => r.status), [202, 202, 202, 202, 202, 429, 429, 429]);
  t.equal(res[5]!.headers.get("retry-after"), "1");
  t.match(res[5]!.body.error, /queue for model "m" is full/);
  const sync = await send(`${gw.url}/v2/models/m/infer`, "POST", { inputs: INPUT });
  t.equal(sync.status, 429, "sync requests see the same backpressure");
  await stack.worker();
  for (const r of res.slice(0, 5)) t.equal((await send(`${gw.url}/v1/jobs/${r.body.id}?wait=10s`, "GET")).body.status, "succeeded");
});

t.test("a failing job is dead-lettered after maxAttempts with its reason, and replay after the fix succeeds", async (t) => {
  const stack = await startStack(t, { JETSHARD_MAX_ATTEMPTS: "3", JETSHARD_RETRY_BASE_MS: "100" });
  const gw = await stack.gateway();
  const mv = await addModel(stack.infra, "fragile", BYTES);
  // break it: the worker cannot fetch the model bytes (a retryable failure)
  await stack.infra.objects.delete(mv.shards[0]!.object);
  await stack.worker();
  const sub = await send(`${gw.url}/v1/jobs`, "POST", { model: "fragile", inputs: INPUT });
  const rec = (await send(`${gw.url}/v1/jobs/${sub.body.id}?wait=20s`, "GET")).body;
  t.match(rec, { status: "failed", attempts: 3, error: { code: "MODEL_UNAVAILABLE", message: /failed after 3 attempts: shard object fragile\/1\/0-[0-9a-f]{12}\.onnx is missing/ } });
  const dl = (await send(`${gw.url}/v1/dead-letters`, "GET")).body.deadLetters;
  t.match(dl, [{ id: sub.body.id, model: "fragile", code: "MODEL_UNAVAILABLE", attempts: 3, subject: subjects.infer("fragile") }]);

  // fix the cause, replay
  await stack.infra.objects.putBlob({ name: mv.shards[0]!.object }, BYTES);
  const rp = await send(`${gw.url}/v1/dead-letters/${sub.body.id}/replay`, "POST");
  t.equal(rp.status, 202);
  const again = (await send(`${gw.url}/v1/jobs/${sub.body.id}?wait=20s`, "GET")).body;
  t.match(again, { id: sub.body.id, status: "succeeded", attempts: 1 });
  t.equal(again.result.outputs[0].shape[1], 3);
  t.same((await send(`${gw.url}/v1/dead-letters`, "GET")).body.deadLetters, [], "gone from DLQ");
  t.equal((await send(`${gw.url}/v1/dead-letters/nope/replay`, "POST")).status, 404);
});

/** A stack with model "m" and a worker, and a tracked job `id` published straight to NATS whose body is no job at all. */
async function poisonStack(t: Test, id: string) {
  const stack = await startStack(t);
  const gw = await stack.gateway();
  await addModel(stack.infra, "m", BYTES);
  await stack.worker();
  const h = natsHeaders();
  h.set(HEADERS.track, "1");
  await stack.infra.js.publish(subjects.infer("m"), new TextEncoder().encode("{{{"), { msgID: id, headers: h });
  return { stack, gw };
}

t.test("poison published straight to NATS is dead-lettered at once, and can be deleted from DLQ", async (t) => {
  const { gw } = await poisonStack(t, "poison-1");
  const dl = await waitFor("dead letter", async () => (await send(`${gw.url}/v1/dead-letters?model=m`, "GET")).body.deadLetters[0]);
  t.match(dl, { id: "poison-1", code: "BAD_REQUEST", attempts: 1, error: /neither a jetshard frame nor JSON/ });
  t.match((await send(`${gw.url}/v1/jobs/poison-1`, "GET")).body, { status: "failed", error: { code: "BAD_REQUEST" } });
  t.equal((await send(`${gw.url}/v1/dead-letters/poison-1`, "DELETE")).status, 200);
  t.same((await send(`${gw.url}/v1/dead-letters`, "GET")).body.deadLetters, []);
});

t.test("a replayed job that fails again within the duplicate window is dead-lettered again, not dropped", async (t) => {
  const { stack, gw } = await poisonStack(t, "poison-2");
  const first = await waitFor("dead letter", async () => (await send(`${gw.url}/v1/dead-letters?model=m`, "GET")).body.deadLetters[0]);
  t.match(first, { id: "poison-2", code: "BAD_REQUEST" });
  // replayed at once, well inside DLQ's 2-minute duplicate window, and still poison
  t.equal((await send(`${gw.url}/v1/dead-letters/poison-2/replay`, "POST")).status, 202);
  const again = await waitFor("dead-lettered again", async () => (await send(`${gw.url}/v1/dead-letters?model=m`, "GET")).body.deadLetters.find((d: any) => d.id === "poison-2" && d.seq !== first.seq), 20_000);
  t.match(again, { id: "poison-2", code: "BAD_REQUEST", attempts: 1 });
  t.match((await send(`${gw.url}/v1/jobs/poison-2`, "GET")).body, { status: "failed", error: { code: "BAD_REQUEST" } });
  t.equal((await stack.infra.jsm.streams.info(STREAMS.jobs)).state.messages, 0, "and it left JOBS");
});

t.test("a job that runs out of deliveries (its workers kept dying) is dead-lettered through the advisory", async (t) => {
  const stack = await startStack(t, { JETSHARD_MAX_DELIVER: "2", JETSHARD_MAX_ATTEMPTS: "1", JETSHARD_ACK_WAIT_MS: "500" });
  const gw = await stack.gateway();
  await addModel(stack.infra, "m", BYTES);
  // the model's consumer, as a worker creates it: 2 deliveries at most
  await stack.infra.jsm.consumers.add(STREAMS.jobs, {
    durable_name: consumerName("m"),
    filter_subject: subjects.infer("m"),
    ack_policy: AckPolicy.Explicit,
    ack_wait: 500_000_000,
    max_deliver: 2,
  });
  const sub = await send(`${gw.url}/v1/jobs`, "POST", { model: "m", inputs: INPUT });
  // two "workers" take the job and die without acking; a third pull makes the server give up on it
  const c = await stack.infra.js.consumers.get(STREAMS.jobs, consumerName("m"));
  for (let i = 1; i <= 2; i++) {
    const m = await c.next({ expires: 5_000 });
    t.equal(m?.info.deliveryCount, i, `delivery ${i}, never acked`);
    await new Promise((r) => setTimeout(r, 700));
  }
  t.equal(await c.next({ expires: 1_000 }), null, "no third delivery");
  await stack.worker({ JETSHARD_SERVE: "other" }); // serves nothing: only handles advisories
  const rec = (await send(`${gw.url}/v1/jobs/${sub.body.id}?wait=20s`, "GET")).body;
  t.match(rec, { status: "failed", error: { code: "MAX_ATTEMPTS", message: /delivered 2 times/ } });
  const dl = (await send(`${gw.url}/v1/dead-letters`, "GET")).body.deadLetters;
  t.match(dl, [{ id: sub.body.id, code: "MAX_ATTEMPTS", attempts: 2 }]);
  await waitFor("the job left JOBS", async () => (await stack.infra.jsm.streams.info(STREAMS.jobs)).state.messages === 0);
  t.pass("the job left JOBS");
});
