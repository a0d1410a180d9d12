/**
 * Turning a JetStream message into work: a job for shard 0 (a binary frame, what jetshard's own client sends,
 * or a v2 JSON request, what a script publishing straight to NATS may send), or a pipeline hop for shard i ≥ 1
 * (always a frame, its activations inline or behind a claim check in the object store).
 */
import type { JsMsg } from "@nats-io/jetstream";
import { JobError } from "#shared/errors.js";
import type { Infra } from "#shared/nats.js";
import { HEADERS, STREAMS } from "#shared/subjects.js";
import type { Tensor } from "#shared/tensor.js";
import { tensorsFromJson } from "#shared/validate.js";
import { InferRequestSchema, JobMetaSchema, StageMetaSchema, decodeFrame, isFrame, zodMessage } from "#shared/wire.js";
import type { WireFormat } from "#shared/results.js";

export interface Job {
  id: string;
  model: string;
  /** Shard this message is for. */
  stage: number;
  version?: number;
  requestId?: string;
  outputs?: string[];
  parameters?: Record<string, unknown>;
  inputs: Tensor[];
  /** The format the client used; the final answer comes back in it. */
  format: WireFormat;
  reply?: string;
  deadline?: number;
  submittedAt?: number;
  /** Claim-check object to delete once this hop is done. */
  claim?: string;
  /** Tracked in the `jobs` bucket (async jobs). */
  track?: boolean;
  /** The incoming message's Nats-Msg-Id: the dedup key everything this message produces derives from. */
  msgId?: string;
}

/** Envelope fields readable even when the body is not: used to report a failure for a malformed job. */
export function jobEnvelope(m: JsMsg, model: string): Pick<Job, "id" | "model" | "reply" | "format"> {
  return {
    id: m.headers?.get(HEADERS.jobId) || m.headers?.get(HEADERS.msgId) || `${STREAMS.jobs}-${m.seq}`,
    model,
    reply: m.headers?.get(HEADERS.reply) || undefined,
    format: isFrame(m.data) ? "frame" : "json",
  };
}

function deadlineOf(m: JsMsg): number | undefined {
  const h = m.headers?.get(HEADERS.deadline);
  return h ? Number(h) : undefined;
}

/** Parses a job for shard 0. Throws JobError (never retryable: a bad message stays bad). */
export function parseJob(m: JsMsg, model: string, env = jobEnvelope(m, model)): Job {
  const deadline = deadlineOf(m);
  const versionH = m.headers?.get(HEADERS.modelVersion);
  if (env.format === "frame") {
    const { meta, tensors } = decodeFrame(m.data);
    const parsed = JobMetaSchema.safeParse(meta);
    if (!parsed.success) throw new JobError("BAD_REQUEST", `job frame: ${zodMessage(parsed.error)}`);
    const j = parsed.data;
    if (j.model !== model) throw new JobError("BAD_REQUEST", `job frame names model "${j.model}" but was published for "${model}"`);
    return { ...env, id: j.id, stage: 0, version: j.version, requestId: j.requestId, outputs: j.outputs, parameters: j.parameters, inputs: tensors, deadline, submittedAt: j.submittedAt };
  }
  let body: unknown;
  try {
    body = JSON.parse(new TextDecoder().decode(m.data));
  } catch {
    throw new JobError("BAD_REQUEST", "job body is neither a jetshard frame nor JSON");
  }
  const parsed = InferRequestSchema.safeParse(body);
  if (!parsed.success) throw new JobError("BAD_REQUEST", zodMessage(parsed.error));
  const req = parsed.data;
  const version = versionH ? Number(versionH) : undefined;
  if (version !== undefined && !(Number.isInteger(version) && version >= 1)) {
    throw new JobError("BAD_REQUEST", `header ${HEADERS.modelVersion}: ${versionH} is not a version number`);
  }
  return {
    ...env,
    stage: 0,
    version,
    requestId: req.id,
    outputs: req.outputs?.map((o) => o.name),
    parameters: req.parameters,
    inputs: tensorsFromJson(req),
    deadline,
  };
}

/** Parses a pipeline hop for shard `stage` ≥ 1, fetching claim-checked activations. */
export async function parseStage(m: JsMsg, model: string, stage: number, infra: Infra, env = jobEnvelope(m, model)): Promise<Job> {
  let { meta, tensors } = decodeFrame(m.data);
  const parsed = StageMetaSchema.safeParse(meta);
  if (!parsed.success) throw new JobError("BAD_REQUEST", `stage frame: ${zodMessage(parsed.error)}`);
  const s = parsed.data;
  if (s.model !== model || s.stage !== stage) throw new JobError("BAD_REQUEST", `stage frame for ${s.model}:${s.stage} arrived at ${model}:${stage}`);
  if (s.claim) {
    const bytes = await infra.claims.getBlob(s.claim).catch((err) => {
      throw new JobError("NATS_UNAVAILABLE", `could not fetch activations ${s.claim}: ${(err as Error).message}`, { retryable: true, cause: err });
    });
    if (!bytes) throw new JobError("INTERNAL", `activations ${s.claim} are missing from the claims store`, { retryable: true });
    ({ tensors } = decodeFrame(bytes));
  }
  return {
    ...env,
    id: s.id,
    stage,
    version: s.version,
    requestId: s.requestId,
    outputs: s.outputs,
    parameters: s.parameters,
    inputs: tensors,
    format: s.format,
    deadline: deadlineOf(m),
    submittedAt: s.submittedAt,
    claim: s.claim,
  };
}
