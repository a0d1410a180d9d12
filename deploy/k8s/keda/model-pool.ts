/**
 * Generates a model's worker pool for Kubernetes with KEDA: a Deployment of workers serving only that model
 * (JETSHARD_SERVE), its PodDisruptionBudget, and a KEDA ScaledObject that scales it on the model's queue: one
 * `nats-jetstream` trigger per durable consumer of the model on the JOBS stream (each shard's, and shard 0's
 * high-priority one), plus a `cpu` trigger for sync requests that workers take straight from core NATS and that
 * never wait in a consumer.
 *
 * The pool's pod template is the base worker's (../base/worker.yaml, or ../components/gpu-worker/gpu-worker.yaml
 * with --gpu), so pools keep its probes, resources and security settings. Usage, from the repository root:
 *
 *   npx tsx deploy/k8s/keda/model-pool.ts <model> [--shards N] [--gpu] [--min 0] [--max 10] [--lag 10]
 *       [--activation 2] [--cpu 70] [--namespace jetshard] > deploy/k8s/keda/<model>.yaml
 *
 * then list the file in deploy/k8s/keda/kustomization.yaml. test/deploy/k8s.test.ts regenerates every pool from
 * the command in its header and fails when the committed file differs.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { parseAllDocuments, stringify } from "yaml";
import { NAME_PATTERN, STREAMS, consumerName, highConsumerName } from "#shared/subjects.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));

/** What a pool is generated from. */
export interface PoolOptions {
  /** The model's name in the repository (what JETSHARD_SERVE and the consumers name). */
  model: string;
  /** Pipeline stages the model is stored as (`?shards=N`); 1 for a whole model. */
  shards: number;
  /** GPU workers (the GPU image, one nvidia.com/gpu each) instead of CPU ones. */
  gpu: boolean;
  /** Replicas when the queue is empty: 0 lets the pool go away (scale to zero). */
  min: number;
  max: number;
  /** Target lag (pending + unacknowledged jobs) per replica, per consumer. */
  lagThreshold: number;
  /** Lag above which a pool at zero starts its first replica. */
  activationLagThreshold: number;
  /** Target CPU utilization (% of the request); 0 leaves the cpu trigger out. */
  cpu: number;
  /** Namespace of jetshard and of the NATS release (named "nats"), for KEDA's monitoring endpoint. */
  namespace: string;
}

export const POOL_DEFAULTS: Omit<PoolOptions, "model"> = {
  shards: 1,
  gpu: false,
  min: 0,
  max: 10,
  lagThreshold: 10,
  activationLagThreshold: 2,
  cpu: 70,
  namespace: "jetshard",
};

/** The metadata fields KEDA's nats-jetstream scaler documents (keda.sh/docs/scalers/nats-jetstream). */
export const NATS_JETSTREAM_METADATA = ["natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold", "activationLagThreshold", "useHttps"] as const;

/** The durable consumers of `model` on JOBS that its jobs wait in: every shard's, and shard 0's high-priority one. */
export function modelConsumers(model: string, shards: number): string[] {
  return [...Array.from({ length: shards }, (_, i) => consumerName(model, i)), highConsumerName(model)];
}

type Obj = Record<string, any>;

function readDocs(file: string): Obj[] {
  return parseAllDocuments(readFileSync(file, "utf8")).map((d) => {
    if (d.errors.length) throw new Error(`${file}: ${d.errors[0]!.message}`);
    return d.toJS() as Obj;
  });
}

/** A Kubernetes object name for the model's pool: lower case, '_' as '-', within a label value's 63 characters. */
export function poolName(model: string): string {
  if (!NAME_PATTERN.test(model)) throw new Error(`model "${model}" is not a valid model name`);
  const name = `jetshard-worker-${model.toLowerCase().replace(/_/g, "-")}`.replace(/-+$/, "");
  if (name.length > 63) throw new Error(`model "${model}": the pool name ${name} is longer than 63 characters`);
  return name;
}

/** The pool's objects: Deployment, PodDisruptionBudget, ScaledObject. Throws on bad options. */
export function modelPool(input: Partial<PoolOptions> & { model: string }): Obj[] {
  const o: PoolOptions = { ...POOL_DEFAULTS, ...input };
  const name = poolName(o.model);
  for (const [k, v] of Object.entries({ shards: o.shards, max: o.max, lagThreshold: o.lagThreshold })) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`${k} must be a positive integer`);
  }
  for (const [k, v] of Object.entries({ min: o.min, activationLagThreshold: o.activationLagThreshold, cpu: o.cpu })) {
    if (!Number.isInteger(v) || v < 0) throw new Error(`${k} must be a non-negative integer`);
  }
  if (o.min > o.max) throw new Error("min must not exceed max");

  const templateFile = o.gpu ? path.join(HERE, "../components/gpu-worker/gpu-worker.yaml") : path.join(HERE, "../base/worker.yaml");
  const template = readDocs(templateFile).find((d) => d.kind === "Deployment");
  if (!template) throw new Error(`${templateFile} has no Deployment`);
  const labels = { app: name, "app.kubernetes.io/part-of": "jetshard", "app.kubernetes.io/component": "worker" };
  const pod = structuredClone(template.spec.template);
  pod.metadata.labels = labels;
  const container = pod.spec.containers[0];
  container.env = [
    ...container.env.filter((e: Obj) => e.name !== "JETSHARD_SERVE" && e.name !== "JETSHARD_NAS"),
    // only this model, and no NAS trials (the base pool runs those)
    { name: "JETSHARD_SERVE", value: o.model },
    { name: "JETSHARD_NAS", value: "0" },
  ];

  const deployment = {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name, labels, annotations: { "jetshard/model": o.model } },
    // no replicas: KEDA owns the count (an `apply` would otherwise reset it)
    spec: { selector: { matchLabels: { app: name } }, template: pod },
  };
  const pdb = {
    apiVersion: "policy/v1",
    kind: "PodDisruptionBudget",
    metadata: { name, labels: { app: name, "app.kubernetes.io/part-of": "jetshard" } },
    spec: { maxUnavailable: 1, selector: { matchLabels: { app: name } } },
  };
  const monitoring = `nats-headless.${o.namespace}.svc.cluster.local:8222`;
  const triggers: Obj[] = modelConsumers(o.model, o.shards).map((consumer) => ({
    type: "nats-jetstream",
    metadata: {
      // KEDA asks this address which node leads the consumer, then that node (<pod>.nats-headless...)
      natsServerMonitoringEndpoint: monitoring,
      // nats-auth.conf's users are in the global account
      account: "$G",
      stream: STREAMS.jobs,
      consumer,
      lagThreshold: String(o.lagThreshold),
      activationLagThreshold: String(o.activationLagThreshold),
      useHttps: "false",
    },
  }));
  if (o.cpu > 0) triggers.push({ type: "cpu", metricType: "Utilization", metadata: { value: String(o.cpu) } });
  const scaledObject = {
    apiVersion: "keda.sh/v1alpha1",
    kind: "ScaledObject",
    metadata: { name, labels: { app: name, "app.kubernetes.io/part-of": "jetshard" }, annotations: { "jetshard/model": o.model, "jetshard/shards": String(o.shards) } },
    spec: {
      scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name },
      minReplicaCount: o.min,
      maxReplicaCount: o.max,
      pollingInterval: 5,
      // how long the queue stays empty before the last replica goes (min 0)
      cooldownPeriod: 300,
      advanced: {
        horizontalPodAutoscalerConfig: {
          behavior: {
            scaleDown: { stabilizationWindowSeconds: 120, policies: [{ type: "Pods", value: 1, periodSeconds: 60 }] },
          },
        },
      },
      triggers,
    },
  };
  return [deployment, pdb, scaledObject];
}

/** The command line that regenerates a pool (written into its file's header). */
export function poolCommand(argv: readonly string[]): string {
  return `npx tsx deploy/k8s/keda/model-pool.ts ${argv.join(" ")}`;
}

/** Parses the generator's arguments. Throws on unknown options or bad numbers. */
export function parsePoolArgs(argv: readonly string[]): Partial<PoolOptions> & { model: string } {
  const { values, positionals } = parseArgs({
    args: [...argv],
    allowPositionals: true,
    options: {
      shards: { type: "string" },
      gpu: { type: "boolean" },
      min: { type: "string" },
      max: { type: "string" },
      lag: { type: "string" },
      activation: { type: "string" },
      cpu: { type: "string" },
      namespace: { type: "string" },
    },
  });
  if (positionals.length !== 1) throw new Error("name exactly one model");
  const num = (flag: string, v: string | undefined) => {
    if (v === undefined) return undefined;
    if (!/^[0-9]+$/.test(v)) throw new Error(`--${flag}: "${v}" is not a non-negative integer`);
    return Number(v);
  };
  const out: Partial<PoolOptions> & { model: string } = { model: positionals[0]! };
  const set = <K extends keyof PoolOptions>(k: K, v: PoolOptions[K] | undefined) => {
    if (v !== undefined) out[k] = v;
  };
  set("shards", num("shards", values.shards));
  set("gpu", values.gpu);
  set("min", num("min", values.min));
  set("max", num("max", values.max));
  set("lagThreshold", num("lag", values.lag));
  set("activationLagThreshold", num("activation", values.activation));
  set("cpu", num("cpu", values.cpu));
  set("namespace", values.namespace);
  return out;
}

/** The YAML file of a pool: a header naming the command, then the objects. */
export function poolYaml(argv: readonly string[]): string {
  const opts = parsePoolArgs(argv);
  const docs = modelPool(opts).map((d) => stringify(d, { lineWidth: 0, aliasDuplicateObjects: false }));
  return (
    `# Worker pool of model "${opts.model}", scaled by KEDA on its queue. Generated by (edit the command, not this file):\n` +
    `# ${poolCommand(argv)}\n` +
    docs.map((d) => `---\n${d}`).join("")
  );
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    process.stdout.write(poolYaml(process.argv.slice(2)));
  } catch (err) {
    process.stderr.write(`model-pool: ${(err as Error).message}\n`);
    process.exit(2);
  }
}
