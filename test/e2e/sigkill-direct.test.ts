import t from "tap";
import { sigkillMidRequest } from "../helpers/failover.js";

t.test("SIGKILL of the worker holding a sync job sent straight to it over core NATS: the caller re-sends it through JetStream and it still succeeds", (t) =>
  sigkillMidRequest(t, true));
