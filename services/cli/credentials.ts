/**
 * NATS passwords of the local stack: `jetshard up` generates one per role (nats-auth.conf's users) on its first
 * start, keeps them in `<dataDir>/nats-credentials.json` (mode 0600) and reuses them, hands nats-server all of
 * them (as the `$JETSHARD_NATS_PASS_<ROLE>` variables nats-auth.conf reads) and each child process only its own.
 * CLI commands run next to that stack pick them up when no NATS credentials are configured (see `localNatsEnv`).
 */
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import { ConfigError } from "#shared/config.js";

/** The users of nats-auth.conf. */
export const NATS_ROLES = ["admin", "gateway", "worker", "controller", "client"] as const;
export type NatsRole = (typeof NATS_ROLES)[number];

const CredentialsSchema = z.object(Object.fromEntries(NATS_ROLES.map((r) => [r, z.string().min(16)])) as Record<NatsRole, z.ZodString>);
/** Password per role. */
export type NatsCredentials = z.infer<typeof CredentialsSchema>;

/** Where `up` keeps the generated passwords. */
export function credentialsFile(dataDir: string): string {
  return path.resolve(dataDir, "nats-credentials.json");
}

// a letter first, then hex: nats-server reads `$VAR` values as config values, and one that looks like a number
// (all digits, "9e10") would not be a string
const newPassword = () => `p${randomBytes(24).toString("hex")}`;

function parse(text: string, file: string): NatsCredentials {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new ConfigError(`${file}: not JSON; delete it to generate new NATS passwords`);
  }
  const r = CredentialsSchema.safeParse(json);
  if (!r.success) throw new ConfigError(`${file}: ${r.error.issues[0]!.path.join(".")}: ${r.error.issues[0]!.message}; delete it to generate new NATS passwords`);
  return r.data;
}

/**
 * The stack's passwords: read from `<dataDir>/nats-credentials.json`, or generated and written there (mode 0600)
 * on the first start.
 * @throws ConfigError when the file exists but is not a credentials file.
 */
export async function loadOrCreateCredentials(dataDir: string): Promise<NatsCredentials> {
  const file = credentialsFile(dataDir);
  try {
    const creds = parse(await readFile(file, "utf8"), file);
    await chmod(file, 0o600); // in case someone loosened it
    return creds;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  const creds = Object.fromEntries(NATS_ROLES.map((r) => [r, newPassword()])) as NatsCredentials;
  await mkdir(path.dirname(file), { recursive: true });
  try {
    await writeFile(file, JSON.stringify(creds, null, 2) + "\n", { mode: 0o600, flag: "wx" });
  } catch (err) {
    // another `up` wrote it first: use those
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return parse(await readFile(file, "utf8"), file);
    throw err;
  }
  return creds;
}

/** nats-server's variables for nats-auth.conf: `JETSHARD_NATS_PASS_<ROLE>` for every role. */
export function natsServerPasswordEnv(creds: NatsCredentials): Record<string, string> {
  return Object.fromEntries(NATS_ROLES.map((r) => [`JETSHARD_NATS_PASS_${r.toUpperCase()}`, creds[r]]));
}

/** A jetshard process's variables to connect as `role`. */
export function roleEnv(role: NatsRole, creds: NatsCredentials): Record<string, string> {
  return { JETSHARD_NATS_USER: role, JETSHARD_NATS_PASSWORD: creds[role] };
}

const LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]", "::1"]);

/**
 * Local convenience for commands run next to `jetshard up`: when the environment names no NATS user or token,
 * every NATS server is on this machine (loopback) and `<dataDir>/nats-credentials.json` exists, the variables to
 * connect as `role` with its password from there; otherwise none. Never sends local passwords to a remote server.
 */
export function localNatsEnv(env: NodeJS.ProcessEnv, role: NatsRole): Record<string, string> {
  if (env.JETSHARD_NATS_USER || env.JETSHARD_NATS_TOKEN) return {};
  const servers = (env.JETSHARD_NATS_URL || "nats://127.0.0.1:4222").split(",").map((s) => s.trim()).filter(Boolean);
  const local = servers.every((s) => {
    try {
      return LOOPBACK.has(new URL(s.includes("://") ? s : `nats://${s}`).hostname);
    } catch {
      return false;
    }
  });
  const file = credentialsFile(env.JETSHARD_DATA_DIR || ".data");
  if (!local || !existsSync(file)) return {};
  return roleEnv(role, parse(readFileSync(file, "utf8"), file));
}
