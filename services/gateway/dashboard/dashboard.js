/*
 * jetshard dashboard (plain JS, no bundler). Data comes from the gateway's API:
 * - GET /v1/events: server-sent events read with fetch (EventSource cannot send Authorization), a snapshot of the
 *   last minutes, then one point per second;
 * - GET /v1/whoami: the key's scopes (actions the key may not take are not shown);
 * - the REST routes for what the stream does not carry: /v1/jobs/{id}, /v1/dead-letters, /v1/experiments.
 * With auth on, the page asks for an API key when the API answers 401 and keeps it in sessionStorage; it is sent
 * only as an Authorization header, never in a URL. Everything that comes from the API is written with
 * textContent (never innerHTML), so names and error messages cannot inject markup.
 */
"use strict";
(() => {
  const KEY_STORE = "jetshard.apiKey";
  const MAX_POINTS = 600;
  const MAX_SERIES = 12;
  const PALETTE = ["#5b9cf6", "#f59e0b", "#10b981", "#ef4444", "#a78bfa", "#ec4899", "#14b8a6", "#eab308", "#6366f1", "#84cc16", "#f97316", "#06b6d4"];
  const JOB_STATES = ["queued", "running", "succeeded", "failed", "cancelled"];
  const STATE_COLORS = { queued: "#3b82f6", running: "#f59e0b", succeeded: "#10b981", failed: "#ef4444", cancelled: "#a78bfa" };

  /** Everything the page knows. */
  const S = {
    who: null,
    points: [],
    state: null,
    view: "fleet",
    selectedJob: null,
    selectedDlq: null,
    selectedExp: null,
    confirmDelete: null,
    experiments: [],
    dlq: [],
  };

  // ---------------------------------------------------------------- DOM helpers (textContent only)
  const $ = (sel) => document.querySelector(sel);
  /** Creates an element; string/number children become text nodes. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = String(v);
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(el.dataset, v);
      else el.setAttribute(k, String(v));
    }
    for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return el;
  }
  const setText = (sel, v) => {
    const el = typeof sel === "string" ? $(sel) : sel;
    if (el && el.textContent !== String(v)) el.textContent = String(v);
  };
  const show = (el, on) => {
    el = typeof el === "string" ? $(el) : el;
    if (el) el.hidden = !on;
  };
  function note(sel, text) {
    const el = $(sel);
    if (!el) return;
    el.textContent = text || "";
    el.hidden = !text;
  }

  // ---------------------------------------------------------------- formatting
  const fmtNum = (x, d = 1) => (x === null || x === undefined || !Number.isFinite(x) ? "–" : Math.abs(x) >= 1000 ? Math.round(x).toLocaleString("en") : x.toFixed(Number.isInteger(x) ? 0 : d));
  const fmtMs = (x) => (x === null || x === undefined ? "–" : x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${x.toFixed(x < 10 ? 2 : 1)} ms`);
  function fmtBytes(n) {
    if (n === null || n === undefined || !Number.isFinite(n)) return "–";
    const u = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < u.length - 1) (n /= 1024), i++;
    return `${n.toFixed(i === 0 || n >= 100 ? 0 : 1)} ${u[i]}`;
  }
  function fmtAge(ms) {
    if (!Number.isFinite(ms) || ms < 0) return "–";
    const s = Math.round(ms / 1000);
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }
  const fmtTime = (t) => (t ? new Date(t).toLocaleTimeString() : "–");
  const badge = (s) => h("span", { class: `badge ${String(s).replace(/[^a-z_]/g, "")}`, text: s });

  // ---------------------------------------------------------------- API (Authorization header, 401 → key prompt)
  class AuthRequired extends Error {}
  const hasScope = (s) => !!S.who && (S.who.scopes.includes(s) || S.who.scopes.includes("admin"));

  async function api(path, init = {}) {
    const headers = new Headers(init.headers || {});
    const key = sessionStorage.getItem(KEY_STORE);
    if (key) headers.set("authorization", `Bearer ${key}`);
    const res = await fetch(path, { ...init, headers, credentials: "omit", cache: "no-store" });
    if (res.status === 401) {
      askForKey(key ? "That key was refused (invalid or revoked)." : "");
      throw new AuthRequired();
    }
    return res;
  }
  async function apiJson(path, init) {
    const res = await api(path, init);
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(body.error || `${res.status} ${res.statusText}`);
    return body;
  }

  let authWaiters = [];
  function askForKey(error) {
    sessionStorage.removeItem(KEY_STORE);
    show("#login", true);
    note("#login-error", error);
    $("#api-key").focus();
  }
  function waitForLogin() {
    return new Promise((resolve) => authWaiters.push(resolve));
  }
  $("#login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("#api-key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORE, key);
    $("#api-key").value = "";
    show("#login", false);
    const ws = authWaiters;
    authWaiters = [];
    for (const w of ws) w();
  });
  $("#signout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    location.reload();
  });

  async function whoami() {
    for (;;) {
      try {
        S.who = await apiJson("/v1/whoami");
        break;
      } catch (err) {
        if (!(err instanceof AuthRequired)) throw err;
        await waitForLogin();
      }
    }
    const w = $("#whoami");
    w.textContent = S.who.auth === "off" ? "auth off" : `${S.who.tenant} · ${S.who.scopes.join(", ")}`;
    w.hidden = false;
    show("#signout", S.who.auth !== "off");
  }

  // ---------------------------------------------------------------- server-sent events over fetch
  function parseEvent(block) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line === "" || line.startsWith(":")) continue;
      const i = line.indexOf(":");
      const field = i < 0 ? line : line.slice(0, i);
      let value = i < 0 ? "" : line.slice(i + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    return { event, data: data.join("\n") };
  }

  async function streamEvents() {
    let backoff = 1000;
    for (;;) {
      setConn("connecting");
      try {
        const res = await api("/v1/events", { headers: { accept: "text/event-stream" } });
        if (!res.ok || !res.body) {
          const body = await res.json().catch(() => ({}));
          throw new Error(body.error || `HTTP ${res.status}`);
        }
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value.replace(/\r\n?/g, "\n");
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const ev = parseEvent(buf.slice(0, i));
            buf = buf.slice(i + 2);
            if (ev.data) onEvent(ev.event, JSON.parse(ev.data));
            backoff = 1000;
          }
        }
        setConn("down", "stream ended; reconnecting");
      } catch (err) {
        if (err instanceof AuthRequired) {
          setConn("down", "API key required");
          await waitForLogin();
          await whoami();
          continue;
        }
        setConn("down", String(err.message || err));
      }
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(backoff * 2, 10_000);
    }
  }
  function setConn(state, title) {
    const el = $("#conn");
    el.dataset.state = state;
    el.textContent = state === "live" ? "live" : state === "connecting" ? "connecting" : "reconnecting";
    el.title = title || "live updates";
  }

  function onEvent(kind, msg) {
    if (kind === "snapshot") {
      S.points = msg.points.slice(-MAX_POINTS);
      S.state = msg.state;
      setConn("live");
    } else if (kind === "point") {
      S.points.push(msg.point);
      if (S.points.length > MAX_POINTS) S.points.splice(0, S.points.length - MAX_POINTS);
      S.state = msg.state;
      setConn("live");
    } else return;
    render();
  }

  // ---------------------------------------------------------------- charts (uPlot)
  const charts = new Map();
  /** Tick steps of axes that count things (no 0.5 of a job). */
  const INTEGER_INCRS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000, 1e6, 1e7];
  const axisStyle = () => ({ stroke: "#8a96a8", grid: { stroke: "#263041", width: 1 }, ticks: { stroke: "#263041", width: 1 }, font: "11px system-ui" });

  /**
   * Draws `series` ([{label, values, color?, points?, dash?, stepped?}]) against `x` in the figure `id`; the figure's
   * data-points attribute says how many x values it holds (what the browser test reads).
   */
  function chart(id, x, series, opts = {}) {
    const fig = document.getElementById(id);
    if (!fig || fig.closest(".view").hidden) return;
    const plot = fig.querySelector(".plot");
    const empty = fig.querySelector(".note.empty");
    series = series.slice(0, MAX_SERIES);
    fig.dataset.points = String(x.length);
    fig.dataset.series = String(series.length);
    if (empty) {
      empty.textContent = opts.emptyText || "";
      empty.hidden = !(opts.emptyText && series.length === 0);
    }
    const sig = JSON.stringify([series.map((s) => s.label), opts.time !== false, opts.xLabel || "", opts.scatter || false]);
    let c = charts.get(id);
    const width = Math.max(200, plot.clientWidth || fig.clientWidth - 24);
    if (c && (c.sig !== sig || c.width !== width)) {
      if (c.sig === sig) {
        c.u.setSize({ width, height: 200 });
        c.width = width;
      } else {
        c.u.destroy();
        charts.delete(id);
        c = null;
      }
    }
    const data = [x, ...series.map((s) => s.values)];
    if (!c) {
      const u = new uPlot(
        {
          width,
          height: 200,
          legend: { show: true, live: false },
          cursor: { drag: { x: false, y: false }, points: { size: 6 } },
          scales: { x: { time: opts.time !== false }, y: { range: opts.yRange || ((u, min, max) => [Math.min(0, min ?? 0), max > 0 ? max * 1.1 : 1]) } },
          axes: [
            { ...axisStyle(), space: opts.time !== false ? 80 : 40, label: opts.xLabel, labelSize: opts.xLabel ? 16 : 0 },
            { ...axisStyle(), size: 76, ...(opts.integer ? { incrs: INTEGER_INCRS } : {}), values: (u, ticks) => ticks.map(opts.yFmt || ((v) => fmtNum(v))) },
          ],
          series: [
            {},
            ...series.map((s, i) => {
              const color = s.color || PALETTE[i % PALETTE.length];
              const base = { label: s.label, stroke: color, width: 1.75, spanGaps: false, value: (u, v) => (v === null || v === undefined ? "–" : (opts.yFmt || fmtNum)(v)) };
              if (s.points) return { ...base, paths: () => null, points: { show: true, size: s.size || 7, stroke: color, fill: s.fill || color + "99" } };
              if (s.stepped) return { ...base, paths: uPlot.paths.stepped({ align: 1 }), points: { show: false } };
              return { ...base, fill: series.length <= 2 && !s.noFill ? color + "1f" : undefined, dash: s.dash, points: { show: false } };
            }),
          ],
        },
        data,
        plot,
      );
      charts.set(id, (c = { u, sig, width }));
    } else c.u.setData(data, true);
  }

  /** x (epoch seconds) and one series per key that `pick(point)` returns a map of. */
  function seriesOf(pick, keys) {
    const pts = S.points;
    const x = pts.map((p) => p.t / 1000);
    const all = keys || [...new Set(pts.flatMap((p) => Object.keys(pick(p) || {})))].sort();
    return { x, series: all.map((k) => ({ label: k, values: pts.map((p) => { const m = pick(p); return m && m[k] !== undefined ? m[k] : null; }) })) };
  }
  const mapValues = (obj, f) => (obj ? Object.fromEntries(Object.entries(obj).map(([k, v]) => [k, f(v)])) : {});

  window.addEventListener("resize", () => render());

  // ---------------------------------------------------------------- views
  const VIEWS = ["fleet", "models", "jobs", "dead-letters", "experiments", "bytes"];
  function route() {
    const v = location.hash.replace(/^#/, "");
    S.view = VIEWS.includes(v) ? v : "fleet";
    for (const sec of document.querySelectorAll(".view")) sec.hidden = sec.dataset.view !== S.view;
    for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.view === S.view);
    render();
    refreshRest();
  }
  window.addEventListener("hashchange", route);

  function render() {
    if (!S.state) return;
    renderKpis();
    if (S.view === "fleet") renderFleet();
    else if (S.view === "models") renderModels();
    else if (S.view === "jobs") renderJobs();
    else if (S.view === "bytes") renderBytes();
  }

  const last = () => S.points[S.points.length - 1];

  function renderKpis() {
    const st = S.state;
    const p = last();
    setText("#kpi-workers", st.workers.length);
    setText("#kpi-models", `${st.models.filter((m) => m.ready).length} / ${st.models.length}`);
    const models = p ? Object.values(p.models) : [];
    setText("#kpi-rps", fmtNum(models.reduce((a, m) => a + m.rps, 0)));
    const p99 = models.map((m) => m.p99).filter((v) => v !== null);
    setText("#kpi-p99", p99.length ? fmtMs(Math.max(...p99)) : "–");
    setText("#kpi-queued", st.jobs.queued);
    setText("#kpi-running", st.jobs.running);
  }

  function replaceRows(tbody, rows, emptyText, cols) {
    tbody.replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { class: "empty", colspan: cols, text: emptyText }))]));
  }

  // ---- fleet
  function renderFleet() {
    const st = S.state;
    const now = Date.now();
    const rows = st.workers.map((w) => {
      const r = w.resources;
      const gpus = r ? (w.device.gpuIndex !== undefined ? r.gpus.filter((g) => g.index === w.device.gpuIndex) : r.gpus) : [];
      const util = gpus.map((g) => g.utilPercent).filter((v) => v !== undefined);
      const mem = gpus.map((g) => g.memUsedMb).filter((v) => v !== undefined);
      return h(
        "tr",
        { dataset: { worker: w.id } },
        h("td", { class: "mono", text: w.id }),
        h("td", { text: w.host }),
        h("td", { class: "wrap", title: w.device.note }, h("span", { class: "badge", text: w.device.kind }), " ", w.device.name),
        h("td", { text: w.device.gpuIndex ?? (gpus.length ? gpus.map((g) => g.index).join(", ") : "–") }),
        h("td", { class: "wrap mono", text: w.shards.join(" ") || "–" }),
        h("td", { class: "num", text: w.inFlight }),
        h("td", { class: "num", text: w.processed }),
        h("td", { class: "num", text: w.failed }),
        h("td", { class: "num", text: r ? fmtNum(r.cpuPercent) : "–" }),
        h("td", { class: "num", text: r ? fmtBytes(r.rssBytes) : "–" }),
        h("td", { class: "num", text: r ? fmtNum(r.load1, 2) : "–" }),
        h("td", { class: "num", text: util.length ? fmtNum(util.reduce((a, b) => a + b, 0) / util.length) : "–" }),
        h("td", { class: "num", text: mem.length ? `${fmtNum(mem.reduce((a, b) => a + b, 0), 0)} MB` : "–" }),
        h("td", { text: fmtAge(now - Date.parse(w.startedAt)) }),
      );
    });
    replaceRows($("#workers-table tbody"), rows, "No live worker. Start one with: jetshard worker", 14);
    const anyRes = st.workers.some((w) => w.resources);
    note("#fleet-note", st.workers.length && !anyRes ? "Workers report no resource samples yet (CPU, memory and GPU appear once their heartbeats carry them)." : "");
    const cpu = seriesOf((p) => mapValues(p.workers, (w) => w.cpu));
    chart("chart-cpu", cpu.x, cpu.series.filter((s) => s.values.some((v) => v !== null)), { yFmt: (v) => fmtNum(v, 0) });
    const mem = seriesOf((p) => mapValues(p.workers, (w) => w.rssMb));
    chart("chart-mem", mem.x, mem.series.filter((s) => s.values.some((v) => v !== null)), { yFmt: (v) => `${fmtNum(v, 0)}` });
    const gpu = seriesOf((p) => mapValues(p.workers, (w) => w.gpu));
    const gpuSeries = gpu.series.filter((s) => s.values.some((v) => v !== null));
    chart("chart-gpu", gpu.x, gpuSeries, { yRange: () => [0, 100], emptyText: "No GPU reported by any worker (nvidia-smi not found, or CPU-only workers)." });
  }

  // ---- models
  function renderModels() {
    const st = S.state;
    const p = last();
    const batchOf = (m) => {
      let inf = 0, exec = 0;
      for (const s of m.shards) if (s.totals) (inf += s.totals.inferences), (exec += s.totals.executions);
      return exec > 0 ? inf / exec : null;
    };
    const rows = st.models.map((m) => {
      const live = p && p.models[m.name];
      return h(
        "tr",
        { dataset: { model: m.name } },
        h("td", {}, h("strong", { text: m.name }), " ", badge(m.ready ? "ready" : "down")),
        h("td", { class: "num", text: m.versions > 1 ? `${m.latest} (${m.versions})` : m.latest }),
        h("td", { class: "wrap" }, m.shards.map((s) => h("span", { class: `shard${s.workers.length ? "" : " none"}`, title: s.workers.join(", ") || "no live worker", text: `#${s.index}: ${s.workers.length}` }))),
        h("td", { class: "wrap" }, m.shards.map((s) => h("span", { class: "shard", title: `in flight: ${s.inFlight ?? "–"}`, text: `#${s.index}: ${s.pending ?? "–"}` }))),
        h("td", { class: "num", dataset: { rps: m.name }, text: live ? fmtNum(live.rps) : "0" }),
        h("td", { class: "num", text: live ? fmtMs(live.p50) : "–" }),
        h("td", { class: "num", text: live ? fmtMs(live.p99) : "–" }),
        h("td", { class: "num", text: fmtNum(batchOf(m), 2) }),
        h("td", { class: "num", text: m.maxBatchSize }),
      );
    });
    replaceRows($("#models-table tbody"), rows, "No models. Add one with: jetshard models add NAME FILE.onnx", 9);

    const rps = seriesOf((pt) => mapValues(pt.models, (m) => m.rps));
    chart("chart-rps", rps.x, rps.series);
    const names = [...new Set(S.points.flatMap((pt) => Object.keys(pt.models)))].sort().slice(0, MAX_SERIES / 2);
    const lat = [];
    names.forEach((n, i) => {
      const color = PALETTE[i % PALETTE.length];
      lat.push({ label: `${n} p50`, color, values: S.points.map((pt) => pt.models[n]?.p50 ?? null) });
      lat.push({ label: `${n} p99`, color, dash: [5, 4], noFill: true, values: S.points.map((pt) => pt.models[n]?.p99 ?? null) });
    });
    chart("chart-latency", rps.x, lat, { yFmt: (v) => fmtMs(v) });
    const q = seriesOf((pt) => mapValues(pt.shards, (s) => s.pending));
    chart("chart-queue", q.x, q.series.filter((s) => s.values.some((v) => v !== null)), { integer: true, yFmt: (v) => fmtNum(v, 0) });
    const batch = seriesOf((pt) => mapValues(pt.shards, (s) => (s.executions ? s.inferences / s.executions : null)));
    const noStats = "Workers report no per-shard counters yet (heartbeat stats).";
    chart("chart-batch", batch.x, batch.series.filter((s) => s.values.some((v) => v !== null)), { emptyText: noStats, yFmt: (v) => fmtNum(v, 1) });
    const done = seriesOf((pt) => mapValues(pt.shards, (s) => s.done));
    chart("chart-done", done.x, done.series.filter((s) => s.values.some((v) => v !== null)), { emptyText: noStats });
  }

  // ---- jobs
  function renderJobs() {
    const st = S.state;
    for (const s of JOB_STATES) setText(`#jobs-${s}`, st.jobs[s]);
    const js = seriesOf((p) => p.jobs, JOB_STATES);
    chart("chart-jobs", js.x, js.series.map((s) => ({ ...s, color: STATE_COLORS[s.label], noFill: true })), { integer: true, yFmt: (v) => fmtNum(v, 0) });
    const canJobs = hasScope("jobs");
    note("#jobs-note", canJobs ? "" : "This API key lacks the jobs scope: recent jobs are not shown.");
    const now = Date.now();
    const rows = st.recentJobs.map((j) =>
      h(
        "tr",
        { dataset: { job: j.id }, class: S.selectedJob === j.id ? "selected" : "", onclick: () => selectJob(j.id) },
        h("td", { class: "mono", text: j.id }),
        h("td", { text: j.model }),
        h("td", {}, badge(j.status)),
        h("td", { class: "num", text: j.attempts }),
        h("td", { text: `${fmtAge(now - j.queuedAt)} ago` }),
        h("td", { class: "num", text: j.finishedAt ? fmtMs(j.finishedAt - j.queuedAt) : "–" }),
        h("td", { class: "mono", text: j.errorCode || "" }),
      ),
    );
    replaceRows($("#jobs-table tbody"), rows, canJobs ? "No async jobs yet (POST /v1/jobs)." : "–", 7);
  }

  async function selectJob(id) {
    S.selectedJob = id;
    renderJobs();
    const pane = $("#job-detail");
    pane.hidden = false;
    pane.replaceChildren(h("h3", { text: id }), h("p", { class: "meta", text: "loading…" }));
    try {
      const j = await apiJson(`/v1/jobs/${encodeURIComponent(id)}`);
      if (S.selectedJob !== id) return;
      const items = [
        ["status", badge(j.status)],
        ["model", `${j.model}${j.version ? ` v${j.version}` : ""}`],
        ["attempts", String(j.attempts)],
        ["priority", j.priority],
        ["worker", j.worker || "–"],
        ["queued", j.queuedAt ? new Date(j.queuedAt).toLocaleString() : "–"],
        ["started", j.startedAt ? new Date(j.startedAt).toLocaleString() : "–"],
        ["finished", j.finishedAt ? new Date(j.finishedAt).toLocaleString() : "–"],
        ["took", j.finishedAt ? fmtMs(j.finishedAt - j.queuedAt) : "–"],
        ["request id", j.requestId || "–"],
        ["tenant", j.tenant || "–"],
      ];
      const kids = [h("h3", { text: j.id }), h("dl", { id: "job-detail-fields" }, items.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { dataset: { field: k } }, v)]))];
      if (j.error) kids.push(h("h3", { text: `Error: ${j.error.code}` }), h("pre", { id: "job-error", text: j.error.message }));
      if (j.result && j.result.outputs) kids.push(h("h3", { text: "Outputs" }), h("pre", { text: j.result.outputs.map((o) => `${o.name} ${o.datatype} [${o.shape.join(", ")}]`).join("\n") }));
      pane.replaceChildren(...kids);
    } catch (err) {
      if (err instanceof AuthRequired) return;
      pane.replaceChildren(h("h3", { text: id }), h("p", { class: "error", text: String(err.message || err) }));
    }
  }

  // ---- dead letters
  async function loadDlq() {
    if (!hasScope("jobs")) {
      note("#dlq-note", "This API key lacks the jobs scope: dead letters are not shown.");
      replaceRows($("#dlq-table tbody"), [], "–", 8);
      return;
    }
    note("#dlq-note", "");
    try {
      S.dlq = (await apiJson("/v1/dead-letters?limit=100")).deadLetters;
      renderDlq();
    } catch (err) {
      if (!(err instanceof AuthRequired)) flash(String(err.message || err), true);
    }
  }
  function flash(text, bad) {
    const el = $("#dlq-message");
    el.textContent = text;
    el.classList.toggle("bad", !!bad);
    el.hidden = false;
  }
  function renderDlq() {
    const canAct = hasScope("jobs");
    const rows = S.dlq.map((d) => {
      const actions = canAct
        ? h(
            "td",
            {},
            h(
              "div",
              { class: "actions" },
              h("button", { type: "button", class: "small warn", dataset: { action: "replay" }, onclick: (ev) => (ev.stopPropagation(), replayDlq(d.id)), text: "Replay" }),
            S.confirmDelete === d.id
              ? h("button", { type: "button", class: "small danger", dataset: { action: "confirm-delete" }, onclick: (ev) => (ev.stopPropagation(), deleteDlq(d.id)), text: "Confirm delete" })
              : h("button", { type: "button", class: "small ghost", dataset: { action: "delete" }, onclick: (ev) => (ev.stopPropagation(), (S.confirmDelete = d.id), renderDlq()), text: "Delete" }),
            ),
          )
        : h("td", { text: "" });
      return h(
        "tr",
        { dataset: { dlq: d.id }, class: S.selectedDlq === d.id ? "selected" : "", onclick: () => inspectDlq(d.id) },
        h("td", { class: "mono", text: d.id }),
        h("td", { text: d.model }),
        h("td", { class: "mono", text: d.code }),
        h("td", { class: "wrap err", text: d.error }),
        h("td", { class: "num", text: d.attempts }),
        h("td", { title: d.failedAt || "", text: d.failedAt ? fmtTime(Date.parse(d.failedAt)) : "–" }),
        h("td", { class: "num", text: fmtBytes(d.bytes) }),
        actions,
      );
    });
    replaceRows($("#dlq-table tbody"), rows, "No dead letters.", 8);
    if (S.selectedDlq) inspectDlq(S.selectedDlq, true);
  }
  function inspectDlq(id, quiet) {
    const d = S.dlq.find((x) => x.id === id);
    const pane = $("#dlq-detail");
    if (!d) {
      pane.hidden = true;
      S.selectedDlq = null;
      return;
    }
    if (!quiet && S.selectedDlq !== id) {
      S.selectedDlq = id;
      renderDlq();
      return;
    }
    const items = [["model", d.model], ["subject", d.subject], ["code", d.code], ["attempts", String(d.attempts)], ["failed at", d.failedAt || "–"], ["bytes", fmtBytes(d.bytes)], ["stream seq", String(d.seq)], ["tenant", d.tenant || "–"]];
    pane.hidden = false;
    pane.replaceChildren(h("h3", { text: d.id }), h("dl", {}, items.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: v })])), h("pre", { id: "dlq-error", text: d.error || "(no message)" }));
  }
  async function replayDlq(id) {
    try {
      const r = await apiJson(`/v1/dead-letters/${encodeURIComponent(id)}/replay`, { method: "POST" });
      flash(`Replayed ${r.id}: queued again.`);
    } catch (err) {
      if (!(err instanceof AuthRequired)) flash(`Replay of ${id} failed: ${err.message || err}`, true);
    }
    await loadDlq();
  }
  async function deleteDlq(id) {
    S.confirmDelete = null;
    try {
      await apiJson(`/v1/dead-letters/${encodeURIComponent(id)}`, { method: "DELETE" });
      flash(`Deleted dead letter ${id}.`);
      if (S.selectedDlq === id) S.selectedDlq = null;
    } catch (err) {
      if (!(err instanceof AuthRequired)) flash(`Delete of ${id} failed: ${err.message || err}`, true);
    }
    await loadDlq();
  }
  $("#dlq-refresh").addEventListener("click", () => loadDlq());

  // ---- experiments
  function progressBar(p, mini) {
    const bar = h("div", { class: `progress${mini ? " mini" : ""}`, title: `${p.finished}/${p.maxTrials} finished` });
    for (const k of ["succeeded", "failed", "early_stopped", "running", "queued"]) {
      if (!p[k]) continue;
      const seg = h("span", { class: k, title: `${k}: ${p[k]}` });
      seg.style.width = `${(100 * p[k]) / Math.max(1, p.maxTrials)}%`;
      bar.append(seg);
    }
    return bar;
  }
  async function loadExperiments() {
    if (!hasScope("experiments")) {
      note("#exp-note", "This API key lacks the experiments scope.");
      return;
    }
    note("#exp-note", S.state && S.state.nas ? `Trials waiting in the queue: ${S.state.nas.pending}, being evaluated: ${S.state.nas.inFlight}.` : "");
    try {
      S.experiments = (await apiJson("/v1/experiments")).experiments.sort((a, b) => b.createdAt.localeCompare(a.createdAt));
    } catch (err) {
      if (!(err instanceof AuthRequired)) note("#exp-note", String(err.message || err));
      return;
    }
    const rows = S.experiments.map((e) =>
      h(
        "tr",
        { dataset: { exp: e.id }, class: S.selectedExp === e.id ? "selected" : "", onclick: () => ((S.selectedExp = e.id), loadExperiments()) },
        h("td", {}, h("strong", { text: e.name }), h("div", { class: "mono meta", text: e.id })),
        h("td", {}, badge(e.status)),
        h("td", { text: e.family }),
        h("td", { text: e.strategy }),
        h("td", { text: `${e.objective.direction} ${e.objective.metric}` }),
        h("td", {}, progressBar(e.progress, true), `${e.progress.finished}/${e.progress.maxTrials}`),
        h("td", { class: "num", text: e.best ? fmtNum(e.best.value, 4) : "–" }),
      ),
    );
    replaceRows($("#exp-table tbody"), rows, "No experiments yet (jetshard nas run SPEC).", 7);
    if (!S.selectedExp && S.experiments.length) S.selectedExp = S.experiments[0].id;
    if (S.selectedExp) await loadExperiment(S.selectedExp);
  }
  async function loadExperiment(id) {
    let rec, trials;
    try {
      [rec, { trials }] = await Promise.all([apiJson(`/v1/experiments/${encodeURIComponent(id)}`), apiJson(`/v1/experiments/${encodeURIComponent(id)}/trials`)]);
    } catch (err) {
      if (!(err instanceof AuthRequired)) note("#exp-note", String(err.message || err));
      return;
    }
    if (S.selectedExp !== id || S.view !== "experiments") return;
    show("#exp-detail", true);
    const obj = rec.spec.objective;
    setText("#exp-title", `${rec.name} — ${rec.status}${rec.reason ? ` (${rec.reason})` : ""}`);
    $("#exp-progress").replaceWith(Object.assign(progressBar(rec.progress), { id: "exp-progress" }));
    const p = rec.progress;
    setText("#exp-meta", `${p.finished}/${p.maxTrials} finished · ${p.succeeded} succeeded · ${p.failed} failed · ${p.early_stopped} early stopped · ${p.running} running · ${p.queued} queued${rec.lease ? ` · driven by ${rec.lease.holder}${rec.lease.live ? "" : " (lease expired)"}` : ""}${rec.devices.length ? ` · measured on ${rec.devices.join(", ")}` : ""}`);

    // best so far: every finished trial's objective, and the running best among feasible ones
    const better = (a, b) => (obj.direction === "maximize" ? a > b : a < b);
    const done = trials.filter((t) => t.finishedSeq).sort((a, b) => a.finishedSeq - b.finishedSeq);
    const xs = [], vals = [], best = [];
    let cur = null;
    for (const t of done) {
      const v = t.status === "succeeded" ? t.metrics?.[obj.metric] : undefined;
      if (v !== undefined && Number.isFinite(v) && t.feasible !== false && (cur === null || better(v, cur))) cur = v;
      xs.push(t.finishedSeq);
      vals.push(v !== undefined && Number.isFinite(v) ? v : null);
      best.push(cur);
    }
    chart("chart-best", xs, xs.length ? [{ label: "best so far", values: best, stepped: true, color: "#10b981" }, { label: obj.metric, values: vals, points: true, color: "#5b9cf6", size: 5 }] : [], { time: false, xLabel: "trials finished", emptyText: "No trial has finished yet.", yRange: (u, min, max) => (min === null ? [0, 1] : [min - Math.abs(max - min) * 0.1 - 1e-9, max + Math.abs(max - min) * 0.1 + 1e-9]) });

    // Pareto: first two objectives (or objective vs trial order), front highlighted
    const objs = rec.pareto.objectives;
    const front = new Set(rec.pareto.front.map((f) => f.trialId));
    const ok = trials.filter((t) => t.status === "succeeded" && t.metrics);
    const xm = objs.length >= 2 ? objs[1].metric : null;
    const pts = ok
      .map((t) => ({ x: xm ? t.metrics[xm] : t.finishedSeq ?? t.index, y: t.metrics[obj.metric], front: front.has(t.trialId) }))
      .filter((q) => Number.isFinite(q.x) && Number.isFinite(q.y))
      .sort((a, b) => a.x - b.x);
    const fig = $("#chart-pareto figcaption");
    fig.textContent = xm ? `Pareto: ${obj.metric} (${obj.direction}) vs ${xm} (${objs[1].direction}); front highlighted` : `${obj.metric} per trial; Pareto front highlighted`;
    chart(
      "chart-pareto",
      pts.map((q) => q.x),
      pts.length ? [{ label: "trials", values: pts.map((q) => (q.front ? null : q.y)), points: true, color: "#8a96a8", size: 6 }, { label: "Pareto front", values: pts.map((q) => (q.front ? q.y : null)), points: true, color: "#f59e0b", fill: "#f59e0b", size: 9 }] : [],
      { time: false, xLabel: xm || "trial", emptyText: "No succeeded trial yet.", yRange: (u, min, max) => (min === null ? [0, 1] : [min - Math.abs(max - min) * 0.1 - 1e-9, max + Math.abs(max - min) * 0.1 + 1e-9]), scatter: true },
    );

    // intermediate curves: one series per trial that reported any (the latest ones)
    const curves = trials.filter((t) => t.intermediate && t.intermediate.length).slice(-MAX_SERIES);
    const steps = Math.max(0, ...curves.map((t) => t.intermediate.length));
    chart(
      "chart-intermediate",
      Array.from({ length: steps }, (_, i) => i + 1),
      curves.map((t) => ({ label: t.trialId, values: Array.from({ length: steps }, (_, i) => t.intermediate[i] ?? null), noFill: true })),
      { time: false, xLabel: "step", emptyText: "No trial reported intermediate results (custom evaluators report them with ctx.report)." },
    );

    const metricsText = (m) => (m ? Object.entries(m).map(([k, v]) => `${k}=${fmtNum(v, 4)}`).join("  ") : "–");
    const pointText = (pt) => Object.entries(pt).map(([k, v]) => `${k}=${Array.isArray(v) ? `[${v.join(",")}]` : v}`).join(" ");
    const rows = trials.map((t) =>
      h(
        "tr",
        { dataset: { trial: t.trialId }, class: rec.best && rec.best.trialId === t.trialId ? "selected" : "" },
        h("td", { class: "mono", text: t.trialId }),
        h("td", {}, badge(t.status), front.has(t.trialId) ? h("span", { class: "badge running", title: "on the Pareto front", text: "front" }) : null),
        h("td", { class: "wrap mono", text: pointText(t.point) }),
        h("td", { class: "wrap mono", text: metricsText(t.metrics) }),
        h("td", { class: "num", text: t.attempts }),
        h("td", { class: "mono", text: t.worker || "–" }),
        h("td", { class: "num", text: t.durationMs !== undefined ? fmtMs(t.durationMs) : "–" }),
        h("td", { class: "wrap", text: t.error || (t.violations && t.violations.length ? `infeasible: ${t.violations.join("; ")}` : "") }),
      ),
    );
    replaceRows($("#trials-table tbody"), rows, "No trials yet.", 8);
  }

  // ---- bytes between pipeline stages
  function renderBytes() {
    const st = S.state;
    const p = last();
    const withStats = st.models.filter((m) => m.shards.some((s) => s.totals));
    note("#bytes-note", withStats.length ? "" : "Workers report no per-shard byte counters yet (heartbeat stats); the pipeline diagrams appear once they do.");
    const hopKeys = [];
    const boxes = withStats.map((m) => {
      const n = m.shards.length;
      const flow = h("div", { class: "flow" });
      const hop = (label, rate, total, key) => {
        hopKeys.push({ label: `${m.name}: ${label}`, key });
        return h("div", { class: "hop", dataset: { hop: `${m.name}:${label}` } }, h("span", { class: "rate", text: `${fmtBytes(rate)}/s` }), h("span", { class: "arrow" }), h("span", { class: "total", text: `${fmtBytes(total)} total` }));
      };
      const sp = (i) => (p && p.shards[`${m.name}:${i}`]) || {};
      flow.append(h("div", { class: "stage" }, "gateway", h("span", { class: "sub", text: "jobs in" })));
      m.shards.forEach((s, i) => {
        flow.append(i === 0 ? hop("in → 0", sp(0).bytesIn, s.totals?.bytesIn, { shard: `${m.name}:0`, f: "bytesIn" }) : hop(`${i - 1} → ${i}`, sp(i - 1).bytesOut, m.shards[i - 1].totals?.bytesOut, { shard: `${m.name}:${i - 1}`, f: "bytesOut" }));
        flow.append(h("div", { class: "stage" }, `shard ${s.index}`, h("span", { class: "sub", text: `${s.workers.length} worker${s.workers.length === 1 ? "" : "s"}` })));
      });
      flow.append(hop(`${n - 1} → out`, sp(n - 1).bytesOut, m.shards[n - 1].totals?.bytesOut, { shard: `${m.name}:${n - 1}`, f: "bytesOut" }));
      flow.append(h("div", { class: "stage" }, "results", h("span", { class: "sub", text: "to callers" })));
      return h("div", { class: "pipeline", dataset: { model: m.name } }, h("h3", { text: `${m.name} · ${n} stage${n === 1 ? "" : "s"}` }), flow);
    });
    $("#pipelines").replaceChildren(...boxes);
    const x = S.points.map((pt) => pt.t / 1000);
    chart("chart-bytes", x, hopKeys.map((k) => ({ label: k.label, noFill: true, values: S.points.map((pt) => pt.shards[k.key.shard]?.[k.key.f] ?? null) })), { yFmt: (v) => `${fmtBytes(v)}/s` });
  }

  // ---------------------------------------------------------------- REST views refresh while visible
  let restTimer = null;
  function refreshRest() {
    clearTimeout(restTimer);
    if (!S.who) return;
    const run = S.view === "dead-letters" ? loadDlq : S.view === "experiments" ? loadExperiments : null;
    if (!run) return;
    void run().finally(() => {
      restTimer = setTimeout(refreshRest, 3000);
    });
  }

  // ---------------------------------------------------------------- start
  async function main() {
    if (typeof uPlot === "undefined") throw new Error("uPlot did not load");
    await whoami();
    route();
    void streamEvents();
  }
  main().catch((err) => setConn("down", String(err.message || err)));
})();
