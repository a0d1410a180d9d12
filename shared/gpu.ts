/**
 * GPUs as nvidia-smi lists them. One query returns every GPU of the host (index, name, uuid, utilization, memory);
 * fields a GPU cannot report ("[N/A]", "[Not Supported]") are left out. No nvidia-smi, no driver, a hung
 * nvidia-smi: an empty list, never an exception.
 */
import { execFile } from "node:child_process";
import type { GpuSample } from "./wire.js";

export type { GpuSample };

/** What is asked of nvidia-smi, in this order (its CSV columns). */
export const NVIDIA_SMI_ARGS = ["--query-gpu=index,name,uuid,utilization.gpu,memory.used,memory.total", "--format=csv,noheader,nounits"] as const;

/** How long one nvidia-smi call may take before it is killed (a wedged driver can hang it for minutes). */
export const NVIDIA_SMI_TIMEOUT_MS = 5_000;

/** A number from one CSV field, or undefined for "[N/A]", "[Not Supported]", an empty or non-numeric field. */
function num(field: string | undefined): number | undefined {
  const s = field?.trim();
  if (!s || s.startsWith("[")) return undefined;
  const n = Number(s);
  return Number.isFinite(n) ? n : undefined;
}

/**
 * Parses the output of `nvidia-smi ${NVIDIA_SMI_ARGS}`: one line per GPU, e.g.
 * `0, NVIDIA H100 80GB HBM3, GPU-9d6f…, 35, 1024, 81559`. Lines that do not start with a GPU index are skipped.
 */
export function parseNvidiaSmi(stdout: string): GpuSample[] {
  const out: GpuSample[] = [];
  for (const line of stdout.split(/\r?\n/)) {
    const fields = line.split(",").map((f) => f.trim());
    if (fields.length < 6) continue;
    const index = num(fields[0]);
    if (index === undefined || !Number.isInteger(index)) continue;
    // a name with a comma in it spans several fields: the four after it are fixed
    const tail = fields.slice(-4);
    const name = fields.slice(1, -4).join(", ");
    const uuid = tail[0] && !tail[0].startsWith("[") ? tail[0] : undefined;
    const gpu: GpuSample = { index, name: name && !name.startsWith("[") ? name : `GPU ${index}` };
    if (uuid) gpu.uuid = uuid;
    const util = num(tail[1]);
    const used = num(tail[2]);
    const total = num(tail[3]);
    if (util !== undefined) gpu.utilPercent = util;
    if (used !== undefined) gpu.memUsedMb = used;
    if (total !== undefined) gpu.memTotalMb = total;
    out.push(gpu);
  }
  return out;
}

/**
 * Every GPU `nvidiaSmi` (a path, or a name on PATH; JETSHARD_NVIDIA_SMI) lists, in its order. Resolves to [] when it
 * is missing, fails, prints nothing usable, or runs longer than `timeoutMs`. Never rejects.
 */
export function listGpus(nvidiaSmi = "nvidia-smi", timeoutMs = NVIDIA_SMI_TIMEOUT_MS): Promise<GpuSample[]> {
  return new Promise((resolve) => {
    try {
      execFile(nvidiaSmi, [...NVIDIA_SMI_ARGS], { timeout: timeoutMs, killSignal: "SIGKILL", maxBuffer: 1024 * 1024, windowsHide: true }, (err, stdout) => {
        resolve(err ? [] : parseNvidiaSmi(String(stdout)));
      });
    } catch {
      resolve([]);
    }
  });
}
