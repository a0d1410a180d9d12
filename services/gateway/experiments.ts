/**
 * /v1/experiments routes (placeholder until the NAS controller lands).
 */
import { Hono } from "hono";
import type { JetshardConfig } from "#shared/config.js";
import type { Logger } from "#shared/log.js";
import type { Infra } from "#shared/nats.js";

export function experimentRoutes(_deps: { config: JetshardConfig; log: Logger; infra: Infra }): Hono {
  return new Hono();
}
