import t from "tap";
import { addModel } from "#shared/model-repo.js";
import { slowModel } from "../helpers/models.js";
import { startStack, waitFor } from "../helpers/stack.js";

t.test("a sync caller fails fast with 503 when the gateway's NATS connection drops mid-request", async (t) => {
  const stack = await startStack(t);
  const gw = await stack.gateway();
  await addModel(stack.infra, "slow", slowModel(1024, 240));
  const w = await stack.worker();
  await waitFor("model ready", async () => (await fetch(`${gw.url}/v2/models/slow/ready`)).ok, 20_000);
  const body = JSON.stringify({ inputs: [{ name: "input", shape: [64, 1024], datatype: "FP32", data: Array(64 * 1024).fill(0.01) }], parameters: { timeout: "60s" } });
  const pending = fetch(`${gw.url}/v2/models/slow/infer`, { method: "POST", headers: { "content-type": "application/json" }, body });
  await waitFor("request in flight", () => w.info().inFlight > 0, 20_000, 5);
  const killedAt = Date.now();
  await stack.nats.kill();
  const res = await pending;
  const waited = Date.now() - killedAt;
  t.equal(res.status, 503, "the caller gets 503");
  t.match(await res.json(), { error: /NATS/ });
  t.ok(waited < 10_000, `answered ${waited} ms after the drop, not after its 60 s timeout`);
  const again = await fetch(`${gw.url}/v2/models/slow/infer`, { method: "POST", headers: { "content-type": "application/json" }, body });
  t.equal(again.status, 503, "a request sent while disconnected is refused at once");
  // back on the same store, so every piece reconnects and the stack shuts down as usual
  await stack.nats.restart();
  await waitFor("gateway reconnected", async () => (await fetch(`${gw.url}/v2/models/slow/ready`)).ok, 30_000, 100);
});
