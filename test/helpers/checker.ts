/**
 * The chaos suite's checker: compares the set of accepted job ids with their terminal states and the stored
 * results, and reports any loss or duplicate.
 */
import { getJob } from "#shared/jobs.js";
import type { Infra } from "#shared/nats.js";
import { STREAMS, subjects } from "#shared/subjects.js";

export interface CheckReport {
  accepted: number;
  succeeded: number;
  failed: string[];
  /** Accepted ids with no record or not terminal. */
  lost: string[];
  /** Ids with more than one stored result. */
  duplicated: string[];
}

/** Waits (up to `timeoutMs`) for every accepted job to be terminal, then checks results. */
export async function checkJobs(infra: Infra, accepted: readonly string[], timeoutMs: number): Promise<CheckReport> {
  const pending = new Set(accepted);
  const failed: string[] = [];
  let succeeded = 0;
  const deadline = Date.now() + timeoutMs;
  while (pending.size > 0 && Date.now() < deadline) {
    for (const id of [...pending]) {
      const e = await getJob(infra, id).catch(() => null);
      if (!e) continue;
      if (e.record.status === "succeeded") succeeded++;
      else if (e.record.status === "failed" || e.record.status === "cancelled") failed.push(`${id}: ${e.record.status} ${e.record.error?.message ?? ""}`);
      else continue;
      pending.delete(id);
    }
    if (pending.size > 0) await new Promise((r) => setTimeout(r, 250));
  }
  const info = await infra.jsm.streams.info(STREAMS.results, { subjects_filter: subjects.resultsAll });
  const counts = info.state.subjects ?? {};
  const duplicated = accepted.filter((id) => (counts[subjects.result(id)] ?? 0) > 1);
  const lostResults = accepted.filter((id) => !pending.has(id) && !failed.some((f) => f.startsWith(`${id}:`)) && !(counts[subjects.result(id)] ?? 0));
  return { accepted: accepted.length, succeeded, failed, lost: [...pending, ...lostResults], duplicated };
}
