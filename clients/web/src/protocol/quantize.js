// Quantized entity state (SPEC section 5.1): the Quantizer derived from the Welcome bounds
// and position step, and the conversions between wire integers and world floats.

export const YAW_STEPS = 65536;
const TWO_PI = 2 * Math.PI;

export class Quantizer {
  /** mins, maxs: [x, y, z] world bounds in metres; step: position step in metres.
   * @param {number[]} mins
   * @param {number[]} maxs
   * @param {number} [step] */
  constructor(mins, maxs, step = 0.01) {
    if (!(Number.isFinite(step) && step > 0)) throw new RangeError("step must be a finite number > 0");
    this.mins = mins.map(Number);
    this.maxs = maxs.map(Number);
    this.step = Number(step);
    this.steps = this.mins.map((lo, i) => {
      const hi = this.maxs[i];
      if (!(Number.isFinite(lo) && Number.isFinite(hi) && hi > lo)) {
        throw new RangeError("bounds must be finite with maxs > mins on every axis");
      }
      const n = Math.ceil((hi - lo) / this.step - 1e-9);
      if (n > 2 ** 31 - 1) throw new RangeError(`${n} steps on one axis`);
      return n;
    });
    /** @type {"<u2" | "<u4"} */
    this.positionDtype = Math.max(...this.steps) <= 0xffff ? "<u2" : "<u4";
  }

  /** @param {{ mins: number[], maxs: number[], positionStep: number }} w a decoded Welcome
   * @returns {Quantizer} */
  static fromWelcome(w) {
    return new Quantizer(w.mins, w.maxs, w.positionStep);
  }

  /** Largest valid quantized value per axis. @type {number[]} */
  get positionLimits() {
    return this.steps;
  }

  /** Bytes per position value on the wire (2 or 4). @type {2 | 4} */
  get positionSize() {
    return this.positionDtype === "<u2" ? 2 : 4;
  }

  /** Wire integer -> metres on one axis. @param {number} axis 0, 1 or 2 @param {number} q @returns {number} */
  dequantizeAxis(axis, q) {
    return this.mins[axis] + q * this.step;
  }

  /** Metres -> wire integer on one axis, clamped to the bounds (NaN -> 0).
   * @param {number} axis 0, 1 or 2 @param {number} p @returns {number} */
  quantizeAxis(axis, p) {
    let q = Math.round((p - this.mins[axis]) / this.step);
    if (Number.isNaN(q)) q = 0;
    return Math.min(Math.max(q, 0), this.steps[axis]);
  }
}

/** Wire yaw (0..65535) -> radians in [0, 2π). @param {number} q @returns {number} */
export function dequantizeYaw(q) {
  return ((q & 0xffff) * TWO_PI) / YAW_STEPS;
}

/** Radians -> wire yaw in 0..65535 (wraps around the circle). @param {number} rad @returns {number} */
export function quantizeYaw(rad) {
  if (!Number.isFinite(rad)) return 0;
  let r = rad % TWO_PI;
  if (r < 0) r += TWO_PI;
  return Math.round((r * YAW_STEPS) / TWO_PI) & 0xffff;
}

/** Bytes per position value and the largest value per axis.
 * @typedef {{ size: 2 | 4, limits: number[] }} PositionLayout */
/** A Quantizer, or a wire position dtype.
 * @typedef {Quantizer | "<u2" | "<u4"} LayoutLike */

/** Position type description from a Quantizer or a dtype string: { size, limits }.
 * @param {LayoutLike} layout
 * @returns {PositionLayout} */
export function positionLayout(layout) {
  if (layout instanceof Quantizer) return { size: layout.positionSize, limits: layout.steps };
  if (layout === "<u2") return { size: 2, limits: [0xffff, 0xffff, 0xffff] };
  if (layout === "<u4") return { size: 4, limits: [2 ** 31 - 1, 2 ** 31 - 1, 2 ** 31 - 1] };
  throw new RangeError(`position dtype must be '<u2' or '<u4', not ${layout}`);
}
