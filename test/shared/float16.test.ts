import t from "tap";
import fc from "fast-check";
import { float16ArrayToFloat32, float16BitsToFloat32, float32ArrayToFloat16, float32ToFloat16Bits } from "#shared/float16.js";

/** The float32 whose bits are `u`. */
const fromBits = (u: number) => new Float32Array(new Uint32Array([u >>> 0]).buffer)[0]!;

/** Every finite non-negative half value, in order of its bit pattern (which is numeric order): 0x0000–0x7bff. */
const HALVES = Array.from({ length: 0x7c00 }, (_, h) => {
  const e = h >>> 10;
  const m = h & 0x3ff;
  return e === 0 ? m / 2 ** 24 : (1 + m / 1024) * 2 ** (e - 15);
});

/**
 * The nearest half to `x`, ties to the even bit pattern, computed independently of the code under test: a binary
 * search over every half value, in doubles (all exact). Beyond the largest half (65504), the next step up is 65536,
 * which rounds to Infinity.
 */
function referenceHalf(x: number): number {
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a >= 65536) return sign | 0x7c00;
  let lo = 0;
  let hi = HALVES.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (HALVES[mid]! <= a) lo = mid;
    else hi = mid - 1;
  }
  const below = HALVES[lo]!;
  if (below === a) return sign | lo;
  const above = lo + 1 < HALVES.length ? HALVES[lo + 1]! : 65536;
  const pick = a - below < above - a ? lo : a - below > above - a ? lo + 1 : lo % 2 === 0 ? lo : lo + 1;
  return sign | pick;
}

t.test("every float16 value converts to float32 and back to the same bits; NaNs stay NaN", async (t) => {
  let exact = 0;
  for (let h = 0; h < 65536; h++) {
    const f = float16BitsToFloat32(h);
    const isNaNBits = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
    if (isNaNBits) {
      if (!Number.isNaN(f) || !Number.isNaN(float16BitsToFloat32(float32ToFloat16Bits(f)))) t.fail(`NaN 0x${h.toString(16)}`);
      continue;
    }
    if (float32ToFloat16Bits(f) !== h) t.fail(`0x${h.toString(16)} → ${f} → 0x${float32ToFloat16Bits(f).toString(16)}`);
    else exact++;
  }
  t.equal(exact, 65536 - 2 * 1023, "every non-NaN pattern (±0, subnormals, normals, ±Infinity) round-trips exactly");
  t.equal(float16BitsToFloat32(0x7bff), 65504, "largest half");
  t.equal(float16BitsToFloat32(0x0001), 2 ** -24, "smallest subnormal");
  t.ok(Object.is(float16BitsToFloat32(0x8000), -0), "negative zero");
});

t.test("any float32 becomes the nearest float16, ties to even, matching an independent reference", async (t) => {
  // every bit pattern equally likely: NaN payloads, subnormals, huge values; plus the half range densely
  const anyFloat32 = fc.integer({ min: 0, max: 0xffffffff }).map(fromBits);
  const inRange = fc.float({ min: -70000, max: 70000, noNaN: true });
  // values exactly halfway between two halves (the ties): h's value plus half its step
  const ties = fc.integer({ min: 0, max: 0x7bfe }).chain((h) => fc.boolean().map((neg) => (neg ? -1 : 1) * (HALVES[h]! + HALVES[h + 1]!) / 2));
  for (const [name, arb] of [["any bits", anyFloat32], ["half range", inRange], ["ties", ties]] as const) {
    fc.assert(
      fc.property(arb, (x) => {
        const got = float32ToFloat16Bits(x);
        if (Number.isNaN(x)) return Number.isNaN(float16BitsToFloat32(got));
        const want = referenceHalf(Math.fround(x));
        if (got !== want) throw new Error(`${x}: got 0x${got.toString(16)}, nearest is 0x${want.toString(16)}`);
        return true;
      }),
      { numRuns: 20_000 },
    );
    t.pass(`${name}: 20000 values`);
  }
});

t.test("the round-trip error is within half a float16 step; values representable in float16 are exact", async (t) => {
  fc.assert(
    fc.property(fc.float({ min: -65504, max: 65504, noNaN: true }), (x) => {
      const back = float16BitsToFloat32(float32ToFloat16Bits(x));
      const a = Math.abs(x);
      // the step between halves near x: 2^(e-10) for normals, 2^-24 for subnormals
      const step = a < 2 ** -14 ? 2 ** -24 : 2 ** (Math.floor(Math.log2(a)) - 10);
      return Math.abs(back - x) <= step / 2;
    }),
    { numRuns: 20_000 },
  );
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffff }).filter((h) => (h & 0x7c00) !== 0x7c00), (h) => {
      const v = float16BitsToFloat32(h);
      return Object.is(float16BitsToFloat32(float32ToFloat16Bits(v)), v);
    }),
  );
  t.equal(float16BitsToFloat32(float32ToFloat16Bits(65520)), Infinity, "65520 (halfway to the next step) rounds to even: Infinity");
  t.equal(float16BitsToFloat32(float32ToFloat16Bits(65519)), 65504, "just below stays finite");
  t.equal(float16BitsToFloat32(float32ToFloat16Bits(-1e9)), -Infinity, "overflow keeps its sign");
  t.equal(float16BitsToFloat32(float32ToFloat16Bits(2 ** -25)), 0, "half the smallest subnormal ties to 0 (even)");
  t.equal(float16BitsToFloat32(float32ToFloat16Bits(2 ** -25 * 1.5)), 2 ** -24, "above it rounds up to the smallest subnormal");
  t.equal(float16BitsToFloat32(float32ToFloat16Bits(1 + 2 ** -11)), 1, "1 + half a step ties to 1 (even)");
  t.equal(float16BitsToFloat32(float32ToFloat16Bits(1 + 3 * 2 ** -11)), 1 + 2 ** -9, "1 + 1.5 steps ties up to the even neighbour");
});

t.test("the array casts agree with the scalar conversions", async (t) => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 0xffffffff }).map(fromBits), { maxLength: 64 }), (xs) => {
      const src = Float32Array.from(xs);
      const halves = float32ArrayToFloat16(src);
      const back = float16ArrayToFloat32(halves);
      return xs.every((x, i) => halves[i] === float32ToFloat16Bits(x) && Object.is(back[i], float16BitsToFloat32(halves[i]!)));
    }),
  );
  t.pass("arrays match element by element");
});
