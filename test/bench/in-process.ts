/**
 * The limit: ONNX Runtime called directly in this process, no HTTP, no JSON, no queue.
 */
import * as ort from "onnxruntime-node";
import { rng } from "#shared/onnx/builder.js";
import { percentile } from "./load.js";

/** One in-process measurement. Times in milliseconds per `session.run`. */
export interface InProcessResult {
  batch: number;
  runs: number;
  rowsPerS: number;
  p50Ms: number;
  p99Ms: number;
}

/**
 * Runs the model at each batch size for `durationS` seconds (after a warmup of a tenth of that, at least
 * 3 runs) with ORT's default session options, the same as the plain server and jetshard's workers.
 */
export async function measureInProcess(file: string, inputWidth: number, batches: number[], durationS: number): Promise<InProcessResult[]> {
  // the operator's own file, loaded by path on the operator's machine: external data beside it is legitimate here
  const session = await ort.InferenceSession.create(file);
  const out: InProcessResult[] = [];
  try {
    const inputName = session.inputNames[0]!;
    for (const batch of batches) {
      const rand = rng(batch);
      const data = Float32Array.from({ length: batch * inputWidth }, () => rand() * 2 - 1);
      const feeds = { [inputName]: new ort.Tensor("float32", data, [batch, inputWidth]) };
      const warmEnd = performance.now() + durationS * 100;
      for (let i = 0; i < 3 || performance.now() < warmEnd; i++) await session.run(feeds);
      const times: number[] = [];
      const t0 = performance.now();
      const end = t0 + durationS * 1000;
      while (performance.now() < end || times.length < 3) {
        const s = performance.now();
        await session.run(feeds);
        times.push(performance.now() - s);
      }
      const elapsedS = (performance.now() - t0) / 1000;
      times.sort((a, b) => a - b);
      out.push({ batch, runs: times.length, rowsPerS: (times.length * batch) / elapsedS, p50Ms: percentile(times, 0.5)!, p99Ms: percentile(times, 0.99)! });
    }
  } finally {
    await session.release();
  }
  return out;
}
