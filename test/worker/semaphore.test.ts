import t from "tap";
import { Semaphore } from "../../services/worker/semaphore.js";

const order = () => {
  const seen: string[] = [];
  return { seen, take: (s: Semaphore, name: string, prio: "high" | "normal") => s.acquire(prio).then(() => seen.push(name)) };
};
const tick = () => new Promise((r) => setImmediate(r));

t.test("high-priority waiters are served before normal ones", async (t) => {
  const s = new Semaphore(1);
  const { seen, take } = order();
  await s.acquire();
  void take(s, "n1", "normal");
  void take(s, "h1", "high");
  s.release();
  await tick();
  t.same(seen, ["h1"]);
  s.release();
  await tick();
  t.same(seen, ["h1", "n1"]);
});

t.test("a slot freed while a high-priority job is announced waits for it, not for a normal waiter", async (t) => {
  const s = new Semaphore(1);
  const { seen, take } = order();
  await s.acquire();
  const arrived = s.expect();
  void take(s, "n1", "normal");
  t.notOk(s.tryAcquire("normal"), "a normal job cannot jump in while a high one is on its way");
  s.release();
  await tick();
  t.same(seen, [], "the freed slot is kept");
  void take(s, "h1", "high");
  arrived();
  await tick();
  t.same(seen, ["h1"], "the announced job took it");
  s.release();
  await tick();
  t.same(seen, ["h1", "n1"]);
});

t.test("an announced job that gives up hands the kept slot to the normal waiters", async (t) => {
  const s = new Semaphore(2);
  const { seen, take } = order();
  const gaveUp = s.expect();
  void take(s, "n1", "normal");
  void take(s, "n2", "normal");
  await tick();
  t.same(seen, [], "both slots kept");
  gaveUp();
  gaveUp();
  await tick();
  t.same(seen, ["n1", "n2"]);
  t.equal(s.busy, 2);
  s.release();
  s.release();
  t.equal(s.busy, 0, "calling done twice counted once");
});
