/**
 * A controller's lease on one experiment: the KV key `lease.<exp>` in the experiments bucket, holding
 * `{holder, renewedAt, acquiredAt}`. Every write is a compare-and-set on the revision last seen, so of two
 * controllers racing for a lease exactly one wins, and a holder that was taken over notices at its next
 * renewal. Another controller takes over only once the holder's `renewedAt` is older than the lease
 * duration (controllers are assumed to have roughly synchronized clocks, as NTP gives).
 */
import { JetStreamApiError } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { LeaseRecordSchema, leaseKey, type LeaseRecord } from "#shared/nas/wire.js";

export class Lease {
  private revision = 0;
  /** performance.now() of the last successful acquire or renewal. */
  private confirmedAt = -Infinity;
  private acquiredAt = 0;

  constructor(
    private readonly kv: KV,
    readonly experimentId: string,
    readonly holder: string,
    /** Lease duration, milliseconds. */
    readonly leaseMs: number,
  ) {}

  private value(now: number): string {
    const rec: LeaseRecord = { holder: this.holder, renewedAt: now, acquiredAt: this.acquiredAt || now };
    return JSON.stringify(rec);
  }

  /** The current holder, if any holds a live lease. */
  async current(): Promise<LeaseRecord | null> {
    const e = await this.kv.get(leaseKey(this.experimentId));
    if (!e || e.operation !== "PUT" || e.value.length === 0) return null;
    const r = LeaseRecordSchema.safeParse(e.json());
    return r.success && Date.now() - r.data.renewedAt <= this.leaseMs ? r.data : null;
  }

  /**
   * Takes the lease if nobody holds it or the holder's lease expired. Returns false when someone else
   * holds a live lease or won the race for it.
   */
  async acquire(): Promise<boolean> {
    const key = leaseKey(this.experimentId);
    const now = Date.now();
    const e = await this.kv.get(key);
    try {
      if (!e || e.operation !== "PUT" || e.value.length === 0) {
        this.acquiredAt = now;
        this.revision = await this.kv.create(key, this.value(now));
      } else {
        const r = LeaseRecordSchema.safeParse(e.json());
        if (r.success && r.data.holder !== this.holder && now - r.data.renewedAt <= this.leaseMs) return false;
        this.acquiredAt = now;
        this.revision = await this.kv.update(key, this.value(now), e.revision);
      }
    } catch {
      return false; // someone else wrote the key between our read and our write
    }
    this.confirmedAt = performance.now();
    return true;
  }

  /** Renews the lease. Returns false if it was lost (taken over, deleted, or NATS unreachable too long). */
  async renew(): Promise<boolean> {
    try {
      this.revision = await this.kv.update(leaseKey(this.experimentId), this.value(Date.now()), this.revision, Math.max(500, this.leaseMs / 3));
      this.confirmedAt = performance.now();
      return true;
    } catch (err) {
      // a compare-and-set conflict means another controller took it over; anything else (a timeout while
      // NATS is unreachable) leaves it ours until it would have expired
      if (err instanceof JetStreamApiError) this.confirmedAt = -Infinity;
      return this.valid;
    }
  }

  /**
   * True while the lease is surely still ours: confirmed less than a lease duration ago, minus a margin for
   * clock drift and in-flight writes. A driver checks this before each write it makes.
   */
  get valid(): boolean {
    return performance.now() - this.confirmedAt < this.leaseMs * 0.8;
  }

  /** Gives the lease up (only if it is still ours), so another controller can take over at once. */
  async release(): Promise<void> {
    const key = leaseKey(this.experimentId);
    this.confirmedAt = -Infinity;
    try {
      await this.kv.delete(key, { previousSeq: this.revision });
    } catch {
      // not ours any more, or unreachable: it expires on its own
    }
  }
}
