/** Models built in code for tests. */
import { ElemType, encodeModel, floatTensor, model, node, randomFloats, rng, valueInfo } from "#shared/onnx/builder.js";

/**
 * A model that takes a while to run: `layers` × (MatMul by one shared width×width matrix, then Tanh), so its
 * cost grows with the batch while the file stays small (one weight matrix).
 */
export function slowModel(width = 512, layers = 24): Uint8Array {
  const rand = rng(11);
  const nodes = [];
  let cur = "input";
  for (let i = 0; i < layers; i++) {
    nodes.push(node("MatMul", [cur, "W"], [`m${i}`]));
    nodes.push(node("Tanh", [`m${i}`], [i === layers - 1 ? "output" : `t${i}`]));
    cur = `t${i}`;
  }
  return encodeModel(
    model({
      nodes,
      inputs: [valueInfo("input", ElemType.FLOAT, ["N", width])],
      outputs: [valueInfo("output", ElemType.FLOAT, ["N", width])],
      initializers: [floatTensor("W", [width, width], randomFloats(width * width, rand, 1 / Math.sqrt(width)))],
    }),
  );
}

/** Identity for one input of each datatype the v2 JSON path must carry: out_x = x. */
export function identityAllTypes(): Uint8Array {
  const types: Array<[string, number]> = [
    ["f32", ElemType.FLOAT],
    ["f64", ElemType.DOUBLE],
    ["i8", ElemType.INT8],
    ["i32", ElemType.INT32],
    ["i64", ElemType.INT64],
    ["u8", ElemType.UINT8],
    ["b", ElemType.BOOL],
  ];
  return encodeModel(
    model({
      nodes: types.map(([n]) => node("Identity", [n], [`out_${n}`])),
      inputs: types.map(([n, t]) => valueInfo(n, t, ["N", 2])),
      outputs: types.map(([n, t]) => valueInfo(`out_${n}`, t, ["N", 2])),
    }),
  );
}
