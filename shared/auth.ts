/**
 * API keys, tenants and scopes: who may call what over HTTP.
 *
 * A key looks like `jsk_<id>_<secret>`: `id` (16 hex chars) names its record in the `apikeys` KV bucket, `secret`
 * (32 random bytes, base64url) is shown once when the key is created and stored only as its SHA-256. The secret has
 * 256 bits of entropy, so a fast hash is enough (no password stretching needed), and comparison is constant-time.
 * Revoking marks the record; a revoked key is refused at once by every gateway (they watch the bucket).
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { z } from "zod";
import { JobError } from "./errors.js";
import { openKv } from "./nats.js";
import { BUCKETS } from "./subjects.js";

/**
 * What a key may do. `infer`: call models (v2 infer, metadata, readiness). `models:read`: list and read model
 * metadata. `models:write`: upload, replace, delete models. `jobs`: async jobs and their dead letters.
 * `experiments`: NAS experiments and trials. `metrics`: GET /metrics. `admin`: everything, across tenants.
 */
export const SCOPES = ["infer", "jobs", "models:read", "models:write", "experiments", "metrics", "admin"] as const;
export type Scope = (typeof SCOPES)[number];

/** Tenant names: a KV-key- and subject-safe token. */
export const TENANT_PATTERN = /^[a-z0-9][a-z0-9_-]{0,62}$/;

/** The tenant every caller belongs to when authentication is off. */
export const DEFAULT_TENANT = "default";

export const ApiKeyRecordSchema = z.object({
  id: z.string(),
  tenant: z.string(),
  scopes: z.array(z.enum(SCOPES)),
  /** SHA-256 of the secret, hex. */
  hash: z.string(),
  name: z.string().optional(),
  /** Epoch ms. */
  createdAt: z.number(),
  revokedAt: z.number().optional(),
});
export type ApiKeyRecord = z.infer<typeof ApiKeyRecordSchema>;

/** Who is calling: the key's tenant and scopes. */
export interface Principal {
  tenant: string;
  scopes: ReadonlySet<Scope>;
  /** The key id, for logs; absent when authentication is off. */
  keyId?: string;
}

/** True when `p` holds `scope` (or admin, which holds them all). */
export function hasScope(p: Principal, scope: Scope): boolean {
  return p.scopes.has(scope) || p.scopes.has("admin");
}

/**
 * True when `p` may see and act on something owned by `tenant`: its own, or anything as admin. Things without an
 * owner (published straight to NATS, added with the CLI) are the operator's: admins only.
 */
export function canAccess(p: Principal, tenant: string | undefined): boolean {
  return p.scopes.has("admin") || (tenant !== undefined && tenant === p.tenant);
}

/** The caller when authentication is off: one tenant with every scope. */
export const ANONYMOUS: Principal = { tenant: DEFAULT_TENANT, scopes: new Set(SCOPES) };

const KEY_PATTERN = /^jsk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;

const sha256 = (s: string) => createHash("sha256").update(s).digest();

/** Parses a comma-separated scope list. Throws a 400 naming the unknown scope. */
export function parseScopes(list: string): Scope[] {
  const scopes = list.split(",").map((s) => s.trim()).filter(Boolean);
  if (scopes.length === 0) throw new JobError("BAD_REQUEST", `scopes: give at least one of ${SCOPES.join(", ")}`);
  for (const s of scopes) if (!(SCOPES as readonly string[]).includes(s)) throw new JobError("BAD_REQUEST", `scopes: unknown scope "${s}" (use ${SCOPES.join(", ")})`);
  return [...new Set(scopes)] as Scope[];
}

/** Checks a tenant name. Throws a 400. */
export function checkTenant(tenant: string): void {
  if (!TENANT_PATTERN.test(tenant)) throw new JobError("BAD_REQUEST", `tenant ${JSON.stringify(tenant)}: use 1-63 lowercase letters, digits, '_' or '-', starting with a letter or digit`);
}

/** Opens (creating when missing, with `replicas` replicas: JETSHARD_REPLICAS, default 1) the `apikeys` bucket. */
export function openApiKeys(nc: NatsConnection, replicas = 1): Promise<KV> {
  return openKv(new Kvm(nc), BUCKETS.apiKeys, { history: 5, replicas });
}

/** Creates a key; the returned `key` is the only time the secret exists outside the caller's hands. */
export async function createApiKey(kv: KV, opts: { tenant: string; scopes: Scope[]; name?: string }): Promise<{ key: string; record: ApiKeyRecord }> {
  checkTenant(opts.tenant);
  if (opts.scopes.length === 0) throw new JobError("BAD_REQUEST", "scopes: give at least one scope");
  const id = randomBytes(8).toString("hex");
  const secret = randomBytes(32).toString("base64url");
  const record: ApiKeyRecord = {
    id,
    tenant: opts.tenant,
    scopes: opts.scopes,
    hash: sha256(secret).toString("hex"),
    ...(opts.name ? { name: opts.name } : {}),
    createdAt: Date.now(),
  };
  await kv.create(id, JSON.stringify(record));
  return { key: `jsk_${id}_${secret}`, record };
}

export async function getApiKey(kv: KV, id: string): Promise<ApiKeyRecord | null> {
  if (!/^[0-9a-f]{16}$/.test(id)) return null;
  const e = await kv.get(id);
  if (!e || e.operation !== "PUT" || e.value.length === 0) return null;
  const r = ApiKeyRecordSchema.safeParse(e.json());
  return r.success ? r.data : null;
}

/** Every key record (secrets are never stored), oldest first. */
export async function listApiKeys(kv: KV): Promise<ApiKeyRecord[]> {
  const out: ApiKeyRecord[] = [];
  for await (const k of await kv.keys()) {
    const r = await getApiKey(kv, k);
    if (r) out.push(r);
  }
  return out.sort((a, b) => a.createdAt - b.createdAt);
}

/** Marks a key revoked. Returns the record, or null when there is no such key. */
export async function revokeApiKey(kv: KV, id: string): Promise<ApiKeyRecord | null> {
  for (let i = 0; i < 10; i++) {
    const e = /^[0-9a-f]{16}$/.test(id) ? await kv.get(id) : null;
    if (!e || e.operation !== "PUT" || e.value.length === 0) return null;
    const rec = ApiKeyRecordSchema.parse(e.json());
    if (rec.revokedAt) return rec;
    const next = { ...rec, revokedAt: Date.now() };
    try {
      await kv.update(id, JSON.stringify(next), e.revision);
      return next;
    } catch {
      // written in between: read again
    }
  }
  throw new JobError("CONFLICT", `key ${id}: too many concurrent updates`, { retryable: true });
}

/**
 * The principal a presented key stands for, or null when it is malformed, unknown, revoked or wrong.
 * `lookup` finds a record by id (a watched mirror, with a read-through on a miss).
 */
export async function verifyApiKey(key: string, lookup: (id: string) => ApiKeyRecord | null | Promise<ApiKeyRecord | null>): Promise<Principal | null> {
  const m = KEY_PATTERN.exec(key);
  if (!m) return null;
  const rec = await lookup(m[1]!);
  if (!rec || rec.revokedAt) return null;
  const want = Buffer.from(rec.hash, "hex");
  const got = sha256(m[2]!);
  if (want.length !== got.length || !timingSafeEqual(want, got)) return null;
  return { tenant: rec.tenant, scopes: new Set(rec.scopes), keyId: rec.id };
}
