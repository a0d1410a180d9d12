import t from "tap";
import * as ort from "onnxruntime-node";
import { encodeModel, mlp } from "#shared/onnx/builder.js";
import { sigkillMidRequest } from "../helpers/failover.js";
import { startStack, waitFor } from "../helpers/stack.js";

t.test("three workers on one model each take part of a 300-request load", async (t) => {
  const stack = await startStack(t);
  const gw = await stack.gateway();
  const bytes = encodeModel(mlp({ layers: [16, 64, 4], seed: 9 }));
  await fetch(`${gw.url}/v1/models/load`, { method: "PUT", body: bytes });
  const workers = await Promise.all([stack.worker(), stack.worker(), stack.worker()]);
  await waitFor("three workers serving", async () => (((await (await fetch(`${gw.url}/v2/models/load/ready`)).json()) as any)).workers === 3);

  const ref = await ort.InferenceSession.create(bytes);
  const counts = new Map<string, number>();
  let next = 0;
  let wrong = 0;
  const one = async (i: number) => {
    const row = Array.from({ length: 16 }, (_, j) => Math.sin(i * 16 + j));
    const res = await fetch(`${gw.url}/v2/models/load/infer`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ id: String(i), inputs: [{ name: "input", shape: [1, 16], datatype: "FP32", data: row }] }),
    });
    const body = (await res.json()) as any;
    if (res.status !== 200 || body.id !== String(i)) throw new Error(`request ${i}: ${res.status} ${JSON.stringify(body)}`);
    const want = (await ref.run({ input: new ort.Tensor("float32", Float32Array.from(row), [1, 16]) })).output!.data as Float32Array;
    if (!body.outputs[0].data.every((v: number, k: number) => v === want[k])) wrong++;
    counts.set(body.parameters.worker, (counts.get(body.parameters.worker) ?? 0) + 1);
  };
  await Promise.all(Array.from({ length: 24 }, async () => {
    while (next < 300) await one(next++);
  }));
  t.equal(wrong, 0, "every answer equals in-process ORT");
  t.equal([...counts.values()].reduce((a, b) => a + b, 0), 300, "300 answers");
  for (const w of workers) t.ok((counts.get(w.id) ?? 0) > 0, `worker ${w.id} processed ${counts.get(w.id) ?? 0}`);
});

// the same on the direct (core NATS) path: test/e2e/sigkill-direct.test.ts (a file of its own, for time)
t.test("SIGKILL of the worker holding a sync job sent through JetStream: the job is redelivered and still succeeds", (t) => sigkillMidRequest(t, false));
