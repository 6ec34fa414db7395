// Lines of sight against a world's walls, for the camera and the name tags: where a straight
// line in 3D first touches a wall (a capsule around the wall's 2D segment, standing from the
// floor to the wall's height), and whether a line is blocked. The walls are the world
// document's (the same segments as the collision, ../world/walls.js wallSegments): polyline
// walls with half their thickness, obstacles' edges with none. Pure computation, no DOM, no
// three.js.
//
// Must not: move anything (the caller decides what a hit means) or allocate per call beyond a
// few numbers (it runs for the camera and every name tag once a frame).

import { wallSegments } from "./walls.js";

const EPS = 1e-12;

/**
 * The interval of t where v0 + t * vd lies in [lo, hi]: [t0, t1], or null when never.
 * @param {number} v0 @param {number} vd @param {number} lo @param {number} hi
 * @returns {number[] | null}
 */
function slab(v0, vd, lo, hi) {
  if (Math.abs(vd) < EPS) return v0 >= lo && v0 <= hi ? [-Infinity, Infinity] : null;
  const a = (lo - v0) / vd;
  const b = (hi - v0) / vd;
  return a < b ? [a, b] : [b, a];
}

/**
 * The interval of t where (px, pz) + t * (dx, dz) is within r of the point (cx, cz).
 * @param {number} px @param {number} pz @param {number} dx @param {number} dz
 * @param {number} cx @param {number} cz @param {number} r
 * @returns {number[] | null}
 */
function disc(px, pz, dx, dz, cx, cz, r) {
  const ox = px - cx;
  const oz = pz - cz;
  const a = dx * dx + dz * dz;
  const b = ox * dx + oz * dz;
  const c = ox * ox + oz * oz - r * r;
  if (a < EPS) return c <= 0 ? [-Infinity, Infinity] : null;
  const d = b * b - a * c;
  if (d < 0) return null;
  const s = Math.sqrt(d);
  return [(-b - s) / a, (-b + s) / a];
}

/**
 * Where the line (px, pz) + t * (dx, dz), t over all reals, is within r of the segment
 * (ax, az)-(bx, bz): the interval [tEnter, tExit], or null when it never is. A capsule is
 * convex, so this is one interval: the union of the parts in the rectangle along the segment
 * and in the two end discs.
 * @param {number} px @param {number} pz @param {number} dx @param {number} dz
 * @param {number} ax @param {number} az @param {number} bx @param {number} bz @param {number} r
 * @returns {number[] | null}
 */
export function capsuleInterval(px, pz, dx, dz, ax, az, bx, bz, r) {
  let lo = Infinity;
  let hi = -Infinity;
  const take = (/** @type {number[] | null} */ iv) => {
    if (iv && iv[0] <= iv[1]) {
      lo = Math.min(lo, iv[0]);
      hi = Math.max(hi, iv[1]);
    }
  };
  const ex = bx - ax;
  const ez = bz - az;
  const len = Math.hypot(ex, ez);
  if (len > EPS) {
    const ux = ex / len;
    const uz = ez / len;
    const along = slab((px - ax) * ux + (pz - az) * uz, dx * ux + dz * uz, 0, len);
    const across = slab((px - ax) * -uz + (pz - az) * ux, dx * -uz + dz * ux, -r, r);
    if (along && across) take([Math.max(along[0], across[0]), Math.min(along[1], across[1])]);
    take(disc(px, pz, dx, dz, bx, bz, r));
  }
  take(disc(px, pz, dx, dz, ax, az, r));
  return lo <= hi ? [lo, hi] : null;
}

/** A wall for the rays: its segment, half thickness and height.
 * @typedef {{ ax: number, az: number, bx: number, bz: number, half: number, height: number }} RayWall */

export class WallRays {
  /**
   * @param {import("./walls.js").WallDoc} doc a world document
   */
  constructor(doc) {
    const { segs, half, height } = wallSegments(doc);
    /** @type {RayWall[]} */
    this.walls = segs.map(([ax, az, bx, bz], i) => ({ ax, az, bx, bz, half: half[i], height: height[i] }));
  }

  /**
   * How far along the line from `from` to `to` ({x, y, z}, y up, the floor at y = 0) it first
   * touches a wall thickened by `pad` (on every side, the top too): a fraction in [0, 1], or
   * null when the whole line is clear. A line that starts within `pad` of a wall and goes
   * deeper is stopped at 0; one that starts there and leaves is not stopped by that wall.
   * @param {{x: number, y: number, z: number}} from
   * @param {{x: number, y: number, z: number}} to
   * @param {number} [pad]
   * @returns {number | null}
   */
  firstHit(from, to, pad = 0) {
    const dx = to.x - from.x;
    const dy = to.y - from.y;
    const dz = to.z - from.z;
    /** @type {number | null} */
    let best = null;
    for (const w of this.walls) {
      const iv = capsuleInterval(from.x, from.z, dx, dz, w.ax, w.az, w.bx, w.bz, w.half + pad);
      if (!iv) continue;
      let t0 = iv[0];
      const t1 = Math.min(iv[1], 1);
      if (t1 < 0 || t0 > 1) continue;
      const top = w.height + pad;
      if (t0 < 0) {
        // Starts inside the padded wall: a stop only when the line goes on inward.
        if (t1 <= 0) continue;
        if (from.y <= top && !goesDeeper(from.x, from.z, dx, dz, w)) continue;
        t0 = 0;
      }
      let t = null;
      if (from.y + t0 * dy <= top) t = t0;
      else if (from.y + t1 * dy <= top) t = (top - from.y) / dy; // comes down through the top
      if (t !== null && (best === null || t < best)) best = t;
    }
    return best;
  }

  /** True when a wall stands between `from` and `to` ({x, y, z}).
   * @param {{x: number, y: number, z: number}} from @param {{x: number, y: number, z: number}} to
   * @returns {boolean} */
  blocked(from, to) {
    return this.firstHit(from, to, 0) !== null;
  }
}

/** True when moving from (px, pz) along (dx, dz) brings the point closer to the wall's segment.
 * @param {number} px @param {number} pz @param {number} dx @param {number} dz @param {RayWall} w
 * @returns {boolean} */
function goesDeeper(px, pz, dx, dz, w) {
  const dist2 = (/** @type {number} */ x, /** @type {number} */ z) => {
    const ex = w.bx - w.ax;
    const ez = w.bz - w.az;
    const l2 = ex * ex + ez * ez;
    const t = l2 > EPS ? Math.min(Math.max(((x - w.ax) * ex + (z - w.az) * ez) / l2, 0), 1) : 0;
    const ox = x - w.ax - t * ex;
    const oz = z - w.az - t * ez;
    return ox * ox + oz * oz;
  };
  const len = Math.hypot(dx, dz);
  if (len < EPS) return true; // a vertical line inside the wall stays inside it
  const step = 1e-4 / len;
  return dist2(px + dx * step, pz + dz * step) < dist2(px, pz);
}
