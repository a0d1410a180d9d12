import t from "tap";
import * as ort from "onnxruntime-node";
import { AckPolicy } from "@nats-io/jetstream";
import { addModel, fetchShard, getModel } from "#shared/model-repo.js";
import { encodeModel, mlp } from "#shared/onnx/builder.js";
import { STREAMS, consumerName, highConsumerName, subjects } from "#shared/subjects.js";
import { startStack, waitFor } from "../helpers/stack.js";

const post = (url: string, body: unknown) =>
  fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

/** Messages the JOBS stream holds on exactly `subject`. */
async function queued(stack: Awaited<ReturnType<typeof startStack>>, subject: string): Promise<number> {
  const info = await stack.infra.jsm.streams.info(STREAMS.jobs, { subjects_filter: subject });
  return info.state.subjects?.[subject] ?? 0;
}

t.test("deleting a model removes its high-priority consumer and the high-priority jobs queued for it", async (t) => {
  const stack = await startStack(t);
  const gw = await stack.gateway();
  t.equal((await fetch(`${gw.url}/v1/models/hp`, { method: "PUT", body: encodeModel(mlp({ layers: [2, 3], seed: 1 })) })).status, 201);
  // the consumers a worker serving "hp" makes, without a worker taking the jobs off them
  for (const [durable, filter] of [
    [consumerName("hp"), subjects.infer("hp")],
    [highConsumerName("hp"), subjects.inferHigh("hp")],
  ] as const) {
    await stack.infra.jsm.consumers.add(STREAMS.jobs, { durable_name: durable, filter_subject: filter, ack_policy: AckPolicy.Explicit });
  }
  for (let i = 0; i < 3; i++) {
    await stack.infra.js.publish(subjects.inferHigh("hp"), new Uint8Array([i]));
    await stack.infra.js.publish(subjects.infer("hp"), new Uint8Array([i]));
  }
  t.equal(await queued(stack, subjects.inferHigh("hp")), 3, "high-priority jobs queued before the delete");

  t.equal((await fetch(`${gw.url}/v1/models/hp`, { method: "DELETE" })).status, 200);
  t.equal(await queued(stack, subjects.inferHigh("hp")), 0, "high-priority jobs purged");
  t.equal(await queued(stack, subjects.infer("hp")), 0, "normal jobs purged");
  await t.rejects(stack.infra.jsm.consumers.info(STREAMS.jobs, highConsumerName("hp")), "high-priority consumer removed");
  await t.rejects(stack.infra.jsm.consumers.info(STREAMS.jobs, consumerName("hp")), "shard consumer removed");
});

t.test("concurrent uploads of one model each get a version whose shards match their digest and infer correctly", async (t) => {
  const stack = await startStack(t);
  const gw = await stack.gateway();
  const rounds = 4;
  // same inputs and outputs, different weights: a version holding the other upload's bytes gives other numbers
  const uploads = new Map<string, Uint8Array>();
  const added: Array<{ version: number; digest: string }> = [];
  for (let r = 0; r < rounds; r++) {
    const pair = [encodeModel(mlp({ layers: [4, 8, 3], seed: 10 + 2 * r })), encodeModel(mlp({ layers: [4, 8, 3], seed: 11 + 2 * r }))];
    const shards = r % 2 === 0 ? undefined : 2;
    const mvs = await Promise.all(pair.map((bytes) => addModel(stack.infra, "race", bytes, { shards })));
    pair.forEach((b, i) => uploads.set(mvs[i]!.digest, b));
    added.push(...mvs.map((mv) => ({ version: mv.version, digest: mv.digest })));
  }
  const rec = (await getModel(stack.infra, "race"))!;
  t.same(rec.versions.map((v) => v.version).sort((a, b) => a - b), Array.from({ length: 2 * rounds }, (_, i) => i + 1), "one version per upload");
  t.same(new Set(added.map((a) => a.version)).size, 2 * rounds, "every upload got its own version");

  for (const v of rec.versions) {
    for (const s of v.shards) {
      await t.resolves(fetchShard(stack.infra, s), `version ${v.version} shard ${s.index}: object ${s.object} matches its digest`);
    }
  }

  await stack.worker();
  const x = [0.5, -1, 2, 0.25];
  for (const v of rec.versions) {
    await waitFor(`version ${v.version} ready`, async () => (await fetch(`${gw.url}/v2/models/race/versions/${v.version}/ready`)).ok, 20_000);
    const session = await ort.InferenceSession.create(uploads.get(v.digest)!);
    const want = (await session.run({ input: new ort.Tensor("float32", Float32Array.from(x), [1, 4]) }))[session.outputNames[0]!]!;
    await session.release();
    const res = await post(`${gw.url}/v2/models/race/versions/${v.version}/infer`, { inputs: [{ name: "input", datatype: "FP32", shape: [1, 4], data: x }] });
    t.equal(res.status, 200, `version ${v.version} infers`);
    const got = ((await res.json()) as any).outputs[0].data as number[];
    t.ok(
      got.length === want.data.length && got.every((g, i) => Math.abs(g - Number(want.data[i])) < 1e-4),
      `version ${v.version} computes what its own upload computes (${got} vs ${Array.from(want.data as Float32Array)})`,
    );
  }
});
