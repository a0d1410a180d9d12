/**
 * The worker side of the job-queue comparison, run as its own process (like the other bench peers): takes jobs
 * of kind "noop" (returns its one-value input) or "small" (one onnxruntime-node run of the bench's `small` MLP on
 * its 784 inputs, returns the 10 outputs), from either
 * - BullMQ (`--system bullmq`): one `Worker` on queue `bench-jobs` of the Redis at `--url` (redis://host:port),
 *   the job's name being its kind, its data `{ input: number[] }`, its return value the output array; or
 * - raw JetStream (`--system raw`): one durable pull consumer on stream `BENCH_RAW` (subjects `bench.raw.<kind>`)
 *   of the NATS at `--url`; the payload is the input as little-endian float32, the reply (published to the
 *   subject in the job's `reply` header, before the ack) the output likewise. No jetshard code is involved.
 *
 * Up to `--concurrency` jobs are processed at once. Prints `{"ready":true}` once it takes jobs; stops on SIGTERM.
 *
 *   node --import tsx test/bench/job-peer.ts --system bullmq --url redis://127.0.0.1:6379 --model small.onnx
 */
import { parseArgs } from "node:util";
import * as ort from "onnxruntime-node";
import { BULLMQ_QUEUE, RAW } from "./job-protocol.js";

/** What a job of each kind computes from its input; throws on an input of the wrong size. */
type Processor = (input: Float32Array) => Promise<Float32Array>;

async function processors(modelFile: string): Promise<Record<string, Processor>> {
  // the plain server's choice: onnxruntime-node's default options
  const session = await ort.InferenceSession.create(modelFile);
  const inName = session.inputNames[0]!;
  const outName = session.outputNames[0]!;
  return {
    noop: async (x) => x,
    small: async (x) => {
      if (x.length !== 784) throw new Error(`small: expected 784 inputs, got ${x.length}`);
      const out = await session.run({ [inName]: new ort.Tensor("float32", x, [1, 784]) });
      return out[outName]!.data as Float32Array;
    },
  };
}

async function runBullmq(url: string, concurrency: number, procs: Record<string, Processor>): Promise<() => Promise<void>> {
  const { Worker } = await import("bullmq");
  const u = new URL(url);
  const worker = new Worker(
    BULLMQ_QUEUE,
    async (job) => {
      const p = procs[job.name];
      if (!p) throw new Error(`unknown job kind "${job.name}"`);
      const data = job.data as { input: number[] };
      return Array.from(await p(Float32Array.from(data.input)));
    },
    { connection: { host: u.hostname, port: Number(u.port) }, concurrency },
  );
  worker.on("error", (err) => process.stderr.write(`bullmq worker error: ${err.message}\n`));
  await worker.waitUntilReady();
  return () => worker.close();
}

async function runRaw(url: string, concurrency: number, procs: Record<string, Processor>): Promise<() => Promise<void>> {
  const { connect } = await import("@nats-io/transport-node");
  const { jetstream, jetstreamManager, AckPolicy } = await import("@nats-io/jetstream");
  const nc = await connect({ servers: url, name: "bench-raw-worker" });
  const jsm = await jetstreamManager(nc);
  // the harness creates the stream; the consumer is this worker's
  await jsm.consumers.add(RAW.stream, { durable_name: RAW.consumer, ack_policy: AckPolicy.Explicit, filter_subject: RAW.subjects, max_ack_pending: 10_000 });
  const consumer = await jetstream(nc).consumers.get(RAW.stream, RAW.consumer);
  const msgs = await consumer.consume({ max_messages: Math.max(64, concurrency * 2) });
  let running = 0;
  const slotWaiters: Array<() => void> = [];
  void (async () => {
    for await (const m of msgs) {
      while (running >= concurrency) await new Promise<void>((r) => slotWaiters.push(r));
      running++;
      void (async () => {
        try {
          const kind = m.subject.slice(m.subject.lastIndexOf(".") + 1);
          const p = procs[kind];
          if (!p) throw new Error(`unknown job kind "${kind}"`);
          // the payload's bytes may not be 4-aligned in the connection's buffer: copy
          const out = await p(new Float32Array(new Uint8Array(m.data).buffer));
          const reply = m.headers?.get(RAW.replyHeader);
          if (reply) nc.publish(reply, new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
          m.ack();
        } catch (err) {
          process.stderr.write(`raw worker: ${(err as Error).message}\n`);
          m.term();
        } finally {
          running--;
          slotWaiters.shift()?.();
        }
      })();
    }
  })();
  return async () => {
    await msgs.close();
    await nc.drain();
  };
}

const { values } = parseArgs({
  options: { system: { type: "string" }, url: { type: "string" }, model: { type: "string" }, concurrency: { type: "string", default: "64" } },
});
if (!values.url || !values.model || (values.system !== "bullmq" && values.system !== "raw")) {
  process.stderr.write("usage: job-peer.ts --system bullmq|raw --url URL --model SMALL.onnx [--concurrency N]\n");
  process.exit(2);
}
const concurrency = Number(values.concurrency);
const procs = await processors(values.model);
const stop = await (values.system === "bullmq" ? runBullmq : runRaw)(values.url, concurrency, procs);
process.stdout.write(JSON.stringify({ ready: true }) + "\n");
const onSignal = () => void stop().finally(() => process.exit(0));
process.once("SIGTERM", onSignal);
process.once("SIGINT", onSignal);
