import t from "tap";
import { Kvm } from "@nats-io/kv";
import { connectNats } from "#shared/nats.js";
import { Lease } from "../../services/controller/lease.js";
import { startTestNats } from "../helpers/nats.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test("controller leases: one winner, no takeover while renewed, takeover after expiry, the loser finds out", async (t) => {
  const nats = await startTestNats(t);
  const nc = await connectNats({ natsServers: [nats.url] }, "lease-test");
  t.teardown(() => nc.close());
  const kv = await new Kvm(nc).create("experiments-lease-test");
  const a = new Lease(kv, "exp1", "A", 600);
  const b = new Lease(kv, "exp1", "B", 600);

  const [wa, wb] = await Promise.all([a.acquire(), b.acquire()]);
  t.ok(wa !== wb, `exactly one of two racing controllers wins (A ${wa}, B ${wb})`);
  const [holder, other] = wa ? [a, b] : [b, a];
  t.ok(holder.valid);
  for (let i = 0; i < 4; i++) {
    await sleep(200);
    t.ok(await holder.renew(), "renewal succeeds");
    t.notOk(await other.acquire(), "no takeover of a renewed lease");
  }
  t.equal((await other.current())?.holder, holder.holder);

  await sleep(700); // the holder stops renewing (as if SIGKILLed)
  t.ok(await other.acquire(), "taken over once expired");
  t.notOk(await holder.renew(), "the old holder's renewal fails: it knows it lost the lease");
  t.notOk(holder.valid);

  await other.release();
  t.ok(await holder.acquire(), "a released lease is free at once");
  await other.release(); // not the holder any more: no effect
  t.equal((await holder.current())?.holder, holder.holder, "releasing someone else's lease does nothing");
});
