/**
 * Which shards a worker serves. Named ones (JETSHARD_SERVE="m" for every shard of m, "m:1" for one) win;
 * otherwise the worker serves everything when it all fits its memory budget, and else picks the shards with
 * the fewest live replicas elsewhere until the budget is used.
 */
import type { ModelRecord } from "#shared/wire.js";

export interface ShardRef {
  model: string;
  index: number;
  /** Bytes of the largest version of this shard (what it costs to load). */
  bytes: number;
}

export const shardKey = (model: string, index: number) => `${model}:${index}`;

/** Every (model, shard index) any version of any model has. */
export function allShards(models: readonly ModelRecord[]): ShardRef[] {
  const out = new Map<string, ShardRef>();
  for (const rec of models) {
    for (const v of rec.versions) {
      for (const s of v.shards) {
        const k = shardKey(rec.name, s.index);
        const prev = out.get(k);
        if (!prev || prev.bytes < s.bytes) out.set(k, { model: rec.name, index: s.index, bytes: s.bytes });
      }
    }
  }
  return [...out.values()].sort((a, b) => a.model.localeCompare(b.model) || a.index - b.index);
}

/** Parses JETSHARD_SERVE entries ("m" or "m:2"); returns a predicate over shards. Throws on a bad entry. */
export function serveFilter(entries: readonly string[]): ((s: { model: string; index: number }) => boolean) | null {
  if (entries.length === 0) return null;
  const whole = new Set<string>();
  const exact = new Set<string>();
  for (const e of entries) {
    const m = /^([A-Za-z0-9][A-Za-z0-9_-]*)(?::(\d+))?$/.exec(e);
    if (!m) throw new Error(`JETSHARD_SERVE: "${e}" is not "model" or "model:shard"`);
    if (m[2] === undefined) whole.add(m[1]!);
    else exact.add(shardKey(m[1]!, Number(m[2])));
  }
  return (s) => whole.has(s.model) || exact.has(shardKey(s.model, s.index));
}

export interface PeerView {
  id: string;
  /** Auto-placed workers take part in the assignment; fixed ones (JETSHARD_SERVE) only count as replicas. */
  auto: boolean;
  budgetBytes: number;
  /** Shard keys a fixed worker serves. */
  shards: readonly string[];
}

/**
 * Picks the shards worker `selfId` serves. Named shards (filter) win. Otherwise, when everything fits the
 * budget, every shard. Otherwise every auto-placed worker computes the same deterministic assignment from the
 * same view (live workers sorted by id): shards with the fewest fixed replicas first, heaviest first, each
 * handed round-robin to the next worker with room; then spare room adds replicas. Because the assignment is a
 * function of membership, workers agree without talking and do not flap when heartbeats arrive.
 */
export function pickShards(opts: {
  shards: readonly ShardRef[];
  peers: readonly PeerView[];
  selfId: string;
  budgetBytes: number;
  filter: ((s: ShardRef) => boolean) | null;
}): ShardRef[] {
  if (opts.filter) return opts.shards.filter(opts.filter);
  const total = opts.shards.reduce((a, s) => a + s.bytes, 0);
  if (total <= opts.budgetBytes) return [...opts.shards];
  const fixed = new Map<string, number>();
  for (const p of opts.peers) if (!p.auto) for (const k of p.shards) fixed.set(k, (fixed.get(k) ?? 0) + 1);
  const workers = [...opts.peers.filter((p) => p.auto && p.id !== opts.selfId), { id: opts.selfId, auto: true, budgetBytes: opts.budgetBytes, shards: [] }]
    .sort((a, b) => a.id.localeCompare(b.id))
    .map((w) => ({ id: w.id, room: w.budgetBytes, got: [] as ShardRef[] }));
  const order = [...opts.shards].sort(
    (a, b) => (fixed.get(shardKey(a.model, a.index)) ?? 0) - (fixed.get(shardKey(b.model, b.index)) ?? 0) || b.bytes - a.bytes || shardKey(a.model, a.index).localeCompare(shardKey(b.model, b.index)),
  );
  let cursor = 0;
  const place = (s: ShardRef, exclude: Set<string>) => {
    for (let tries = 0; tries < workers.length; tries++) {
      const w = workers[cursor % workers.length]!;
      cursor++;
      if (exclude.has(w.id) || w.room < s.bytes) continue;
      w.room -= s.bytes;
      w.got.push(s);
      exclude.add(w.id);
      return true;
    }
    return false;
  };
  const holders = new Map(order.map((s) => [shardKey(s.model, s.index), new Set<string>()]));
  // first pass: one replica of everything that has none; then add replicas while anyone has room
  for (const s of order) if ((fixed.get(shardKey(s.model, s.index)) ?? 0) === 0) place(s, holders.get(shardKey(s.model, s.index))!);
  for (let round = 0; round < workers.length; round++) {
    let placed = false;
    for (const s of order) placed = place(s, holders.get(shardKey(s.model, s.index))!) || placed;
    if (!placed) break;
  }
  return workers.find((w) => w.id === opts.selfId)!.got;
}
