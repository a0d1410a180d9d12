import t from "tap";
import { Kvm } from "@nats-io/kv";
import { z } from "zod";
import { KvMirror } from "#shared/kv-mirror.js";
import { createLogger } from "#shared/log.js";
import { openKv } from "#shared/nats.js";
import { startStack, waitFor } from "../helpers/stack.js";

const stack = await startStack(t);

/** A logger whose error lines the test can read. */
function recordingLogger() {
  const lines: Array<{ level: number; msg: string }> = [];
  const log = createLogger({ level: "silent" });
  const child = log.child({});
  for (const level of ["warn", "error"] as const) {
    const orig = child[level].bind(child);
    child[level] = ((obj: unknown, msg?: string) => {
      lines.push({ level: level === "error" ? 50 : 40, msg: typeof obj === "string" ? obj : (msg ?? "") });
      return orig(obj as never, msg as never);
    }) as never;
  }
  return { log: child, lines };
}

t.test("a listener that throws is logged and the mirror keeps following the bucket, other listeners too", async (t) => {
  const kv = await openKv(new Kvm(stack.infra.nc), "mirror_listeners", { history: 1 });
  const { log, lines } = recordingLogger();
  const mirror = new KvMirror(kv, z.object({ v: z.number() }), log);
  await mirror.start();
  t.teardown(() => mirror.stop());
  const seen: string[] = [];
  mirror.onChange(() => {
    throw new Error("listener bug");
  });
  mirror.onChange((key) => seen.push(key));
  await kv.put("a", JSON.stringify({ v: 1 }));
  await kv.put("b", JSON.stringify({ v: 2 }));
  await waitFor("both mirrored", () => mirror.get("b")?.v === 2 && mirror.get("a")?.v === 1);
  t.same(seen, ["a", "b"], "the other listener saw every change");
  t.equal(lines.filter((l) => l.msg === "a KV mirror listener failed").length, 2, "each failure logged");
  await kv.delete("a");
  await waitFor("delete mirrored", () => mirror.get("a") === undefined);
  t.pass("still following after the listener failures");
});
