/**
 * Stand-in `nvidia-smi` scripts for GPU tests: each prints what a real nvidia-smi prints for
 * `--query-gpu=index,name,uuid,utilization.gpu,memory.used,memory.total --format=csv,noheader,nounits` on a host with
 * 1, 2 or 8 GPUs (fields a GPU cannot report come out as "[N/A]" or "[Not Supported]", as nvidia-smi writes them),
 * and fails like nvidia-smi on any other arguments, so a caller asking something else notices.
 */
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Test } from "tap";
import { NVIDIA_SMI_ARGS } from "#shared/gpu.js";

/** One workstation GPU. */
export const ONE_GPU = "0, NVIDIA GeForce RTX 4090, GPU-2b8f6c1e-7d43-4a0f-9e55-3c1d8a6b0f27, 7, 1834, 24564\n";

/** Two data-center GPUs; the second's memory.used is not reported (as on a GPU in a bad state). */
export const TWO_GPUS = [
  "0, NVIDIA A100-SXM4-40GB, GPU-6f0c2a3d-51b4-4c8e-a0d2-9b7e13f4c5a1, 43, 12011, 40960",
  "1, NVIDIA A100-SXM4-40GB, GPU-a93e7b10-2c6d-4f85-8e1a-5d0b64c7f392, 0, [Not Supported], 40960",
].join("\n") + "\n";

/** An 8-GPU HGX H100 node; GPU 7 is in MIG mode, where nvidia-smi reports no utilization. */
export const EIGHT_GPUS =
  [
    "0, NVIDIA H100 80GB HBM3, GPU-0d3c7a62-91e4-4b7f-8c2a-6e5f1d9b3a40, 98, 71234, 81559",
    "1, NVIDIA H100 80GB HBM3, GPU-1e4d8b73-a2f5-4c80-9d3b-7f6a2eac4b51, 97, 71102, 81559",
    "2, NVIDIA H100 80GB HBM3, GPU-2f5e9c84-b306-4d91-ae4c-807b3fbd5c62, 0, 1, 81559",
    "3, NVIDIA H100 80GB HBM3, GPU-306fad95-c417-4ea2-bf5d-918c40ce6d73, 12, 20480, 81559",
    "4, NVIDIA H100 80GB HBM3, GPU-4170bea6-d528-4fb3-8061-a29d51df7e84, 55, 40960, 81559",
    "5, NVIDIA H100 80GB HBM3, GPU-5281cfb7-e639-40c4-9172-b3ae62e08f95, 100, 81000, 81559",
    "6, NVIDIA H100 80GB HBM3, GPU-6392d0c8-f74a-41d5-a283-c4bf73f190a6, 3, 512, 81559",
    "7, NVIDIA H100 80GB HBM3, GPU-74a3e1d9-085b-42e6-b394-d5c084a2a1b7, [N/A], 15, 81559",
  ].join("\n") + "\n";

const sh = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * Writes an executable stand-in printing `csv` into a temp dir (removed at teardown) and returns its path. With
 * `gate`, it first waits until that file exists (to hold a worker's start at its GPU query).
 */
export async function fakeNvidiaSmi(t: Test, csv: string, opts: { gate?: string } = {}): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "jetshard-nvsmi-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, "nvidia-smi");
  const script = [
    "#!/bin/sh",
    `if [ "$*" != ${sh(NVIDIA_SMI_ARGS.join(" "))} ]; then echo "Invalid combination of input arguments." >&2; exit 2; fi`,
    ...(opts.gate ? [`while [ ! -e ${sh(opts.gate)} ]; do sleep 0.05; done`] : []),
    `printf '%s' ${sh(csv)}`,
    "",
  ].join("\n");
  await writeFile(file, script);
  await chmod(file, 0o755);
  return file;
}
