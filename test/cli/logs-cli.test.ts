import t from "tap";
import { subjects } from "#shared/subjects.js";
import { cli } from "../helpers/cli.js";
import { startStack } from "../helpers/stack.js";

t.test("jetshard logs follows one job across services and filters by level, as JSON lines off a terminal", async (t) => {
  const stack = await startStack(t);
  const { js } = stack.infra;
  const now = Date.now();
  const records: Array<[string, string, Record<string, unknown>]> = [
    ["gateway", "info", { level: 30, time: now, name: "gateway", job: "job-a", msg: "job queued" }],
    ["worker", "info", { level: 30, time: now + 1, name: "worker", job: "job-b", msg: "job done" }],
    ["worker", "error", { level: 50, time: now + 2, name: "worker", job: "job-a", msg: "inference failed" }],
    ["controller", "info", { level: 30, time: now + 3, name: "controller", msg: "idle" }],
  ];
  for (const [service, level, r] of records) await js.publish(subjects.log(service, level), JSON.stringify(r));

  const job = await cli(stack.env, "logs", "--job", "job-a");
  t.equal(job.code, 0, job.stderr);
  t.same(job.stdout.trim().split("\n").map((l) => JSON.parse(l).msg), ["job queued", "inference failed"], "the job's records from every service, oldest first");
  const errors = await cli(stack.env, "logs", "--level", "error", "--json");
  t.same(errors.stdout.trim().split("\n").map((l) => JSON.parse(l).msg), ["inference failed"]);
  const last = await cli(stack.env, "logs", "--limit", "1", "--service", "controller");
  t.same(last.stdout.trim().split("\n").map((l) => JSON.parse(l).msg), ["idle"]);
  const bad = await cli(stack.env, "logs", "--service", "nobody");
  t.equal(bad.code, 2);
  t.match(bad.stderr, /--service: must be one of gateway, worker, controller/);
});
