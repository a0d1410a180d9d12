/**
 * The baseline jetshard is compared with: what a user would write instead. A plain Hono server that loads one
 * ONNX model in-process with onnxruntime-node (default session options) and runs it once per Open Inference
 * Protocol v2 request, JSON tensors in and out. No queue, no batching, one process.
 *
 *   node --import tsx test/bench/plain-server.ts --model small.onnx [--name small] [--port 8000] [--host 127.0.0.1]
 *
 * Prints one line `{"listening":PORT}` on stdout once it accepts requests (use --port 0 for a free port).
 * SIGTERM or SIGINT closes it.
 */
import { parseArgs } from "node:util";
import { serve } from "@hono/node-server";
import { Hono } from "hono";
import * as ort from "onnxruntime-node";

const { values: args } = parseArgs({
  options: {
    model: { type: "string" },
    name: { type: "string", default: "model" },
    port: { type: "string", default: "8000" },
    host: { type: "string", default: "127.0.0.1" },
  },
});
if (!args.model) {
  process.stderr.write("usage: plain-server.ts --model <file.onnx> [--name <name>] [--port <port>] [--host <host>]\n");
  process.exit(2);
}
const modelName = args.name;
// the operator's own file, loaded by path (a local benchmark baseline): external data beside it is legitimate
const session = await ort.InferenceSession.create(args.model);

/** Turns a v2 JSON request body into ORT feeds, or returns what is wrong with it. FP32 inputs only. */
function toFeeds(body: unknown): Record<string, ort.Tensor> | string {
  const inputs = (body as { inputs?: unknown })?.inputs;
  if (!Array.isArray(inputs) || inputs.length === 0) return "inputs: expected a non-empty array";
  const feeds: Record<string, ort.Tensor> = {};
  for (const t of inputs as Array<{ name?: unknown; shape?: unknown; datatype?: unknown; data?: unknown }>) {
    if (typeof t?.name !== "string" || !Array.isArray(t.shape) || !Array.isArray(t.data)) return "each input needs name, shape and data";
    if (t.datatype !== "FP32") return `input ${t.name}: datatype ${String(t.datatype)} is not supported (FP32 only)`;
    const shape = t.shape as number[];
    const data = Float32Array.from(t.data.flat(Infinity) as number[]);
    if (data.length !== shape.reduce((a, b) => a * b, 1)) return `input ${t.name}: ${data.length} values for shape [${shape}]`;
    feeds[t.name] = new ort.Tensor("float32", data, shape);
  }
  return feeds;
}

const app = new Hono();
app.get("/v2/health/ready", (c) => c.json({ ready: true }));
app.get("/v2/models/:model/ready", (c) =>
  c.req.param("model") === modelName ? c.json({ name: modelName, ready: true }) : c.json({ error: "model not found" }, 404),
);
app.post("/v2/models/:model/infer", async (c) => {
  if (c.req.param("model") !== modelName) return c.json({ error: `model "${c.req.param("model")}" not found` }, 404);
  let body: unknown;
  try {
    body = await c.req.json();
  } catch {
    return c.json({ error: "request body is not valid JSON" }, 400);
  }
  const feeds = toFeeds(body);
  if (typeof feeds === "string") return c.json({ error: feeds }, 400);
  let out: ort.InferenceSession.OnnxValueMapType;
  try {
    out = await session.run(feeds);
  } catch (err) {
    return c.json({ error: (err as Error).message }, 400);
  }
  return c.json({
    model_name: modelName,
    id: (body as { id?: unknown }).id,
    outputs: Object.entries(out).map(([name, t]) => ({ name, datatype: "FP32", shape: t.dims, data: Array.from(t.data as Float32Array) })),
  });
});

const server = serve({ fetch: app.fetch, port: Number(args.port), hostname: args.host }, (info) => {
  process.stdout.write(`${JSON.stringify({ listening: info.port })}\n`);
});
const stop = () => {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
