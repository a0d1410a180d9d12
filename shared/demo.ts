/**
 * The demo models `jetshard up` seeds: built in code with fixed seeds, so every machine serves identical weights.
 */
import { encodeModel, mlp } from "./onnx/builder.js";
import { cnn } from "./onnx/families.js";

export const DEMO_MLP = "demo-mlp";

/** A 4-16-16-3 ReLU MLP with a softmax head (an iris-sized classifier), weights from seed 42. */
export function demoMlpBytes(): Uint8Array {
  return encodeModel(mlp({ layers: [4, 16, 16, 3], seed: 42, softmax: true, inputName: "input", outputName: "probabilities" }));
}

export const DEMO_MLP_REQUEST = {
  id: "demo-1",
  inputs: [{ name: "input", shape: [1, 4], datatype: "FP32", data: [5.1, 3.5, 1.4, 0.2] }],
};

export const DEMO_CNN = "demo-cnn";

/**
 * A small ResNet-style CNN (1×4×4 input, 8 channels, 2 residual blocks, 3 classes), seeded, stored as a
 * 2-shard pipeline: what a model too big for one machine looks like, at demo size.
 */
export function demoCnnBytes(): Uint8Array {
  return encodeModel(cnn({ inputChannels: 1, inputHW: 4, channels: 8, blocks: 2, classes: 3, seed: 7 }));
}

export const DEMO_CNN_SHARDS = 2;

export const DEMO_CNN_REQUEST = {
  id: "demo-cnn-1",
  inputs: [{ name: "input", shape: [1, 1, 4, 4], datatype: "FP32", data: [[[[0, 1, 1, 0], [1, 0, 0, 1], [1, 0, 0, 1], [0, 1, 1, 0]]]] }],
};
