/**
 * Result messages. A job sent as a binary frame gets a frame back; a job sent as v2 JSON (handy for
 * scripts publishing straight to NATS) gets a v2 JSON response back, with `error` set on failure.
 */
import { JobError, isErrorCode } from "./errors.js";
import { isDatatype, typedArrayFromJson, typedArrayToJson, type Tensor } from "./tensor.js";
import { ResultMetaSchema, decodeFrame, encodeFrame, isFrame, type InferResponseJson, type ResultMeta } from "./wire.js";

export type WireFormat = "frame" | "json";

export interface DecodedResult {
  meta: ResultMeta;
  outputs: Tensor[];
}

/** The v2 JSON body for a successful result. */
export function toV2Json(meta: ResultMeta, outputs: readonly Tensor[], skipData?: (name: string) => boolean): InferResponseJson {
  return {
    model_name: meta.model,
    model_version: String(meta.version ?? ""),
    ...(meta.requestId !== undefined ? { id: meta.requestId } : {}),
    parameters: { job_id: meta.id, ...(meta.worker ? { worker: meta.worker } : {}), ...(meta.computeMs !== undefined ? { compute_ms: meta.computeMs } : {}) },
    outputs: outputs.map((t) => (skipData?.(t.name) ? { name: t.name, datatype: t.datatype, shape: t.shape } : { name: t.name, datatype: t.datatype, shape: t.shape, data: typedArrayToJson(t.datatype, t.data) })),
  };
}

export function encodeResult(format: WireFormat, meta: ResultMeta, outputs: readonly Tensor[]): Uint8Array {
  if (format === "frame") return encodeFrame(meta, outputs);
  const body = meta.ok
    ? toV2Json(meta, outputs)
    : { model_name: meta.model, model_version: String(meta.version ?? ""), id: meta.requestId, job_id: meta.id, error: meta.error?.message, code: meta.error?.code };
  return new TextEncoder().encode(JSON.stringify(body));
}

/** Decodes either result format. */
export function decodeResult(bytes: Uint8Array): DecodedResult {
  if (isFrame(bytes)) {
    const { meta, tensors } = decodeFrame(bytes);
    return { meta: ResultMetaSchema.parse(meta), outputs: tensors };
  }
  const j = JSON.parse(new TextDecoder().decode(bytes));
  const meta: ResultMeta = {
    kind: "result",
    id: j.job_id ?? j.parameters?.job_id ?? "",
    model: j.model_name,
    version: j.model_version ? Number(j.model_version) : undefined,
    requestId: j.id,
    ok: !j.error,
    ...(j.error ? { error: { code: j.code ?? "INTERNAL", message: j.error } } : {}),
    worker: j.parameters?.worker,
  };
  const outputs: Tensor[] = (j.outputs ?? []).map((o: { name: string; datatype: string; shape: number[]; data: unknown }) => {
    if (!isDatatype(o.datatype)) throw new Error(`result output ${o.name}: bad datatype ${o.datatype}`);
    return { name: o.name, datatype: o.datatype, shape: o.shape, data: typedArrayFromJson(o.datatype, o.shape, o.data, `output "${o.name}"`) };
  });
  return { meta, outputs };
}

/** Throws the result's error as a JobError when it failed. */
export function throwIfFailed(meta: ResultMeta): void {
  if (meta.ok) return;
  const code = isErrorCode(meta.error?.code) ? meta.error.code : "INTERNAL";
  throw new JobError(code, meta.error?.message ?? "job failed");
}
