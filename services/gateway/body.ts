import type { Context } from "hono";
import type { z } from "zod";
import { JobError } from "#shared/errors.js";
import { zodMessage } from "#shared/wire.js";

/** Parses a request's JSON body with `schema`; a 400 names the field (or says the body is not JSON). */
export async function readJson<T>(c: Context, schema: z.ZodType<T>, body?: unknown): Promise<T> {
  if (body === undefined) {
    try {
      body = await c.req.json();
    } catch {
      throw new JobError("BAD_REQUEST", "request body is not valid JSON");
    }
  }
  const parsed = schema.safeParse(body);
  if (!parsed.success) throw new JobError("BAD_REQUEST", zodMessage(parsed.error));
  return parsed.data;
}
