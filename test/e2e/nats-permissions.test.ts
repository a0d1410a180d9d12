/**
 * NATS users per role (nats-auth.conf, the file nats.conf includes): each role can do its job with its own
 * credentials, and is refused what it does not need. The server runs with the shipped users file, copied next to
 * its generated config (nats-server 2.9 takes only relative includes), and logs to a file we read: a permission
 * violation during the allowed flows means the file lacks a subject a process needs.
 */
import t, { type Test } from "tap";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { connect, headers as natsHeaders, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { JetshardClient } from "#shared/client.js";
import { loadConfig } from "#shared/config.js";
import { createLogger, silentLogger } from "#shared/log.js";
import { attachLogs, logPublisherOf, readLogs, type LogRecord } from "#shared/logs.js";
import { addModel } from "#shared/model-repo.js";
import { NatsPermissionError, connectNats, natsConnectionOptions, openInfra, permissionViolation } from "#shared/nats.js";
import { encodeModel, mlp } from "#shared/onnx/builder.js";
import { HEADERS, STREAMS, subjects } from "#shared/subjects.js";
import { NATS_ROLES, natsServerPasswordEnv, type NatsCredentials, type NatsRole } from "../../services/cli/credentials.js";
import { createController } from "../../services/controller/controller.js";
import { createGateway } from "../../services/gateway/gateway.js";
import { createWorker } from "../../services/worker/worker.js";
import { controller, experimentsApi } from "../helpers/nas.js";
import { startTestNats } from "../helpers/nats.js";
import { ROOT, startStack, waitFor, type Stack } from "../helpers/stack.js";

const AUTH_FILE = path.join(ROOT, "nats-auth.conf");
const BYTES = encodeModel(mlp({ layers: [4, 8, 3], seed: 5 }));
const INPUT = { name: "input", datatype: "FP32" as const, shape: [1, 4], data: Float32Array.of(0.5, -1, 2, 0.25) };
const JSON_INPUT = { inputs: [{ name: "input", shape: [1, 4], datatype: "FP32", data: [0.5, -1, 2, 0.25] }] };

const creds = Object.fromEntries(NATS_ROLES.map((r) => [r, `p${randomBytes(12).toString("hex")}`])) as NatsCredentials;
const as = (role: NatsRole) => ({ JETSHARD_NATS_USER: role, JETSHARD_NATS_PASSWORD: creds[role] });

/** A stack whose nats-server runs with the shipped users file, its own stack connection being admin. */
async function authStack(t: Test, natsExtra = ""): Promise<Stack & { violations(): Promise<string[]> }> {
  const logDir = await mkdtemp(path.join(os.tmpdir(), "jetshard-natslog-"));
  t.teardown(() => rm(logDir, { recursive: true, force: true }));
  const logFile = path.join(logDir, "nats.log");
  const stack = await startStack(t, as("admin"), {
    nats: {
      extra: [`include "nats-auth.conf"`, `log_file: "${logFile}"`, natsExtra].join("\n"),
      copyFiles: [AUTH_FILE],
      env: { ...process.env, ...natsServerPasswordEnv(creds) },
    },
  });
  const violations = async () => (await readFile(logFile, "utf8").catch(() => "")).split("\n").filter((l) => /Violation/.test(l));
  return Object.assign(stack, { violations });
}

function connectAs(t: Test, stack: Stack, role: NatsRole): Promise<NatsConnection> {
  return connectNats({ natsServers: [stack.nats.url], nats: { user: role, password: creds[role] } }, `test-${role}`).then((nc) => {
    t.teardown(() => nc.close());
    return nc;
  });
}

async function send(url: string, method: string, body?: unknown) {
  const res = await fetch(url, { method, headers: body ? { "content-type": "application/json" } : {}, body: body ? JSON.stringify(body) : undefined });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

t.test("nats.conf includes the users file this test runs with", async (t) => {
  t.match(await readFile(path.join(ROOT, "nats.conf"), "utf8"), /^include "nats-auth\.conf"/m);
});

t.test("gateway, worker and controller do their jobs with their own credentials, and a client infers through shared/client.ts", async (t) => {
  const stack = await authStack(t, "max_payload: 65536");
  const gw = await stack.gateway(as("gateway"));
  await stack.worker(as("worker"));
  await stack.worker(as("worker"));

  // model repository, sync and async inference
  t.equal((await fetch(`${gw.url}/v1/models/m`, { method: "PUT", body: BYTES })).status, 201, "model stored by the gateway");
  await waitFor("model ready", async () => (await fetch(`${gw.url}/v2/models/m/ready`)).ok);
  const sync = await send(`${gw.url}/v2/models/m/infer`, "POST", JSON_INPUT);
  t.equal(sync.status, 200, JSON.stringify(sync.body));
  t.same(sync.body.outputs[0].shape, [1, 3], "sync inference answered");
  const sub = await send(`${gw.url}/v1/jobs`, "POST", { model: "m", ...JSON_INPUT });
  t.equal(sub.status, 202, JSON.stringify(sub.body));
  const done = await waitFor("async job done", async () => {
    const r = await send(`${gw.url}/v1/jobs/${sub.body.id}`, "GET");
    return r.body?.status === "succeeded" ? r.body : null;
  });
  t.same(done.result.outputs[0].shape, [1, 3], "async job's result read back");
  const listed = await send(`${gw.url}/v1/jobs?status=succeeded`, "GET");
  t.equal(listed.status, 200, JSON.stringify(listed.body));
  t.equal((await send(`${gw.url}/v1/workers`, "GET")).body.workers.length, 2, "workers listed");

  // a pipelined model whose activations exceed the 64 KB max payload: stage hops and claim checks
  const wide = encodeModel(mlp({ layers: [4, 20000, 3], seed: 8 }));
  t.equal((await fetch(`${gw.url}/v1/models/wide?shards=2`, { method: "PUT", body: wide })).status, 201);
  await waitFor("wide ready", async () => (await fetch(`${gw.url}/v2/models/wide/ready`)).ok, 20_000);
  const hop = await send(`${gw.url}/v2/models/wide/infer`, "POST", JSON_INPUT);
  t.equal(hop.status, 200, JSON.stringify(hop.body));

  // inputs bigger than the 64 KB max payload: the gateway claim-checks them on the first hop (sync and async)
  const big = encodeModel(mlp({ layers: [20000, 3], seed: 9 }));
  t.equal((await fetch(`${gw.url}/v1/models/big`, { method: "PUT", body: big })).status, 201);
  await waitFor("big ready", async () => (await fetch(`${gw.url}/v2/models/big/ready`)).ok, 20_000);
  const bigInput = { inputs: [{ name: "input", shape: [1, 20000], datatype: "FP32", data: Array.from({ length: 20000 }, (_, i) => (i % 7) / 7) }] };
  const bigSync = await send(`${gw.url}/v2/models/big/infer`, "POST", bigInput);
  t.equal(bigSync.status, 200, JSON.stringify(bigSync.body).slice(0, 300));
  const bigJob = await send(`${gw.url}/v1/jobs`, "POST", { model: "big", ...bigInput });
  t.equal(bigJob.status, 202, JSON.stringify(bigJob.body).slice(0, 300));
  const bigDone = await waitFor("big async job done", async () => {
    const r = await send(`${gw.url}/v1/jobs/${bigJob.body.id}`, "GET");
    return r.body?.status === "succeeded" || r.body?.status === "failed" ? r.body : null;
  });
  t.equal(bigDone.status, "succeeded", JSON.stringify(bigDone.error ?? {}));
  t.same(bigDone.result.outputs[0].data, bigSync.body.outputs[0].data, "the same answer sync and async");

  // dead letters: poison published by an admin, listed, replayed and deleted through the gateway
  for (const id of ["poison-1", "poison-2"]) {
    const h = natsHeaders();
    h.set(HEADERS.track, "1");
    await stack.infra.js.publish(subjects.infer("m"), new TextEncoder().encode("{{{"), { msgID: id, headers: h });
  }
  await waitFor("dead letters", async () => (await send(`${gw.url}/v1/dead-letters`, "GET")).body.deadLetters.length === 2);
  t.equal((await send(`${gw.url}/v1/dead-letters/poison-1`, "DELETE")).status, 200, "dead letter deleted");
  const replayedAt = Date.now();
  t.equal((await send(`${gw.url}/v1/dead-letters/poison-2/replay`, "POST")).status, 202, "dead letter replayed");
  await waitFor("the replayed job to fail again", async () => (await send(`${gw.url}/v1/jobs/poison-2`, "GET")).body?.finishedAt >= replayedAt);

  // a client program: publish a job, read the answer in its own inbox
  const client = await JetshardClient.connect(stack.nats.url, { user: "client", password: creds.client });
  t.teardown(() => client.close());
  const r = await client.infer("m", [INPUT]);
  t.same(r.outputs[0]!.shape, [1, 3], "client infers with its own credentials");

  // NAS: experiments through the gateway, driven by a controller, evaluated by the workers
  await controller(t, stack, as("controller"));
  const api = experimentsApi(gw.url);
  const spec = {
    name: "perm",
    family: "mlp",
    familyOptions: { inputShape: [8] },
    searchSpace: { depth: { _type: "choice", _value: [1, 2] }, width: { _type: "choice", _value: [8, 16] } },
    strategy: "grid",
    objective: { metric: "params", direction: "minimize" },
    maxTrials: 3,
    concurrency: 2,
    evaluator: { metrics: ["params"] },
  };
  const created = await api.create(spec);
  t.equal(created.status, 201, JSON.stringify(created.body));
  const exp = await api.waitStatus(created.body.id, ["completed", "failed"], 60_000);
  t.equal(exp.status, "completed", exp.reason ?? "");
  t.equal((await api.trials(created.body.id)).body.trials.length, 3);
  const dep = await api.call("POST", `/${created.body.id}/deploy`, { name: "best" });
  t.equal(dep.status, 201, JSON.stringify(dep.body));

  const long = await api.create({ ...spec, name: "perm-stop", maxTrials: 50, concurrency: 1 });
  t.equal((await api.stop(long.body.id)).status, 200, "experiment stopped (queued trials purged, workers told)");
  t.equal((await api.call("GET", "")).body.experiments.length, 2, "experiments listed");

  t.equal((await fetch(`${gw.url}/metrics`)).status, 200, "metrics");
  t.equal((await send(`${gw.url}/v1/models`, "GET")).status, 200, "models listed");
  t.equal((await fetch(`${gw.url}/v1/models/m`, { method: "DELETE" })).status, 200, "model deleted by the gateway");
  t.same(await stack.violations(), [], "no permission violation on the way");
});

/** Awaits `p`, which must fail with a permission violation; returns the denied subject. */
async function denied(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
  } catch (err) {
    return permissionViolation(err)?.subject ?? `not a permission violation: ${(err as Error).message}`;
  }
  return "allowed";
}

t.test("a worker may not delete or purge JOBS; a client may publish jobs and read its own inbox, nothing else", async (t) => {
  const stack = await authStack(t);
  const worker = await jetstreamManager(await connectAs(t, stack, "worker"));
  t.equal(await denied(worker.streams.delete(STREAMS.jobs)), "$JS.API.STREAM.DELETE.JOBS", "worker cannot delete JOBS");
  t.equal(await denied(worker.streams.purge(STREAMS.jobs)), "$JS.API.STREAM.PURGE.JOBS", "worker cannot purge JOBS");
  t.equal(await denied(worker.streams.delete("KV_models")), "$JS.API.STREAM.DELETE.KV_models", "worker cannot delete a bucket");
  t.equal(await denied(worker.streams.update(STREAMS.jobs, { max_msgs: 1 })), "$JS.API.STREAM.UPDATE.JOBS", "worker cannot change JOBS");
  t.equal((await stack.infra.jsm.streams.info(STREAMS.jobs)).config.name, STREAMS.jobs, "JOBS is still there");

  const nc = await connectAs(t, stack, "client");
  const jsm = await jetstreamManager(nc, { checkAPI: false });
  t.equal(await denied(jsm.streams.delete(STREAMS.results)), "$JS.API.STREAM.DELETE.RESULTS", "client cannot delete a stream");
  t.equal(await denied(jsm.streams.getMessage(STREAMS.results, { last_by_subj: subjects.result("x") })), "$JS.API.STREAM.MSG.GET.RESULTS", "client cannot read RESULTS");
  const kv = await new Kvm(nc).open("jobs");
  t.match(await denied(kv.get("x")), /^\$JS\.API\.(STREAM\.MSG|DIRECT)\.GET\.KV_jobs/, "client cannot read KV");
  t.equal(await denied(jetstream(nc).publish(subjects.result("forged"), "{}")), "jetshard.results.forged", "client cannot forge a result");
  const spy = nc.subscribe("_INBOX.gateway.>");
  const closed = await spy.closed;
  t.equal(permissionViolation(closed)?.subject, "_INBOX.gateway.>", "client cannot subscribe to the gateway's inbox");
  const other = nc.subscribe("_INBOX.>");
  t.equal(permissionViolation(await other.closed)?.subject, "_INBOX.>", "nor to every inbox");

  const violations = await waitFor("the server to log the denials", async () => ((await stack.violations()).length >= 8 ? stack.violations() : null));
  t.ok(violations.some((l) => /Publish Violation - User "worker", Subject "\$JS\.API\.STREAM\.DELETE\.JOBS"/.test(l)), "nats-server logs who was denied what");
});

t.test("a worker ignores a Jetshard-Reply subject outside _INBOX and still stores the result", async (t) => {
  const stack = await authStack(t);
  await addModel(stack.infra, "m", BYTES);
  await stack.worker(as("worker"));
  const admin = stack.infra.nc;
  const seen: string[] = [];
  const bad = ["jetshard.infer.other", "$JS.API.STREAM.DELETE.JOBS", "jetshard.results.spoofed", "_INBOX.*", "_INBOX"];
  for (const s of [...bad, "_INBOX.admin.ok.>"]) admin.subscribe(s, { callback: (_err, m) => void seen.push(m.subject) });
  await admin.flush();

  const publish = async (id: string, reply: string) => {
    const h = natsHeaders();
    h.set(HEADERS.reply, reply);
    h.set(HEADERS.result, "reply"); // the caller asks for the reply only: an ignored reply must not lose the result
    await stack.infra.js.publish(subjects.infer("m"), new TextEncoder().encode(JSON.stringify(JSON_INPUT)), { msgID: id, headers: h });
  };
  for (const [i, reply] of bad.entries()) await publish(`bad-${i}`, reply);
  await publish("good", "_INBOX.admin.ok.good");
  for (const id of [...bad.keys()].map((i) => `bad-${i}`)) {
    const stored = await waitFor(`result of ${id}`, () => stack.infra.jsm.streams.getMessage(STREAMS.results, { last_by_subj: subjects.result(id) }).catch(() => null));
    t.match(stored.json(), { model_name: "m", outputs: [{ shape: [1, 3] }] }, `${id}: result stored in RESULTS`);
  }
  await waitFor("the good reply", () => seen.includes("_INBOX.admin.ok.good"));
  await admin.flush();
  t.same(seen, ["_INBOX.admin.ok.good"], "only the _INBOX reply was published");
  t.same((await stack.violations()).filter((l) => /User "worker"/.test(l)), [], "the worker did not even try the others");
});

t.test("each role publishes its log records under its own service only; only admin reads LOGS", async (t) => {
  const stack = await authStack(t);
  const central = (name: string) => createLogger({ level: "info", name, central: true, destination: null });
  const cache = await mkdtemp(path.join(os.tmpdir(), "jetshard-test-cache-"));
  t.teardown(() => rm(cache, { recursive: true, force: true }));
  const built = [
    createGateway({ config: loadConfig({ ...stack.env, ...as("gateway") }), log: central("gateway") }),
    createWorker({ config: loadConfig({ ...stack.env, ...as("worker"), JETSHARD_CACHE_DIR: cache }), log: central("worker") }),
    createController({ config: loadConfig({ ...stack.env, ...as("controller") }), log: central("controller") }),
  ];
  for (const p of built) {
    await p.start();
    t.teardown(() => p.stop());
  }
  const read = async (nc: NatsConnection) => {
    const out: LogRecord[] = [];
    await readLogs(nc, {}, (r) => out.push(r));
    return out;
  };
  const seen = await waitFor("every service's start record", async () => {
    const rs = await read(stack.infra.nc);
    const msgs = new Set(rs.map((r) => `${r.service}: ${r.record.msg}`));
    return ["gateway: gateway listening", "worker: worker started", "controller: controller started"].every((m) => msgs.has(m)) ? rs : null;
  });
  t.ok(seen.every((r) => r.record.name === r.service), "each under its own service");
  t.same(await stack.violations(), [], "no violation publishing logs or binding LOGS");

  // a worker's connection publishing as the gateway is refused once, then keeps its records local
  const wnc = await connectAs(t, stack, "worker");
  const spoof = central("gateway");
  attachLogs(spoof, wnc);
  spoof.info("pretending");
  await waitFor("the refusal", () => !logPublisherOf(spoof)!.stats().connected);
  for (let i = 0; i < 50; i++) spoof.info({ i }, "still pretending");
  await wnc.flush();
  await new Promise((r) => setImmediate(r));
  await wnc.flush();
  const spoofed = (await stack.violations()).filter((l) => /User "worker", Subject "jetshard\.logs\.gateway\.info"/.test(l));
  t.equal(spoofed.length, 1, "one violation, no retry loop");

  t.match(await denied(read(wnc)), /^\$JS\.API\.CONSUMER\.CREATE\.LOGS/, "a worker may not read LOGS");
  t.equal(await denied(read(await connectAs(t, stack, "client"))), "$JS.API.INFO", "nor may a client");
});

t.test("a bind-only worker refuses to start before provisioning, with a clear error, and starts once a gateway provisioned", async (t) => {
  const nats = await startTestNats(t, { extra: `include "nats-auth.conf"`, copyFiles: [AUTH_FILE], env: { ...process.env, ...natsServerPasswordEnv(creds) } });
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "jetshard-test-"));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const env = { JETSHARD_NATS_URL: nats.url, JETSHARD_HOST: "127.0.0.1", JETSHARD_PORT: "0", JETSHARD_OPS_PORT: "0", JETSHARD_DATA_DIR: dataDir, JETSHARD_LOG_LEVEL: "silent" };
  const early = createWorker({ config: loadConfig({ ...env, ...as("worker") }), log: silentLogger() });
  t.teardown(() => early.stop());
  const err = await early.start().then(() => null, (e: unknown) => e);
  t.ok(err instanceof NatsPermissionError, `a NatsPermissionError: ${String(err)}`);
  t.match((err as Error).message, /stream JOBS does not exist and this NATS user may not create it \(denied: \$JS\.API\.STREAM\.CREATE\.JOBS\); provision it first/);

  const gw = createGateway({ config: loadConfig({ ...env, ...as("gateway") }), log: silentLogger() });
  await gw.start();
  t.teardown(() => gw.stop());
  const w = createWorker({ config: loadConfig({ ...env, ...as("worker") }), log: silentLogger() });
  await w.start();
  t.teardown(() => w.stop());
  t.equal((await fetch(`${gw.url}/v1/models/m`, { method: "PUT", body: BYTES })).status, 201);
  await waitFor("model ready", async () => (await fetch(`${gw.url}/v2/models/m/ready`)).ok);
  t.equal((await send(`${gw.url}/v2/models/m/infer`, "POST", JSON_INPUT)).status, 200, "the stack the gateway provisioned serves");
});

t.test("connection settings are checked before connecting", async (t) => {
  const cfg = (nats: Record<string, string>) => ({ natsServers: ["nats://127.0.0.1:1"], nats });
  await t.rejects(connectNats(cfg({ tlsCert: AUTH_FILE }), "x"), { name: "ConfigError", message: /JETSHARD_NATS_TLS_CERT is set without JETSHARD_NATS_TLS_KEY/ });
  await t.rejects(connectNats(cfg({ tlsCa: "/nonexistent/ca.pem" }), "x"), { name: "ConfigError", message: /JETSHARD_NATS_TLS_CA: file "\/nonexistent\/ca\.pem" does not exist/ });
  await t.rejects(connectNats(cfg({ user: "worker" }), "x"), { name: "ConfigError", message: /JETSHARD_NATS_USER is set without JETSHARD_NATS_PASSWORD/ });
  const w = createWorker({ config: loadConfig({ JETSHARD_NATS_URL: "nats://127.0.0.1:1", JETSHARD_NATS_TLS_CERT: AUTH_FILE }), log: silentLogger() });
  await t.rejects(w.start(), { name: "ConfigError" }, "a worker started with a certificate but no key fails at start");
});

t.test("a wrong password is refused with an error naming the user", async (t) => {
  const nats = await startTestNats(t, { extra: `include "nats-auth.conf"`, copyFiles: [AUTH_FILE], env: { ...process.env, ...natsServerPasswordEnv(creds) } });
  await t.rejects(connectNats({ natsServers: [nats.url], nats: { user: "worker", password: "pwrong" } }, "x"), { message: /refused user "worker"/ });
  await t.rejects(connectNats({ natsServers: [nats.url] }, "x"), { message: /refused no credentials/ });
});

const openssl = await promisify(execFile)("openssl", ["version"]).then(() => true, () => false);

t.test("TLS: a server with a private CA that verifies clients, reached with config's CA, cert and key", { skip: openssl ? false : "openssl is not installed: cannot make test certificates" }, async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "jetshard-tls-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const ssl = (...args: string[]) => promisify(execFile)("openssl", args, { cwd: dir });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  await ssl("req", "-x509", ...ec, "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "1", "-subj", "/CN=jetshard test CA");
  for (const [name, ext] of [
    ["server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"],
    ["client", "extendedKeyUsage=clientAuth"],
  ] as const) {
    await ssl("req", ...ec, "-keyout", `${name}-key.pem`, "-out", `${name}.csr`, "-subj", `/CN=jetshard ${name}`);
    await writeFile(path.join(dir, `${name}.ext`), ext);
    await ssl("x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial", "-out", `${name}.pem`, "-days", "1", "-extfile", `${name}.ext`);
  }
  const f = (n: string) => path.join(dir, n);
  const nats = await startTestNats(t, { extra: `tls { cert_file: "${f("server.pem")}", key_file: "${f("server-key.pem")}", ca_file: "${f("ca.pem")}", verify: true }` });
  const env = { JETSHARD_NATS_URL: nats.url, JETSHARD_NATS_TLS_CA: f("ca.pem"), JETSHARD_NATS_TLS_CERT: f("client.pem"), JETSHARD_NATS_TLS_KEY: f("client-key.pem") };
  const config = loadConfig(env);
  const nc = await connectNats(config, "tls-test");
  t.teardown(() => nc.close());
  const infra = await openInfra(nc, config);
  await infra.models.put("probe", "1");
  t.equal((await infra.models.get("probe"))?.string(), "1", "JetStream works over TLS");
  t.ok(nc.info?.tls_required, "the server required TLS");
  // the options connectNats uses, with a short handshake timeout: a refused client certificate surfaces as one
  const attempt = (e: Record<string, string>) => connect({ ...natsConnectionOptions(loadConfig(e), "tls-test"), timeout: 3_000 }).then((c) => c.close());
  await t.rejects(attempt({ ...env, JETSHARD_NATS_TLS_CERT: "", JETSHARD_NATS_TLS_KEY: "" }), "a client without a certificate is refused");
  await t.rejects(attempt({ JETSHARD_NATS_URL: nats.url }), "a client that does not trust the CA is refused");
});
