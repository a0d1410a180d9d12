import t from "tap";
import * as ort from "onnxruntime-node";
import { JetshardClient } from "#shared/client.js";
import { encodeModel, mlp } from "#shared/onnx/builder.js";
import { WorkerInfoSchema } from "#shared/wire.js";
import { slowModel } from "../helpers/models.js";
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

for (const direct of [true, false]) {
  const path = direct ? "sent straight to the worker over core NATS" : "sent through JetStream";
  t.test(`SIGKILL of the worker holding a sync job ${path}: the job is run again elsewhere and still succeeds`, async (t) => {
    const stack = await startStack(t, { JETSHARD_ACK_WAIT_MS: "2000" });
    const bytes = slowModel(1024, 480);
    await fetch(`${(await stack.gateway()).url}/v1/models/slow`, { method: "PUT", body: bytes });
    const victim = await stack.workerProcess();
    const client = new JetshardClient(stack.infra.nc);
    t.teardown(() => client.close());

    const rows = 64;
    const data = Float32Array.from({ length: rows * 1024 }, (_, i) => Math.cos(i));
    const pending = client.infer("slow", [{ name: "input", datatype: "FP32", shape: [rows, 1024], data }], { timeoutMs: 120_000, direct });
    // wait until the victim reports the job in flight, then kill it mid-run
    await waitFor("job in flight on the victim", async () => {
      const e = await stack.infra.workers.get(`${(await workerIds(stack))[0]}`);
      return e && WorkerInfoSchema.parse(e.json()).inFlight > 0;
    }, 20_000, 20);
    victim.kill("SIGKILL");
    await new Promise((r) => victim.once("exit", r));
    const rescuer = await stack.worker();

    const res = await pending;
    t.equal(res.worker, rescuer.id, "finished by the worker started after the crash");
    const s = await ort.InferenceSession.create(bytes);
    const want = (await s.run({ input: new ort.Tensor("float32", data, [rows, 1024]) })).output!.data as Float32Array;
    t.same(res.outputs[0]!.data, want, "result is correct");
  });
}

async function workerIds(stack: Awaited<ReturnType<typeof startStack>>): Promise<string[]> {
  const ids: string[] = [];
  for await (const k of await stack.infra.workers.keys()) ids.push(k);
  return ids;
}
