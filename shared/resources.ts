/**
 * What this process and its host use, sampled on a timer: the process's CPU % (from process.cpuUsage deltas), its
 * resident memory, the host's 1-minute load and memory, and every GPU nvidia-smi lists. Workers put the latest
 * sample in their heartbeat and export it as metrics.
 */
import os from "node:os";
import { listGpus } from "./gpu.js";
import type { Resources } from "./wire.js";

export type { Resources };

export interface ResourceSamplerOptions {
  /** Time between samples, ms (JETSHARD_RESOURCE_SAMPLE_MS). */
  intervalMs: number;
  /** The nvidia-smi command (JETSHARD_NVIDIA_SMI). */
  nvidiaSmi: string;
}

/** Samples resources every `intervalMs` once started; `latest()` is the last sample. */
export class ResourceSampler {
  private timer: NodeJS.Timeout | null = null;
  private last: Resources | undefined;
  private prevCpu = process.cpuUsage();
  private prevAt = performance.now();
  private sampling: Promise<Resources> | null = null;

  constructor(private readonly opts: ResourceSamplerOptions) {}

  /** Takes a first sample (so the first heartbeat has one), then samples on the timer. */
  async start(): Promise<void> {
    if (this.timer) return;
    await this.sample();
    this.timer = setInterval(() => void this.sample(), this.opts.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** The last sample, or undefined before the first. */
  latest(): Resources | undefined {
    return this.last;
  }

  /** Samples now (a call while one runs joins it: nvidia-smi may take a while). */
  sample(): Promise<Resources> {
    this.sampling ??= this.take().finally(() => (this.sampling = null));
    return this.sampling;
  }

  private async take(): Promise<Resources> {
    const gpus = await listGpus(this.opts.nvidiaSmi);
    const cpu = process.cpuUsage();
    const now = performance.now();
    const usedUs = cpu.user - this.prevCpu.user + (cpu.system - this.prevCpu.system);
    const wallUs = (now - this.prevAt) * 1000;
    this.prevCpu = cpu;
    this.prevAt = now;
    this.last = {
      cpuPercent: wallUs > 0 ? Math.round((usedUs / wallUs) * 1000) / 10 : 0,
      rssBytes: process.memoryUsage.rss(),
      load1: os.loadavg()[0] ?? 0,
      memTotalBytes: os.totalmem(),
      memFreeBytes: os.freemem(),
      gpus,
    };
    return this.last;
  }
}
