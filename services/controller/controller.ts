/**
 * The NAS controller: watches the `experiments` bucket, takes the lease of every queued or running
 * experiment that no live controller holds, and drives it (see experiment-driver.ts). Any number of
 * controllers may run; the lease (lease.ts) makes sure one experiment has one driver. Leases are renewed
 * every `controllerLeaseMs / 3`; a controller that dies (even by SIGKILL) loses its experiments to
 * another one `controllerLeaseMs` after its last renewal.
 */
import os from "node:os";
import { nuid, type NatsConnection } from "@nats-io/transport-node";
import type { JetshardConfig } from "#shared/config.js";
import type { Logger } from "#shared/log.js";
import { attachLogs } from "#shared/logs.js";
import { NasStore } from "#shared/nas/store.js";
import { ExperimentRecordSchema, type ExperimentRecord } from "#shared/nas/wire.js";
import { ControllerMetrics, createRegistry } from "#shared/metrics.js";
import { connectNats, openInfra, type Infra } from "#shared/nats.js";
import { startOpsServer, type OpsServer, type Readiness } from "#shared/ops-server.js";
import { ExperimentDriver } from "./experiment-driver.js";
import { Lease } from "./lease.js";

export interface Controller {
  /** This controller's id, as written in leases and trial records. */
  readonly id: string;
  start(): Promise<void>;
  /** Stops driving (releasing every lease, so other controllers take over at once) and disconnects. */
  stop(): Promise<void>;
  /** Ids of the experiments it drives now. */
  driving(): string[];
  /** The bound port of its ops listener (/metrics, /health/live, /health/ready); null while not listening or off. */
  opsPort(): number | null;
  /** What /health/ready answers now. */
  readiness(): Readiness;
}

/** The controller's version, as its metrics report it. */
export const CONTROLLER_VERSION = "0.1.0";

export interface ControllerDeps {
  config: JetshardConfig;
  log: Logger;
  /** An existing connection to reuse (tests); otherwise one is opened from config. */
  nc?: NatsConnection;
}

/** After a driver failed, this controller waits this long before taking the same experiment again. */
const RETAKE_AFTER_MS = 2_000;

const runnable = (r: ExperimentRecord | undefined) => r !== undefined && (r.status === "queued" || r.status === "running");

export function createController({ config, log: rootLog, nc: givenNc }: ControllerDeps): Controller {
  const id = `c-${os.hostname().replace(/[^A-Za-z0-9_-]/g, "-").slice(0, 30)}-${nuid.next().slice(-8).toLowerCase()}`;
  const log = rootLog.child({ component: "controller", controller: id });
  const drivers = new Map<string, ExperimentDriver>();
  const acquiring = new Set<string>();
  const known = new Map<string, ExperimentRecord>();
  /** Experiment → epoch ms before which this controller does not take it again (backoff after a failure). */
  const cooldown = new Map<string, number>();
  let nc: NatsConnection | null = null;
  let infra!: Infra;
  let store!: NasStore;
  let tick: NodeJS.Timeout | null = null;
  let stopWatch: (() => void) | null = null;
  let stopping = false;
  let ops: OpsServer | null = null;
  let watching = false;
  let natsDown = false;

  function readiness(): Readiness {
    if (stopping) return { ready: false, reason: "stopping" };
    if (!nc || natsDown || nc.isClosed()) return { ready: false, reason: "not connected to NATS" };
    if (!watching) return { ready: false, reason: "not watching the experiments bucket yet" };
    return { ready: true };
  }

  async function tryDrive(exp: string): Promise<void> {
    if (stopping || drivers.has(exp) || acquiring.has(exp) || (cooldown.get(exp) ?? 0) > Date.now()) return;
    acquiring.add(exp);
    try {
      const lease = new Lease(store.experiments, exp, id, config.controllerLeaseMs);
      if (!(await lease.acquire())) return;
      if (stopping) return void (await lease.release());
      const driver = new ExperimentDriver({
        infra,
        store,
        config,
        log,
        controllerId: id,
        lease,
        onExit: (e, failed) => {
          if (drivers.get(e) === driver) drivers.delete(e);
          if (failed) cooldown.set(e, Date.now() + RETAKE_AFTER_MS);
        },
      });
      drivers.set(exp, driver);
      await driver.start();
    } catch (err) {
      log.warn({ err, experiment: exp }, "could not take the experiment");
    } finally {
      acquiring.delete(exp);
    }
  }

  function onRecord(exp: string, rec: ExperimentRecord | undefined): void {
    if (rec) known.set(exp, rec);
    else known.delete(exp);
    const d = drivers.get(exp);
    if (d && !runnable(rec)) void d.external(rec ?? null);
    else if (!d && runnable(rec)) void tryDrive(exp);
  }

  async function onTick(): Promise<void> {
    await Promise.all(
      [...drivers.values()].map(async (d) => {
        if (!(await d.lease.renew())) await d.halt("lease lost", false);
      }),
    );
    // a controller that died leaves its experiments running with a lease nobody renews
    for (const [exp, rec] of known) if (runnable(rec) && !drivers.has(exp)) void tryDrive(exp);
  }

  return {
    id,
    driving: () => [...drivers.keys()],
    readiness,
    opsPort: () => ops?.port ?? null,
    async start() {
      const registry = createRegistry("controller", CONTROLLER_VERSION);
      new ControllerMetrics(registry, {
        driven: () =>
          [...drivers.keys()].map((exp) => {
            const p = known.get(exp)?.progress;
            const counts: Record<string, number> = p ? { queued: p.queued, running: p.running, succeeded: p.succeeded, failed: p.failed, early_stopped: p.early_stopped } : {};
            return { experiment: exp, counts };
          }),
      });
      if (config.ops.http) ops = await startOpsServer({ host: config.ops.host, port: config.ops.port, registry, ready: readiness, log, service: "controller" });
      nc = givenNc ?? (await connectNats(config, `jetshard-controller-${id}`, log));
      const conn = nc;
      void (async () => {
        for await (const st of conn.status()) {
          if (st.type === "disconnect" || st.type === "staleConnection") natsDown = true;
          else if (st.type === "reconnect") natsDown = false;
        }
      })();
      attachLogs(rootLog, nc);
      infra = await openInfra(nc, { workerTtlMs: config.workerTtlMs, resultRetentionMs: config.resultRetentionMs, replicas: config.replicas });
      store = await NasStore.open(infra);
      // experiment ids are single tokens, so "*" leaves out the lease.<exp> keys
      const watch = await store.experiments.watch({ key: "*" });
      watching = true;
      stopWatch = () => watch.stop();
      void (async () => {
        for await (const e of watch) {
          if (e.operation !== "PUT" || e.value.length === 0) {
            onRecord(e.key, undefined);
            continue;
          }
          const r = ExperimentRecordSchema.safeParse(e.json());
          if (r.success) onRecord(e.key, r.data);
          else log.warn({ key: e.key }, "ignoring a malformed experiment record");
        }
      })()
        .catch((err) => log.error({ err }, "experiment watch ended"))
        .finally(() => (watching = false));
      const every = Math.max(100, Math.floor(config.controllerLeaseMs / 3));
      let ticking = false;
      tick = setInterval(() => {
        if (ticking) return;
        ticking = true;
        onTick()
          .catch((err) => log.warn({ err }, "lease renewal failed"))
          .finally(() => (ticking = false));
      }, every);
      log.info({ leaseMs: config.controllerLeaseMs }, "controller started");
    },
    async stop() {
      if (stopping) return;
      stopping = true;
      if (tick) clearInterval(tick);
      stopWatch?.();
      await Promise.all([...drivers.values()].map((d) => d.halt("controller stopping", true)));
      if (!givenNc) await nc?.drain().catch(() => undefined);
      await ops?.close();
      log.info("controller stopped");
    },
  };
}
