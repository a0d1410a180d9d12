import t from "tap";
import { encodeModel, mlp } from "#shared/onnx/builder.js";
import { STREAMS, consumerName } from "#shared/subjects.js";
import { identityAllTypes } from "../helpers/models.js";
import { startStack, waitFor } from "../helpers/stack.js";

const post = (url: string, body: unknown) =>
  fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

t.test("every v2 datatype round-trips through JSON, nested or flat, with an outputs filter", async (t) => {
  const stack = await startStack(t);
  const gw = await stack.gateway();
  await fetch(`${gw.url}/v1/models/types`, { method: "PUT", body: identityAllTypes() });
  await stack.worker();
  await waitFor("ready", async () => (await fetch(`${gw.url}/v2/models/types/ready`)).ok);
  const inputs = [
    { name: "f32", datatype: "FP32", data: [[1.5, -2.25]] },
    { name: "f64", datatype: "FP64", data: [[Math.PI, -1e300]] },
    { name: "i8", datatype: "INT8", data: [-128, 127] },
    { name: "i32", datatype: "INT32", data: [[-2147483648, 2147483647]] },
    { name: "i64", datatype: "INT64", data: [[-9007199254740991, 9007199254740991]] },
    { name: "u8", datatype: "UINT8", data: [0, 255] },
    { name: "b", datatype: "BOOL", data: [[true, false]] },
  ].map((i) => ({ ...i, shape: [1, 2] }));
  const res = await post(`${gw.url}/v2/models/types/infer`, { inputs });
  t.equal(res.status, 200);
  const body = (await res.json()) as any;
  const out = Object.fromEntries(body.outputs.map((o: any) => [o.name, o]));
  for (const i of inputs) {
    t.same(out[`out_${i.name}`].data, i.data.flat(), `${i.datatype} values come back unchanged`);
    t.equal(out[`out_${i.name}`].datatype, i.datatype, `${i.datatype} datatype kept`);
    t.same(out[`out_${i.name}`].shape, [1, 2]);
  }
  const filtered = (await (await post(`${gw.url}/v2/models/types/infer`, { inputs, outputs: [{ name: "out_b" }, { name: "out_i8" }] })).json()) as any;
  t.same(filtered.outputs.map((o: any) => o.name), ["out_b", "out_i8"], "only the requested outputs, in the requested order");

  const bad = (await (await post(`${gw.url}/v2/models/types/infer`, { inputs: inputs.map((i) => (i.name === "i8" ? { ...i, data: [1, 300] } : i)) })).json()) as any;
  t.match(bad.error, /input "i8": data\[1\] = 300 is not a valid INT8/);
});

t.test("re-adding a model makes a new version; /versions/{v} addresses one; delete removes all", async (t) => {
  const stack = await startStack(t);
  const gw = await stack.gateway();
  const v1 = encodeModel(mlp({ layers: [2, 3], seed: 1 }));
  const v2 = encodeModel(mlp({ layers: [2, 4], seed: 2 }));
  t.equal(((await (await fetch(`${gw.url}/v1/models/vm`, { method: "PUT", body: v1 })).json()) as any).version, 1);
  t.equal(((await (await fetch(`${gw.url}/v1/models/vm`, { method: "PUT", body: v2 })).json()) as any).version, 2);
  await stack.worker();
  await waitFor("ready", async () => (await fetch(`${gw.url}/v2/models/vm/versions/1/ready`)).ok);

  const meta = (await (await fetch(`${gw.url}/v2/models/vm`)).json()) as any;
  t.same(meta.versions, ["1", "2"]);
  t.same(meta.outputs[0].shape, [-1, 4], "unversioned metadata is the latest");
  const meta1 = (await (await fetch(`${gw.url}/v2/models/vm/versions/1`)).json()) as any;
  t.same(meta1.outputs[0].shape, [-1, 3]);

  const input = { inputs: [{ name: "input", shape: [1, 2], datatype: "FP32", data: [1, 2] }] };
  const r1 = (await (await post(`${gw.url}/v2/models/vm/versions/1/infer`, input)).json()) as any;
  const r2 = (await (await post(`${gw.url}/v2/models/vm/infer`, input)).json()) as any;
  t.equal(r1.model_version, "1");
  t.same(r1.outputs[0].shape, [1, 3], "version 1 ran");
  t.equal(r2.model_version, "2");
  t.same(r2.outputs[0].shape, [1, 4], "latest ran");

  const info = (await (await fetch(`${gw.url}/v1/models/vm`)).json()) as any;
  t.equal(info.versions.length, 2);
  t.match(info.versions[0].shards[0], { index: 0, object: /^vm\/1\/0-[0-9a-f]{12}\.onnx$/, digest: /^[0-9a-f]{64}$/ });

  t.equal((await fetch(`${gw.url}/v1/models/vm`, { method: "DELETE" })).status, 200);
  await waitFor("gone from the gateway", async () => (await fetch(`${gw.url}/v2/models/vm`)).status === 404);
  t.equal((await fetch(`${gw.url}/v1/models/vm`, { method: "DELETE" })).status, 404, "second delete is a 404");
  t.equal(await stack.infra.objects.getBlob(info.versions[0].shards[0].object), null, "objects removed");
  await t.rejects(stack.infra.jsm.consumers.info(STREAMS.jobs, consumerName("vm")), "consumer removed");
});

t.test("an upload is readable at once, and a rejected upload leaves the connection usable", async (t) => {
  const stack = await startStack(t);
  const gw = await stack.gateway();
  // ~2 MB, more than socket buffers hold: an unread body would be left on the connection
  const bytes = encodeModel(mlp({ layers: [256, 2048], seed: 1 }));
  for (let i = 0; i < 5; i++) {
    const bad = await fetch(`${gw.url}/v1/models/m${i}?bogus=1`, { method: "PUT", body: bytes });
    t.equal(bad.status, 400);
    await bad.arrayBuffer();
    const put = await fetch(`${gw.url}/v1/models/m${i}`, { method: "PUT", body: bytes });
    t.equal(put.status, 201, `upload ${i} after a rejected one on the same connection`);
    await put.arrayBuffer();
    const get = await fetch(`${gw.url}/v1/models/m${i}`);
    t.equal(get.status, 200, `model m${i} readable right after its upload`);
    await get.arrayBuffer();
  }
});
