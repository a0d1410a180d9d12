import t from "tap";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { listGpus, parseNvidiaSmi } from "#shared/gpu.js";
import { ResourceSampler } from "#shared/resources.js";
import { pickGpu } from "../../services/worker/device.js";
import { EIGHT_GPUS, ONE_GPU, TWO_GPUS, fakeNvidiaSmi } from "../helpers/nvidia-smi.js";

t.test("listGpus reads the one GPU of a workstation with every field", async (t) => {
  const gpus = await listGpus(await fakeNvidiaSmi(t, ONE_GPU));
  t.same(gpus, [{ index: 0, name: "NVIDIA GeForce RTX 4090", uuid: "GPU-2b8f6c1e-7d43-4a0f-9e55-3c1d8a6b0f27", utilPercent: 7, memUsedMb: 1834, memTotalMb: 24564 }]);
});

t.test("listGpus reads both GPUs of a two-GPU host and leaves out a [Not Supported] field", async (t) => {
  const gpus = await listGpus(await fakeNvidiaSmi(t, TWO_GPUS));
  t.equal(gpus.length, 2);
  t.same(gpus.map((g) => g.index), [0, 1]);
  t.same(gpus[1], { index: 1, name: "NVIDIA A100-SXM4-40GB", uuid: "GPU-a93e7b10-2c6d-4f85-8e1a-5d0b64c7f392", utilPercent: 0, memTotalMb: 40960 }, "memory.used absent, 0% utilization kept");
});

t.test("listGpus reads all eight GPUs of an HGX node and leaves out an [N/A] utilization", async (t) => {
  const gpus = await listGpus(await fakeNvidiaSmi(t, EIGHT_GPUS));
  t.equal(gpus.length, 8, "every GPU, not only the first");
  t.same(gpus.map((g) => g.index), [0, 1, 2, 3, 4, 5, 6, 7]);
  t.ok(gpus.every((g) => g.name === "NVIDIA H100 80GB HBM3" && g.memTotalMb === 81559 && /^GPU-[0-9a-f-]{36}$/.test(g.uuid ?? "")), "names, uuids and memory of each");
  t.equal(new Set(gpus.map((g) => g.uuid)).size, 8, "distinct uuids");
  t.same([gpus[5]!.utilPercent, gpus[5]!.memUsedMb], [100, 81000]);
  t.notOk("utilPercent" in gpus[7]!, "[N/A] utilization is left out");
  t.equal(gpus[7]!.memUsedMb, 15);
});

t.test("parseNvidiaSmi keeps a name with a comma, skips error lines and blank lines", async (t) => {
  const out = parseNvidiaSmi("\n0, Tesla T4, rev A, GPU-1111, 3, 100, 15360\nUnable to determine the device handle for GPU 0000:41:00.0: Unknown Error\n\n1, [N/A], [N/A], [N/A], [N/A], [N/A]\n");
  t.same(out, [
    { index: 0, name: "Tesla T4, rev A", uuid: "GPU-1111", utilPercent: 3, memUsedMb: 100, memTotalMb: 15360 },
    { index: 1, name: "GPU 1" },
  ]);
});

t.test("listGpus never throws: a missing, failing or hung nvidia-smi gives no GPUs", async (t) => {
  t.same(await listGpus(path.join(os.tmpdir(), "no-such-nvidia-smi-here")), [], "missing");
  const dir = await mkdtemp(path.join(os.tmpdir(), "jetshard-nvsmi-bad-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const failing = path.join(dir, "failing");
  await writeFile(failing, "#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.' >&2\nexit 9\n");
  await chmod(failing, 0o755);
  t.same(await listGpus(failing), [], "driver not loaded");
  const hung = path.join(dir, "hung");
  await writeFile(hung, "#!/bin/sh\nexec sleep 30\n");
  await chmod(hung, 0o755);
  const t0 = Date.now();
  t.same(await listGpus(hung, 300), [], "hung");
  t.ok(Date.now() - t0 < 5_000, "killed at its timeout");
});

t.test("pickGpu binds to the listed GPU with that index, and names JETSHARD_GPU_ID when it is not listed", async (t) => {
  const gpus = parseNvidiaSmi(TWO_GPUS);
  t.equal(pickGpu(gpus, undefined)?.index, 0, "the first by default");
  t.equal(pickGpu(gpus, 1)?.uuid, "GPU-a93e7b10-2c6d-4f85-8e1a-5d0b64c7f392");
  t.throws(() => pickGpu(gpus, 2), /JETSHARD_GPU_ID=2: no such GPU on this host; nvidia-smi lists GPU 0 \(NVIDIA A100-SXM4-40GB\), 1 \(NVIDIA A100-SXM4-40GB\)/);
  t.throws(() => pickGpu([], 0), /JETSHARD_GPU_ID=0: .*lists no GPU/);
  t.equal(pickGpu([], undefined), null);
});

t.test("the resource sampler reports this process's CPU and memory, the host's load and memory, and every GPU", async (t) => {
  const sampler = new ResourceSampler({ intervalMs: 60_000, nvidiaSmi: await fakeNvidiaSmi(t, EIGHT_GPUS) });
  t.teardown(() => sampler.stop());
  t.equal(sampler.latest(), undefined, "nothing before the first sample");
  await sampler.start();
  // burn some CPU so the next sample's share is above zero
  const until = performance.now() + 150;
  while (performance.now() < until);
  const r = await sampler.sample();
  t.ok(r.cpuPercent > 10, `CPU % from process.cpuUsage deltas (${r.cpuPercent})`);
  t.ok(r.rssBytes > 10 * 2 ** 20, "resident memory");
  t.ok(r.memTotalBytes > r.memFreeBytes && r.memFreeBytes > 0, "host memory");
  t.ok(Number.isFinite(r.load1) && r.load1 >= 0, "host load");
  t.equal(r.gpus.length, 8);
  t.equal(sampler.latest(), r);
});
