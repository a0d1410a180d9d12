/**
 * Progress display for long CLI operations, on stderr so stdout stays machine-readable. On a terminal one status
 * line is redrawn in place (at most every `intervalMs`); otherwise plain lines are printed, each only when it
 * differs from the last, so logs and pipes get a readable history instead of control characters.
 */

/** A text bar: `[#####-----]`, `fraction` clamped to 0..1. */
export function bar(fraction: number, width = 24): string {
  const f = Number.isFinite(fraction) ? Math.min(1, Math.max(0, fraction)) : 0;
  const done = Math.round(f * width);
  return `[${"#".repeat(done)}${"-".repeat(width - done)}]`;
}

/** Bytes for people: `512 B`, `12.3 KB`, `4.0 MB`, `1.25 GB` (powers of 1024). */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${units[i]}`;
}

export interface ProgressOptions {
  /** Where to draw; default process.stderr. */
  stream?: NodeJS.WriteStream | NodeJS.WritableStream;
  /** Redraw in place; default: whether `stream` is a TTY. */
  tty?: boolean;
  /** Least time between two redraws on a terminal, ms; default 100. */
  intervalMs?: number;
}

/** One live status line (terminal) or a series of plain lines (pipe, file). */
export class Progress {
  readonly tty: boolean;
  private readonly stream: NodeJS.WritableStream;
  private readonly intervalMs: number;
  private lastDraw = 0;
  private pending: string | null = null;
  private timer: NodeJS.Timeout | null = null;
  private shown = false;
  private lastPlain = "";

  constructor(opts: ProgressOptions = {}) {
    this.stream = opts.stream ?? process.stderr;
    this.tty = opts.tty ?? (this.stream as NodeJS.WriteStream).isTTY === true;
    this.intervalMs = opts.intervalMs ?? 100;
  }

  /**
   * Shows the current state: `line` is redrawn on a terminal; `plain` (default `line`) is printed on a pipe when it
   * differs from the last plain line. Pass `plain: null` to print nothing on a pipe for this update.
   */
  update(line: string, plain: string | null = line): void {
    if (!this.tty) {
      if (plain !== null && plain !== this.lastPlain) this.stream.write(plain + "\n");
      if (plain !== null) this.lastPlain = plain;
      return;
    }
    this.pending = line;
    const wait = this.lastDraw + this.intervalMs - Date.now();
    if (wait <= 0) this.draw();
    else this.timer ??= setTimeout(() => this.draw(), wait);
  }

  /** Prints a line of its own (above the status line on a terminal). */
  note(text: string): void {
    if (this.tty && this.shown) this.stream.write("\r\x1b[2K");
    this.stream.write(text + "\n");
    this.shown = false;
    if (this.tty && this.pending !== null) this.draw();
  }

  /** Draws the last state once more and leaves it on screen (terminal), or prints `final` if given. */
  end(final?: string): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.tty) {
      if (final !== undefined) this.pending = final;
      if (this.pending !== null) this.draw();
      if (this.shown) this.stream.write("\n");
      this.shown = false;
      this.pending = null;
    } else if (final !== undefined && final !== this.lastPlain) {
      this.stream.write(final + "\n");
      this.lastPlain = final;
    }
  }

  private draw(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.pending === null) return;
    this.stream.write(`\r\x1b[2K${this.pending}`);
    this.shown = true;
    this.lastDraw = Date.now();
  }
}
