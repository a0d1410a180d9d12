/**
 * A counting semaphore that bounds how many jobs a worker runs at once. High-priority waiters are served
 * before normal ones, which is how queued high-priority jobs overtake normal ones.
 */
export class Semaphore {
  private free: number;
  private readonly high: Array<() => void> = [];
  private readonly normal: Array<() => void> = [];

  constructor(readonly size: number) {
    this.free = size;
  }

  async acquire(priority: "high" | "normal" = "normal"): Promise<void> {
    if (this.free > 0 && (priority === "high" || this.high.length === 0)) {
      this.free--;
      return;
    }
    await new Promise<void>((r) => (priority === "high" ? this.high : this.normal).push(r));
  }

  /** Takes a slot when one is free now (and no high-priority waiter goes first); false otherwise. */
  tryAcquire(priority: "high" | "normal" = "normal"): boolean {
    if (this.free > 0 && (priority === "high" || this.high.length === 0)) {
      this.free--;
      return true;
    }
    return false;
  }

  /**
   * Like `acquire`, but gives up when `signal` aborts first. Resolves true when a slot was taken, false when not
   * (then there is nothing to release).
   */
  async acquireUnless(signal: AbortSignal, priority: "high" | "normal" = "normal"): Promise<boolean> {
    if (signal.aborted) return false;
    if (this.free > 0 && (priority === "high" || this.high.length === 0)) {
      this.free--;
      return true;
    }
    const queue = priority === "high" ? this.high : this.normal;
    return new Promise<boolean>((resolve) => {
      const waiter = () => {
        signal.removeEventListener("abort", onAbort);
        resolve(true);
      };
      const onAbort = () => {
        const i = queue.indexOf(waiter);
        if (i >= 0) queue.splice(i, 1);
        resolve(false);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      queue.push(waiter);
    });
  }

  release(): void {
    const next = this.high.shift() ?? this.normal.shift();
    if (next) next();
    else this.free++;
  }

  /** Slots in use. */
  get busy(): number {
    return this.size - this.free;
  }
}
