/**
 * An example custom NAS evaluator, registered as "train" when the workers run with
 * JETSHARD_EVALUATORS_DIR=deploy/examples/evaluators (see deploy/examples/nas-custom.json).
 *
 * It stands in for a training loop: each "epoch" it reports a validation accuracy that rises towards a ceiling
 * set by the point's `lr` and `layers`, so the median stopping rule has curves to judge. Replace the body with
 * real training; keep the shape: read `arch.point` and `ctx.options`, `ctx.report(epoch, value)`, return metrics.
 */
export async function evaluate(arch, ctx) {
  const lr = Number(arch.point.lr ?? 0.01);
  const layers = Number(arch.point.layers ?? 2);
  const epochs = Number(ctx.options.epochs ?? 10);
  // best near lr = 1e-2 and 4 layers
  const ceiling = 0.95 - 0.08 * Math.abs(Math.log10(lr) + 2) - 0.02 * Math.abs(layers - 4);
  let acc = 0;
  for (let epoch = 1; epoch <= epochs; epoch++) {
    await new Promise((r) => setTimeout(r, 50));
    acc = ceiling * (1 - Math.exp(-epoch / 3));
    ctx.report(epoch, acc);
  }
  return { val_acc: acc };
}
