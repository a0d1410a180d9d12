import t from "tap";
import { isReplySubject } from "#shared/subjects.js";

t.test("a reply subject must be a concrete subject under _INBOX.", async (t) => {
  for (const ok of ["_INBOX.abc", "_INBOX.gateway.Xk3.job-1", "_INBOX.client.a_b-c.1"]) t.ok(isReplySubject(ok), `${ok} is accepted`);
  for (const bad of [
    "jetshard.infer.other",
    "jetshard.results.x",
    "$JS.API.STREAM.DELETE.JOBS",
    "_INBOX",
    "_INBOX.",
    "_INBOX..x",
    "_INBOX.a.",
    "_INBOX.*",
    "_INBOX.>",
    "_INBOX.a.*",
    "_INBOX.a>",
    "_INBOX.a b",
    "_INBOX.a\tb",
    "_INBOXES.a",
    "_inbox.a",
    " _INBOX.a",
    "",
    `_INBOX.${"x".repeat(600)}`,
  ]) {
    t.notOk(isReplySubject(bad), `${JSON.stringify(bad)} is refused`);
  }
});
