/**
 * The small HTTP listener of workers and controllers (the gateway serves the same on its API port): `/metrics` for
 * Prometheus, `/health/live` and `/health/ready` for Kubernetes probes. It has no authentication, so it serves
 * nothing secret: metric values and labels (model names, shard indexes, error codes, GPU names) and a readiness
 * reason, never config values, credentials or job data. Bind it to a private address (JETSHARD_OPS_HOST).
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";
import { ConfigError } from "./config.js";
import type { Logger } from "./log.js";

/** Whether a process is ready for work, and why not. */
export type Readiness = { ready: true } | { ready: false; reason: string };

export interface OpsServerOptions {
  /** JETSHARD_OPS_HOST. */
  host: string;
  /** JETSHARD_OPS_PORT; 0 picks a free port. */
  port: number;
  registry: Registry;
  ready: () => Readiness;
  log: Logger;
  /** Named in the log line and in the error when the port is taken. */
  service: string;
}

export interface OpsServer {
  /** The bound port. */
  readonly port: number;
  close(): Promise<void>;
}

/**
 * Starts the listener; resolves once it is bound.
 * @throws ConfigError naming JETSHARD_OPS_PORT when the port is in use or may not be bound.
 */
export async function startOpsServer(opts: OpsServerOptions): Promise<OpsServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "application/json" }).end(JSON.stringify({ error: `method ${req.method} not allowed` }));
      return;
    }
    const json = (status: number, body: unknown) => res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" }).end(req.method === "HEAD" ? undefined : JSON.stringify(body));
    if (path === "/health/live") return void json(200, { live: true });
    if (path === "/health/ready") {
      const r = opts.ready();
      return void json(r.ready ? 200 : 503, r.ready ? { ready: true } : { ready: false, reason: r.reason });
    }
    if (path === "/metrics") {
      opts.registry.metrics().then(
        (text) => res.writeHead(200, { "content-type": opts.registry.contentType, "cache-control": "no-store" }).end(req.method === "HEAD" ? undefined : text),
        (err) => {
          opts.log.error({ err }, "rendering metrics failed");
          json(500, { error: "rendering metrics failed" });
        },
      );
      return;
    }
    json(404, { error: `no route for ${req.method} ${path}; try /metrics, /health/live, /health/ready` });
  });
  // a scrape or probe is short: do not let idle keep-alive sockets hold a stopping process
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) => {
      const why = err.code === "EADDRINUSE" ? "is in use" : err.code === "EACCES" ? "may not be bound by this user" : `could not be bound (${err.code ?? err.message})`;
      reject(new ConfigError(`JETSHARD_OPS_PORT: port ${opts.port} on ${opts.host} ${why}; pick another (0 = any free port) or set JETSHARD_OPS_HTTP=0 to turn the ${opts.service}'s ops listener off`, { cause: err }));
    });
    server.listen(opts.port, opts.host, () => resolve());
  });
  // never the reason a process stays up: a start that fails after this point must still let the process exit
  server.unref();
  const port = (server.address() as AddressInfo).port;
  opts.log.info({ url: `http://${opts.host.includes(":") ? `[${opts.host}]` : opts.host}:${port}`, endpoints: ["/metrics", "/health/live", "/health/ready"] }, `${opts.service} ops listener on port ${port}`);
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
