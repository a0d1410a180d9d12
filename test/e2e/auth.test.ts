import t from "tap";
import { addModel } from "#shared/model-repo.js";
import { createApiKey, openApiKeys, revokeApiKey, type Scope } from "#shared/auth.js";
import { encodeModel, mlp } from "#shared/onnx/builder.js";
import { authMode, isLoopback, requiredScopes } from "../../services/gateway/auth.js";
import { CELL_SPEC } from "../helpers/nas.js";
import { startStack, waitFor, type Stack } from "../helpers/stack.js";

const BYTES = encodeModel(mlp({ layers: [4, 8, 3], seed: 5 }));
const INPUT = [{ name: "input", shape: [1, 4], datatype: "FP32", data: [1, 2, 3, 4] }];

const json = async (r: Response) => ({ status: r.status, headers: r.headers, body: (await r.json()) as any });
/** A small HTTP client for one API key. */
function as(base: string, key?: string) {
  const auth: Record<string, string> = key ? { authorization: `Bearer ${key}` } : {};
  return (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) =>
    fetch(base + path, {
      method,
      headers: { ...auth, ...(body instanceof Uint8Array ? { "content-type": "application/octet-stream" } : { "content-type": "application/json" }), ...headers },
      body: body === undefined ? undefined : body instanceof Uint8Array ? body : JSON.stringify(body),
    }).then(json);
}

async function keyFor(stack: Stack, tenant: string, scopes: Scope[]) {
  return (await createApiKey(await openApiKeys(stack.infra.nc), { tenant, scopes })).key;
}

t.test("the scope table: health is public, every other route needs a key, and the right scope", async (t) => {
  t.equal(requiredScopes("GET", "/v2/health/live"), null);
  t.equal(requiredScopes("GET", "/v2/health/ready"), null);
  t.same(requiredScopes("POST", "/v2/models/m/infer"), ["infer"]);
  t.same(requiredScopes("POST", "/v2/models/m/versions/2/infer"), ["infer"]);
  t.same(requiredScopes("GET", "/v2/models/m"), ["infer", "models:read"]);
  t.same(requiredScopes("PUT", "/v1/models/m"), ["models:write"]);
  t.same(requiredScopes("DELETE", "/v1/models/m"), ["models:write"]);
  t.same(requiredScopes("GET", "/v1/models"), ["infer", "models:read"]);
  t.same(requiredScopes("POST", "/v1/jobs"), ["jobs"]);
  t.same(requiredScopes("POST", "/v1/dead-letters/x/replay"), ["jobs"]);
  t.same(requiredScopes("POST", "/v1/experiments"), ["experiments"]);
  t.same(requiredScopes("GET", "/v1/keys"), ["admin"]);
  t.same(requiredScopes("GET", "/metrics"), ["metrics"]);
  t.same(requiredScopes("GET", "/v1/anything-else"), [], "unknown routes still need a valid key");
});

t.test("a gateway bound to a non-loopback address refuses to start with authentication unset", async (t) => {
  t.ok(isLoopback("127.0.0.1") && isLoopback("::1") && isLoopback("localhost") && isLoopback("127.1.2.3"));
  t.notOk(isLoopback("0.0.0.0") || isLoopback("10.0.0.1") || isLoopback("::") || isLoopback("127.0.0.1.example.com"));
  t.equal(authMode({ host: "127.0.0.1", auth: undefined }), "off", "loopback may stay open (npm start)");
  t.throws(() => authMode({ host: "0.0.0.0", auth: undefined }), /JETSHARD_AUTH: the gateway binds 0\.0\.0\.0, which is not a loopback address/);
  t.equal(authMode({ host: "0.0.0.0", auth: "off" }), "off", "an explicit off is honoured");
  t.equal(authMode({ host: "0.0.0.0", auth: "keys" }), "keys");
  const stack = await startStack(t, { JETSHARD_HOST: "0.0.0.0" });
  await t.rejects(stack.gateway(), /JETSHARD_AUTH/);
});

t.test("with auth on: no key is 401, a bad or revoked key is 401, a missing scope is 403 naming it", async (t) => {
  const stack = await startStack(t, { JETSHARD_AUTH: "keys" });
  const gw = await stack.gateway();
  await addModel(stack.infra, "m", BYTES);
  await stack.worker();
  const anon = as(gw.url);
  t.equal((await anon("GET", "/v2/health/live")).status, 200, "liveness stays open for probes");
  const none = await anon("POST", "/v2/models/m/infer", { inputs: INPUT });
  t.equal(none.status, 401);
  t.match(none.body.error, /missing API key: send Authorization: Bearer <key>/);
  t.match(none.headers.get("www-authenticate"), /^Bearer realm="jetshard"/);
  for (const bad of ["jsk_0123456789abcdef_" + "A".repeat(43), "not-a-key", "jsk_zz_zz"]) {
    const r = await as(gw.url, bad)("GET", "/v1/models");
    t.equal(r.status, 401, bad);
    t.match(r.body.error, /invalid or revoked API key/);
  }
  t.equal((await anon("GET", "/v1/models", undefined, { authorization: "Basic dXNlcjpwYXNz" })).status, 401, "only the Bearer scheme");

  const inferOnly = await keyFor(stack, "acme", ["infer"]);
  const ok = await as(gw.url, inferOnly)("POST", "/v2/models/m/infer", { inputs: INPUT });
  t.equal(ok.status, 200, JSON.stringify(ok.body));
  t.equal(ok.body.outputs[0].shape[1], 3);
  const up = await as(gw.url, inferOnly)("PUT", "/v1/models/m2", BYTES);
  t.equal(up.status, 403);
  t.match(up.body.error, /lacks the scope "models:write"/);
  const jobs = await as(gw.url, inferOnly)("POST", "/v1/jobs", { model: "m", inputs: INPUT });
  t.equal(jobs.status, 403);
  t.match(jobs.body.error, /"jobs"/);
  t.equal((await as(gw.url, inferOnly)("GET", "/metrics")).status, 403);
  t.equal((await as(gw.url, inferOnly)("GET", "/v1/keys")).status, 403, "key management is admin only");

  // a wrong secret for a real key id is refused; revocation takes effect at once
  const id = inferOnly.split("_")[1]!;
  t.equal((await as(gw.url, `jsk_${id}_${"B".repeat(43)}`)("GET", "/v1/models")).status, 401, "right id, wrong secret");
  await revokeApiKey(await openApiKeys(stack.infra.nc), id);
  await waitFor("revocation seen", async () => (await as(gw.url, inferOnly)("GET", "/v1/models")).status === 401, 5_000);
});

t.test("tenant B cannot see, wait on, cancel or read the result of tenant A's jobs; lists show only your own", async (t) => {
  const stack = await startStack(t, { JETSHARD_AUTH: "keys" });
  const gw = await stack.gateway();
  await addModel(stack.infra, "m", BYTES);
  await stack.worker();
  const a = as(gw.url, await keyFor(stack, "team-a", ["jobs", "infer"]));
  const b = as(gw.url, await keyFor(stack, "team-b", ["jobs", "infer"]));
  const admin = as(gw.url, await keyFor(stack, "ops", ["admin"]));
  const sub = await a("POST", "/v1/jobs", { model: "m", inputs: INPUT });
  t.equal(sub.status, 202);
  const done = await a("GET", `/v1/jobs/${sub.body.id}?wait=10s`);
  t.match(done.body, { status: "succeeded", tenant: "team-a" });
  t.ok(done.body.result, "A reads its result");
  for (const [method, path] of [
    ["GET", `/v1/jobs/${sub.body.id}`],
    ["GET", `/v1/jobs/${sub.body.id}?wait=2s`],
    ["DELETE", `/v1/jobs/${sub.body.id}`],
  ] as const) {
    const r = await b(method, path);
    t.equal(r.status, 404, `${method} ${path}`);
    t.notOk(JSON.stringify(r.body).includes("team-a") || r.body.result, "no data of A's job");
  }
  t.same((await b("GET", "/v1/jobs")).body.jobs, [], "B lists none");
  t.same((await a("GET", "/v1/jobs")).body.jobs.map((j: any) => j.id), [sub.body.id]);
  t.equal((await admin("GET", `/v1/jobs/${sub.body.id}`)).status, 200, "an admin sees every tenant's jobs");
  t.equal((await admin("GET", "/v1/jobs?tenant=team-b")).body.jobs.length, 0, "and can filter by tenant");
});

t.test("two tenants using the same idempotency key get two jobs; the same tenant gets its own back", async (t) => {
  const stack = await startStack(t, { JETSHARD_AUTH: "keys" });
  const gw = await stack.gateway();
  await addModel(stack.infra, "m", BYTES);
  const a = as(gw.url, await keyFor(stack, "team-a", ["jobs"]));
  const b = as(gw.url, await keyFor(stack, "team-b", ["jobs"]));
  const a1 = await a("POST", "/v1/jobs", { model: "m", inputs: INPUT }, { "Idempotency-Key": "order-1" });
  const b1 = await b("POST", "/v1/jobs", { model: "m", inputs: INPUT }, { "Idempotency-Key": "order-1" });
  const a2 = await a("POST", "/v1/jobs", { model: "m", inputs: INPUT }, { "Idempotency-Key": "order-1" });
  const b2 = await b("POST", "/v1/jobs", { model: "m", inputs: INPUT, id: "1" });
  const a3 = await a("POST", "/v1/jobs", { model: "m", inputs: INPUT, id: "1" });
  t.same([a1.status, b1.status, a2.status, b2.status, a3.status], [202, 202, 200, 202, 202]);
  t.not(a1.body.id, b1.body.id, "same key, two tenants, two jobs");
  t.equal(a1.body.id, a2.body.id, "same key, same tenant: the existing job");
  t.not(a3.body.id, b2.body.id, 'v2 "id":"1" from two tenants: two jobs');
  t.not(a1.body.id, "order-1", "the job id is not the caller's key");
});

t.test("dead letters belong to the tenant: B cannot list, replay or delete A's", async (t) => {
  const stack = await startStack(t, { JETSHARD_AUTH: "keys", JETSHARD_MAX_ATTEMPTS: "1" });
  const gw = await stack.gateway();
  const mv = await addModel(stack.infra, "fragile", BYTES);
  await stack.infra.objects.delete(mv.shards[0]!.object);
  await stack.worker();
  const a = as(gw.url, await keyFor(stack, "team-a", ["jobs"]));
  const b = as(gw.url, await keyFor(stack, "team-b", ["jobs"]));
  const sub = await a("POST", "/v1/jobs", { model: "fragile", inputs: INPUT });
  t.match((await a("GET", `/v1/jobs/${sub.body.id}?wait=20s`)).body, { status: "failed" });
  const dl = await waitFor("dead letter", async () => (await a("GET", "/v1/dead-letters")).body.deadLetters[0]);
  t.match(dl, { id: sub.body.id, tenant: "team-a" });
  t.same((await b("GET", "/v1/dead-letters")).body.deadLetters, [], "B lists none");
  t.equal((await b("POST", `/v1/dead-letters/${sub.body.id}/replay`)).status, 404);
  t.equal((await b("DELETE", `/v1/dead-letters/${sub.body.id}`)).status, 404);
  t.equal((await a("GET", "/v1/dead-letters")).body.deadLetters.length, 1, "still there for A");
  t.equal((await a("DELETE", `/v1/dead-letters/${sub.body.id}`)).status, 200);
});

t.test("experiments and their trials belong to their tenant", async (t) => {
  const stack = await startStack(t, { JETSHARD_AUTH: "keys" });
  const gw = await stack.gateway();
  const a = as(gw.url, await keyFor(stack, "team-a", ["experiments"]));
  const b = as(gw.url, await keyFor(stack, "team-b", ["experiments"]));
  const created = await a("POST", "/v1/experiments", { ...CELL_SPEC, maxTrials: 2 });
  t.equal(created.status, 201, JSON.stringify(created.body));
  const id = created.body.id;
  t.equal((await a("GET", `/v1/experiments/${id}`)).status, 200);
  for (const [method, path] of [
    ["GET", `/v1/experiments/${id}`],
    ["GET", `/v1/experiments/${id}/trials`],
    ["POST", `/v1/experiments/${id}/stop`],
    ["POST", `/v1/experiments/${id}/resume`],
    ["POST", `/v1/experiments/${id}/deploy`],
  ] as const) {
    t.equal((await b(method, path)).status, 404, `${method} ${path}`);
  }
  t.same((await b("GET", "/v1/experiments")).body.experiments, []);
  t.same((await a("GET", "/v1/experiments")).body.experiments.map((e: any) => e.id), [id]);
  t.equal((await a("POST", `/v1/experiments/${id}/stop`)).status, 200, "the owner can stop it");
});

t.test("models: any tenant with infer may call a model; only its owner may replace or delete it", async (t) => {
  const stack = await startStack(t, { JETSHARD_AUTH: "keys" });
  const gw = await stack.gateway();
  await stack.worker();
  const a = as(gw.url, await keyFor(stack, "team-a", ["models:write", "models:read", "infer"]));
  const b = as(gw.url, await keyFor(stack, "team-b", ["models:write", "infer"]));
  t.equal((await a("PUT", "/v1/models/shared", BYTES)).status, 201);
  t.equal((await a("GET", "/v1/models/shared")).body.tenant, "team-a");
  await waitFor("served", async () => (await b("GET", "/v2/models/shared/ready")).status === 200, 20_000);
  t.equal((await b("POST", "/v2/models/shared/infer", { inputs: INPUT })).status, 200, "B may infer");
  const replace = await b("PUT", "/v1/models/shared", BYTES);
  t.equal(replace.status, 403);
  t.match(replace.body.error, /belongs to another tenant/);
  t.equal((await b("DELETE", "/v1/models/shared")).status, 403);
  t.equal((await a("PUT", "/v1/models/shared", BYTES)).status, 201, "the owner adds a version");
  await addModel(stack.infra, "operator-model", BYTES);
  t.equal((await a("DELETE", "/v1/models/operator-model")).status, 403, "a model added by the operator is not a tenant's");
  t.equal((await a("DELETE", "/v1/models/shared")).status, 200);
});

t.test("per-tenant quotas: models, versions and queued jobs answer 429 with a message", async (t) => {
  const stack = await startStack(t, { JETSHARD_AUTH: "keys", JETSHARD_QUOTA_MODELS: "2", JETSHARD_QUOTA_VERSIONS: "2", JETSHARD_QUOTA_QUEUED_JOBS: "3" });
  const gw = await stack.gateway();
  const a = as(gw.url, await keyFor(stack, "team-a", ["models:write", "jobs"]));
  const b = as(gw.url, await keyFor(stack, "team-b", ["models:write", "jobs"]));
  t.equal((await a("PUT", "/v1/models/a1", BYTES)).status, 201);
  t.equal((await a("PUT", "/v1/models/a2", BYTES)).status, 201);
  const third = await a("PUT", "/v1/models/a3", BYTES);
  t.equal(third.status, 429);
  t.match(third.body.error, /owns 2 models, its quota \(JETSHARD_QUOTA_MODELS=2\)/);
  t.equal((await b("PUT", "/v1/models/b1", BYTES)).status, 201, "another tenant has its own quota");
  t.equal((await a("PUT", "/v1/models/a1", BYTES)).status, 201, "version 2");
  t.match((await a("PUT", "/v1/models/a1", BYTES)).body.error, /has 2 versions, the quota/);
  // no worker: jobs stay queued
  const subs = [];
  for (let i = 0; i < 4; i++) subs.push(await a("POST", "/v1/jobs", { model: "a1", inputs: INPUT }));
  t.same(subs.map((s) => s.status), [202, 202, 202, 429]);
  t.match(subs[3]!.body.error, /has 3 async jobs queued or running, its quota/);
  t.equal((await b("POST", "/v1/jobs", { model: "a1", inputs: INPUT })).status, 202, "B is not held back by A");
  // once A's jobs finish, A may submit again
  await stack.worker();
  for (const s of subs.slice(0, 3)) await a("GET", `/v1/jobs/${s.body.id}?wait=20s`);
  await waitFor("quota freed", async () => (await a("POST", "/v1/jobs", { model: "a1", inputs: INPUT })).status === 202, 5_000);
});

t.test("API keys over HTTP: an admin creates one that works at once, lists them without secrets, revokes it", async (t) => {
  const stack = await startStack(t, { JETSHARD_AUTH: "keys" });
  const gw = await stack.gateway();
  const admin = as(gw.url, await keyFor(stack, "ops", ["admin"]));
  const bad = await admin("POST", "/v1/keys", { tenant: "Team A!", scopes: ["infer"] });
  t.equal(bad.status, 400);
  t.match(bad.body.error, /tenant "Team A!"/);
  t.match((await admin("POST", "/v1/keys", { tenant: "a", scopes: ["root"] })).body.error, /unknown scope "root"/);
  const made = await admin("POST", "/v1/keys", { tenant: "team-a", scopes: ["models:read"], name: "ci" });
  t.equal(made.status, 201);
  t.match(made.body, { key: /^jsk_[0-9a-f]{16}_/, tenant: "team-a", scopes: ["models:read"], name: "ci" });
  t.equal((await as(gw.url, made.body.key)("GET", "/v1/models")).status, 200, "works at once");
  const list = await admin("GET", "/v1/keys");
  t.equal(list.body.keys.length, 2);
  t.notOk(JSON.stringify(list.body).includes("hash") || JSON.stringify(list.body).includes(made.body.key.slice("jsk_0123456789abcdef_".length)), "no secrets or hashes listed");
  t.equal((await admin("DELETE", `/v1/keys/${made.body.id}`)).status, 200);
  t.equal((await as(gw.url, made.body.key)("GET", "/v1/models")).status, 401, "revoked at once");
});
