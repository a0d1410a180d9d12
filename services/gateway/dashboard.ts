/**
 * The live dashboard: `GET /` (a static page, no data in it), its assets under `/assets/` (the page's script and
 * style from services/gateway/dashboard/, uPlot from node_modules), `GET /v1/events` (server-sent events: a
 * snapshot of the last 10 minutes, then one point every second) and `GET /v1/whoami` (the caller's tenant and
 * scopes, so the page shows only the actions the key may take).
 *
 * The page and assets are public: they hold no data. Everything else needs a key when auth is on; the page asks for
 * one when the API answers 401 and sends it as `Authorization: Bearer`, never in a URL (EventSource cannot send
 * headers, so the page reads the event stream with fetch). A strict Content-Security-Policy allows only this
 * origin's scripts and styles: no inline script, no CDN.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { Hono } from "hono";
import { streamSSE } from "hono/streaming";
import { SCOPES, canAccess, hasScope, type Principal } from "#shared/auth.js";
import { JobError } from "#shared/errors.js";
import type { GatewayEnv } from "./auth.js";
import type { LivePoint, LiveSampler, LiveState } from "./live.js";

/** Content-Security-Policy of the dashboard page: only this origin's script, style and API; no inline code. */
export const DASHBOARD_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

/** Most event streams one gateway serves at once; beyond it a stream is refused with 429. */
export const MAX_EVENT_STREAMS = 64;

const here = path.join(import.meta.dirname, "dashboard");
const uplotDir = path.dirname(createRequire(import.meta.url).resolve("uplot/package.json"));

/** name → [file, content type]; read once, on first request. */
const ASSETS: Record<string, [string, string]> = {
  "dashboard.js": [path.join(here, "dashboard.js"), "text/javascript; charset=utf-8"],
  "dashboard.css": [path.join(here, "dashboard.css"), "text/css; charset=utf-8"],
  "favicon.svg": [path.join(here, "favicon.svg"), "image/svg+xml"],
  "uplot.min.js": [path.join(uplotDir, "dist/uPlot.iife.min.js"), "text/javascript; charset=utf-8"],
  "uPlot.min.css": [path.join(uplotDir, "dist/uPlot.min.css"), "text/css; charset=utf-8"],
};
const cache = new Map<string, Buffer>();
const read = (file: string) => {
  let b = cache.get(file);
  if (!b) cache.set(file, (b = readFileSync(file)));
  return b;
};

const SECURITY_HEADERS = {
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
};

export interface DashboardDeps {
  live: LiveSampler;
  mode: "keys" | "off";
  /** True once the key with this id is revoked (or gone): its open event stream is ended. */
  isRevoked: (keyId: string) => boolean;
}

/** The state as this caller may see it: recent jobs only with the `jobs` scope, and only its tenant's. */
function stateFor(p: Principal, s: LiveState): LiveState {
  const jobs = hasScope(p, "jobs");
  return { ...s, recentJobs: jobs ? s.recentJobs.filter((j) => canAccess(p, j.tenant)).slice(0, 50) : [] };
}

export function dashboardRoutes({ live, mode, isRevoked }: DashboardDeps): Hono<GatewayEnv> {
  const app = new Hono<GatewayEnv>();

  app.get("/", (c) =>
    c.body(read(path.join(here, "index.html")) as unknown as ArrayBuffer, 200, {
      "content-type": "text/html; charset=utf-8",
      "content-security-policy": DASHBOARD_CSP,
      "cache-control": "no-cache",
      ...SECURITY_HEADERS,
    }),
  );

  app.get("/assets/:name", (c) => {
    const a = ASSETS[c.req.param("name")];
    if (!a) return c.json({ error: `no asset "${c.req.param("name")}"` }, 404);
    return c.body(read(a[0]) as unknown as ArrayBuffer, 200, { "content-type": a[1], "cache-control": "no-cache", ...SECURITY_HEADERS });
  });

  app.get("/v1/whoami", (c) => {
    const p = c.get("principal");
    return c.json({ auth: mode, tenant: p.tenant, scopes: SCOPES.filter((s) => p.scopes.has(s)), ...(p.keyId ? { keyId: p.keyId } : {}) });
  });

  app.get("/v1/events", (c) => {
    if (live.subscribers >= MAX_EVENT_STREAMS) {
      c.header("Retry-After", "5");
      throw new JobError("QUOTA_EXCEEDED", `this gateway already serves ${live.subscribers} event streams; retry later`);
    }
    const p = c.get("principal");
    c.header("cache-control", "no-cache");
    c.header("x-accel-buffering", "no");
    return streamSSE(c, async (stream) => {
      let writing = false;
      let done!: () => void;
      const ended = new Promise<void>((r) => (done = r));
      const send = async (event: string, data: unknown) => {
        writing = true;
        try {
          await stream.writeSSE({ event, data: JSON.stringify(data) });
        } finally {
          writing = false;
        }
      };
      const off = live.subscribe(
        (point: LivePoint, state: LiveState) => {
          if (p.keyId && isRevoked(p.keyId)) return done();
          // a reader that cannot keep up misses points rather than piling them up here
          if (writing || stream.aborted) return;
          send("point", { point, state: stateFor(p, state) }).catch(done);
        },
        () => done(),
      );
      stream.onAbort(() => done());
      try {
        const snap = live.snapshot();
        await send("snapshot", { ...snap, state: stateFor(p, snap.state) });
        await ended;
      } finally {
        off();
      }
    });
  });

  return app;
}
