/**
 * Local log output: JSON lines when stdout is not a terminal, pino-pretty on a terminal (format "auto"), either one
 * when forced. Checked in child processes, whose stdout is a pipe (or a pseudo-terminal made by script(1)).
 */
import t from "tap";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { ROOT } from "../helpers/stack.js";

const run = promisify(execFile);
const SNIPPET = 'import { createLogger } from "#shared/log.js"; createLogger({ name: "gateway", format: process.argv[1] }).info({ job: "j1" }, "hello");';
const node = (format: string) => run(process.execPath, ["--import", "tsx", "--input-type=module", "-e", SNIPPET, format], { cwd: ROOT });
const hasScript = await run("script", ["--version"]).then(() => true, () => false);

t.test("not on a terminal, auto writes one JSON line per record, with the job under `job`", async (t) => {
  const { stdout } = await node("auto");
  const rec = JSON.parse(stdout.trim());
  t.match(rec, { level: 30, name: "gateway", job: "j1", msg: "hello" });
});

t.test("json and pretty force the format", async (t) => {
  t.match(JSON.parse((await node("json")).stdout.trim()), { msg: "hello" });
  const pretty = (await node("pretty")).stdout;
  t.match(pretty, /INFO \(gateway\/\d+\): hello\n\s+job: "j1"/);
  t.notOk(pretty.trimStart().startsWith("{"), "not JSON");
});

t.test("on a terminal, auto writes pino-pretty, in colour", { skip: hasScript ? false : "script(1) is not installed" }, async (t) => {
  const quoted = SNIPPET.replace(/'/g, "'\\''");
  const { stdout } = await run("script", ["-qc", `'${process.execPath}' --import tsx --input-type=module -e '${quoted}' auto`, "/dev/null"], { cwd: ROOT });
  t.match(stdout, /INFO.*\(gateway\/\d+\):.*hello/);
  t.match(stdout, /\u001b\[/, "coloured");
  t.notMatch(stdout, /"level":30/, "not JSON");
});
