/**
 * Central logs. Every gateway, worker and controller also publishes its log records (pino's JSON lines, unchanged)
 * to the bounded LOGS stream, one subject per service and level (`jetshard.logs.<service>.<level>`), so
 * `jetshard logs` reads and follows the whole fleet, and `--job ID` follows one job through the gateway, every
 * pipeline stage and every retry (each of them logs the job id under `job`).
 *
 * Publishing must never slow down or break the process that logs: records go out with core NATS publishes (no
 * JetStream ack per line); while NATS is away they wait in a bounded in-memory buffer whose oldest records are
 * dropped and counted; a failure is never logged from inside the publisher (that would loop), only once after
 * recovery ("dropped N records") or once when this NATS user may not publish logs at all.
 */
import { errors as natsErrors, type NatsConnection } from "@nats-io/transport-node";
import { AckPolicy, DeliverPolicy, DiscardPolicy, RetentionPolicy, StorageType, jetstream, jetstreamManager, type Consumer, type JsMsg, type StreamConfig } from "@nats-io/jetstream";
import { pino, type Logger } from "pino";
import { prettyFactory } from "pino-pretty";
import { JobError } from "./errors.js";
import { STREAMS, subjects } from "./subjects.js";

const ns = (ms: number) => ms * 1_000_000; // JetStream durations are nanoseconds

/** The services that publish logs: the first token after `jetshard.logs.`. */
export const LOG_SERVICES = ["gateway", "worker", "controller"] as const;
/** pino's level labels, lowest first. */
export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

const LEVEL_VALUES: Record<string, number> = pino.levels.values;
const LEVEL_LABELS: Record<number, string> = pino.levels.labels;

/** Limits of the LOGS stream (config.logs and config.replicas). */
export interface LogsStreamOptions {
  /** Oldest records are discarded beyond this many bytes. */
  maxBytes: number;
  /** Records older than this are discarded. */
  maxAgeMs: number;
  /** Replicas of the stream (1 on one server). */
  replicas?: number;
}

/** The LOGS stream's configuration: limits retention, file storage, discard old (openInfra creates it). */
export function logsStreamConfig(opts: LogsStreamOptions): Partial<StreamConfig> & { name: string } {
  return {
    name: STREAMS.logs,
    subjects: [subjects.logsAll],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_bytes: opts.maxBytes,
    max_age: ns(opts.maxAgeMs),
    max_msgs: -1,
    num_replicas: opts.replicas ?? 1,
  };
}

/** Counters of one process's log publisher. */
export interface LogPublisherStats {
  /** Records handed to NATS. */
  published: number;
  /** Records lost: dropped from a full buffer while NATS was away, too large, or refused by NATS. */
  dropped: number;
  /** Records waiting for NATS now. */
  buffered: number;
  /** Whether records go out now (attached, connected, allowed). */
  connected: boolean;
}

const LEVEL_RE = /^\{"level":(?:(\d+)|"([a-z]+)")/;

/**
 * A pino destination (one `write` per JSON line) that publishes each record to `jetshard.logs.<service>.<level>`
 * once attached to a connection (on the next turn of the event loop, in one burst), and buffers up to
 * `maxBufferBytes` before that and while the connection is down. `write` never throws and never blocks on NATS.
 */
export class LogPublisher {
  readonly service: string;
  private nc: NatsConnection | null = null;
  private up = false;
  /** Set when this NATS user may not publish logs: nothing more is even buffered. */
  private refused = false;
  private queue: string[] = [];
  private head = 0;
  private bytes = 0;
  private droppedUnreported = 0;
  private scheduled = false;
  private log: Logger | undefined;
  private readonly counts = { published: 0, dropped: 0 };

  /**
   * @param service the subject token (gateway, worker, controller); other characters than [A-Za-z0-9_-] become "_".
   * @param maxBufferBytes bound of the records kept while NATS is away (default 4 MiB); the oldest go first.
   */
  constructor(service: string, private readonly maxBufferBytes = 4 * 1024 * 1024) {
    this.service = service.replace(/[^A-Za-z0-9_-]/g, "_") || "unknown";
  }

  /** pino's destination interface: one JSON line, ending in "\n". */
  write(line: string): void {
    if (this.refused) return;
    this.enqueue(line);
    // published on the next turn of the event loop, not now: a record logged because the connection just dropped
    // (nats.js' status listeners run in turn) would otherwise go to a dead socket before we hear of the drop
    if (this.up && !this.scheduled) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        this.flush();
      });
    }
  }

  stats(): LogPublisherStats {
    return { ...this.counts, buffered: this.queue.length - this.head, connected: this.up && !this.refused };
  }

  /**
   * Starts publishing on `nc` (what was buffered first), following its status: buffering while it is
   * disconnected, flushing on reconnect, stopping for good when NATS refuses the subject. `log` (this publisher's
   * own logger) reports drops once after recovery. Returns a detach function.
   */
  attach(nc: NatsConnection, log?: Logger): () => void {
    this.nc = nc;
    this.log = log;
    this.up = !nc.isClosed();
    const mine = () => this.nc === nc;
    void (async () => {
      for await (const s of nc.status()) {
        if (!mine()) break;
        if (s.type === "disconnect") this.up = false;
        else if (s.type === "reconnect") {
          this.up = true;
          this.flush();
        } else if (s.type === "error" && s.error instanceof natsErrors.PermissionViolationError && s.error.subject.startsWith(`${subjects.logsAll.slice(0, -1)}`)) {
          this.refuse(s.error.subject);
        }
      }
    })().catch(() => undefined);
    void nc.closed().then(() => {
      if (mine()) this.detach();
    });
    this.flush();
    return () => {
      if (mine()) this.detach();
    };
  }

  private detach(): void {
    this.nc = null;
    this.up = false;
  }

  private refuse(subject: string): void {
    if (this.refused) return;
    this.refused = true;
    this.counts.dropped += this.queue.length - this.head;
    this.queue = [];
    this.head = 0;
    this.bytes = 0;
    // refused is set first: this record is not published, so it cannot cause another violation
    this.log?.warn({ subject }, "central logs: this NATS user may not publish log records (nats-auth.conf); they stay local");
  }

  /** Publishes one line; false when the connection turned out to be unusable (the caller buffers it). */
  private publish(line: string): boolean {
    const nc = this.nc;
    if (!nc) return false;
    const body = line.endsWith("\n") ? line.slice(0, -1) : line;
    const max = nc.info?.max_payload;
    // UTF-16 length * 3 bounds the UTF-8 size: only long lines pay for measuring
    if (max !== undefined && body.length * 3 > max && Buffer.byteLength(body) > max) {
      this.counts.dropped++;
      this.droppedUnreported++;
      return true;
    }
    try {
      nc.publish(subjects.log(this.service, levelOfLine(body)), body);
      this.counts.published++;
      return true;
    } catch {
      // closed or draining: keep it for the next connection
      this.up = false;
      return false;
    }
  }

  private enqueue(line: string): void {
    this.queue.push(line);
    this.bytes += line.length;
    while (this.bytes > this.maxBufferBytes && this.head < this.queue.length) {
      this.bytes -= this.queue[this.head]!.length;
      this.queue[this.head++] = "";
      this.counts.dropped++;
      this.droppedUnreported++;
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }

  private flush(): void {
    while (this.up && this.head < this.queue.length) {
      const line = this.queue[this.head]!;
      if (!this.publish(line)) break;
      this.bytes -= line.length;
      this.queue[this.head++] = "";
    }
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
      this.bytes = 0;
    }
    if (this.up && this.droppedUnreported > 0 && this.head === this.queue.length) {
      const dropped = this.droppedUnreported;
      this.droppedUnreported = 0;
      this.log?.warn({ dropped }, "central logs: dropped records while NATS was unavailable");
    }
  }
}

function levelOfLine(line: string): string {
  const m = LEVEL_RE.exec(line);
  if (m?.[1]) return LEVEL_LABELS[Number(m[1])] ?? "info";
  if (m?.[2] && m[2] in LEVEL_VALUES) return m[2];
  return "info";
}

/** Publishers by the pino destination they are part of (children of a logger share their root's). */
const publishers = new WeakMap<object, LogPublisher>();

/** Links a logger's destination to its publisher (createLogger does this). */
export function registerLogPublisher(destination: object, publisher: LogPublisher): void {
  publishers.set(destination, publisher);
}

/** The central-log publisher of `log` (or of the logger it is a child of), if it has one. */
export function logPublisherOf(log: Logger): LogPublisher | undefined {
  const dest = (log as unknown as Record<symbol, unknown>)[pino.symbols.streamSym];
  return dest && typeof dest === "object" ? publishers.get(dest) : undefined;
}

/**
 * Starts publishing `log`'s records on `nc` (gateway, worker and controller call this right after connecting).
 * A no-op returning a no-op for a logger built without central logs (tests' silent loggers, CLI commands).
 */
export function attachLogs(log: Logger, nc: NatsConnection): () => void {
  return logPublisherOf(log)?.attach(nc, log) ?? (() => undefined);
}

/** What `readLogs` selects. Every field is optional: all records of the whole fleet, oldest first. */
export interface ReadLogsOptions {
  /** Keep delivering records as they are published, until `signal` aborts. */
  follow?: boolean;
  /** Only records of this job (their `job` field). */
  job?: string;
  /** Only this service: gateway, worker or controller. */
  service?: string;
  /** Only records at this level or above (pino's labels). */
  level?: string;
  /** Only records published at or after this time (epoch ms or a Date; see parseSince). */
  since?: number | Date;
  /** Only the last `limit` matching records (of those stored; then, following, every new one). */
  limit?: number;
  /** Stops reading (the promise then resolves). */
  signal?: AbortSignal;
}

/** One record read back from LOGS. */
export interface LogRecord {
  /** Its sequence in the LOGS stream. */
  seq: number;
  service: string;
  /** Level label (info, warn…). */
  level: string;
  /** When it was logged (epoch ms); when it was stored if the record has no time. */
  time: number;
  /** The parsed pino record (msg, job, err, and every other field). */
  record: Record<string, unknown>;
  /** The JSON line as published. */
  line: string;
}

/**
 * Reads LOGS with an ordered consumer (no durable state on the server), selecting by subject where it can (the
 * service) and by the record's fields otherwise (job, minimum level), and calls `onRecord` for each match, oldest
 * first. Without `follow` it resolves once it has read what was stored when it started; with `follow` it keeps
 * going until `opts.signal` aborts. Needs the right to read LOGS (the admin NATS user).
 * Resolves to the number of records delivered.
 * @throws JobError BAD_REQUEST naming the option (an unknown service or level, a bad limit or since); JobError
 *   INTERNAL when there is no LOGS stream (central logs are off, or no gateway has started yet).
 */
export async function readLogs(nc: NatsConnection, opts: ReadLogsOptions, onRecord: (r: LogRecord) => void): Promise<number> {
  const filter = checkReadOptions(opts);
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(STREAMS.logs).catch((err: unknown) => {
    const e = err as { code?: unknown; message?: string };
    if (e?.code === 10059 || e?.message === "stream not found") {
      throw new JobError("INTERNAL", "there is no LOGS stream: central logs are off (JETSHARD_LOGS_STREAM=0) or no gateway has started yet", { cause: err });
    }
    throw err;
  });
  const lastSeq = info.state.last_seq;
  const sinceMs = opts.since === undefined ? undefined : +opts.since;

  // where to start: a start time is turned into a sequence first (an ordered consumer re-created after a gap keeps
  // its first config, and a start time there would clash with the start sequence it then sets)
  let startSeq = 1;
  if (sinceMs !== undefined) {
    const probe = await jsm.consumers.add(STREAMS.logs, {
      ack_policy: AckPolicy.None,
      deliver_policy: DeliverPolicy.StartTime,
      opt_start_time: new Date(sinceMs).toISOString(),
      filter_subject: filter.subject,
      inactive_threshold: ns(30_000),
      mem_storage: true,
      num_replicas: 1,
    });
    startSeq = probe.delivered.stream_seq + 1;
    await jsm.consumers.delete(STREAMS.logs, probe.name).catch(() => undefined);
  }
  // nothing but the subject to select on: the last `limit` records are the last `limit` sequences
  if (opts.limit !== undefined && filter.subject === subjects.logsAll && !filter.recordLevel && !opts.job) {
    startSeq = Math.max(startSeq, lastSeq - opts.limit + 1);
  }

  const consumer = await jetstream(nc).consumers.get(STREAMS.logs, { filter_subjects: filter.subject, opt_start_seq: Math.max(1, startSeq) });
  const tail: LogRecord[] = [];
  let delivered = 0;
  let caughtUp = false;
  const emit = (r: LogRecord) => {
    delivered++;
    onRecord(r);
  };
  const take = (m: JsMsg) => {
    const r = selectRecord(m, opts, filter);
    if (!r) return;
    if (opts.limit === undefined || caughtUp) return emit(r);
    tail.push(r);
    if (tail.length > opts.limit) tail.shift();
  };
  const catchUp = () => {
    if (caughtUp) return;
    caughtUp = true;
    for (const r of tail.splice(0)) emit(r);
  };
  const initialPending = (await consumer.info(true)).num_pending;
  const done = (m: JsMsg) => m.info.pending === 0 || m.seq >= lastSeq;

  if (!opts.follow) {
    if (initialPending > 0 && !opts.signal?.aborted) await readStored(consumer, take, done, opts.signal);
    catchUp();
    return delivered;
  }
  if (initialPending === 0) catchUp();
  const messages = await consumer.consume({ max_messages: 512 });
  const stop = () => messages.stop();
  opts.signal?.addEventListener("abort", stop, { once: true });
  try {
    if (opts.signal?.aborted) return delivered;
    for await (const m of messages) {
      take(m);
      if (!caughtUp && done(m)) catchUp();
    }
  } finally {
    opts.signal?.removeEventListener("abort", stop);
    catchUp();
  }
  return delivered;
}

/** Fetches batches until the stored records are read (or none come: some were discarded meanwhile). */
async function readStored(consumer: Consumer, take: (m: JsMsg) => void, done: (m: JsMsg) => boolean, signal?: AbortSignal): Promise<void> {
  for (;;) {
    const batch = await consumer.fetch({ max_messages: 1024, expires: 1_000 });
    let got = 0;
    let finished = false;
    for await (const m of batch) {
      got++;
      take(m);
      if (done(m)) finished = true;
    }
    if (finished || got === 0 || signal?.aborted) return;
  }
}

interface Filter {
  subject: string;
  recordLevel: number | undefined;
}

function checkReadOptions(opts: ReadLogsOptions): Filter {
  if (opts.service !== undefined && !(LOG_SERVICES as readonly string[]).includes(opts.service)) {
    throw new JobError("BAD_REQUEST", `service: must be one of ${LOG_SERVICES.join(", ")}; got "${opts.service}"`);
  }
  if (opts.level !== undefined && !(LOG_LEVELS as readonly string[]).includes(opts.level)) {
    throw new JobError("BAD_REQUEST", `level: must be one of ${LOG_LEVELS.join(", ")}; got "${opts.level}"`);
  }
  if (opts.limit !== undefined && !(Number.isInteger(opts.limit) && opts.limit >= 1)) {
    throw new JobError("BAD_REQUEST", `limit: must be a positive integer; got ${opts.limit}`);
  }
  if (opts.since !== undefined && !Number.isFinite(+opts.since)) throw new JobError("BAD_REQUEST", "since: not a valid time");
  if (opts.job !== undefined && opts.job === "") throw new JobError("BAD_REQUEST", "job: must not be empty");
  const min = opts.level === undefined || opts.level === "trace" ? undefined : LEVEL_VALUES[opts.level];
  const subject = opts.service ? `jetshard.logs.${opts.service}.${opts.level === "fatal" ? "fatal" : "*"}` : subjects.logsAll;
  return { subject, recordLevel: min };
}

function selectRecord(m: JsMsg, opts: ReadLogsOptions, filter: Filter): LogRecord | null {
  const [, , service = "", subjectLevel = "info"] = m.subject.split(".");
  if (filter.recordLevel !== undefined && (LEVEL_VALUES[subjectLevel] ?? 30) < filter.recordLevel) return null;
  const line = m.string();
  // most records are not the job's: skip them before parsing
  if (opts.job !== undefined && !line.includes(opts.job)) return null;
  let record: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(line);
    record = parsed && typeof parsed === "object" && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : { msg: line };
  } catch {
    record = { msg: line };
  }
  if (opts.job !== undefined && record.job !== opts.job) return null;
  const stored = m.info.timestampNanos / 1e6;
  const t = typeof record.time === "number" ? record.time : typeof record.time === "string" ? Date.parse(record.time) : NaN;
  return { seq: m.seq, service, level: subjectLevel, time: Number.isFinite(t) ? t : stored, record, line };
}

const DURATION_RE = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * Parses `--since`: a duration back from `now` ("90s", "15m", "2h", "1d", "500ms") or a date/time
 * ("2025-01-31T12:00:00Z", anything Date.parse reads). Returns epoch ms.
 * @throws JobError BAD_REQUEST naming `since`.
 */
export function parseSince(text: string, now = Date.now()): number {
  const s = text.trim();
  const d = DURATION_RE.exec(s);
  if (d) return now - Number(d[1]) * UNIT_MS[d[2]!]!;
  const t = /^\d{4}-\d{2}-\d{2}/.test(s) ? Date.parse(s) : NaN;
  if (Number.isFinite(t)) return t;
  throw new JobError("BAD_REQUEST", `since: expected a duration like 90s, 15m, 2h, 1d or a date like 2025-01-31T12:00:00Z; got "${text}"`);
}

/**
 * A formatter for records read back (`jetshard logs` on a terminal): pino-pretty's layout, with the service and
 * the record's name. `colorize` defaults to whether stdout is a TTY.
 */
export function logFormatter(opts: { colorize?: boolean } = {}): (r: LogRecord) => string {
  const pretty = prettyFactory({ colorize: opts.colorize ?? Boolean(process.stdout.isTTY), translateTime: "SYS:yyyy-mm-dd HH:MM:ss.l", ignore: "hostname" });
  return (r) => pretty(r.record);
}
