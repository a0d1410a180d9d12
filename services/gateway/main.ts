import { loadConfig } from "#shared/config.js";
import { createLogger } from "#shared/log.js";
import { onShutdown } from "../cli/signals.js";
import { createGateway } from "./gateway.js";

/** `jetshard gateway`: reads config, builds the HTTP gateway, stops it on SIGTERM. */
export async function runGateway(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const config = loadConfig(env);
  const log = createLogger({ level: config.logLevel, name: "gateway", format: config.logs.format, central: config.logs.stream });
  const gateway = createGateway({ config, log });
  onShutdown(log, () => gateway.stop());
  await gateway.start();
}
