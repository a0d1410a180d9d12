/**
 * An in-memory mirror of a KV bucket kept current by a watch, so hot paths (validating a request,
 * checking worker liveness) read memory instead of making a NATS round trip.
 */
import type { KV } from "@nats-io/kv";
import { ClosedConnectionError, DrainingConnectionError } from "@nats-io/transport-node";
import type { z } from "zod";
import { retryTransient } from "./errors.js";
import type { Logger } from "./log.js";

export class KvMirror<T> {
  private readonly map = new Map<string, T>();
  private readonly listeners = new Set<(key: string, value: T | undefined) => void>();
  private stopFn: (() => void) | null = null;
  private retry: NodeJS.Timeout | null = null;
  private stopped = false;
  /** Pause before a watch that ended on its own is opened again. */
  static REOPEN_AFTER_MS = 1_000;

  constructor(
    private readonly kv: KV,
    private readonly schema: z.ZodType<T>,
    private readonly log?: Logger,
  ) {}

  /**
   * Starts watching; resolves once the current contents are loaded. Transient NATS errors (a cluster electing the
   * bucket's leader) are retried for up to 30 s, so a process starting meanwhile waits for it.
   */
  async start(): Promise<void> {
    this.stopped = false;
    await retryTransient(() => this.watch(true), Date.now() + 30_000);
  }

  /**
   * Opens a watch and applies what it delivers. A watch that ends on its own (an error; stop() ends it on purpose)
   * is opened again after a pause, and keys deleted meanwhile are dropped once it has caught up, so the mirror
   * never silently goes stale. `first`: throw when it cannot be opened (start), else keep retrying.
   */
  private async watch(first: boolean): Promise<void> {
    let iter: Awaited<ReturnType<KV["watch"]>>;
    let empty: boolean;
    try {
      empty = (await this.kv.status()).values === 0;
      iter = await this.kv.watch({ key: ">" });
    } catch (err) {
      if (first) throw err;
      // the connection is gone for good: nothing to watch any more
      if (err instanceof ClosedConnectionError || err instanceof DrainingConnectionError) return;
      this.log?.warn({ err }, "could not reopen a KV watch; retrying");
      this.retryLater();
      return;
    }
    if (this.stopped) {
      iter.stop();
      return;
    }
    this.stopFn = () => iter.stop();
    let markReady!: () => void;
    const ready = new Promise<void>((r) => (markReady = r));
    const seen = new Set<string>();
    let caughtUp = false;
    const catchUp = () => {
      if (caughtUp) return;
      caughtUp = true;
      // after a reopen: whatever the new watch did not deliver was deleted while no watch was open
      if (!first) for (const key of [...this.map.keys()]) if (!seen.has(key)) this.apply(key, undefined);
      markReady();
    };
    if (empty) catchUp();
    const fallback = setTimeout(markReady, 2_000);
    const loop = (async () => {
      for await (const e of iter) {
        seen.add(e.key);
        if (e.operation === "PUT" && e.value.length > 0) {
          try {
            const v = this.schema.parse(e.json());
            this.map.set(e.key, v);
            this.emit(e.key, v);
          } catch (err) {
            this.log?.warn({ err, key: e.key }, "ignoring malformed KV entry");
          }
        } else if (this.map.delete(e.key)) {
          this.emit(e.key, undefined);
        }
        if (e.delta === 0) catchUp();
      }
    })();
    loop
      .then(
        () => (this.stopped ? undefined : this.log?.warn("KV watch ended; reopening it")),
        (err) => this.log?.error({ err }, "KV watch failed; reopening it"),
      )
      .finally(() => {
        clearTimeout(fallback);
        markReady();
        if (!this.stopped) this.retryLater();
      });
    await ready;
    clearTimeout(fallback);
  }

  private retryLater(): void {
    if (this.retry || this.stopped) return;
    this.retry = setTimeout(() => {
      this.retry = null;
      if (!this.stopped) void this.watch(false);
    }, KvMirror.REOPEN_AFTER_MS);
    // never what keeps a process alive
    this.retry.unref();
  }

  private emit(key: string, value: T | undefined): void {
    for (const l of this.listeners) {
      try {
        l(key, value);
      } catch (err) {
        // one bad listener must not stop the watch (or the others)
        this.log?.error({ err, key }, "a KV mirror listener failed");
      }
    }
  }

  /**
   * Applies a change this process just wrote, before the watch delivers it, so a client that uploads and then
   * reads at once sees its write (the watch later delivers the same value).
   */
  apply(key: string, value: T | undefined): void {
    if (value === undefined) {
      if (this.map.delete(key)) this.emit(key, undefined);
    } else {
      this.map.set(key, value);
      this.emit(key, value);
    }
  }

  get(key: string): T | undefined {
    return this.map.get(key);
  }

  values(): T[] {
    return [...this.map.values()];
  }

  entries(): Array<[string, T]> {
    return [...this.map.entries()];
  }

  /** Calls `fn` on every later change (value undefined = deleted). Returns an unsubscribe function. */
  onChange(fn: (key: string, value: T | undefined) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  stop(): void {
    this.stopped = true;
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
    this.stopFn?.();
    this.stopFn = null;
  }
}
