// A minimal Janus VideoRoom client (the SFU side of docs/calls.md), written for this page: the
// Janus WebSocket API (subprotocol `janus-protocol`) with the ticket of a call.joined event.
// It creates a session, attaches janus.plugin.videoroom, joins the ticket's room as publisher
// with the ticket's token and display, publishes the local tracks (unless listening only),
// subscribes to every other publisher with one handle and one receive-only connection each,
// follows the room's publishers as they come and go, trickles ICE both ways and sends a
// keepalive every `keepaliveMs` (Janus ends a silent session after 60 s).
//
// The message builders and parseJanus are pure; JanusRoom takes its socket, connections and
// timers from the caller, so node tests drive it against a fake Janus. Must not: stop the local
// tracks (they belong to the call), or talk to Janus's admin API (rooms and tokens are the
// server's, worldserver/calls/janus.py).

export const JANUS_PROTOCOL = "janus-protocol";
export const VIDEOROOM = "janus.plugin.videoroom";
const KEEPALIVE_MS = 25000;
const REQUEST_TIMEOUT_MS = 15000;

/** @typedef {import("./logic.js").SfuTicket} SfuTicket */
/** @typedef {{ id: number, display: string }} Publisher */

/**
 * A Janus message as the client reads it.
 * @typedef {object} JanusMessage
 * @property {string} janus "success", "error", "ack", "event", "webrtcup", "hangup", "media", "slowlink", "detached", "timeout", "trickle", ...
 * @property {string | null} transaction
 * @property {number | null} sender the handle it is about
 * @property {number | null} session
 * @property {any} data `data` of a success (the new id), or the plugin's data of an event
 * @property {{ type: string, sdp: string } | null} jsep
 * @property {{ code: number, reason: string } | null} error Janus's error, or the plugin's
 * @property {any} candidate of a trickle from Janus
 */

// ------------------------------------------------------------------------------ builders

/** @param {string} tx */
export const createMsg = (tx) => ({ janus: "create", transaction: tx });
/** @param {string} tx @param {number} session @param {string} [plugin] */
export const attachMsg = (tx, session, plugin = VIDEOROOM) => ({ janus: "attach", transaction: tx, session_id: session, plugin });
/** @param {string} tx @param {number} session */
export const keepaliveMsg = (tx, session) => ({ janus: "keepalive", transaction: tx, session_id: session });
/** @param {string} tx @param {number} session */
export const destroyMsg = (tx, session) => ({ janus: "destroy", transaction: tx, session_id: session });
/** @param {string} tx @param {number} session @param {number} handle */
export const detachMsg = (tx, session, handle) => ({ janus: "detach", transaction: tx, session_id: session, handle_id: handle });

/**
 * A plugin message, with a JSEP when it carries an offer or answer.
 * @param {string} tx @param {number} session @param {number} handle @param {Record<string, unknown>} body
 * @param {{ type: string, sdp: string } | null} [jsep]
 */
export function messageMsg(tx, session, handle, body, jsep = null) {
  /** @type {Record<string, unknown>} */
  const m = { janus: "message", transaction: tx, session_id: session, handle_id: handle, body };
  if (jsep) m.jsep = { type: jsep.type, sdp: jsep.sdp };
  return m;
}

/**
 * A trickled candidate, or the end of them (null).
 * @param {string} tx @param {number} session @param {number} handle
 * @param {{ candidate: string, sdpMid: string | null, sdpMLineIndex: number | null } | null} c
 */
export function trickleMsg(tx, session, handle, c) {
  const candidate = c && c.candidate ? { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex } : { completed: true };
  return { janus: "trickle", transaction: tx, session_id: session, handle_id: handle, candidate };
}

/** The publisher's join. @param {SfuTicket} ticket */
export const publisherJoin = (ticket) => ({ request: "join", ptype: "publisher", room: ticket.room, display: ticket.display, token: ticket.token });
/** Publish with the offer in the JSEP (Janus 1.x: the streams come from the SDP). */
export const publishBody = () => ({ request: "publish" });
/** A subscription to one publisher. @param {SfuTicket} ticket @param {number} feed @param {number | null} privateId */
export function subscriberJoin(ticket, feed, privateId) {
  /** @type {Record<string, unknown>} */
  const body = { request: "join", ptype: "subscriber", room: ticket.room, streams: [{ feed }], token: ticket.token };
  if (privateId !== null) body.private_id = privateId;
  return body;
}
/** The subscriber's answer goes with "start". */
export const startBody = () => ({ request: "start" });

// ------------------------------------------------------------------------------ parsing

/** @param {unknown} v @returns {number | null} */
const idOf = (v) => (Number.isSafeInteger(v) ? /** @type {number} */ (v) : null);

/**
 * A message from Janus (text or parsed), or null when it is not one.
 * @param {unknown} raw
 * @returns {JanusMessage | null}
 */
export function parseJanus(raw) {
  let m = raw;
  if (typeof raw === "string") {
    try {
      m = JSON.parse(raw);
    } catch {
      return null;
    }
  }
  if (!m || typeof m !== "object" || Array.isArray(m)) return null;
  const o = /** @type {Record<string, any>} */ (m);
  if (typeof o.janus !== "string") return null;
  const plugin = o.plugindata && typeof o.plugindata === "object" ? o.plugindata.data ?? null : null;
  /** @type {{ code: number, reason: string } | null} */
  let error = null;
  if (o.janus === "error" && o.error && typeof o.error === "object") {
    error = { code: Number(o.error.code) || 0, reason: String(o.error.reason ?? "error") };
  } else if (plugin && typeof plugin === "object" && plugin.error_code !== undefined) {
    error = { code: Number(plugin.error_code) || 0, reason: String(plugin.error ?? "error") };
  }
  const jsep = o.jsep && typeof o.jsep === "object" && typeof o.jsep.sdp === "string" && (o.jsep.type === "offer" || o.jsep.type === "answer") ? { type: o.jsep.type, sdp: o.jsep.sdp } : null;
  return {
    janus: o.janus,
    transaction: typeof o.transaction === "string" ? o.transaction : null,
    sender: idOf(o.sender),
    session: idOf(o.session_id),
    data: plugin !== null ? plugin : o.data ?? null,
    jsep,
    error,
    candidate: o.candidate ?? null,
  };
}

/** @param {unknown} list @param {number | null} self @returns {Publisher[]} */
function publishersOf(list, self) {
  if (!Array.isArray(list)) return [];
  /** @type {Publisher[]} */
  const out = [];
  for (const p of list) {
    if (!p || typeof p !== "object") continue;
    const id = idOf(p.id);
    if (id === null || id === self || p.dummy) continue;
    out.push({ id, display: typeof p.display === "string" ? p.display : "" });
  }
  return out;
}

/**
 * What a VideoRoom event says about the room: our id when we joined, publishers to subscribe
 * to, the feeds that went away, whether we were kicked or the room is gone.
 * @param {any} data the plugin data of an event
 * @param {number | null} self our publisher id (left out of the publishers)
 * @returns {{ joined: { id: number, privateId: number | null } | null, publishers: Publisher[], gone: number[], kicked: boolean, destroyed: boolean }}
 */
export function roomEvent(data, self) {
  const out = { joined: /** @type {{ id: number, privateId: number | null } | null} */ (null), publishers: /** @type {Publisher[]} */ ([]), gone: /** @type {number[]} */ ([]), kicked: false, destroyed: false };
  if (!data || typeof data !== "object") return out;
  if (data.videoroom === "joined") {
    const id = idOf(data.id);
    if (id !== null) out.joined = { id, privateId: idOf(data.private_id) };
    out.publishers = publishersOf(data.publishers, id);
    return out;
  }
  if (data.videoroom === "destroyed") {
    out.destroyed = true;
    return out;
  }
  if (data.videoroom !== "event") return out;
  out.publishers = publishersOf(data.publishers, self);
  for (const key of ["unpublished", "leaving"]) {
    const id = idOf(data[key]);
    if (id !== null && id !== self) out.gone.push(id);
    else if (data[key] === "ok" && key === "leaving") out.kicked = true; // we left (or were made to)
  }
  const kicked = idOf(data.kicked);
  if (kicked !== null && kicked !== self) out.gone.push(kicked);
  if (data.kicked !== undefined && (kicked === self || kicked === null)) out.kicked = true;
  return out;
}

// ------------------------------------------------------------------------------ the room

/** A WebSocket or what tests give instead.
 * @typedef {{ readyState: number, send(data: string): void, close(code?: number, reason?: string): void,
 *   onopen: ((ev?: unknown) => void) | null, onmessage: ((ev: { data?: unknown }) => void) | null,
 *   onclose: ((ev?: unknown) => void) | null, onerror: ((ev?: unknown) => void) | null }} JanusSocket */

/** @typedef {{ setTimeout(fn: () => void, ms: number): unknown, clearTimeout(t: unknown): void,
 *   setInterval(fn: () => void, ms: number): unknown, clearInterval(t: unknown): void }} JanusTimers */

/** @type {JanusTimers} */
const defaultTimers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (t) => clearTimeout(/** @type {any} */ (t)),
  setInterval: (fn, ms) => setInterval(fn, ms),
  clearInterval: (t) => clearInterval(/** @type {any} */ (t)),
};

/** @param {string} url @param {string} protocol @returns {JanusSocket} */
const defaultOpenSocket = (url, protocol) => /** @type {JanusSocket} */ (/** @type {unknown} */ (new WebSocket(url, protocol)));

export class JanusError extends Error {
  /** @param {number} code @param {string} reason */
  constructor(code, reason) {
    super(`janus: ${reason} (${code})`);
    this.code = code;
    this.reason = reason;
  }
}

/** One subscription: a handle and its receive-only connection. */
class Subscription {
  /** @param {Publisher} publisher */
  constructor(publisher) {
    this.feed = publisher.id;
    this.display = publisher.display;
    /** @type {number | null} */
    this.handle = null;
    /** @type {RTCPeerConnection | null} */
    this.pc = null;
    this.closed = false;
    /** @type {MediaStreamTrack[]} */
    this.tracks = [];
  }
}

export class JanusRoom {
  /**
   * @param {{
   *   ticket: SfuTicket,
   *   tracks: MediaStreamTrack[],
   *   stream?: MediaStream | null,
   *   createPeerConnection: () => RTCPeerConnection,
   *   openSocket?: (url: string, protocol: string) => JanusSocket,
   *   timers?: JanusTimers,
   *   onTrack?: (track: MediaStreamTrack, publisher: Publisher) => void,
   *   onGone?: (publisher: Publisher) => void,
   *   onState?: (room: JanusRoom) => void,
   *   keepaliveMs?: number,
   *   requestTimeoutMs?: number,
   * }} options
   */
  constructor({ ticket, tracks, stream = null, createPeerConnection, openSocket = defaultOpenSocket, timers = defaultTimers, onTrack = () => {}, onGone = () => {}, onState = () => {}, keepaliveMs = KEEPALIVE_MS, requestTimeoutMs = REQUEST_TIMEOUT_MS }) {
    this.ticket = ticket;
    this.tracks = tracks;
    this.stream = stream;
    this.createPeerConnection = createPeerConnection;
    this.openSocket = openSocket;
    this.timers = timers;
    this.onTrack = onTrack;
    this.onGone = onGone;
    this.onState = onState;
    this.keepaliveMs = keepaliveMs;
    this.requestTimeoutMs = requestTimeoutMs;
    /** @type {"new" | "connecting" | "joined" | "published" | "failed" | "closed"} */
    this.state = "new";
    this.error = "";
    /** @type {JanusSocket | null} */
    this.ws = null;
    /** @type {number | null} */
    this.session = null;
    /** @type {number | null} the publisher handle */
    this.handle = null;
    /** @type {number | null} our publisher id in the room */
    this.selfId = null;
    /** @type {number | null} */
    this.privateId = null;
    /** @type {RTCPeerConnection | null} */
    this.pubPc = null;
    /** @type {Map<number, Subscription>} feed -> */
    this.subs = new Map();
    this._tx = 0;
    /** @type {Map<string, { resolve: (m: JanusMessage) => void, reject: (e: Error) => void, timer: unknown }>} */
    this._pending = new Map();
    /** @type {unknown} */
    this._keepalive = null;
    this.sent = 0;
    this.received = 0;
  }

  /** @param {"new" | "connecting" | "joined" | "published" | "failed" | "closed"} s @param {string} [error] */
  _setState(s, error = "") {
    if (this._closed()) return;
    if (error) this.error = error;
    if (this.state === s) return;
    this.state = s;
    this.onState(this);
  }

  /** Connects, joins, publishes and subscribes; resolves when joined (and published). Errors
   *  end in state "failed" with `error`, never as a rejection. @returns {Promise<void>} */
  async start() {
    if (this.state !== "new") return;
    this._setState("connecting");
    try {
      await this._open();
      const created = await this._call(createMsg(this._nextTx()));
      this.session = idOf(created.data && created.data.id);
      if (this.session === null) throw new JanusError(0, "no session id");
      this._keepalive = this.timers.setInterval(() => {
        if (this.session !== null) this._send(keepaliveMsg(this._nextTx(), this.session));
      }, this.keepaliveMs);
      this.handle = await this._attach();
      const joined = await this._call(messageMsg(this._nextTx(), this.session, this.handle, publisherJoin(this.ticket)));
      const ev = roomEvent(joined.data, null);
      if (!ev.joined) throw new JanusError(0, "join without an id");
      this.selfId = ev.joined.id;
      this.privateId = ev.joined.privateId;
      if (this._closed()) return;
      this._setState("joined");
      for (const p of ev.publishers) this._subscribe(p);
      if (this.tracks.length) await this._publish();
    } catch (e) {
      if (this._closed()) return;
      this._setState("failed", e instanceof Error ? e.message : String(e));
    }
  }

  _nextTx() {
    return `w${++this._tx}`;
  }

  /** @returns {Promise<void>} */
  _open() {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = this.openSocket(this.ticket.url, JANUS_PROTOCOL);
      } catch (e) {
        reject(e);
        return;
      }
      this.ws = ws;
      const timer = this.timers.setTimeout(() => reject(new JanusError(0, "no connection to the SFU")), this.requestTimeoutMs);
      ws.onopen = () => {
        this.timers.clearTimeout(timer);
        resolve();
      };
      ws.onmessage = (ev) => this._onMessage(ev && ev.data);
      ws.onclose = () => {
        this.timers.clearTimeout(timer);
        reject(new JanusError(0, "the SFU closed the connection"));
        this._lost("the SFU closed the connection");
      };
      ws.onerror = () => {};
    });
  }

  /** @param {Record<string, unknown>} msg */
  _send(msg) {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1) return false;
    try {
      ws.send(JSON.stringify(msg));
      this.sent++;
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Sends a request and resolves with its answer: a "success", or the plugin's "event" with
   * the same transaction (after Janus's "ack"); an error (Janus's or the plugin's) rejects.
   * @param {Record<string, any>} msg @returns {Promise<JanusMessage>}
   */
  _call(msg) {
    const tx = /** @type {string} */ (msg.transaction);
    return new Promise((resolve, reject) => {
      const timer = this.timers.setTimeout(() => {
        if (this._pending.delete(tx)) reject(new JanusError(0, `no answer to ${msg.janus}`));
      }, this.requestTimeoutMs);
      this._pending.set(tx, { resolve, reject, timer });
      if (!this._send(msg)) {
        this._pending.delete(tx);
        this.timers.clearTimeout(timer);
        reject(new JanusError(0, "not connected to the SFU"));
      }
    });
  }

  /** @returns {Promise<number>} a new handle on the VideoRoom plugin */
  async _attach() {
    const r = await this._call(attachMsg(this._nextTx(), /** @type {number} */ (this.session)));
    const id = idOf(r.data && r.data.id);
    if (id === null) throw new JanusError(0, "attach without a handle id");
    return id;
  }

  /** @param {unknown} text */
  _onMessage(text) {
    const m = parseJanus(text);
    if (!m) return;
    this.received++;
    if (m.transaction !== null && m.janus !== "ack") {
      const p = this._pending.get(m.transaction);
      if (p && (m.janus === "success" || m.janus === "error" || m.janus === "event")) {
        this._pending.delete(m.transaction);
        this.timers.clearTimeout(p.timer);
        if (m.error) p.reject(new JanusError(m.error.code, m.error.reason));
        else p.resolve(m);
        return;
      }
    }
    switch (m.janus) {
      case "event":
        if (m.sender !== null && m.sender === this.handle) this._roomEvent(m.data);
        break;
      case "trickle":
        this._remoteCandidate(m.sender, m.candidate);
        break;
      case "hangup":
      case "detached": {
        if (m.sender === this.handle) {
          if (this.state !== "closed") this._setState("failed", `the SFU hung up (${m.janus})`);
          break;
        }
        for (const s of this.subs.values()) if (s.handle === m.sender) this._unsubscribe(s.feed);
        break;
      }
      case "timeout":
        this._lost("the SFU session timed out");
        break;
      default:
        break; // ack, webrtcup, media, slowlink: nothing to do
    }
  }

  /** @param {any} data */
  _roomEvent(data) {
    const ev = roomEvent(data, this.selfId);
    for (const p of ev.publishers) this._subscribe(p);
    for (const id of ev.gone) this._unsubscribe(id);
    if (ev.kicked || ev.destroyed) this._setState("failed", ev.destroyed ? "the room was closed" : "left the room");
  }

  /** @param {number | null} handle @param {any} c */
  _remoteCandidate(handle, c) {
    if (!c || typeof c !== "object" || handle === null) return;
    let pc = null;
    if (handle === this.handle) pc = this.pubPc;
    else for (const s of this.subs.values()) if (s.handle === handle) pc = s.pc;
    if (!pc) return;
    const init = c.completed ? { candidate: "" } : { candidate: String(c.candidate ?? ""), sdpMid: c.sdpMid ?? null, sdpMLineIndex: c.sdpMLineIndex ?? null };
    pc.addIceCandidate(init).catch(() => {});
  }

  /** Trickles a connection's candidates on a handle.
   * @param {RTCPeerConnection} pc @param {() => number | null} handle */
  _trickle(pc, handle) {
    pc.onicecandidate = (ev) => {
      const h = handle();
      if (h === null || this.session === null || this.state === "closed") return;
      const c = ev.candidate;
      this._send(trickleMsg(this._nextTx(), this.session, h, c ? { candidate: c.candidate, sdpMid: c.sdpMid ?? null, sdpMLineIndex: c.sdpMLineIndex ?? null } : null));
    };
  }

  async _publish() {
    const pc = this.createPeerConnection();
    this.pubPc = pc;
    this._trickle(pc, () => this.handle);
    for (const t of this.tracks) pc.addTransceiver(t, { direction: "sendonly", streams: this.stream ? [this.stream] : [] });
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const local = pc.localDescription;
    const r = await this._call(messageMsg(this._nextTx(), /** @type {number} */ (this.session), /** @type {number} */ (this.handle), publishBody(), { type: "offer", sdp: local ? local.sdp : offer.sdp || "" }));
    if (!r.jsep || r.jsep.type !== "answer") throw new JanusError(0, "publish without an answer");
    if (this._closed()) return;
    await pc.setRemoteDescription(/** @type {RTCSessionDescriptionInit} */ (r.jsep));
    this._setState("published");
  }

  /** Subscribes to a publisher (once). @param {Publisher} p */
  _subscribe(p) {
    if (this.subs.has(p.id) || this.state === "closed" || p.id === this.selfId) return;
    const sub = new Subscription(p);
    this.subs.set(p.id, sub);
    this._runSubscription(sub).catch((e) => {
      if (sub.closed || this.state === "closed") return;
      this.error = `subscription to ${p.display || p.id}: ${e instanceof Error ? e.message : e}`;
      this._unsubscribe(p.id);
    });
  }

  /** @param {Subscription} sub */
  async _runSubscription(sub) {
    const session = /** @type {number} */ (this.session);
    sub.handle = await this._attach();
    if (sub.closed) {
      this._send(detachMsg(this._nextTx(), session, sub.handle));
      return;
    }
    const r = await this._call(messageMsg(this._nextTx(), session, sub.handle, subscriberJoin(this.ticket, sub.feed, this.privateId)));
    if (!r.jsep || r.jsep.type !== "offer") throw new JanusError(0, "subscription without an offer");
    if (sub.closed) return;
    const pc = this.createPeerConnection();
    sub.pc = pc;
    this._trickle(pc, () => sub.handle);
    pc.ontrack = (ev) => {
      if (sub.closed) return;
      sub.tracks.push(ev.track);
      this.onTrack(ev.track, { id: sub.feed, display: sub.display });
    };
    await pc.setRemoteDescription(/** @type {RTCSessionDescriptionInit} */ (r.jsep));
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    if (sub.closed) return;
    const local = pc.localDescription;
    await this._call(messageMsg(this._nextTx(), session, sub.handle, startBody(), { type: "answer", sdp: local ? local.sdp : answer.sdp || "" }));
  }

  /** @param {number} feed */
  _unsubscribe(feed) {
    const sub = this.subs.get(feed);
    if (!sub) return;
    this.subs.delete(feed);
    sub.closed = true;
    if (sub.pc) {
      sub.pc.ontrack = null;
      sub.pc.onicecandidate = null;
      sub.pc.close();
    }
    if (sub.handle !== null && this.session !== null) this._send(detachMsg(this._nextTx(), this.session, sub.handle));
    this.onGone({ id: sub.feed, display: sub.display });
  }

  /** The connections of this room: the publisher's and one per subscription. */
  connections() {
    /** @type {{ feed: number | null, display: string, pc: RTCPeerConnection }[]} */
    const out = [];
    if (this.pubPc) out.push({ feed: null, display: this.ticket.display, pc: this.pubPc });
    for (const s of this.subs.values()) if (s.pc) out.push({ feed: s.feed, display: s.display, pc: s.pc });
    return out;
  }

  /** @param {string} why */
  _lost(why) {
    if (this._closed()) return;
    this._stopAll();
    this._setState("failed", why);
  }

  _stopAll() {
    this.timers.clearInterval(this._keepalive);
    this._keepalive = null;
    for (const p of this._pending.values()) {
      this.timers.clearTimeout(p.timer);
      p.reject(new JanusError(0, "closed"));
    }
    this._pending.clear();
    for (const feed of [...this.subs.keys()]) this._unsubscribe(feed);
    if (this.pubPc) {
      this.pubPc.onicecandidate = null;
      this.pubPc.close();
      this.pubPc = null;
    }
  }

  /** @returns {boolean} (a method, so the checks after an await are not narrowed away) */
  _closed() {
    return this.state === "closed";
  }

  /** Leaves: the session is destroyed (Janus leaves the room for us), the socket closed. */
  close() {
    if (this._closed()) return;
    this._stopAll();
    if (this.session !== null) this._send(destroyMsg(this._nextTx(), this.session));
    this.session = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(1000, "bye");
      } catch {
        // already closed
      }
    }
    this.state = "closed";
    this.onState(this);
  }
}
