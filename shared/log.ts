import { pino, type Logger } from "pino";

export type { Logger };

/** The root JSON logger of a process; components take `log.child({ component })`. */
export function createLogger(opts: { level?: string; name?: string } = {}): Logger {
  return pino({
    name: opts.name ?? "jetshard",
    level: opts.level ?? process.env.JETSHARD_LOG_LEVEL ?? "info",
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  });
}

/** A logger that writes nothing (tests, embedding). */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
