/**
 * Turning a JetStream message into work: a job for shard 0 (a binary frame, what jetshard's own client sends,
 * or a v2 JSON request, what a script publishing straight to NATS may send), or a pipeline hop for shard i ≥ 1
 * (always a frame, its activations inline or behind a claim check in the object store).
 */
import { decodeActivations } from "#shared/activation-codec.js";
import { JobError } from "#shared/errors.js";
import type { Infra } from "#shared/nats.js";
import { jobIdOf } from "#shared/envelope.js";
import { HEADERS } from "#shared/subjects.js";
import type { Tensor } from "#shared/tensor.js";
import { tensorsFromJson } from "#shared/validate.js";
import { InferRequestSchema, JobMetaSchema, StageMetaSchema, decodeFrame, isFrame, zodMessage } from "#shared/wire.js";
import type { WireFormat } from "#shared/results.js";
import type { Held, JobRef } from "./job-runtime.js";

export interface Job extends JobRef {
  /** Shard this message is for. */
  stage: number;
  version?: number;
  requestId?: string;
  outputs?: string[];
  parameters?: Record<string, unknown>;
  inputs: Tensor[];
  /** The format the client used; the final answer comes back in it. */
  format: WireFormat;
  /** Claim-check object to delete once this hop is done. */
  claim?: string;
}

/** The format a message's answer goes back in, readable even when its body is not. */
export function formatOf(data: Uint8Array): WireFormat {
  return isFrame(data) ? "frame" : "json";
}

/** A claim-checked frame from the claims store (inputs or activations too big for one message). */
async function fetchClaim(infra: Infra, claim: string): Promise<Uint8Array> {
  const bytes = await infra.claims.getBlob(claim).catch((err) => {
    throw new JobError("NATS_UNAVAILABLE", `could not fetch claim-checked tensors ${claim}: ${(err as Error).message}`, { retryable: true, cause: err });
  });
  if (!bytes) throw new JobError("INTERNAL", `tensors ${claim} are missing from the claims store`, { retryable: true });
  return bytes;
}

/**
 * Parses a job for shard 0, fetching claim-checked inputs. Throws JobError (a malformed message is never
 * retryable: a bad message stays bad).
 */
export async function parseJob(held: Held, model: string, infra: Infra): Promise<Job> {
  const base = { model, stage: 0, entry: true } as const;
  if (isFrame(held.data)) {
    let { meta, tensors } = decodeFrame(held.data);
    const parsed = JobMetaSchema.safeParse(meta);
    if (!parsed.success) throw new JobError("BAD_REQUEST", `job frame: ${zodMessage(parsed.error)}`);
    const j = parsed.data;
    if (j.model !== model) throw new JobError("BAD_REQUEST", `job frame names model "${j.model}" but was published for "${model}"`);
    if (j.claim) ({ tensors } = decodeFrame(await fetchClaim(infra, j.claim)));
    return { ...base, id: j.id, format: "frame", version: j.version, requestId: j.requestId, outputs: j.outputs, parameters: j.parameters, inputs: tensors, submittedAt: j.submittedAt, claim: j.claim };
  }
  let body: unknown;
  try {
    body = JSON.parse(new TextDecoder().decode(held.data));
  } catch {
    throw new JobError("BAD_REQUEST", "job body is neither a jetshard frame nor JSON");
  }
  const parsed = InferRequestSchema.safeParse(body);
  if (!parsed.success) throw new JobError("BAD_REQUEST", zodMessage(parsed.error));
  const req = parsed.data;
  const versionH = held.env.modelVersion;
  const version = versionH !== undefined ? Number(versionH) : undefined;
  if (version !== undefined && !(Number.isInteger(version) && version >= 1)) {
    throw new JobError("BAD_REQUEST", `header ${HEADERS.modelVersion}: ${versionH} is not a version number`);
  }
  return {
    ...base,
    id: jobIdOf(held.env, held.seq),
    format: "json",
    version,
    requestId: req.id,
    outputs: req.outputs?.map((o) => o.name),
    parameters: req.parameters,
    inputs: tensorsFromJson(req),
  };
}

/** Parses a pipeline hop for shard `stage` ≥ 1, fetching claim-checked activations. */
export async function parseStage(held: Held, model: string, stage: number, infra: Infra): Promise<Job> {
  let { meta, tensors } = decodeFrame(held.data);
  const parsed = StageMetaSchema.safeParse(meta);
  if (!parsed.success) throw new JobError("BAD_REQUEST", `stage frame: ${zodMessage(parsed.error)}`);
  const s = parsed.data;
  if (s.model !== model || s.stage !== stage) throw new JobError("BAD_REQUEST", `stage frame for ${s.model}:${s.stage} arrived at ${model}:${stage}`);
  if (s.claim) ({ meta, tensors } = decodeFrame(await fetchClaim(infra, s.claim)));
  // a claim-checked frame carries its own encoding (the header of the frame in the store, not of the message)
  tensors = await decodeActivations(s.claim ? meta.encoding : s.encoding, tensors);
  return {
    id: s.id,
    model,
    entry: false,
    stage,
    version: s.version,
    requestId: s.requestId,
    outputs: s.outputs,
    parameters: s.parameters,
    inputs: tensors,
    format: s.format,
    submittedAt: s.submittedAt,
    claim: s.claim,
  };
}
