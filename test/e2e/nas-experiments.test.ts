import t from "tap";
import * as ort from "onnxruntime-node";
import { startStack, waitFor } from "../helpers/stack.js";
import { CELL_SPEC, EVALUATORS_DIR, controller, evaluationsPerTrial, experimentsApi, trialEvents } from "../helpers/nas.js";


t.test("a 40-trial cell experiment with naswot and latency completes on 2 workers through the HTTP API", async (t) => {
  const stack = await startStack(t);
  const gw = await stack.gateway();
  const [w1, w2] = await Promise.all([stack.worker(), stack.worker()]);
  await controller(t, stack);
  const api = experimentsApi(gw.url);

  const t0 = Date.now();
  const created = await api.create(CELL_SPEC);
  t.equal(created.status, 201, JSON.stringify(created.body));
  t.match(created.body, { id: /^cells-/, status: "queued" });
  const id = created.body.id;
  const done = await api.waitStatus(id, ["completed", "failed"], 60_000);
  t.comment(`40 cell trials in ${Date.now() - t0} ms`);
  t.equal(done.status, "completed", done.reason ?? "");
  t.match(done.progress, { maxTrials: 40, proposed: 40, finished: 40, succeeded: 40, failed: 0, running: 0, queued: 0 });
  t.ok(done.best && Number.isFinite(done.best.value), "has a best trial");
  t.ok(done.bestSeries.length >= 1, "best-so-far series");
  const series = done.bestSeries.map((p: any) => p.value);
  t.same(series, [...series].sort((a: number, b: number) => a - b), "best-so-far only improves");
  t.same(done.pareto.objectives.map((o: any) => o.metric), ["naswot", "latency_ms"]);
  t.ok(done.pareto.front.length >= 1, "pareto front");
  t.equal(done.devices.length, 1);
  t.match(done.devices[0], /^cpu: /, "latency reported with the device name");

  const trials = (await api.trials(id)).body.trials;
  t.equal(trials.length, 40);
  t.equal(new Set(trials.map((x: any) => x.trialId)).size, 40, "each trial id once");
  t.ok(trials.every((x: any) => x.status === "succeeded" && Number.isFinite(x.metrics.naswot) && x.metrics.latency_ms > 0));
  const workers = new Set(trials.map((x: any) => x.worker));
  t.same([...workers].sort(), [w1!.id, w2!.id].sort(), "both workers evaluated trials");
  const evals = evaluationsPerTrial(await trialEvents(stack.infra, id));
  t.same([...evals.values()].filter((n) => n !== 1), [], "every trial evaluated exactly once");

  const onnx = await fetch(`${gw.url}/v1/experiments/${id}/trials/${done.best.trialId}/model.onnx`);
  t.equal(onnx.status, 200);
  const s = await ort.InferenceSession.create(new Uint8Array(await onnx.arrayBuffer()));
  t.same(s.inputNames, ["input"], "the trial's ONNX model loads in ONNX Runtime");

  const list = await api.call("GET", "");
  t.same(list.body.experiments.map((e: any) => e.id), [id]);
  const dep = await api.call("POST", `/${id}/deploy`, { name: "best-cell" });
  t.equal(dep.status, 201, JSON.stringify(dep.body));
  t.match(dep.body, { model: "best-cell", version: 1, trial: done.best.trialId });
});

t.test("every bad experiment input gets a 400 naming the field, and unknown experiments a 404", async (t) => {
  const stack = await startStack(t);
  const gw = await stack.gateway();
  const api = experimentsApi(gw.url);
  const mlp = {
    name: "m",
    family: "mlp",
    searchSpace: { depth: { _type: "choice", _value: [1, 2] }, width: { _type: "choice", _value: [8, 16] } },
    strategy: "random",
    objective: { metric: "params", direction: "minimize" },
    maxTrials: 4,
    evaluator: { metrics: ["params"] },
  };
  const cases: Array<[string, unknown, RegExp]> = [
    ["unknown _type", { ...mlp, searchSpace: { depth: { _type: "normal", _value: [0, 1] } } }, /^searchSpace\.depth\._type: unknown type "normal"/],
    ["empty choices", { ...mlp, searchSpace: { depth: { _type: "choice", _value: [] } } }, /^searchSpace\.depth\._value: choice needs at least one value/],
    ["maxTrials < 1", { ...mlp, maxTrials: 0 }, /^maxTrials: must be >= 1/],
    ["unknown family", { ...mlp, family: "rnn" }, /^family: unknown family "rnn"/],
    ["unknown strategy", { ...mlp, strategy: "bayes" }, /^strategy: unknown strategy "bayes"/],
    ["unknown strategy object", { ...mlp, strategy: { name: "tpe" } }, /^strategy\.name: unknown strategy "tpe"/],
    ["unknown evaluator", { ...mlp, evaluator: { metrics: ["params", "accuracy"] } }, /^evaluator\.metrics\[1\]: unknown evaluator "accuracy"/],
    ["evaluator neither built-in nor custom", { ...mlp, evaluator: { epochs: 3 } }, /^evaluator: needs "metrics"/],
    ["objective not reported", { ...mlp, objective: { metric: "naswot", direction: "maximize" } }, /^objective\.metric: metric "naswot" is not reported/],
    ["missing search space", { ...mlp, searchSpace: undefined }, /^searchSpace: is required for family "mlp"/],
    ["unknown field", { ...mlp, colour: "red" }, /^colour: unknown field/],
    ["not JSON", "{nope", /not valid JSON/],
    ["empty body", "", /body is empty/],
  ];
  for (const [what, body, want] of cases) {
    const r = await api.create(body);
    t.equal(r.status, 400, `${what}: 400`);
    t.match(r.body.error, want, `${what}: ${r.body.error}`);
  }
  t.equal((await api.create(mlp)).status, 201, "the base spec itself is fine");

  for (const [method, p] of [["GET", "/nope"], ["GET", "/nope/trials"], ["GET", "/nope/trials/t0000"], ["GET", "/nope/trials/t0000/model.onnx"], ["POST", "/nope/stop"], ["POST", "/nope/resume"], ["POST", "/nope/deploy"]] as const) {
    const r = await api.call(method, p);
    t.equal(r.status, 404, `${method} ${p}: 404`);
    t.match(r.body.error, /experiment "nope" not found/);
  }
  const { body } = await api.create(mlp);
  t.equal((await api.call("GET", `/${body.id}/trials/t9999`)).status, 404, "unknown trial: 404");
  t.match((await api.resume(body.id)).body.error, /is queued/, "resuming a queued experiment is refused");
  t.equal((await api.resume(body.id)).status, 409);
  const bad = await api.call("POST", `/${body.id}/resume`, { maxTrials: 0 });
  t.equal(bad.status, 400);
  t.match(bad.body.error, /maxTrials/, "a bad resume body names the field");
  t.equal((await api.call("GET", `/${body.id}/trials?status=weird`)).status, 400, "bad trial status filter");
  t.match(await api.stop(body.id), { status: 200, body: { status: "stopped" } });
  t.match(await api.stop(body.id), { status: 200, body: { status: "stopped" } }, "stopping twice is harmless");
});

t.test("stop keeps unfinished trials and resume completes the experiment without losing or re-running a trial", async (t) => {
  const stack = await startStack(t, { JETSHARD_EVALUATORS_DIR: EVALUATORS_DIR });
  const gw = await stack.gateway();
  await stack.worker({ JETSHARD_NAS_CONCURRENCY: "3" });
  await controller(t, stack);
  const api = experimentsApi(gw.url);
  const { body } = await api.create({
    name: "pausable",
    family: "custom",
    searchSpace: { x: { _type: "randint", _value: [0, 1000] } },
    strategy: "evolution",
    objective: { metric: "score", direction: "maximize" },
    maxTrials: 10,
    concurrency: 3,
    evaluator: { custom: "evaluators", behavior: "sleep", delayMs: 250 },
  });
  const id = body.id as string;
  await waitFor("three finished", async () => (await api.get(id)).body.progress.finished >= 3, 30_000, 20);
  t.match(await api.stop(id), { status: 200, body: { id, status: "stopped" } });
  const stopped = await waitFor("running trials put back", async () => {
    const r = (await api.get(id)).body;
    return r.progress.running === 0 && r.lease === null ? r : null;
  }, 10_000, 50);
  t.equal(stopped.status, "stopped");
  t.equal(stopped.reason, "stopped by request");
  t.ok(stopped.progress.queued > 0, `${stopped.progress.queued} unfinished trials kept as queued`);
  const finishedBefore = ((await api.trials(id)).body.trials as any[]).filter((x) => x.status === "succeeded").map((x) => x.trialId);
  t.match((await api.stop(id)).body, { status: "stopped" });

  t.match(await api.resume(id), { status: 200, body: { id, status: "queued" } });
  const done = await api.waitStatus(id, ["completed", "failed"], 30_000);
  t.equal(done.status, "completed");
  const trials = (await api.trials(id)).body.trials as any[];
  t.same(trials.map((x) => x.trialId), Array.from({ length: 10 }, (_, i) => `t${String(i).padStart(4, "0")}`), "10 trials, none lost");
  t.ok(trials.every((x) => x.status === "succeeded"));
  const evals = evaluationsPerTrial(await trialEvents(stack.infra, id));
  t.same(finishedBefore.filter((tid) => evals.get(tid) !== 1), [], "trials finished before the stop were not run again");
  t.equal((await api.resume(id)).status, 409, "a completed experiment resumes only with a larger maxTrials");
  t.match(await api.resume(id, { maxTrials: 12 }), { status: 200, body: { status: "queued" } });
  const more = await api.waitStatus(id, ["completed"], 30_000);
  t.match(more.progress, { maxTrials: 12, proposed: 12, succeeded: 12 });
});
