/**
 * Dynamic batching with Triton's semantics. Requests for one shard whose inputs agree in every dimension but the
 * first are joined along dim 0, run once, and the outputs split back per request.
 *
 * A batch is cut when it reaches `maxBatchSize` rows or one of `preferredBatchSizes`, or when its oldest request
 * has waited `maxQueueDelayUs`; with a delay of 0 (the default) a lone request runs at once, and requests that
 * arrive while every run slot is busy accumulate into the next batch, which is where batching wins under load.
 */
import { JobError } from "#shared/errors.js";
import { elementCount, type Tensor, type TypedArray } from "#shared/tensor.js";
import type { Semaphore } from "./semaphore.js";

export interface BatchingConfig {
  maxBatchSize: number;
  preferredBatchSizes: number[];
  maxQueueDelayUs: number;
}

/** Runs ORT once on already-ordered feeds; returns the named outputs. */
export type RunFn = (inputs: Tensor[]) => Promise<Tensor[]>;

interface Pending {
  high: boolean;
  inputs: Tensor[];
  rows: number;
  enqueuedAt: number;
  /** Called when the execution carrying this request starts (for its queue time). */
  onStart?: () => void;
  resolve: (out: Tensor[]) => void;
  reject: (err: unknown) => void;
}

const signature = (inputs: readonly Tensor[]) => inputs.map((t) => `${t.name}:${t.datatype}:${t.shape.slice(1).join("x")}`).join("|");

function concat(parts: readonly Tensor[]): Tensor {
  const first = parts[0]!;
  const total = parts.reduce((a, t) => a + t.data.length, 0);
  const Ctor = first.data.constructor as { new (n: number): TypedArray };
  const data = new Ctor(total);
  let off = 0;
  for (const t of parts) {
    (data as Float32Array).set(t.data as Float32Array, off);
    off += t.data.length;
  }
  return { name: first.name, datatype: first.datatype, shape: [parts.reduce((a, t) => a + t.shape[0]!, 0), ...first.shape.slice(1)], data };
}

function split(t: Tensor, rows: readonly number[]): Tensor[] {
  const total = rows.reduce((a, b) => a + b, 0);
  if (t.shape[0] !== total) throw new JobError("INFERENCE_FAILED", `output "${t.name}" has first dimension ${t.shape[0]}, not the batch's ${total} rows`);
  const perRow = elementCount(t.shape.slice(1));
  const out: Tensor[] = [];
  let row = 0;
  for (const r of rows) {
    out.push({ name: t.name, datatype: t.datatype, shape: [r, ...t.shape.slice(1)], data: t.data.subarray(row * perRow, (row + r) * perRow) as TypedArray });
    row += r;
  }
  return out;
}

export class Batcher {
  private readonly queues = new Map<string, Pending[]>();
  private timer: NodeJS.Timeout | null = null;
  private waitingForSlot = false;
  private running = 0;
  /** Batches run and requests they carried, for metrics and tests. */
  readonly stats = { batches: 0, requests: 0, maxRows: 0 };

  constructor(
    private readonly cfg: BatchingConfig,
    private readonly slots: Semaphore,
    private readonly run: RunFn,
  ) {}

  /** True when nothing is queued, waiting for a run slot or running: dropping it then loses nothing. */
  get idle(): boolean {
    return this.queues.size === 0 && !this.waitingForSlot && this.running === 0;
  }

  /**
   * Queues one request (inputs in the shard's input order, all with the batch as dim 0) and resolves with its outputs.
   * `onStart` is called when the execution carrying it starts.
   */
  submit(inputs: Tensor[], priority: "high" | "normal" = "normal", onStart?: () => void): Promise<Tensor[]> {
    const rows = inputs[0]?.shape[0] ?? 1;
    if (rows >= this.cfg.maxBatchSize || inputs.some((t) => t.shape.length === 0 || t.shape[0] !== rows)) {
      // too big to join anything, or not batchable: run alone
      return this.runAlone(inputs, priority, onStart);
    }
    return new Promise((resolve, reject) => {
      const key = signature(inputs);
      let q = this.queues.get(key);
      if (!q) this.queues.set(key, (q = []));
      q.push({ high: priority === "high", inputs, rows, enqueuedAt: performance.now(), onStart, resolve, reject });
      this.schedule();
    });
  }

  private async runAlone(inputs: Tensor[], priority: "high" | "normal", onStart?: () => void): Promise<Tensor[]> {
    this.running++;
    try {
      await this.slots.acquire(priority);
      try {
        onStart?.();
        return await this.run(inputs);
      } finally {
        this.slots.release();
      }
    } finally {
      this.running--;
    }
  }

  /** The queue holding the oldest request. */
  private oldest(): Pending[] | undefined {
    let best: Pending[] | undefined;
    for (const q of this.queues.values()) if (q.length && (!best || q[0]!.enqueuedAt < best[0]!.enqueuedAt)) best = q;
    return best;
  }

  private schedule(): void {
    const q = this.oldest();
    if (!q) return;
    const rows = q.reduce((a, p) => a + p.rows, 0);
    const waitedUs = (performance.now() - q[0]!.enqueuedAt) * 1000;
    const due = rows >= this.cfg.maxBatchSize || this.cfg.preferredBatchSizes.includes(rows) || waitedUs >= this.cfg.maxQueueDelayUs;
    if (!due) {
      if (!this.timer) {
        const remainingUs = this.cfg.maxQueueDelayUs - waitedUs;
        // Node's timers fire no sooner than 1 ms: wait out sub-millisecond delays one loop turn at a time
        this.timer =
          remainingUs < 1000
            ? (setImmediate(() => {
                this.timer = null;
                this.schedule();
              }) as unknown as NodeJS.Timeout)
            : setTimeout(() => {
                this.timer = null;
                this.schedule();
              }, remainingUs / 1000);
      }
      return;
    }
    if (this.waitingForSlot) return;
    this.waitingForSlot = true;
    void this.slots.acquire(q.some((p) => p.high) ? "high" : "normal").then(() => {
      // Take the batch on the next turn of the event loop, after its poll phase: requests that arrived while a
      // run blocked the JS thread (onnxruntime-node runs on it) are read from the socket and join this batch
      // instead of the next one. Costs a lone request one loop turn.
      setImmediate(() => {
        this.waitingForSlot = false;
        const batch = this.take();
        if (batch.length === 0) {
          this.slots.release();
          return;
        }
        this.running++;
        void this.execute(batch).finally(() => {
          this.running--;
          this.slots.release();
          this.schedule();
        });
        this.schedule();
      });
    });
  }

  /** Takes up to maxBatchSize rows from the oldest queue (at least one request). */
  private take(): Pending[] {
    const q = this.oldest();
    if (!q) return [];
    const batch: Pending[] = [];
    let rows = 0;
    while (q.length && (batch.length === 0 || rows + q[0]!.rows <= this.cfg.maxBatchSize)) {
      const p = q.shift()!;
      batch.push(p);
      rows += p.rows;
    }
    for (const [k, v] of this.queues) if (v.length === 0) this.queues.delete(k);
    if (this.timer && !this.oldest()) {
      clearTimeout(this.timer);
      clearImmediate(this.timer as unknown as NodeJS.Immediate);
      this.timer = null;
    }
    return batch;
  }

  private async execute(batch: Pending[]): Promise<void> {
    this.stats.batches++;
    this.stats.requests += batch.length;
    const rows = batch.map((p) => p.rows);
    this.stats.maxRows = Math.max(this.stats.maxRows, rows.reduce((a, b) => a + b, 0));
    for (const p of batch) p.onStart?.();
    if (batch.length === 1) {
      const p = batch[0]!;
      await this.run(p.inputs).then(p.resolve, p.reject);
      return;
    }
    let outputs: Tensor[];
    try {
      const joined = batch[0]!.inputs.map((_, i) => concat(batch.map((p) => p.inputs[i]!)));
      outputs = await this.run(joined);
      const pieces = outputs.map((t) => split(t, rows));
      batch.forEach((p, i) => p.resolve(pieces.map((per) => per[i]!)));
    } catch {
      // one bad request must not fail its neighbours: run each alone and let each fail or succeed on its own
      for (const p of batch) await this.run(p.inputs).then(p.resolve, p.reject);
    }
  }
}

/**
 * Batchers by key (shard digest, requested outputs, batching settings), at most `max` of them: the keys come from
 * what callers ask for, so the least recently used idle batchers are dropped once there are more.
 */
export class BatcherPool {
  private readonly map = new Map<string, Batcher>();

  constructor(readonly max: number) {}

  /** The batcher for `key`, created with `create` when there is none. */
  get(key: string, create: () => Batcher): Batcher {
    let b = this.map.get(key);
    if (b) {
      // most recently used last
      this.map.delete(key);
      this.map.set(key, b);
      return b;
    }
    b = create();
    this.map.set(key, b);
    if (this.map.size > this.max) {
      for (const [k, old] of this.map) {
        if (this.map.size <= this.max) break;
        if (old !== b && old.idle) this.map.delete(k);
      }
    }
    return b;
  }

  /** Batchers held now (more than `max` only while more than `max` are busy). */
  get size(): number {
    return this.map.size;
  }
}
