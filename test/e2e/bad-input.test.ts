import http from "node:http";
import t from "tap";
import { headers as natsHeaders } from "@nats-io/transport-node";
import { STREAMS, consumerName, subjects, HEADERS } from "#shared/subjects.js";
import { encodeModel, mlp } from "#shared/onnx/builder.js";
import { startStack, waitFor } from "../helpers/stack.js";

const BYTES = encodeModel(mlp({ layers: [4, 8, 3], seed: 5 }));

t.test("bad input gets a clear 4xx and never crashes the gateway", async (t) => {
  const stack = await startStack(t, { JETSHARD_MAX_BODY_MB: "0.05", JETSHARD_REQUEST_TIMEOUT_MS: "1500" });
  const gw = await stack.gateway();
  t.equal((await fetch(`${gw.url}/v1/models/m`, { method: "PUT", body: BYTES })).status, 201);
  // a model no worker serves, for the 503 case
  t.equal((await fetch(`${gw.url}/v1/models/lonely`, { method: "PUT", body: BYTES })).status, 201);
  await stack.worker({ JETSHARD_SERVE: "m" });
  await waitFor("ready", async () => (await fetch(`${gw.url}/v2/models/m/ready`)).ok);

  const infer = (model: string, body: unknown, path = `/v2/models/${model}/infer`) =>
    fetch(`${gw.url}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: typeof body === "string" ? body : JSON.stringify(body) });
  const good = { name: "input", shape: [1, 4], datatype: "FP32", data: [1, 2, 3, 4] };

  const cases: Array<[string, Promise<Response>, number, RegExp]> = [
    ["unknown model", infer("nope", { inputs: [good] }), 404, /model "nope" not found/],
    ["malformed JSON", infer("m", "{not json"), 400, /not valid JSON/],
    ["no inputs array", infer("m", { inputs: "x" }), 400, /^inputs: /],
    ["missing input", infer("m", { inputs: [{ ...good, name: "other" }] }), 400, /input "other" is not an input of model "m"/],
    ["wrong datatype", infer("m", { inputs: [{ ...good, datatype: "INT32" }] }), 400, /input "input": expected datatype FP32, got INT32/],
    ["unknown datatype", infer("m", { inputs: [{ ...good, datatype: "FP128" }] }), 400, /unsupported datatype "FP128"/],
    ["wrong shape", infer("m", { inputs: [{ ...good, shape: [1, 10], data: Array(10).fill(0) }] }), 400, /input "input": expected shape \[-1,4\] \(-1 = any\), got \[1,10\]/],
    ["data count mismatch", infer("m", { inputs: [{ ...good, data: [1, 2, 3] }] }), 400, /input "input": shape \[1,4\] needs 4 values, data has 3/],
    ["non-numeric data", infer("m", { inputs: [{ ...good, data: [1, "x", 3, 4] }] }), 400, /input "input": data\[1\] must be a number/],
    ["negative dim", infer("m", { inputs: [{ ...good, shape: [-1, 4] }] }), 400, /inputs\[0\]\.shape\[0\]/],
    ["unknown output", infer("m", { inputs: [good], outputs: [{ name: "zzz" }] }), 400, /output "zzz" is not an output of model "m"/],
    ["bad version", infer("m", { inputs: [good] }, "/v2/models/m/versions/abc/infer"), 400, /version "abc" is not a positive integer/],
    ["missing version", infer("m", { inputs: [good] }, "/v2/models/m/versions/9/infer"), 404, /has no version 9/],
    ["body over the limit", infer("m", { inputs: [{ ...good, shape: [20000, 4], data: Array(80000).fill(1.5) }] }), 413, /exceeds the limit/],
    ["invalid ONNX upload", fetch(`${gw.url}/v1/models/junk`, { method: "PUT", body: new Uint8Array([1, 2, 3, 4, 5]) }), 400, /not a valid ONNX model/],
    ["empty upload", fetch(`${gw.url}/v1/models/junk`, { method: "PUT", body: new Uint8Array() }), 400, /body is empty/],
    ["bad model name", fetch(`${gw.url}/v1/models/a.b`, { method: "PUT", body: BYTES }), 400, /model name "a\.b"/],
    ["unknown route", fetch(`${gw.url}/v2/nothing`), 404, /no route/],
    ["no worker within the timeout", infer("lonely", { inputs: [good] }), 503, /no worker served model "lonely" within 1500 ms/],
  ];
  for (const [what, p, status, re] of cases) {
    const res = await p;
    const body = (await res.json()) as any;
    t.equal(res.status, status, `${what}: status ${status}`);
    t.match(body.error, re, `${what}: ${body.error}`);
  }
  t.equal((await fetch(`${gw.url}/v1/models/junk`)).status, 404, "nothing stored for the invalid upload");
  const listed = ((await (await fetch(`${gw.url}/v1/models`)).json()) as any);
  t.same(listed.models.map((m: { name: string }) => m.name), ["lonely", "m"]);

  // a chunked body declares no length: it is counted as it streams, over the limit or not
  const chunked = (body: string) =>
    fetch(`${gw.url}/v2/models/m/infer`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: new ReadableStream({ start: (c) => (c.enqueue(new TextEncoder().encode(body)), c.close()) }),
      duplex: "half",
    } as RequestInit);
  const big = await chunked(JSON.stringify({ inputs: [{ ...good, shape: [20000, 4], data: Array(80000).fill(1.5) }] }));
  t.equal(big.status, 413, "a chunked body over the limit");
  t.match(((await big.json()) as any).error, /exceeds the limit/);
  t.equal((await chunked(JSON.stringify({ inputs: [good] }))).status, 200, "a chunked body within the limit is served");
  // a declared length over the limit is refused before any of the body is read
  const declared = await new Promise<number>((resolve, reject) => {
    const req = http.request(`${gw.url}/v2/models/m/infer`, { method: "POST", headers: { "content-type": "application/json", "content-length": String(10 * 1024 * 1024) } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on("error", reject);
    req.write("{");
  });
  t.equal(declared, 413, "a Content-Length over the limit, body not sent");

  const ok = await infer("m", { inputs: [good] });
  t.equal(ok.status, 200, "the gateway still serves after all of that");
});

t.test("a worker records a terminal failure for an invalid job instead of redelivering it", async (t) => {
  const stack = await startStack(t, { JETSHARD_ACK_WAIT_MS: "1000" });
  const gw = await stack.gateway();
  await fetch(`${gw.url}/v1/models/m`, { method: "PUT", body: BYTES });
  await stack.worker();
  await waitFor("ready", async () => (await fetch(`${gw.url}/v2/models/m/ready`)).ok);

  const nc = stack.infra.nc;
  const inbox = "_INBOX.test.replies.bad"; // workers answer only under _INBOX (isReplySubject)
  const sub = nc.subscribe(`${inbox}.*`, { max: 3 });
  const replies: Array<{ subject: string; body: Record<string, unknown> }> = [];
  const done = (async () => {
    for await (const m of sub) replies.push({ subject: m.subject, body: JSON.parse(new TextDecoder().decode(m.data)) });
  })();
  const publish = async (id: string, body: string) => {
    const h = natsHeaders();
    h.set(HEADERS.reply, `${inbox}.${id}`);
    await stack.infra.js.publish(subjects.infer("m"), new TextEncoder().encode(body), { msgID: id, headers: h });
  };
  await publish("garbage", "not json at all");
  await publish("badshape", JSON.stringify({ inputs: [{ name: "input", shape: [1, 3], datatype: "FP32", data: [1, 2, 3] }] }));
  await publish("good", JSON.stringify({ id: "r1", inputs: [{ name: "input", shape: [1, 4], datatype: "FP32", data: [1, 2, 3, 4] }] }));
  await done;
  const by = Object.fromEntries(replies.map((r) => [r.subject.split(".").pop(), r.body]));
  t.match(by.garbage, { code: "BAD_REQUEST", error: /neither a jetshard frame nor JSON/ });
  t.match(by.badshape, { code: "INPUT_SHAPE", error: /expected shape \[-1,4\]/ });
  t.match(by.good, { model_name: "m", id: "r1", outputs: [{ name: "output", shape: [1, 3] }] }, "a JSON job gets a v2 JSON answer");

  await new Promise((r) => setTimeout(r, 2500)); // > 2 ack waits: a nak'd or unacked job would be back by now
  const ci = await stack.infra.jsm.consumers.info(STREAMS.jobs, consumerName("m"));
  t.equal(ci.num_ack_pending, 0, "nothing left unacked");
  t.equal(ci.num_redelivered, 0, "nothing redelivered");
  t.equal(ci.num_pending, 0, "nothing queued");
});
