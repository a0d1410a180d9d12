/**
 * `jetshard keys create|list|revoke`: API keys for the HTTP gateway, managed straight in the `apikeys` KV bucket
 * (so it needs NATS admin credentials, not an HTTP key).
 */
import type { KV } from "@nats-io/kv";
import { SCOPES, createApiKey, listApiKeys, openApiKeys, parseScopes, revokeApiKey } from "#shared/auth.js";
import type { Infra } from "#shared/nats.js";
import { UsageError, parse } from "./args.js";

export const KEYS_HELP = `Usage:
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

type WithInfra = <T>(fn: (infra: Infra) => Promise<T>) => Promise<T>;

export async function cmdKeys(argv: string[], withInfra: WithInfra): Promise<void> {
  const [sub, ...rest] = argv;
  if (!sub || sub === "--help" || sub === "-h") return void process.stdout.write(KEYS_HELP + "\n");
  const { values, positionals } = parse(rest, { tenant: { type: "string" }, scopes: { type: "string" }, name: { type: "string" }, json: { type: "boolean" } });
  if (values.help) return void process.stdout.write(KEYS_HELP + "\n");
  const withKeys = <T>(fn: (kv: KV) => Promise<T>) => withInfra(async (infra) => fn(await openApiKeys(infra.nc)));
  if (sub === "create") {
    if (!values.tenant) throw new UsageError("keys create needs --tenant");
    if (!values.scopes) throw new UsageError(`keys create needs --scopes (some of ${SCOPES.join(", ")})`);
    const scopes = parseScopes(values.scopes);
    const { key, record } = await withKeys((kv) => createApiKey(kv, { tenant: values.tenant!, scopes, name: values.name }));
    if (values.json) {
      console.log(JSON.stringify({ key, id: record.id, tenant: record.tenant, scopes: record.scopes, ...(record.name ? { name: record.name } : {}) }));
    } else {
      console.log(key);
      process.stderr.write(`key ${record.id} for tenant "${record.tenant}" (${record.scopes.join(", ")}): shown once, store it now\n`);
    }
  } else if (sub === "list") {
    const keys = await withKeys(listApiKeys);
    if (values.json) {
      console.log(JSON.stringify({ keys: keys.map(({ hash: _h, ...k }) => k) }));
      return;
    }
    for (const k of keys) {
      const state = k.revokedAt ? `revoked ${new Date(k.revokedAt).toISOString()}` : "active";
      console.log(`${k.id}\t${k.tenant}\t${k.scopes.join(",")}\t${state}\t${new Date(k.createdAt).toISOString()}${k.name ? `\t${k.name}` : ""}`);
    }
    if (keys.length === 0) console.log("(no keys)");
  } else if (sub === "revoke") {
    const id = positionals[0];
    if (!id) throw new UsageError("keys revoke needs <id> (see jetshard keys list)");
    const rec = await withKeys((kv) => revokeApiKey(kv, id));
    if (!rec) throw new UsageError(`API key "${id}" not found`);
    console.log(`revoked ${rec.id} (tenant ${rec.tenant})`);
  } else {
    throw new UsageError(`unknown keys command "${sub}" (create, list, revoke)`);
  }
}
