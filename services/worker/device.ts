import os from "node:os";
import * as ort from "onnxruntime-node";
import { ConfigError } from "#shared/config.js";
import { listGpus, type GpuSample } from "#shared/gpu.js";
import { encodeModel, mlp } from "#shared/onnx/builder.js";
import type { Logger } from "#shared/log.js";
import type { WorkerInfo } from "#shared/wire.js";

export type DeviceInfo = WorkerInfo["device"];

/** Which GPU to use and how to ask about GPUs: the config's `gpu` part. */
export interface GpuChoice {
  /** JETSHARD_GPU_ID: the CUDA device this worker is bound to; unset = the first GPU. */
  id?: number;
  /** JETSHARD_NVIDIA_SMI. */
  nvidiaSmi: string;
}

/**
 * The GPU a worker runs on: the one listed with index `id`, or the first. Null when nvidia-smi lists none.
 * @throws ConfigError naming JETSHARD_GPU_ID when `id` is set and no GPU has that index.
 */
export function pickGpu(gpus: readonly GpuSample[], id: number | undefined): GpuSample | null {
  if (id === undefined) return gpus[0] ?? null;
  const gpu = gpus.find((g) => g.index === id);
  if (gpu) return gpu;
  const listed = gpus.length ? `nvidia-smi lists GPU ${gpus.map((g) => `${g.index} (${g.name})`).join(", ")}` : "nvidia-smi lists no GPU (or is missing)";
  throw new ConfigError(`JETSHARD_GPU_ID=${id}: no such GPU on this host; ${listed}`);
}

function cpuDevice(note: string): DeviceInfo {
  const cpus = os.cpus();
  return { kind: "cpu", name: `${cpus[0]?.model?.trim() ?? "CPU"} x${cpus.length}`, memoryMb: Math.round(os.totalmem() / 2 ** 20), note };
}

/**
 * Picks the execution device: CUDA when ONNX Runtime's CUDA provider loads and nvidia-smi lists a GPU (the one
 * `gpu.id` names, else the first), otherwise CPU, with the reason said plainly in `note`.
 * @throws ConfigError when JETSHARD_GPU_ID names a GPU nvidia-smi does not list, or is set with JETSHARD_DEVICE=cpu.
 */
export async function detectDevice(pref: "auto" | "cpu" | "cuda", log: Logger, gpuChoice: GpuChoice = { nvidiaSmi: "nvidia-smi" }): Promise<DeviceInfo> {
  if (pref === "cpu") {
    if (gpuChoice.id !== undefined) throw new ConfigError(`JETSHARD_GPU_ID=${gpuChoice.id} binds this worker to a GPU, but JETSHARD_DEVICE=cpu: unset one of them`);
    return cpuDevice("CPU (JETSHARD_DEVICE=cpu)");
  }
  const gpu = pickGpu(await listGpus(gpuChoice.nvidiaSmi), gpuChoice.id);
  if (!gpu) {
    const note = "CPU: no NVIDIA GPU found (nvidia-smi missing or reports none)";
    if (pref === "cuda") log.warn(note + " although JETSHARD_DEVICE=cuda");
    return cpuDevice(note);
  }
  const where = `${gpu.name} (GPU ${gpu.index})`;
  try {
    // built here in code, so no tensor can point at a file: no external-data check needed
    const s = await ort.InferenceSession.create(encodeModel(mlp({ layers: [4, 4] })), { executionProviders: [{ name: "cuda", deviceId: gpu.index }] as never });
    await s.release();
    return { kind: "cuda", name: gpu.name, memoryMb: gpu.memTotalMb, gpuIndex: gpu.index, note: `CUDA execution provider on ${where}` };
  } catch (err) {
    const reason = (err instanceof Error ? err.message : String(err)).split("\n")[0]!.slice(0, 200);
    const note = `CPU: ${where} found but ONNX Runtime's CUDA provider did not load (${reason}); install it with ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node`;
    log.warn(note);
    return cpuDevice(note);
  }
}

/** ORT execution provider names for a device, CPU always last as the fallback (NAS evaluators take names). */
export function executionProviders(device: DeviceInfo): string[] {
  return device.kind === "cuda" ? ["cuda", "cpu"] : ["cpu"];
}

/** ORT execution providers of an inference session: CUDA on the device this worker is bound to, then CPU. */
export function sessionProviders(device: DeviceInfo): ort.InferenceSession.ExecutionProviderConfig[] {
  return device.kind === "cuda" ? [{ name: "cuda", deviceId: device.gpuIndex ?? 0 }, "cpu"] : ["cpu"];
}

/**
 * Detects the device and proves it by running a tiny model on it: what `jetshard device` prints, and the first
 * thing to run on a new GPU host.
 */
export async function checkDevice(pref: "auto" | "cpu" | "cuda", log: Logger, gpuChoice?: GpuChoice) {
  const device = await detectDevice(pref, log, gpuChoice);
  const providers = sessionProviders(device);
  const t0 = performance.now();
  // built here in code (no external data possible), like the probe in detectDevice
  const s = await ort.InferenceSession.create(encodeModel(mlp({ layers: [4, 8, 2], seed: 1 })), { executionProviders: providers as never });
  const r = await s.run({ input: new ort.Tensor("float32", Float32Array.of(1, 2, 3, 4), [1, 4]) });
  await s.release();
  return {
    device,
    providers,
    ortBackends: ort.listSupportedBackends?.().map((b) => b.name) ?? [],
    check: { ok: true, output: Array.from(r.output!.data as Float32Array), ms: Math.round((performance.now() - t0) * 10) / 10 },
  };
}
