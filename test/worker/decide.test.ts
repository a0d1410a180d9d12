import t from "tap";
import { JobError } from "#shared/errors.js";
import { backoffMs, decide, exhaustedError, retryPolicy, type DecideInput } from "../../services/worker/decide.js";

const policy = retryPolicy({ maxAttempts: 3, maxDeliver: 10, retryBaseMs: 100 });
const NOW = 1_700_000_000_000;
const input = (over: Partial<DecideInput>): DecideInput => ({
  outcome: { kind: "succeeded" },
  attempt: 1,
  policy,
  stopping: false,
  now: NOW,
  reply: false,
  track: true,
  ...over,
});
const failed = (error: JobError) => ({ kind: "failed" as const, error });
const retryable = (code: "INFERENCE_FAILED" | "MODEL_UNAVAILABLE" | "NATS_UNAVAILABLE" = "MODEL_UNAVAILABLE") => new JobError(code, "shard object m/1/0.onnx is missing", { retryable: true });

t.test("the retry policy comes from config, with backoff doubling from retryBaseMs up to 30 s", async (t) => {
  t.same(policy, { maxAttempts: 3, maxDeliver: 10, baseMs: 100, capMs: 30_000 });
  t.same([1, 2, 3, 4].map((a) => backoffMs(policy, a)), [100, 200, 400, 800]);
  t.equal(backoffMs(policy, 20), 30_000, "capped");
});

t.test("a success is completed: result published and recorded, then acked", async (t) => {
  t.same(decide(input({})), { action: "complete" });
});

t.test("a retryable failure under maxAttempts is nak'ed with exponential backoff", async (t) => {
  t.same(decide(input({ outcome: failed(retryable()), attempt: 1 })), { action: "nak", delayMs: 100, reason: "retryable failure; will be redelivered" });
  t.match(decide(input({ outcome: failed(retryable()), attempt: 2 })), { action: "nak", delayMs: 200 });
});

t.test("a retryable failure at the last attempt fails terminally, saying how many attempts it had, and is dead-lettered", async (t) => {
  const d = decide(input({ outcome: failed(retryable()), attempt: 3 }));
  t.match(d, { action: "fail", deadLetter: true, error: { code: "MODEL_UNAVAILABLE", message: "failed after 3 attempts: shard object m/1/0.onnx is missing", retryable: false } });
});

t.test("a non-retryable failure fails at once, whatever attempts are left", async (t) => {
  const bad = new JobError("INPUT_SHAPE", 'input "x": expected [N,4], got [1,5]');
  t.match(decide(input({ outcome: failed(bad), attempt: 1 })), { action: "fail", error: bad, deadLetter: true });
});

t.test("a 4xx for a sync caller waiting on its reply is not dead-lettered; a 5xx is", async (t) => {
  const bad = new JobError("BAD_REQUEST", "job body is neither a jetshard frame nor JSON");
  t.match(decide(input({ outcome: failed(bad), reply: true, track: false })), { action: "fail", deadLetter: false });
  t.match(decide(input({ outcome: failed(bad), reply: false, track: false })), { action: "fail", deadLetter: true }, "nobody waits: dead-lettered");
  const ours = new JobError("INFERENCE_FAILED", "ORT crashed");
  t.match(decide(input({ outcome: failed(ours), reply: true, track: false })), { action: "fail", deadLetter: true });
});

t.test("NATS outages do not spend attempts: retried past maxAttempts, up to maxDeliver", async (t) => {
  const nats = retryable("NATS_UNAVAILABLE");
  t.same(decide(input({ outcome: failed(nats), attempt: 1 })), { action: "nak", delayMs: 100, reason: "NATS unavailable; will be redelivered" });
  t.match(decide(input({ outcome: failed(nats), attempt: 5 })), { action: "nak", delayMs: 100 }, "beyond maxAttempts, same short delay");
  t.match(decide(input({ outcome: failed(nats), attempt: 9 })), { action: "nak" });
  t.match(decide(input({ outcome: failed(nats), attempt: 10 })), { action: "fail", deadLetter: true, error: { code: "NATS_UNAVAILABLE", message: /^failed after 10 deliveries: / } }, "at maxDeliver it fails");
});

t.test("a job past its deadline fails with DEADLINE_EXCEEDED and is not dead-lettered", async (t) => {
  const late = new JobError("DEADLINE_EXCEEDED", "job j passed its deadline before it could run");
  t.same(decide(input({ outcome: failed(late), deadline: NOW - 1 })), { action: "fail", error: late, deadLetter: false });
  const d = decide(input({ outcome: failed(retryable()), attempt: 1, deadline: NOW + 50 }));
  t.match(d, { action: "fail", deadLetter: false, error: { code: "DEADLINE_EXCEEDED", message: /before it could be retried: shard object/ } }, "a retry that would start after the deadline is not made");
  t.match(decide(input({ outcome: failed(retryable()), attempt: 1, deadline: NOW + 5_000 })), { action: "nak", delayMs: 100 }, "one that starts in time is");
});

t.test("a draining worker hands retryable work back at once instead of failing it", async (t) => {
  t.same(decide(input({ outcome: failed(retryable()), attempt: 3, stopping: true })), { action: "nak", delayMs: 0, reason: "handed back while draining" });
  t.same(decide(input({ outcome: failed(retryable("NATS_UNAVAILABLE")), attempt: 2, stopping: true })), { action: "nak", delayMs: 0, reason: "handed back while draining" });
  t.same(decide(input({ outcome: { kind: "released", reason: "worker stopping" } })), { action: "nak", delayMs: 0, reason: "worker stopping" });
  t.match(decide(input({ outcome: failed(new JobError("BAD_REQUEST", "bad")), stopping: true })), { action: "fail" }, "a bad job stays bad while draining");
  t.match(decide(input({ outcome: failed(retryable()), attempt: 10, stopping: true })), { action: "fail" }, "no delivery left to hand back");
});

t.test("a cancelled or already finished job is acked without running; a dropped one is termed without an answer", async (t) => {
  t.same(decide(input({ outcome: { kind: "skipped", reason: "job already finished or cancelled" } })), { action: "ack", reason: "job already finished or cancelled" });
  t.same(decide(input({ outcome: { kind: "dropped", reason: "experiment stopped" } })), { action: "term", reason: "experiment stopped" });
});

t.test("when the dead letter (or the result) cannot be stored, the job is nak'ed, never dropped", async (t) => {
  const err = new Error("timeout");
  t.same(decide(input({ outcome: { kind: "unrecorded", step: "dead-letter", error: err }, attempt: 2 })), { action: "nak", delayMs: 200, reason: "could not store the dead letter" });
  t.match(decide(input({ outcome: { kind: "unrecorded", step: "result", error: err }, attempt: 10 })), { action: "nak", delayMs: 30_000, reason: "could not store the result" }, "even at the last delivery (the advisory answers it then)");
  t.match(decide(input({ outcome: { kind: "unrecorded", step: "record", error: err }, stopping: true })), { action: "nak", delayMs: 0 });
});

t.test("a job whose deliveries ran out fails with MAX_ATTEMPTS, dead-lettered", async (t) => {
  const e = exhaustedError("j1", 10);
  t.match(e, { code: "MAX_ATTEMPTS", retryable: false, message: "job j1 was delivered 10 times without finishing (workers crashed or timed out)" });
  t.match(decide(input({ outcome: failed(e), attempt: 11 })), { action: "fail", deadLetter: true, error: e });
});
