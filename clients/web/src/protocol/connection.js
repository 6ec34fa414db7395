// Client side of the native protocol over a trusted transport (WebRTC data channel or
// WebSocket, SPEC section 2 "Over WebRTC data channels and WebSockets"), sans-IO: HELLO with
// the join token -> ACCEPT (Welcome) or REFUSE; then connected packets with the 13-byte
// header, acks in every packet, keep-alive when idle, timeout, DISCONNECT.
//
// It produces the packets to send and turns received packets into events; the caller owns
// the transport and the clock (`now` in seconds). No DOM.

import { ProtocolError } from "./errors.js";
import { Link } from "./link.js";
import { decodeWelcome } from "./messages.js";
import * as P from "./packets.js";

export const IDLE = "idle";
export const HELLO_SENT = "hello";
export const CONNECTED = "connected";
export const CLOSED = "closed";

/** @typedef {typeof IDLE | typeof HELLO_SENT | typeof CONNECTED | typeof CLOSED} ConnectionState */
/** A decoded Welcome (every field present).
 * @typedef {Required<import("./messages.js").Welcome>} ServerWelcome */

/** What receive() and poll() report.
 * @typedef {{ type: "connected", welcome: ServerWelcome, salt: number }
 *   | { type: "refused", reason: string, text: string, serverVersion: number }
 *   | { type: "disconnected", reason: string, text?: string }
 *   | { type: "packet", ptype: number, seq: number, payload: Uint8Array, acked: number[] }} ConnectionEvent */

/** ClientConnection's options; every one has a default.
 * @typedef {object} ConnectionOptions
 * @property {import("./packets.js").TokenLike} [token] the join token sent in HELLO
 * @property {import("./packets.js").U64Like} [nonce] random when not given
 * @property {number} [version] protocol version
 * @property {number} [timeout] seconds without a packet before giving up (the Welcome's wins)
 * @property {number} [keepaliveInterval] seconds (the Welcome's wins)
 * @property {number} [handshakeTimeout] seconds
 * @property {number} [resendInterval] seconds between HELLOs
 */

/** @returns {bigint} */
function randomNonce() {
  const b = new Uint8Array(8);
  globalThis.crypto.getRandomValues(b);
  return new DataView(b.buffer).getBigUint64(0, true);
}

export class ClientConnection {
  /** @param {ConnectionOptions} [options] */
  constructor({
    token = "",
    nonce = randomNonce(),
    version = P.PROTOCOL_VERSION,
    timeout = 5.0,
    keepaliveInterval = 1.0,
    handshakeTimeout = 5.0,
    resendInterval = 0.25,
  } = {}) {
    this.token = token;
    this.nonce = BigInt.asUintN(64, BigInt(nonce));
    this.version = version;
    this.timeout = timeout;
    this.keepaliveInterval = keepaliveInterval;
    this.handshakeTimeout = handshakeTimeout;
    this.resendInterval = resendInterval;
    /** @type {ConnectionState} */
    this.state = IDLE;
    this.salt = 0;
    /** @type {Link | null} set when connected */
    this.link = null;
    /** @type {ServerWelcome | null} */
    this.welcome = null;
    this.closeReason = "";
    this.closeText = ""; // the text of the server's DISCONNECT, if any
    /** Packets dropped, by reason. @type {Record<string, number>} */
    this.drops = {};
    /** @type {Uint8Array | null} */
    this._hello = null;
    this._started = 0;
    this._lastHello = 0;
  }

  /** @param {string} reason */
  _drop(reason) {
    this.drops[reason] = (this.drops[reason] || 0) + 1;
  }

  /** Starts the handshake; returns the HELLO packet to send.
   * @param {number} now seconds
   * @returns {Uint8Array} */
  connect(now) {
    this.state = HELLO_SENT;
    this._hello = P.encodeHello(this.version, this.nonce, this.token);
    this._started = now;
    this._lastHello = now;
    return this._hello;
  }

  /**
   * One received packet -> array of events:
   *   { type: "connected", welcome, salt }
   *   { type: "refused", reason, text, serverVersion }
   *   { type: "disconnected", reason }
   *   { type: "packet", ptype, seq, payload, acked }   (SNAPSHOT, KEEPALIVE, MESSAGE, ...)
   * @param {import("./packets.js").BytesLike} data
   * @param {number} now seconds
   * @returns {ConnectionEvent[]}
   */
  receive(data, now) {
    try {
      const ptype = P.packetType(data);
      if (P.CONNECTED_TYPES.has(ptype)) return this._receiveConnected(data, now);
      if (ptype === P.ACCEPT && this.state === HELLO_SENT) {
        const { nonce, salt, welcome } = P.decodeAccept(data);
        if (nonce !== this.nonce) {
          this._drop("wrong_nonce");
          return [];
        }
        const w = decodeWelcome(welcome);
        this.state = CONNECTED;
        this.salt = salt;
        this.welcome = w;
        // The server's keep-alive interval and timeout apply to both sides (SPEC 4.1).
        this.keepaliveInterval = w.keepaliveInterval;
        this.timeout = w.timeout;
        this.link = new Link(now);
        return [{ type: "connected", welcome: w, salt }];
      }
      if (ptype === P.REFUSE && this.state === HELLO_SENT) {
        const r = P.decodeRefuse(data);
        if (r.nonce !== this.nonce) {
          this._drop("wrong_nonce");
          return [];
        }
        this.state = CLOSED;
        this.closeReason = r.reasonName;
        return [{ type: "refused", reason: r.reasonName, text: r.text, serverVersion: r.serverVersion }];
      }
      this._drop("unexpected");
      return [];
    } catch (e) {
      if (e instanceof ProtocolError) {
        this._drop(e.reason);
        return [];
      }
      throw e;
    }
  }

  /** @param {import("./packets.js").BytesLike} data @param {number} now @returns {ConnectionEvent[]} */
  _receiveConnected(data, now) {
    const link = this.link;
    if (this.state !== CONNECTED || !link) {
      this._drop("not_connected");
      return [];
    }
    const h = P.decodePacket(data);
    if (h.salt !== this.salt) {
      this._drop("bad_salt");
      return [];
    }
    if (!link.accept(h.seq)) {
      this._drop("duplicate_or_stale");
      return [];
    }
    link.lastRecv = now;
    const acked = link.processAcks(h.ack, h.ackBits, now);
    if (h.type === P.DISCONNECT) {
      const code = h.payload.length ? h.payload[0] : 0;
      this.state = CLOSED;
      this.closeReason = P.DISCONNECT_REASONS[code] || "server_disconnect";
      this.closeText = P.disconnectText(h.payload); // world_closed says why
      return [{ type: "disconnected", reason: this.closeReason, text: this.closeText }];
    }
    return [{ type: "packet", ptype: h.type, seq: h.seq, payload: h.payload, acked }];
  }

  /** A connected packet (INPUT, KEEPALIVE, MESSAGE) carrying our current acks.
   * @param {number} ptype
   * @param {import("./packets.js").BytesLike | null} payload
   * @param {number} now
   * @returns {Uint8Array} */
  packet(ptype, payload, now) {
    if (this.state !== CONNECTED || !this.link) throw new Error("not connected");
    const { seq, ack, ackBits } = this.link.nextSend(now);
    return P.encodePacket(ptype, this.salt, seq, ack, ackBits, payload);
  }

  /** Leaves: returns the DISCONNECT packet (send it twice), or null when not connected.
   * @param {number} now
   * @returns {Uint8Array | null} */
  disconnect(now) {
    if (this.state !== CONNECTED) {
      this.state = CLOSED;
      return null;
    }
    const data = this.packet(P.DISCONNECT, new Uint8Array([P.DISCONNECT_CLIENT_LEFT]), now);
    this.state = CLOSED;
    this.closeReason = "client_left";
    return data;
  }

  /** Handshake resends, keep-alives and timeouts: { events, packets }.
   * @param {number} now
   * @returns {{ events: ConnectionEvent[], packets: Uint8Array[] }} */
  poll(now) {
    if (this.state === HELLO_SENT) {
      if (now - this._started > this.handshakeTimeout) {
        this.state = CLOSED;
        this.closeReason = "handshake_timeout";
        return { events: [{ type: "disconnected", reason: "handshake_timeout" }], packets: [] };
      }
      if (now - this._lastHello >= this.resendInterval && this._hello) {
        this._lastHello = now;
        return { events: [], packets: [this._hello] };
      }
    } else if (this.state === CONNECTED && this.link) {
      const link = this.link;
      if (now - link.lastRecv > this.timeout) {
        this.state = CLOSED;
        this.closeReason = "timeout";
        return { events: [{ type: "disconnected", reason: "timeout" }], packets: [] };
      }
      if (now - link.lastSend >= this.keepaliveInterval) {
        return { events: [], packets: [this.packet(P.KEEPALIVE, null, now)] };
      }
    }
    return { events: [], packets: [] };
  }
}
