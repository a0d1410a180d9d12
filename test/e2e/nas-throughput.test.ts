/**
 * Throughput of a 100-trial `mlp` experiment (params + flops + naswot) on 1 vs 2 worker processes.
 * A measurement, not a check: it runs only with JETSHARD_NAS_BENCH=1 (it takes a while on small machines).
 *   JETSHARD_NAS_BENCH=1 npx tap test/e2e/nas-throughput.test.ts
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import t from "tap";
import { ROOT, startStack } from "../helpers/stack.js";
import { controller, experimentsApi } from "../helpers/nas.js";

const SPEC = JSON.parse(readFileSync(path.join(ROOT, "deploy/examples/nas-mlp.json"), "utf8"));
const bench = process.env.JETSHARD_NAS_BENCH === "1";

for (const workers of [1, 2]) {
  t.test(`a 100-trial mlp experiment on ${workers} worker process(es)`, { skip: !bench && "set JETSHARD_NAS_BENCH=1 to measure" }, async (t) => {
    const stack = await startStack(t, { JETSHARD_NAS_CONCURRENCY: process.env.JETSHARD_NAS_CONCURRENCY ?? "1" });
    const gw = await stack.gateway();
    await Promise.all(Array.from({ length: workers }, () => stack.workerProcess()));
    await controller(t, stack);
    const api = experimentsApi(gw.url);
    // warm up: every worker starts its evaluator process
    const warm = await api.create({ ...SPEC, name: "warmup", maxTrials: 4 * workers });
    await api.waitStatus(warm.body.id, ["completed"], 120_000);

    const t0 = performance.now();
    const { body } = await api.create(SPEC);
    const done = await api.waitStatus(body.id, ["completed", "failed"], 600_000);
    const seconds = (performance.now() - t0) / 1000;
    t.equal(done.status, "completed");
    t.equal(done.progress.succeeded, 100);
    const trials = (await api.trials(body.id)).body.trials as any[];
    const evalMs = trials.reduce((a, x) => a + x.durationMs, 0) / trials.length;
    t.comment(`${workers} worker(s): 100 trials in ${seconds.toFixed(2)} s = ${(100 / seconds).toFixed(2)} trials/s (mean evaluation ${evalMs.toFixed(1)} ms)`);
  });
}
