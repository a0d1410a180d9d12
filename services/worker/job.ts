/**
 * Turning a JetStream message into a job: either a binary frame (what jetshard's own client sends) or a
 * v2 JSON request (what a script publishing straight to NATS may send).
 */
import type { JsMsg } from "@nats-io/jetstream";
import { JobError } from "#shared/errors.js";
import { HEADERS, STREAMS } from "#shared/subjects.js";
import type { Tensor } from "#shared/tensor.js";
import { tensorsFromJson } from "#shared/validate.js";
import { InferRequestSchema, JobMetaSchema, decodeFrame, isFrame, zodMessage } from "#shared/wire.js";
import type { WireFormat } from "#shared/results.js";

export interface Job {
  id: string;
  model: string;
  version?: number;
  requestId?: string;
  outputs?: string[];
  parameters?: Record<string, unknown>;
  inputs: Tensor[];
  format: WireFormat;
  reply?: string;
  deadline?: number;
}

/** Envelope fields readable even when the body is not: used to report a failure for a malformed job. */
export function jobEnvelope(m: JsMsg, model: string): Pick<Job, "id" | "model" | "reply" | "format"> {
  return {
    id: m.headers?.get(HEADERS.msgId) || `${STREAMS.jobs}-${m.seq}`,
    model,
    reply: m.headers?.get(HEADERS.reply) || undefined,
    format: isFrame(m.data) ? "frame" : "json",
  };
}

/** Parses a job message. Throws JobError (never retryable: a bad message stays bad). */
export function parseJob(m: JsMsg, model: string): Job {
  const env = jobEnvelope(m, model);
  const deadlineH = m.headers?.get(HEADERS.deadline);
  const deadline = deadlineH ? Number(deadlineH) : undefined;
  const versionH = m.headers?.get(HEADERS.modelVersion);
  if (env.format === "frame") {
    const { meta, tensors } = decodeFrame(m.data);
    const parsed = JobMetaSchema.safeParse(meta);
    if (!parsed.success) throw new JobError("BAD_REQUEST", `job frame: ${zodMessage(parsed.error)}`);
    const j = parsed.data;
    if (j.model !== model) throw new JobError("BAD_REQUEST", `job frame names model "${j.model}" but was published for "${model}"`);
    return { ...env, id: j.id, version: j.version, requestId: j.requestId, outputs: j.outputs, parameters: j.parameters, inputs: tensors, deadline };
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
    version,
    requestId: req.id,
    outputs: req.outputs?.map((o) => o.name),
    parameters: req.parameters,
    inputs: tensorsFromJson(req),
    deadline,
  };
}
