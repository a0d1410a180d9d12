/**
 * Request validation shared by the gateway (before publishing) and the worker (after receiving,
 * since anyone may publish to NATS directly).
 */
import { JobError } from "./errors.js";
import { isDatatype, typedArrayFromJson, type Tensor } from "./tensor.js";
import type { InferRequest, TensorSpec } from "./wire.js";

const fmtShape = (s: readonly number[]) => `[${s.join(",")}]`;
const describe = (specs: readonly TensorSpec[]) => specs.map((s) => `${s.name} (${s.datatype} ${fmtShape(s.shape)})`).join(", ");

/** Converts the `inputs` of a v2 JSON request to tensors. Throws JobError (400) naming the input. */
export function tensorsFromJson(req: InferRequest): Tensor[] {
  return req.inputs.map((inp, i) => {
    const where = `input "${inp.name}"`;
    if (!isDatatype(inp.datatype)) {
      throw new JobError("INPUT_DATATYPE", `${where}: unsupported datatype ${JSON.stringify(inp.datatype)} (use one of BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64)`);
    }
    if (inp.data === undefined) throw new JobError("INPUT_DATA", `${where}: missing "data" (inputs[${i}].data)`);
    return { name: inp.name, datatype: inp.datatype, shape: inp.shape, data: typedArrayFromJson(inp.datatype, inp.shape, inp.data, where) };
  });
}

/**
 * Checks tensors against a model's declared inputs: every input present, no unknown ones, datatypes equal,
 * ranks equal, fixed dimensions equal. Throws JobError INPUT_* (400) naming the input and what was expected.
 */
export function validateInputs(model: string, specs: readonly TensorSpec[], tensors: readonly Tensor[]): void {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  if (byName.size !== tensors.length) throw new JobError("BAD_REQUEST", `an input is given more than once`);
  for (const t of tensors) {
    if (!specs.some((s) => s.name === t.name)) {
      throw new JobError("BAD_REQUEST", `input "${t.name}" is not an input of model "${model}" (inputs: ${describe(specs)})`);
    }
  }
  for (const s of specs) {
    const t = byName.get(s.name);
    if (!t) throw new JobError("INPUT_MISSING", `input "${s.name}" is missing: model "${model}" expects ${describe(specs)}`);
    if (t.datatype !== s.datatype) {
      throw new JobError("INPUT_DATATYPE", `input "${s.name}": expected datatype ${s.datatype}, got ${t.datatype}`);
    }
    const ok = t.shape.length === s.shape.length && s.shape.every((d, i) => d < 0 || d === t.shape[i]);
    if (!ok) throw new JobError("INPUT_SHAPE", `input "${s.name}": expected shape ${fmtShape(s.shape)} (-1 = any), got ${fmtShape(t.shape)}`);
  }
}

/** Checks an `outputs` filter against the model's outputs. Throws JobError OUTPUT_UNKNOWN (400). */
export function validateOutputs(model: string, specs: readonly TensorSpec[], wanted: readonly string[] | undefined): void {
  for (const name of wanted ?? []) {
    if (!specs.some((s) => s.name === name)) {
      throw new JobError("OUTPUT_UNKNOWN", `output "${name}" is not an output of model "${model}" (outputs: ${specs.map((s) => s.name).join(", ")})`);
    }
  }
}
