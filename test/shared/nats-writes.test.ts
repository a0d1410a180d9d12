import t from "tap";
import { connectNats } from "#shared/nats.js";
import { startTestNats } from "../helpers/nats.js";

const nats = await startTestNats(t);

/** Counts the connection's socket writes (nats.js hands each flushed buffer to its transport's `send`). */
function countWrites(nc: object): { n: number } {
  const transport = (nc as { protocol: { transport: { send(d: Uint8Array): void } } }).protocol.transport;
  const send = transport.send.bind(transport);
  const count = { n: 0 };
  transport.send = (d) => {
    count.n++;
    send(d);
  };
  return count;
}

t.test("what one turn of the event loop publishes goes out as one socket write, and all of it arrives", async (t) => {
  const pub = await connectNats({ natsServers: [nats.url] }, "test-pub");
  const sub = await connectNats({ natsServers: [nats.url] }, "test-sub");
  t.teardown(async () => {
    await pub.close();
    await sub.close();
  });
  const got: string[] = [];
  const s = sub.subscribe("w.>", { callback: (_e, m) => void got.push(m.subject) });
  await sub.flush();
  const writes = countWrites(pub);
  // 50 publishes, each after an await: nats.js alone flushed per microtask checkpoint, i.e. many writes
  await new Promise<void>((resolve) =>
    setImmediate(async () => {
      for (let i = 0; i < 50; i++) {
        pub.publish(`w.${i}`);
        await Promise.resolve();
        await Promise.resolve();
      }
      resolve();
    }),
  );
  await pub.flush();
  t.ok(writes.n <= 2, `50 publishes in one turn took ${writes.n} write(s) (the flush's PING may take one more)`);
  while (got.length < 50) await new Promise((r) => setTimeout(r, 10));
  t.same(got, Array.from({ length: 50 }, (_, i) => `w.${i}`), "every message, in order");
  s.unsubscribe();
});

t.test("a publish right before close() is still sent", async (t) => {
  const sub = await connectNats({ natsServers: [nats.url] }, "test-sub");
  t.teardown(() => sub.close());
  const got: string[] = [];
  sub.subscribe("last", { callback: (_e, m) => void got.push(m.string()) });
  await sub.flush();
  const pub = await connectNats({ natsServers: [nats.url] }, "test-pub");
  pub.publish("last", "bye");
  await pub.close();
  const until = Date.now() + 5000;
  while (got.length === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
  t.same(got, ["bye"]);
});

t.test("requests still get their replies", async (t) => {
  const nc = await connectNats({ natsServers: [nats.url] }, "test-req");
  t.teardown(() => nc.close());
  nc.subscribe("echo", { callback: (_e, m) => void m.respond(m.data) });
  const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => nc.request("echo", String(i), { timeout: 5000 })));
  t.same(replies.map((r) => r.string()), Array.from({ length: 20 }, (_, i) => String(i)));
});
