/**
 * The chaos suite's checker: compares the set of accepted job ids with their terminal states and their results
 * (kept in the record, or in RESULTS when large), and reports any loss or duplicate.
 */
import { KvWatchInclude } from "@nats-io/kv";
import { TERMINAL, getJob, inlineResultOf } from "#shared/jobs.js";
import { mapLimit, type Infra } from "#shared/nats.js";
import { STREAMS, subjects } from "#shared/subjects.js";

export interface CheckReport {
  accepted: number;
  succeeded: number;
  failed: string[];
  /** Accepted ids with no record, not terminal, or succeeded without a result. */
  lost: string[];
  /** Ids made terminal more than once (seen by `watchTerminalWrites`), or with more than one result in RESULTS. */
  duplicated: string[];
}

const TERMINAL_STATUS = new RegExp(`"status":"(${[...TERMINAL].join("|")})"`);

/** Terminal writes per job id, counted by a watch of the `jobs` bucket from the moment it started. */
export interface TerminalWrites {
  counts: Map<string, number>;
  stop(): void;
}

/**
 * Counts every write that makes a job terminal. The worker's terminal write is a compare-and-set, so each job
 * must be made terminal exactly once even when it ran twice (a SIGKILLed worker's job redelivered); a second one
 * would be a second answer. Start it before the jobs are submitted.
 */
export async function watchTerminalWrites(infra: Infra): Promise<TerminalWrites> {
  const counts = new Map<string, number>();
  const watch = await infra.jobs.watch({ include: KvWatchInclude.UpdatesOnly });
  void (async () => {
    for await (const e of watch) {
      if (e.operation !== "PUT" || e.value.length === 0) continue;
      // thousands of records a second in the chaos tests: a look at the status, not a parse of each record
      if (TERMINAL_STATUS.test(e.string())) counts.set(e.key, (counts.get(e.key) ?? 0) + 1);
    }
  })().catch(() => undefined);
  return { counts, stop: () => watch.stop() };
}

/** Waits (up to `timeoutMs`) for every accepted job to be terminal, then checks results. */
export async function checkJobs(infra: Infra, accepted: readonly string[], timeoutMs: number, terminal?: TerminalWrites): Promise<CheckReport> {
  const pending = new Set(accepted);
  const failed: string[] = [];
  const inline = new Set<string>();
  let succeeded = 0;
  const deadline = Date.now() + timeoutMs;
  while (pending.size > 0 && Date.now() < deadline) {
    const ids = [...pending];
    const entries = await mapLimit(ids, 32, (id) => getJob(infra, id).catch(() => null));
    for (const [i, id] of ids.entries()) {
      const e = entries[i];
      if (!e) continue;
      if (e.record.status === "succeeded") succeeded++;
      else if (e.record.status === "failed" || e.record.status === "cancelled") failed.push(`${id}: ${e.record.status} ${e.record.error?.message ?? ""}`);
      else continue;
      if (inlineResultOf(e.record)) inline.add(id);
      pending.delete(id);
    }
    if (pending.size > 0) await new Promise((r) => setTimeout(r, 250));
  }
  // the watch may lag the last reads a little
  await new Promise((r) => setTimeout(r, 500));
  terminal?.stop();
  const info = await infra.jsm.streams.info(STREAMS.results, { subjects_filter: subjects.resultsAll });
  const counts = info.state.subjects ?? {};
  const duplicated = accepted.filter((id) => (counts[subjects.result(id)] ?? 0) > 1 || (terminal?.counts.get(id) ?? 0) > 1);
  const lostResults = accepted.filter((id) => !pending.has(id) && !failed.some((f) => f.startsWith(`${id}:`)) && !inline.has(id) && !(counts[subjects.result(id)] ?? 0));
  return { accepted: accepted.length, succeeded, failed, lost: [...pending, ...lostResults], duplicated };
}
