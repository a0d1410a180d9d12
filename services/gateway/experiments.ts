/**
 * /v1/experiments: NAS experiments over HTTP. The gateway only validates and reads or writes the
 * experiment in KV (compare-and-set); a controller (`jetshard controller`) does the driving.
 *
 *   POST /                         spec → 201 {id, status}
 *   GET  /                         list
 *   GET  /:id                      status, progress counts, best, best-so-far series, Pareto front, lease
 *   GET  /:id/trials[?status=s]    trials in proposal order
 *   GET  /:id/trials/:t            one trial
 *   GET  /:id/trials/:t/model.onnx the trial's architecture as ONNX (built-in families)
 *   POST /:id/stop                 stop (running trials are dropped, queued ones kept for a resume)
 *   POST /:id/resume               {maxTrials?, maxFailedTrials?, concurrency?} → continue (within config.limits)
 *   POST /:id/deploy               {name?, trial?} → add the best (or given) trial's model to the repository
 */
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { JetshardConfig } from "#shared/config.js";
import { JobError, fromNatsError } from "#shared/errors.js";
import type { Logger } from "#shared/log.js";
import { addModel, checkModelName, getModel } from "#shared/model-repo.js";
import { canAccess } from "#shared/auth.js";
import type { KvMirror } from "#shared/kv-mirror.js";
import type { ModelRecord } from "#shared/wire.js";
import { requireScope, type GatewayEnv } from "./auth.js";
import { NasSpecError } from "#shared/nas/errors.js";
import { buildModel, type Family } from "#shared/nas/families.js";
import { checkSpecLimits, parseExperimentSpec, type ExperimentSpec } from "#shared/nas/spec.js";
import { ExperimentError, NasStore } from "#shared/nas/store.js";
import { LeaseRecordSchema, TRIAL_STATUSES, leaseKey, type ExperimentRecord, type TrialRecord } from "#shared/nas/wire.js";
import type { Infra } from "#shared/nats.js";
import { encodeModel } from "#shared/onnx/builder.js";
import { readJson } from "./body.js";

const ResumeBodySchema = z.strictObject({
  maxTrials: z.number().int().min(1).optional(),
  maxFailedTrials: z.number().int().min(0).optional(),
  concurrency: z.number().int().min(1).max(1024).optional(),
});

const DeployBodySchema = z.strictObject({
  /** Model name in the repository (default: the experiment id). */
  name: z.string().min(1).optional(),
  /** Trial to deploy (default: the best one). */
  trial: z.string().min(1).optional(),
});

const TrialsQuerySchema = z.strictObject({ status: z.enum(TRIAL_STATUSES).optional() });

/** The list view of an experiment. */
function brief(r: ExperimentRecord) {
  const spec = r.spec as unknown as ExperimentSpec;
  return {
    id: r.id,
    name: r.name,
    status: r.status,
    ...(r.reason ? { reason: r.reason } : {}),
    family: spec.family,
    strategy: spec.strategy.name,
    objective: spec.objective,
    progress: r.progress,
    ...(r.best ? { best: r.best } : {}),
    createdAt: new Date(r.createdAt).toISOString(),
    updatedAt: new Date(r.updatedAt).toISOString(),
  };
}

function trialView(t: TrialRecord) {
  return {
    ...t,
    createdAt: new Date(t.createdAt).toISOString(),
    ...(t.startedAt ? { startedAt: new Date(t.startedAt).toISOString() } : {}),
    ...(t.finishedAt ? { finishedAt: new Date(t.finishedAt).toISOString() } : {}),
  };
}

/** Reads a JSON body that may be empty (then `{}`, unless `required`); 400 if it is not JSON. */
async function jsonBody(c: Context, required: boolean): Promise<unknown> {
  const text = await c.req.text();
  if (text.trim() === "") {
    if (required) throw new JobError("BAD_REQUEST", "request body is empty: send the experiment spec as JSON");
    return {};
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new JobError("BAD_REQUEST", "request body is not valid JSON");
  }
}

export interface ExperimentRoutesDeps {
  config: JetshardConfig;
  log: Logger;
  infra: Infra;
  models: KvMirror<ModelRecord>;
  /** Throws unless the caller may replace the model (deploy adds a version to it). */
  checkOwner: (c: Context<GatewayEnv>, rec: ModelRecord | null | undefined) => void;
}

export function experimentRoutes({ config, log: rootLog, infra, models, checkOwner }: ExperimentRoutesDeps): Hono<GatewayEnv> {
  const log = rootLog.child({ component: "experiments" });
  const app = new Hono<GatewayEnv>();
  let storeP: Promise<NasStore> | null = null;
  const store = () =>
    (storeP ??= NasStore.open(infra).catch((err) => {
      storeP = null;
      throw fromNatsError(err) ?? new JobError("INTERNAL", "experiment buckets are unavailable", { cause: err });
    }));

  /** The experiment if the caller may see it: another tenant's is as absent as a missing one. */
  async function experimentOr404(c: Context<GatewayEnv>, id: string): Promise<ExperimentRecord> {
    const e = await (await store()).getExperiment(id);
    if (!e || !canAccess(c.get("principal"), e.value.tenant)) throw new ExperimentError(404, `experiment "${id}" not found`);
    return e.value;
  }

  async function trialOr404(c: Context<GatewayEnv>, id: string, trialId: string): Promise<TrialRecord> {
    await experimentOr404(c, id);
    const t = await (await store()).getTrial(id, trialId);
    if (!t) throw new ExperimentError(404, `experiment "${id}" has no trial "${trialId}"`);
    return t.value;
  }

  function modelBytes(rec: ExperimentRecord, t: TrialRecord): Uint8Array {
    const spec = rec.spec as unknown as ExperimentSpec;
    if (spec.family === "custom") throw new ExperimentError(404, `experiment "${rec.id}" uses family "custom": its evaluator builds the models, jetshard has none to give`);
    return encodeModel(buildModel(spec.family as Family, t.point, spec.familyOptions));
  }

  // NAS errors become the `{ "error": ... }` bodies the rest of the API uses; JobErrors go to app.onError
  app.onError((thrown, c) => {
    const err = fromNatsError(thrown) ?? thrown;
    if (err instanceof NasSpecError) return c.json({ error: err.message, field: err.field }, 400);
    if (err instanceof ExperimentError) return c.json({ error: err.message }, err.status);
    if (err instanceof JobError) {
      if (err.status >= 500) log.error({ err, cause: err.cause }, "request failed");
      if (err.status === 503) c.header("Retry-After", "1");
      return c.json({ error: err.message }, err.status as 400);
    }
    log.error({ err }, "unhandled error");
    return c.json({ error: "internal error" }, 500);
  });

  app.post("/", async (c) => {
    const spec = parseExperimentSpec(await jsonBody(c, true), config.limits);
    const rec = await (await store()).createExperiment(spec, c.get("principal").tenant);
    log.info({ experiment: rec.id, family: spec.family, strategy: spec.strategy.name, maxTrials: spec.maxTrials }, "experiment created");
    c.header("Location", `/v1/experiments/${rec.id}`);
    return c.json({ id: rec.id, status: rec.status }, 201);
  });

  app.get("/", async (c) => {
    const p = c.get("principal");
    return c.json({ experiments: (await (await store()).listExperiments()).filter((r) => canAccess(p, r.tenant)).map(brief) });
  });

  app.get("/:id", async (c) => {
    const rec = await experimentOr404(c, c.req.param("id"));
    const e = await (await store()).experiments.get(leaseKey(rec.id)).catch(() => null);
    const lease = e && e.operation === "PUT" && e.value.length ? LeaseRecordSchema.safeParse(e.json()) : null;
    return c.json({
      ...rec,
      createdAt: new Date(rec.createdAt).toISOString(),
      updatedAt: new Date(rec.updatedAt).toISOString(),
      ...(rec.startedAt ? { startedAt: new Date(rec.startedAt).toISOString() } : {}),
      ...(rec.finishedAt ? { finishedAt: new Date(rec.finishedAt).toISOString() } : {}),
      // the controller driving it; `live: false` once its holder stopped renewing (another may take over)
      lease: lease?.success
        ? { holder: lease.data.holder, renewedAt: new Date(lease.data.renewedAt).toISOString(), live: Date.now() - lease.data.renewedAt <= config.controllerLeaseMs }
        : null,
    });
  });

  app.get("/:id/trials", async (c) => {
    const q = await readJson(c, TrialsQuerySchema, c.req.query());
    const id = c.req.param("id");
    await experimentOr404(c, id);
    const trials = (await (await store()).listTrials(id)).map((t) => t.value).filter((t) => !q.status || t.status === q.status);
    return c.json({ trials: trials.map(trialView) });
  });

  app.get("/:id/trials/:trial", async (c) => c.json(trialView(await trialOr404(c, c.req.param("id"), c.req.param("trial")))));

  app.get("/:id/trials/:trial/model.onnx", async (c) => {
    const id = c.req.param("id");
    const t = await trialOr404(c, id, c.req.param("trial"));
    const bytes = modelBytes(await experimentOr404(c, id), t);
    return c.body(bytes as Uint8Array<ArrayBuffer>, 200, {
      "content-type": "application/octet-stream",
      "content-disposition": `attachment; filename="${id}-${t.trialId}.onnx"`,
    });
  });

  app.post("/:id/stop", async (c) => {
    const rec = await (await store()).stopExperiment((await experimentOr404(c, c.req.param("id"))).id);
    log.info({ experiment: rec.id }, "experiment stopped");
    return c.json({ id: rec.id, status: rec.status });
  });

  app.post("/:id/resume", async (c) => {
    const changes = await readJson(c, ResumeBodySchema, await jsonBody(c, false));
    checkSpecLimits(changes, config.limits);
    const rec = await (await store()).resumeExperiment((await experimentOr404(c, c.req.param("id"))).id, changes);
    log.info({ experiment: rec.id, ...changes }, "experiment resumed");
    return c.json({ id: rec.id, status: rec.status });
  });

  app.post("/:id/deploy", async (c) => {
    const body = await readJson(c, DeployBodySchema, await jsonBody(c, false));
    const rec = await experimentOr404(c, c.req.param("id"));
    const trialId = body.trial ?? rec.best?.trialId;
    if (!trialId) throw new ExperimentError(409, `experiment "${rec.id}" has no successful trial to deploy yet`);
    const t = await trialOr404(c, rec.id, trialId);
    if (t.status !== "succeeded") throw new ExperimentError(409, `trial "${trialId}" is ${t.status}; only a succeeded trial can be deployed`);
    const name = body.name ?? rec.id;
    checkModelName(name);
    requireScope(c.get("principal"), "models:write");
    checkOwner(c, models.get(name) ?? (await getModel(infra, name)));
    const mv = await addModel(infra, name, modelBytes(rec, t), { tenant: c.get("principal").tenant });
    log.info({ experiment: rec.id, trial: trialId, model: name, version: mv.version }, "trial deployed");
    return c.json({ model: name, version: mv.version, experiment: rec.id, trial: trialId, metrics: t.metrics ?? {} }, 201);
  });

  return app;
}
