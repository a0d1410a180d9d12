/**
 * The Kubernetes manifests under deploy/k8s, checked as `kubectl apply -k` would see them (every root rendered with
 * test/helpers/kustomize.ts) and against jetshard itself: API schemas (kubernetes-models, @kubernetes-models/keda),
 * every JETSHARD_* variable a known setting with a value loadConfig accepts, ports and probes on what the processes
 * listen on, KEDA triggers on the scaler's documented fields and on the consumers jetshard really creates, pinned
 * images, non-root pods. Each rule is proven to bite by a mutated copy at the end.
 */
import t from "tap";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { parse, parseAllDocuments } from "yaml";
import { ConfigMap, Namespace, Secret, Service } from "kubernetes-models/v1";
import { Deployment, StatefulSet } from "kubernetes-models/apps/v1";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2";
import { ScaledObject, TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1";
import { ENV_NAMES, loadConfig } from "#shared/config.js";
import { STREAMS, consumerName, highConsumerName } from "#shared/subjects.js";
import { requiredScopes } from "../../services/gateway/auth.js";
import { NATS_JETSTREAM_METADATA, modelPool, parsePoolArgs, poolName, poolYaml } from "../../deploy/k8s/keda/model-pool.js";
import { kustomize, readYamlDocs, applyJson6902, type K8sObject } from "../helpers/kustomize.js";

const ROOT = path.resolve(import.meta.dirname, "../..");
const K8S = path.join(ROOT, "deploy/k8s");
/** What `kubectl apply -k` is pointed at. */
const ROOTS = ["base", ...readdirSync(path.join(K8S, "overlays")).map((d) => `overlays/${d}`)];
const NAMESPACE = "jetshard";
const IMAGE_USER = 1000; // the image's `node` user (deploy/Dockerfile)

/**
 * The metadata fields of KEDA's nats-jetstream scaler, as documented (keda.sh/docs/2.x/scalers/nats-jetstream/,
 * the same list from 2.9 to the latest docs): natsServerMonitoringEndpoint, account, stream, consumer,
 * lagThreshold, activationLagThreshold (optional, default 0), useHttps (optional, default false).
 */
const KEDA_NATS_FIELDS = new Set(["natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold", "activationLagThreshold", "useHttps"]);
const KEDA_NATS_REQUIRED = ["natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold"];
/** KEDA's cpu scaler (keda.sh/docs/2.x/scalers/cpu/): trigger.metricType, and metadata type (deprecated), value, containerName. */
const KEDA_CPU_FIELDS = new Set(["type", "value", "containerName"]);

type Model = { validate(): void };
const MODELS: Record<string, new (data: any) => Model> = {
  "v1/Namespace": Namespace,
  "v1/ConfigMap": ConfigMap,
  "v1/Secret": Secret,
  "v1/Service": Service,
  "apps/v1/Deployment": Deployment,
  "apps/v1/StatefulSet": StatefulSet,
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget,
  "autoscaling/v2/HorizontalPodAutoscaler": HorizontalPodAutoscaler,
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "keda.sh/v1alpha1/TriggerAuthentication": TriggerAuthentication,
};

/** Problems of one object against the API schema of its kind. */
function schemaProblems(o: any, where: string): string[] {
  const M = MODELS[`${o?.apiVersion}/${o?.kind}`];
  if (!M) return [`${where}: ${o?.apiVersion}/${o?.kind} is not a kind these tests know a schema for`];
  try {
    new M(o).validate();
    return [];
  } catch (err) {
    return [`${where}: schema: ${(err as Error).message}`];
  }
}

const id = (o: K8sObject) => `${o.kind}/${o.metadata.name}`;
const WORKLOADS = new Set(["Deployment", "StatefulSet"]);

/** A container's environment as a process would see it: ConfigMaps via envFrom, then env (secrets as placeholders). */
function containerEnv(c: any, objects: K8sObject[], where: string, problems: string[]): { env: Record<string, string>; secrets: Record<string, { name: string; key: string }> } {
  const env: Record<string, string> = {};
  const secrets: Record<string, { name: string; key: string }> = {};
  const configMap = (name: string) => objects.find((o) => o.kind === "ConfigMap" && o.metadata.name === name);
  for (const src of c.envFrom ?? []) {
    if (src.configMapRef) {
      const cm = configMap(src.configMapRef.name);
      if (!cm) problems.push(`${where}: envFrom ConfigMap ${src.configMapRef.name} is not in the manifests`);
      else Object.assign(env, cm.data ?? {});
    } else problems.push(`${where}: envFrom other than configMapRef`);
  }
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env[e.name] = String(e.value);
    else if (e.valueFrom?.secretKeyRef) {
      secrets[e.name] = e.valueFrom.secretKeyRef;
      env[e.name] = "pSecretFromKubernetes";
    } else if (e.valueFrom?.configMapKeyRef) {
      const v = configMap(e.valueFrom.configMapKeyRef.name)?.data?.[e.valueFrom.configMapKeyRef.key];
      if (v === undefined) problems.push(`${where}: ${e.name} refers to a missing ConfigMap key`);
      else env[e.name] = v;
    } else env[e.name] = "from-the-downward-api";
  }
  return { env, secrets };
}

const portOf = (c: any, p: string | number) => (typeof p === "number" ? p : (c.ports ?? []).find((x: any) => x.name === p)?.containerPort);
const isLoopback = (h: string) => h === "localhost" || h === "::1" || h.startsWith("127.");

/** Every rule the manifests of one rendered root must meet; [] when all hold. */
function manifestProblems(objects: K8sObject[]): string[] {
  const problems: string[] = [];
  const push = (where: string, msg: string) => problems.push(`${where}: ${msg}`);
  for (const o of objects) problems.push(...schemaProblems(o, id(o)));
  for (const o of objects) {
    if (o.kind !== "Namespace" && o.metadata.namespace !== NAMESPACE) push(id(o), `namespace ${o.metadata.namespace} (expected ${NAMESPACE}: KEDA's endpoint and the NATS release live there)`);
  }
  for (const cm of objects.filter((o) => o.kind === "ConfigMap" && o.metadata.name === "jetshard")) {
    for (const k of Object.keys(cm.data ?? {})) if (!ENV_NAMES.includes(k)) push(id(cm), `${k} is not a jetshard setting (shared/config.ts ENV_NAMES)`);
  }

  const workloads = objects.filter((o) => WORKLOADS.has(o.kind));
  for (const w of workloads) {
    const pod = w.spec?.template?.spec ?? {};
    const podLabels = w.spec?.template?.metadata?.labels ?? {};
    const annotations = w.spec?.template?.metadata?.annotations ?? {};
    const psc = pod.securityContext ?? {};
    if (psc.runAsNonRoot !== true) push(id(w), "pod securityContext.runAsNonRoot must be true");
    if (psc.runAsUser !== IMAGE_USER) push(id(w), `pod securityContext.runAsUser must be ${IMAGE_USER} (the image's node user)`);
    if (psc.seccompProfile?.type !== "RuntimeDefault") push(id(w), "pod securityContext.seccompProfile.type must be RuntimeDefault");
    if (!objects.some((p) => p.kind === "PodDisruptionBudget" && Object.entries(p.spec?.selector?.matchLabels ?? {}).every(([k, v]) => podLabels[k] === v) && Object.keys(p.spec?.selector?.matchLabels ?? {}).length > 0)) {
      push(id(w), "no PodDisruptionBudget selects its pods");
    }
    const autoscalers = objects.filter((a) => (a.kind === "HorizontalPodAutoscaler" || a.kind === "ScaledObject") && a.spec?.scaleTargetRef?.name === w.metadata.name);
    if (autoscalers.length > 1) push(id(w), `scaled by ${autoscalers.length} autoscalers (${autoscalers.map(id).join(", ")})`);
    if (autoscalers.length === 1 && w.spec.replicas !== undefined) push(id(w), "has spec.replicas while an autoscaler owns the count (each apply would reset it)");

    const volumes = new Map<string, any>((pod.volumes ?? []).map((v: any) => [v.name, v]));
    for (const c of pod.containers ?? []) {
      const where = `${id(w)} container ${c.name}`;
      // images: a registry path with a version tag (or a digest), never latest
      const img = /^([a-z0-9.-]+(?::[0-9]+)?\/)?[a-z0-9._/-]+(?::([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(@sha256:[0-9a-f]{64})?$/.exec(c.image ?? "");
      if (!img || (!img[3] && !/^v?\d+\.\d+\.\d+/.test(img[2] ?? ""))) push(where, `image ${c.image} is not pinned to a version tag or digest`);
      const sc = c.securityContext ?? {};
      if (sc.runAsNonRoot === false || (sc.runAsUser !== undefined && sc.runAsUser === 0)) push(where, "runs as root");
      if (sc.allowPrivilegeEscalation !== false) push(where, "securityContext.allowPrivilegeEscalation must be false");
      if (sc.privileged) push(where, "privileged");
      if (sc.readOnlyRootFilesystem !== true) push(where, "securityContext.readOnlyRootFilesystem must be true");
      if (!(sc.capabilities?.drop ?? []).includes("ALL") || (sc.capabilities?.add ?? []).length > 0) push(where, "must drop ALL capabilities and add none");
      for (const r of ["requests", "limits"]) for (const k of ["cpu", "memory"]) if (c.resources?.[r]?.[k] === undefined) push(where, `resources.${r}.${k} missing`);

      const { env, secrets } = containerEnv(c, objects, where, problems);
      for (const k of Object.keys(env)) if (k.startsWith("JETSHARD_") && !ENV_NAMES.includes(k)) push(where, `${k} is not a jetshard setting (shared/config.ts ENV_NAMES)`);
      let config: ReturnType<typeof loadConfig>;
      try {
        config = loadConfig(env);
      } catch (err) {
        push(where, `its environment does not load: ${(err as Error).message}`);
        continue;
      }
      const role = c.args?.[0];
      if (!["gateway", "worker", "controller"].includes(role)) {
        push(where, `args ${JSON.stringify(c.args)} do not start a jetshard process`);
        continue;
      }
      // NATS: its role's user, that user's password from the shared Secret
      if (env.JETSHARD_NATS_USER !== role) push(where, `JETSHARD_NATS_USER is ${env.JETSHARD_NATS_USER}, expected ${role}`);
      const pw = secrets.JETSHARD_NATS_PASSWORD;
      if (!pw || pw.name !== "jetshard-nats" || pw.key !== role) push(where, `JETSHARD_NATS_PASSWORD must come from secretKeyRef jetshard-nats/${role}`);
      if (config.replicas !== 3) push(where, `JETSHARD_REPLICAS is ${config.replicas}, expected 3 (the NATS cluster's size)`);

      // listeners, probes and scraping
      const listens = role === "gateway" ? { port: config.port, host: config.host, paths: ["/v2/health/live", "/v2/health/ready"] } : { port: config.ops.port, host: config.ops.host, paths: ["/health/live", "/health/ready"] };
      if (role !== "gateway" && !config.ops.http) push(where, "JETSHARD_OPS_HTTP is off, so its probes have nothing to reach");
      if (isLoopback(listens.host)) push(where, `listens on ${listens.host}, which the kubelet's probes cannot reach`);
      if (role === "gateway" && config.auth !== "keys") push(where, "the gateway must run with JETSHARD_AUTH=keys");
      const ports = (c.ports ?? []).map((p: any) => p.containerPort);
      if (!ports.includes(listens.port)) push(where, `declares ports ${ports.join(",")} but listens on ${listens.port}`);
      for (const kind of ["livenessProbe", "readinessProbe", "startupProbe"]) {
        const probe = c[kind];
        if (!probe) {
          if (kind !== "startupProbe") push(where, `${kind} missing`);
          continue;
        }
        const get = probe.httpGet;
        if (!get) {
          push(where, `${kind} is not an httpGet on a health route`);
          continue;
        }
        if (portOf(c, get.port) !== listens.port) push(where, `${kind} port ${get.port} is not ${listens.port}`);
        if (!listens.paths.includes(get.path)) push(where, `${kind} path ${get.path} is not one of ${listens.paths.join(", ")}`);
        if (kind === "readinessProbe" && !String(get.path).endsWith("/ready")) push(where, "readinessProbe must use the ready route");
        if (kind === "livenessProbe" && !String(get.path).endsWith("/live")) push(where, "livenessProbe must use the live route");
        if (role === "gateway" && requiredScopes("GET", get.path) !== null) push(where, `${kind} path ${get.path} needs an API key`);
      }
      if (annotations["prometheus.io/scrape"] === "true") {
        if (role === "gateway") push(where, "scrape annotations on the gateway, whose /metrics needs an API key");
        if (Number(annotations["prometheus.io/port"]) !== config.ops.port || annotations["prometheus.io/path"] !== "/metrics") push(where, "prometheus.io annotations do not point at the ops listener's /metrics");
      } else if (role !== "gateway") push(where, "no prometheus.io/scrape annotation for its ops listener");

      // a read-only root: every place it writes is a writable volume
      for (const dir of new Set([config.dataDir, config.cacheDir, "/tmp"])) {
        const m = (c.volumeMounts ?? []).find((vm: any) => dir === vm.mountPath || dir.startsWith(vm.mountPath.replace(/\/$/, "") + "/"));
        const v = m && volumes.get(m.name);
        if (!m || m.readOnly || !v || !(v.emptyDir || v.persistentVolumeClaim)) push(where, `${dir} is not on a writable volume (the root filesystem is read-only)`);
      }
      // GPUs: the GPU image and the CUDA device together with a GPU
      const gpus = Number(c.resources?.limits?.["nvidia.com/gpu"] ?? 0);
      const gpuImage = /-gpu(@|$)/.test(c.image);
      if (gpus > 0 && (config.device !== "cuda" || !gpuImage)) push(where, "a GPU pod needs JETSHARD_DEVICE=cuda and the -gpu image");
      if (gpus === 0 && (config.device === "cuda" || gpuImage)) push(where, "CUDA or the GPU image without an nvidia.com/gpu limit");
    }
  }

  for (const s of objects.filter((o) => o.kind === "Service")) {
    const pods = workloads.filter((w) => Object.entries(s.spec?.selector ?? {}).every(([k, v]) => w.spec.template.metadata?.labels?.[k] === v));
    if (pods.length === 0) push(id(s), "selects no pods");
    for (const p of s.spec?.ports ?? []) {
      for (const w of pods) {
        if (!w.spec.template.spec.containers.some((c: any) => portOf(c, p.targetPort) !== undefined)) push(id(s), `targetPort ${p.targetPort} is no container port of ${id(w)}`);
      }
    }
  }

  for (const a of objects.filter((o) => o.kind === "HorizontalPodAutoscaler" || o.kind === "ScaledObject")) {
    const ref = a.spec?.scaleTargetRef ?? {};
    const target = workloads.find((w) => w.metadata.name === ref.name && w.kind === (ref.kind ?? "Deployment"));
    if (!target) {
      push(id(a), `scales ${ref.kind ?? "Deployment"}/${ref.name}, which is not in the manifests`);
      continue;
    }
    if (a.kind !== "ScaledObject") continue;
    const container = target.spec.template.spec.containers[0];
    const serve = (container.env ?? []).find((e: any) => e.name === "JETSHARD_SERVE")?.value ?? "";
    const model = a.metadata.annotations?.["jetshard/model"];
    const shards = Number(a.metadata.annotations?.["jetshard/shards"]);
    if (!model || serve !== model) push(id(a), `annotated model ${model} but its workers serve "${serve}"`);
    if (!Number.isInteger(shards) || shards < 1) push(id(a), "needs the annotation jetshard/shards (the model's stage count)");
    const expected = new Set([...Array.from({ length: shards }, (_, i) => consumerName(model, i)), highConsumerName(model)]);
    const seen = new Set<string>();
    let activation = false;
    for (const [i, tr] of (a.spec.triggers ?? []).entries()) {
      const where = `${id(a)} trigger ${i} (${tr.type})`;
      const md = tr.metadata ?? {};
      if (tr.type === "nats-jetstream") {
        for (const k of Object.keys(md)) if (!KEDA_NATS_FIELDS.has(k)) push(where, `${k} is not a documented field of the nats-jetstream scaler`);
        for (const k of KEDA_NATS_REQUIRED) if (md[k] === undefined) push(where, `${k} missing`);
        if (md.stream !== STREAMS.jobs) push(where, `stream ${md.stream} is not ${STREAMS.jobs}`);
        if (!expected.has(md.consumer)) push(where, `consumer ${md.consumer} is not one jetshard creates for ${model} (${[...expected].join(", ")})`);
        seen.add(md.consumer);
        if (md.account !== "$G") push(where, `account ${md.account}: nats-auth.conf's users are in the global account $G`);
        if (md.natsServerMonitoringEndpoint !== `nats-headless.${a.metadata.namespace}.svc.cluster.local:8222`) {
          push(where, `natsServerMonitoringEndpoint ${md.natsServerMonitoringEndpoint} is not the NATS release's headless service in ${a.metadata.namespace}, port 8222`);
        }
        if (!/^[1-9][0-9]*$/.test(md.lagThreshold ?? "")) push(where, "lagThreshold must be a positive integer string");
        if (md.activationLagThreshold !== undefined) {
          activation = true;
          if (!/^[0-9]+$/.test(md.activationLagThreshold)) push(where, "activationLagThreshold must be a non-negative integer string");
        }
        if (md.useHttps !== undefined && !["true", "false"].includes(md.useHttps)) push(where, "useHttps must be \"true\" or \"false\"");
      } else if (tr.type === "cpu") {
        for (const k of Object.keys(md)) if (!KEDA_CPU_FIELDS.has(k)) push(where, `${k} is not a documented field of the cpu scaler`);
        if (!["Utilization", "AverageValue"].includes(tr.metricType)) push(where, "metricType must be Utilization or AverageValue");
        if (!/^[1-9][0-9]*$/.test(md.value ?? "")) push(where, "value must be a positive integer string");
      } else push(where, `trigger type ${tr.type} is not used by jetshard`);
    }
    for (const c of expected) if (!seen.has(c)) push(id(a), `no trigger on consumer ${c}`);
    if (a.spec.minReplicaCount === 0 && !activation) push(id(a), "scales to zero without an activationLagThreshold");
  }
  return problems;
}

/** JSON 6902 patch files named by some kustomization (they are operations, not objects). */
function patchFiles(): Set<string> {
  const out = new Set<string>();
  for (const f of yamlFiles(K8S).filter((f) => path.basename(f) === "kustomization.yaml")) {
    for (const p of parse(readFileSync(f, "utf8")).patches ?? []) out.add(path.join(path.dirname(f), p.path));
  }
  return out;
}

function yamlFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return yamlFiles(p);
    return /\.ya?ml$/.test(e.name) ? [p] : [];
  });
}

const rendered = new Map(ROOTS.map((r) => [r, kustomize(path.join(K8S, r))]));

t.test("every object in every manifest file validates against the Kubernetes and KEDA API schemas", async (t) => {
  const patches = patchFiles();
  const files = yamlFiles(K8S).filter((f) => path.basename(f) !== "kustomization.yaml" && path.basename(f) !== "nats-values.yaml" && !patches.has(f));
  t.ok(files.length >= 8, `${files.length} manifest files`);
  const renderedObjects = [...rendered.values()].flat();
  for (const f of files) {
    const docs = readYamlDocs(f);
    t.ok(docs.length > 0, `${path.relative(ROOT, f)} has objects`);
    for (const d of docs) {
      t.same(schemaProblems(d, `${path.relative(ROOT, f)} ${d.kind}/${d.metadata?.name}`), []);
      // nothing written and forgotten: every object is part of what some root applies
      t.ok(
        renderedObjects.some((o) => o.kind === d.kind && o.metadata.name === d.metadata?.name),
        `${d.kind}/${d.metadata?.name} of ${path.relative(ROOT, f)} is applied by some root`,
      );
    }
  }
});

for (const r of ROOTS) {
  t.test(`kubectl apply -k deploy/k8s/${r} renders objects that meet every rule`, async (t) => {
    const objects = rendered.get(r)!;
    t.same(manifestProblems(objects), []);
    const kinds = new Set(objects.map((o) => o.kind));
    for (const k of ["Namespace", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget"]) t.ok(kinds.has(k), `has a ${k}`);
    t.equal(objects.find((o) => o.metadata.name === "jetshard-controller")?.spec.replicas, 2, "two controllers (leases keep them apart)");
  });
}

t.test("the overlays add what they are for", async (t) => {
  const hpa = rendered.get("overlays/cpu-hpa")!.filter((o) => o.kind === "HorizontalPodAutoscaler");
  t.same(hpa.map((h) => h.spec.scaleTargetRef.name), ["jetshard-worker"], "cpu-hpa: an HPA on the worker pool");
  t.equal(hpa[0]!.spec.metrics[0].resource.name, "cpu");
  const scaled = rendered.get("overlays/keda")!.filter((o) => o.kind === "ScaledObject");
  t.same(scaled.map((s) => s.metadata.annotations["jetshard/model"]).sort(), ["demo-cnn", "demo-mlp"], "keda: one ScaledObject per demo model");
  t.ok(scaled.every((s) => s.spec.minReplicaCount === 0), "pools scale to zero");
  const gpu = rendered.get("overlays/gpu")!.filter((o) => o.kind === "Deployment" && o.spec.template.spec.containers[0].resources.limits["nvidia.com/gpu"]);
  t.equal(gpu.length, 1, "gpu: a pool with one GPU per pod");
});

t.test("every keda pool file is what model-pool.ts generates from the command in its header", async (t) => {
  const dir = path.join(K8S, "keda");
  const listed = parse(readFileSync(path.join(dir, "kustomization.yaml"), "utf8")).resources as string[];
  const files = readdirSync(dir).filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml");
  t.same([...listed].sort(), [...files].sort(), "every pool file is listed in keda/kustomization.yaml");
  for (const f of files) {
    const text = readFileSync(path.join(dir, f), "utf8");
    const cmd = /^# npx tsx deploy\/k8s\/keda\/model-pool\.ts (.+)$/m.exec(text);
    t.ok(cmd, `${f} names its command`);
    if (!cmd) continue;
    const argv = cmd[1]!.trim().split(/\s+/);
    t.same(readYamlDocs(path.join(dir, f)), readYamlDocsFromText(poolYaml(argv)), `${f} is up to date (regenerate it with its command)`);
    t.equal(f, `${parsePoolArgs(argv).model}.yaml`, "named after its model");
  }
});

function readYamlDocsFromText(text: string): any[] {
  return parseAllDocuments(text)
    .map((d) => d.toJS())
    .filter((d) => d !== null && d !== undefined);
}

t.test("model-pool.ts derives pools from the base worker, with the model's consumers and the documented scaler fields", async (t) => {
  t.same([...NATS_JETSTREAM_METADATA].sort(), [...KEDA_NATS_FIELDS].sort(), "the generator writes the documented fields");
  const [dep, , so] = modelPool({ model: "Big_Model", shards: 3, gpu: true, min: 1, max: 4 });
  t.equal(dep!.metadata.name, "jetshard-worker-big-model", "a DNS-1123 name");
  t.equal(dep!.spec.template.spec.containers[0].image, "ghcr.io/jetshard/jetshard:0.1.0-gpu", "--gpu: the GPU pool's template");
  t.same(
    so!.spec.triggers.filter((tr: any) => tr.type === "nats-jetstream").map((tr: any) => tr.metadata.consumer),
    ["infer_Big_Model_0", "infer_Big_Model_1", "infer_Big_Model_2", "infer_Big_Model_high"],
  );
  const objects = [...rendered.get("base")!, ...modelPool({ model: "Big_Model", shards: 3, gpu: true, min: 1, max: 4 }).map((o) => ({ ...o, metadata: { ...o.metadata, namespace: NAMESPACE } }))] as K8sObject[];
  t.same(manifestProblems(objects), [], "a generated GPU pool meets every rule");
  t.throws(() => poolName("bad.name"), /not a valid model name/);
  t.throws(() => poolName("m".repeat(60)), /longer than 63/);
  t.throws(() => modelPool({ model: "m", min: 5, max: 2 }), /min must not exceed max/);
  t.throws(() => parsePoolArgs(["m", "--shards", "two"]), /--shards: "two"/);
});

t.test("the NATS chart values match nats-auth.conf, the manifests and KEDA's endpoint", async (t) => {
  const values = parse(readFileSync(path.join(K8S, "nats-values.yaml"), "utf8"));
  const cm = rendered.get("base")!.find((o) => o.kind === "ConfigMap" && o.metadata.name === "jetshard")!;
  t.equal(values.config.cluster.enabled, true, "clustered");
  t.ok(values.config.cluster.replicas >= 3, "3 nodes");
  t.ok(values.config.cluster.replicas >= Number(cm.data.JETSHARD_REPLICAS), "enough nodes for JETSHARD_REPLICAS");
  t.equal(values.config.jetstream.enabled, true, "JetStream");
  t.equal(values.config.jetstream.fileStore.enabled, true, "file storage");
  t.equal(values.config.jetstream.fileStore.pvc.enabled, true, "on a persistent volume per node");
  t.equal(values.config.monitor.enabled, true, "the monitoring port KEDA reads");
  t.equal(values.config.monitor.port, 8222);
  t.ok(Object.entries(values.config.merge).some(([k, v]) => k.endsWith("$include") && v === "nats-auth.conf"), "includes nats-auth.conf");
  // the cluster takes the messages the local server (nats.conf, what the suite runs against) takes
  const local = /^max_payload:\s*(\S+)\s*$/m.exec(readFileSync(path.join(ROOT, "nats.conf"), "utf8"))?.[1];
  t.ok(local, "nats.conf sets max_payload");
  t.equal(values.config.merge.max_payload, `<< ${local} >>`, "max_payload as in nats.conf");
  t.match(values.container.image.tag, /^\d+\.\d+\.\d+-/, "pinned NATS image");
  const auth = readFileSync(path.join(ROOT, "nats-auth.conf"), "utf8");
  const needed = [...new Set([...auth.matchAll(/password:\s*\$(JETSHARD_NATS_PASS_[A-Z]+)/g)].map((m) => m[1]!))].sort();
  t.ok(needed.length >= 5, `nats-auth.conf reads ${needed.join(", ")}`);
  t.same(Object.keys(values.container.env).sort(), needed, "every password nats-auth.conf reads, and nothing else");
  for (const [k, v] of Object.entries<any>(values.container.env)) {
    t.same(v.valueFrom.secretKeyRef, { name: "jetshard-nats", key: k.slice("JETSHARD_NATS_PASS_".length).toLowerCase() }, `${k} from the Secret`);
  }
});

t.test("each rule fails on a manifest that breaks it", async (t) => {
  const base = rendered.get("base")!;
  const keda = rendered.get("overlays/keda")!;
  t.same(manifestProblems(base), [], "the unmodified base passes");
  /** A copy with the Deployment `name` (or the ConfigMap "jetshard") changed by JSON 6902 `ops`. */
  const broken = (objects: K8sObject[], name: string, ops: any[]) =>
    objects.map((o) => (o.metadata.name === name && o.kind === (name === "jetshard" ? "ConfigMap" : "Deployment") ? applyJson6902(o, ops) : o));
  const brokenSo = (name: string, ops: any[]) => keda.map((o) => (o.kind === "ScaledObject" && o.metadata.name === name ? applyJson6902(o, ops) : o));
  const c = "/spec/template/spec/containers/0";
  const cases: [string, K8sObject[], RegExp][] = [
    ["a port as a string", broken(base, "jetshard-gateway", [{ op: "replace", path: `${c}/ports/0/containerPort`, value: "8080" }]), /schema: .*containerPort must be integer/],
    ["an unknown setting", broken(base, "jetshard-worker", [{ op: "add", path: `${c}/env/-`, value: { name: "JETSHARD_WORKER_THREADS", value: "4" } }]), /JETSHARD_WORKER_THREADS is not a jetshard setting/],
    ["a value config refuses", broken(base, "jetshard", [{ op: "replace", path: "/data/JETSHARD_REPLICAS", value: "9" }]), /does not load: JETSHARD_REPLICAS/],
    ["an unpinned image", broken(base, "jetshard-controller", [{ op: "replace", path: `${c}/image`, value: "ghcr.io/jetshard/jetshard:latest" }]), /not pinned/],
    ["a root pod", broken(base, "jetshard-worker", [{ op: "replace", path: "/spec/template/spec/securityContext/runAsNonRoot", value: false }]), /runAsNonRoot must be true/],
    ["a writable root", broken(base, "jetshard-gateway", [{ op: "remove", path: `${c}/securityContext/readOnlyRootFilesystem` }]), /readOnlyRootFilesystem must be true/],
    ["no readiness probe", broken(base, "jetshard-controller", [{ op: "remove", path: `${c}/readinessProbe` }]), /readinessProbe missing/],
    ["a probe on another port", broken(base, "jetshard-worker", [{ op: "replace", path: `${c}/livenessProbe/httpGet/port`, value: 9465 }]), /livenessProbe port 9465 is not 9464/],
    ["a probe on a guarded route", broken(base, "jetshard-gateway", [{ op: "replace", path: `${c}/readinessProbe/httpGet/path`, value: "/v2/models" }]), /readinessProbe path \/v2\/models/],
    ["a listener on loopback", broken(base, "jetshard", [{ op: "replace", path: "/data/JETSHARD_OPS_HOST", value: "127.0.0.1" }]), /listens on 127\.0\.0\.1/],
    ["the data dir on the read-only root", broken(base, "jetshard-worker", [{ op: "remove", path: `${c}/volumeMounts/0` }]), /\/data is not on a writable volume/],
    ["another role's password", broken(base, "jetshard-worker", [{ op: "replace", path: `${c}/env/1/valueFrom/secretKeyRef/key`, value: "admin" }]), /secretKeyRef jetshard-nats\/worker/],
    ["a misspelt KEDA field", brokenSo("jetshard-worker-demo-mlp", [{ op: "add", path: "/spec/triggers/0/metadata/lagTreshold", value: "10" }]), /lagTreshold is not a documented field/],
    ["a consumer jetshard never creates", brokenSo("jetshard-worker-demo-cnn", [{ op: "replace", path: "/spec/triggers/1/metadata/consumer", value: "infer_demo-cnn_2" }]), /consumer infer_demo-cnn_2 is not one jetshard creates[\s\S]*no trigger on consumer infer_demo-cnn_1/],
    ["the wrong stream", brokenSo("jetshard-worker-demo-mlp", [{ op: "replace", path: "/spec/triggers/0/metadata/stream", value: "jobs" }]), /stream jobs is not JOBS/],
    ["scale to zero without activation", brokenSo("jetshard-worker-demo-mlp", [0, 1].map((i) => ({ op: "remove", path: `/spec/triggers/${i}/metadata/activationLagThreshold` }))), /without an activationLagThreshold/],
    ["two autoscalers on one pool", [...keda, { apiVersion: "autoscaling/v2", kind: "HorizontalPodAutoscaler", metadata: { name: "x", namespace: NAMESPACE }, spec: { scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name: "jetshard-worker-demo-mlp" }, maxReplicas: 3 } } as K8sObject], /scaled by 2 autoscalers/],
    ["a GPU without CUDA", broken(rendered.get("overlays/gpu")!, "jetshard-worker-gpu", [{ op: "remove", path: `${c}/env/2` }]), /a GPU pod needs JETSHARD_DEVICE=cuda/],
  ];
  for (const [what, objects, expected] of cases) {
    t.match(manifestProblems(objects).join("\n"), expected, what);
  }
});
