/**
 * Evaluates NAS trials published on jetshard.nas.<experiment> (placeholder until the NAS runner lands).
 */
import type { JetshardConfig } from "#shared/config.js";
import type { Logger } from "#shared/log.js";
import type { Infra } from "#shared/nats.js";
import type { DeviceInfo } from "./device.js";

export interface TrialRunnerDeps {
  infra: Infra;
  config: JetshardConfig;
  log: Logger;
  workerId: string;
  device: DeviceInfo;
}

export interface TrialRunner {
  start(): Promise<void>;
  /** Stops fetching and waits for running trials to finish or be handed back. */
  stop(): Promise<void>;
  /** Trials running now. */
  busy(): number;
}

export function createTrialRunner(_deps: TrialRunnerDeps): TrialRunner {
  return { async start() {}, async stop() {}, busy: () => 0 };
}
