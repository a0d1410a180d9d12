import { loadConfig } from "#shared/config.js";
import { createLogger } from "#shared/log.js";
import { onShutdown } from "../cli/signals.js";
import { createController } from "./controller.js";

/** `jetshard controller`: reads config, builds the NAS controller, stops it on SIGTERM. */
export async function runController(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const config = loadConfig(env);
  const log = createLogger({ level: config.logLevel, name: "controller", format: config.logs.format, central: config.logs.stream });
  const controller = createController({ config, log });
  onShutdown(log, () => controller.stop());
  await controller.start();
}
