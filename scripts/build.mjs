#!/usr/bin/env node
// `npm run build`: the production build. Compiles services/ and shared/ (not the tests) with tsconfig.build.json
// into dist/ (or --out-dir DIR), then makes that folder a root of its own that plain `node` can run:
//   - dist/package.json: "type": "module" and the "#shared/*" import map pointing at the compiled dist/shared/*
//     (the repository's package.json maps it to the TypeScript sources, which only tsx can load);
//   - every non-TypeScript file under services/ and shared/ (dashboard pages, scripts, styles...) copied beside
//     the compiled code, where the code looks for it (next to itself, through import.meta);
//   - nats.conf and nats-auth.conf at its top, and bin/jetshard.js, because `jetshard up` finds them relative
//     to its own file (services/cli/up.ts: the folder two levels up);
//   - .jetshard-build, a stamp ("building" until the build is complete) whose time bin/jetshard.js compares with
//     the modification times of the sources.
// Packages (node_modules) are not copied: Node finds them by walking up from dist/, as from the sources.
// Plain JavaScript so it runs without tsx.
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const STAMP = ".jetshard-build";
/** Folders compiled (and whose other files are copied), as tsconfig.build.json includes them. */
const SOURCE_DIRS = ["services", "shared"];
/** Files next to the compiled tree that `jetshard up` reads (nats.conf includes nats-auth.conf). */
const ROOT_FILES = ["nats.conf", "nats-auth.conf"];

function fail(msg) {
  process.stderr.write(`build: ${msg}\n`);
  process.exit(1);
}

function parseArgs(argv) {
  let outDir = path.join(root, "dist");
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--out-dir") outDir = path.resolve(argv[++i] ?? fail("--out-dir needs a folder"));
    else if (a.startsWith("--out-dir=")) outDir = path.resolve(a.slice("--out-dir=".length));
    else if (a === "--help" || a === "-h") {
      process.stdout.write("Usage: node scripts/build.mjs [--out-dir DIR]   (default: dist/)\n");
      process.exit(0);
    } else fail(`unknown option ${a}`);
  }
  return { outDir };
}

/** Files of `dir` (recursively) other than TypeScript, editors' temporary files and dotfiles. */
function assets(dir) {
  const out = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.name.startsWith(".")) continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...assets(p));
    else if (e.isFile() && !e.name.endsWith(".ts") && !e.name.endsWith(".tmp") && !e.name.endsWith("~")) out.push(p);
  }
  return out;
}

const { outDir } = parseArgs(process.argv.slice(2));
if (outDir === root || root.startsWith(outDir + path.sep)) fail(`refusing to build into ${outDir}: it holds the sources`);
// only a folder this script made (or an empty one) is emptied first, so stale files of removed sources go
if (existsSync(outDir) && readdirSync(outDir).length > 0) {
  if (!existsSync(path.join(outDir, STAMP))) fail(`${outDir} exists and was not made by this build; remove it or choose another --out-dir`);
  rmSync(outDir, { recursive: true, force: true });
}
mkdirSync(outDir, { recursive: true });
// marks the folder as this build's (so a failed build can be redone) and as unfinished (bin/jetshard.js skips it)
writeFileSync(path.join(outDir, STAMP), "building\n");

// the stamp carries the time the build started: a source saved while tsc ran counts as newer than the build
const startedAt = new Date();
const tsc = spawnSync(process.execPath, [path.join(root, "node_modules/typescript/bin/tsc"), "-p", path.join(root, "tsconfig.build.json"), "--outDir", outDir], {
  cwd: root,
  stdio: "inherit",
});
if (tsc.status !== 0) fail(`tsc failed (exit ${tsc.status ?? tsc.signal})`);

let copied = 0;
for (const dir of SOURCE_DIRS) {
  for (const file of assets(path.join(root, dir))) {
    const to = path.join(outDir, path.relative(root, file));
    mkdirSync(path.dirname(to), { recursive: true });
    cpSync(file, to);
    copied++;
  }
}
for (const f of ROOT_FILES) cpSync(path.join(root, f), path.join(outDir, f));

const pkg = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8"));
const imports = Object.fromEntries(Object.entries(pkg.imports ?? {}).map(([k, v]) => [k, String(v).replace(/\.ts$/, ".js")]));
writeFileSync(
  path.join(outDir, "package.json"),
  JSON.stringify({ name: `${pkg.name}-dist`, version: pkg.version, private: true, type: "module", imports }, null, 2) + "\n",
);
mkdirSync(path.join(outDir, "bin"), { recursive: true });
writeFileSync(
  path.join(outDir, "bin", "jetshard.js"),
  "#!/usr/bin/env node\n// The compiled CLI (written by scripts/build.mjs). `jetshard up` starts its processes through this file.\nawait import(\"../services/cli/main.js\");\n",
  { mode: 0o755 },
);
if (!statSync(path.join(outDir, "services", "cli", "main.js"), { throwIfNoEntry: false })) fail("tsc wrote no services/cli/main.js");
writeFileSync(path.join(outDir, STAMP), `${startedAt.toISOString()}\n`);
utimesSync(path.join(outDir, STAMP), startedAt, startedAt);
process.stderr.write(`build: compiled ${SOURCE_DIRS.join(", ")} into ${path.relative(process.cwd(), outDir) || "."} (${copied} asset file(s) copied)\n`);
