// One player's network session: picks a transport (WebRTC through geckos.io first, the
// WebSocket /ws/movement when the data channel does not open in time or WebRTC is missing),
// runs the native protocol over it (trusted handshake with the join token, acks, keep-alive,
// timeout), sends one INPUT per tick with the last 4 inputs, decodes snapshot parts and
// assembles them into the mirror (a tick counts once all its parts are decoded), predicts
// the own avatar and feeds remote ones to the interpolator. On loss it
// reconnects with exponential backoff (a new handshake, a new avatar), except after a
// DISCONNECT "replaced": the same player logged in again elsewhere (state "replaced"), and
// reconnecting with this page's token would only fight that newer login; after a DISCONNECT
// "kicked": the server's operator or a moderator removed the player (state "kicked", `error`
// is the server's text: who, why, for how long a ban lasts; the kick ended the token and a
// ban would refuse a new join anyway); and after a DISCONNECT "world_closed": the operator
// closed this world (state "closed", `error` says why, with the text the server sent).
//
// No DOM beyond the network APIs (fetch is not used here; WebSocket/RTCPeerConnection via
// transports.js), so the 3D view and the UI only read its state.

import { ClientConnection, CONNECTED } from "../protocol/connection.js";
import { ANIM_IDLE, ANIM_WALK, encodeInputs, FLAG_JUMP } from "../protocol/messages.js";
import * as P from "../protocol/packets.js";
import { dequantizeYaw, Quantizer, quantizeYaw } from "../protocol/quantize.js";
import { FIELDS, SnapshotStore } from "../protocol/snapshot.js";
import { Interpolator } from "../world/interpolate.js";
import { Predictor } from "../world/predict.js";
import { startPump } from "./pump.js";
import { movementSocketUrl, openWebRTC, openWebSocket, webrtcAvailable } from "./transports.js";

const INPUTS_PER_PACKET = 4;
const MAX_CATCH_UP = 4; // ticks of inputs made at once after the page was busy
const PUMP_MS = 5;
const BACKOFF_MIN = 0.5;
const BACKOFF_MAX = 10;
const WEBRTC_HANDSHAKE_TIMEOUT = 2.5; // seconds for HELLO -> ACCEPT once the channel is open
const WEBRTC_STICKY_FAILURES = 3; // after this many failures in a row, stay on the WebSocket

const nowSeconds = () => performance.now() / 1000;

/** @typedef {import("./transports.js").Transport} Transport */
/** @typedef {import("../world/interpolate.js").EntityState} EntityState */
/** @typedef {import("../protocol/snapshot.js").View} View */
/** @typedef {import("../protocol/snapshot.js").PartHeader} PartHeader */
/** @typedef {"idle" | "connecting" | "connected" | "reconnecting" | "refused" | "replaced" | "kicked" | "closed" | "stopped"} SessionState */

/** DISCONNECT reasons that end the session for good (no reconnect): the state it takes and
 * what `error` says, from the DISCONNECT's text (SPEC 3).
 * @type {Record<string, { state: SessionState, error: (text: string) => string }>} */
const FINAL_DISCONNECTS = {
  // The same player joined again (another window or device).
  replaced: { state: "replaced", error: () => "signed in elsewhere: this window's avatar was replaced by a newer login" },
  // The server's operator or a moderator kicked the player; the text says who, why, how long.
  kicked: { state: "kicked", error: (text) => text || "removed by the server's operator" },
  // The operator closed this world: there is nothing to reconnect to.
  world_closed: { state: "closed", error: (text) => `this world was closed${text ? `: ${text}` : ""}` },
};

/** States after which the session does not reconnect. */
const ENDED = new Set(["stopped", "refused", "replaced", "kicked", "closed"]);

/** The player's intent for one tick: world axes -1..1, yaw in radians.
 * @typedef {{ moveX?: number, moveZ?: number, yaw?: number, jump?: boolean }} Controls */

/** What the session needs of /api/client-config, plus the world's walls.
 * @typedef {object} SessionConfig
 * @property {number} [datachannel_timeout_ms] how long WebRTC may take to open (default 3000)
 * @property {number} [tick_rate]
 * @property {boolean} [webrtc] false: the server has WebRTC off
 * @property {import("../world/walls.js").Walls | null} [walls] the world's walls, for prediction
 */

/** How transports are opened (replaceable in tests).
 * @typedef {object} Openers
 * @property {() => boolean} webrtcAvailable
 * @property {(opts: { url: string, token: string, timeoutMs: number }) => Promise<{ transport: Transport, offerToOpenMs: number }>} webrtc
 * @property {(opts: { origin: string, timeoutMs: number }) => Promise<{ transport: Transport }>} websocket
 */

/** A rolling per-second rate over a short window. */
class Rate {
  /** @param {number} [window] seconds */
  constructor(window = 2) {
    this.window = window;
    /** @type {[number, number][]} [time, amount] */
    this.events = [];
  }

  /** @param {number} t @param {number} [amount] */
  add(t, amount = 1) {
    this.events.push([t, amount]);
    this._trim(t);
  }

  /** @param {number} t */
  _trim(t) {
    let k = 0;
    while (k < this.events.length && this.events[k][0] < t - this.window) k++;
    if (k) this.events.splice(0, k);
  }

  /** @param {number} t @returns {number} */
  perSecond(t) {
    this._trim(t);
    let sum = 0;
    for (const e of this.events) sum += e[1];
    return sum / this.window;
  }
}

export class NetSession {
  /**
   * origin: page origin (http://host:port); token: join token; config: /api/client-config
   * ({ datachannel_timeout_ms, tick_rate }); controls(): the player's intent for one tick,
   * { moveX, moveZ (world axes, -1..1), yaw (radians), jump (bool) }.
   * @param {{ origin: string, token: string, config: SessionConfig, controls: () => Controls | null | undefined, openers?: Openers | null }} options
   */
  constructor({ origin, token, config, controls, openers = null }) {
    this.origin = origin;
    this.token = token;
    this.datachannelTimeoutMs = Math.max(100, Number(config.datachannel_timeout_ms) || 3000);
    this.walls = config.walls || null; // ../world/walls.js Walls of the world, for prediction
    this.controls = controls;
    // How transports are opened (replaceable in tests): { webrtcAvailable(), webrtc(opts),
    // websocket(opts) }.
    /** @type {Openers} */
    this.openers = openers || {
      webrtcAvailable,
      webrtc: openWebRTC,
      websocket: (opts) => openWebSocket({ ...opts, url: movementSocketUrl(opts.origin) }),
    };
    this.webrtcOffered = config.webrtc !== false; // the server may say it has WebRTC off
    /** @type {SessionState} */
    this.state = "idle";
    /** @type {Transport | null} */
    this.transport = null;
    /** @type {Transport["kind"] | null} */
    this.transportKind = null;
    /** @type {ClientConnection | null} */
    this.conn = null;
    /** @type {import("../protocol/connection.js").ServerWelcome | null} */
    this.welcome = null;
    /** @type {Quantizer | null} */
    this.quantizer = null;
    /** @type {SnapshotStore | null} */
    this.store = null;
    /** @type {Predictor | null} */
    this.predictor = null;
    /** @type {Interpolator | null} */
    this.interp = null;
    /** @type {number | null} */
    this.selfId = null;
    this.error = "";
    this.lastCloseReason = "";
    /** @type {number | null} */
    this.offerToOpenMs = null;
    this.webrtcFailures = 0;
    this.webrtcLastError = "";
    this.reconnects = 0;
    this.connects = 0;
    this.backoff = BACKOFF_MIN;
    this.firstSnapshot = false;
    /** @type {number[] | null} own position [x, y, z], predicted */
    this.predicted = null;
    this.correction = [0, 0, 0]; // visual offset after a reconciliation, decays to 0
    this.maxCorrection = 0; // metres: the largest jump a reconciliation made (stats: max_correction_m)
    /** @type {EntityState | null} own state in the newest snapshot */
    this.serverSelf = null;
    this.inputSeq = 0;
    /** @type {Required<import("../protocol/messages.js").Input>[]} */
    this.recentInputs = [];
    this.nextTickAt = 0;
    this.snapRate = new Rate(); // complete ticks
    this.partRate = new Rate(); // decoded snapshot parts
    this.inRate = new Rate();
    this.outRate = new Rate();
    /** @type {{ snapshot: ((header: PartHeader, view: View) => void)[], status: ((session: NetSession) => void)[] }} */
    this.listeners = { snapshot: [], status: [] };
    /** @type {(() => void) | null} */
    this._stopPump = null;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._attemptTimer = undefined;
    /** @type {((result: string) => void) | null} set while a handshake is under way */
    this._handshakeDone = null;
    this._epoch = 0; // bumps on every (re)connect so stale callbacks are ignored
  }

  /**
   * Listen: "snapshot" (header, view) for each newest complete tick, "status" (session) on
   * every state change.
   * @template {keyof NetSession["listeners"]} E
   * @param {E} event
   * @param {NetSession["listeners"][E][number]} cb
   */
  on(event, cb) {
    /** @type {Function[]} */ (this.listeners[event]).push(cb);
  }

  /** @param {keyof NetSession["listeners"]} event @param {...any} args */
  _emit(event, ...args) {
    for (const cb of /** @type {Function[]} */ (this.listeners[event])) {
      try {
        cb(...args);
      } catch (e) {
        console.error(e);
      }
    }
  }

  /** @param {SessionState} state */
  _setState(state) {
    this.state = state;
    this._emit("status", this);
  }

  /** Starts the pump and connects (once; later calls do nothing). */
  start() {
    if (this.state !== "idle") return;
    this._stopPump = startPump(() => this._tick(), PUMP_MS);
    this._connect();
  }

  /** Leave for good: DISCONNECT (twice) and close the transport. */
  stop() {
    if (this.state === "stopped") return;
    this._epoch++;
    clearTimeout(this._attemptTimer);
    if (this._stopPump) this._stopPump();
    if (this.conn && this.conn.state === CONNECTED && this.transport) {
      const bye = this.conn.disconnect(nowSeconds());
      if (bye) {
        this._send(bye);
        this._send(bye);
      }
    }
    this._dropTransport();
    this._setState("stopped");
  }

  _dropTransport() {
    const t = this.transport;
    this.transport = null;
    if (t) {
      t.onmessage = null;
      t.onclose = null;
      t.close();
    }
  }

  /** @param {Uint8Array} bytes @returns {boolean} whether the transport took them */
  _send(bytes) {
    if (this.transport && this.transport.send(bytes)) {
      this.outRate.add(nowSeconds(), bytes.length);
      return true;
    }
    return false;
  }

  async _connect() {
    const epoch = ++this._epoch;
    this._setState(this.connects ? "reconnecting" : "connecting");
    /** @type {Transport["kind"][]} */
    const kinds = [];
    if (this.webrtcOffered && this.openers.webrtcAvailable() && this.webrtcFailures < WEBRTC_STICKY_FAILURES) {
      kinds.push("webrtc");
    }
    kinds.push("websocket");
    let webrtcFailed = false;
    for (const kind of kinds) {
      if (epoch !== this._epoch) return;
      let transport;
      try {
        if (kind === "webrtc") {
          const r = await this.openers.webrtc({ url: this.origin, token: this.token, timeoutMs: this.datachannelTimeoutMs });
          transport = r.transport;
          this.offerToOpenMs = r.offerToOpenMs;
        } else {
          const r = await this.openers.websocket({ origin: this.origin, timeoutMs: 5000 });
          transport = r.transport;
        }
      } catch (e) {
        const err = /** @type {{ message?: string } | null | undefined} */ (e);
        const why = String(err && err.message ? err.message : e);
        if (kind === "webrtc") {
          webrtcFailed = true;
          this.webrtcLastError = why;
        }
        this.lastCloseReason = `${kind}: ${why}`;
        continue;
      }
      if (epoch !== this._epoch) {
        transport.close();
        return;
      }
      const result = await this._handshake(transport, kind, epoch);
      if (result === "connected") {
        // WebRTC failing while the WebSocket works is WebRTC's fault (a blocked network, a
        // browser policy): after a few such attempts in a row, reconnects skip it. When the
        // server was not reachable at all, it is not counted.
        if (kind === "webrtc") this.webrtcFailures = 0;
        else if (webrtcFailed) this.webrtcFailures++;
        return;
      }
      if (result === "refused" || epoch !== this._epoch) return;
      if (kind === "webrtc") {
        webrtcFailed = true;
        this.webrtcLastError = `handshake: ${result}`;
      }
    }
    if (epoch === this._epoch) this._scheduleReconnect();
  }

  /** HELLO -> ACCEPT on a fresh transport. Resolves "connected", "refused" or a failure reason.
   * @param {Transport} transport @param {Transport["kind"]} kind @param {number} epoch
   * @returns {Promise<string>} */
  _handshake(transport, kind, epoch) {
    return new Promise((resolve) => {
      const conn = new ClientConnection({
        token: this.token,
        handshakeTimeout: kind === "webrtc" ? WEBRTC_HANDSHAKE_TIMEOUT : 5.0,
      });
      this.transport = transport;
      this.conn = conn;
      this._handshakeDone = (/** @type {string} */ result) => {
        this._handshakeDone = null;
        if (result !== "connected" && result !== "refused") this._dropTransport();
        resolve(result);
      };
      transport.onmessage = (bytes) => this._onBytes(bytes, epoch);
      transport.onclose = (reason) => this._onTransportClosed(reason, epoch);
      this._send(conn.connect(nowSeconds()));
    });
  }

  /** @param {string} reason @param {number} epoch */
  _onTransportClosed(reason, epoch) {
    if (epoch !== this._epoch) return;
    this.lastCloseReason = `transport closed (${reason})`;
    if (this._handshakeDone) {
      this._handshakeDone(reason);
      return;
    }
    this._lost();
  }

  _lost() {
    this._dropTransport();
    if (ENDED.has(this.state)) return;
    this.transportKind = null;
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    const epoch = ++this._epoch;
    const delay = this.backoff * (0.8 + 0.4 * Math.random());
    this.backoff = Math.min(BACKOFF_MAX, this.backoff * 2);
    this.reconnects++;
    this._setState("reconnecting");
    clearTimeout(this._attemptTimer);
    this._attemptTimer = setTimeout(() => {
      if (epoch === this._epoch) this._connect();
    }, delay * 1000);
  }

  /** @param {Uint8Array} bytes @param {number} epoch */
  _onBytes(bytes, epoch) {
    if (epoch !== this._epoch || !this.conn) return;
    const now = nowSeconds();
    this.inRate.add(now, bytes.length);
    for (const ev of this.conn.receive(bytes, now)) this._onEvent(ev, now);
  }

  /** @param {import("../protocol/connection.js").ConnectionEvent} ev @param {number} now */
  _onEvent(ev, now) {
    switch (ev.type) {
      case "connected":
        this._onWelcome(ev.welcome, now);
        if (this._handshakeDone) this._handshakeDone("connected");
        break;
      case "refused":
        this.error = `refused by the server: ${ev.reason}${ev.text ? ` (${ev.text})` : ""}`;
        this._setState("refused");
        if (this._handshakeDone) this._handshakeDone("refused");
        this._dropTransport();
        break;
      case "disconnected":
        this.lastCloseReason = ev.reason;
        if (Object.hasOwn(FINAL_DISCONNECTS, ev.reason)) {
          const final = FINAL_DISCONNECTS[ev.reason];
          this.error = final.error(ev.text || "");
          this._setState(final.state);
          this._dropTransport();
          if (this._handshakeDone) this._handshakeDone("refused");
          break;
        }
        if (this._handshakeDone) this._handshakeDone(ev.reason);
        else this._lost();
        break;
      case "packet":
        if (ev.ptype === P.SNAPSHOT) this._onSnapshot(ev.payload, now);
        break;
      default:
        break;
    }
  }

  /** @param {import("../protocol/connection.js").ServerWelcome} w @param {number} now */
  _onWelcome(w, now) {
    this.welcome = w;
    this.quantizer = Quantizer.fromWelcome(w);
    this.store = new SnapshotStore(this.quantizer);
    this.predictor = new Predictor(w, this.walls); // the world's walls, if any
    this.interp = new Interpolator(w.tickRate);
    this.selfId = w.entityId;
    this.transportKind = this.transport ? this.transport.kind : null;
    this.firstSnapshot = false;
    this.predicted = null;
    this.serverSelf = null;
    this.correction = [0, 0, 0];
    this.inputSeq = 0;
    this.recentInputs = [];
    this.nextTickAt = now;
    this.backoff = BACKOFF_MIN;
    this.connects++;
    this.error = "";
    this._setState("connected");
  }

  /** Row i of a view in world units. @param {View} view @param {number} i @returns {EntityState} */
  _state(view, i) {
    const q = /** @type {Quantizer} */ (this.quantizer); // set with the store, before any view
    const o = i * FIELDS;
    return {
      x: q.dequantizeAxis(0, view.q[o]),
      y: q.dequantizeAxis(1, view.q[o + 1]),
      z: q.dequantizeAxis(2, view.q[o + 2]),
      yaw: dequantizeYaw(view.q[o + 3]),
      anim: view.q[o + 4],
    };
  }

  /** One SNAPSHOT packet: one part of a tick's snapshot (SPEC 5).
   * @param {Uint8Array} payload @param {number} now */
  _onSnapshot(payload, now) {
    if (!this.store || !this.interp || !this.predictor) return; // all set by the Welcome
    const r = this.store.receive(payload);
    if (!r) return;
    this.partRate.add(now);
    if (!r.complete) return;
    this.snapRate.add(now);
    if (!r.newest) return;
    const header = this.store.header;
    const view = r.view;
    if (!header || !view) return; // both set for a newest complete tick
    this.selfId = header.selfId;
    /** @type {Map<number, EntityState>} */
    const remote = new Map();
    let self = null;
    for (let i = 0; i < view.ids.length; i++) {
      const id = view.ids[i];
      const s = this._state(view, i);
      if (id === header.selfId) self = s;
      else remote.set(id, s);
    }
    this.interp.push(header.tick, now, remote);
    if (self) {
      this.serverSelf = self;
      const before = this.predicted;
      const pos = [self.x, self.y, self.z];
      let after;
      if (header.inputAck >= 0) {
        // Reconciliation: drop the inputs the server applied, replay the rest on its position.
        after = this.predictor.reconcile(pos, header.inputAck);
      } else {
        // input_ack none: the server has applied none of our inputs yet, so all of them are
        // still to come; nothing is acknowledged or dropped.
        after = pos;
        for (const input of this.predictor.pending) after = this.predictor.step(after, input);
      }
      if (before) {
        // How far a reconciliation moved the own avatar (prediction and server disagreeing).
        this.maxCorrection = Math.max(this.maxCorrection, Math.hypot(before[0] - after[0], before[2] - after[2]));
        const c = this.correction;
        c[0] += before[0] - after[0];
        c[2] += before[2] - after[2];
        if (Math.hypot(c[0], c[2]) > 3) c[0] = c[2] = 0; // too far: snap
      }
      this.predicted = after;
    }
    this.firstSnapshot = true;
    this._emit("snapshot", header, view);
  }

  _tick() {
    const conn = this.conn;
    if (!conn || !this.transport) return;
    const now = nowSeconds();
    const { events, packets } = conn.poll(now);
    for (const p of packets) this._send(p);
    for (const ev of events) this._onEvent(ev, now);
    if (!this.conn || this.conn.state !== CONNECTED || !this.welcome) return;
    const dt = 1 / this.welcome.tickRate;
    if (now - this.nextTickAt > MAX_CATCH_UP * dt) this.nextTickAt = now; // far behind: skip
    // One input per elapsed tick; when the page was busy, the missed ticks' inputs go out
    // together in one packet (it carries the last 4 anyway).
    let n = 0;
    while (now >= this.nextTickAt && n < MAX_CATCH_UP) {
      this._makeInput();
      this.nextTickAt += dt;
      n++;
    }
    if (n) this._send(this.conn.packet(P.INPUT, encodeInputs(this.recentInputs), now));
  }

  _makeInput() {
    if (!this.predictor) return; // set by the Welcome, before any input
    /** @type {Controls} */
    const c = this.controls() || {};
    let mx = Math.max(-1, Math.min(1, Number(c.moveX) || 0));
    let mz = Math.max(-1, Math.min(1, Number(c.moveZ) || 0));
    const len = Math.hypot(mx, mz);
    if (len > 1) {
      mx /= len;
      mz /= len;
    }
    const input = {
      seq: this.inputSeq,
      moveX: Math.round(mx * 127),
      moveZ: Math.round(mz * 127),
      yaw: quantizeYaw(c.yaw || 0),
      anim: len > 0.01 ? ANIM_WALK : ANIM_IDLE,
      flags: c.jump ? FLAG_JUMP : 0,
    };
    this.inputSeq = (this.inputSeq + 1) >>> 0;
    this.recentInputs.push(input);
    if (this.recentInputs.length > INPUTS_PER_PACKET) this.recentInputs.shift();
    this.predictor.record(input);
    if (this.predicted) this.predicted = this.predictor.step(this.predicted, input);
  }

  /** Own avatar position to draw: prediction plus a decaying correction.
   * @param {number} frameDt seconds since the last frame
   * @returns {number[] | null} [x, y, z], null before the first snapshot */
  selfRenderPosition(frameDt) {
    if (!this.predicted) return null;
    const c = this.correction;
    const k = Math.exp(-10 * frameDt);
    c[0] *= k;
    c[2] *= k;
    return [this.predicted[0] + c[0], this.serverSelf ? this.serverSelf.y : this.predicted[1], this.predicted[2] + c[2]];
  }

  /** Authoritative entities of the mirror (newest snapshot), dequantized.
   * @returns {({ id: number } & EntityState)[]} */
  entities() {
    if (!this.store || !this.quantizer) return [];
    const view = this.store.mirror;
    const out = [];
    for (let i = 0; i < view.ids.length; i++) {
      const s = this._state(view, i);
      out.push({ id: view.ids[i], x: s.x, y: s.y, z: s.z, yaw: s.yaw, anim: s.anim });
    }
    return out;
  }

  /** The figures the status panel and the test hook show. */
  stats() {
    const now = nowSeconds();
    const link = this.conn && this.conn.link;
    /** @type {Record<string, number>} */
    const drops = {};
    if (this.conn) Object.assign(drops, this.conn.drops);
    if (this.store) for (const [k, v] of Object.entries(this.store.drops)) drops[`snapshot.${k}`] = v;
    return {
      state: this.state,
      transport: this.state === "connected" ? this.transportKind : null,
      rtt_ms: link ? Math.round(link.rtt * 10000) / 10 : null,
      snapshots_per_s: Math.round(this.snapRate.perSecond(now) * 10) / 10,
      snapshot_parts_per_s: Math.round(this.partRate.perSecond(now) * 10) / 10,
      pending_ticks: this.store ? this.store.pending.size : 0,
      bytes_in_per_s: Math.round(this.inRate.perSecond(now)),
      bytes_out_per_s: Math.round(this.outRate.perSecond(now)),
      entities: this.store ? this.store.mirror.ids.length : 0,
      tick: this.store ? this.store.mirror.tick : -1,
      input_ack: this.store && this.store.header ? this.store.header.inputAck : -1,
      pending_inputs: this.predictor ? this.predictor.pending.length : 0,
      max_correction_m: Math.round(this.maxCorrection * 10000) / 10000,
      interp_delay_ms: this.interp ? Math.round(this.interp.delay * 1000) : null,
      jitter_ms: this.interp ? Math.round(this.interp.jitter * 10000) / 10 : null,
      offer_to_open_ms: this.offerToOpenMs === null ? null : Math.round(this.offerToOpenMs),
      webrtc_failures: this.webrtcFailures,
      webrtc_error: this.webrtcLastError,
      packets_lost: link ? link.packetsLost : 0,
      connects: this.connects,
      reconnects: this.reconnects,
      last_close_reason: this.lastCloseReason,
      error: this.error,
      drops,
    };
  }
}
