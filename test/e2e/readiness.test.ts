import t from "tap";
import { startStack, waitFor } from "../helpers/stack.js";

t.test("readiness is 503 while the gateway is disconnected from NATS and 200 again once it reconnects", async (t) => {
  const stack = await startStack(t);
  const gw = await stack.gateway();
  await stack.worker();
  const ready = async () => {
    const res = await fetch(`${gw.url}/v2/health/ready`);
    return { status: res.status, body: (await res.json()) as any };
  };
  await waitFor("ready with a live worker", async () => (await ready()).status === 200);

  await stack.nats.kill();
  const down = await waitFor("readiness to drop", async () => {
    const r = await ready();
    return r.status === 503 ? r : null;
  }, 2_000);
  t.match(down.body, { ready: false, error: /not connected to NATS/ }, "says why");
  t.equal((await fetch(`${gw.url}/v2/health/live`)).status, 200, "liveness does not depend on NATS");

  await stack.nats.restart();
  await waitFor("readiness to return", async () => (await ready()).status === 200, 15_000);
  t.match((await ready()).body, { ready: true });
});
