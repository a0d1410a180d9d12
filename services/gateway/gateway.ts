import { serve, type ServerType } from "@hono/node-server";
import type { AddressInfo } from "node:net";
import type { NatsConnection } from "@nats-io/transport-node";
import { JetshardClient } from "#shared/client.js";
import type { JetshardConfig } from "#shared/config.js";
import { KvMirror } from "#shared/kv-mirror.js";
import type { Logger } from "#shared/log.js";
import { attachLogs } from "#shared/logs.js";
import { connectNats, openInfra } from "#shared/nats.js";
import { ModelRecordSchema, WorkerInfoSchema } from "#shared/wire.js";
import { createApp, type AppDeps } from "./app.js";
import { authMode } from "./auth.js";
import { createLiveSampler, type LiveSampler } from "./live.js";
import { ApiKeyRecordSchema, openApiKeys } from "#shared/auth.js";

export interface Gateway {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** The bound port (useful with JETSHARD_PORT=0). */
  readonly port: number;
  readonly url: string;
}

export function createGateway({ config, log: rootLog, nc: givenNc }: { config: JetshardConfig; log: Logger; nc?: NatsConnection }): Gateway {
  const log = rootLog.child({ component: "gateway" });
  let server: ServerType | null = null;
  let nc: NatsConnection | null = null;
  let client: JetshardClient | null = null;
  let live: LiveSampler | null = null;
  const mirrors: Array<KvMirror<unknown>> = [];
  let port = config.port;

  return {
    get port() {
      return port;
    },
    get url() {
      return `http://${config.host === "0.0.0.0" ? "127.0.0.1" : config.host}:${port}`;
    },
    async start() {
      // before connecting: a refused start must leave nothing open
      const mode = authMode(config);
      nc = givenNc ?? (await connectNats(config, "jetshard-gateway", log));
      attachLogs(rootLog, nc);
      const infra = await openInfra(nc, { ...config, log });
      const models = new KvMirror(infra.models, ModelRecordSchema, log);
      const workers = new KvMirror(infra.workers, WorkerInfoSchema, log);
      await Promise.all([models.start(), workers.start()]);
      mirrors.push(models as KvMirror<unknown>, workers as KvMirror<unknown>);
      let keys: AppDeps["keys"];
      if (mode === "keys") {
        const kv = await openApiKeys(nc, config.replicas);
        const mirror = new KvMirror(kv, ApiKeyRecordSchema, log);
        await mirror.start();
        mirrors.push(mirror as KvMirror<unknown>);
        keys = { kv, mirror };
      }
      client = new JetshardClient(nc, { infra });
      live = createLiveSampler({ config, log, infra, workers, models });
      await live.start();
      const app = createApp({ config, log, infra, client, models, workers, keys, live });
      await new Promise<void>((resolve, reject) => {
        server = serve({ fetch: app.fetch, port: config.port, hostname: config.host }, (addr: AddressInfo) => {
          port = addr.port;
          resolve();
        });
        server.once("error", reject);
      });
      log.info({ url: this.url, auth: mode }, "gateway listening");
    },
    async stop() {
      // ends the dashboards' event streams, which would otherwise hold the server open
      live?.stop();
      await new Promise<void>((r) => {
        if (!server) return r();
        server.close(() => r());
        // keep-alive sockets would hold close() open; in-flight requests get a grace period
        (server as import("node:http").Server).closeIdleConnections?.();
        setTimeout(() => (server as import("node:http").Server).closeAllConnections?.(), 5_000).unref();
      });
      for (const m of mirrors) m.stop();
      await client?.close();
      if (!givenNc) await nc?.drain().catch(() => undefined);
      log.info("gateway stopped");
    },
  };
}
