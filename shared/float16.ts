/**
 * IEEE 754 binary16 (half precision) ⇄ binary32 conversion, for sending FP32 activations as FP16.
 * float32 → float16 rounds to nearest, ties to even (what a cast on a GPU does); values beyond the half range
 * become ±Infinity, values below half the smallest subnormal (2^-25) become ±0, NaN stays NaN (quiet, payload
 * truncated), and subnormals are produced and read exactly. float16 → float32 is exact.
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The binary16 bits nearest to `x` (rounded to float32 first, as JS stores it in a Float32Array). */
export function float32ToFloat16Bits(x: number): number {
  f32[0] = x;
  return bitsToHalf(u32[0]!);
}

/** float32 bits → float16 bits, round to nearest even. */
function bitsToHalf(b: number): number {
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return mant ? sign | 0x7e00 | (mant >>> 13) : sign | 0x7c00;
  const e = exp - 112; // rebias 127 → 15
  if (e >= 0x1f) return sign | 0x7c00;
  if (e >= 1) {
    const rest = mant & 0x1fff;
    let h = sign | (e << 10) | (mant >>> 13);
    // a carry out of the mantissa bumps the exponent, up to Infinity: exactly what rounding there means
    if (rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1)) h++;
    return h;
  }
  // subnormal half: the value in units of 2^-24 is full / 2^shift
  const shift = 14 - e;
  if (shift > 24) return sign;
  const full = mant | 0x800000;
  let q = full >>> shift;
  const rest = full - q * 2 ** shift;
  const halfway = 2 ** (shift - 1);
  if (rest > halfway || (rest === halfway && (q & 1) === 1)) q++;
  return sign | q;
}

let table: Float32Array | undefined;

/** Every float16 bit pattern's float32 value (256 KiB, built on first use). */
function halfTable(): Float32Array {
  if (table) return table;
  table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    table[h] = e === 0 ? s * m * 2 ** -24 : e === 0x1f ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return table;
}

/** The float32 value of binary16 bits `h` (exact). */
export function float16BitsToFloat32(h: number): number {
  return halfTable()[h & 0xffff]!;
}

/** Casts FP32 values to FP16 bits (round to nearest even), into `out` when given. */
export function float32ArrayToFloat16(src: Float32Array, out = new Uint16Array(src.length)): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) out[i] = bitsToHalf(bits[i]!);
  return out;
}

/** Casts FP16 bits to FP32 values (exact), into `out` when given. */
export function float16ArrayToFloat32(src: Uint16Array, out = new Float32Array(src.length)): Float32Array {
  const t = halfTable();
  for (let i = 0; i < src.length; i++) out[i] = t[src[i]!]!;
  return out;
}
