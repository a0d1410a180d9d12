/**
 * The wire section (`--section wire`): what compressing the activations between pipeline stages costs and buys.
 * The `mid` model, 2 shards on 2 worker processes, uploaded once per wire setting (none, lz4, lz4 + fp16); for
 * each, the bytes of every stage-0 → stage-1 hop (a NATS subscriber on the stage subject sees each message as it
 * crosses) and the sync v2 infer latency at one connection.
 */
import { connect } from "@nats-io/transport-node";
import { decodeActivations, encodeActivations } from "#shared/activation-codec.js";
import { subjects } from "#shared/subjects.js";
import type { Tensor } from "#shared/tensor.js";
import { decodeFrame, type ActivationEncoding, type WireSettings } from "#shared/wire.js";
import { loadTest, type LoadResult } from "./load.js";
import type { BenchModel } from "./models.js";
import { inferUrl, prime, request, startJetshard } from "./systems.js";

/** The settings measured, as upload query parameters. */
export const WIRE_SETTINGS = [
  { label: "none", params: {}, wire: { compression: "none", dtype: "fp32" } },
  { label: "lz4", params: { compression: "lz4" }, wire: { compression: "lz4", dtype: "fp32" } },
  { label: "lz4+fp16", params: { compression: "lz4", wireDtype: "fp16" }, wire: { compression: "lz4", dtype: "fp16" } },
] as const;

/** One wire setting's figures. */
export interface WireRow {
  setting: string;
  /** Mean payload bytes of one hop between the stages (null: not measured). */
  bytesPerHop: number | null;
  /** Bytes of the activations themselves before packing (from the hop's header), when packed. */
  rawBytes: number | null;
  /** What the hop's header says: "plain", or the compression and cast used. */
  packing: string;
  hops: number;
  /** In-process cost of packing one hop's activations and of unpacking them, µs (mean of 200), in the harness. */
  encodeUs: number | null;
  decodeUs: number | null;
  /** The c=1 load run: p50/p99 latency and throughput. */
  result: LoadResult | null;
  notes: string[];
}

export interface WireReport {
  model: string;
  rows: WireRow[];
  elapsedS: number;
  failures: number;
}

/** Measures every wire setting on one fresh stack. Never throws: a failure is a note on its row. */
export async function runWireSection(o: { model: BenchModel; durationS: number; warmupS: number; say: (msg: string) => void }): Promise<WireReport> {
  const started = Date.now();
  const rows: WireRow[] = [];
  let failures = 0;
  o.say(`wire: ${o.model.name}, 2 shards, 2 workers: starting and uploading ${WIRE_SETTINGS.length} variants…`);
  const stack = await startJetshard(2);
  const nc = await connect({ servers: stack.natsUrl, name: "bench-wire" });
  try {
    for (const s of WIRE_SETTINGS) {
      const row: WireRow = { setting: s.label, bytesPerHop: null, rawBytes: null, packing: "?", hops: 0, encodeUs: null, decodeUs: null, result: null, notes: [] };
      let sample: Uint8Array | undefined;
      rows.push(row);
      const name = `${o.model.name}-wire-${s.label.replace("+", "-")}`;
      try {
        const notes = await stack.upload(name, o.model.file, { shards: "2", ...s.params });
        row.notes.push(...notes);
        await stack.waitReady(name, 120_000);
        const url = inferUrl(stack.base, name);
        await prime(url, o.model.body, 4, 180_000);
        let bytes = 0;
        const sub = nc.subscribe(subjects.stage(name, 1), {
          callback: (_e, m) => {
            row.hops++;
            bytes += m.data.byteLength;
            if (row.hops === 1) sample = Uint8Array.from(m.data);
          },
        });
        row.result = await loadTest({ url, body: o.model.body, connections: 1, durationS: o.durationS, warmupS: o.warmupS, timeoutS: 30 });
        await nc.flush();
        sub.unsubscribe();
        // the warmup's hops count too: every request sends the same activations, so the mean is unchanged
        row.bytesPerHop = row.hops ? Math.round(bytes / row.hops) : null;
        if (sample) Object.assign(row, await codecCost(sample, s.wire));
        o.say(`wire ${s.label}: ${row.bytesPerHop ?? "?"} B per hop (${row.packing}), p50 ${row.result.p50Ms?.toFixed(2) ?? "–"} ms, ${row.result.reqPerS.toFixed(1)} req/s`);
        // one variant's sessions at a time in the workers' memory
        await request("DELETE", `${stack.base}/v1/models/${name}`);
      } catch (err) {
        failures++;
        row.notes.push(`failed: ${(err as Error).message.split("\n")[0]!.slice(0, 300)}`);
        o.say(`wire ${s.label}: failed: ${(err as Error).message}`);
      }
    }
  } finally {
    await nc.close();
    await stack.stop();
  }
  return { model: o.model.name, rows, elapsedS: (Date.now() - started) / 1000, failures };
}

/** What a hop's header says about its packing, and what packing and unpacking it costs in-process. */
async function codecCost(hop: Uint8Array, wire: WireSettings): Promise<Pick<WireRow, "packing" | "rawBytes" | "encodeUs" | "decodeUs">> {
  const { meta, tensors } = decodeFrame(hop);
  const enc = meta.encoding as ActivationEncoding | undefined;
  const cast = enc?.tensors.some((t) => t.cast) ? "FP32 as FP16" : "";
  const packing = [enc?.compression === "lz4" ? "lz4" : "", cast].filter(Boolean).join(", ") || "plain";
  const activations: Tensor[] = await decodeActivations(enc, tensors);
  const time = async (f: () => Promise<unknown>) => {
    const t0 = performance.now();
    for (let i = 0; i < 200; i++) await f();
    return Math.round(((performance.now() - t0) / 200) * 1000);
  };
  return { packing, rawBytes: enc ? enc.bytes : null, encodeUs: await time(() => encodeActivations(activations, wire)), decodeUs: await time(() => decodeActivations(enc, tensors)) };
}

/** The section as Markdown lines. */
export function renderWire(w: WireReport): string[] {
  const base = w.rows.find((r) => r.setting === "none");
  const ms = (v: number | null | undefined) => (v == null ? "–" : v.toFixed(2));
  const lines = [
    `## Wire between pipeline stages (${w.model}, 2 shards on 2 workers, sync infer at 1 connection)`,
    "",
    "| wire | bytes per hop | × none | sent as | packed bytes before lz4 | pack µs | unpack µs | p50 ms | p99 ms | req/s | hops | notes |",
    "|:--|--:|--:|:--|--:|--:|--:|--:|--:|--:|--:|:--|",
  ];
  for (const r of w.rows) {
    const ratio = r.bytesPerHop && base?.bytesPerHop ? (r.bytesPerHop / base.bytesPerHop).toFixed(2) : "–";
    lines.push(
      `| ${r.setting} | ${r.bytesPerHop ?? "–"} | ${ratio} | ${r.packing} | ${r.rawBytes ?? "–"} | ${r.encodeUs ?? "–"} | ${r.decodeUs ?? "–"} | ${ms(r.result?.p50Ms)} | ${ms(r.result?.p99Ms)} | ${r.result ? r.result.reqPerS.toFixed(1) : "–"} | ${r.hops} | ${r.notes.join("; ")} |`,
    );
  }
  lines.push(
    "",
    `bytes per hop = mean NATS payload of a stage-0 → stage-1 message (frame header included); sent as = what the hop's header says (lz4 is used only when it shrinks the activations: "plain" under an lz4 setting means it did not); pack/unpack µs = the codec's cost per hop, measured in the harness on that hop's activations. lz4 is lossless; fp16 is lossy (half precision). Section took ${w.elapsedS.toFixed(0)} s.`,
    "",
  );
  return lines;
}
