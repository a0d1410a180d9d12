/**
 * /v1/jobs (async jobs) and /v1/dead-letters.
 */
import { Hono } from "hono";
import { z } from "zod";
import type { JetshardClient } from "#shared/client.js";
import type { JetshardConfig } from "#shared/config.js";
import { deleteDeadLetter, listDeadLetters, type DeadLetterFilter } from "#shared/dlq.js";
import { JobError } from "#shared/errors.js";
import { JOB_STATUSES, TERMINAL, cancelJob, getJob, jobResultBytes, listJobs, parseDurationMs, publicRecord, replayJob, waitJob, type JobRecord } from "#shared/jobs.js";
import type { Logger } from "#shared/log.js";
import { pickVersion } from "#shared/model-repo.js";
import type { Infra } from "#shared/nats.js";
import { decodeResult, toV2Json } from "#shared/results.js";
import { tensorsFromJson, validateInputs, validateOutputs } from "#shared/validate.js";
import { InferInputSchema, type ModelRecord } from "#shared/wire.js";
import { readJson } from "./body.js";
import { canAccess, type Principal } from "#shared/auth.js";
import type { GatewayEnv } from "./auth.js";
import type { QueuedJobQuota } from "./quotas.js";
import type { GatewayMetrics } from "#shared/metrics.js";

const SubmitSchema = z.object({
  model: z.string().min(1),
  version: z.number().int().min(1).optional(),
  id: z.string().min(1).max(200).optional(),
  // empty for a model without inputs; validateInputs refuses a missing input of a model that has them
  inputs: z.array(InferInputSchema),
  outputs: z.array(z.object({ name: z.string().min(1) })).optional(),
  parameters: z.record(z.string(), z.unknown()).optional(),
  priority: z.enum(["high", "normal"]).optional(),
  timeout: z.union([z.number(), z.string()]).optional(),
});

export interface JobRoutesDeps {
  config: JetshardConfig;
  log: Logger;
  infra: Infra;
  client: JetshardClient;
  lookupModel: (name: string) => Promise<ModelRecord>;
  /** Per-tenant cap on unfinished async jobs; none when authentication is off (one tenant). */
  quota?: QueuedJobQuota;
  /** Counts accepted jobs (jetshard_jobs_submitted_total). */
  metrics?: Pick<GatewayMetrics, "jobSubmitted">;
}

export function jobRoutes({ config, log, infra, client, lookupModel, quota, metrics }: JobRoutesDeps) {
  const app = new Hono<GatewayEnv>();
  let watchers = 0;
  const notFound = (id: string) => new JobError("JOB_NOT_FOUND", `job "${id}" not found (finished jobs are kept ${config.resultRetentionMs / 1000} s)`);
  /** The job if the caller may see it; another tenant's job is as absent as a missing one. */
  async function ownJob(p: Principal, id: string): Promise<JobRecord> {
    const e = await getJob(infra, id);
    if (!e || !canAccess(p, e.record.tenant)) throw notFound(id);
    return e.record;
  }
  const listLimit = (q: string | undefined, def: number) => {
    const limit = q === undefined ? def : Number(q);
    const max = config.limits.maxListLimit;
    if (!Number.isInteger(limit) || limit < 1 || limit > max) throw new JobError("BAD_REQUEST", `limit: ${JSON.stringify(q)} is not an integer in [1, ${max}]`);
    return limit;
  };

  /** The record as callers see it, with a succeeded job's outputs as v2 JSON (from the record, else RESULTS). */
  async function withResult(rec: JobRecord) {
    const shown = publicRecord(rec);
    if (rec.status !== "succeeded") return shown;
    const bytes = await jobResultBytes(rec.id, rec, async () => infra.jsm);
    if (!bytes) return shown;
    const { meta, outputs } = decodeResult(bytes);
    return { ...shown, result: toV2Json(meta, outputs) };
  }

  app.post("/jobs", async (c) => {
    const req = await readJson(c, SubmitSchema);
    const rec = await lookupModel(req.model);
    const mv = pickVersion(rec, req.version);
    const inputs = tensorsFromJson({ inputs: req.inputs });
    validateInputs(req.model, mv.inputs, inputs);
    const outputs = req.outputs?.map((o) => o.name);
    validateOutputs(req.model, mv.outputs, outputs);
    const timeoutMs = parseDurationMs(req.timeout, "timeout");
    const key = c.req.header("idempotency-key") ?? req.id;
    const tenant = c.get("principal").tenant;
    await quota?.admit(tenant);
    const sub = await client.submit(req.model, inputs, {
      tenant,
      version: mv.version,
      outputs,
      parameters: req.parameters,
      priority: req.priority,
      timeoutMs,
      idempotencyKey: key,
      requestId: req.id,
    });
    if (!sub.replayed) {
      quota?.add(tenant, sub.id);
      metrics?.jobSubmitted(rec.name);
      log.debug({ job: sub.id, model: req.model, tenant }, "job queued");
    }
    c.header("Location", `/v1/jobs/${sub.id}`);
    if (sub.replayed) c.header("Idempotent-Replayed", "true");
    return c.json({ id: sub.id, status: sub.record.status, replayed: sub.replayed }, sub.replayed ? 200 : 202);
  });

  app.get("/jobs/:id", async (c) => {
    const id = c.req.param("id");
    const wait = parseDurationMs(c.req.query("wait"), "wait") ?? 0;
    const own = await ownJob(c.get("principal"), id);
    if (wait <= 0 || TERMINAL.has(own.status)) return c.json(await withResult(own));
    if (watchers >= config.limits.maxWatchers) {
      c.header("Retry-After", "1");
      throw new JobError("QUOTA_EXCEEDED", `this gateway already holds ${watchers} waiting requests (JETSHARD_MAX_WATCHERS); retry, or poll without ?wait=`);
    }
    watchers++;
    try {
      const rec = await waitJob(infra, id, Math.min(wait, 60_000));
      if (!rec) throw notFound(id);
      return c.json(await withResult(rec));
    } finally {
      watchers--;
    }
  });

  app.get("/jobs", async (c) => {
    const status = c.req.query("status");
    if (status !== undefined && !(JOB_STATUSES as readonly string[]).includes(status)) {
      throw new JobError("BAD_REQUEST", `status: "${status}" is not one of ${JOB_STATUSES.join(", ")}`);
    }
    const limit = listLimit(c.req.query("limit"), 100);
    const p = c.get("principal");
    const tenant = p.scopes.has("admin") ? c.req.query("tenant") : p.tenant;
    const jobs = await listJobs(infra, { status: status as JobRecord["status"] | undefined, model: c.req.query("model"), tenant, limit });
    return c.json({ jobs: jobs.map(publicRecord) });
  });

  app.delete("/jobs/:id", async (c) => {
    const id = c.req.param("id");
    await ownJob(c.get("principal"), id);
    const was = await cancelJob(infra, id);
    log.info({ job: id, was }, "job cancelled");
    return c.json({ id, status: "cancelled", was });
  });

  app.get("/dead-letters", async (c) => {
    const limit = listLimit(c.req.query("limit"), 100);
    return c.json({ deadLetters: await listDeadLetters(infra, { model: c.req.query("model"), limit, allow: ownDeadLetter(c.get("principal")) }) });
  });

  app.post("/dead-letters/:id/replay", async (c) => {
    const e = await replayJob(infra, c.req.param("id"), ownDeadLetter(c.get("principal")));
    log.info({ job: e.id }, "dead letter replayed");
    return c.json({ id: e.id, status: "queued", replayed: true }, 202);
  });

  app.delete("/dead-letters/:id", async (c) => {
    const id = c.req.param("id");
    if (!(await deleteDeadLetter(infra, id, ownDeadLetter(c.get("principal"))))) throw new JobError("JOB_NOT_FOUND", `dead letter "${id}" not found`);
    return c.json({ id, deleted: true });
  });

  return app;
}

/** Dead letters the caller may see: its tenant's (those published straight to NATS carry none: admins only). */
function ownDeadLetter(p: Principal): DeadLetterFilter | undefined {
  return p.scopes.has("admin") ? undefined : (e) => e.tenant === p.tenant;
}
