import { pino, type DestinationStream, type Logger, type StreamEntry } from "pino";
import pretty from "pino-pretty";
import { LogPublisher, registerLogPublisher } from "./logs.js";

export type { Logger };

export interface CreateLoggerOptions {
  /** pino level; default JETSHARD_LOG_LEVEL, else "info". */
  level?: string;
  /** The process: gateway, worker, controller (also the service its central log records are published under). */
  name?: string;
  /** "json": JSON lines; "pretty": pino-pretty; "auto" (default): pretty when stdout is a TTY, JSON otherwise. */
  format?: "auto" | "json" | "pretty";
  /**
   * Also publish every record to the LOGS stream (config.logs.stream), once `attachLogs(log, nc)` gives it a
   * connection; until then, and while NATS is away, records wait in a bounded buffer.
   */
  central?: boolean;
  /** Where local output goes instead of stdout (tests); null: nowhere. */
  destination?: DestinationStream | null;
}

/**
 * The root logger of a process; components take `log.child({ component })`, jobs `log.child({ job })`.
 * Writes synchronously (pino-pretty runs as a stream in this thread, not a worker transport), so nothing is lost
 * at exit and tests end cleanly.
 */
export function createLogger(opts: CreateLoggerOptions = {}): Logger {
  const name = opts.name ?? "jetshard";
  const options = {
    name,
    level: opts.level ?? process.env.JETSHARD_LOG_LEVEL ?? "info",
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  const local = opts.destination !== undefined ? opts.destination : localDestination(opts.format ?? "auto");
  if (!opts.central) return local ? pino(options, local) : pino({ ...options, enabled: false });
  // every stream takes every level: the logger's own level decides what is written
  const streams: StreamEntry[] = [];
  if (local) streams.push({ level: "trace", stream: local });
  const publisher = new LogPublisher(name);
  streams.push({ level: "trace", stream: publisher });
  const multi = pino.multistream(streams);
  registerLogPublisher(multi, publisher);
  return pino(options, multi);
}

function localDestination(format: "auto" | "json" | "pretty"): DestinationStream {
  const usePretty = format === "pretty" || (format === "auto" && Boolean(process.stdout.isTTY));
  if (!usePretty) return pino.destination({ dest: 1, sync: true });
  return pretty({ sync: true, colorize: Boolean(process.stdout.isTTY), destination: 1, translateTime: "SYS:HH:MM:ss.l", ignore: "hostname" });
}

/** A logger that writes nothing (tests, embedding). */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
