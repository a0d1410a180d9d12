/**
 * HTTP authentication and authorization: which scope each route needs, the middleware that checks the caller's
 * API key, and the rule that decides whether a gateway may run with authentication off.
 */
import type { MiddlewareHandler } from "hono";
import { ANONYMOUS, hasScope, verifyApiKey, type ApiKeyRecord, type Principal, type Scope } from "#shared/auth.js";
import { ConfigError, type JetshardConfig } from "#shared/config.js";
import { JobError } from "#shared/errors.js";

/** Hono environment of every gateway route: the authenticated caller rides on the context. */
export type GatewayEnv = { Variables: { principal: Principal } };

/** True for addresses only this machine can reach. */
export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/**
 * The authentication mode a gateway runs with. Unset means off on a loopback address; a gateway bound to any other
 * address must say JETSHARD_AUTH explicitly, so that nobody exposes an open API by forgetting a variable.
 * Throws ConfigError.
 */
export function authMode(config: Pick<JetshardConfig, "auth" | "host">): "keys" | "off" {
  if (config.auth) return config.auth;
  if (isLoopback(config.host)) return "off";
  throw new ConfigError(
    `JETSHARD_AUTH: the gateway binds ${config.host}, which is not a loopback address; set JETSHARD_AUTH=keys (API keys: see "jetshard keys --help") or, to run an open API on purpose, JETSHARD_AUTH=off`,
  );
}

const ANY_READ: Scope[] = ["infer", "models:read"];

/**
 * The scopes of which a caller needs one for `method path`; `null` = public (health probes); `[]` = any valid key.
 * Finer rules (a tenant's own jobs, a model's owner, deploy needing models:write too) are checked in the routes.
 */
export function requiredScopes(method: string, path: string): Scope[] | null {
  if (path === "/v2/health/live" || path === "/v2/health/ready") return null;
  // the dashboard page and its static assets hold no data: the page asks for a key when the API answers 401
  if (method === "GET" && (path === "/" || path.startsWith("/assets/"))) return null;
  if (path === "/v1/events") return ["metrics"];
  if (path === "/v1/whoami") return [];
  if (path === "/v2" || path.startsWith("/v2/models/")) {
    return method === "POST" && path.endsWith("/infer") ? ["infer"] : ANY_READ;
  }
  if (path === "/v1/models" || path.startsWith("/v1/models/")) return method === "GET" || method === "HEAD" ? ANY_READ : ["models:write"];
  if (path === "/v1/jobs" || path.startsWith("/v1/jobs/") || path === "/v1/dead-letters" || path.startsWith("/v1/dead-letters/")) return ["jobs"];
  if (path === "/v1/experiments" || path.startsWith("/v1/experiments/")) return ["experiments"];
  if (path === "/v1/keys" || path.startsWith("/v1/keys/")) return ["admin"];
  if (path === "/v1/workers" || path === "/metrics") return ["metrics"];
  return [];
}

/** Throws FORBIDDEN unless the caller holds one of `scopes`. */
export function requireScope(p: Principal, ...scopes: Scope[]): void {
  if (!scopes.some((s) => hasScope(p, s))) {
    throw new JobError("FORBIDDEN", `this API key lacks the scope ${scopes.map((s) => `"${s}"`).join(" or ")} needed here`);
  }
}

/**
 * Authenticates every request (`Authorization: Bearer jsk_…`) and checks the route's scope; with auth off every
 * caller is the default tenant with every scope. 401 without or with a bad key, 403 for a missing scope.
 */
export function authenticate(mode: "keys" | "off", lookup: (id: string) => ApiKeyRecord | null | Promise<ApiKeyRecord | null>): MiddlewareHandler<GatewayEnv> {
  return async (c, next) => {
    const need = requiredScopes(c.req.method, c.req.path);
    if (mode === "off" || need === null) {
      c.set("principal", ANONYMOUS);
      return next();
    }
    // a refused request's body is never read: close the connection rather than leave it unusable
    if (c.req.header("content-length") !== undefined || c.req.header("transfer-encoding") !== undefined) c.header("Connection", "close");
    const header = c.req.header("authorization");
    if (!header) {
      c.header("WWW-Authenticate", 'Bearer realm="jetshard"');
      throw new JobError("UNAUTHORIZED", "missing API key: send Authorization: Bearer <key> (create one with: jetshard keys create)");
    }
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    const p = m ? await verifyApiKey(m[1]!, lookup) : null;
    if (!p) {
      c.header("WWW-Authenticate", 'Bearer realm="jetshard", error="invalid_token"');
      throw new JobError("UNAUTHORIZED", m ? "invalid or revoked API key" : "Authorization: use the Bearer scheme (Authorization: Bearer <key>)");
    }
    if (need.length > 0) requireScope(p, ...need);
    c.set("principal", p);
    c.header("Connection", undefined);
    return next();
  };
}
