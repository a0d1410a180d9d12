/**
 * Replicated JetStream on a real 3-node nats-server cluster (startNatsCluster): JETSHARD_REPLICAS reaches every
 * stream, bucket and object store; streams created with fewer replicas are reported and can be raised; a single
 * server refuses replicas with a ConfigError; the errors a cluster answers while it loses a node map to 503.
 */
import t from "tap";
import { connect } from "@nats-io/transport-node";
import { JetStreamApiError, jetstream, jetstreamManager, AckPolicy } from "@nats-io/jetstream";
import { openApiKeys } from "#shared/auth.js";
import { ConfigError } from "#shared/config.js";
import { JS_TRANSIENT_CODES, fromNatsError, retryTransient } from "#shared/errors.js";
import { createLogger } from "#shared/log.js";
import { INFRA_STREAMS, openInfra, raiseReplicas, replicaShortfall } from "#shared/nats.js";
import { STREAMS } from "#shared/subjects.js";
import { startTestCluster } from "../helpers/cluster.js";
import { startTestNats } from "../helpers/nats.js";
import { waitFor } from "../helpers/stack.js";

const INFRA = { workerTtlMs: 3000, resultRetentionMs: 600_000 };

t.test("openInfra with replicas 3 creates every stream, bucket and object store with 3 replicas", async (t) => {
  const cluster = await startTestCluster(t);
  const nc = await connect({ servers: cluster.urls });
  t.teardown(() => nc.close());
  const infra = await openInfra(nc, { ...INFRA, replicas: 3 });
  await openApiKeys(nc, infra.replicas);
  // LOGS only exists with central logs on
  for (const name of INFRA_STREAMS.filter((s) => s !== STREAMS.logs)) {
    const info = await infra.jsm.streams.info(name);
    t.equal(info.config.num_replicas, 3, `${name}: 3 replicas`);
    t.equal(info.cluster?.replicas?.length, 2, `${name}: placed on the two other servers too`);
  }
  t.same(await replicaShortfall(infra.jsm, 3), [], "nothing short of 3 replicas");
});

t.test("streams made with 1 replica: openInfra warns with the fix, raiseReplicas takes them to 3, consumers follow", async (t) => {
  const cluster = await startTestCluster(t);
  const nc = await connect({ servers: cluster.urls });
  t.teardown(() => nc.close());
  const before = await openInfra(nc, INFRA);
  t.equal(before.replicas, 1, "replicas default to 1");
  await before.jsm.consumers.add(STREAMS.jobs, { durable_name: "probe", ack_policy: AckPolicy.Explicit, filter_subject: "jetshard.infer.probe" });

  const lines: string[] = [];
  const log = createLogger({ level: "warn", destination: { write: (s: string) => void lines.push(s) } });
  const infra = await openInfra(nc, { ...INFRA, replicas: 3, log });
  t.equal(infra.replicas, 3);
  const made = INFRA_STREAMS.filter((s) => s !== "KV_apikeys" && s !== STREAMS.logs).sort();
  const warned = lines.map((l) => JSON.parse(l) as { stream: string; msg: string });
  t.same(warned.map((w) => w.stream).sort(), made, "one warning per existing stream (apikeys and LOGS were never made)");
  t.match(warned[0]!.msg, /JETSHARD_REPLICAS=3.*nats stream edit \S+ --replicas 3/, "the warning says what to run");
  t.equal((await infra.jsm.streams.info(STREAMS.jobs)).config.num_replicas, 1, "openInfra itself changes nothing");

  const raised = await raiseReplicas(infra.jsm, 3);
  t.same(raised.sort(), made, "every stream raised");
  t.same(await replicaShortfall(infra.jsm, 3), [], "none short any more");
  t.same(await raiseReplicas(infra.jsm, 3), [], "raising again is a no-op");
  t.same(await raiseReplicas(infra.jsm, 1), [], "it never lowers");
  // the consumer's new peers join a moment after the stream's
  await waitFor("the consumer on 3 servers", async () => (await infra.jsm.consumers.info(STREAMS.jobs, "probe")).cluster?.replicas?.length === 2, 20_000);
  t.pass("the stream's durable consumer is replicated with it");
});

t.test("JETSHARD_REPLICAS above 1 against a single server fails at start with a ConfigError naming the setting", async (t) => {
  const nats = await startTestNats(t);
  const nc = await connect({ servers: nats.url });
  t.teardown(() => nc.close());
  const err = await openInfra(nc, { ...INFRA, replicas: 3 }).catch((e: unknown) => e);
  t.ok(err instanceof ConfigError, `a ConfigError (${(err as Error).message})`);
  t.match((err as Error).message, /JETSHARD_REPLICAS=3.*single server/);
});

t.test("more replicas than servers fails with a ConfigError naming the setting", async (t) => {
  const cluster = await startTestCluster(t);
  const nc = await connect({ servers: cluster.urls });
  t.teardown(() => nc.close());
  const err = await openInfra(nc, { ...INFRA, replicas: 5 }).catch((e: unknown) => e);
  t.ok(err instanceof ConfigError, `a ConfigError (${(err as Error).message})`);
  t.match((err as Error).message, /JETSHARD_REPLICAS=5/);
});

t.test("what a cluster answers while it loses a server maps to 503, decided by class and code", async (t) => {
  const cluster = await startTestCluster(t);
  const nc = await connect({ servers: cluster.urls });
  t.teardown(() => nc.close());
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  // a stream whose only replica is on a server that is gone: nobody answers its subject
  await jsm.streams.add({ name: "LONE", subjects: ["lone"], num_replicas: 1 });
  const placed = (await jsm.streams.info("LONE")).cluster?.leader;
  await cluster.nodes.find((n) => n.name === placed)!.kill();
  const gone = await js.publish("lone", "x", { timeout: 2000 }).catch((e: unknown) => e);
  t.equal(fromNatsError(gone)?.code, "NATS_UNAVAILABLE", `a publish nobody answers (${(gone as Error).constructor.name})`);
  t.equal(fromNatsError(gone)?.status, 503);

  for (const code of JS_TRANSIENT_CODES) {
    const e = new JetStreamApiError({ code: 500, err_code: code, description: "cluster trouble" });
    t.equal(fromNatsError(e)?.code, "NATS_UNAVAILABLE", `JetStream API error ${code} (status 500) is transient`);
  }
  t.equal(fromNatsError(new JetStreamApiError({ code: 400, err_code: 10003, description: "bad request" })), null, "a bad request is not an outage");
  t.equal(fromNatsError(new JetStreamApiError({ code: 400, err_code: 10071, description: "wrong last sequence: 3" }))?.code, "CONFLICT");
});

t.test("retryTransient rides out the election after the stream leader is SIGKILLed; the client reconnects by itself", async (t) => {
  const cluster = await startTestCluster(t);
  const nc = await connect({ servers: cluster.urls, maxReconnectAttempts: -1, reconnectTimeWait: 250 });
  t.teardown(() => nc.close());
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  await jsm.streams.add({ name: "R3", subjects: ["r3.>"], num_replicas: 3 });
  await js.publish("r3.a", "1", { msgID: "a" });
  const leader = (await jsm.streams.info("R3")).cluster!.leader!;
  await cluster.nodes.find((n) => n.name === leader)!.kill();
  const ack = await retryTransient(() => js.publish("r3.b", "2", { msgID: "b" }), Date.now() + 30_000);
  t.equal(ack.seq, 2, "the publish went through once a new leader was elected");
  const again = await retryTransient(() => js.publish("r3.b", "2", { msgID: "b" }), Date.now() + 30_000);
  t.ok(again.duplicate, "a retried publish with the same id is deduplicated");
  const info = await jsm.streams.info("R3");
  t.not(info.cluster?.leader, leader, "a surviving server leads now");
  t.equal(info.state.messages, 2, "no message lost");

  const victim = cluster.nodes.find((n) => n.name === leader)!;
  await victim.restart();
  await cluster.waitForCurrent(30_000);
  const direct = await connect({ servers: victim.url });
  t.teardown(() => direct.close());
  t.equal((await (await jetstreamManager(direct)).streams.info("R3")).state.messages, 2, "the restarted server is back on its port with the stream caught up");
});
