/**
 * `jetshard keys create|list|revoke`: API keys for the HTTP gateway, managed straight in the `apikeys` KV bucket
 * (so it needs NATS admin credentials, not an HTTP key).
 */
import type { KV } from "@nats-io/kv";
import { SCOPES, createApiKey, listApiKeys, openApiKeys, parseScopes, revokeApiKey } from "#shared/auth.js";
import { printJson, printLines, withInfra } from "./connect.js";
import { NotFoundError, UsageError } from "./errors.js";

/** Text after the options in `jetshard keys --help`. */
export const KEYS_HELP = `Commands at a glance:
  jetshard keys create --tenant <t> --scopes <s1,s2,...> [--name <label>] [--json]
      prints a new API key once (it is stored only as a hash); send it as "Authorization: Bearer <key>"
  jetshard keys list [--json]      key ids, tenants, scopes, revoked or not (never the secrets)
  jetshard keys revoke <id>        the key stops working at once on every gateway

Scopes: ${SCOPES.join(", ")}.
  infer: call models (v2 infer, metadata, readiness)     models:read: list and read models
  models:write: upload, replace, delete models           jobs: async jobs and dead letters
  experiments: NAS experiments and trials                metrics: /metrics and /v1/workers
  admin: everything, across tenants (and /v1/keys)
Jobs, experiments and dead letters belong to the tenant that created them. The gateway checks keys when
JETSHARD_AUTH=keys. This command talks to NATS directly (JETSHARD_NATS_URL with admin credentials).`;

const withKeys = <T>(fn: (kv: KV) => Promise<T>) => withInfra(async (infra) => fn(await openApiKeys(infra.nc, infra.replicas)));

/** `jetshard keys create`: prints the new key once (stdout), or it with its record as JSON. */
export async function keysCreate(opts: { tenant?: string; scopes?: string; name?: string; json?: boolean }): Promise<void> {
  if (!opts.tenant) throw new UsageError("keys create needs --tenant");
  if (!opts.scopes) throw new UsageError(`keys create needs --scopes (some of ${SCOPES.join(", ")})`);
  const scopes = parseScopes(opts.scopes);
  const tenant = opts.tenant;
  const { key, record } = await withKeys((kv) => createApiKey(kv, { tenant, scopes, name: opts.name }));
  if (opts.json) return printJson({ key, id: record.id, tenant: record.tenant, scopes: record.scopes, ...(record.name ? { name: record.name } : {}) });
  process.stdout.write(key + "\n");
  process.stderr.write(`key ${record.id} for tenant "${record.tenant}" (${record.scopes.join(", ")}): shown once, store it now\n`);
}

/** `jetshard keys list`: never the secrets (nor their hashes). */
export async function keysList(opts: { json?: boolean }): Promise<void> {
  const keys = (await withKeys(listApiKeys)).map(({ hash: _h, ...k }) => k);
  if (opts.json) return printJson({ keys });
  printLines(
    keys.map((k) => {
      const state = k.revokedAt ? `revoked ${new Date(k.revokedAt).toISOString()}` : "active";
      return `${k.id}\t${k.tenant}\t${k.scopes.join(",")}\t${state}\t${new Date(k.createdAt).toISOString()}${k.name ? `\t${k.name}` : ""}`;
    }),
    "(no keys)",
  );
}

/** `jetshard keys revoke`. */
export async function keysRevoke(id: string): Promise<void> {
  const rec = await withKeys((kv) => revokeApiKey(kv, id));
  if (!rec) throw new NotFoundError(`API key "${id}" not found`);
  process.stdout.write(`revoked ${rec.id} (tenant ${rec.tenant})\n`);
}
