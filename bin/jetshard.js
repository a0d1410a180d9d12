#!/usr/bin/env node
// The `jetshard` command. Runs the compiled JavaScript (dist/, from `npm run build`) when it is there and complete
// and no source under services/ or shared/ was modified after it was built; otherwise the TypeScript sources
// through tsx's loader (development: no build step). JETSHARD_RUN_FROM=dist or =src forces one of the two.
// The container image (deploy/Dockerfile) runs dist/bin/jetshard.js, the compiled launcher the build writes.
import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const dist = path.join(root, "dist");
const compiledMain = path.join(dist, "services", "cli", "main.js");

/** Newest modification time (ms) of the files under `dir`, 0 when it does not exist. */
function newestMtime(dir) {
  let newest = 0;
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) {
    if (e.name.startsWith(".")) continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) newest = Math.max(newest, newestMtime(p));
    else if (e.isFile()) {
      // a file removed since the listing (an editor's temporary file) does not count
      const st = statSync(p, { throwIfNoEntry: false });
      if (st) newest = Math.max(newest, st.mtimeMs);
    }
  }
  return newest;
}

/** When dist/ was built (ms), or null when there is no complete build. */
function builtAt() {
  try {
    const stamp = path.join(dist, ".jetshard-build");
    if (readFileSync(stamp, "utf8").startsWith("building")) return null;
    statSync(compiledMain);
    return statSync(stamp).mtimeMs;
  } catch {
    return null;
  }
}

function useDist() {
  const from = process.env.JETSHARD_RUN_FROM;
  if (from === "dist") {
    if (builtAt() === null) {
      process.stderr.write("jetshard: JETSHARD_RUN_FROM=dist but there is no complete build in dist/ (run: npm run build)\n");
      process.exit(2);
    }
    return true;
  }
  if (from === "src") return false;
  if (from !== undefined && from !== "") {
    process.stderr.write(`jetshard: JETSHARD_RUN_FROM must be dist or src, not "${from}"\n`);
    process.exit(2);
  }
  const at = builtAt();
  return at !== null && Math.max(newestMtime(path.join(root, "services")), newestMtime(path.join(root, "shared"))) <= at;
}

if (useDist()) {
  await import(pathToFileURL(compiledMain).href);
} else {
  const { register } = await import("tsx/esm/api");
  register();
  await import("../services/cli/main.ts");
}
