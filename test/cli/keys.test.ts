import t from "tap";
import { cli } from "../helpers/cli.js";
import { startStack, waitFor } from "../helpers/stack.js";

t.test("jetshard keys creates a key shown once, lists it without its secret, and revokes it", async (t) => {
  const stack = await startStack(t, { JETSHARD_AUTH: "keys" });
  const gw = await stack.gateway();
  const env = stack.env;
  t.match((await cli(env, "keys", "--help")).stdout, /Usage:[\s\S]*keys create --tenant/);
  const bad = await cli(env, "keys", "create", "--tenant", "team-a", "--scopes", "infer,root");
  t.equal(bad.code, 2);
  t.match(bad.stderr, /unknown scope "root"/);
  t.match((await cli(env, "keys", "create", "--scopes", "infer")).stderr, /needs --tenant/);

  const made = await cli(env, "keys", "create", "--tenant", "team-a", "--scopes", "models:read,infer", "--json");
  t.equal(made.code, 0, made.stderr);
  const { key, id } = JSON.parse(made.stdout);
  t.match(key, /^jsk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
  const models = () => fetch(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } }).then((r) => r.status);
  t.equal(await models(), 200, "the new key works on the gateway at once");

  const list = await cli(env, "keys", "list");
  t.equal(list.code, 0, list.stderr);
  t.match(list.stdout, new RegExp(`^${id}\\tteam-a\\tmodels:read,infer\\tactive`, "m"));
  t.notOk(list.stdout.includes(key.slice("jsk_0123456789abcdef_".length)), "the secret is never listed");
  t.same(JSON.parse((await cli(env, "keys", "list", "--json")).stdout).keys.map((k: any) => k.id), [id]);

  const rev = await cli(env, "keys", "revoke", id);
  t.equal(rev.code, 0, rev.stderr);
  t.match(rev.stdout, `revoked ${id}`);
  await waitFor("revoked on the gateway", async () => (await models()) === 401, 5_000);
  t.match((await cli(env, "keys", "list")).stdout, /\trevoked /);
  t.equal((await cli(env, "keys", "revoke", "0000000000000000")).code, 1, "an unknown id exits 1 (not found)");
});
