import t from "tap";
import { ElemType, encodeModel, floatTensor, mlp, model, node, rng, valueInfo } from "#shared/onnx/builder.js";
import { NasSpecError } from "#shared/nas/errors.js";
import { evaluateBuiltins, flops, latency, naswot, params, slogdet } from "#shared/nas/evaluators.js";
import { buildModel } from "#shared/nas/families.js";

/** Determinant by cofactor (Laplace) expansion along the first row: independent of LU. */
function cofactorDet(m: number[][]): number {
  if (m.length === 1) return m[0]![0]!;
  let det = 0;
  for (let j = 0; j < m.length; j++) {
    const minor = m.slice(1).map((row) => row.filter((_, k) => k !== j));
    det += (j % 2 ? -1 : 1) * m[0]![j]! * cofactorDet(minor);
  }
  return det;
}

t.test("NASWOT equals a hand computation on a two-layer ReLU MLP", async (t) => {
  const W1 = [[0.5, -1, 0.3, 0.8], [-0.7, 0.2, 1.1, -0.4], [0.9, 0.6, -0.5, 0.3]];
  const b1 = [0.1, -0.2, 0.05, 0];
  const W2 = [[1, -0.5, 0.3], [-0.8, 0.7, 0.2], [0.4, 0.9, -1], [-0.3, -0.6, 0.8]];
  const b2 = [0.05, -0.1, 0.2];
  const W3 = [[0.2, -0.1], [0.4, 0.3], [-0.5, 0.6]];
  const X = [[1, 0.5, -0.25], [-1, 0.75, 0.5], [0.3, -0.9, 1.2], [-0.6, -0.4, -0.8], [-0.2, 1.4, -0.9]];
  const net = model({
    nodes: [
      node("MatMul", ["input", "W1"], ["mm1"]),
      node("Add", ["mm1", "b1"], ["h1"]),
      node("Relu", ["h1"], ["a1"]),
      node("MatMul", ["a1", "W2"], ["mm2"]),
      node("Add", ["mm2", "b2"], ["h2"]),
      node("Relu", ["h2"], ["a2"]),
      node("MatMul", ["a2", "W3"], ["output"]),
    ],
    inputs: [valueInfo("input", ElemType.FLOAT, ["N", 3])],
    outputs: [valueInfo("output", ElemType.FLOAT, ["N", 2])],
    initializers: [floatTensor("W1", [3, 4], W1.flat()), floatTensor("b1", [4], b1), floatTensor("W2", [4, 3], W2.flat()), floatTensor("b2", [3], b2), floatTensor("W3", [3, 2], W3.flat())],
  });

  // Reference: forward pass in float64, one code bit per ReLU unit (pre-activation > 0).
  const linear = (x: number[], W: number[][], b: number[]) => b.map((bj, j) => bj + x.reduce((acc, xi, i) => acc + xi * W[i]![j]!, 0));
  const codes = X.map((x) => {
    const h1 = linear(x, W1, b1);
    const h2 = linear(h1.map((v) => Math.max(0, v)), W2, b2);
    const pre = [...h1, ...h2];
    t.ok(pre.every((v) => Math.abs(v) > 0.01), "no pre-activation close enough to 0 for float32 to flip its sign");
    return pre.map((v) => (v > 0 ? 1 : 0));
  });
  const K = codes.map((ci) => codes.map((cj) => ci.filter((v, u) => v === cj[u]).length));
  const det = cofactorDet(K);
  t.ok(det > 0, `K_H is non-singular (det ${det})`);

  const score = await naswot(net, { batch: X.length, input: Float32Array.from(X.flat()) });
  t.ok(Math.abs(score - Math.log(det)) < 1e-6, `naswot ${score} = log det ${Math.log(det)}`);
  t.same(net.graph!.output!.map((o) => o.name), ["output"], "the caller's model is not modified");
});

t.test("slogdet agrees with cofactor expansion, including sign and singular matrices", async (t) => {
  const r = rng(3);
  for (let n = 1; n <= 6; n++) {
    for (let k = 0; k < 5; k++) {
      const m = Array.from({ length: n }, () => Array.from({ length: n }, () => Math.round((r() * 2 - 1) * 50) / 10));
      const det = cofactorDet(m);
      const { sign, logAbsDet } = slogdet(m.flat(), n);
      t.equal(sign, Math.sign(det));
      t.ok(Math.abs(logAbsDet - Math.log(Math.abs(det))) < 1e-9, `n=${n}: ${logAbsDet} vs ${Math.log(Math.abs(det))}`);
    }
  }
  t.same(slogdet([1, 2, 2, 4], 2), { sign: 0, logAbsDet: -Infinity });
  const big = Array.from({ length: 40 * 40 }, (_, i) => (i % 41 === 0 ? 1e3 : 0));
  t.ok(Math.abs(slogdet(big, 40).logAbsDet - 40 * Math.log(1e3)) < 1e-9, "no overflow where the determinant itself would be 1e120");
});

t.test("params and flops of a known MLP equal hand-computed numbers", async (t) => {
  const m = mlp({ layers: [64, 32, 10] });
  t.equal(params(m), 64 * 32 + 32 + 32 * 10 + 10);
  t.equal(flops(m), 64 * 32 + 32 * 10);
  t.equal(flops(m, [64]), 64 * 32 + 32 * 10);
  t.equal(params(encodeModel(m)), 2410, "also from encoded bytes");
  t.equal(flops(encodeModel(m)), 2368);
});

t.test("params and flops of a known CNN equal hand-computed numbers", async (t) => {
  const m = buildModel("cnn", { stages: 1, channels: 4, kernel: 3, residual: false }, { inputShape: [3, 8, 8] });
  // stem 3→4, then conv 4→4 twice, all 3x3 "same" on 8x8; then a 4→10 linear layer with bias.
  t.equal(params(m), 4 * 3 * 9 + 2 * (4 * 4 * 9) + 4 * 10 + 10);
  t.equal(flops(m), 4 * 8 * 8 * 3 * 9 + 2 * (4 * 8 * 8 * 4 * 9) + 4 * 10);
  const strided = buildModel("cnn", { stages: 2, channels: 2, kernel: 3, residual: true }, { inputShape: [1, 8, 8] });
  // stem 1→2 @8x8; stage 0: 2→2 twice @8x8; stage 1: 2→4 stride 2 @4x4, 4→4 @4x4, 1x1 projection 2→4 @4x4; fc 4→10.
  t.equal(flops(strided), 2 * 64 * 1 * 9 + 2 * (2 * 64 * 2 * 9) + 4 * 16 * 2 * 9 + 4 * 16 * 4 * 9 + 4 * 16 * 2 + 40);
});

t.test("naswot is deterministic per seed, takes bytes, and rejects ReLU-free models", async (t) => {
  const cell = buildModel("cell", { edge_0_1: "conv3x3", edge_0_2: "conv1x1", edge_1_2: "avgpool3x3", edge_0_3: "skip", edge_1_3: "conv3x3", edge_2_3: "conv1x1" });
  const a = await naswot(cell, { batch: 16, seed: 1 });
  t.equal(await naswot(encodeModel(cell), { batch: 16, seed: 1 }), a);
  t.not(await naswot(cell, { batch: 16, seed: 2 }), a);
  t.ok(Number.isFinite(a) && a > 0);
  // Softsign is outside the shape inference, so the Relu output is exposed without a shape.
  const unknownOp = model({
    nodes: [node("MatMul", ["input", "W"], ["mm"]), node("Softsign", ["mm"], ["s"]), node("Relu", ["s"], ["r"]), node("MatMul", ["r", "V"], ["output"])],
    inputs: [valueInfo("input", ElemType.FLOAT, ["N", 4])],
    outputs: [valueInfo("output", ElemType.FLOAT, ["N", 1])],
    initializers: [floatTensor("W", [4, 64], Array.from({ length: 256 }, (_, i) => Math.sin(i + 1))), floatTensor("V", [64, 1], new Float32Array(64).fill(1))],
  });
  t.ok(Number.isFinite(await naswot(unknownOp, { batch: 4 })), "a Relu after an op without shape inference");
  await t.rejects(naswot(mlp({ layers: [8, 4, 2], activation: "Tanh" }), { batch: 4 }), NasSpecError);
});

t.test("latency and evaluateBuiltins report every requested metric", async (t) => {
  const m = buildModel("mlp", { depth: 2, width: 32 });
  const l = await latency(encodeModel(m), { runs: 5, warmup: 1, batch: 4 });
  t.ok(l.p50Ms > 0 && l.minMs <= l.p50Ms && l.p50Ms <= l.p90Ms, JSON.stringify(l));
  t.equal(l.runs, 5);
  const all = await evaluateBuiltins(m, ["naswot", "latency", "params", "flops"], { batch: 8, runs: 3 });
  t.same(Object.keys(all).sort(), ["flops", "latency_ms", "naswot", "params"]);
  t.equal(all["params"], params(m));
  t.ok(Object.values(all).every(Number.isFinite));
});
