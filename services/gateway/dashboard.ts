/**
 * GET /: a plain HTML status page (no JavaScript, refreshes itself): live workers, models and their shard
 * coverage, links to the JSON API.
 */
import type { ModelRecord, WorkerInfo } from "#shared/wire.js";

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

export function renderDashboard(opts: { version: string; workers: WorkerInfo[]; models: ModelRecord[]; coverage: (m: ModelRecord) => Array<{ index: number; workers: string[] }> }): string {
  const workers = opts.workers
    .map(
      (w) =>
        `<tr><td>${esc(w.id)}</td><td>${esc(w.host)}</td><td>${esc(w.device.kind)}: ${esc(w.device.name)}</td><td>${esc(w.shards.join(", ") || "–")}</td><td>${w.inFlight}</td><td>${w.processed}</td><td>${w.failed}</td></tr>`,
    )
    .join("");
  const models = opts.models
    .map((m) => {
      const latest = m.versions.find((v) => v.version === m.latest)!;
      const cov = opts.coverage(m).map((c) => `${c.index}: ${c.workers.length}`).join(", ");
      const ready = opts.coverage(m).every((c) => c.workers.length > 0);
      return `<tr><td><a href="/v1/models/${esc(m.name)}">${esc(m.name)}</a></td><td>${m.latest}</td><td>${latest.shards.length}</td><td>${esc(latest.inputs.map((i) => `${i.name} ${i.datatype} [${i.shape}]`).join("; "))}</td><td>${latest.batching ? latest.batching.maxBatchSize : 1}</td><td>${cov}</td><td>${ready ? "ready" : "<b>not ready</b>"}</td></tr>`;
    })
    .join("");
  return `<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="5"><title>jetshard</title>
<style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f4f4f4}</style></head>
<body><h1>jetshard ${esc(opts.version)}</h1>
<h2>Workers (${opts.workers.length} live)</h2><table><tr><th>id</th><th>host</th><th>device</th><th>shards</th><th>in flight</th><th>processed</th><th>failed</th></tr>${workers || '<tr><td colspan="7">no live worker</td></tr>'}</table>
<h2>Models (${opts.models.length})</h2><table><tr><th>name</th><th>latest</th><th>shards</th><th>inputs</th><th>max batch</th><th>workers per shard</th><th></th></tr>${models || '<tr><td colspan="7">no models</td></tr>'}</table>
<p>API: <a href="/v2">/v2</a> · <a href="/v1/models">/v1/models</a> · <a href="/v1/workers">/v1/workers</a> · <a href="/v1/jobs">/v1/jobs</a> · <a href="/v1/dead-letters">/v1/dead-letters</a> · <a href="/v1/experiments">/v1/experiments</a> · <a href="/metrics">/metrics</a></p>
</body></html>`;
}
