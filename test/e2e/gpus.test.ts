/**
 * GPU detection through a worker, with stand-in nvidia-smi scripts printing real nvidia-smi output for 1, 2 and 8
 * GPUs: the heartbeat (GET /v1/workers) and /metrics report every GPU, and JETSHARD_GPU_ID binds a worker to one.
 */
import t from "tap";
import { loadConfig } from "#shared/config.js";
import { silentLogger } from "#shared/log.js";
import { WorkerInfoSchema } from "#shared/wire.js";
import { createWorker, type Worker } from "../../services/worker/worker.js";
import { EIGHT_GPUS, ONE_GPU, TWO_GPUS, fakeNvidiaSmi } from "../helpers/nvidia-smi.js";
import { scrape, series } from "../helpers/prom.js";
import { startStack, waitFor } from "../helpers/stack.js";

t.test("a worker's heartbeat and metrics report every GPU nvidia-smi lists, on hosts with 1, 2 and 8 GPUs", async (t) => {
  const stack = await startStack(t);
  const gw = await stack.gateway();
  const hosts = [
    { csv: ONE_GPU, names: ["NVIDIA GeForce RTX 4090"] },
    { csv: TWO_GPUS, names: ["NVIDIA A100-SXM4-40GB", "NVIDIA A100-SXM4-40GB"] },
    { csv: EIGHT_GPUS, names: Array(8).fill("NVIDIA H100 80GB HBM3") },
  ];
  const workers: Worker[] = [];
  for (const h of hosts) workers.push(await stack.worker({ JETSHARD_NVIDIA_SMI: await fakeNvidiaSmi(t, h.csv), JETSHARD_NAS: "0" }));
  const listed = await waitFor("three workers with resources", async () => {
    const ws = (await (await fetch(`${gw.url}/v1/workers`)).json()) as { workers: unknown[] };
    return ws.workers.length === 3 ? ws.workers.map((w) => WorkerInfoSchema.parse(w)) : null;
  });
  for (const [i, h] of hosts.entries()) {
    const info = listed.find((w) => w.id === workers[i]!.id)!;
    const gpus = info.resources?.gpus ?? [];
    t.same(gpus.map((g) => g.name), h.names, `${h.names.length} GPU(s) in the heartbeat, in nvidia-smi's order`);
    t.same(gpus.map((g) => g.index), h.names.map((_, j) => j));
    t.ok(gpus.every((g) => g.uuid?.startsWith("GPU-") && (g.memTotalMb ?? 0) > 0), "uuids and memory");
    const text = await scrape(`http://127.0.0.1:${workers[i]!.opsPort()}/metrics`);
    t.same(series(text, "jetshard_gpu_memory_total_bytes").map((s) => s.labels.gpu), h.names.map((_, j) => String(j)), "one memory series per GPU");
    t.same(new Set(series(text, "jetshard_gpu_memory_total_bytes").map((s) => s.labels.name)), new Set(h.names));
  }
  const eight = await scrape(`http://127.0.0.1:${workers[2]!.opsPort()}/metrics`);
  t.same(series(eight, "jetshard_gpu_utilization_percent").map((s) => s.labels.gpu), ["0", "1", "2", "3", "4", "5", "6"], "GPU 7's [N/A] utilization has no series");
  t.equal(series(eight, "jetshard_gpu_memory_used_bytes", { gpu: "5" })[0]?.value, 81000 * 1024 * 1024, "memory in bytes");
  const two = await scrape(`http://127.0.0.1:${workers[1]!.opsPort()}/metrics`);
  t.same(series(two, "jetshard_gpu_memory_used_bytes").map((s) => s.labels.gpu), ["0"], "[Not Supported] memory.used has no series");
});

t.test("JETSHARD_GPU_ID binds a worker to that GPU, and one nvidia-smi does not list stops the worker at start", async (t) => {
  const stack = await startStack(t);
  const smi = await fakeNvidiaSmi(t, EIGHT_GPUS);
  const w = await stack.worker({ JETSHARD_NVIDIA_SMI: smi, JETSHARD_GPU_ID: "5", JETSHARD_NAS: "0" });
  const device = w.info().device;
  // this host has no CUDA, so ONNX Runtime falls back to the CPU and says which GPU it was bound to
  if (device.kind === "cuda") t.match(device, { gpuIndex: 5, name: "NVIDIA H100 80GB HBM3" });
  else t.match(device.note, /NVIDIA H100 80GB HBM3 \(GPU 5\) found but ONNX Runtime's CUDA provider did not load/);

  const missing = createWorker({ config: loadConfig({ ...stack.env, JETSHARD_NVIDIA_SMI: smi, JETSHARD_GPU_ID: "9" }), log: silentLogger() });
  await t.rejects(missing.start(), /JETSHARD_GPU_ID=9: no such GPU on this host; nvidia-smi lists GPU 0 \(NVIDIA H100 80GB HBM3\), 1 .* 7 \(NVIDIA H100 80GB HBM3\)/);
  t.equal(missing.opsPort(), null, "its ops listener is closed again");
  const cpu = createWorker({ config: loadConfig({ ...stack.env, JETSHARD_NVIDIA_SMI: smi, JETSHARD_GPU_ID: "0", JETSHARD_DEVICE: "cpu" }), log: silentLogger() });
  await t.rejects(cpu.start(), /JETSHARD_GPU_ID=0 .* JETSHARD_DEVICE=cpu/);
  const none = createWorker({ config: loadConfig({ ...stack.env, JETSHARD_NVIDIA_SMI: "/nonexistent/nvidia-smi", JETSHARD_GPU_ID: "0" }), log: silentLogger() });
  await t.rejects(none.start(), /JETSHARD_GPU_ID=0: no such GPU on this host; nvidia-smi lists no GPU/);
});
