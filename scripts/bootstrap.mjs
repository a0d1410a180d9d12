#!/usr/bin/env node
// Entry point of `npm start`, `npm test` and `npm run bench` on a fresh clone: installs what is missing
// (npm packages; nats-server, and redis-server for the bench, through apt-get on Debian/Ubuntu), then runs the real command.
// Plain JavaScript on purpose: it runs before node_modules (and tsx) exist.
import { spawnSync, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const [mode, ...args] = process.argv.slice(2);
const say = (msg) => process.stderr.write(`[jetshard] ${msg}\n`);

function fail(msg) {
  say(msg);
  process.exit(1);
}

const major = Number(process.versions.node.split(".")[0]);
if (major < 20) fail(`Node.js >= 20 is required (this is ${process.version}).`);

/** The packages a lock file names (name@version); `required`: only those not optional (other platforms' builds). */
function lockedPackages(file, required = false) {
  try {
    const pkgs = JSON.parse(readFileSync(file, "utf8")).packages ?? {};
    return new Set(Object.entries(pkgs).filter(([k, v]) => k.startsWith("node_modules/") && !(required && v.optional)).map(([k, v]) => `${k}@${v.version}`));
  } catch {
    return new Set();
  }
}

function ensureNodeModules() {
  const lock = path.join(root, "package-lock.json");
  const marker = path.join(root, "node_modules", ".package-lock.json");
  // npm writes node_modules/.package-lock.json after an install: stale when package-lock.json asks for a package
  // (non-optional) not in it. Compared by content: mtimes lie after a clone, a checkout or through a symlink.
  const installed = existsSync(marker) ? lockedPackages(marker) : new Set();
  const stale = !existsSync(marker) || (existsSync(lock) && [...lockedPackages(lock, true)].some((p) => !installed.has(p)));
  const missing = ["tsx", "onnxruntime-node", "@nats-io/jetstream", "tap"].some((p) => !existsSync(path.join(root, "node_modules", p, "package.json")));
  if (!stale && !missing) return;
  const cmd = existsSync(lock) ? "ci" : "install";
  say(`installing npm packages (npm ${cmd})…`);
  // onnxruntime-node's postinstall fetches CUDA files from outside the npm registry; CPU needs none of it.
  const env = { ...process.env, ONNXRUNTIME_NODE_INSTALL: process.env.ONNXRUNTIME_NODE_INSTALL ?? "skip" };
  const r = spawnSync("npm", [cmd, "--no-audit", "--no-fund"], { cwd: root, stdio: "inherit", env });
  if (r.status !== 0) fail(`npm ${cmd} failed (exit ${r.status}).`);
}

/** The first of `names` found on PATH (or in the usual system dirs), or `envVar`'s path when set and present. */
function findBinary(names, envVar) {
  if (envVar && process.env[envVar] && existsSync(process.env[envVar])) return process.env[envVar];
  const dirs = [...(process.env.PATH ?? "").split(path.delimiter), "/usr/sbin", "/usr/bin", "/usr/local/bin"];
  for (const n of names) for (const d of dirs) if (d && existsSync(path.join(d, n))) return path.join(d, n);
  return null;
}

/**
 * Makes sure a Debian package's binary is there, installing the package with apt-get when it is not (as root, or
 * through sudo). `why` says what needs it; `elsewhere` what to do where apt-get is not available.
 */
function ensureDebianPackage({ pkg, bins, envVar, why, elsewhere }) {
  if (findBinary(bins, envVar)) return;
  const hasApt = spawnSync("sh", ["-c", "command -v apt-get"], { stdio: "ignore" }).status === 0;
  if (process.platform !== "linux" || !hasApt) fail(`${bins[0]} is not installed and apt-get is not available to install it (${why}). ${elsewhere}`);
  const isRoot = process.getuid?.() === 0;
  if (!isRoot && spawnSync("sh", ["-c", "command -v sudo"], { stdio: "ignore" }).status !== 0) {
    fail(`${bins[0]} is not installed and this user cannot run apt-get (${why}). Run: sudo apt-get install ${pkg}. ${elsewhere}`);
  }
  say(`installing ${pkg} with apt-get (${why})…`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const apt = (a) => spawnSync(isRoot ? a[0] : "sudo", isRoot ? a.slice(1) : a, { stdio: "inherit", env }).status;
  const install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", pkg];
  if (apt(install) !== 0 && (apt(["apt-get", "update", "-q"]) !== 0 || apt(install) !== 0)) {
    fail(`apt-get could not install ${pkg}. Install it by hand (apt-get install ${pkg}). ${elsewhere}`);
  }
  if (!findBinary(bins, envVar)) fail(`${bins[0]} still not found after apt-get install ${pkg}. ${elsewhere}`);
}

const ensureNatsServer = () =>
  ensureDebianPackage({
    pkg: "nats-server",
    bins: ["nats-server"],
    envVar: "NATS_SERVER_BIN",
    why: "jetshard runs on NATS JetStream",
    elsewhere: "Install NATS server 2.9 or later (https://docs.nats.io/running-a-nats-service/introduction/installation), put it on PATH or set NATS_SERVER_BIN, or point JETSHARD_NATS_URL at a running server.",
  });

// The bench's job-queue section compares jetshard with BullMQ on a real redis-server (it starts its own, memory only).
const ensureRedis = () =>
  ensureDebianPackage({
    pkg: "redis-server",
    bins: ["redis-server"],
    envVar: "REDIS_SERVER_BIN",
    why: "the bench's BullMQ comparison",
    elsewhere: "Install Redis 6.2 or later, put redis-server on PATH or set REDIS_SERVER_BIN, or run only the HTTP section: npm run bench -- --section http.",
  });

// The dashboard tests drive a real browser; the metrics tests check the exposition with promtool and scrape a stack
// with a real Prometheus server.
const ensureTestTools = () => {
  ensureDebianPackage({
    pkg: "chromium",
    bins: ["chromium", "chromium-browser"],
    envVar: "CHROMIUM_BIN",
    why: "the dashboard's browser tests",
    elsewhere: "Install Chromium, put it on PATH or set CHROMIUM_BIN.",
  });
  ensureDebianPackage({
    pkg: "prometheus",
    bins: ["promtool"],
    envVar: "PROMTOOL_BIN",
    why: "the metrics tests (promtool and a real scrape)",
    elsewhere: "Install Prometheus 2.x (promtool and prometheus on PATH), or set PROMTOOL_BIN.",
  });
};

/** The --section the bench was asked for (--section X, --section=X, or npm's npm_config_section), or undefined. */
function benchSection(argv) {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--section") return argv[i + 1];
    if (argv[i].startsWith("--section=")) return argv[i].slice("--section=".length);
  }
  // npm keeps options it does not know: --section=X arrives as npm_config_section=X, "--section X" as "true" plus X
  if (process.env.npm_config_section === "true") return argv.find((a) => !a.startsWith("-"));
  return process.env.npm_config_section || undefined;
}

function run(cmd, argv) {
  const child = spawn(cmd, argv, { cwd: root, stdio: "inherit", env: process.env });
  // Ctrl-C reaches the child too; wait for it to shut down cleanly and report its exit code.
  process.on("SIGINT", () => {});
  process.on("SIGTERM", () => child.kill("SIGTERM"));
  child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
}

ensureNodeModules();
switch (mode) {
  case "up":
    if (!process.env.JETSHARD_NATS_URL) ensureNatsServer();
    run(process.execPath, [path.join(root, "bin/jetshard.js"), "up", ...args]);
    break;
  case "test": {
    ensureNatsServer();
    ensureTestTools();
    // types first: strict TypeScript is part of the contract, and a type error is a failed build
    say("type-checking (tsc --noEmit)…");
    const tsc = spawnSync(process.execPath, [path.join(root, "node_modules/typescript/bin/tsc"), "--noEmit", "-p", root], { cwd: root, stdio: "inherit" });
    if (tsc.status !== 0) fail("type check failed.");
    run(process.execPath, [path.join(root, "node_modules/tap/dist/esm/run.mjs"), ...args]);
    break;
  }
  case "bench":
    ensureNatsServer();
    if (!["http", "wire"].includes(benchSection(args)) && !args.includes("--help") && !args.includes("-h")) ensureRedis();
    run(process.execPath, ["--import", "tsx", path.join(root, "test/bench/run.ts"), ...args]);
    break;
  case "fuzz":
    ensureNatsServer();
    run(process.execPath, ["--import", "tsx", path.join(root, "test/fuzz/run.ts"), ...args]);
    break;
  default:
    fail(`unknown mode "${mode}" (up, test, bench, fuzz)`);
}
