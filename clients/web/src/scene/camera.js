// The third-person camera: behind and above the own avatar's head at the player's yaw and
// pitch, pulled in front of the first wall between the head and where it would be (as games
// do), so the view never shows a wall's outside. Walls come from the world document through
// ../world/rays.js. The camera's distance comes in quickly when a wall gets between and goes
// back out slowly; its position is smoothed, and every frame the smoothed position is checked
// again against the walls, so no smoothing ever carries it through one.
//
// Pure computation on plain {x, y, z} objects (no three.js import): FollowCamera.apply puts
// the result on a three.js camera. Must not: read the DOM or input devices.

export const CAMERA_DISTANCE = 6.5; // metres from the head when nothing is in the way
export const CAMERA_PAD = 0.25; // metres kept between the camera and any wall (near plane 0.1)
export const HIDE_SELF_WITHIN = 0.9; // metres: closer to the head, the own avatar is hidden
const PULL_IN_RATE = 25; // 1/s: the distance shrinks this fast toward a nearer wall
const EASE_OUT_RATE = 3; // 1/s: and grows back this slowly once the wall is gone
const FOLLOW_RATE = 12; // 1/s: the position follows its goal this fast

/** @typedef {{x: number, y: number, z: number}} Point */

/**
 * The unit vector from the head toward the camera for a yaw (the avatar faces (sin, cos) in
 * x, z) and a pitch (radians above the horizontal).
 * @param {number} yaw @param {number} pitch
 * @returns {{x: number, y: number, z: number}}
 */
export function cameraDirection(yaw, pitch) {
  const c = Math.cos(pitch);
  return { x: -Math.sin(yaw) * c, y: Math.sin(pitch), z: -Math.cos(yaw) * c };
}

/**
 * How far from `head` the camera may be along `dir` (unit) without passing a wall: `want`
 * when nothing is in the way, else the distance to the first wall thickened by `pad`.
 * @param {Pick<import("../world/rays.js").WallRays, "firstHit"> | null} rays a WallRays, or null for a world without walls
 * @param {Point} head @param {Point} dir @param {number} want @param {number} [pad]
 * @returns {number}
 */
export function clearDistance(rays, head, dir, want, pad = CAMERA_PAD) {
  if (!rays || want <= 0) return want;
  const to = { x: head.x + dir.x * want, y: head.y + dir.y * want, z: head.z + dir.z * want };
  const t = rays.firstHit(head, to, pad);
  return t === null ? want : t * want;
}

export class FollowCamera {
  /**
   * @param {{rays?: Pick<import("../world/rays.js").WallRays, "firstHit"> | null, distance?: number}} [options]
   */
  constructor({ rays = null, distance = CAMERA_DISTANCE } = {}) {
    this.rays = rays;
    this.distance = distance;
    this.current = distance; // the distance used now (eased)
    /** @type {Point | null} null until the first step */
    this.position = null;
    this.blocked = false; // a wall shortened the view in the last step
  }

  /**
   * One frame: the camera's new position for the head position `head`, yaw, pitch and dt
   * (seconds since the last frame). Returns this.position.
   * @param {{x: number, y: number, z: number}} head
   * @param {number} yaw @param {number} pitch @param {number} dt
   * @returns {Point}
   */
  step(head, yaw, pitch, dt) {
    const dir = cameraDirection(yaw, pitch);
    const allowed = clearDistance(this.rays, head, dir, this.distance);
    this.blocked = allowed < this.distance;
    const rate = allowed < this.current ? PULL_IN_RATE : EASE_OUT_RATE;
    this.current += (allowed - this.current) * (1 - Math.exp(-rate * dt));
    this.current = Math.max(Math.min(this.current, this.distance), 0);
    const goal = { x: head.x + dir.x * this.current, y: head.y + dir.y * this.current, z: head.z + dir.z * this.current };
    let p = this.position;
    if (!p) p = goal;
    else {
      const k = 1 - Math.exp(-FOLLOW_RATE * dt);
      p = { x: p.x + (goal.x - p.x) * k, y: p.y + (goal.y - p.y) * k, z: p.z + (goal.z - p.z) * k };
    }
    // The smoothed position may lag behind a turn: look again from the head to it.
    const ox = p.x - head.x;
    const oy = p.y - head.y;
    const oz = p.z - head.z;
    const len = Math.hypot(ox, oy, oz);
    if (len > 1e-9) {
      const unit = { x: ox / len, y: oy / len, z: oz / len };
      const keep = clearDistance(this.rays, head, unit, len);
      if (keep < len) p = { x: head.x + unit.x * keep, y: head.y + unit.y * keep, z: head.z + unit.z * keep };
    }
    this.position = p;
    return p;
  }

  /** True when the camera is so close to `head` that it would look from inside the own
   *  avatar (a wall pulled it in): the caller hides the avatar then. */
  insideAvatar(head) {
    const p = this.position;
    return p !== null && Math.hypot(p.x - head.x, p.y - head.y, p.z - head.z) < HIDE_SELF_WITHIN;
  }

  /**
   * Steps and puts the result on a three.js camera looking at the head.
   * @param {{position: {set(x: number, y: number, z: number): unknown}, lookAt(x: number, y: number, z: number): void}} camera
   * @param {Point} head @param {number} yaw @param {number} pitch @param {number} dt
   * @returns {Point}
   */
  apply(camera, head, yaw, pitch, dt) {
    const p = this.step(head, yaw, pitch, dt);
    camera.position.set(p.x, p.y, p.z);
    camera.lookAt(head.x, head.y, head.z);
    return p;
  }
}
