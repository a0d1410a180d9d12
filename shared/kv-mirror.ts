/**
 * An in-memory mirror of a KV bucket kept current by a watch, so hot paths (validating a request,
 * checking worker liveness) read memory instead of making a NATS round trip.
 */
import type { KV } from "@nats-io/kv";
import type { z } from "zod";
import type { Logger } from "./log.js";

export class KvMirror<T> {
  private readonly map = new Map<string, T>();
  private readonly listeners = new Set<(key: string, value: T | undefined) => void>();
  private stopFn: (() => void) | null = null;

  constructor(
    private readonly kv: KV,
    private readonly schema: z.ZodType<T>,
    private readonly log?: Logger,
  ) {}

  /** Starts watching; resolves once the current contents are loaded. */
  async start(): Promise<void> {
    const status = await this.kv.status();
    const iter = await this.kv.watch({ key: ">" });
    this.stopFn = () => iter.stop();
    let markReady!: () => void;
    const ready = new Promise<void>((r) => (markReady = r));
    if (status.values === 0) markReady();
    const fallback = setTimeout(markReady, 2_000);
    void (async () => {
      for await (const e of iter) {
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
        if (e.delta === 0) markReady();
      }
    })();
    await ready;
    clearTimeout(fallback);
  }

  private emit(key: string, value: T | undefined): void {
    for (const l of this.listeners) l(key, value);
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
    this.stopFn?.();
    this.stopFn = null;
  }
}
