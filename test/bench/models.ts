/**
 * The two generated models the benchmark serves, and the fixed v2 JSON request body sent for each.
 */
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { encodeModel, mlp, rng } from "#shared/onnx/builder.js";

/** Names of the benchmark models. */
export type ModelName = "small" | "mid";

/** Layer widths and weight seed of each benchmark model (an MLP with ReLU, batch dimension dynamic). */
export const MODEL_SPECS: Record<ModelName, { layers: number[]; seed: number; description: string }> = {
  small: { layers: [784, 256, 256, 10], seed: 1, description: "MLP 784-256-256-10 (~1 MB)" },
  mid: { layers: [1024, 4096, 4096, 4096, 1024], seed: 2, description: "MLP 1024-4096-4096-4096-1024 (~160 MB)" },
};

/** A built benchmark model, written to disk. */
export interface BenchModel {
  name: ModelName;
  /** Path of the .onnx file. */
  file: string;
  bytes: number;
  /** Width of the input (features per row). */
  inputWidth: number;
  /** The v2 JSON body of every request: one row of fixed pseudo-random values, name "input", FP32. */
  body: string;
}

/** A v2 infer request body with `rows` rows of `width` values in [-1, 1] (4 decimals, like real feature data). */
export function requestBody(width: number, rows = 1, seed = 7): string {
  const rand = rng(seed);
  const data = Array.from({ length: width * rows }, () => Math.round((rand() * 2 - 1) * 1e4) / 1e4);
  return JSON.stringify({ inputs: [{ name: "input", shape: [rows, width], datatype: "FP32", data }] });
}

/** Builds model `name` (deterministic weights) into `dir`/`name`.onnx. `mid` takes a few seconds. */
export async function buildModel(name: ModelName, dir: string): Promise<BenchModel> {
  const spec = MODEL_SPECS[name];
  const bytes = encodeModel(mlp({ layers: spec.layers, seed: spec.seed }));
  const file = path.join(dir, `${name}.onnx`);
  await writeFile(file, bytes);
  const inputWidth = spec.layers[0]!;
  return { name, file, bytes: bytes.byteLength, inputWidth, body: requestBody(inputWidth) };
}
