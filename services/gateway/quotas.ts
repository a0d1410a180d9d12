/**
 * Per-tenant quotas, so one caller cannot take the service down for the others: models, versions and stored
 * model bytes (from the models mirror), and async jobs queued or running (counted by this gateway).
 */
import type { JetshardConfig } from "#shared/config.js";
import { JobError } from "#shared/errors.js";
import { TERMINAL, getJob } from "#shared/jobs.js";
import type { KvMirror } from "#shared/kv-mirror.js";
import type { Infra } from "#shared/nats.js";
import type { ModelRecord } from "#shared/wire.js";

type Quotas = JetshardConfig["quotas"];

const modelBytes = (r: ModelRecord) => r.versions.reduce((a, v) => a + v.shards.reduce((b, s) => b + s.bytes, 0), 0);

/**
 * Checks an upload of `bytes` to model `name` by `tenant` against the model, version and byte quotas.
 * Throws QUOTA_EXCEEDED (429) saying which quota and how to get under it. Concurrent uploads by one tenant can
 * overshoot by what is in flight at once.
 */
export function checkModelQuota(quotas: Quotas, models: KvMirror<ModelRecord>, tenant: string, name: string, bytes: number): void {
  const prev = models.get(name);
  const owned = models.values().filter((r) => r.tenant === tenant);
  if (!prev && owned.length >= quotas.models) {
    throw new JobError("QUOTA_EXCEEDED", `tenant "${tenant}" owns ${owned.length} models, its quota (JETSHARD_QUOTA_MODELS=${quotas.models}); delete one first`);
  }
  if (prev && prev.versions.length >= quotas.versions) {
    throw new JobError("QUOTA_EXCEEDED", `model "${name}" has ${prev.versions.length} versions, the quota (JETSHARD_QUOTA_VERSIONS=${quotas.versions}); delete the model to start over`);
  }
  const used = owned.reduce((a, r) => a + modelBytes(r), 0);
  if (used + bytes > quotas.modelBytes) {
    throw new JobError(
      "QUOTA_EXCEEDED",
      `tenant "${tenant}" stores ${used} model bytes; ${bytes} more would pass its quota of ${quotas.modelBytes} (JETSHARD_QUOTA_MODEL_MB)`,
    );
  }
}

/**
 * Async jobs each tenant has queued or running, as submitted through this gateway. Exact for one gateway; with N
 * gateways a tenant can hold up to N × the quota. A tenant's set is swept (its finished jobs dropped, one KV read
 * each) only when it reaches the quota, at most every `sweepEveryMs`, so the hot path costs a set insertion.
 */
export class QueuedJobQuota {
  private readonly byTenant = new Map<string, Set<string>>();
  private readonly sweeps = new Map<string, { at: number; running: Promise<void> | null }>();

  constructor(
    private readonly infra: Infra,
    private readonly limit: number,
    private readonly sweepEveryMs = 500,
  ) {}

  /** Throws QUOTA_EXCEEDED when `tenant` already has `limit` unfinished jobs. */
  async admit(tenant: string): Promise<void> {
    const ids = this.byTenant.get(tenant);
    if (!ids || ids.size < this.limit) return;
    await this.sweep(tenant, ids);
    if (ids.size >= this.limit) {
      throw new JobError("QUOTA_EXCEEDED", `tenant "${tenant}" has ${ids.size} async jobs queued or running, its quota (JETSHARD_QUOTA_QUEUED_JOBS=${this.limit}); retry when some finish`);
    }
  }

  add(tenant: string, id: string): void {
    let ids = this.byTenant.get(tenant);
    if (!ids) this.byTenant.set(tenant, (ids = new Set()));
    ids.add(id);
  }

  private sweep(tenant: string, ids: Set<string>): Promise<void> {
    const s = this.sweeps.get(tenant) ?? { at: 0, running: null };
    this.sweeps.set(tenant, s);
    if (s.running) return s.running;
    if (Date.now() - s.at < this.sweepEveryMs) return Promise.resolve();
    s.running = (async () => {
      const all = [...ids];
      for (let i = 0; i < all.length; i += 64) {
        await Promise.all(
          all.slice(i, i + 64).map(async (id) => {
            const e = await getJob(this.infra, id).catch(() => undefined);
            if (e === null || (e && TERMINAL.has(e.record.status))) ids.delete(id);
          }),
        );
      }
    })().finally(() => {
      s.at = Date.now();
      s.running = null;
    });
    return s.running;
  }
}
