import t from "tap";
import { pickShards, serveFilter, type PeerView, type ShardRef } from "../../services/worker/placement.js";

const shards: ShardRef[] = [
  { model: "big", index: 0, bytes: 40 },
  { model: "big", index: 1, bytes: 40 },
  { model: "big", index: 2, bytes: 40 },
  { model: "small", index: 0, bytes: 5 },
];
const auto = (id: string, budgetBytes = 50): PeerView => ({ id, auto: true, budgetBytes, shards: [] });
const keys = (r: ShardRef[]) => r.map((s) => `${s.model}:${s.index}`).sort();

t.test("everything that fits the budget is served", async (t) => {
  t.same(keys(pickShards({ shards, peers: [], selfId: "a", budgetBytes: 1000, filter: null })), ["big:0", "big:1", "big:2", "small:0"]);
});

t.test("named shards win over placement", async (t) => {
  const f = serveFilter(["big:1", "small"]);
  t.same(keys(pickShards({ shards, peers: [], selfId: "a", budgetBytes: 1, filter: f })), ["big:1", "small:0"]);
  t.throws(() => serveFilter(["big:x"]), /not "model" or "model:shard"/);
});

t.test("workers that see the same membership split the shards between them and cover all", async (t) => {
  const ids = ["w1", "w2", "w3"];
  const picks = ids.map((id) => pickShards({ shards, peers: ids.filter((x) => x !== id).map((x) => auto(x)), selfId: id, budgetBytes: 50, filter: null }));
  const covered = new Set(picks.flat().map((s) => `${s.model}:${s.index}`));
  t.same([...covered].sort(), ["big:0", "big:1", "big:2", "small:0"], "every shard has a replica");
  for (const [i, p] of picks.entries()) t.ok(p.reduce((a, s) => a + s.bytes, 0) <= 50, `${ids[i]} stays within budget`);
  // the same view gives the same answer: no flapping on heartbeats
  const again = pickShards({ shards, peers: [auto("w2"), auto("w3")], selfId: "w1", budgetBytes: 50, filter: null });
  t.same(keys(again), keys(picks[0]!));
});

t.test("shards held by fixed workers are placed last", async (t) => {
  const fixed: PeerView = { id: "f", auto: false, budgetBytes: 0, shards: ["big:0", "big:1"] };
  t.same(keys(pickShards({ shards, peers: [fixed], selfId: "a", budgetBytes: 45, filter: null })), ["big:2", "small:0"]);
});
