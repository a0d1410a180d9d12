/**
 * Renders a kustomization the way `kubectl apply -k` does, for the subset of kustomize deploy/k8s uses (no kubectl
 * or kustomize binary is available to the tests): `resources` (YAML files, or folders with a kustomization),
 * `components` (kind Component), `namespace`, and `patches` given as a JSON 6902 file (`path`) with a `target`
 * (kind and name). Anything else in a kustomization.yaml is an error, so a manifest using a feature this renderer
 * does not implement fails the tests instead of being rendered wrong.
 *
 * Order, as kustomize's: a level's resources are accumulated, then each component adds its resources and applies
 * its patches to everything so far, then the level's own namespace and patches apply to all of it.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { parse, parseAllDocuments } from "yaml";

export type K8sObject = Record<string, any> & { apiVersion: string; kind: string; metadata: Record<string, any> & { name: string; namespace?: string } };

const KUSTOMIZATION_KEYS = new Set(["apiVersion", "kind", "namespace", "resources", "components", "patches"]);
/** Kinds that live outside namespaces (the namespace transformer leaves them alone). */
const CLUSTER_SCOPED = new Set(["Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PriorityClass", "StorageClass", "ClusterTriggerAuthentication"]);

/** Every document of a YAML file, as plain objects (empty documents dropped). Throws on a YAML error. */
export function readYamlDocs(file: string): any[] {
  return parseAllDocuments(readFileSync(file, "utf8"))
    .map((d) => {
      if (d.errors.length) throw new Error(`${file}: ${d.errors[0]!.message}`);
      return d.toJS();
    })
    .filter((d) => d !== null && d !== undefined);
}

function kustomizationFile(dir: string): string {
  for (const n of ["kustomization.yaml", "kustomization.yml", "Kustomization"]) {
    const f = path.join(dir, n);
    if (existsSync(f)) return f;
  }
  throw new Error(`${dir} has no kustomization.yaml`);
}

/** RFC 6901 pointer → path segments. */
function pointer(p: string): string[] {
  if (p === "") return [];
  if (!p.startsWith("/")) throw new Error(`JSON pointer "${p}" must start with /`);
  return p.slice(1).split("/").map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
}

/** Applies JSON 6902 operations (add, replace, remove, test) to a copy of `doc`. Throws when a path is missing. */
export function applyJson6902(doc: any, ops: any[], where = "patch"): any {
  const out = structuredClone(doc);
  for (const op of ops) {
    const segs = pointer(String(op.path));
    const last = segs.pop();
    if (last === undefined) throw new Error(`${where}: cannot ${op.op} the whole document`);
    let parent: any = out;
    for (const s of segs) {
      parent = Array.isArray(parent) ? parent[Number(s)] : parent?.[s];
      if (parent === undefined || parent === null) throw new Error(`${where}: path ${op.path} does not exist`);
    }
    const isArr = Array.isArray(parent);
    const idx = isArr ? (last === "-" ? parent.length : Number(last)) : -1;
    if (isArr && (!Number.isInteger(idx) || idx < 0 || idx > parent.length)) throw new Error(`${where}: bad index in ${op.path}`);
    const exists = isArr ? idx < parent.length : Object.prototype.hasOwnProperty.call(parent, last);
    switch (op.op) {
      case "add":
        if (isArr) parent.splice(idx, 0, structuredClone(op.value));
        else parent[last] = structuredClone(op.value);
        break;
      case "replace":
        if (!exists) throw new Error(`${where}: path ${op.path} does not exist`);
        if (isArr) parent[idx] = structuredClone(op.value);
        else parent[last] = structuredClone(op.value);
        break;
      case "remove":
        if (!exists) throw new Error(`${where}: path ${op.path} does not exist`);
        if (isArr) parent.splice(idx, 1);
        else delete parent[last];
        break;
      case "test":
        if (JSON.stringify(isArr ? parent[idx] : parent[last]) !== JSON.stringify(op.value)) throw new Error(`${where}: test of ${op.path} failed`);
        break;
      default:
        throw new Error(`${where}: unsupported operation "${op.op}"`);
    }
  }
  return out;
}

function applyLevel(dir: string, k: any, objects: K8sObject[]): K8sObject[] {
  let out = objects;
  for (const p of k.patches ?? []) {
    const keys = Object.keys(p);
    if (!p.path || !p.target || keys.some((x) => !["path", "target"].includes(x))) throw new Error(`${dir}: each patch needs exactly path and target (JSON 6902)`);
    const ops = parse(readFileSync(path.join(dir, p.path), "utf8"));
    if (!Array.isArray(ops)) throw new Error(`${dir}/${p.path}: only JSON 6902 patches (a list of operations) are supported`);
    const hits = out.filter((o) => (!p.target.kind || o.kind === p.target.kind) && (!p.target.name || o.metadata.name === p.target.name));
    if (hits.length === 0) throw new Error(`${dir}: patch ${p.path} matches no object`);
    out = out.map((o) => (hits.includes(o) ? applyJson6902(o, ops, `${dir}/${p.path}`) : o));
  }
  if (k.namespace) out = out.map((o) => (CLUSTER_SCOPED.has(o.kind) ? o : { ...o, metadata: { ...o.metadata, namespace: k.namespace } }));
  return out;
}

/**
 * A level's objects: what it inherits (a component gets what the including level has so far), its resources, then
 * its components in order, then its own patches and namespace over all of that.
 */
function render(dir: string, expectKind: "Kustomization" | "Component", inherited: K8sObject[], seen: string[]): K8sObject[] {
  const file = kustomizationFile(dir);
  if (seen.includes(file)) throw new Error(`${file}: cycle`);
  const k = parse(readFileSync(file, "utf8")) ?? {};
  const unknown = Object.keys(k).filter((x) => !KUSTOMIZATION_KEYS.has(x));
  if (unknown.length) throw new Error(`${file}: unsupported kustomization fields ${unknown.join(", ")} (test/helpers/kustomize.ts)`);
  if ((k.kind ?? "Kustomization") !== expectKind) throw new Error(`${file}: expected kind ${expectKind}, found ${k.kind}`);
  let objects: K8sObject[] = [...inherited];
  for (const r of k.resources ?? []) {
    const p = path.join(dir, r);
    if (statSync(p).isDirectory()) objects.push(...render(p, "Kustomization", [], [...seen, file]));
    else objects.push(...readYamlDocs(p));
  }
  for (const c of k.components ?? []) objects = render(path.join(dir, c), "Component", objects, [...seen, file]);
  objects = applyLevel(dir, k, objects);
  const ids = new Set<string>();
  for (const o of objects) {
    const id = `${o.kind}/${o.metadata?.namespace ?? ""}/${o.metadata?.name}`;
    if (ids.has(id)) throw new Error(`${file}: ${id} is defined twice`);
    ids.add(id);
  }
  return objects;
}

/** The objects `kubectl apply -k dir` would create, in order. Throws on an unsupported or broken kustomization. */
export function kustomize(dir: string): K8sObject[] {
  return render(path.resolve(dir), "Kustomization", [], []);
}
