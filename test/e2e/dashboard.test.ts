/**
 * The live dashboard in a real browser (Debian's chromium driven by playwright-core) against a real stack: every view
 * loads and shows live figures that change while load runs, the page logs no console errors and no request fails,
 * and with auth on it asks for a key and then shows data. Screenshots of each view go to test/artifacts/.
 */
import { mkdir } from "node:fs/promises";
import path from "node:path";
import t from "tap";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { headers as natsHeaders } from "@nats-io/transport-node";
import { createApiKey, openApiKeys, revokeApiKey, type Scope } from "#shared/auth.js";
import { addModel } from "#shared/model-repo.js";
import { encodeModel, mlp } from "#shared/onnx/builder.js";
import { HEADERS, subjects } from "#shared/subjects.js";
import { CELL_SPEC, EVALUATORS_DIR, controller, experimentsApi } from "../helpers/nas.js";
import { requiredScopes } from "../../services/gateway/auth.js";
import { ROOT, startStack, waitFor, type Stack } from "../helpers/stack.js";

/** The page's document, in functions that run in the browser (this project compiles without the DOM library). */
declare const document: any;

const ARTIFACTS = path.join(ROOT, "test/artifacts");
const INPUT = [{ name: "input", shape: [1, 8], datatype: "FP32", data: [1, 2, 3, 4, 5, 6, 7, 8] }];

const stack = await startStack(t, { JETSHARD_EVALUATORS_DIR: EVALUATORS_DIR, JETSHARD_NAS_CONCURRENCY: "2" });
const gw = await stack.gateway();
await addModel(stack.infra, "mlp", encodeModel(mlp({ layers: [8, 32, 4], seed: 3 })));
await addModel(stack.infra, "pipe", encodeModel(mlp({ layers: [8, 64, 64, 4], seed: 4 })), { shards: 2 });
await Promise.all([stack.worker(), stack.worker()]);
await controller(t, stack);
await mkdir(ARTIFACTS, { recursive: true });

const browser: Browser = await chromium.launch({ executablePath: process.env.CHROMIUM_BIN ?? "/usr/bin/chromium", args: ["--no-sandbox"], headless: true });
t.teardown(() => browser.close());

const post = (url: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });

/** Sync requests to `models` one after another until stopped: the req/s and latency the page should show. */
function load(base: string, models: string[]) {
  let running = true;
  let sent = 0;
  const loop = (async () => {
    while (running) {
      await Promise.all(models.map((m) => post(`${base}/v2/models/${m}/infer`, { inputs: INPUT }).then((r) => r.arrayBuffer())));
      sent++;
    }
  })();
  return {
    get sent() {
      return sent;
    },
    stop: async () => {
      running = false;
      await loop;
    },
  };
}

/** A job published straight to NATS whose body is no job at all: the worker dead-letters it at once. */
async function poison(s: Stack, id: string, tenant?: string) {
  const h = natsHeaders();
  h.set(HEADERS.track, "1");
  if (tenant) h.set(HEADERS.tenant, tenant);
  await s.infra.js.publish(subjects.infer("mlp"), new TextEncoder().encode("{{{"), { msgID: id, headers: h });
}

/**
 * A page whose problems are collected: console errors, uncaught exceptions, failed requests and HTTP errors.
 * `allow(url, status)` admits expected HTTP errors (the 401 that makes the page ask for a key).
 */
async function openPage(ctx: BrowserContext, allow?: (url: string, status: number) => boolean) {
  const page = await ctx.newPage();
  const problems: string[] = [];
  const urls: string[] = [];
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    // chromium logs every 4xx fetch as a console error: a 401 is expected where `allow` admits it (checked below)
    if (allow && /status of 401/.test(m.text())) return;
    problems.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("requestfailed", (r) => {
    // the event stream is cut when the page closes
    if (!r.url().endsWith("/v1/events")) problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`);
  });
  page.on("request", (r) => urls.push(r.url()));
  page.on("response", (r) => {
    if (r.status() < 400) return;
    if (!allow?.(r.url(), r.status())) problems.push(`HTTP ${r.status()}: ${r.url()}`);
  });
  return { page, problems, urls };
}

const num = (page: Page, sel: string) => page.$eval(sel, (el) => Number((el.textContent ?? "").replace(/,/g, "")));
const dataPoints = (page: Page, id: string) => page.$eval(`#${id}`, (el) => Number((el as any).dataset.points ?? 0));
const shot = (page: Page, name: string) => page.screenshot({ path: path.join(ARTIFACTS, `dashboard-${name}.png`), fullPage: true });
async function view(page: Page, name: string) {
  await page.click(`#tabs a[data-view="${name}"]`);
  await page.waitForSelector(`#view-${name}:not([hidden])`);
}

t.test("every view of the dashboard loads and its live figures change while load runs, with no console errors", async (t) => {
  const api = experimentsApi(gw.url);
  const cells = await api.create({ ...CELL_SPEC, name: "cells", maxTrials: 12, concurrency: 4, evaluator: { metrics: ["naswot", "latency"], batch: 4, runs: 1, warmup: 0 } });
  t.equal(cells.status, 201, JSON.stringify(cells.body));
  const curve = await api.create({
    name: "curves",
    family: "custom",
    searchSpace: { x: { _type: "choice", _value: [1, 2, 3, 4] } },
    strategy: "grid",
    objective: { metric: "score", direction: "maximize" },
    maxTrials: 4,
    concurrency: 4,
    evaluator: { custom: "evaluators", behavior: "curve", steps: 6, delayMs: 0 },
  });
  t.equal(curve.status, 201, JSON.stringify(curve.body));

  const ctx = await browser.newContext({ viewport: { width: 1440, height: 1000 } });
  t.teardown(() => ctx.close());
  const { page, problems } = await openPage(ctx);
  await page.goto(`${gw.url}/#fleet`);
  t.equal(await page.$eval("#login", (el) => (el as any).hidden), true, "auth off: no key prompt");

  // fleet: both workers, with their device
  await page.waitForFunction(() => document.querySelectorAll("#workers-table tbody tr[data-worker]").length === 2);
  t.match(await page.textContent("#workers-table tbody"), /cpu/, "the device kind is shown");
  await page.waitForSelector("#conn[data-state=live]");

  const traffic = load(gw.url, ["mlp", "pipe"]);
  try {
    // models: req/s of this gateway's own requests appears, and the chart gains points every second
    await view(page, "models");
    await page.waitForFunction(() => Number(document.querySelector('#models-table td[data-rps="mlp"]')?.textContent ?? 0) > 0);
    const before = await dataPoints(page, "chart-rps");
    await page.waitForFunction((n) => Number((document.querySelector("#chart-rps") as any).dataset.points) >= n + 2, before);
    t.ok((await dataPoints(page, "chart-rps")) >= before + 2, "the requests chart grows while load runs");
    await page.waitForFunction(() => Number((document.querySelector("#chart-latency") as any).dataset.series) >= 4);
    t.match(await page.textContent('#models-table tr[data-model="pipe"]'), /#0: 2.*#1: 2/s, "both shards of the pipelined model are covered by 2 workers");
    t.ok((await num(page, "#kpi-rps")) > 0, "the summary shows requests/s");
    await shot(page, "models");
    t.ok(await page.$eval("#chart-rps", (el) => el.querySelector("canvas") !== null), "uPlot drew the chart");

    // jobs: async jobs change the counts; a failed job shows its attempts and error on click
    await view(page, "jobs");
    const succeeded0 = await num(page, "#jobs-succeeded");
    for (let i = 0; i < 5; i++) t.equal((await post(`${gw.url}/v1/jobs`, { model: "mlp", inputs: INPUT })).status, 202);
    await poison(stack, "poison-a");
    await poison(stack, "poison-b");
    await page.waitForFunction((n) => Number(document.querySelector("#jobs-succeeded")?.textContent) >= n + 5, succeeded0);
    await page.waitForSelector('#jobs-table tr[data-job="poison-a"]');
    await page.click('#jobs-table tr[data-job="poison-a"]');
    await page.waitForSelector("#job-error");
    t.match(await page.textContent("#job-detail"), /attempts/);
    t.match(await page.textContent("#job-error"), /neither a jetshard frame nor JSON/, "the job's error is shown");
    t.equal(await page.textContent('#job-detail dd[data-field="attempts"]'), "1");
    await shot(page, "jobs");
  } finally {
    await traffic.stop();
  }
  t.ok(traffic.sent > 0);

  // dead letters: inspect, replay, delete (two clicks)
  await view(page, "dead-letters");
  await page.waitForSelector('#dlq-table tr[data-dlq="poison-a"]');
  await page.waitForSelector('#dlq-table tr[data-dlq="poison-b"]');
  await page.click('#dlq-table tr[data-dlq="poison-b"] td:first-child');
  await page.waitForSelector("#dlq-error");
  t.match(await page.textContent("#dlq-error"), /neither a jetshard frame nor JSON/, "inspect shows the error");
  await shot(page, "dead-letters");
  await page.click('#dlq-table tr[data-dlq="poison-a"] button[data-action=replay]');
  await page.waitForFunction(() => /Replayed poison-a/.test(document.querySelector("#dlq-message")?.textContent ?? ""));
  await page.click('#dlq-table tr[data-dlq="poison-b"] button[data-action=delete]');
  await page.click('#dlq-table tr[data-dlq="poison-b"] button[data-action=confirm-delete]');
  await page.waitForFunction(() => !document.querySelector('#dlq-table tr[data-dlq="poison-b"]'));
  t.match(await page.textContent("#dlq-message"), /Deleted dead letter poison-b/);
  const left = (await (await fetch(`${gw.url}/v1/dead-letters`)).json()) as any;
  t.notOk(left.deadLetters.some((d: any) => d.id === "poison-b"), "the delete reached DLQ");

  // experiments: progress, trials, best-so-far, Pareto scatter, intermediate curves
  await api.waitStatus(cells.body.id, ["completed"], 40_000);
  await api.waitStatus(curve.body.id, ["completed"], 20_000);
  await view(page, "experiments");
  await page.waitForSelector(`#exp-table tr[data-exp="${cells.body.id}"]`);
  await page.click(`#exp-table tr[data-exp="${cells.body.id}"]`);
  await page.waitForFunction(() => document.querySelectorAll("#trials-table tr[data-trial]").length === 12);
  await page.waitForFunction(() => Number((document.querySelector("#chart-pareto") as any).dataset.points) > 0);
  t.equal(await dataPoints(page, "chart-best"), 12, "best-so-far has a point per finished trial");
  t.match(await page.textContent("#chart-pareto figcaption"), /naswot .* vs latency_ms/);
  t.match(await page.textContent("#exp-meta"), /12\/12 finished/);
  await shot(page, "experiments");
  await page.click(`#exp-table tr[data-exp="${curve.body.id}"]`);
  await page.waitForFunction(() => Number((document.querySelector("#chart-intermediate") as any).dataset.series) === 4);
  t.equal(await dataPoints(page, "chart-intermediate"), 6, "six reported steps");
  await shot(page, "experiments-curves");

  // bytes between stages: one diagram per model whose workers report counters
  await view(page, "bytes");
  const workers = ((await (await fetch(`${gw.url}/v1/workers`)).json()) as any).workers;
  const withStats = new Set(workers.flatMap((w: any) => Object.keys(w.stats ?? {}).map((k) => k.split(":")[0])));
  if (withStats.size > 0) {
    await page.waitForSelector('.pipeline[data-model="pipe"]');
    t.equal(await page.$$eval('.pipeline[data-model="pipe"] .hop', (els) => els.length), 3, "gateway → 0 → 1 → results");
    t.notMatch(await page.textContent('.pipeline[data-model="pipe"]'), /– total/, "every hop has a byte count");
  } else {
    await page.waitForSelector("#bytes-note:not([hidden])");
    t.match(await page.textContent("#bytes-note"), /no per-shard byte counters/, "says why there is no diagram");
  }
  await shot(page, "bytes");

  await view(page, "fleet");
  await page.waitForFunction(() => document.querySelectorAll("#workers-table tbody tr[data-worker]").length === 2);
  await shot(page, "fleet");
  const csp = (await fetch(`${gw.url}/`)).headers.get("content-security-policy");
  t.match(csp, /script-src 'self'/, "a strict CSP on the page");
  t.same(problems, [], "no console errors, no failed requests");
});

t.test("with auth on the page asks for a key, then shows data; dead-letter actions need the jobs scope; the key never goes in a URL", async (t) => {
  const secure = await stack.gateway({ JETSHARD_AUTH: "keys" });
  const keys = await openApiKeys(stack.infra.nc);
  const key = async (scopes: Scope[]) => (await createApiKey(keys, { tenant: "acme", scopes })).key;
  const metricsKey = await key(["metrics"]);
  const jobsKey = await key(["metrics", "jobs"]);
  await poison(stack, "poison-acme", "acme");
  await waitFor("the acme dead letter", async () => ((await (await fetch(`${gw.url}/v1/dead-letters`)).json()) as any).deadLetters.some((d: any) => d.id === "poison-acme"));

  const whoami401 = (url: string, status: number) => status === 401 && url.endsWith("/v1/whoami");
  const ctx = await browser.newContext({ viewport: { width: 1440, height: 900 } });
  t.teardown(() => ctx.close());
  const { page, problems, urls } = await openPage(ctx, whoami401);
  await page.goto(`${secure.url}/#fleet`);
  await page.waitForSelector("#login:not([hidden])");
  await shot(page, "auth-prompt");
  await page.fill("#api-key", "jsk_0123456789abcdef_" + "A".repeat(43));
  await page.click("#login-form button[type=submit]");
  await page.waitForFunction(() => /refused/.test(document.querySelector("#login-error")?.textContent ?? ""));
  await page.fill("#api-key", metricsKey);
  await page.click("#login-form button[type=submit]");
  await page.waitForFunction(() => document.querySelectorAll("#workers-table tbody tr[data-worker]").length >= 2);
  await page.waitForSelector("#conn[data-state=live]");
  t.match(await page.textContent("#whoami"), /acme · metrics/);
  await view(page, "dead-letters");
  await page.waitForSelector("#dlq-note:not([hidden])");
  t.match(await page.textContent("#dlq-note"), /lacks the jobs scope/);
  t.equal(await page.$$eval("#dlq-table button", (b) => b.length), 0, "no dead-letter actions without the jobs scope");
  await shot(page, "auth-metrics-only");

  // a key with the jobs scope sees its tenant's dead letters with their actions
  await page.click("#signout");
  await page.waitForSelector("#login:not([hidden])");
  await page.fill("#api-key", jobsKey);
  await page.click("#login-form button[type=submit]");
  await page.waitForSelector('#dlq-table tr[data-dlq="poison-acme"] button[data-action=replay]');
  t.equal(await page.$$eval("#dlq-table tr[data-dlq]", (r) => r.length), 1, "only its own tenant's dead letters");

  for (const k of [metricsKey, jobsKey]) t.notOk(urls.some((u) => u.includes(k) || u.includes(encodeURIComponent(k))), "the key is never in a URL");
  t.same(problems, [], "no console errors, no failed requests beyond the 401 that asks for a key");
});

t.test("the page and its assets are public, the event stream needs the metrics scope and ends when its key is revoked", async (t) => {
  t.equal(requiredScopes("GET", "/"), null);
  t.equal(requiredScopes("GET", "/assets/dashboard.js"), null);
  t.same(requiredScopes("GET", "/v1/events"), ["metrics"]);
  t.same(requiredScopes("GET", "/v1/whoami"), [], "any valid key");
  const secure = await stack.gateway({ JETSHARD_AUTH: "keys" });
  const page = await fetch(`${secure.url}/`);
  t.equal(page.status, 200);
  t.match(page.headers.get("content-security-policy"), /default-src 'none'; script-src 'self'/);
  t.notMatch(await page.text(), /<script>|<style>| style=/, "no inline script or style for the CSP to allow");
  const asset = await fetch(`${secure.url}/assets/uplot.min.js`);
  t.equal(asset.status, 200);
  t.match(asset.headers.get("content-type"), /javascript/);
  t.ok((await asset.text()).includes("uPlot"), "uPlot served from node_modules, no CDN");
  t.equal((await fetch(`${secure.url}/assets/..%2fpackage.json`)).status, 404);
  t.equal((await fetch(`${secure.url}/assets/nope.js`)).status, 404);

  t.equal((await fetch(`${secure.url}/v1/events`)).status, 401);
  const keys = await openApiKeys(stack.infra.nc);
  const infer = (await createApiKey(keys, { tenant: "acme", scopes: ["infer"] })).key;
  const res403 = await fetch(`${secure.url}/v1/events`, { headers: { authorization: `Bearer ${infer}` } });
  t.equal(res403.status, 403);
  t.match(((await res403.json()) as any).error, /lacks the scope "metrics"/);
  const who = await fetch(`${secure.url}/v1/whoami`, { headers: { authorization: `Bearer ${infer}` } });
  t.match(await who.json(), { auth: "keys", tenant: "acme", scopes: ["infer"] });

  const created = await createApiKey(keys, { tenant: "acme", scopes: ["metrics"] });
  const res = await fetch(`${secure.url}/v1/events`, { headers: { authorization: `Bearer ${created.key}` } });
  t.equal(res.status, 200);
  t.match(res.headers.get("content-type"), /text\/event-stream/);
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  const events = () => [...text.matchAll(/^event: (\w+)$/gm)].map((m) => m[1]);
  while (!events().includes("point")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  t.same(events().slice(0, 2), ["snapshot", "point"], "a snapshot, then points");
  const snap = JSON.parse(/^event: snapshot\ndata: (.*)$/m.exec(text)![1]!);
  t.equal(snap.resolutionMs, 1000);
  t.ok(snap.state.workers.length >= 2, "the snapshot lists the live workers");
  t.same(snap.state.recentJobs, [], "no jobs without the jobs scope");
  await revokeApiKey(keys, created.record.id);
  for (;;) {
    const { done } = await reader.read();
    if (done) break;
  }
  t.pass("the stream ended once its key was revoked");
});
