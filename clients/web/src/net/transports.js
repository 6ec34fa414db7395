// Byte transports of the native protocol in the browser: a geckos.io WebRTC data channel
// (raw binary messages) and a WebSocket to /ws/movement (one binary message per packet).
// Both expose the same small interface:
//   kind ("webrtc" | "websocket"), send(Uint8Array), close(), onmessage(Uint8Array),
//   onclose(reason), isOpen()
// and are opened by an async function that resolves once bytes can flow.

import geckos from "@geckos.io/client";

/** What both transports offer the session.
 * @typedef {object} Transport
 * @property {"webrtc" | "websocket"} kind
 * @property {(bytes: Uint8Array) => boolean} send false when not open
 * @property {() => void} close
 * @property {((bytes: Uint8Array) => void) | null} onmessage
 * @property {((reason: string) => void) | null} onclose
 * @property {() => boolean} isOpen
 */

/** The parts of a geckos.io 3.x channel that are private in its types but that this client
 * reads to watch the data channel and the peer connection.
 * @typedef {{ connectionsManager?: { dataChannel?: RTCDataChannel }, peerConnection?: { localPeerConnection?: RTCPeerConnection } }} GeckosInternals */

/** @param {import("@geckos.io/client").ClientChannel} channel @returns {GeckosInternals} */
function internals(channel) {
  return /** @type {GeckosInternals} */ (/** @type {unknown} */ (channel));
}

/** Whether this browser has WebRTC. @returns {boolean} */
export function webrtcAvailable() {
  return typeof RTCPeerConnection !== "undefined";
}

/** The bytes as an ArrayBuffer of exactly their length (no copy when they are one already).
 * @param {Uint8Array} bytes @returns {ArrayBuffer} */
function exactBuffer(bytes) {
  const buf = bytes.buffer;
  if (buf instanceof ArrayBuffer && bytes.byteOffset === 0 && bytes.byteLength === buf.byteLength) return buf;
  return bytes.slice().buffer;
}

/** @implements {Transport} */
class WebRTCTransport {
  /** @param {import("@geckos.io/client").ClientChannel} channel */
  constructor(channel) {
    /** @type {"webrtc"} */
    this.kind = "webrtc";
    this.channel = channel;
    /** @type {RTCDataChannel | null} */
    this.dc = null;
    /** @type {((bytes: Uint8Array) => void) | null} */
    this.onmessage = null;
    /** @type {((reason: string) => void) | null} */
    this.onclose = null;
    this.closed = false;
  }

  /** @param {RTCDataChannel} dc @param {RTCPeerConnection | undefined} pc */
  _attach(dc, pc) {
    this.dc = dc;
    dc.addEventListener("close", () => this._closed("datachannel_closed"));
    if (pc) {
      pc.addEventListener("connectionstatechange", () => {
        const s = pc.connectionState;
        if (s === "failed" || s === "closed" || s === "disconnected") this._closed(`peer_${s}`);
      });
    }
  }

  /** @param {string} reason */
  _closed(reason) {
    if (this.closed) return;
    this.closed = true;
    if (this.onclose) this.onclose(reason);
  }

  /** @returns {boolean} */
  isOpen() {
    return !this.closed && this.dc !== null && this.dc.readyState === "open";
  }

  /** @param {Uint8Array} bytes @returns {boolean} */
  send(bytes) {
    if (!this.isOpen()) return false;
    this.channel.raw.emit(exactBuffer(bytes));
    return true;
  }

  /** Closes the transport; onclose("closed") once unless it was closed already. */
  close() {
    const wasClosed = this.closed;
    this.closed = true;
    // Deferred by one microtask: raw.emit sends in a microtask too, so a DISCONNECT emitted
    // just before close() still goes out.
    queueMicrotask(() => {
      try {
        if (internals(this.channel).peerConnection) this.channel.close();
      } catch {
        // the peer connection never came up: nothing to close
      }
    });
    if (!wasClosed && this.onclose) this.onclose("closed");
  }
}

/**
 * Connects a geckos.io 3.x channel to `url` (the page origin; port null keeps it as is) with
 * the join token as Authorization, and waits for the data channel to be open.
 * Resolves { transport, offerToOpenMs }; rejects on error or after timeoutMs.
 * @param {{ url: string, token?: string | null, timeoutMs: number }} options
 * @returns {Promise<{ transport: WebRTCTransport, offerToOpenMs: number }>}
 */
export function openWebRTC({ url, token, timeoutMs }) {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    let settled = false;
    /** @type {import("@geckos.io/client").ClientChannel} */
    let channel;
    try {
      // port null: geckos keeps the url's own port (its code tests `port ?`; its types say
      // number, whose default 9208 would be wrong here).
      const options = { url, port: /** @type {number} */ (/** @type {unknown} */ (null)), authorization: token || undefined };
      channel = geckos(options);
    } catch (e) {
      reject(e);
      return;
    }
    const transport = new WebRTCTransport(channel);
    // Raw messages (binary) are native packets; text messages on this channel are geckos
    // events, which this client does not use.
    channel.onRaw((msg) => {
      if (transport.closed || !transport.onmessage) return;
      if (msg instanceof ArrayBuffer) transport.onmessage(new Uint8Array(msg));
      else if (ArrayBuffer.isView(msg)) transport.onmessage(new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength));
    });
    channel.onDisconnect(() => transport._closed("geckos_disconnected"));
    /** @param {unknown} err */
    const fail = (err) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      transport.close();
      reject(err instanceof Error ? err : new Error(String(/** @type {{ message?: string } | null} */ (err)?.message || err)));
    };
    const opened = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ transport, offerToOpenMs: performance.now() - started });
    };
    const timer = setTimeout(() => fail(new Error(`data channel not open within ${timeoutMs} ms`)), timeoutMs);
    let promise;
    try {
      promise = channel.onConnect((error) => {
        if (error) {
          fail(new Error(error.message || "WebRTC connection failed"));
          return;
        }
        const { connectionsManager, peerConnection } = internals(channel);
        const dc = connectionsManager && connectionsManager.dataChannel;
        const pc = peerConnection && peerConnection.localPeerConnection;
        if (!dc) {
          fail(new Error("no data channel"));
          return;
        }
        transport._attach(dc, pc);
        if (dc.readyState === "open") opened();
        else dc.addEventListener("open", opened, { once: true });
      });
    } catch (e) {
      fail(e);
      return;
    }
    if (promise && typeof promise.catch === "function") promise.catch(fail);
  });
}

/** @implements {Transport} */
class WebSocketTransport {
  /** @param {WebSocket} ws an open binary WebSocket */
  constructor(ws) {
    /** @type {"websocket"} */
    this.kind = "websocket";
    this.ws = ws;
    /** @type {((bytes: Uint8Array) => void) | null} */
    this.onmessage = null;
    /** @type {((reason: string) => void) | null} */
    this.onclose = null;
    this.closed = false;
    ws.addEventListener("message", (ev) => {
      if (this.closed || !this.onmessage) return;
      if (ev.data instanceof ArrayBuffer) this.onmessage(new Uint8Array(ev.data));
    });
    ws.addEventListener("close", (ev) => this._closed(`websocket_closed_${ev.code}`));
    ws.addEventListener("error", () => this._closed("websocket_error"));
  }

  /** @param {string} reason */
  _closed(reason) {
    if (this.closed) return;
    this.closed = true;
    if (this.onclose) this.onclose(reason);
  }

  /** @returns {boolean} */
  isOpen() {
    return !this.closed && this.ws.readyState === WebSocket.OPEN;
  }

  /** @param {Uint8Array} bytes @returns {boolean} */
  send(bytes) {
    if (!this.isOpen()) return false;
    this.ws.send(bytes);
    return true;
  }

  /** Closes the transport; onclose("closed") once unless it was closed already. */
  close() {
    const wasClosed = this.closed;
    this.closed = true;
    try {
      this.ws.close(1000);
    } catch {
      // already closing
    }
    if (!wasClosed && this.onclose) this.onclose("closed");
  }
}

/** The WebSocket URL of /ws/movement on the page's origin.
 * @param {string | URL} origin
 * @returns {string} */
export function movementSocketUrl(origin) {
  const u = new URL("/ws/movement", origin);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  return u.toString();
}

/** Opens a binary WebSocket; resolves { transport } once open, rejects on error or timeout.
 * @param {{ url: string, timeoutMs: number }} options
 * @returns {Promise<{ transport: WebSocketTransport }>} */
export function openWebSocket({ url, timeoutMs }) {
  return new Promise((resolve, reject) => {
    /** @type {WebSocket} */
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      reject(e);
      return;
    }
    ws.binaryType = "arraybuffer";
    let settled = false;
    /** @param {Error | null} err */
    const done = (err) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      ws.removeEventListener("open", onOpen);
      ws.removeEventListener("error", onFail);
      ws.removeEventListener("close", onFail);
      if (err) {
        try {
          ws.close();
        } catch {
          // not open
        }
        reject(err);
      } else resolve({ transport: new WebSocketTransport(ws) });
    };
    const onOpen = () => done(null);
    const onFail = () => done(new Error("WebSocket connection failed"));
    const timer = setTimeout(() => done(new Error(`WebSocket not open within ${timeoutMs} ms`)), timeoutMs);
    ws.addEventListener("open", onOpen);
    ws.addEventListener("error", onFail);
    ws.addEventListener("close", onFail);
  });
}
