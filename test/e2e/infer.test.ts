import t from "tap";
import * as ort from "onnxruntime-node";
import { JetshardClient } from "#shared/client.js";
import { encodeModel, mlp } from "#shared/onnx/builder.js";
import { startStack, waitFor } from "../helpers/stack.js";

const MODEL = mlp({ layers: [8, 32, 32, 5], seed: 3 });
const BYTES = encodeModel(MODEL);
const ROWS = [
  [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
  [-1, 0.5, 2, -0.25, 0, 1, -3, 0.125],
];

async function reference(rows: number[][]): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(BYTES);
  const r = await s.run({ input: new ort.Tensor("float32", Float32Array.from(rows.flat()), [rows.length, 8]) });
  await s.release();
  return r.output!.data as Float32Array;
}

t.test("HTTP and direct NATS inference through JetStream to two workers", async (t) => {
  const stack = await startStack(t);
  const gw = await stack.gateway();
  await stack.worker();
  await stack.worker();

  const put = await fetch(`${gw.url}/v1/models/mlp8`, { method: "PUT", body: BYTES });
  t.equal(put.status, 201, "model stored");
  const putBody = (await put.json()) as any;
  t.equal(putBody.version, 1);
  t.same(putBody.inputs, [{ name: "input", datatype: "FP32", shape: [-1, 8] }], "inputs with -1 for the dynamic batch");

  await waitFor("model ready", async () => (await fetch(`${gw.url}/v2/models/mlp8/ready`)).ok);
  const want = await reference(ROWS);

  const res = await fetch(`${gw.url}/v2/models/mlp8/infer`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ id: "req-1", inputs: [{ name: "input", shape: [2, 8], datatype: "FP32", data: ROWS }] }),
  });
  t.equal(res.status, 200);
  const body = (await res.json()) as any;
  t.equal(body.id, "req-1", "id echoed");
  t.equal(body.model_name, "mlp8");
  t.equal(body.model_version, "1");
  t.same(body.outputs[0].shape, [2, 5]);
  t.same(Float32Array.from(body.outputs[0].data), want, "HTTP output equals in-process ORT bit for bit");

  const client = new JetshardClient(stack.infra.nc);
  t.teardown(() => client.close());
  const direct = await client.infer("mlp8", [{ name: "input", datatype: "FP32", shape: [2, 8], data: Float32Array.from(ROWS.flat()) }]);
  t.same(direct.outputs[0]!.data, want, "direct NATS result equals the same run");
  t.ok(direct.worker, "result names the worker");

  const meta = ((await (await fetch(`${gw.url}/v2/models/mlp8`)).json()) as any);
  t.same(meta, { name: "mlp8", versions: ["1"], platform: "onnxruntime_onnx", inputs: putBody.inputs, outputs: [{ name: "output", datatype: "FP32", shape: [-1, 5] }] });
  const workers = ((await (await fetch(`${gw.url}/v1/workers`)).json()) as any);
  t.equal(workers.workers.length, 2, "both workers registered");
  const page = await fetch(`${gw.url}/`);
  t.match(page.headers.get("content-type"), /text\/html/);
  t.match(await page.text(), /<script src="\/assets\/dashboard.js"/, "the live dashboard (its data comes from /v1/events: test/e2e/dashboard.test.ts)");
});
