/**
 * The NAS controller (placeholder until it lands).
 */
import type { NatsConnection } from "@nats-io/transport-node";
import type { JetshardConfig } from "#shared/config.js";
import type { Logger } from "#shared/log.js";

export interface Controller {
  start(): Promise<void>;
  stop(): Promise<void>;
}

export function createController(_deps: { config: JetshardConfig; log: Logger; nc?: NatsConnection }): Controller {
  let timer: NodeJS.Timeout | null = null;
  return {
    async start() {
      timer = setInterval(() => undefined, 60_000);
    },
    async stop() {
      if (timer) clearInterval(timer);
    },
  };
}
