import { loadConfig } from "#shared/config.js";
import { createLogger } from "#shared/log.js";
import { onShutdown } from "../cli/signals.js";
import { createWorker } from "./worker.js";

/** `jetshard worker`: reads config, builds a worker, drains it on SIGTERM. */
export async function runWorker(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const config = loadConfig(env);
  const log = createLogger({ level: config.logLevel, name: "worker", format: config.logs.format, central: config.logs.stream });
  const worker = createWorker({ config, log });
  onShutdown(log, () => worker.stop());
  await worker.start();
}
