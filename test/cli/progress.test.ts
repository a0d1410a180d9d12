import t from "tap";
import { Progress, bar, formatBytes } from "../../services/cli/progress.js";

function sink() {
  const s = { text: "", write: (chunk: string) => ((s.text += chunk), true) };
  return s as unknown as NodeJS.WritableStream & { text: string };
}

t.test("bar and formatBytes draw what they are given, clamped", async (t) => {
  t.equal(bar(0, 10), "[----------]");
  t.equal(bar(0.5, 10), "[#####-----]");
  t.equal(bar(2, 4), "[####]", "over 1 is full");
  t.equal(bar(Number.NaN, 4), "[----]");
  t.equal(formatBytes(512), "512 B");
  t.equal(formatBytes(1536), "1.50 KB");
  t.equal(formatBytes(12 * 1024 * 1024), "12.0 MB");
  t.equal(formatBytes(300 * 1024 ** 3), "300 GB");
});

t.test("off a terminal, progress is plain lines, each printed once", async (t) => {
  const out = sink();
  const p = new Progress({ stream: out, tty: false });
  p.update("[##--] 1/2", "progress 1/2");
  p.update("[##--] 1/2 (redrawn)", "progress 1/2");
  p.update("[####] 2/2", null);
  p.note("a note");
  p.update("[####] 2/2", "progress 2/2");
  p.end();
  t.equal(out.text, "progress 1/2\na note\nprogress 2/2\n");
  t.notMatch(out.text, /\x1b|\r/, "no control characters");
});

t.test("on a terminal, one line is redrawn in place, at most every intervalMs, and left on screen at the end", async (t) => {
  const out = sink();
  const p = new Progress({ stream: out, tty: true, intervalMs: 60_000 });
  p.update("step 1");
  p.update("step 2");
  p.update("step 3");
  t.equal(out.text, "\r\x1b[2Kstep 1", "the first update draws at once; later ones wait for the interval");
  p.note("hello");
  t.equal(out.text, "\r\x1b[2Kstep 1\r\x1b[2Khello\n\r\x1b[2Kstep 3", "a note goes above, then the latest state is redrawn");
  p.end("done");
  t.equal(out.text.slice(out.text.lastIndexOf("\r")), "\r\x1b[2Kdone\n");
  const before = out.text;
  p.end();
  t.equal(out.text, before, "end twice draws nothing more");
});
