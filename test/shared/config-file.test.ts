/**
 * The config file (JETSHARD_CONFIG / --config): the environment's settings in YAML, checked by the same schema;
 * the environment wins; mistakes name the file and the key; explainConfig tells where each value came from.
 */
import t, { type Test } from "tap";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { ConfigError, ENV_NAMES, explainConfig, loadConfig, readConfigFile, useConfigFile } from "#shared/config.js";

async function file(t: Test, text: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "jetshard-config-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const f = path.join(dir, "jetshard.yaml");
  await writeFile(f, text);
  return f;
}

const YAML = `# a fleet's settings
port: 9090
serve: [mnist, resnet]
ort_spin: true
max_body_mb: 0.5
nats_url: nats://worker:s3cret@127.0.0.1:4222
nats_user: worker
nats_password: s3cret
log_format: json
cache_dir:
`;

t.test("settings come from the file, in their YAML types, with the environment's meaning", async (t) => {
  const f = await file(t, YAML);
  const c = loadConfig({ JETSHARD_CONFIG: f });
  t.equal(c.configFile, f);
  t.equal(c.port, 9090);
  t.same(c.serve, ["mnist", "resnet"], "a list is what the environment writes comma-separated");
  t.equal(c.ortSpin, true, "not the default (off)");
  t.equal(c.maxBodyBytes, 512 * 1024);
  t.same(c.natsServers, ["nats://worker:s3cret@127.0.0.1:4222"]);
  t.equal(c.logs.format, "json");
  t.equal(c.cacheDir, `${c.dataDir}/model-cache`, "an empty value leaves the setting at its default");
  t.equal(c.workers, 2, "what the file does not set keeps its default");
  t.same(loadConfig({}).port, 8080, "no file without JETSHARD_CONFIG");
});

t.test("the environment overrides the file", async (t) => {
  const f = await file(t, YAML);
  const c = loadConfig({ JETSHARD_CONFIG: f, JETSHARD_PORT: "7070", JETSHARD_SERVE: "" });
  t.equal(c.port, 7070);
  t.same(c.serve, [], "even with an empty value");
  t.equal(c.ortSpin, true, "the rest still comes from the file");
});

t.test("an unknown key is an error naming the file and the key, with the closest known one", async (t) => {
  const typo = await file(t, "port: 1\nmax_atempts: 3\n");
  t.throws(() => loadConfig({ JETSHARD_CONFIG: typo }), new ConfigError(`${typo}: unknown setting "max_atempts" (did you mean "max_attempts"?)`));
  const envName = await file(t, "JETSHARD_PORT: 1\n");
  t.throws(() => loadConfig({ JETSHARD_CONFIG: envName }), { message: `${envName}: unknown setting "JETSHARD_PORT" (did you mean "port"?)` });
  const far = await file(t, "colour: blue\n");
  t.throws(() => loadConfig({ JETSHARD_CONFIG: far }), { message: `${far}: unknown setting "colour"` }, "no suggestion when nothing is close");
  const self = await file(t, "config: other.yaml\n");
  t.throws(() => loadConfig({ JETSHARD_CONFIG: self }), { message: /"config" cannot be set in a config file/ });
});

t.test("a wrong value is an error naming the file and the key; from the environment, the variable", async (t) => {
  const bad = await file(t, "workers: -1\nport: 80\n");
  t.throws(() => loadConfig({ JETSHARD_CONFIG: bad }), { name: "ConfigError", message: new RegExp(`^${bad.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}: workers: .*\\(got "-1"\\)$`) });
  t.throws(() => loadConfig({ JETSHARD_CONFIG: bad, JETSHARD_WORKERS: "3", JETSHARD_DEVICE: "tpu" }), { message: /^JETSHARD_DEVICE: / });
  const nested = await file(t, "serve:\n  a: 1\n");
  t.throws(() => loadConfig({ JETSHARD_CONFIG: nested }), { message: `${nested}: serve: expected a value or a list of values` });
  const notYaml = await file(t, "port: [1\n");
  t.throws(() => loadConfig({ JETSHARD_CONFIG: notYaml }), { name: "ConfigError", message: new RegExp(`^${notYaml.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}: .*line 2`) });
  const list = await file(t, "- port\n");
  t.throws(() => loadConfig({ JETSHARD_CONFIG: list }), { message: /expected a mapping of settings/ });
  t.throws(() => loadConfig({ JETSHARD_CONFIG: "/nonexistent/jetshard.yaml" }), { message: 'JETSHARD_CONFIG: file "/nonexistent/jetshard.yaml" does not exist' });
  t.same(readConfigFile(await file(t, "")), {}, "an empty file sets nothing");
});

t.test("explainConfig gives every setting's value and source, with secrets redacted", async (t) => {
  const f = await file(t, YAML);
  const all = explainConfig({ JETSHARD_CONFIG: f, JETSHARD_PORT: "7070", JETSHARD_NATS_TOKEN: "" });
  t.same(all.map((s) => s.name), ENV_NAMES, "every setting, in schema order");
  const by = Object.fromEntries(all.map((s) => [s.key, s]));
  t.match(by.port, { name: "JETSHARD_PORT", value: 7070, source: "env" });
  t.match(by.ort_spin, { value: true, source: `file ${f}` });
  t.match(by.serve, { value: "mnist,resnet", source: `file ${f}` });
  t.match(by.workers, { value: 2, source: "default" });
  t.match(by.nats_password, { value: "***", source: `file ${f}`, secret: true });
  t.match(by.nats_token, { value: "", source: "env", secret: true }, "an empty secret shows it is empty");
  t.match(by.nats_url, { value: "nats://worker:***@127.0.0.1:4222" }, "a password inside a URL");
  t.match(by.gpu_id, { value: null, source: "default" }, "unset");
  t.match(by.config, { value: f, source: "env" });
  t.notMatch(JSON.stringify(all), /s3cret/, "the secret appears nowhere");
  t.match(explainConfig({ JETSHARD_NATS_URL: "nats://tok@h:1,nats://a:b@h:2" }).find((s) => s.name === "JETSHARD_NATS_URL"), { value: "nats://***@h:1,nats://a:***@h:2", source: "env" });
});

t.test("useConfigFile (--config) checks the file and hands its absolute path to this process and its children", async (t) => {
  const f = await file(t, "port: 6060\n");
  const env: Record<string, string | undefined> = {};
  const rel = path.relative(process.cwd(), f);
  t.equal(useConfigFile(rel, env), f);
  t.equal(env.JETSHARD_CONFIG, f);
  t.equal(loadConfig(env).port, 6060);
  const bad = await file(t, "prot: 1\n");
  t.throws(() => useConfigFile(bad, env), { message: /did you mean "port"/ });
  t.equal(env.JETSHARD_CONFIG, f, "left as it was");
});
