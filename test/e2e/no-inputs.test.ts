import t from "tap";
import { ElemType, encodeModel, floatTensor, mlp, model, node, onnx, valueInfo } from "#shared/onnx/builder.js";
import { startStack, waitFor } from "../helpers/stack.js";

const json = async (r: Response) => ({ status: r.status, body: (await r.json()) as any });
const send = (url: string, method: string, body?: unknown) =>
  fetch(url, { method, headers: { "content-type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) }).then(json);

/** A model with no inputs: a Constant tensor, passed through Identity to the output. */
function constantModel(): Uint8Array {
  const value = { name: "value", type: onnx.AttributeProto.AttributeType.TENSOR, t: floatTensor("c", [2], [1.5, -2]) };
  return encodeModel(
    model({
      nodes: [{ ...node("Constant", [], ["c"]), attribute: [value] }, node("Identity", ["c"], ["out"])],
      inputs: [],
      outputs: [valueInfo("out", ElemType.FLOAT, [2])],
    }),
  );
}

t.test("a model without inputs is called with an empty inputs list, sync and async; a model with inputs still needs them", async (t) => {
  const stack = await startStack(t);
  const gw = await stack.gateway();
  const put = await fetch(`${gw.url}/v1/models/konst`, { method: "PUT", body: constantModel() });
  t.equal(put.status, 201, "the model without inputs is accepted");
  t.equal((await fetch(`${gw.url}/v1/models/needs`, { method: "PUT", body: encodeModel(mlp({ layers: [2, 3], seed: 1 })) })).status, 201);
  await stack.worker();
  await waitFor("ready", async () => (await fetch(`${gw.url}/v2/models/konst/ready`)).ok && (await fetch(`${gw.url}/v2/models/needs/ready`)).ok);
  t.same((await send(`${gw.url}/v2/models/konst`, "GET")).body.inputs, [], "its metadata lists no inputs");

  const sync = await send(`${gw.url}/v2/models/konst/infer`, "POST", { inputs: [] });
  t.equal(sync.status, 200, `sync: ${JSON.stringify(sync.body)}`);
  t.match(sync.body.outputs, [{ name: "out", datatype: "FP32", shape: [2], data: [1.5, -2] }]);

  const sub = await send(`${gw.url}/v1/jobs`, "POST", { model: "konst", inputs: [] });
  t.equal(sub.status, 202, `async: ${JSON.stringify(sub.body)}`);
  const done = await send(`${gw.url}/v1/jobs/${sub.body.id}?wait=20s`, "GET");
  t.match(done.body, { status: "succeeded" });
  t.same(done.body.result?.outputs, sync.body.outputs, "the async result equals the sync one");

  for (const [what, res] of [
    ["sync", await send(`${gw.url}/v2/models/needs/infer`, "POST", { inputs: [] })],
    ["async", await send(`${gw.url}/v1/jobs`, "POST", { model: "needs", inputs: [] })],
  ] as const) {
    t.equal(res.status, 400, `${what}: an empty inputs list for a model with inputs is a 400`);
    t.match(res.body.error, /input "input" is missing/, `${what}: names the missing input`);
  }
});
