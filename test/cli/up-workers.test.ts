import t from "tap";
import { pino } from "pino";
import { loadConfig } from "#shared/config.js";
import { planWorkers } from "../../services/cli/up.js";
import { workerLine } from "../../services/cli/fleet.js";
import type { WorkerInfo } from "#shared/wire.js";
import { EIGHT_GPUS, TWO_GPUS, fakeNvidiaSmi } from "../helpers/nvidia-smi.js";

function capture() {
  const records: Array<Record<string, any>> = [];
  return { log: pino({ level: "info" }, { write: (s: string) => void records.push(JSON.parse(s)) }), records };
}

t.test("jetshard up --gpus plans one worker per GPU, each bound by JETSHARD_GPU_ID in nvidia-smi's order", async (t) => {
  const { log, records } = capture();
  const smi = await fakeNvidiaSmi(t, TWO_GPUS);
  const plan = await planWorkers(loadConfig({ JETSHARD_NVIDIA_SMI: smi, JETSHARD_WORKERS: "5" }), { gpus: true }, {}, log);
  t.same(plan, [
    { name: "worker-gpu0", env: { JETSHARD_GPU_ID: "0", CUDA_DEVICE_ORDER: "PCI_BUS_ID" } },
    { name: "worker-gpu1", env: { JETSHARD_GPU_ID: "1", CUDA_DEVICE_ORDER: "PCI_BUS_ID" } },
  ], "JETSHARD_WORKERS is replaced by the GPU count; CUDA counts GPUs as nvidia-smi does");
  t.match(records.find((r) => /one worker per GPU/.test(r.msg)), { gpus: ["0: NVIDIA A100-SXM4-40GB", "1: NVIDIA A100-SXM4-40GB"] });

  const eight = await fakeNvidiaSmi(t, EIGHT_GPUS);
  const viaEnv = await planWorkers(loadConfig({ JETSHARD_NVIDIA_SMI: eight, JETSHARD_WORKERS_PER_GPU: "1" }), {}, { CUDA_DEVICE_ORDER: "FASTEST_FIRST" }, log);
  t.same(viaEnv.map((w) => w.env.JETSHARD_GPU_ID), ["0", "1", "2", "3", "4", "5", "6", "7"], "JETSHARD_WORKERS_PER_GPU=1 does the same as --gpus");
  t.ok(viaEnv.every((w) => !("CUDA_DEVICE_ORDER" in w.env)), "a CUDA_DEVICE_ORDER the user set is left alone");
});

t.test("jetshard up --gpus without GPUs says so and starts JETSHARD_WORKERS CPU workers", async (t) => {
  const { log, records } = capture();
  const none = await fakeNvidiaSmi(t, "");
  const plan = await planWorkers(loadConfig({ JETSHARD_NVIDIA_SMI: none, JETSHARD_WORKERS: "3" }), { gpus: true }, {}, log);
  t.same(plan, [1, 2, 3].map((i) => ({ name: `worker-${i}`, env: {} })));
  t.match(records.find((r) => r.level === 40), { msg: /no GPU found .* starting 3 CPU worker\(s\) \(JETSHARD_WORKERS\)/ });
  const missing = await planWorkers(loadConfig({ JETSHARD_NVIDIA_SMI: "/nonexistent/nvidia-smi", JETSHARD_WORKERS: "1" }), { gpus: true }, {}, log);
  t.same(missing.map((w) => w.name), ["worker-1"], "no nvidia-smi at all: the same");
  const plain = await planWorkers(loadConfig({ JETSHARD_WORKERS: "2" }), {}, {}, log);
  t.same(plain.map((w) => w.name), ["worker-1", "worker-2"], "without --gpus nvidia-smi is not asked");
});

t.test("jetshard workers shows the GPU a worker holds and its CPU, memory and GPU use", async (t) => {
  const base: WorkerInfo = {
    id: "w1", host: "h", pid: 1, version: "0", models: ["m"], shards: ["m:0"], placement: "auto", budgetBytes: 0, inFlight: 2, processed: 7, failed: 0,
    concurrency: 1, startedAt: "", updatedAt: 0,
    device: { kind: "cuda", name: "NVIDIA A100-SXM4-40GB", note: "", gpuIndex: 1 },
    resources: {
      cpuPercent: 87.4, rssBytes: 300 * 1024 * 1024, load1: 1, memTotalBytes: 1, memFreeBytes: 1,
      gpus: [{ index: 0, name: "A100", utilPercent: 5, memUsedMb: 1024, memTotalMb: 40960 }, { index: 1, name: "A100", utilPercent: 43, memUsedMb: 12011, memTotalMb: 40960 }],
    },
  };
  t.equal(workerLine(base), "w1\tcuda:NVIDIA A100-SXM4-40GB (gpu 1)\tcpu=87%\trss=300 MB\tgpu=43% mem=11.7/40.0GB\tin-flight=2\tprocessed=7\tmodels=m");
  const cpu = { ...base, device: { kind: "cpu" as const, name: "Xeon x2", note: "" }, resources: { ...base.resources!, gpus: [] } };
  t.equal(workerLine(cpu), "w1\tcpu:Xeon x2\tcpu=87%\trss=300 MB\tin-flight=2\tprocessed=7\tmodels=m", "no GPU column on a CPU worker");
  const old = { ...cpu, resources: undefined };
  t.equal(workerLine(old), "w1\tcpu:Xeon x2\tin-flight=2\tprocessed=7\tmodels=m", "a worker that reports no resources still lists");
});
