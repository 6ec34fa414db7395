// A world's walls for the own avatar's prediction: the same rules as the server's
// worldserver/collision.py, for one circle. Walls are capsules (a segment with a half
// thickness; obstacles contribute their four edges with half 0); a move is cut into sub-steps
// shorter than the thinnest reach (radius + half thickness), after each sub-step the circle is
// pushed out of the wall it overlaps most, RELAX_PASSES times, and a sub-step that leaves it
// inside a wall is undone. The circle is kept on the floor. Checked against vectors made by
// the Python code (worldserver/worlds/collision_vectors.json). Pure computation, no DOM.

export const RELAX_PASSES = 4;
export const SLACK = 1e-6;

/** A wall of a world document: a polyline [[x, z], ...] with a thickness and a height (metres).
 * @typedef {{ points: number[][], thickness: number, height?: number }} WorldWall */
/** An obstacle of a world document: a rectangle (centre [x, z], size [w, d], rotation in degrees).
 * @typedef {{ center: number[], size: number[], rotation: number, height?: number }} WorldObstacle */
/** The parts of a world document (GET /api/worlds/{id}, docs/worlds.md) that make walls.
 * @typedef {{ walls?: WorldWall[], obstacles?: WorldObstacle[] }} WallDoc */
/** What the prediction needs of a world document: its walls, the entities' radius, the floor.
 * @typedef {WallDoc & { entity_radius: number, floor: { min: number[], max: number[] } }} WorldDoc */
/** One capsule, prepared for the collision: start, direction, reach (radius + half
 * thickness) and a normal for a centre exactly on the segment.
 * @typedef {{ ax: number, az: number, dx: number, dz: number, invLen2: number, reach: number, nx: number, nz: number }} Capsule */

/**
 * The capsules of a world document (GET /api/worlds/{id}): segments, half thicknesses and
 * heights (metres above the floor; Infinity when the document gives none), in the server's
 * order (walls' polyline segments, then each obstacle's four edges).
 * @param {WallDoc} doc
 * @returns {{segs: number[][], half: number[], height: number[]}}
 */
export function wallSegments(doc) {
  /** @type {number[][]} */
  const segs = [];
  /** @type {number[]} */
  const half = [];
  /** @type {number[]} */
  const height = [];
  const tall = (/** @type {number | undefined} */ h) => (typeof h === "number" && Number.isFinite(h) ? h : Infinity);
  for (const w of doc.walls || []) {
    for (let i = 0; i + 1 < w.points.length; i++) {
      const [ax, az] = w.points[i];
      const [bx, bz] = w.points[i + 1];
      segs.push([ax, az, bx, bz]);
      half.push(w.thickness / 2);
      height.push(tall(w.height));
    }
  }
  for (const o of doc.obstacles || []) {
    const a = (o.rotation * Math.PI) / 180;
    const c = Math.cos(a);
    const s = Math.sin(a);
    const hx = o.size[0] / 2;
    const hz = o.size[1] / 2;
    const pts = [[-hx, -hz], [hx, -hz], [hx, hz], [-hx, hz]].map(([px, pz]) => [
      o.center[0] + c * px - s * pz,
      o.center[1] + s * px + c * pz,
    ]);
    for (let i = 0; i < 4; i++) {
      const [ax, az] = pts[i];
      const [bx, bz] = pts[(i + 1) % 4];
      segs.push([ax, az, bx, bz]);
      half.push(0);
      height.push(tall(o.height));
    }
  }
  return { segs, half, height };
}

export class Walls {
  /**
   * @param {WorldDoc} doc a world document
   */
  constructor(doc) {
    const { segs, half } = wallSegments(doc);
    this.radius = doc.entity_radius;
    this.lo = doc.floor.min;
    this.hi = doc.floor.max;
    /** @type {Capsule[]} */
    this.walls = segs.map(([ax, az, bx, bz], i) => {
      const dx = bx - ax;
      const dz = bz - az;
      const len2 = dx * dx + dz * dz;
      const len = Math.sqrt(len2);
      return {
        ax, az, dx, dz,
        invLen2: len2 > 0 ? 1 / len2 : 0,
        reach: half[i] + this.radius,
        nx: len > 0 ? -dz / len : 1,
        nz: len > 0 ? dx / len : 0,
      };
    });
    const thinnest = this.walls.length ? Math.min(...this.walls.map((w) => w.reach)) : this.radius;
    this.maxStep = 0.9 * thinnest;
  }

  /** The wall the circle at (x, z) is deepest in: { depth, w, ox, oz } (depth <= 0: none).
   * @param {number} x @param {number} z
   * @returns {{ depth: number, w: Capsule | null, ox: number, oz: number }} */
  _deepest(x, z) {
    /** @type {{ depth: number, w: Capsule | null, ox: number, oz: number }} */
    let best = { depth: -Infinity, w: null, ox: 0, oz: 0 };
    for (const w of this.walls) {
      const px = x - w.ax;
      const pz = z - w.az;
      const t = Math.min(Math.max((px * w.dx + pz * w.dz) * w.invLen2, 0), 1);
      const ox = px - t * w.dx;
      const oz = pz - t * w.dz;
      const depth = w.reach - Math.sqrt(ox * ox + oz * oz);
      if (depth > best.depth) best = { depth, w, ox, oz };
    }
    return best;
  }

  /** How deep the circle at (x, z) is in its worst wall (0 when it touches none).
   * @param {number} x @param {number} z @returns {number} */
  penetration(x, z) {
    if (!this.walls.length) return 0;
    return Math.max(this._deepest(x, z).depth, 0);
  }

  /** (x, z) kept on the floor. @param {number} x @param {number} z @returns {[number, number]} */
  _clamp(x, z) {
    const r = this.radius;
    return [
      Math.min(Math.max(x, this.lo[0] + r), this.hi[0] - r),
      Math.min(Math.max(z, this.lo[1] + r), this.hi[1] - r),
    ];
  }

  /** The centre after moving (x, z) by (dx, dz) against the walls: [x, z].
   * @param {number} x @param {number} z @param {number} dx @param {number} dz
   * @returns {[number, number]} */
  move(x, z, dx, dz) {
    if (!this.walls.length) return this._clamp(x + dx, z + dz);
    if (dx === 0 && dz === 0) return [x, z];
    const steps = Math.max(1, Math.ceil(Math.sqrt(dx * dx + dz * dz) / this.maxStep));
    const sx = dx / steps;
    const sz = dz / steps;
    for (let k = 0; k < steps; k++) {
      const bx = x;
      const bz = z;
      [x, z] = this._clamp(x + sx, z + sz);
      let pushed = false;
      for (let p = 0; p < RELAX_PASSES; p++) {
        const { depth, w, ox, oz } = this._deepest(x, z);
        pushed = depth > 0;
        if (!pushed || !w) break; // w is set whenever depth > 0
        const d = w.reach - depth;
        const push = depth + SLACK;
        const ux = d > 1e-12 ? ox / d : w.nx;
        const uz = d > 1e-12 ? oz / d : w.nz;
        [x, z] = this._clamp(x + ux * push, z + uz * push);
      }
      if (pushed && this.penetration(x, z) > 1e-6) {
        x = bx;
        z = bz;
      }
    }
    return [x, z];
  }
}
