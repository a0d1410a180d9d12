/**
 * `jetshard logs`: reads the LOGS stream every process publishes to, so one job can be followed through the
 * gateway, every pipeline stage and retry. Human-readable on a terminal (pino-pretty), JSON lines otherwise.
 */
import { JobError } from "#shared/errors.js";
import { logFormatter, parseSince, readLogs, type LogRecord } from "#shared/logs.js";
import { loadConfig } from "#shared/config.js";
import { connectCli } from "./connect.js";
import { UsageError } from "./errors.js";

/** Options of `jetshard logs`. */
export interface LogsOptions {
  follow?: boolean;
  job?: string;
  service?: string;
  level?: string;
  since?: string;
  limit?: number;
  json?: boolean;
}

/** A bad option comes back from shared/logs.ts as a 400 naming it ("since: ..."): say which flag. */
function asUsage(err: unknown): unknown {
  return err instanceof JobError && err.code === "BAD_REQUEST" ? new UsageError(`--${err.message}`) : err;
}

/** `jetshard logs`: prints the selected records; with --follow keeps printing until Ctrl-C (then exits 0). */
export async function logs(opts: LogsOptions): Promise<void> {
  let since: number | undefined;
  try {
    since = opts.since === undefined ? undefined : parseSince(opts.since);
  } catch (err) {
    throw asUsage(err);
  }
  const json = opts.json || !process.stdout.isTTY;
  const format = json ? (r: LogRecord) => r.line : logFormatter();
  const config = loadConfig();
  const nc = await connectCli(config);
  const abort = new AbortController();
  const onSigint = () => abort.abort();
  process.once("SIGINT", onSigint);
  process.once("SIGTERM", onSigint);
  try {
    await readLogs(nc, { follow: opts.follow, job: opts.job, service: opts.service, level: opts.level, since, limit: opts.limit, signal: abort.signal }, (r) => {
      const text = format(r);
      process.stdout.write(text.endsWith("\n") ? text : text + "\n");
    });
  } catch (err) {
    throw asUsage(err);
  } finally {
    process.off("SIGINT", onSigint);
    process.off("SIGTERM", onSigint);
    await nc.drain().catch(() => undefined);
  }
}
