// Snapshot interpolation for remote avatars with an adaptive delay. Snapshots are stamped
// with their server time (tick / tick_rate); their arrival times give the offset between
// the local clock and the server clock and the arrival jitter. Entities are drawn at
// `now - offset - delay`, between the two snapshots around that time, where the delay is
// about 2 to 3 snapshot intervals, more when the arrival jitter is high. Yaw is interpolated
// along the shorter arc. Pure computation: times are passed in (seconds).

const TWO_PI = 2 * Math.PI;

/** One entity's state in world units: metres, yaw in radians, the anim code.
 * @typedef {{ x: number, y: number, z: number, yaw: number, anim: number }} EntityState */

/** @param {number} a @param {number} b @param {number} w @returns {number} */
function lerpAngle(a, b, w) {
  let d = (b - a) % TWO_PI;
  if (d > Math.PI) d -= TWO_PI;
  else if (d < -Math.PI) d += TWO_PI;
  let r = (a + d * w) % TWO_PI;
  if (r < 0) r += TWO_PI;
  return r;
}

export class Interpolator {
  /**
   * @param {number} tickRate the server's ticks per second
   * @param {{ keep?: number, minIntervals?: number, maxIntervals?: number, hardMaxIntervals?: number }} [options]
   *   frames kept, and the delay's usual range and hard maximum in snapshot intervals
   */
  constructor(tickRate, { keep = 40, minIntervals = 2, maxIntervals = 3, hardMaxIntervals = 6 } = {}) {
    this.interval = 1 / tickRate;
    this.keep = keep;
    this.minDelay = minIntervals * this.interval;
    this.maxDelay = maxIntervals * this.interval;
    this.hardMaxDelay = hardMaxIntervals * this.interval;
    /** @type {{ tick: number, t: number, states: Map<number, EntityState> }[]} ascending t */
    this.frames = [];
    /** @type {number | null} local time - server time of the quickest arrivals */
    this.offset = null;
    this.jitter = 0; // mean arrival lateness beyond the quickest (seconds)
    this.delay = 2.5 * this.interval;
    /** @type {number | null} */
    this.lastArrival = null;
  }

  /** Adds a snapshot: server tick, its arrival time (local seconds), entity states.
   * @param {number} tick @param {number} arrival @param {Map<number, EntityState>} states */
  push(tick, arrival, states) {
    const t = tick * this.interval;
    const o = arrival - t;
    let offset = this.offset;
    if (offset === null) offset = o;
    else if (o < offset) offset += (o - offset) * 0.5; // quicker: follow fast
    else offset += (o - offset) * 0.01; // slower: drift up slowly (clock skew)
    this.offset = offset;
    this.jitter += (Math.max(0, o - offset) - this.jitter) * 0.1;
    // Delay: enough for the next snapshot to have arrived, 2..3 intervals normally.
    let target = this.interval * 1.5 + 2.5 * this.jitter;
    target = Math.max(this.minDelay, target);
    if (target > this.maxDelay) target = Math.min(this.hardMaxDelay, this.maxDelay + (target - this.maxDelay) * 0.5);
    this.delay += (target - this.delay) * 0.1;
    this.lastArrival = arrival;

    const frames = this.frames;
    let i = frames.length;
    while (i > 0 && frames[i - 1].tick > tick) i--;
    if (i > 0 && frames[i - 1].tick === tick) return; // duplicate
    frames.splice(i, 0, { tick, t, states });
    if (frames.length > this.keep) frames.splice(0, frames.length - this.keep);
  }

  /** Server time rendered at local time `now`. @param {number} now @returns {number} */
  renderTime(now) {
    if (this.offset === null) return 0;
    return now - this.offset - this.delay;
  }

  /** Entity states at local time `now`: Map id -> { x, y, z, yaw, anim }.
   * @param {number} now @returns {Map<number, EntityState>} */
  sample(now) {
    /** @type {Map<number, EntityState>} */
    const out = new Map();
    const frames = this.frames;
    if (!frames.length) return out;
    const t = this.renderTime(now);
    if (t <= frames[0].t) return new Map(frames[0].states);
    const last = frames[frames.length - 1];
    if (t >= last.t) return new Map(last.states);
    let k = frames.length - 1;
    while (k > 0 && frames[k - 1].t > t) k--;
    const a = frames[k - 1];
    const b = frames[k];
    const w = (t - a.t) / (b.t - a.t);
    for (const [id, sb] of b.states) {
      const sa = a.states.get(id);
      if (!sa) {
        out.set(id, sb);
        continue;
      }
      out.set(id, {
        x: sa.x + (sb.x - sa.x) * w,
        y: sa.y + (sb.y - sa.y) * w,
        z: sa.z + (sb.z - sa.z) * w,
        yaw: lerpAngle(sa.yaw, sb.yaw, w),
        anim: w < 0.5 ? sa.anim : sb.anim,
      });
    }
    return out;
  }

  /** Forgets every frame and the clock offset (a new connection). */
  clear() {
    this.frames.length = 0;
    this.offset = null;
    this.jitter = 0;
  }
}
