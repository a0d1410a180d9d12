import type { Test } from "tap";
import * as ort from "onnxruntime-node";
import { JetshardClient } from "#shared/client.js";
import { WorkerInfoSchema } from "#shared/wire.js";
import { slowModel } from "./models.js";
import { startStack, waitFor } from "./stack.js";

/**
 * A worker process takes a long sync request and is SIGKILLed mid-run; a worker started after the crash must
 * answer it, correctly. `direct`: the request goes straight to the worker over core NATS (else through JetStream).
 */
export async function sigkillMidRequest(t: Test, direct: boolean): Promise<void> {
  const stack = await startStack(t, { JETSHARD_ACK_WAIT_MS: "2000" });
  const bytes = slowModel(1024, 480);
  await fetch(`${(await stack.gateway()).url}/v1/models/slow`, { method: "PUT", body: bytes });
  const victim = await stack.workerProcess();
  const client = new JetshardClient(stack.infra.nc);
  t.teardown(() => client.close());

  const rows = 64;
  const data = Float32Array.from({ length: rows * 1024 }, (_, i) => Math.cos(i));
  const pending = client.infer("slow", [{ name: "input", datatype: "FP32", shape: [rows, 1024], data }], { timeoutMs: 120_000, direct });
  const ids = async () => {
    const all: string[] = [];
    for await (const k of await stack.infra.workers.keys()) all.push(k);
    return all;
  };
  const victimId = await waitFor("the victim registered", async () => (await ids())[0]);
  // wait until the victim reports the job in flight, then kill it mid-run
  await waitFor("job in flight on the victim", async () => {
    const e = await stack.infra.workers.get(victimId);
    return e && WorkerInfoSchema.parse(e.json()).inFlight > 0;
  }, 20_000, 20);
  victim.kill("SIGKILL");
  await new Promise((r) => victim.once("exit", r));
  // in a process of its own: an in-process worker's ORT run would block this process's NATS connection too
  await stack.workerProcess();
  const rescuerId = await waitFor("the rescuer registered", async () => (await ids()).find((id) => id !== victimId));

  const res = await pending;
  t.equal(res.worker, rescuerId, "finished by the worker started after the crash");
  const s = await ort.InferenceSession.create(bytes);
  const want = (await s.run({ input: new ort.Tensor("float32", data, [rows, 1024]) })).output!.data as Float32Array;
  t.same(res.outputs[0]!.data, want, "result is correct");
}
