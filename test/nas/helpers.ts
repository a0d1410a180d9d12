import type { Test } from "tap";
import { NasSpecError } from "#shared/nas/errors.js";

/** Asserts that `f` throws a NasSpecError on `field` whose message matches `detail` and starts with the field. */
export function expectSpecError(t: Test, f: () => unknown, field: string, detail: RegExp): void {
  try {
    f();
    t.fail(`expected a NasSpecError on ${field}`);
  } catch (err) {
    if (!(err instanceof NasSpecError)) {
      t.fail(`expected a NasSpecError, got ${String(err)}`);
      return;
    }
    t.equal(err.field, field, err.message);
    t.match(err.message, detail);
    t.ok(err.message.startsWith(`${field}: `), "message starts with the field");
  }
}
