import t from "tap";
import http from "node:http";
import { loadConfig } from "#shared/config.js";
import { createGateway } from "../../services/gateway/gateway.js";
import { SERVED, capturingLogger, EXPERIMENT_SPEC, failureCount, formatReport, prepareTargets, runFuzz, send, validRequest, watchCrashes } from "../fuzz/harness.js";
import { startStack, waitFor } from "../helpers/stack.js";

/** Fixed, so a failure is reproducible: `npm run fuzz -- --seed 20240917 --requests 2500`. */
const SEED = 20240917;
const REQUESTS = 2500;

/** Every route of the gateway the generator must reach (grep app.get/post/put/delete in services/gateway). */
const ROUTES = [
  "GET /v2/health/live",
  "GET /v2/health/ready",
  "GET /v2",
  "GET /v2/models/:model",
  "GET /v2/models/:model/versions/:version",
  "GET /v2/models/:model/ready",
  "GET /v2/models/:model/versions/:version/ready",
  "POST /v2/models/:model/infer",
  "POST /v2/models/:model/versions/:version/infer",
  "PUT /v1/models/:model",
  "GET /v1/models",
  "GET /v1/models/:model",
  "DELETE /v1/models/:model",
  "GET /v1/workers",
  "POST /v1/jobs",
  "GET /v1/jobs",
  "GET /v1/jobs/:id",
  "DELETE /v1/jobs/:id",
  "GET /v1/dead-letters",
  "POST /v1/dead-letters/:id/replay",
  "DELETE /v1/dead-letters/:id",
  "POST /v1/experiments",
  "GET /v1/experiments",
  "GET /v1/experiments/:id",
  "GET /v1/experiments/:id/trials",
  "GET /v1/experiments/:id/trials/:trial",
  "GET /v1/experiments/:id/trials/:trial/model.onnx",
  "POST /v1/experiments/:id/stop",
  "POST /v1/experiments/:id/resume",
  "POST /v1/experiments/:id/deploy",
  "GET /v1/keys",
  "POST /v1/keys",
  "DELETE /v1/keys/:id",
  "GET /",
  "GET /metrics",
  "(unknown route)",
];

t.test("a seeded mutation fuzz of every route gets no 5xx but 503, and the gateway stays healthy", async (t) => {
  const stack = await startStack(t);
  const gwLog = capturingLogger();
  const gw = createGateway({ config: loadConfig(stack.env), log: gwLog.log });
  await gw.start();
  t.teardown(() => gw.stop());
  await stack.worker({ JETSHARD_SERVE: SERVED.join(",") });
  const targets = await prepareTargets(gw.url);
  const crashes = watchCrashes();
  t.teardown(() => crashes.stop());

  t.comment(`fuzz seed ${SEED}, ${REQUESTS} requests`);
  const report = await runFuzz({ url: gw.url, seed: SEED, requests: REQUESTS, targets, concurrency: 8, timeBudgetMs: 45_000, gatewayTimeoutMs: stack.config.requestTimeoutMs });
  t.comment(formatReport(report));

  t.equal(failureCount(report), 0, "no answer >= 500 other than 503 (504 only past the deadline), none unanswered");
  t.ok(report.sent >= 1000, `enough requests were sent within the time budget (${report.sent})`);
  t.same(ROUTES.filter((r) => !report.byRoute[r]), [], "every route was exercised");
  const count = (route: string, ok: (status: number) => boolean) => Object.entries(report.byRoute[route] ?? {}).reduce((a, [s, n]) => a + (ok(Number(s)) ? n : 0), 0);
  t.ok(count("POST /v2/models/:model/infer", (s) => s === 200) > 0, "some inferences succeed (the valid and still-valid mutants)");
  t.ok(count("POST /v2/models/:model/infer", (s) => s === 400) > 0, "and many are refused with 400");
  t.same(crashes.crashes, [], "no unhandled rejection or uncaught exception");
  t.same(
    Object.keys(gwLog.errors()).filter((k) => k.startsWith("unhandled error")),
    [],
    "the gateway logged no unhandled error",
  );

  const agent = new http.Agent();
  t.teardown(() => agent.destroy());
  t.equal((await send(gw.url, agent, { route: "", method: "GET", path: "/v2/health/ready", headers: {}, note: "" }, 10_000)).status, 200, "GET /v2/health/ready is 200 at the end");
  for (const m of targets.models) {
    const res = await send(gw.url, agent, { route: "", method: "POST", path: `/v2/models/${m.name}/infer`, headers: { "content-type": "application/json" }, body: new TextEncoder().encode(JSON.stringify(validRequest(m))), note: "" }, 30_000);
    t.equal(res.status, 200, `a valid inference of ${m.name} still succeeds: ${res.body.slice(0, 200)}`);
  }
});

t.test("a gateway that lost NATS answers 503 with Retry-After, never 500, and serves again when NATS is back", async (t) => {
  const stack = await startStack(t);
  const gw = await stack.gateway();
  await stack.worker({ JETSHARD_SERVE: SERVED.join(",") });
  const targets = await prepareTargets(gw.url);
  const mlp = targets.models[0]!;
  const json = (body: unknown) => ({ method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

  // the experiment buckets are opened on first use: open them now (opening them during the outage retries for long)
  t.equal((await fetch(`${gw.url}/v1/experiments`)).status, 200);
  await stack.nats.kill();
  const calls: Array<[string, RequestInit & { path: string }]> = [
    ["list jobs", { path: "/v1/jobs" }],
    ["job status", { path: "/v1/jobs/abc" }],
    ["submit a job", { path: "/v1/jobs", ...json({ model: mlp.name, ...validRequest(mlp) }) }],
    ["infer", { path: `/v2/models/${mlp.name}/infer`, ...json(validRequest(mlp)) }],
    ["dead letters", { path: "/v1/dead-letters" }],
    ["create an experiment", { path: "/v1/experiments", ...json(EXPERIMENT_SPEC) }],
    ["cancel a job", { path: "/v1/jobs/abc", method: "DELETE" }],
  ];
  const results = await Promise.all(calls.map(async ([what, { path, ...init }]) => [what, await fetch(gw.url + path, init)] as const));
  for (const [what, res] of results) {
    const body = (await res.json()) as { error?: string };
    t.equal(res.status, 503, `${what}: 503 (${body.error})`);
    t.equal(res.headers.get("retry-after"), "1", `${what}: Retry-After`);
    t.match(body.error, /NATS is unavailable/, `${what}: says why`);
  }

  await stack.nats.restart();
  // the gateway's own requests work again as soon as it has reconnected
  await waitFor("GET /v1/jobs after NATS is back", async () => (await fetch(`${gw.url}/v1/jobs`)).status === 200, 30_000, 100);
  t.pass("GET /v1/jobs answers 200 again");
});
