/**
 * Seeded model families for tests, demos and NAS: a residual CNN and a transformer encoder block.
 * Same spec, same bytes. The batch dimension is symbolic ("N"); defaults are small enough for CI.
 */
import {
  ElemType,
  type ModelProto,
  type NodeProto,
  type TensorProto,
  floatTensor,
  int64Tensor,
  model,
  node,
  randomFloats,
  rng,
  valueInfo,
} from "./builder.js";

export interface CnnSpec {
  /** Feature channels of every conv after the stem input. Default 8. */
  channels?: number;
  /** Number of residual blocks (Conv→Relu→Conv→Add(skip)→Relu). Default 2. */
  blocks?: number;
  /** Input height and width in pixels: one number for square inputs. Default 8. */
  inputHW?: number | [number, number];
  /** Input image channels. Default 3. */
  inputChannels?: number;
  /** Output classes. Default 10. */
  classes?: number;
  /** Head: `Gemm`, or `MatMul` followed by `Add`. Default "Gemm". */
  head?: "Gemm" | "MatMul";
  seed?: number;
}

/**
 * A ResNet-style CNN: input "input" [N, inputChannels, H, W] float → stem Conv(3x3, pad 1)+Relu →
 * `blocks` residual blocks → GlobalAveragePool → Flatten → classifier, output "output" [N, classes].
 * Tensor names: "stem", block b reads `b${b}_in` (its skip) and writes `b${b}_out`.
 * @throws Error when a size is not a positive integer.
 */
export function cnn(spec: CnnSpec = {}): ModelProto {
  const { channels = 8, blocks = 2, inputChannels = 3, classes = 10, seed = 1, head = "Gemm" } = spec;
  const [h, w] = typeof spec.inputHW === "number" ? [spec.inputHW, spec.inputHW] : (spec.inputHW ?? [8, 8]);
  for (const [k, v] of Object.entries({ channels, inputChannels, classes, h, w })) positive(k, v);
  if (!Number.isInteger(blocks) || blocks < 0) throw new Error(`cnn: blocks must be a non-negative integer, got ${blocks}`);

  const rand = rng(seed);
  const nodes: NodeProto[] = [];
  const inits: TensorProto[] = [];
  const conv = (name: string, input: string, cin: number, cout: number): string => {
    const scale = Math.sqrt(6 / (cin * 9 + cout * 9));
    inits.push(floatTensor(`${name}_w`, [cout, cin, 3, 3], randomFloats(cout * cin * 9, rand, scale)));
    inits.push(floatTensor(`${name}_b`, [cout], randomFloats(cout, rand, 0.05)));
    nodes.push(node("Conv", [input, `${name}_w`, `${name}_b`], [`${name}_conv`], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, name));
    return `${name}_conv`;
  };

  nodes.push(node("Relu", [conv("stem", "input", inputChannels, channels)], ["stem"]));
  let cur = "stem";
  for (let b = 0; b < blocks; b++) {
    const skip = `b${b}_in`;
    nodes.push(node("Identity", [cur], [skip]));
    nodes.push(node("Relu", [conv(`b${b}_c1`, skip, channels, channels)], [`b${b}_r1`]));
    const c2 = conv(`b${b}_c2`, `b${b}_r1`, channels, channels);
    nodes.push(node("Add", [c2, skip], [`b${b}_sum`]));
    nodes.push(node("Relu", [`b${b}_sum`], [`b${b}_out`]));
    cur = `b${b}_out`;
  }
  nodes.push(node("GlobalAveragePool", [cur], ["gap"]));
  nodes.push(node("Flatten", ["gap"], ["flat"], { axis: 1 }));
  const scale = Math.sqrt(6 / (channels + classes));
  inits.push(floatTensor("fc_b", [classes], randomFloats(classes, rand, 0.05)));
  if (head === "Gemm") {
    inits.push(floatTensor("fc_w", [classes, channels], randomFloats(classes * channels, rand, scale)));
    nodes.push(node("Gemm", ["flat", "fc_w", "fc_b"], ["output"], { transB: 1 }));
  } else {
    inits.push(floatTensor("fc_w", [channels, classes], randomFloats(classes * channels, rand, scale)));
    nodes.push(node("MatMul", ["flat", "fc_w"], ["fc_mm"]));
    nodes.push(node("Add", ["fc_mm", "fc_b"], ["output"]));
  }
  return model({
    name: `cnn_c${channels}_b${blocks}`,
    nodes,
    inputs: [valueInfo("input", ElemType.FLOAT, ["N", inputChannels, h, w])],
    outputs: [valueInfo("output", ElemType.FLOAT, ["N", classes])],
    initializers: inits,
  });
}

export interface TransformerSpec {
  /** Model width. Default 16. */
  dModel?: number;
  /** Attention heads; must divide dModel. Default 2. */
  heads?: number;
  /** Sequence length (fixed; the batch stays symbolic). Default 8. */
  seqLen?: number;
  /** Hidden width of the feed-forward layer. Default 32. */
  ffn?: number;
  /** Stacked blocks. Default 1. */
  layers?: number;
  /** Feed-forward activation: Relu, or Gelu written out with Erf. Default "Gelu". */
  activation?: "Relu" | "Gelu";
  /** Write LayerNorm as ReduceMean/Sub/Pow/Sqrt/Div instead of the opset-17 op. Default false. */
  decomposeLayerNorm?: boolean;
  seed?: number;
}

/**
 * Post-norm transformer encoder blocks: input "input" [N, seqLen, dModel] float → per layer
 * self-attention (Q/K/V MatMul+Add, heads split with Reshape/Transpose, scaled Softmax, output projection)
 * + residual + LayerNorm, then FFN (MatMul+Add, activation, MatMul+Add) + residual + LayerNorm.
 * Output "output" [N, seqLen, dModel]; every layer but the last writes its result to `l${l}_out`.
 * @throws Error when a size is not a positive integer or heads does not divide dModel.
 */
export function transformerBlock(spec: TransformerSpec = {}): ModelProto {
  const { dModel = 16, heads = 2, seqLen = 8, ffn = 32, layers = 1, seed = 1, activation = "Gelu" } = spec;
  for (const [k, v] of Object.entries({ dModel, heads, seqLen, ffn, layers })) positive(k, v);
  if (dModel % heads !== 0) throw new Error(`transformerBlock: heads (${heads}) must divide dModel (${dModel})`);
  const dh = dModel / heads;
  const rand = rng(seed);
  const nodes: NodeProto[] = [];
  const inits: TensorProto[] = [floatTensor("attn_scale", [], [1 / Math.sqrt(dh)])];
  if (heads > 1) inits.push(int64Tensor("split_heads", [4], [0, 0, heads, dh]), int64Tensor("merge_heads", [3], [0, 0, -1]));
  if (activation === "Gelu") inits.push(floatTensor("gelu_rsqrt2", [], [Math.SQRT1_2]), floatTensor("one", [], [1]), floatTensor("half", [], [0.5]));
  if (spec.decomposeLayerNorm) inits.push(floatTensor("ln_eps", [], [1e-5]), floatTensor("two", [], [2]));

  const linear = (name: string, input: string, fin: number, fout: number): string => {
    const scale = Math.sqrt(6 / (fin + fout));
    inits.push(floatTensor(`${name}_w`, [fin, fout], randomFloats(fin * fout, rand, scale)));
    inits.push(floatTensor(`${name}_b`, [fout], randomFloats(fout, rand, 0.05)));
    nodes.push(node("MatMul", [input, `${name}_w`], [`${name}_mm`]));
    nodes.push(node("Add", [`${name}_mm`, `${name}_b`], [name]));
    return name;
  };
  const layerNorm = (name: string, input: string, out: string): void => {
    inits.push(floatTensor(`${name}_g`, [dModel], Float32Array.from({ length: dModel }, () => 1 + (rand() - 0.5) * 0.1)));
    inits.push(floatTensor(`${name}_beta`, [dModel], randomFloats(dModel, rand, 0.05)));
    if (!spec.decomposeLayerNorm) {
      nodes.push(node("LayerNormalization", [input, `${name}_g`, `${name}_beta`], [out], { axis: -1, epsilon: { float: 1e-5 } }));
      return;
    }
    nodes.push(node("ReduceMean", [input], [`${name}_mean`], { axes: [-1], keepdims: 1 }));
    nodes.push(node("Sub", [input, `${name}_mean`], [`${name}_xc`]));
    nodes.push(node("Pow", [`${name}_xc`, "two"], [`${name}_sq`]));
    nodes.push(node("ReduceMean", [`${name}_sq`], [`${name}_var`], { axes: [-1], keepdims: 1 }));
    nodes.push(node("Add", [`${name}_var`, "ln_eps"], [`${name}_vare`]));
    nodes.push(node("Sqrt", [`${name}_vare`], [`${name}_std`]));
    nodes.push(node("Div", [`${name}_xc`, `${name}_std`], [`${name}_norm`]));
    nodes.push(node("Mul", [`${name}_norm`, `${name}_g`], [`${name}_scaled`]));
    nodes.push(node("Add", [`${name}_scaled`, `${name}_beta`], [out]));
  };

  let x = "input";
  for (let l = 0; l < layers; l++) {
    const p = `l${l}_`;
    const q = linear(`${p}q`, x, dModel, dModel);
    const k = linear(`${p}k`, x, dModel, dModel);
    const v = linear(`${p}v`, x, dModel, dModel);
    let ctx: string;
    if (heads === 1) {
      nodes.push(node("Transpose", [k], [`${p}kT`], { perm: [0, 2, 1] }));
      nodes.push(node("MatMul", [q, `${p}kT`], [`${p}scores`]));
      nodes.push(node("Mul", [`${p}scores`, "attn_scale"], [`${p}scaled`]));
      nodes.push(node("Softmax", [`${p}scaled`], [`${p}probs`], { axis: -1 }));
      nodes.push(node("MatMul", [`${p}probs`, v], [`${p}ctx`]));
      ctx = `${p}ctx`;
    } else {
      for (const [t, perm] of [[q, [0, 2, 1, 3]], [k, [0, 2, 3, 1]], [v, [0, 2, 1, 3]]] as const) {
        nodes.push(node("Reshape", [t, "split_heads"], [`${t}_h`]));
        nodes.push(node("Transpose", [`${t}_h`], [`${t}_ht`], { perm: [...perm] }));
      }
      nodes.push(node("MatMul", [`${q}_ht`, `${k}_ht`], [`${p}scores`]));
      nodes.push(node("Mul", [`${p}scores`, "attn_scale"], [`${p}scaled`]));
      nodes.push(node("Softmax", [`${p}scaled`], [`${p}probs`], { axis: -1 }));
      nodes.push(node("MatMul", [`${p}probs`, `${v}_ht`], [`${p}ctx_h`]));
      nodes.push(node("Transpose", [`${p}ctx_h`], [`${p}ctx_t`], { perm: [0, 2, 1, 3] }));
      nodes.push(node("Reshape", [`${p}ctx_t`, "merge_heads"], [`${p}ctx`]));
      ctx = `${p}ctx`;
    }
    const o = linear(`${p}o`, ctx, dModel, dModel);
    nodes.push(node("Add", [o, x], [`${p}res1`]));
    layerNorm(`${p}ln1`, `${p}res1`, `${p}h1`);
    const f1 = linear(`${p}f1`, `${p}h1`, dModel, ffn);
    let act: string;
    if (activation === "Relu") {
      nodes.push(node("Relu", [f1], [`${p}act`]));
      act = `${p}act`;
    } else {
      // gelu(x) = 0.5 * x * (1 + erf(x / sqrt(2)))
      nodes.push(node("Mul", [f1, "gelu_rsqrt2"], [`${p}g_s`]));
      nodes.push(node("Erf", [`${p}g_s`], [`${p}g_erf`]));
      nodes.push(node("Add", [`${p}g_erf`, "one"], [`${p}g_1p`]));
      nodes.push(node("Mul", [f1, `${p}g_1p`], [`${p}g_m`]));
      nodes.push(node("Mul", [`${p}g_m`, "half"], [`${p}act`]));
      act = `${p}act`;
    }
    const f2 = linear(`${p}f2`, act, ffn, dModel);
    nodes.push(node("Add", [f2, `${p}h1`], [`${p}res2`]));
    const out = l === layers - 1 ? "output" : `${p}out`;
    layerNorm(`${p}ln2`, `${p}res2`, out);
    x = out;
  }
  return model({
    name: `transformer_d${dModel}_h${heads}_l${layers}`,
    nodes,
    inputs: [valueInfo("input", ElemType.FLOAT, ["N", seqLen, dModel])],
    outputs: [valueInfo("output", ElemType.FLOAT, ["N", seqLen, dModel])],
    initializers: inits,
  });
}

function positive(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive integer, got ${v}`);
}
