// The dashboard's memory of the server: a bounded ring of the status answers it polled (one a
// second, the last RING_SECONDS of them), and the series the charts and the drops table read
// from it. Time is the server's uptime, so a slow poll does not bend the charts, and a server
// that started again (its uptime went back) starts a fresh ring. Pure data, no DOM.

export const RING_SECONDS = 300; // five minutes at one sample a second

/**
 * What the ring keeps of one GET /admin/api/status answer.
 * @typedef {object} Sample
 * @property {number} t the server's uptime, seconds
 * @property {number} tickP50 tick duration, ms
 * @property {number} tickP99
 * @property {number} lateP50 tick lateness, ms
 * @property {number} lateP99
 * @property {Record<string, number>} clients by transport, and `total`
 * @property {number} bytesIn bytes per second received, every transport together
 * @property {number} bytesOut
 * @property {number} drops drops per second
 * @property {Record<string, number>} dropCounts every drop counter since the start
 */

/** The status answer's figures as a Sample (missing ones are 0). @param {any} status @returns {Sample} */
export function sampleOf(status) {
  const num = (/** @type {unknown} */ v) => (typeof v === "number" && Number.isFinite(v) ? v : 0);
  const tick = (status && status.tick) || {};
  const bps = (status && status.bytes_per_second) || {};
  let bytesIn = 0;
  let bytesOut = 0;
  for (const pair of Object.values(bps)) {
    bytesIn += num(/** @type {any} */ (pair).in);
    bytesOut += num(/** @type {any} */ (pair).out);
  }
  /** @type {Record<string, number>} */
  const clients = {};
  for (const [k, v] of Object.entries((status && status.clients) || {})) clients[k] = num(v);
  /** @type {Record<string, number>} */
  const dropCounts = {};
  for (const [k, v] of Object.entries((status && status.drops) || {})) dropCounts[k] = num(v);
  return {
    t: num(status && status.uptime),
    tickP50: num(tick.duration_ms && tick.duration_ms.p50),
    tickP99: num(tick.duration_ms && tick.duration_ms.p99),
    lateP50: num(tick.lateness_ms && tick.lateness_ms.p50),
    lateP99: num(tick.lateness_ms && tick.lateness_ms.p99),
    clients,
    bytesIn,
    bytesOut,
    drops: num(status && status.drops_per_second),
    dropCounts,
  };
}

/** The last `seconds` of samples, oldest first. */
export class SampleRing {
  /** @param {number} [seconds] */
  constructor(seconds = RING_SECONDS) {
    this.seconds = seconds;
    /** @type {Sample[]} */
    this.samples = [];
  }

  get length() {
    return this.samples.length;
  }

  /** The newest sample, or null. @returns {Sample | null} */
  get last() {
    return this.samples.length ? this.samples[this.samples.length - 1] : null;
  }

  /**
   * Adds a sample. One with the newest one's uptime is the same second polled twice and
   * replaces it; an earlier uptime means the server started again, and the ring starts over.
   * @param {Sample} s
   */
  push(s) {
    const last = this.last;
    if (last && s.t < last.t) this.samples = [];
    else if (last && s.t === last.t) this.samples.pop();
    this.samples.push(s);
    const oldest = s.t - this.seconds;
    let cut = 0;
    while (cut < this.samples.length && this.samples[cut].t < oldest) cut++;
    if (cut) this.samples.splice(0, cut);
  }

  /**
   * One chart line: [uptime, value] points.
   * @param {(s: Sample) => number} pick
   * @returns {number[][]}
   */
  series(pick) {
    return this.samples.map((s) => [s.t, pick(s)]);
  }

  /**
   * Every drop counter: its total, and how much it grew over the last `window` seconds (to
   * the oldest sample in that window), largest growth first, then largest total; counters at
   * zero are left out.
   * @param {number} [window]
   * @returns {{ reason: string, total: number, recent: number }[]}
   */
  drops(window = 60) {
    const last = this.last;
    if (!last) return [];
    const since = this.samples.find((s) => s.t >= last.t - window) || last;
    const rows = [];
    for (const [reason, total] of Object.entries(last.dropCounts)) {
      if (total <= 0) continue;
      rows.push({ reason, total, recent: Math.max(0, total - (since.dropCounts[reason] || 0)) });
    }
    rows.sort((a, b) => b.recent - a.recent || b.total - a.total || (a.reason < b.reason ? -1 : 1));
    return rows;
  }
}
