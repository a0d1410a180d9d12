/**
 * `jetshard model add|list|rm` and `jetshard infer`: the model repository and one inference, straight over NATS
 * (no gateway needed).
 */
import { readFile } from "node:fs/promises";
import type { ObjectStore } from "@nats-io/obj";
import { JetshardClient } from "#shared/client.js";
import { loadConfig } from "#shared/config.js";
import { addModel, deleteModel, listModels } from "#shared/model-repo.js";
import type { Infra } from "#shared/nats.js";
import { typedArrayToJson, type Tensor } from "#shared/tensor.js";
import { tensorsFromJson } from "#shared/validate.js";
import { InferRequestSchema, zodMessage } from "#shared/wire.js";
import { printJson, printLines, withInfra, connectCli } from "./connect.js";
import { NotFoundError, UsageError } from "./errors.js";
import { Progress, bar, formatBytes } from "./progress.js";

/** Object store chunks are 1 MiB (model-repo's max_chunk_size): hand the store one chunk per read. */
const SLICE = 1024 * 1024;

/**
 * `infra` whose object store reports upload progress: each shard put (`putBlob`) is streamed to the store in
 * chunk-sized slices, and `onBytes(shardObject, storedBytes, shardBytes)` is called as the store reads them (it
 * reads the next slice only once the previous chunk is published and acknowledged) and when the put completes.
 */
function reportingUploads(infra: Infra, onBytes: (object: string, stored: number, total: number) => void): Infra {
  const store = infra.objects;
  const putBlob: ObjectStore["putBlob"] = (meta, data, opts) => {
    const bytes = data ?? new Uint8Array(0);
    let offset = 0;
    onBytes(meta.name, 0, bytes.byteLength);
    const rs = new ReadableStream<Uint8Array>(
      {
        pull(controller) {
          // what the store has read so far, less the slice it may still be publishing
          onBytes(meta.name, Math.max(0, offset - SLICE), bytes.byteLength);
          if (offset >= bytes.byteLength) return controller.close();
          controller.enqueue(bytes.subarray(offset, offset + SLICE));
          offset += SLICE;
        },
      },
      { highWaterMark: 0 },
    );
    return store.put(meta, rs, opts).then((info) => {
      onBytes(meta.name, bytes.byteLength, bytes.byteLength);
      return info;
    });
  };
  const objects = new Proxy(store, {
    get: (target, prop) => {
      if (prop === "putBlob") return putBlob;
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { ...infra, objects };
}

/** Options of `jetshard model add`. */
export interface ModelAddOptions {
  name: string;
  shards?: number;
  maxShardBytes?: number;
  balance?: "bytes" | "flops";
  /** Activations between stages: lz4-compressed or not, FP32 sent as fp16 or not. */
  compression?: "none" | "lz4";
  wireDtype?: "fp32" | "fp16";
}

/** `jetshard model add`: validates, splits and stores a model, drawing upload progress on stderr. */
export async function modelAdd(file: string, opts: ModelAddOptions): Promise<void> {
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(await readFile(file));
  } catch (err) {
    throw new UsageError(`<file.onnx>: cannot read ${file}: ${(err as Error).message}`);
  }
  const progress = new Progress();
  progress.note(`validating ${file} (${formatBytes(bytes.byteLength)}) with ONNX Runtime${opts.shards || opts.maxShardBytes ? " and planning shards" : ""}`);
  const shards = new Map<string, { stored: number; total: number }>();
  const onBytes = (object: string, stored: number, total: number) => {
    shards.set(object, { stored, total });
    const index = [...shards.keys()].indexOf(object) + 1;
    const of = opts.shards ? `/${opts.shards}` : "";
    const all = [...shards.values()].reduce((s, x) => s + x.stored, 0);
    const shardDone = stored >= total;
    progress.update(
      `storing shard ${index}${of} ${bar(total ? stored / total : 1)} ${formatBytes(stored)}/${formatBytes(total)}  (${formatBytes(all)} stored)`,
      // on a pipe: one line per shard stored
      shardDone ? `stored shard ${index}${of}: ${formatBytes(total)} (${formatBytes(all)} in all)` : null,
    );
  };
  try {
    const mv = await withInfra((infra) =>
      addModel(reportingUploads(infra, onBytes), opts.name, bytes, {
        shards: opts.shards,
        maxShardBytes: opts.maxShardBytes,
        balance: opts.balance,
        wire: { ...(opts.compression ? { compression: opts.compression } : {}), ...(opts.wireDtype ? { dtype: opts.wireDtype } : {}) },
      }),
    );
    progress.end();
    printJson({ name: opts.name, version: mv.version, inputs: mv.inputs, outputs: mv.outputs, shards: mv.shards.length, ...(mv.note ? { note: mv.note } : {}) });
  } finally {
    progress.end();
  }
}

/** `jetshard model list`. */
export async function modelList(opts: { json?: boolean }): Promise<void> {
  const models = await withInfra(listModels);
  if (opts.json) return printJson({ models });
  printLines(
    models.map((m) => `${m.name}\tlatest=${m.latest}\tversions=${m.versions.map((v) => v.version).join(",")}`),
    "(no models)",
  );
}

/** `jetshard model rm`. */
export async function modelRm(name: string): Promise<void> {
  const ok = await withInfra((infra) => deleteModel(infra, name));
  if (!ok) throw new NotFoundError(`model "${name}" not found`);
  process.stdout.write(`deleted ${name}\n`);
}

/** `--input name:DATATYPE:1x4:1,2,3,4` as a tensor. */
function parseInputFlag(s: string): Tensor {
  const [name, datatype, shape, data] = s.split(":");
  if (!name || !datatype || !shape || data === undefined) throw new UsageError(`--input ${s}: expected name:DATATYPE:1x4:1,2,3,4`);
  const dims = shape.split("x").map(Number);
  const values = data.split(",").map((v) => (v === "true" ? true : v === "false" ? false : Number(v)));
  const req = InferRequestSchema.safeParse({ inputs: [{ name, datatype, shape: dims, data: values }] });
  if (!req.success) throw new UsageError(zodMessage(req.error, `--input ${name}`));
  return tensorsFromJson(req.data)[0]!;
}

/** Options of `jetshard infer`. */
export interface InferOptions {
  json?: string;
  input: string[];
  output: string[];
  version?: number;
  timeoutMs?: number;
}

/** `jetshard infer`: publishes one job to JetStream and prints the v2 response. */
export async function infer(model: string, opts: InferOptions): Promise<void> {
  let inputs: Tensor[];
  let requestId: string | undefined;
  let outputs: string[] | undefined = opts.output.length ? opts.output : undefined;
  if (opts.json) {
    let text = opts.json;
    if (text.startsWith("@")) {
      try {
        text = await readFile(text.slice(1), "utf8");
      } catch (err) {
        throw new UsageError(`--json ${opts.json}: ${(err as Error).message}`);
      }
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new UsageError(`--json: not valid JSON: ${(err as Error).message}`);
    }
    const parsed = InferRequestSchema.safeParse(json);
    if (!parsed.success) throw new UsageError(zodMessage(parsed.error, "--json"));
    inputs = tensorsFromJson(parsed.data);
    requestId = parsed.data.id;
    outputs ??= parsed.data.outputs?.map((o) => o.name);
  } else if (opts.input.length) {
    inputs = opts.input.map(parseInputFlag);
  } else {
    throw new UsageError("infer needs --json or --input");
  }
  const config = loadConfig();
  const client = new JetshardClient(await connectCli(config, "jetshard-client"), { ownsConnection: true });
  try {
    const r = await client.infer(model, inputs, { outputs, requestId, version: opts.version, timeoutMs: opts.timeoutMs ?? config.requestTimeoutMs });
    printJson({
      model_name: r.model,
      model_version: String(r.version ?? ""),
      id: r.requestId,
      parameters: { job_id: r.id, worker: r.worker },
      outputs: r.outputs.map((t) => ({ name: t.name, datatype: t.datatype, shape: t.shape, data: typedArrayToJson(t.datatype, t.data) })),
    });
  } finally {
    await client.close();
  }
}
