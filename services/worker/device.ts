import { execFile } from "node:child_process";
import os from "node:os";
import { promisify } from "node:util";
import * as ort from "onnxruntime-node";
import { encodeModel, mlp } from "#shared/onnx/builder.js";
import type { Logger } from "#shared/log.js";
import type { WorkerInfo } from "#shared/wire.js";

export type DeviceInfo = WorkerInfo["device"];

const run = promisify(execFile);

/** The first GPU nvidia-smi reports, or null when there is no nvidia-smi or no GPU. */
export async function queryNvidiaSmi(): Promise<{ name: string; memoryMb: number } | null> {
  try {
    const { stdout } = await run("nvidia-smi", ["--query-gpu=name,memory.total", "--format=csv,noheader,nounits"], { timeout: 5_000 });
    const line = stdout.split("\n").find((l) => l.trim());
    if (!line) return null;
    const [name, mem] = line.split(",").map((s) => s.trim());
    return { name: name ?? "NVIDIA GPU", memoryMb: Number(mem) || 0 };
  } catch {
    return null;
  }
}

function cpuDevice(note: string): DeviceInfo {
  const cpus = os.cpus();
  return { kind: "cpu", name: `${cpus[0]?.model?.trim() ?? "CPU"} x${cpus.length}`, memoryMb: Math.round(os.totalmem() / 2 ** 20), note };
}

/**
 * Picks the execution device: CUDA when ONNX Runtime's CUDA provider loads and nvidia-smi reports a GPU,
 * otherwise CPU, with the reason said plainly in `note`.
 */
export async function detectDevice(pref: "auto" | "cpu" | "cuda", log: Logger): Promise<DeviceInfo> {
  if (pref === "cpu") return cpuDevice("CPU (JETSHARD_DEVICE=cpu)");
  const gpu = await queryNvidiaSmi();
  if (!gpu) {
    const note = "CPU: no NVIDIA GPU found (nvidia-smi missing or reports none)";
    if (pref === "cuda") log.warn(note + " although JETSHARD_DEVICE=cuda");
    return cpuDevice(note);
  }
  try {
    // built here in code, so no tensor can point at a file: no external-data check needed
    const s = await ort.InferenceSession.create(encodeModel(mlp({ layers: [4, 4] })), { executionProviders: ["cuda"] });
    await s.release();
    return { kind: "cuda", name: gpu.name, memoryMb: gpu.memoryMb, note: `CUDA execution provider on ${gpu.name}` };
  } catch (err) {
    const reason = (err instanceof Error ? err.message : String(err)).split("\n")[0]!.slice(0, 200);
    const note = `CPU: ${gpu.name} found but ONNX Runtime's CUDA provider did not load (${reason}); install it with ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node`;
    log.warn(note);
    return cpuDevice(note);
  }
}

/** ORT execution providers for a device, CPU always last as the fallback. */
export function executionProviders(device: DeviceInfo): string[] {
  return device.kind === "cuda" ? ["cuda", "cpu"] : ["cpu"];
}

/**
 * Detects the device and proves it by running a tiny model on it: what `jetshard device` prints, and the first
 * thing to run on a new GPU host.
 */
export async function checkDevice(pref: "auto" | "cpu" | "cuda", log: Logger) {
  const device = await detectDevice(pref, log);
  const providers = executionProviders(device);
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
