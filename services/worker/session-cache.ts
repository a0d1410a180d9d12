import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";
import * as ort from "onnxruntime-node";
import { JobError } from "#shared/errors.js";
import type { Logger } from "#shared/log.js";
import { fetchShard, sha256Hex } from "#shared/model-repo.js";
import { assertNoExternalData } from "#shared/onnx/external-data.js";
import type { Infra } from "#shared/nats.js";
import type { ShardInfo } from "#shared/wire.js";

interface Entry {
  session: ort.InferenceSession;
  bytes: number;
  lastUsed: number;
  refs: number;
}

export interface SessionCacheOptions {
  /** Directory for shard files, named by digest. */
  dir: string;
  /** Most sessions kept loaded. */
  maxSessions: number;
  /** Most model bytes kept loaded (an estimate of memory). */
  maxBytes: number;
  sessionOptions: ort.InferenceSession.SessionOptions;
}

/**
 * Loaded ONNX Runtime sessions keyed by shard digest (content-addressed, so versions that share bytes share a
 * session). Shards come from the local disk cache, else from the object store (digest-checked); least recently
 * used sessions are released past the count or byte budget.
 */
export class SessionCache {
  private readonly entries = new Map<string, Entry>();
  private readonly loading = new Map<string, Promise<Entry>>();

  constructor(
    private readonly infra: Infra,
    private readonly opts: SessionCacheOptions,
    private readonly log: Logger,
  ) {}

  /** Runs `fn` with the session for `shard`, loading it if needed; the session is not evicted meanwhile. */
  async use<T>(shard: ShardInfo, fn: (s: ort.InferenceSession) => Promise<T>): Promise<T> {
    const e = await this.acquire(shard);
    try {
      return await fn(e.session);
    } finally {
      e.refs--;
      e.lastUsed = Date.now();
    }
  }

  private async acquire(shard: ShardInfo): Promise<Entry> {
    let e = this.entries.get(shard.digest);
    if (!e) {
      let p = this.loading.get(shard.digest);
      if (!p) {
        p = this.load(shard).finally(() => this.loading.delete(shard.digest));
        this.loading.set(shard.digest, p);
      }
      e = await p;
    }
    e.refs++;
    e.lastUsed = Date.now();
    return e;
  }

  /** Digests currently loaded. */
  loaded(): string[] {
    return [...this.entries.keys()];
  }

  private async readBytes(shard: ShardInfo): Promise<Uint8Array> {
    const file = path.join(this.opts.dir, `${shard.digest}.onnx`);
    try {
      const bytes = new Uint8Array(await readFile(file));
      if (sha256Hex(bytes) === shard.digest) return bytes;
      this.log.warn({ file }, "cached shard is corrupt; fetching again");
    } catch {
      // not cached yet
    }
    const bytes = await fetchShard(this.infra, shard);
    await mkdir(this.opts.dir, { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    await writeFile(tmp, bytes);
    await rename(tmp, file);
    return bytes;
  }

  private async load(shard: ShardInfo): Promise<Entry> {
    const t0 = performance.now();
    const bytes = await this.readBytes(shard);
    // the bytes may not have come through the gateway (written to the object store or the cache dir directly):
    // a tensor pointing at a file would make ORT read it from this host. Terminal, never retried.
    assertNoExternalData(bytes, `shard ${shard.object}`);
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(bytes, this.opts.sessionOptions);
    } catch (err) {
      throw new JobError("MODEL_INVALID", `shard ${shard.object} does not load: ${(err as Error).message}`, { cause: err });
    }
    const e: Entry = { session, bytes: bytes.byteLength, lastUsed: Date.now(), refs: 0 };
    this.entries.set(shard.digest, e);
    this.log.info({ object: shard.object, bytes: bytes.byteLength, ms: Math.round(performance.now() - t0) }, "model shard loaded");
    await this.evict();
    return e;
  }

  private async evict(): Promise<void> {
    const total = () => [...this.entries.values()].reduce((a, e) => a + e.bytes, 0);
    while (this.entries.size > this.opts.maxSessions || (this.entries.size > 1 && total() > this.opts.maxBytes)) {
      const idle = [...this.entries.entries()].filter(([, e]) => e.refs === 0).sort((a, b) => a[1].lastUsed - b[1].lastUsed);
      const victim = idle[0];
      if (!victim) return;
      this.entries.delete(victim[0]);
      this.log.info({ digest: victim[0] }, "evicting least recently used model session");
      await victim[1].session.release().catch(() => undefined);
    }
  }

  async close(): Promise<void> {
    for (const e of this.entries.values()) await e.session.release().catch(() => undefined);
    this.entries.clear();
  }
}
