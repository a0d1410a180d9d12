/**
 * HTTP load through autocannon's programmatic API: a fixed POST body at a fixed number of connections.
 * Latencies are recorded here from autocannon's per-response event at sub-millisecond resolution (its own
 * histogram keeps whole milliseconds, too coarse for a 0.3 ms p50).
 */
import autocannon from "autocannon";

export interface LoadOptions {
  /** Full URL to POST to. */
  url: string;
  /** The request body, sent unchanged on every request. */
  body: string;
  /** Concurrent connections (one request in flight on each). */
  connections: number;
  /** Measured seconds. */
  durationS: number;
  /** Seconds of load before measuring, discarded. 0 = none. */
  warmupS: number;
  /** Seconds before one request counts as timed out. */
  timeoutS: number;
}

/** What one measured load run saw. Latencies in milliseconds, over 2xx responses only. */
export interface LoadResult {
  connections: number;
  /** Measured wall time in seconds. */
  durationS: number;
  /** 2xx responses. */
  ok: number;
  /** 2xx responses per second: errors do not count as throughput. */
  reqPerS: number;
  p50Ms: number | null;
  p99Ms: number | null;
  maxMs: number | null;
  /** non-2xx responses + socket errors + timeouts. */
  errors: number;
  non2xx: number;
  /** Connection errors and timeouts as autocannon counts them (timeouts are included in this). */
  socketErrors: number;
  timeouts: number;
  /** Responses per HTTP status. */
  statusCodes: Record<string, number>;
  /** Up to 5 distinct non-2xx bodies ("status body", 200 chars) with their counts. */
  errorSamples: Record<string, number>;
  /** Responses completed per connection: fewest and most (a wide spread means some callers starve). */
  perConnection: { min: number; max: number };
}

/** Nearest-rank percentile of an ascending array; null when empty. */
export function percentile(sorted: readonly number[], q: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

async function once(o: LoadOptions, durationS: number): Promise<LoadResult> {
  const latencies: number[] = [];
  const perClient = new Map<unknown, number>();
  const errorSamples: Record<string, number> = {};
  const inst = autocannon({
    url: o.url,
    method: "POST",
    headers: { "content-type": "application/json" },
    body: o.body,
    connections: o.connections,
    duration: durationS,
    timeout: o.timeoutS,
    requests: [
      {
        onResponse(status, body) {
          if (status >= 200 && status < 300) return;
          const k = `${status} ${body.slice(0, 200)}`;
          if (k in errorSamples || Object.keys(errorSamples).length < 5) errorSamples[k] = (errorSamples[k] ?? 0) + 1;
        },
      },
    ],
  });
  inst.on("response", (client: unknown, status: number, _bytes: number, ms: number) => {
    if (status >= 200 && status < 300) latencies.push(ms);
    perClient.set(client, (perClient.get(client) ?? 0) + 1);
  });
  const r = await inst;
  latencies.sort((a, b) => a - b);
  const counts = [...perClient.values()];
  while (counts.length < o.connections) counts.push(0);
  const statusCodes = Object.fromEntries(Object.entries(r.statusCodeStats).map(([k, v]) => [k, v.count]));
  const ok = r["2xx"];
  return {
    connections: o.connections,
    durationS: r.duration,
    ok,
    reqPerS: r.duration > 0 ? ok / r.duration : 0,
    p50Ms: percentile(latencies, 0.5),
    p99Ms: percentile(latencies, 0.99),
    maxMs: latencies.at(-1) ?? null,
    errors: r.non2xx + r.errors,
    non2xx: r.non2xx,
    socketErrors: r.errors,
    timeouts: r.timeouts,
    statusCodes,
    errorSamples,
    perConnection: { min: Math.min(...counts), max: Math.max(...counts) },
  };
}

/** Runs the warmup (discarded), then the measured run. */
export async function loadTest(o: LoadOptions): Promise<LoadResult> {
  if (o.warmupS > 0) await once(o, o.warmupS);
  return once(o, o.durationS);
}
