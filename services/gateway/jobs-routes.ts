/**
 * /v1/jobs (async jobs) and /v1/dead-letters.
 */
import { Hono } from "hono";
import { z } from "zod";
import type { JetshardClient } from "#shared/client.js";
import type { JetshardConfig } from "#shared/config.js";
import { deleteDeadLetter, listDeadLetters } from "#shared/dlq.js";
import { JobError } from "#shared/errors.js";
import { JOB_STATUSES, cancelJob, listJobs, parseDurationMs, replayJob, waitJob, type JobRecord } from "#shared/jobs.js";
import type { Logger } from "#shared/log.js";
import { pickVersion } from "#shared/model-repo.js";
import type { Infra } from "#shared/nats.js";
import { decodeResult, toV2Json } from "#shared/results.js";
import { STREAMS, subjects } from "#shared/subjects.js";
import { tensorsFromJson, validateInputs, validateOutputs } from "#shared/validate.js";
import { InferInputSchema, type ModelRecord } from "#shared/wire.js";
import { readJson } from "./body.js";

const SubmitSchema = z.object({
  model: z.string().min(1),
  version: z.number().int().min(1).optional(),
  id: z.string().min(1).max(200).optional(),
  inputs: z.array(InferInputSchema).min(1),
  outputs: z.array(z.object({ name: z.string().min(1) })).optional(),
  parameters: z.record(z.string(), z.unknown()).optional(),
  priority: z.enum(["high", "normal"]).optional(),
  timeout: z.union([z.number(), z.string()]).optional(),
});

export function jobRoutes({ config, log, infra, client, lookupModel }: { config: JetshardConfig; log: Logger; infra: Infra; client: JetshardClient; lookupModel: (name: string) => Promise<ModelRecord> }) {
  const app = new Hono();

  async function withResult(rec: JobRecord) {
    if (rec.status !== "succeeded") return rec;
    const msg = await infra.jsm.streams.getMessage(STREAMS.results, { last_by_subj: subjects.result(rec.id) }).catch(() => null);
    if (!msg) return rec;
    const { meta, outputs } = decodeResult(msg.data);
    return { ...rec, result: toV2Json(meta, outputs) };
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
    const sub = await client.submit(req.model, inputs, {
      version: mv.version,
      outputs,
      parameters: req.parameters,
      priority: req.priority,
      timeoutMs,
      idempotencyKey: key,
      requestId: req.id,
    });
    if (!sub.replayed) log.debug({ jobId: sub.id, model: req.model }, "job queued");
    c.header("Location", `/v1/jobs/${sub.id}`);
    if (sub.replayed) c.header("Idempotent-Replayed", "true");
    return c.json({ id: sub.id, status: sub.record.status, replayed: sub.replayed }, sub.replayed ? 200 : 202);
  });

  app.get("/jobs/:id", async (c) => {
    const id = c.req.param("id");
    const wait = parseDurationMs(c.req.query("wait"), "wait") ?? 0;
    const rec = await waitJob(infra, id, Math.min(wait, 60_000));
    if (!rec) throw new JobError("JOB_NOT_FOUND", `job "${id}" not found (finished jobs are kept ${config.resultRetentionMs / 1000} s)`);
    return c.json(await withResult(rec));
  });

  app.get("/jobs", async (c) => {
    const status = c.req.query("status");
    if (status !== undefined && !(JOB_STATUSES as readonly string[]).includes(status)) {
      throw new JobError("BAD_REQUEST", `status: "${status}" is not one of ${JOB_STATUSES.join(", ")}`);
    }
    const limitQ = c.req.query("limit");
    const limit = limitQ === undefined ? 100 : Number(limitQ);
    if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw new JobError("BAD_REQUEST", `limit: "${limitQ}" is not an integer in [1, 10000]`);
    const jobs = await listJobs(infra, { status: status as JobRecord["status"] | undefined, model: c.req.query("model"), limit });
    return c.json({ jobs });
  });

  app.delete("/jobs/:id", async (c) => {
    const id = c.req.param("id");
    const was = await cancelJob(infra, id);
    log.info({ jobId: id, was }, "job cancelled");
    return c.json({ id, status: "cancelled", was });
  });

  app.get("/dead-letters", async (c) => {
    const limitQ = c.req.query("limit");
    const limit = limitQ === undefined ? 100 : Number(limitQ);
    if (!Number.isInteger(limit) || limit < 1) throw new JobError("BAD_REQUEST", `limit: "${limitQ}" is not a positive integer`);
    return c.json({ deadLetters: await listDeadLetters(infra, { model: c.req.query("model"), limit }) });
  });

  app.post("/dead-letters/:id/replay", async (c) => {
    const e = await replayJob(infra, c.req.param("id"));
    log.info({ jobId: e.id }, "dead letter replayed");
    return c.json({ id: e.id, status: "queued", replayed: true }, 202);
  });

  app.delete("/dead-letters/:id", async (c) => {
    const id = c.req.param("id");
    if (!(await deleteDeadLetter(infra, id))) throw new JobError("JOB_NOT_FOUND", `dead letter "${id}" not found`);
    return c.json({ id, deleted: true });
  });

  return app;
}
