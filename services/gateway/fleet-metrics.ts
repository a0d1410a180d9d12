/**
 * What the gateway's /metrics reads from JetStream when it is scraped: consumer lag per model shard and of the NAS
 * trials consumer (consumer info), and dead letters per model (the DLQ stream's per-subject counts). Each read is
 * cached for about a second and bounded (at most MAX_CONSUMERS consumers, MAX_DLQ_MODELS models), so a scrape storm
 * costs JetStream at most a few requests a second.
 */
import { parseJobSubject } from "#shared/envelope.js";
import type { KvMirror } from "#shared/kv-mirror.js";
import { cachedRead, type FleetReads, type ShardLag } from "#shared/metrics.js";
import { pickVersion } from "#shared/model-repo.js";
import { TRIALS_CONSUMER } from "#shared/nas/wire.js";
import { mapLimit, type Infra } from "#shared/nats.js";
import { STREAMS, consumerName, highConsumerName, subjects } from "#shared/subjects.js";
import type { ModelRecord } from "#shared/wire.js";

/** Most consumers read per scrape (models × shards, high-priority consumers included). */
export const MAX_CONSUMERS = 256;
/** Most models the dead-letter gauge lists; the rest are summed under model="_other". */
export const MAX_DLQ_MODELS = 256;
/** Scrapes within this many ms share one read. */
export const FLEET_CACHE_MS = 1_000;

export interface FleetDeps {
  infra: Infra;
  models: KvMirror<ModelRecord>;
  /** Async jobs by state (the dashboard's sampler counts them from its watch on the jobs bucket). */
  jobs: () => Record<string, number>;
  workersLive: () => number;
}

/** The gateway's scrape-time reads of the fleet. */
export function fleetReads({ infra, models, jobs, workersLive }: FleetDeps): FleetReads {
  const info = (name: string) =>
    infra.jsm.consumers.info(STREAMS.jobs, name).then(
      (ci) => ({ pending: ci.num_pending, ackPending: ci.num_ack_pending }),
      // not created yet (no worker served the shard) or deleted with its model: no series
      () => null,
    );

  const consumers = cachedRead(
    FLEET_CACHE_MS,
    async () => {
      const wanted: Array<{ model: string; shard: number; names: string[] }> = [];
      let budget = MAX_CONSUMERS;
      for (const rec of models.values().sort((a, b) => a.name.localeCompare(b.name))) {
        for (const s of pickVersion(rec).shards) {
          const names = s.index === 0 ? [consumerName(rec.name, 0), highConsumerName(rec.name)] : [consumerName(rec.name, s.index)];
          if (names.length > budget) break;
          budget -= names.length;
          wanted.push({ model: rec.name, shard: s.index, names });
        }
      }
      const got = await mapLimit(wanted, 8, async (w) => (await Promise.all(w.names.map(info))).filter((x) => x !== null));
      const shards: ShardLag[] = [];
      wanted.forEach((w, i) => {
        const infos = got[i]!;
        if (infos.length) shards.push({ model: w.model, shard: w.shard, pending: infos.reduce((a, b) => a + b.pending, 0), ackPending: infos.reduce((a, b) => a + b.ackPending, 0) });
      });
      const trials = await info(TRIALS_CONSUMER);
      return trials ? { shards, trials } : { shards };
    },
    { shards: [] },
  );

  const deadLetters = cachedRead(
    FLEET_CACHE_MS,
    async () => {
      const si = await infra.jsm.streams.info(STREAMS.dlq, { subjects_filter: subjects.dlqAll });
      const perModel: Record<string, number> = {};
      let trials = 0;
      let others = 0;
      for (const [subject, n] of Object.entries(si.state.subjects ?? {})) {
        // jetshard.dlq.<the job's subject without "jetshard.">
        const s = parseJobSubject(`${subjects.root}.${subject.split(".").slice(2).join(".")}`);
        if (!s) continue;
        if (s.kind === "nas") trials += n;
        else if (perModel[s.model] !== undefined || Object.keys(perModel).length < MAX_DLQ_MODELS) perModel[s.model] = (perModel[s.model] ?? 0) + n;
        else others += n;
      }
      if (others) perModel._other = others;
      return { models: perModel, trials };
    },
    { models: {}, trials: 0 },
  );

  return {
    consumers,
    deadLetters,
    jobs: async () => jobs(),
    workersLive,
    models: () => models.values().length,
  };
}
