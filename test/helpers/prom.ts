/**
 * Reading Prometheus text exposition in tests: fetch a /metrics page, check it with `promtool check metrics`
 * (Debian's prometheus package), and pick sample values by name and labels.
 */
import { spawn, spawnSync } from "node:child_process";

/** Whether `bin` runs (`bin --version`). */
export function hasBinary(bin: string): boolean {
  const r = spawnSync(bin, ["--version"], { stdio: "ignore" });
  return !r.error && r.status === 0;
}

/** GETs a metrics page; throws unless 200 with the Prometheus text content type. */
export async function scrape(url: string): Promise<string> {
  const res = await fetch(url);
  const text = await res.text();
  if (res.status !== 200) throw new Error(`${url}: HTTP ${res.status}: ${text.slice(0, 500)}`);
  const type = res.headers.get("content-type") ?? "";
  if (!type.startsWith("text/plain; version=0.0.4")) throw new Error(`${url}: content-type ${type}`);
  return text;
}

/** Runs `promtool check metrics` on `text`: its exit code (0: valid, no lint problem) and what it printed. */
export function promtool(text: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn("promtool", ["check", "metrics"], { stdio: ["pipe", "pipe", "pipe"] });
    let output = "";
    p.stdout.on("data", (d: Buffer) => (output += d.toString()));
    p.stderr.on("data", (d: Buffer) => (output += d.toString()));
    p.once("error", reject);
    p.once("close", (code) => resolve({ code, output }));
    p.stdin.end(text);
  });
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Every sample line of a text exposition. */
export function samples(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** Samples of `name` whose labels include `labels`. */
export function series(text: string, name: string, labels: Record<string, string> = {}): Sample[] {
  return samples(text).filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

/** The sum of the values of `name` whose labels include `labels`; undefined when there is no such series. */
export function value(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const s = series(text, name, labels);
  return s.length ? s.reduce((a, b) => a + b.value, 0) : undefined;
}
