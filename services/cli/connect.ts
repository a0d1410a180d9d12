/**
 * How CLI commands reach NATS and print what they read: one place that turns connection failures into the
 * exit codes of errors.ts (3 unreachable, 4 refused) and writes `--json` output as one document.
 */
import { ConfigError, loadConfig, type JetshardConfig } from "#shared/config.js";
import { connectNats, openInfra, type Infra, type NatsConnection } from "#shared/nats.js";
import { PermissionDeniedError, UnavailableError, exitCodeFor, EXIT } from "./errors.js";

/**
 * Connects to NATS as the CLI.
 * @throws ConfigError for bad settings, PermissionDeniedError when NATS refuses the credentials, UnavailableError
 *   when no server answers.
 */
export async function connectCli(config: JetshardConfig, name = "jetshard-cli"): Promise<NatsConnection> {
  try {
    return await connectNats(config, name);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    if (exitCodeFor(err) === EXIT.permission) throw new PermissionDeniedError((err as Error).message, { cause: err });
    throw new UnavailableError(`cannot reach NATS at ${config.natsServers.join(",")} (set JETSHARD_NATS_URL): ${(err as Error).message}`, { cause: err });
  }
}

/** Runs `fn` with the streams and buckets (bound as the admin CLI), then drains the connection. */
export async function withInfra<T>(fn: (infra: Infra, config: JetshardConfig) => Promise<T>): Promise<T> {
  const config = loadConfig();
  const nc = await connectCli(config);
  try {
    return await fn(await openInfra(nc, config), config);
  } finally {
    await nc.drain().catch(() => undefined);
  }
}

/** Prints one JSON document on stdout (`--json`). */
export function printJson(value: unknown, pretty = false): void {
  process.stdout.write(JSON.stringify(value, null, pretty ? 2 : undefined) + "\n");
}

/** Prints lines on stdout, or `empty` when there are none. */
export function printLines(lines: string[], empty: string): void {
  process.stdout.write((lines.length ? lines.join("\n") : empty) + "\n");
}
