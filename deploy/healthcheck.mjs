// The container image's HEALTHCHECK (deploy/Dockerfile), for whichever jetshard process the container runs:
// healthy when the ops listener of a worker or controller (JETSHARD_OPS_PORT, /health/live) or the gateway's API
// (JETSHARD_PORT, /v2/health/live) answers 200 on this container's loopback. Plain JavaScript, no dependencies.
const ops = process.env.JETSHARD_OPS_PORT || "9464";
const api = process.env.JETSHARD_PORT || "8080";
for (const url of [`http://127.0.0.1:${ops}/health/live`, `http://127.0.0.1:${api}/v2/health/live`]) {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
    if (res.ok) process.exit(0);
  } catch {
    // not listening here: try the other
  }
}
process.exit(1);
