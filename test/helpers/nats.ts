/**
 * A real nats-server per test file: free loopback ports, temp store, killed and removed at teardown.
 * `restart()` brings it back on the same port and store (a crash and recovery).
 */
import path from "node:path";
import type { Test } from "tap";
import { startNatsServer, removeDir, type RunningNats, type StartOptions } from "#shared/nats-server.js";

export interface TestNats {
  url: string;
  port: number;
  current(): RunningNats;
  /** SIGKILL the server. */
  kill(): Promise<void>;
  /** Start it again on the same port and store. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/** `extra`, `copyFiles` and `env`: as startNatsServer takes them (e.g. the users file with its passwords). */
export async function startTestNats(t: Test, opts: Pick<StartOptions, "extra" | "copyFiles" | "env"> = {}): Promise<TestNats> {
  let srv = await startNatsServer({ ...opts, watchParent: true });
  const workDir = path.dirname(srv.storeDir);
  const port = srv.port;
  const h: TestNats = {
    url: srv.url,
    port,
    current: () => srv,
    kill: () => srv.kill(),
    async restart() {
      await srv.kill();
      srv = await startNatsServer({ ...opts, port, storeDir: srv.storeDir, workDir, watchParent: true });
    },
    async stop() {
      await srv.stop();
      await removeDir(workDir);
    },
  };
  t.teardown(() => h.stop());
  return h;
}
