import t, { type Test } from "tap";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { NATS_ROLES, credentialsFile, loadOrCreateCredentials, localNatsEnv, natsServerPasswordEnv } from "../../services/cli/credentials.js";

async function tempDir(t: Test): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "jetshard-creds-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

t.test("up generates a password per role once, in a file only its owner may read, and reuses it", async (t) => {
  const dir = await tempDir(t);
  const data = path.join(dir, "data");
  const first = await loadOrCreateCredentials(data);
  t.same(Object.keys(first).sort(), [...NATS_ROLES].sort(), "one password per role");
  t.equal(new Set(Object.values(first)).size, NATS_ROLES.length, "all different");
  for (const p of Object.values(first)) t.match(p, /^p[0-9a-f]{48}$/, "a letter first, so nats-server reads it as a string");
  t.equal((await stat(credentialsFile(data))).mode & 0o777, 0o600, "mode 0600");
  t.same(await loadOrCreateCredentials(data), first, "the next start reuses them");
  t.same(natsServerPasswordEnv(first), {
    JETSHARD_NATS_PASS_ADMIN: first.admin,
    JETSHARD_NATS_PASS_GATEWAY: first.gateway,
    JETSHARD_NATS_PASS_WORKER: first.worker,
    JETSHARD_NATS_PASS_CONTROLLER: first.controller,
    JETSHARD_NATS_PASS_CLIENT: first.client,
  });
  await writeFile(credentialsFile(data), "{\"admin\": 1}");
  await t.rejects(loadOrCreateCredentials(data), { name: "ConfigError", message: /nats-credentials\.json: admin: .*delete it/ }, "a damaged file is a clear error");
});

t.test("CLI commands use up's credentials only for a local server and when none are configured", async (t) => {
  const dir = await tempDir(t);
  const creds = await loadOrCreateCredentials(dir);
  const base = { JETSHARD_DATA_DIR: dir };
  t.same(localNatsEnv(base, "admin"), { JETSHARD_NATS_USER: "admin", JETSHARD_NATS_PASSWORD: creds.admin }, "default URL is local");
  t.same(localNatsEnv({ ...base, JETSHARD_NATS_URL: "nats://127.0.0.1:4222,nats://localhost:4223" }, "worker"), { JETSHARD_NATS_USER: "worker", JETSHARD_NATS_PASSWORD: creds.worker });
  t.same(localNatsEnv({ ...base, JETSHARD_NATS_URL: "nats://127.0.0.1:4222,nats://nats.example.com:4222" }, "admin"), {}, "never sent to a remote server");
  t.same(localNatsEnv({ ...base, JETSHARD_NATS_USER: "me", JETSHARD_NATS_PASSWORD: "x" }, "admin"), {}, "configured credentials win");
  t.same(localNatsEnv({ ...base, JETSHARD_NATS_TOKEN: "tok" }, "admin"), {}, "a configured token wins");
  t.same(localNatsEnv({ JETSHARD_DATA_DIR: path.join(dir, "none") }, "admin"), {}, "no file, nothing");
});
