import t from "tap";
import { createInbox, nuid } from "@nats-io/transport-node";
import { JetshardClient } from "#shared/client.js";
import { writeEnvelope } from "#shared/envelope.js";
import { HEADERS, subjects } from "#shared/subjects.js";
import type { Tensor } from "#shared/tensor.js";
import { encodeFrame } from "#shared/wire.js";
import { ACCEPT_AFTER_MS } from "../../services/worker/job-runtime.js";
import { slowModel } from "../helpers/models.js";
import { addModel } from "#shared/model-repo.js";
import { encodeModel, mlp } from "#shared/onnx/builder.js";
import { startStack, waitFor } from "../helpers/stack.js";

const INPUT = { name: "input", datatype: "FP32" as const, shape: [1, 4], data: Float32Array.of(1, 2, 3, 4) };

t.test("a direct sync request no worker takes (no responders) waits in JOBS and is answered once a worker starts", async (t) => {
  const stack = await startStack(t);
  await addModel(stack.infra, "m", encodeModel(mlp({ layers: [4, 8, 3], seed: 3 })));
  const client = new JetshardClient(stack.infra.nc);
  t.teardown(() => client.close());
  const pending = client.infer("m", [INPUT], { timeoutMs: 60_000 });
  // the request must be in JOBS before any worker exists: that is where the worker started below finds it
  await waitFor("the request queued in JOBS", async () => (await stack.infra.jsm.streams.info("JOBS")).state.messages === 1, 10_000);
  const w = await stack.worker();
  const r = await pending;
  t.equal(r.worker, w.id, "answered by the worker started later");
  t.same(r.outputs[0]!.shape, [1, 3]);
});

t.test("direct sync requests are answered by the serving worker without touching JOBS", async (t) => {
  const stack = await startStack(t);
  await addModel(stack.infra, "m", encodeModel(mlp({ layers: [4, 8, 3], seed: 3 })));
  const w = await stack.worker();
  const client = new JetshardClient(stack.infra.nc);
  t.teardown(() => client.close());
  const before = (await stack.infra.jsm.streams.info("JOBS")).state.last_seq;
  const results = await Promise.all(Array.from({ length: 50 }, () => client.infer("m", [INPUT])));
  t.ok(results.every((r) => r.worker === w.id && r.outputs[0]!.shape[1] === 3), "all 50 answered");
  t.equal((await stack.infra.jsm.streams.info("JOBS")).state.last_seq, before, "nothing was written to JOBS");
  const viaJobs = await client.infer("m", [INPUT], { direct: false });
  t.equal(viaJobs.worker, w.id, "direct: false still goes through JOBS");
  t.equal((await stack.infra.jsm.streams.info("JOBS")).state.last_seq, before + 1, "one message written to JOBS");
});

t.test("a worker announces a direct request to its caller only when the answer takes a while, and before a slow run", async (t) => {
  const stack = await startStack(t);
  await addModel(stack.infra, "fast", encodeModel(mlp({ layers: [4, 8, 3], seed: 3 })));
  // about a second of ORT per request on this machine class: long past the announcement, and announced before it runs
  await addModel(stack.infra, "slow", slowModel(1024, 240));
  const w = await stack.worker();
  const { nc } = stack.infra;
  const seen = async (model: string, inputs: Tensor[]) => {
    const inbox = createInbox();
    const msgs: Array<{ accepted?: string; bytes: number }> = [];
    const sub = nc.subscribe(inbox, {
      callback: (_e, m) => {
        msgs.push({ accepted: m.headers?.get(HEADERS.accepted) || undefined, bytes: m.data.length });
      },
    });
    const id = nuid.next();
    const job = encodeFrame({ kind: "job", id, model, submittedAt: Date.now() }, inputs);
    const t0 = Date.now();
    nc.publish(subjects.direct(model), job, { reply: inbox, headers: writeEnvelope({ jobId: id, reply: inbox, replyOnly: true }) });
    await waitFor(`the answer from ${model}`, async () => msgs.some((m) => m.bytes > 0), 30_000);
    const ms = Date.now() - t0;
    sub.unsubscribe();
    return { ms, accepted: msgs.map((m) => m.accepted) };
  };
  t.same((await seen("fast", [INPUT])).accepted, [w.id, undefined], "a shard's first run is announced (how long it takes is not known yet)");
  // an answer sooner than ACCEPT_AFTER_MS comes alone (a loaded host may make one slower: it may be announced)
  const fast = [];
  for (let i = 0; i < 20; i++) fast.push(await seen("fast", [INPUT]));
  t.ok(fast.some((f) => f.ms < ACCEPT_AFTER_MS), "some quick answers");
  t.same(fast.filter((f) => f.ms < ACCEPT_AFTER_MS - 20).filter((f) => f.accepted.length !== 1 || f.accepted[0] !== undefined), [], "every quick answer came alone");
  const slow = await seen("slow", [{ name: "input", datatype: "FP32", shape: [1, 1024], data: new Float32Array(1024).fill(0.5) }]);
  t.same(slow.accepted, [w.id, undefined], `a slow one (${slow.ms} ms) is announced first (after ${ACCEPT_AFTER_MS} ms), then answered`);
});
