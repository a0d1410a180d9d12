/** `jetshard config`: the effective configuration and where each value came from (default, file, env). */
import { explainConfig } from "#shared/config.js";
import { printJson } from "./connect.js";

/** Prints every setting: name, value (secrets redacted) and source; `--json` as `{ file, settings }`. */
export async function showConfig(opts: { json?: boolean }): Promise<void> {
  const settings = explainConfig(process.env);
  const file = process.env.JETSHARD_CONFIG || null;
  if (opts.json) return printJson({ file, settings });
  const shown = (v: unknown) => (v === null ? "(unset)" : v === "" ? '""' : String(v));
  const width = Math.max(...settings.map((s) => s.name.length));
  const valueWidth = Math.min(40, Math.max(...settings.map((s) => shown(s.value).length)));
  const lines = settings.map((s) => `${s.name.padEnd(width)}  ${shown(s.value).padEnd(valueWidth)}  ${s.source}`);
  process.stdout.write(`${file ? `config file: ${file}` : "no config file (use --config or JETSHARD_CONFIG)"}\n${lines.join("\n")}\n`);
}
