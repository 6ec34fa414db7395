// The pure rules of proximity calls on the page (docs/calls.md): the call.* events as the page
// keeps them (checked and copied, anything malformed is null), who makes the offer between two
// members, which peer connections to open and close for a member list, where a voice sits
// relative to the listener for a WebAudio PannerNode, and how loud a voice is (with a speaking
// flag that does not flicker).
//
// No DOM, no WebRTC, no WebAudio, no clock of its own: node tests run it as is. Must not: send
// anything or keep state beyond the SpeakingDetector it is asked to update.

/** The largest SDP the server relays (docs/calls.md: 12 KiB). */
export const MAX_SDP = 12 * 1024;
/** The reasons of call.left the contract names; another string is kept as "ended". */
export const LEFT_REASONS = Object.freeze(["moved_away", "muted", "kicked", "disabled", "ended"]);

/** A member of a call: its player name and its avatar's entity id.
 * @typedef {{ name: string, entityId: number }} CallMember */

/** The SFU ticket of a call.joined in "sfu" mode.
 * @typedef {{ url: string, room: number, token: string, display: string }} SfuTicket */

/** What a call.signal carries.
 * @typedef {{ type: "offer", sdp: string } | { type: "answer", sdp: string }
 *   | { type: "candidate", candidate: string, sdpMid: string | null, sdpMLineIndex: number | null,
 *       usernameFragment?: string | null }} SignalData */

/** A call event as the page keeps it.
 * @typedef {{ ev: "call.joined", group: string, zone: string | null, mode: "mesh" | "sfu", members: CallMember[], sfu: SfuTicket | null }
 *   | { ev: "call.members", group: string, members: CallMember[] }
 *   | { ev: "call.left", group: string, reason: string }
 *   | { ev: "call.full", group: string }
 *   | { ev: "call.signal", from: string, group: string, data: SignalData }} CallEvent */

/**
 * Orders two names by Unicode code point, as the server's Python sorts them (JavaScript's `<`
 * compares UTF-16 code units, which differs for characters beyond the BMP).
 * @param {string} a @param {string} b @returns {number} negative, 0 or positive
 */
export function compareNames(a, b) {
  const ia = a[Symbol.iterator]();
  const ib = b[Symbol.iterator]();
  for (;;) {
    const x = ia.next();
    const y = ib.next();
    if (x.done || y.done) return (x.done ? 0 : 1) - (y.done ? 0 : 1);
    const cx = /** @type {number} */ (x.value.codePointAt(0));
    const cy = /** @type {number} */ (y.value.codePointAt(0));
    if (cx !== cy) return cx - cy;
  }
}

/** True when `self` makes the offer to `other` (the name that sorts first offers).
 * @param {string} self @param {string} other */
export function isOfferer(self, other) {
  return compareNames(self, other) < 0;
}

/** @param {unknown} v @returns {v is Record<string, any>} */
function isObject(v) {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** @param {unknown} v @returns {v is string} */
function isText(v) {
  return typeof v === "string" && v.length > 0 && v.length <= 256;
}

/** A member of a members list, or null. @param {unknown} m @returns {CallMember | null} */
export function parseMember(m) {
  if (!isObject(m) || !isText(m.name) || !Number.isSafeInteger(m.entity_id) || m.entity_id < 0) return null;
  return { name: m.name, entityId: m.entity_id };
}

/** A members list (distinct names, malformed entries left out), or null when it is not a list.
 * @param {unknown} list @returns {CallMember[] | null} */
export function parseMembers(list) {
  if (!Array.isArray(list)) return null;
  /** @type {CallMember[]} */
  const out = [];
  const seen = new Set();
  for (const item of list) {
    const m = parseMember(item);
    if (m && !seen.has(m.name)) {
      seen.add(m.name);
      out.push(m);
    }
  }
  return out;
}

/** The data of a call.signal, or null when it is not one the contract allows.
 * @param {unknown} d @returns {SignalData | null} */
export function parseSignalData(d) {
  if (!isObject(d)) return null;
  if (d.type === "offer" || d.type === "answer") {
    if (typeof d.sdp !== "string" || d.sdp.length === 0 || d.sdp.length > MAX_SDP) return null;
    return d.type === "offer" ? { type: "offer", sdp: d.sdp } : { type: "answer", sdp: d.sdp };
  }
  if (d.type === "candidate") {
    if (typeof d.candidate !== "string" || d.candidate.length > 1024) return null;
    const mid = d.sdpMid === undefined || d.sdpMid === null ? null : d.sdpMid;
    const index = d.sdpMLineIndex === undefined || d.sdpMLineIndex === null ? null : d.sdpMLineIndex;
    if (mid !== null && (typeof mid !== "string" || mid.length > 64)) return null;
    if (index !== null && (!Number.isInteger(index) || index < 0 || index > 65535)) return null;
    const ufrag = d.usernameFragment === undefined || d.usernameFragment === null ? null : d.usernameFragment;
    if (ufrag !== null && (typeof ufrag !== "string" || ufrag.length > 256)) return null;
    return { type: "candidate", candidate: d.candidate, sdpMid: mid, sdpMLineIndex: index, usernameFragment: ufrag };
  }
  return null;
}

/** An SFU ticket, or null. Its url is a ws:// or wss:// URL, or ":<port>" (a Janus on every
 *  address of the page's host: sfuUrl completes it). @param {unknown} t @returns {SfuTicket | null} */
export function parseTicket(t) {
  if (!isObject(t)) return null;
  if (typeof t.url !== "string" || !/^(wss?:\/\/[^\s]+|:\d{1,5})$/.test(t.url) || t.url.length > 2048) return null;
  if (!Number.isSafeInteger(t.room) || t.room <= 0) return null;
  if (typeof t.token !== "string" || t.token.length === 0 || t.token.length > 512) return null;
  if (typeof t.display !== "string" || t.display.length > 256) return null;
  return { url: t.url, room: t.room, token: t.token, display: t.display };
}

/**
 * The WebSocket URL of a ticket's Janus: the ticket's URL, or for ":<port>" ws:// on the host
 * the page was loaded from (docs/calls.md, rooms and tickets).
 * @param {string} url the ticket's url @param {string} hostname location.hostname (an IPv6 one in brackets or not)
 * @returns {string}
 */
export function sfuUrl(url, hostname) {
  if (!url.startsWith(":")) return url;
  const host = hostname.includes(":") && !hostname.startsWith("[") ? `[${hostname}]` : hostname;
  return `ws://${host}${url}`;
}

/**
 * A call.* event frame of the chat socket as the page keeps it, or null when it is none or is
 * malformed (the page then ignores it).
 * @param {unknown} f the parsed frame ({"ev": ..., ...})
 * @returns {CallEvent | null}
 */
export function parseCallEvent(f) {
  if (!isObject(f) || typeof f.ev !== "string") return null;
  if (f.ev === "call.signal") {
    if (!isText(f.from) || !isText(f.group)) return null;
    const data = parseSignalData(f.data);
    return data ? { ev: "call.signal", from: f.from, group: f.group, data } : null;
  }
  if (!isText(f.group)) return null;
  switch (f.ev) {
    case "call.joined": {
      if (f.mode !== "mesh" && f.mode !== "sfu") return null;
      const members = parseMembers(f.members);
      if (!members) return null;
      const zone = isText(f.zone) ? f.zone : null;
      const sfu = f.mode === "sfu" ? parseTicket(f.sfu) : null;
      if (f.mode === "sfu" && !sfu) return null;
      return { ev: "call.joined", group: f.group, zone, mode: f.mode, members, sfu };
    }
    case "call.members": {
      const members = parseMembers(f.members);
      return members ? { ev: "call.members", group: f.group, members } : null;
    }
    case "call.left":
      return { ev: "call.left", group: f.group, reason: LEFT_REASONS.includes(f.reason) ? f.reason : "ended" };
    case "call.full":
      return { ev: "call.full", group: f.group };
    default:
      return null;
  }
}

/**
 * The mesh connections to open and to close so that there is one per other member: `open`
 * lists the new ones with whether this side offers, `close` the ones of members gone.
 * @param {string} self our name
 * @param {CallMember[]} members everyone in the call now (us included or not)
 * @param {Iterable<string>} current the names we have a connection to
 * @returns {{ open: { name: string, offer: boolean }[], close: string[] }}
 */
export function planPeers(self, members, current) {
  const want = new Set(members.map((m) => m.name).filter((n) => n !== self));
  const have = new Set(current);
  const open = [...want].filter((n) => !have.has(n)).sort(compareNames).map((name) => ({ name, offer: isOfferer(self, name) }));
  const close = [...have].filter((n) => !want.has(n)).sort(compareNames);
  return { open, close };
}

/**
 * Where a voice at `source` sits for a listener at `listener` facing `yaw`, in the coordinates
 * of a WebAudio listener left at the origin facing -z with +y up (its default): +x is the
 * listener's right, -z ahead. The world's yaw convention is the page's (main.js): forward is
 * (sin yaw, cos yaw) and right (-cos yaw, sin yaw) in (x, z).
 * @param {{ x: number, y?: number, z: number, yaw: number }} listener
 * @param {{ x: number, y?: number, z: number }} source
 * @returns {{ x: number, y: number, z: number }}
 */
export function relativePosition(listener, source) {
  const dx = source.x - listener.x;
  const dz = source.z - listener.z;
  const dy = (source.y || 0) - (listener.y || 0);
  const s = Math.sin(listener.yaw);
  const c = Math.cos(listener.yaw);
  const ahead = dx * s + dz * c;
  const right = -dx * c + dz * s;
  return { x: right, y: dy, z: -ahead };
}

/**
 * The gain a PannerNode with the "inverse" distance model gives at distance d (the Web Audio
 * spec's formula), for a test of "the nearer one is louder" and for the page's status.
 * @param {number} d metres @param {number} [ref] refDistance @param {number} [rolloff] rolloffFactor
 */
export function inverseGain(d, ref = 1, rolloff = 1) {
  const dist = Math.max(d, ref);
  return ref / (ref + rolloff * (dist - ref));
}

/** Root mean square of audio samples in -1..1 (AnalyserNode.getFloatTimeDomainData).
 * @param {ArrayLike<number>} samples @returns {number} */
export function rmsLevel(samples) {
  const n = samples.length;
  if (!n) return 0;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += samples[i] * samples[i];
  return Math.sqrt(sum / n);
}

/**
 * Whether someone speaks, from a level each frame: on above `on`, off once the level stayed
 * below `off` for `holdMs` (so a voice between syllables does not blink).
 */
export class SpeakingDetector {
  /** @param {{ on?: number, off?: number, holdMs?: number }} [options] */
  constructor({ on = 0.02, off = 0.01, holdMs = 400 } = {}) {
    this.on = on;
    this.off = off;
    this.holdMs = holdMs;
    this.speaking = false;
    /** @type {number | null} since when the level is below `off` (ms) */
    this.quietSince = null;
  }

  /** @param {number} level rmsLevel of this frame @param {number} now ms @returns {boolean} */
  update(level, now) {
    if (level >= this.on) {
      this.speaking = true;
      this.quietSince = null;
    } else if (level < this.off) {
      if (this.quietSince === null) this.quietSince = now;
      if (this.speaking && now - this.quietSince >= this.holdMs) this.speaking = false;
    } else if (this.speaking) {
      this.quietSince = null; // between the thresholds: still speaking
    }
    return this.speaking;
  }
}
