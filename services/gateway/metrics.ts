/** A few Prometheus metrics kept in memory and rendered as text exposition format on /metrics. */
export class Metrics {
  private readonly counters = new Map<string, number>();
  private readonly gauges = new Map<string, () => number>();
  private readonly buckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
  private readonly histo = new Map<string, { counts: number[]; sum: number; count: number }>();

  inc(name: string, labels: Record<string, string> = {}, by = 1): void {
    const key = `${name}${fmtLabels(labels)}`;
    this.counters.set(key, (this.counters.get(key) ?? 0) + by);
  }

  gauge(name: string, fn: () => number): void {
    this.gauges.set(name, fn);
  }

  /** Records a duration in seconds. */
  observe(name: string, labels: Record<string, string>, seconds: number): void {
    const key = `${name}\u0000${fmtLabels(labels)}`;
    let h = this.histo.get(key);
    if (!h) this.histo.set(key, (h = { counts: this.buckets.map(() => 0), sum: 0, count: 0 }));
    this.buckets.forEach((b, i) => {
      if (seconds <= b) h!.counts[i]!++;
    });
    h.sum += seconds;
    h.count++;
  }

  render(): string {
    const lines: string[] = [];
    for (const [k, v] of this.counters) lines.push(`${k} ${v}`);
    for (const [k, fn] of this.gauges) lines.push(`${k} ${fn()}`);
    for (const [key, h] of this.histo) {
      const [name, labels] = key.split("\u0000") as [string, string];
      const inner = labels.slice(1, -1);
      const join = (extra: string) => `{${[inner, extra].filter(Boolean).join(",")}}`;
      this.buckets.forEach((b, i) => lines.push(`${name}_bucket${join(`le="${b}"`)} ${h.counts[i]}`));
      lines.push(`${name}_bucket${join(`le="+Inf"`)} ${h.count}`);
      lines.push(`${name}_sum${labels} ${h.sum}`);
      lines.push(`${name}_count${labels} ${h.count}`);
    }
    return lines.join("\n") + "\n";
  }
}

function fmtLabels(labels: Record<string, string>): string {
  const e = Object.entries(labels);
  if (e.length === 0) return "";
  return `{${e.map(([k, v]) => `${k}="${v.replace(/["\\\n]/g, "_")}"`).join(",")}}`;
}
