#!/usr/bin/env node
// Entry point of `npm start`, `npm test` and `npm run bench` on a fresh clone: installs what is missing
// (npm packages; nats-server, and redis-server for the bench, through apt-get on Debian/Ubuntu), then runs the real command.
// Plain JavaScript on purpose: it runs before node_modules (and tsx) exist.
import { spawnSync, spawn } from "node:child_process";
import { existsSync, statSync } from "node:fs";
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

function ensureNodeModules() {
  const lock = path.join(root, "package-lock.json");
  const marker = path.join(root, "node_modules", ".package-lock.json");
  const stale = !existsSync(marker) || (existsSync(lock) && statSync(lock).mtimeMs > statSync(marker).mtimeMs + 1000);
  const missing = ["tsx", "onnxruntime-node", "@nats-io/jetstream", "tap"].some((p) => !existsSync(path.join(root, "node_modules", p, "package.json")));
  if (!stale && !missing) return;
  const cmd = existsSync(lock) ? "ci" : "install";
  say(`installing npm packages (npm ${cmd})…`);
  // onnxruntime-node's postinstall fetches CUDA files from outside the npm registry; CPU needs none of it.
  const env = { ...process.env, ONNXRUNTIME_NODE_INSTALL: process.env.ONNXRUNTIME_NODE_INSTALL ?? "skip" };
  const r = spawnSync("npm", [cmd, "--no-audit", "--no-fund"], { cwd: root, stdio: "inherit", env });
  if (r.status !== 0) fail(`npm ${cmd} failed (exit ${r.status}).`);
}

function findNatsServer() {
  if (process.env.NATS_SERVER_BIN && existsSync(process.env.NATS_SERVER_BIN)) return process.env.NATS_SERVER_BIN;
  const dirs = [...(process.env.PATH ?? "").split(path.delimiter), "/usr/sbin", "/usr/bin", "/usr/local/bin"];
  for (const d of dirs) if (d && existsSync(path.join(d, "nats-server"))) return path.join(d, "nats-server");
  return null;
}

function ensureNatsServer() {
  if (findNatsServer()) return;
  const hasApt = spawnSync("sh", ["-c", "command -v apt-get"], { stdio: "ignore" }).status === 0;
  if (process.platform !== "linux" || !hasApt) {
    fail("nats-server is not installed. Install NATS server 2.9 or later (https://docs.nats.io/running-a-nats-service/introduction/installation), put it on PATH or set NATS_SERVER_BIN, or point JETSHARD_NATS_URL at a running server.");
  }
  const isRoot = process.getuid?.() === 0;
  const sudo = isRoot ? [] : ["sudo"];
  if (!isRoot && spawnSync("sh", ["-c", "command -v sudo"], { stdio: "ignore" }).status !== 0) {
    fail("nats-server is not installed and this user cannot run apt-get. Run: sudo apt-get install nats-server");
  }
  say("installing nats-server with apt-get…");
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const run = (a) => spawnSync(sudo.length ? "sudo" : a[0], sudo.length ? a : a.slice(1), { stdio: "inherit", env }).status;
  if (run(["apt-get", "install", "-y", "-q", "nats-server"]) !== 0) {
    if (run(["apt-get", "update", "-q"]) !== 0 || run(["apt-get", "install", "-y", "-q", "nats-server"]) !== 0) {
      fail("apt-get could not install nats-server. Install it by hand: apt-get install nats-server");
    }
  }
  if (!findNatsServer()) fail("nats-server still not found after apt-get install.");
}

function findRedisServer() {
  if (process.env.REDIS_SERVER_BIN && existsSync(process.env.REDIS_SERVER_BIN)) return process.env.REDIS_SERVER_BIN;
  const dirs = [...(process.env.PATH ?? "").split(path.delimiter), "/usr/bin", "/usr/sbin", "/usr/local/bin"];
  for (const d of dirs) if (d && existsSync(path.join(d, "redis-server"))) return path.join(d, "redis-server");
  return null;
}

// The bench's job-queue section compares jetshard with BullMQ on a real redis-server (it starts its own, memory only).
function ensureRedis() {
  if (findRedisServer()) return;
  const skip = "or run only the HTTP section: npm run bench -- --section http";
  const hasApt = spawnSync("sh", ["-c", "command -v apt-get"], { stdio: "ignore" }).status === 0;
  if (process.platform !== "linux" || !hasApt) {
    fail(`redis-server is not installed and apt-get is not available to install it. The bench's job-queue section runs BullMQ on a real Redis: install Redis 6.2 or later (https://redis.io/docs/latest/operate/oss_and_stack/install/), put redis-server on PATH or set REDIS_SERVER_BIN, ${skip}.`);
  }
  const isRoot = process.getuid?.() === 0;
  if (!isRoot && spawnSync("sh", ["-c", "command -v sudo"], { stdio: "ignore" }).status !== 0) {
    fail(`redis-server is not installed and this user cannot run apt-get. Run: sudo apt-get install redis-server (${skip}).`);
  }
  say("installing redis-server with apt-get (for the bench's BullMQ comparison)…");
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const apt = (a) => spawnSync(isRoot ? a[0] : "sudo", isRoot ? a.slice(1) : a, { stdio: "inherit", env }).status;
  const install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "redis-server"];
  if (apt(install) !== 0 && (apt(["apt-get", "update", "-q"]) !== 0 || apt(install) !== 0)) {
    fail(`apt-get could not install redis-server. Install it by hand (apt-get install redis-server), ${skip}.`);
  }
  if (!findRedisServer()) fail(`redis-server still not found after apt-get install; set REDIS_SERVER_BIN, ${skip}.`);
}

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
    // types first: strict TypeScript is part of the contract, and a type error is a failed build
    say("type-checking (tsc --noEmit)…");
    const tsc = spawnSync(process.execPath, [path.join(root, "node_modules/typescript/bin/tsc"), "--noEmit", "-p", root], { cwd: root, stdio: "inherit" });
    if (tsc.status !== 0) fail("type check failed.");
    run(process.execPath, [path.join(root, "node_modules/tap/dist/esm/run.mjs"), ...args]);
    break;
  }
  case "bench":
    ensureNatsServer();
    if (benchSection(args) !== "http" && !args.includes("--help") && !args.includes("-h")) ensureRedis();
    run(process.execPath, ["--import", "tsx", path.join(root, "test/bench/run.ts"), ...args]);
    break;
  case "fuzz":
    ensureNatsServer();
    run(process.execPath, ["--import", "tsx", path.join(root, "test/fuzz/run.ts"), ...args]);
    break;
  default:
    fail(`unknown mode "${mode}" (up, test, bench, fuzz)`);
}
