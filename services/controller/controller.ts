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
import { NasStore } from "#shared/nas/store.js";
import { ExperimentRecordSchema, type ExperimentRecord } from "#shared/nas/wire.js";
import { connectNats, openInfra, type Infra } from "#shared/nats.js";
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
}

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
    async start() {
      nc = givenNc ?? (await connectNats(config, `jetshard-controller-${id}`, log));
      infra = await openInfra(nc, { workerTtlMs: config.workerTtlMs, resultRetentionMs: config.resultRetentionMs });
      store = await NasStore.open(infra);
      // experiment ids are single tokens, so "*" leaves out the lease.<exp> keys
      const watch = await store.experiments.watch({ key: "*" });
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
      })().catch((err) => log.error({ err }, "experiment watch ended"));
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
      log.info("controller stopped");
    },
  };
}
