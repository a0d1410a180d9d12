/**
 * The demo models `jetshard up` seeds: built in code with fixed seeds, so every machine serves identical weights.
 */
import { encodeModel, mlp } from "./onnx/builder.js";

export const DEMO_MLP = "demo-mlp";

/** A 4-16-16-3 ReLU MLP with a softmax head (an iris-sized classifier), weights from seed 42. */
export function demoMlpBytes(): Uint8Array {
  return encodeModel(mlp({ layers: [4, 16, 16, 3], seed: 42, softmax: true, inputName: "input", outputName: "probabilities" }));
}

export const DEMO_MLP_REQUEST = {
  id: "demo-1",
  inputs: [{ name: "input", shape: [1, 4], datatype: "FP32", data: [5.1, 3.5, 1.4, 0.2] }],
};
