/**
 * A counting semaphore that bounds how many jobs a worker runs at once. High-priority waiters are served
 * before normal ones, which is how queued high-priority jobs overtake normal ones. A high-priority job this
 * worker already holds but that is not waiting yet (still being parsed, or its record read) is announced with
 * `expect()`: until it waits or gives up, no normal waiter gets a freed slot, so it cannot lose its turn to a
 * normal job that happened to reach the queue first.
 */
export class Semaphore {
  private free: number;
  /** High-priority jobs announced with `expect()` that have not arrived (or given up) yet. */
  private expected = 0;
  private readonly high: Array<() => void> = [];
  private readonly normal: Array<() => void> = [];

  constructor(readonly size: number) {
    this.free = size;
  }

  /** A normal job may take a free slot now: no high-priority one waits for it or is on its way. */
  private normalMayGo(): boolean {
    return this.high.length === 0 && this.expected === 0;
  }

  /**
   * Announces a high-priority job that will ask for a slot soon. Returns the function to call once it asks (or
   * will not); calling it again does nothing.
   */
  expect(): () => void {
    this.expected++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.expected--;
      // slots kept free for it go to whoever waits now
      while (this.free > 0 && this.expected === 0 && this.normal.length > 0) {
        this.free--;
        this.normal.shift()!();
      }
    };
  }

  async acquire(priority: "high" | "normal" = "normal"): Promise<void> {
    if (this.free > 0 && (priority === "high" || this.normalMayGo())) {
      this.free--;
      return;
    }
    await new Promise<void>((r) => (priority === "high" ? this.high : this.normal).push(r));
  }

  /** Takes a slot when one is free now (and no high-priority waiter goes first); false otherwise. */
  tryAcquire(priority: "high" | "normal" = "normal"): boolean {
    if (this.free > 0 && (priority === "high" || this.normalMayGo())) {
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
    if (this.free > 0 && (priority === "high" || this.normalMayGo())) {
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
    const next = this.high.shift() ?? (this.expected === 0 ? this.normal.shift() : undefined);
    if (next) next();
    else this.free++;
  }

  /** Slots in use. */
  get busy(): number {
    return this.size - this.free;
  }
}
