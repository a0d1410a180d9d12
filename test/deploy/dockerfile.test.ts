/**
 * deploy/Dockerfile, read as Docker reads it (no Docker here to build it): stages, pinned bases, the GPU build
 * argument, a non-root user, a health check, nothing secret in the image's layers, and only files that exist and
 * that the build context lets through. Each rule is proven to bite on a mutated copy. The health check script
 * itself is run against a real listener.
 */
import t from "tap";
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { ENV_NAMES } from "#shared/config.js";

const ROOT = path.resolve(import.meta.dirname, "../..");
const DOCKERFILE = path.join(ROOT, "deploy/Dockerfile");
const IMAGE_USER = "1000"; // deploy/k8s pods run as this uid

interface Instruction {
  cmd: string;
  args: string;
  line: number;
}

/** Instructions of a Dockerfile: comments dropped, `\` continuations joined. */
function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  let buf = "";
  let start = 0;
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (!buf && (line === "" || line.startsWith("#"))) return;
    if (buf && line.startsWith("#")) return;
    if (!buf) start = i + 1;
    buf += (buf ? " " : "") + line.replace(/\\$/, "").trim();
    if (line.endsWith("\\")) return;
    const m = /^(\S+)\s*(.*)$/.exec(buf)!;
    out.push({ cmd: m[1]!.toUpperCase(), args: m[2]!, line: start });
    buf = "";
  });
  return out;
}

interface Stage {
  from: string;
  name?: string;
  body: Instruction[];
}

/** `${NAME}` and `$NAME` replaced from `args`. */
const expand = (s: string, args: Record<string, string>) => s.replace(/\$\{(\w+)\}|\$(\w+)/g, (m, a, b) => args[a ?? b] ?? m);

function stages(ins: Instruction[], buildArgs: Record<string, string>): { stages: Stage[]; globalArgs: Record<string, string> } {
  const globalArgs: Record<string, string> = {};
  const out: Stage[] = [];
  for (const i of ins) {
    if (i.cmd === "ARG" && out.length === 0) {
      const [k, v] = i.args.split("=");
      globalArgs[k!] = buildArgs[k!] ?? v ?? "";
    } else if (i.cmd === "FROM") {
      const m = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(i.args);
      out.push({ from: expand(m?.[1] ?? i.args, globalArgs), name: m?.[2], body: [] });
    } else out.at(-1)?.body.push(i);
  }
  return { stages: out, globalArgs };
}

/** The stage a FROM leads to, following stage names (`FROM build`) down to an image. */
function baseImage(all: Stage[], s: Stage): string {
  const parent = all.find((x) => x.name === s.from);
  return parent && parent !== s ? baseImage(all, parent) : s.from;
}

/** Every rule deploy/Dockerfile must meet, for a build with `buildArgs`; [] when all hold. */
function dockerfileProblems(text: string, buildArgs: Record<string, string> = {}): string[] {
  const problems: string[] = [];
  const ins = parseDockerfile(text);
  const { stages: all, globalArgs } = stages(ins, buildArgs);
  if (all.length < 2) problems.push("not multi-stage");
  if (globalArgs.GPU === undefined) problems.push("no ARG GPU before the first FROM");
  else if (!buildArgs.GPU && globalArgs.GPU !== "0") problems.push(`ARG GPU defaults to ${globalArgs.GPU}, expected 0`);
  for (const s of all) {
    if (all.some((x) => x.name === s.from)) continue;
    const ok = /@sha256:[0-9a-f]{64}$/.test(s.from) || /:[^:/]*\d+\.\d+[^:/]*$/.test(s.from);
    if (!ok || /:latest$/.test(s.from)) problems.push(`FROM ${s.from} is not pinned to a version (or digest)`);
  }
  const runtime = all.at(-1)!;
  const runtimeBase = baseImage(all, runtime);
  const stageOf = (name: string) => all.find((s) => s.name === name);
  const build = all.find((s) => s.body.some((i) => i.cmd === "RUN" && /\bnpm run build\b/.test(i.args)));
  if (!build) problems.push("no stage runs npm run build");
  else if (!build.body.some((i) => i.cmd === "RUN" && /\bnpm ci\b/.test(i.args) && !/--omit=dev/.test(i.args))) problems.push("the build stage does not npm ci the dev dependencies (TypeScript)");
  // the runtime stage: production dependencies and dist/ from other stages, no compiler, no sources
  const copies = runtime.body.filter((i) => i.cmd === "COPY");
  const fromStage = (i: Instruction) => /--from=(\S+)/.exec(i.args)?.[1];
  const distCopy = copies.find((i) => fromStage(i) === build?.name && /\/dist\s/.test(i.args));
  if (!distCopy) problems.push("the runtime stage does not copy dist/ from the build stage");
  const depsCopy = copies.find((i) => /node_modules/.test(i.args));
  const depsStage = depsCopy && stageOf(fromStage(depsCopy) ?? "");
  if (!depsStage || !depsStage.body.some((i) => i.cmd === "RUN" && /npm ci\b.*--omit=dev/.test(i.args))) problems.push("node_modules in the runtime stage do not come from an npm ci --omit=dev");
  if (depsStage === build) problems.push("the runtime's node_modules come from the build stage (dev dependencies)");
  if (runtime.body.some((i) => i.cmd === "RUN" && /\bnpm (ci|install|i)\b/.test(i.args))) problems.push("the runtime stage installs packages itself");
  for (const i of copies.filter((c) => !fromStage(c))) {
    if (/\b(services|shared|test)\b/.test(i.args)) problems.push(`the runtime stage copies sources: COPY ${i.args}`);
  }
  // GPU: the CUDA provider, and a CUDA base, exactly when GPU=1
  const gpu = (buildArgs.GPU ?? globalArgs.GPU) === "1";
  if (gpu !== /cuda/i.test(runtimeBase)) problems.push(`GPU=${gpu ? 1 : 0} builds on ${runtimeBase}`);
  if (!ins.some((i) => i.cmd === "RUN" && /GPU.*=.*1.*ONNXRUNTIME_NODE_INSTALL=cuda12/.test(i.args))) problems.push("GPU=1 does not install ONNX Runtime's CUDA 12 provider (ONNXRUNTIME_NODE_INSTALL=cuda12)");
  // who it runs as
  const users = runtime.body.filter((i) => i.cmd === "USER");
  const user = users.at(-1)?.args.split(":")[0];
  if (!user) problems.push("the runtime stage sets no USER (it would run as root)");
  else if (user === "root" || user === "0") problems.push(`runs as ${user}`);
  else if (user !== IMAGE_USER) problems.push(`USER ${user}: Kubernetes' runAsNonRoot can only verify a numeric user; the manifests run as ${IMAGE_USER}`);
  const entry = runtime.body.findLast((i) => i.cmd === "ENTRYPOINT");
  if (!entry || !/dist\/bin\/jetshard\.js/.test(entry.args) || /tsx/.test(entry.args)) problems.push("the ENTRYPOINT does not run the compiled CLI");
  const hc = runtime.body.findLast((i) => i.cmd === "HEALTHCHECK");
  if (!hc || /^NONE\b/i.test(hc.args)) problems.push("no HEALTHCHECK");
  // nothing secret in a layer: no such ARG or ENV, nothing copied from .env/.data
  for (const i of ins.filter((x) => x.cmd === "ARG" || x.cmd === "ENV")) {
    const names = i.cmd === "ARG" ? [i.args.split("=")[0]!] : [...i.args.matchAll(/(\w+)=/g)].map((m) => m[1]!);
    for (const n of names) {
      if (/PASS|SECRET|TOKEN|CREDENTIAL|PRIVATE|_KEY$/i.test(n)) problems.push(`${i.cmd} ${n} would put a secret in the image`);
      if (n.startsWith("JETSHARD_") && !ENV_NAMES.includes(n)) problems.push(`ENV ${n} is not a jetshard setting`);
    }
  }
  for (const i of ins.filter((x) => (x.cmd === "COPY" || x.cmd === "ADD") && !fromStage(x))) {
    const srcs = i.args.replace(/--\S+\s+/g, "").split(/\s+/).slice(0, -1);
    for (const src of srcs) {
      if (/(^|\/)\.(env|data)\b|credentials/.test(src)) problems.push(`COPY ${src}: secrets stay out of the image`);
      else if (!existsSync(path.join(ROOT, src))) problems.push(`COPY ${src}: no such file in the repository`);
    }
  }
  return problems;
}

const text = readFileSync(DOCKERFILE, "utf8");

t.test("the Dockerfile is multi-stage, pinned, non-root, checks health and holds no secret (CPU and GPU builds)", async (t) => {
  t.same(dockerfileProblems(text), [], "default build");
  t.same(dockerfileProblems(text, { GPU: "1" }), [], "--build-arg GPU=1");
  const { stages: all } = stages(parseDockerfile(text), { GPU: "1" });
  t.match(baseImage(all, all.at(-1)!), /^nvidia\/cuda:12\.[0-9.]+-cudnn-runtime-/, "GPU=1: CUDA 12 with cuDNN");
  t.match(baseImage(all, stages(parseDockerfile(text), {}).stages.at(-1)!), /^node:20\.\d+\.\d+-bookworm-slim$/, "GPU=0: Node 20's slim image, pinned to a release");
});

t.test("every file the build copies from the context passes deploy/Dockerfile.dockerignore", async (t) => {
  const ignore = readFileSync(path.join(ROOT, "deploy/Dockerfile.dockerignore"), "utf8").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  t.equal(ignore[0], "**", "everything is excluded first");
  const allowed = ignore.filter((l) => l.startsWith("!")).map((l) => l.slice(1));
  const copied = parseDockerfile(text)
    .filter((i) => i.cmd === "COPY" && !/--from=/.test(i.args))
    .flatMap((i) => i.args.split(/\s+/).slice(0, -1));
  t.ok(copied.length >= 6, `${copied.length} paths copied from the context`);
  for (const src of copied) {
    const clean = src.replace(/^\.\//, "").replace(/\/$/, "");
    t.ok(allowed.some((a) => a === clean || a === `${clean}/**`), `${clean} is let through`);
  }
  t.ok(ignore.includes("**/.env*") && ignore.includes("**/.data"), ".env files and data dirs never reach the builder");
});

t.test("each Dockerfile rule fails on a Dockerfile that breaks it", async (t) => {
  const cases: [string, string, RegExp][] = [
    ["an unpinned base", text.replace("ARG NODE_IMAGE=node:20.20.2-bookworm-slim", "ARG NODE_IMAGE=node:latest"), /FROM node:latest is not pinned/],
    ["a floating major", text.replace("ARG NODE_IMAGE=node:20.20.2-bookworm-slim", "ARG NODE_IMAGE=node:20-bookworm-slim"), /FROM node:20-bookworm-slim is not pinned/],
    ["root", text.replace("USER 1000:1000", "USER root"), /runs as root/],
    ["a named user", text.replace("USER 1000:1000", "USER node"), /USER node: Kubernetes/],
    ["no user", text.replace("USER 1000:1000", ""), /sets no USER/],
    ["no health check", text.replace(/^HEALTHCHECK .*$/m, ""), /no HEALTHCHECK/],
    ["a secret", text.replace("ENV NODE_ENV=production", "ENV JETSHARD_NATS_PASSWORD=hunter2 NODE_ENV=production"), /JETSHARD_NATS_PASSWORD would put a secret/],
    ["sources at run time", text.replace("COPY deploy/healthcheck.mjs ./healthcheck.mjs", "COPY services ./services"), /copies sources/],
    ["dev dependencies at run time", text.replace("COPY --from=deps /app/node_modules", "COPY --from=build /src/node_modules"), /from the build stage|npm ci --omit=dev/],
    ["tsx at run time", text.replace('ENTRYPOINT ["node", "/app/dist/bin/jetshard.js"]', 'ENTRYPOINT ["node", "--import", "tsx", "/app/services/cli/main.ts"]'), /does not run the compiled CLI/],
    ["no CUDA provider", text.replace("ONNXRUNTIME_NODE_INSTALL=cuda12", "ONNXRUNTIME_NODE_INSTALL=skip"), /CUDA 12 provider/],
  ];
  for (const [what, mutated, expected] of cases) {
    t.not(mutated, text, `${what}: the mutation applies`);
    t.match(dockerfileProblems(mutated).join("\n"), expected, what);
  }
  t.match(dockerfileProblems(text.replace("FROM ${CUDA_IMAGE} AS runtime-1", "FROM ${NODE_IMAGE} AS runtime-1"), { GPU: "1" }).join("\n"), /GPU=1 builds on node:/, "a GPU build without CUDA");
});

function runHealthcheck(env: Record<string, string>): Promise<number | null> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [path.join(ROOT, "deploy/healthcheck.mjs")], { env: { PATH: process.env.PATH ?? "", ...env }, stdio: "ignore" });
    p.once("exit", (code) => resolve(code));
  });
}

t.test("the image's health check passes on a live ops listener or gateway and fails when neither answers", async (t) => {
  const live = new Set(["/health/live", "/v2/health/live"]);
  const srv = http.createServer((req, res) => {
    res.statusCode = live.has(req.url ?? "") ? 200 : 404;
    res.end();
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  t.teardown(() => new Promise<void>((r) => srv.close(() => r())));
  const port = String((srv.address() as AddressInfo).port);
  // a port nothing listens on: bind one, note it, close it
  const closed = await new Promise<string>((r) => {
    const s = http.createServer().listen(0, "127.0.0.1", () => {
      const p = String((s.address() as AddressInfo).port);
      s.close(() => r(p));
    });
  });
  t.equal(await runHealthcheck({ JETSHARD_OPS_PORT: port, JETSHARD_PORT: closed }), 0, "a worker's or controller's ops listener");
  t.equal(await runHealthcheck({ JETSHARD_OPS_PORT: closed, JETSHARD_PORT: port }), 0, "a gateway");
  t.equal(await runHealthcheck({ JETSHARD_OPS_PORT: closed, JETSHARD_PORT: closed }), 1, "nothing live");
});
