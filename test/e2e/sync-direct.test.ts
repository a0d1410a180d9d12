import t from "tap";
import { JetshardClient } from "#shared/client.js";
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
