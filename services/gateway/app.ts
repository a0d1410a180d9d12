/**
 * The HTTP API: Open Inference Protocol v2 (as Triton and KServe speak it) plus jetshard's own /v1 routes.
 * Every error leaves through `onError` as `{ "error": "..." }`: 4xx for the caller's mistakes, 5xx for ours.
 */
import { Hono, type Context } from "hono";
import { z } from "zod";
import { HTTPException } from "hono/http-exception";
import type { JetshardClient } from "#shared/client.js";
import type { JetshardConfig } from "#shared/config.js";
import { JobError, fromNatsError } from "#shared/errors.js";
import type { KvMirror } from "#shared/kv-mirror.js";
import type { Logger } from "#shared/log.js";
import { addModel, checkModelName, deleteModel, getModel, pickVersion } from "#shared/model-repo.js";
import type { Infra } from "#shared/nats.js";
import { toV2Json } from "#shared/results.js";
import { tensorsFromJson, validateInputs, validateOutputs } from "#shared/validate.js";
import { InferRequestSchema, WIRE_COMPRESSIONS, WIRE_DTYPES, isLive, zodMessage, type ModelRecord, type ModelVersion, type WorkerInfo } from "#shared/wire.js";
import { HEADER_LENGTH, binaryOutputs, encodeBinaryResponse, splitBinaryBody, tensorsFromBinaryRequest } from "#shared/binary.js";
import { experimentRoutes } from "./experiments.js";
import { jobRoutes } from "./jobs-routes.js";
import { bodyLimit, readJson } from "./body.js";
import { dashboardRoutes } from "./dashboard.js";
import { createLiveSampler, type LiveSampler } from "./live.js";
import { parseDurationMs } from "#shared/jobs.js";
import { matchedRoutes } from "hono/route";
import { GatewayMetrics, createRegistry } from "#shared/metrics.js";
import { fleetReads } from "./fleet-metrics.js";
import type { KV } from "@nats-io/kv";
import { canAccess, checkTenant, createApiKey, getApiKey, listApiKeys, parseScopes, revokeApiKey, type ApiKeyRecord } from "#shared/auth.js";
import { authMode, authenticate, type GatewayEnv } from "./auth.js";
import { QueuedJobQuota, checkModelQuota } from "./quotas.js";

export const SERVER_VERSION = "0.1.0";

/** Methods that get their own label value on jetshard_http_requests_total. */
const HTTP_METHODS = new Set(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]);

export interface AppDeps {
  config: JetshardConfig;
  log: Logger;
  infra: Infra;
  client: JetshardClient;
  models: KvMirror<ModelRecord>;
  workers: KvMirror<WorkerInfo>;
  /** The `apikeys` bucket and its mirror; required when authentication is on. */
  keys?: { kv: KV; mirror: KvMirror<ApiKeyRecord> };
  /** The dashboard's sampler, started by the caller; an unstarted one (no history) when absent. */
  live?: LiveSampler;
}

const KeyCreateSchema = z.strictObject({
  tenant: z.string().min(1).max(63),
  scopes: z.array(z.string()).min(1).max(16),
  name: z.string().max(200).optional(),
});

const intList = z
  .string()
  .regex(/^\d+(,\d+)*$/, "must be a comma-separated list of positive integers")
  .transform((s) => s.split(",").map(Number));

const UploadQuerySchema = z.strictObject({
  shards: z.coerce.number().int("shards: must be an integer").min(1, "shards: must be at least 1").optional(),
  maxShardBytes: z.coerce.number().int().positive().optional(),
  balance: z.enum(["bytes", "flops"]).optional(),
  maxBatchSize: z.coerce.number().int("must be an integer").min(1, "must be at least 1").max(4096, "must be at most 4096").optional(),
  maxQueueDelayUs: z.coerce.number().int("must be an integer").min(0, "must be at least 0").max(10_000_000, "must be at most 10000000").optional(),
  preferredBatchSizes: intList.optional(),
  /** Wire settings of a sharded model: activations between stages compressed ("lz4") and/or sent as FP16. */
  compression: z.enum(WIRE_COMPRESSIONS).optional(),
  wireDtype: z.enum(WIRE_DTYPES).optional(),
  /** The same settings as one JSON object: {"shards":2,"batching":{"maxBatchSize":32,...},"wire":{"compression":"lz4"}}. */
  config: z.string().optional(),
});

const UploadConfigSchema = z.strictObject({
  shards: z.number().int().min(1).optional(),
  maxShardBytes: z.number().int().positive().optional(),
  balance: z.enum(["bytes", "flops"]).optional(),
  batching: z
    .strictObject({
      maxBatchSize: z.number().int().min(1).max(4096).optional(),
      maxQueueDelayUs: z.number().int().min(0).max(10_000_000).optional(),
      preferredBatchSizes: z.array(z.number().int().min(1)).optional(),
    })
    .optional(),
  wire: z.strictObject({ compression: z.enum(WIRE_COMPRESSIONS).optional(), dtype: z.enum(WIRE_DTYPES).optional() }).optional(),
});

/** Query parameters of PUT /v1/models/{m}. Throws a 400 naming the parameter. */
function parseUploadQuery(q: Record<string, string>) {
  const plain = parseUploadParams(q);
  if (plain.config === undefined) {
    const { maxBatchSize, maxQueueDelayUs, preferredBatchSizes, compression, wireDtype, config: _c, ...rest } = plain;
    return { ...rest, batching: { maxBatchSize, maxQueueDelayUs, preferredBatchSizes }, wire: { compression, dtype: wireDtype } };
  }
  let json: unknown;
  try {
    json = JSON.parse(plain.config);
  } catch {
    throw new JobError("BAD_REQUEST", "config: not valid JSON");
  }
  const r = UploadConfigSchema.safeParse(json);
  if (!r.success) throw new JobError("BAD_REQUEST", zodMessage(r.error, "config"));
  return r.data;
}

function parseUploadParams(q: Record<string, string>) {
  const r = UploadQuerySchema.safeParse(q);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const field = issue.path.length ? String(issue.path[0]) : (issue as { keys?: string[] }).keys?.join(", ") ?? "query";
    const msg = issue.code === "unrecognized_keys" ? `unknown query parameter(s) ${field}` : `${field}: ${issue.message.replace(/^\w+: /, "")} (got ${JSON.stringify(q[field])})`;
    throw new JobError("BAD_REQUEST", msg);
  }
  return r.data;
}

export function createApp({ config, log, infra, client, models, workers, keys, live: givenLive }: AppDeps) {
  const app = new Hono<GatewayEnv>();
  const mode = authMode(config);
  if (mode === "keys" && !keys) throw new Error("authentication is on but the apikeys bucket was not opened");
  const registry = createRegistry("gateway", SERVER_VERSION);
  const metrics = new GatewayMetrics(
    registry,
    // async jobs by state come from the dashboard sampler's watch on the jobs bucket (one watch per gateway)
    fleetReads({ infra, models, jobs: () => live.jobCounts(), workersLive: () => liveWorkers().length }),
  );

  const liveWorkers = () => workers.values().filter((w) => isLive(w, config.workerTtlMs));
  /** Live workers per shard of a model version: a sharded model is ready only when every shard has one. */
  const coverage = (rec: ModelRecord, mv: ModelVersion) => {
    const live = liveWorkers();
    return mv.shards.map((s) => ({ index: s.index, workers: live.filter((w) => w.shards.includes(`${rec.name}:${s.index}`)).map((w) => w.id) }));
  };
  /** Workers that can carry a request end to end: 0 when any shard is uncovered. */
  const servingCount = (rec: ModelRecord, mv: ModelVersion) => Math.min(...coverage(rec, mv).map((c) => c.workers.length));

  /**
   * The model's record from the mirror, or, on a miss, read through from KV: a model added a moment ago by the CLI
   * or another gateway is served before the watch delivers it. Throws MODEL_NOT_FOUND.
   */
  async function modelOr404(name: string): Promise<ModelRecord> {
    const rec = models.get(name) ?? (await getModel(infra, name).catch(() => null));
    if (!rec) throw new JobError("MODEL_NOT_FOUND", `model "${name}" not found`);
    if (!models.get(name)) models.apply(name, rec);
    return rec;
  }

  function versionParam(c: Context): number | undefined {
    const v = c.req.param("version");
    if (v === undefined) return undefined;
    if (!/^[1-9][0-9]*$/.test(v)) throw new JobError("BAD_REQUEST", `version "${v}" is not a positive integer`);
    return Number(v);
  }

  const v2Metadata = (rec: ModelRecord, mv: ModelVersion) => ({
    name: rec.name,
    versions: rec.versions.map((v) => String(v.version)),
    platform: mv.platform,
    inputs: mv.inputs,
    outputs: mv.outputs,
    // the wire settings, when not the defaults: how this version's stages send activations to each other
    ...(mv.wire && (mv.wire.compression !== "none" || mv.wire.dtype !== "fp32") ? { parameters: { shards: mv.shards.length, wire: mv.wire } } : {}),
  });

  app.use("*", async (c, next) => {
    const t0 = performance.now();
    await next();
    // the route pattern, not the path: paths are the caller's to choose, label values must stay few
    const route = matchedRoutes(c).findLast((r) => r.method !== "ALL")?.path ?? "unmatched";
    const method = HTTP_METHODS.has(c.req.method) ? c.req.method : "other";
    metrics.request(method, route, c.res.status, (performance.now() - t0) / 1000);
  });

  app.onError((thrown, c) => {
    // a raw NATS failure (timeout, no responders, closed connection) is a 503, not a 500
    const err = fromNatsError(thrown) ?? thrown;
    if (err instanceof JobError) {
      if (err.status >= 500) log.error({ err, cause: err.cause }, "request failed");
      if (err.code === "QUEUE_FULL" || err.status === 503) c.header("Retry-After", "1");
      return c.json({ error: err.message }, err.status as 400);
    }
    if (err instanceof HTTPException) return c.json({ error: err.message || "bad request" }, err.status);
    log.error({ err }, "unhandled error");
    return c.json({ error: "internal error" }, 500);
  });
  app.notFound((c) => c.json({ error: `no route for ${c.req.method} ${c.req.path}` }, 404));

  const jsonLimit = bodyLimit({
    maxSize: config.maxBodyBytes,
    // the rest of the body is not read: close the connection rather than leave it unusable
    onError: (c) => c.json({ error: `request body exceeds the limit of ${config.maxBodyBytes} bytes (JETSHARD_MAX_BODY_MB)` }, 413, { Connection: "close" }),
  });
  const modelLimit = bodyLimit({
    maxSize: config.maxModelBytes,
    onError: (c) => c.json({ error: `model upload exceeds the limit of ${config.maxModelBytes} bytes (JETSHARD_MAX_MODEL_MB)` }, 413, { Connection: "close" }),
  });

  /** A key from the mirror, or read through from KV: a key created a moment ago by the CLI works at once. */
  const lookupKey = async (id: string) => keys!.mirror.get(id) ?? (await getApiKey(keys!.kv, id));
  app.use("*", authenticate(mode, lookupKey));
  // every route has a body limit; model uploads have their own, larger one
  app.use("*", (c, next) => (c.req.method === "PUT" && c.req.path.startsWith("/v1/models/") ? modelLimit(c, next) : jsonLimit(c, next)));

  // ---- Open Inference Protocol v2
  app.get("/v2/health/live", (c) => c.json({ live: true }));
  // nats.js keeps a dropped connection open while it reconnects, so isClosed() alone reads "connected" throughout
  let natsDown = false;
  void (async () => {
    for await (const s of infra.nc.status()) {
      if (s.type === "disconnect" || s.type === "staleConnection") natsDown = true;
      else if (s.type === "reconnect") natsDown = false;
    }
  })();
  app.get("/v2/health/ready", (c) => {
    const connected = !natsDown && !infra.nc.isClosed();
    const live = liveWorkers().length;
    if (connected && live > 0) return c.json({ ready: true, workers: live });
    return c.json({ ready: false, error: connected ? "no live worker" : "not connected to NATS" }, 503);
  });
  app.get("/v2", (c) => c.json({ name: "jetshard", version: SERVER_VERSION, extensions: ["model_repository", "binary_tensor_data"] }));

  const metadata = async (c: Context) => {
    const rec = await modelOr404(c.req.param("model")!);
    return c.json(v2Metadata(rec, pickVersion(rec, versionParam(c))));
  };
  app.get("/v2/models/:model", metadata);
  app.get("/v2/models/:model/versions/:version", metadata);

  const ready = async (c: Context) => {
    const rec = await modelOr404(c.req.param("model")!);
    const mv = pickVersion(rec, versionParam(c));
    const cov = coverage(rec, mv);
    const serving = Math.min(...cov.map((x) => x.workers.length));
    if (serving > 0) return c.json({ name: rec.name, ready: true, workers: serving });
    const missing = cov.filter((x) => x.workers.length === 0).map((x) => x.index);
    const what = mv.shards.length > 1 ? `shard(s) ${missing.join(", ")} of model "${rec.name}"` : `model "${rec.name}"`;
    return c.json({ name: rec.name, ready: false, error: `no live worker serves ${what}` }, 503);
  };
  app.get("/v2/models/:model/ready", ready);
  app.get("/v2/models/:model/versions/:version/ready", ready);

  const infer = async (c: Context<GatewayEnv>) => {
    const name = c.req.param("model")!;
    // read the body before any check can fail, so a rejected request leaves the keep-alive connection usable
    const raw = new Uint8Array(await c.req.arrayBuffer());
    const rec = await modelOr404(name);
    const mv = pickVersion(rec, versionParam(c));
    const headerLength = c.req.header(HEADER_LENGTH);
    let body: unknown;
    let rest: Uint8Array | null = null;
    if (headerLength !== undefined) ({ json: body, rest } = splitBinaryBody(raw, headerLength));
    else {
      try {
        body = JSON.parse(new TextDecoder().decode(raw));
      } catch {
        throw new JobError("BAD_REQUEST", "request body is not valid JSON");
      }
    }
    const req = await readJson(c, InferRequestSchema, body);
    const inputs = rest ? tensorsFromBinaryRequest(req, rest) : tensorsFromJson(req);
    validateInputs(name, mv.inputs, inputs);
    const outputs = req.outputs?.map((o) => o.name);
    validateOutputs(name, mv.outputs, outputs);
    const timeoutMs = Math.min(parseDurationMs(req.parameters?.timeout, "parameters.timeout") ?? config.requestTimeoutMs, config.requestTimeoutMs);
    const priority = req.parameters?.priority;
    if (priority !== undefined && priority !== "high" && priority !== "normal") throw new JobError("BAD_REQUEST", `parameters.priority: use "high" or "normal"`);
    try {
      const r = await client.infer(name, inputs, {
        version: mv.version,
        outputs,
        requestId: req.id,
        parameters: req.parameters,
        timeoutMs,
        priority,
        tenant: c.get("principal").tenant,
        direct: config.syncDirect,
      });
      const isBinary = binaryOutputs(req);
      const json = toV2Json({ kind: "result", id: r.id, model: name, version: r.version, requestId: req.id, ok: true, worker: r.worker, computeMs: r.computeMs }, r.outputs, isBinary);
      const bin = encodeBinaryResponse(json, r.outputs, isBinary);
      if (!bin) return c.json(json);
      return c.body(bin.body as Uint8Array<ArrayBuffer>, 200, { "content-type": "application/octet-stream", [HEADER_LENGTH]: String(bin.headerLength) });
    } catch (err) {
      if (err instanceof JobError && err.code === "TIMEOUT" && servingCount(rec, mv) === 0) {
        throw new JobError("NO_WORKER", `no worker served model "${name}" within ${timeoutMs} ms (live workers serving it: 0)`);
      }
      if (err instanceof JobError && err.code === "TIMEOUT") {
        throw new JobError("DEADLINE_EXCEEDED", `model "${name}" did not answer within ${timeoutMs} ms`);
      }
      throw err;
    }
  };
  const live = givenLive ?? createLiveSampler({ config, log, infra, workers, models });
  /** The dashboard's req/s and latency come from these timings. */
  const timedInfer = async (c: Context<GatewayEnv>) => {
    const t0 = performance.now();
    let ok = false;
    let code: string | undefined;
    try {
      const res = await infer(c);
      ok = true;
      return res;
    } catch (err) {
      code = err instanceof JobError ? err.code : (fromNatsError(err)?.code ?? "INTERNAL");
      throw err;
    } finally {
      live.recordRequest(c.req.param("model")!, performance.now() - t0, ok);
      // labelled only with models and versions that exist: the path is the caller's to choose
      const rec = models.get(c.req.param("model")!);
      const v = c.req.param("version") ?? String(rec?.latest ?? "");
      const known = rec?.versions.some((x) => String(x.version) === v);
      metrics.inferred(rec ? rec.name : "_unknown", known ? v : "", (performance.now() - t0) / 1000, code);
    }
  };
  app.post("/v2/models/:model/infer", timedInfer);
  app.post("/v2/models/:model/versions/:version/infer", timedInfer);

  // ---- jetshard model repository
  /** Throws unless the caller may replace or delete `rec` (its tenant's own, or any as admin). */
  const checkOwner = (c: Context<GatewayEnv>, rec: ModelRecord | null | undefined) => {
    if (rec && !canAccess(c.get("principal"), rec.tenant)) {
      throw new JobError("FORBIDDEN", `model "${rec.name}" belongs to another tenant: only its owner or an admin may change it`);
    }
  };
  app.put("/v1/models/:model", async (c) => {
    const name = c.req.param("model");
    // read the body before any check can fail, so a rejected upload leaves the keep-alive connection usable
    const bytes = new Uint8Array(await c.req.arrayBuffer());
    checkModelName(name);
    const opts = parseUploadQuery(c.req.query());
    if (opts.shards !== undefined && opts.shards > config.limits.maxShards) {
      throw new JobError("BAD_REQUEST", `shards: ${opts.shards} is more than the limit of ${config.limits.maxShards} (JETSHARD_MAX_SHARDS)`);
    }
    if (bytes.byteLength === 0) throw new JobError("BAD_REQUEST", "request body is empty: send the ONNX model bytes");
    const tenant = c.get("principal").tenant;
    const prev = models.get(name) ?? (await getModel(infra, name));
    checkOwner(c, prev);
    if (mode === "keys") checkModelQuota(config.quotas, models, prev?.tenant ?? tenant, name, bytes.byteLength);
    const mv = await addModel(infra, name, bytes, { ...opts, tenant });
    const stored = await getModel(infra, name);
    if (stored) models.apply(name, stored);
    log.info({ model: name, version: mv.version, bytes: mv.bytes, shards: mv.shards.length }, "model added");
    return c.json({ name, ...mv }, 201);
  });
  app.get("/v1/models", (c) =>
    c.json({
      models: models
        .values()
        .sort((a, b) => a.name.localeCompare(b.name))
        .map((r) => ({ name: r.name, latest: r.latest, versions: r.versions.map((v) => v.version), shards: pickVersion(r).shards.length, workers: servingCount(r, pickVersion(r)) })),
    }),
  );
  app.get("/v1/models/:model", async (c) => {
    const rec = await modelOr404(c.req.param("model"));
    const latest = pickVersion(rec);
    return c.json({ ...rec, coverage: coverage(rec, latest), ready: servingCount(rec, latest) > 0 });
  });
  app.delete("/v1/models/:model", async (c) => {
    const name = c.req.param("model");
    checkModelName(name);
    checkOwner(c, models.get(name) ?? (await getModel(infra, name)));
    if (!(await deleteModel(infra, name))) throw new JobError("MODEL_NOT_FOUND", `model "${name}" not found`);
    models.apply(name, undefined);
    log.info({ model: name }, "model deleted");
    return c.json({ name, deleted: true });
  });

  app.get("/v1/workers", (c) => c.json({ workers: liveWorkers().sort((a, b) => a.id.localeCompare(b.id)) }));

  app.route("/v1/experiments", experimentRoutes({ config, log, infra, models, checkOwner }));
  const quota = mode === "keys" ? new QueuedJobQuota(infra, config.quotas.queuedJobs) : undefined;
  app.route("/v1", jobRoutes({ config, log, infra, client, lookupModel: modelOr404, quota, metrics }));

  // ---- API keys (admin): the same as `jetshard keys`, over HTTP
  const keysKv = () => {
    if (!keys) throw new JobError("BAD_REQUEST", "authentication is off (JETSHARD_AUTH=off): there are no API keys to manage");
    return keys.kv;
  };
  app.get("/v1/keys", async (c) => c.json({ keys: (await listApiKeys(keysKv())).map(({ hash: _h, ...k }) => k) }));
  app.post("/v1/keys", async (c) => {
    const body = await readJson(c, KeyCreateSchema);
    checkTenant(body.tenant);
    const { key, record } = await createApiKey(keysKv(), { tenant: body.tenant, scopes: parseScopes(body.scopes.join(",")), name: body.name });
    keys!.mirror.apply(record.id, record);
    log.info({ keyId: record.id, tenant: record.tenant, scopes: record.scopes, by: c.get("principal").keyId }, "API key created");
    const { hash: _h, ...shown } = record;
    return c.json({ key, ...shown }, 201);
  });
  app.delete("/v1/keys/:id", async (c) => {
    const rec = await revokeApiKey(keysKv(), c.req.param("id"));
    if (!rec) throw new JobError("JOB_NOT_FOUND", `API key "${c.req.param("id")}" not found`);
    keys!.mirror.apply(rec.id, rec);
    log.info({ keyId: rec.id, tenant: rec.tenant, by: c.get("principal").keyId }, "API key revoked");
    const { hash: _h, ...shown } = rec;
    return c.json(shown);
  });

  // the dashboard page, its assets, GET /v1/events (live data) and GET /v1/whoami
  app.route("/", dashboardRoutes({ live, mode, isRevoked: (id) => keys?.mirror.get(id)?.revokedAt !== undefined }));

  app.get("/metrics", async (c) => c.body(await registry.metrics(), 200, { "content-type": registry.contentType, "cache-control": "no-store" }));

  return app;
}
