import t, { type Test } from "tap";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { objectName, sha256Hex } from "#shared/model-repo.js";
import { encodeModel } from "#shared/onnx/builder.js";
import { STREAMS, consumerName } from "#shared/subjects.js";
import type { ModelRecord, TensorSpec } from "#shared/wire.js";
import {
  LEAK_LEN,
  cleanAdd,
  functionDefaultBytes,
  leakyConstant,
  leakyIf,
  leakyInitializer,
  leakyLoopInIf,
  leakySparse,
  mergedGraphBytes,
} from "../helpers/hostile-models.js";
import { startStack, waitFor, type Stack } from "../helpers/stack.js";

// ORT resolves an external `location` against the working directory of the process that loads the model: the
// in-process worker's, which is this one's
const PKG = new Uint8Array(await readFile(path.join(process.cwd(), "package.json"))).subarray(0, LEAK_LEN);
const PKG_TEXT = new TextDecoder().decode(PKG);
/** What a leak of package.json's first bytes would look like in a response: raw, JSON-escaped, as a v2 number array. */
const NEEDLES = [PKG_TEXT.slice(0, 24), JSON.stringify(PKG_TEXT.slice(0, 24)).slice(1, -1), Array.from(PKG.subarray(0, 12)).join(",")];
const INPUT = [{ name: "x", datatype: "UINT8", shape: [LEAK_LEN], data: Array(LEAK_LEN).fill(0) }];

/** Every response body read in this file, to prove none of them carries the file's bytes. */
const bodies: string[] = [];
async function call(url: string, init: RequestInit = {}): Promise<{ status: number; body: any }> {
  const res = await fetch(url, { ...init, headers: { "content-type": "application/json", ...(init.headers ?? {}) } });
  const text = await res.text();
  bodies.push(text);
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}

/** Stores a model as the gateway would, but without its checks: straight into the object store and models KV. */
async function writeBehindGatewaysBack(stack: Stack, name: string, bytes: Uint8Array): Promise<void> {
  const object = objectName(name, 1, 0);
  await stack.infra.objects.putBlob({ name: object }, bytes);
  const spec = (n: string): TensorSpec => ({ name: n, datatype: "UINT8", shape: [LEAK_LEN] });
  const digest = sha256Hex(bytes);
  const rec: ModelRecord = {
    name,
    latest: 1,
    versions: [
      {
        version: 1,
        createdAt: new Date().toISOString(),
        platform: "onnxruntime_onnx",
        bytes: bytes.byteLength,
        digest,
        inputs: [spec("x")],
        outputs: [spec("y")],
        shards: [{ index: 0, object, bytes: bytes.byteLength, digest, inputs: [spec("x")], outputs: [spec("y")] }],
        batching: { maxBatchSize: 1, preferredBatchSizes: [], maxQueueDelayUs: 0 },
      },
    ],
  };
  await stack.infra.models.put(name, JSON.stringify(rec));
}

/** Asserts that no response body read so far carries package.json's bytes, then forgets them. */
function assertNoLeak(t: Test): void {
  t.ok(bodies.length > 0, "responses were checked");
  for (const b of bodies) for (const needle of NEEDLES) t.notOk(b.includes(needle), `no response carries package.json (${JSON.stringify(needle)})`);
  bodies.length = 0;
}

t.test("an upload whose tensors point at a server file is refused with a 400 naming external data, and nothing is stored", async (t) => {
  const stack = await startStack(t);
  const gw = await stack.gateway();
  const cases: Array<[string, Uint8Array, RegExp]> = [
    ["initializer", encodeModel(leakyInitializer()), /initializer "w" in graph "main"/],
    ["initializer without data_location", encodeModel(leakyInitializer({ dataLocation: false })), /initializer "w" in graph "main"/],
    ["If subgraph", encodeModel(leakyIf()), /initializer "w" in subgraph then_branch of node "if1" \(If\)/],
    ["Loop body in an If", encodeModel(leakyLoopInIf()), /subgraph body of node "loop1" \(Loop\) in subgraph then_branch of node "if1"/],
    ["Constant node", encodeModel(leakyConstant()), /attribute "value" of node "c1" \(Constant\)/],
    ["sparse initializer", encodeModel(leakySparse()), /values of sparse initializer "s"/],
    ["second graph field (protobuf merge)", mergedGraphBytes(), /initializer "w" in graph "main"/],
    ["function attribute default", functionDefaultBytes(), /attribute "value" \(a default\) of function "leaky_fn"/],
  ];
  for (const [i, [what, bytes, place]] of cases.entries()) {
    const name = `leak${i}`;
    for (const query of ["", "?shards=2"]) {
      const res = await call(`${gw.url}/v1/models/${name}${query}`, { method: "PUT", body: bytes, headers: { "content-type": "application/octet-stream" } });
      t.equal(res.status, 400, `${what}${query}: 400`);
      t.match(res.body.error, /external data is not accepted/, `${what}${query}: ${res.body.error}`);
      t.match(res.body.error, place, `${what}${query}: names the place`);
      t.match(res.body.error, /"package\.json"/, `${what}${query}: names the location`);
    }
    t.equal((await call(`${gw.url}/v1/models/${name}`)).status, 404, `${what}: nothing stored`);
    t.equal(await stack.infra.objects.getBlob(objectName(name, 1, 0)), null, `${what}: no object written`);
  }
  t.equal((await call(`${gw.url}/v1/models/clean`, { method: "PUT", body: encodeModel(cleanAdd()), headers: { "content-type": "application/octet-stream" } })).status, 201, "a clean model of the same shape is accepted");
  assertNoLeak(t);
});

t.test("a worker refuses a model that reached the store without the gateway: a terminal MODEL_INVALID, dead-lettered, never run", async (t) => {
  const stack = await startStack(t, { JETSHARD_MAX_ATTEMPTS: "3", JETSHARD_RETRY_BASE_MS: "100" });
  const gw = await stack.gateway();
  // the control proves that a record written this way is served: the refusal below is the check, not the record
  await writeBehindGatewaysBack(stack, "control", encodeModel(cleanAdd()));
  await writeBehindGatewaysBack(stack, "leak", encodeModel(leakyInitializer()));
  await stack.worker();
  await waitFor("leak ready", async () => (await fetch(`${gw.url}/v2/models/leak/ready`)).ok);
  await waitFor("control ready", async () => (await fetch(`${gw.url}/v2/models/control/ready`)).ok);

  const control = await call(`${gw.url}/v2/models/control/infer`, { method: "POST", body: JSON.stringify({ inputs: INPUT }) });
  t.equal(control.status, 200, "the clean model written behind the gateway's back runs");
  t.same(control.body.outputs[0].data, Array(LEAK_LEN).fill(0));

  const sync = await call(`${gw.url}/v2/models/leak/infer`, { method: "POST", body: JSON.stringify({ inputs: INPUT }) });
  t.equal(sync.status, 400, "a synchronous request gets a 400");
  t.match(sync.body.error, /^shard leak\/1\/0\.onnx: external data is not accepted: initializer "w" in graph "main" refers to data outside the model \(location "package\.json"\)/);
  t.notOk(sync.body.outputs, "no outputs");

  const sub = await call(`${gw.url}/v1/jobs`, { method: "POST", body: JSON.stringify({ model: "leak", inputs: INPUT }) });
  t.equal(sub.status, 202);
  const rec = (await call(`${gw.url}/v1/jobs/${sub.body.id}?wait=20s`)).body;
  t.match(rec, { id: sub.body.id, status: "failed", attempts: 1, error: { code: "MODEL_INVALID", message: /external data is not accepted: initializer "w"/ } });
  t.notOk(rec.result?.outputs, "the job has no outputs");
  const dl = await waitFor("dead letter", async () => (await call(`${gw.url}/v1/dead-letters?model=leak`)).body.deadLetters.find((d: any) => d.id === sub.body.id));
  t.match(dl, { id: sub.body.id, model: "leak", code: "MODEL_INVALID", attempts: 1, error: /external data is not accepted/ });

  const ci = await waitFor("job acked", async () => {
    const info = await stack.infra.jsm.consumers.info(STREAMS.jobs, consumerName("leak"));
    return info.num_ack_pending === 0 && info.num_pending === 0 ? info : null;
  });
  t.equal(ci.num_redelivered, 0, "no job for the model was redelivered");
  const again = await call(`${gw.url}/v2/models/leak/infer`, { method: "POST", body: JSON.stringify({ inputs: INPUT }) });
  t.equal(again.status, 400, "still refused: no session was ever cached for it");
  assertNoLeak(t);
});

t.test("the leak needles match a response that does carry the file", async (t) => {
  const leaked = JSON.stringify({ outputs: [{ name: "y", datatype: "UINT8", shape: [LEAK_LEN], data: Array.from(PKG) }] });
  t.ok(NEEDLES.some((n) => leaked.includes(n)), "a v2 JSON response with the bytes matches a needle");
});
