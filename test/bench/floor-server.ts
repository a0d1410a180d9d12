/**
 * The floor of any design that puts NATS between an HTTP front and the processes running the model: a minimal
 * Hono front that turns a v2 JSON request into raw FP32 bytes and sends them with one core NATS request to a
 * queue group of minimal ORT workers, each running the model (default session options) once per request and
 * answering with the output bytes. No jetshard code, no validation, no batching, no retries, no tracking: what is
 * left is the cost of the two extra processes and the four NATS hops themselves. jetshard's sync path is compared
 * with it as well as with the plain server.
 *
 *   node --import tsx test/bench/floor-server.ts --role front --nats URL --name small --port 0
 *   node --import tsx test/bench/floor-server.ts --role worker --nats URL --model small.onnx
 *
 * The front prints `{"listening":PORT}`, a worker `{"ready":true}`, on stdout. SIGTERM or SIGINT stops either.
 */
import { parseArgs } from "node:util";
import { serve } from "@hono/node-server";
import { connect } from "@nats-io/transport-node";
import { Hono } from "hono";
import * as ort from "onnxruntime-node";

const { values: args } = parseArgs({
  options: {
    role: { type: "string" },
    nats: { type: "string" },
    model: { type: "string" },
    name: { type: "string", default: "model" },
    port: { type: "string", default: "0" },
  },
});
if (!args.nats || (args.role !== "front" && args.role !== "worker") || (args.role === "worker" && !args.model)) {
  process.stderr.write("usage: floor-server.ts --role front --nats URL [--name NAME] [--port PORT] | --role worker --nats URL --model FILE\n");
  process.exit(2);
}
const SUBJECT = "floor.infer";
// a core NATS request carries no timeout of its own on the wire: the front gives up after this long
const TIMEOUT_MS = 30_000;
const nc = await connect({ servers: args.nats, noAsyncTraces: true });
let stopHttp: (() => void) | null = null;

if (args.role === "worker") {
  const session = await ort.InferenceSession.create(args.model!);
  const input = session.inputNames[0]!;
  const output = session.outputNames[0]!;
  nc.subscribe(SUBJECT, {
    queue: "floor",
    callback: (_err, m) => {
      // the request: [width u32][FP32 values]; the answer: [width u32][FP32 values]
      // copies: nats.js hands out views into a shared buffer (Node Buffers, whose slice() is a view too)
      const bytes = new Uint8Array(m.data);
      const width = new DataView(bytes.buffer).getUint32(0, true);
      const values = new Float32Array(bytes.buffer, 4);
      session.run({ [input]: new ort.Tensor("float32", values, [values.length / width, width]) }).then(
        (out) => {
          const t = out[output]!;
          const data = t.data as Float32Array;
          const body = new Uint8Array(4 + data.byteLength);
          new DataView(body.buffer).setUint32(0, Number(t.dims.at(-1)), true);
          body.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), 4);
          m.respond(body);
        },
        (err) => m.respond(new TextEncoder().encode(String(err))),
      );
    },
  });
  await nc.flush();
  process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
} else {
  const app = new Hono();
  app.get("/v2/models/:model/ready", (c) => c.json({ name: args.name, ready: true }));
  app.post("/v2/models/:model/infer", async (c) => {
    const body = (await c.req.json()) as { id?: string; inputs: Array<{ shape: number[]; data: number[] }> };
    const t = body.inputs[0]!;
    const width = t.shape.at(-1)!;
    const req = new Uint8Array(4 + t.data.length * 4);
    new DataView(req.buffer).setUint32(0, width, true);
    req.set(new Uint8Array(Float32Array.from(t.data).buffer), 4);
    const res = await nc.request(SUBJECT, req, { timeout: TIMEOUT_MS });
    const bytes = new Uint8Array(res.data);
    const outWidth = new DataView(bytes.buffer).getUint32(0, true);
    const data = new Float32Array(bytes.buffer.slice(4));
    return c.json({ model_name: args.name, id: body.id, outputs: [{ name: "output", datatype: "FP32", shape: [data.length / outWidth, outWidth], data: Array.from(data) }] });
  });
  const server = serve({ fetch: app.fetch, port: Number(args.port), hostname: "127.0.0.1" }, (info) => {
    process.stdout.write(`${JSON.stringify({ listening: info.port })}\n`);
  });
  stopHttp = () => server.close();
}

const stop = () => {
  stopHttp?.();
  void nc.close().finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
