// NetSession against an in-process fake server (fake transports, real protocol codecs):
// transport choice and fallback, handshake with the token, one INPUT per tick carrying the
// last 4 inputs, snapshots into the mirror with prediction, reconnect after a loss, refusal,
// and DISCONNECT on stop.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { encodeWelcome, decodeInputs } from "../src/protocol/messages.js";
import { Writer } from "../src/protocol/msgpack.js";
import * as P from "../src/protocol/packets.js";
import { Quantizer, quantizeYaw } from "../src/protocol/quantize.js";
import { NetSession } from "../src/net/session.js";

const WELCOME = {
  entityId: 65536 + 1,
  tickRate: 20,
  tick: 10,
  mins: [-110, -10, -110],
  maxs: [110, 50, 110],
  positionStep: 0.01,
  maxSpeed: 5,
  interestRadius: 50,
};
const Q = new Quantizer(WELCOME.mins, WELCOME.maxs, WELCOME.positionStep);

function fullSnapshot(tick, inputAck, selfId, entities) {
  // entities: [{ id, x, y, z, yaw }] sorted by id
  const n = entities.length;
  const ids = new Uint8Array(4 * n);
  const state = new Uint8Array(n * 9);
  const ids32 = new DataView(ids.buffer);
  const sv = new DataView(state.buffer);
  entities.forEach((e, i) => {
    ids32.setUint32(4 * i, e.id, true);
    sv.setUint16(2 * i, Q.quantizeAxis(0, e.x), true);
    sv.setUint16(2 * (n + i), Q.quantizeAxis(1, e.y), true);
    sv.setUint16(2 * (2 * n + i), Q.quantizeAxis(2, e.z), true);
    sv.setUint16(6 * n + 2 * i, quantizeYaw(e.yaw || 0), true);
    state[8 * n + i] = 0;
  });
  const w = new Writer();
  w.array(11).int(tick).nil().int(inputAck).int(selfId);
  w.bin(new Uint8Array(0)).bin(ids).bin(state);
  for (let k = 0; k < 4; k++) w.bin(new Uint8Array(0));
  return w.finish();
}

/** A fake server side of one transport: answers HELLO, records what the client sends. */
class FakePeer {
  constructor(kind, server) {
    this.kind = kind;
    this.server = server;
    this.onmessage = null;
    this.onclose = null;
    this.closed = false;
    this.salt = 0x11223344;
    this.seq = 0;
    this.received = [];
  }

  isOpen() {
    return !this.closed;
  }

  send(bytes) {
    if (this.closed) return false;
    const b = Uint8Array.from(bytes);
    this.received.push(b);
    if (b[0] === P.HELLO) {
      const hello = P.decodeHello(b);
      this.server.hellos.push({ kind: this.kind, nonce: hello.nonce, token: new TextDecoder().decode(hello.token) });
      const reply = this.server.refuse
        ? P.encodeRefuse(P.REFUSE_FULL, 1, hello.nonce, "full")
        : P.encodeAccept(hello.nonce, this.salt, encodeWelcome(WELCOME));
      if (!this.server.silent) setTimeout(() => this.deliver(reply), 1);
    }
    return true;
  }

  deliver(bytes) {
    if (!this.closed && this.onmessage) this.onmessage(bytes);
  }

  snapshot(tick, inputAck, entities) {
    this.deliver(P.encodePacket(P.SNAPSHOT, this.salt, this.seq++, 0, 0, fullSnapshot(tick, inputAck, WELCOME.entityId, entities)));
  }

  close() {
    this.closed = true;
  }

  /** The server side drops the connection. */
  drop() {
    this.closed = true;
    if (this.onclose) this.onclose("dropped");
  }

  inputs() {
    return this.received.filter((b) => b[0] === P.INPUT).map((b) => decodeInputs(P.decodePacket(b).payload));
  }
}

function fakeServer({ webrtc = "ok", refuse = false, silent = false } = {}) {
  const server = { hellos: [], peers: [], refuse, silent, webrtc };
  server.openers = {
    webrtcAvailable: () => server.webrtc !== "missing",
    webrtc: async () => {
      if (server.webrtc === "timeout") throw new Error("data channel not open within 100 ms");
      const peer = new FakePeer("webrtc", server);
      server.peers.push(peer);
      return { transport: peer, offerToOpenMs: 42 };
    },
    websocket: async () => {
      const peer = new FakePeer("websocket", server);
      server.peers.push(peer);
      return { transport: peer };
    },
  };
  return server;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(fn, ms = 3000, what = "condition") {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (fn()) return;
    await sleep(5);
  }
  assert.fail(`timed out waiting for ${what}`);
}

function session(server, controls = () => ({ moveX: 0, moveZ: 0, yaw: 0 })) {
  return new NetSession({
    origin: "http://test",
    token: "tok-1",
    config: { datachannel_timeout_ms: 100, tick_rate: 20 },
    controls,
    openers: server.openers,
  });
}

describe("NetSession", () => {
  it("uses WebRTC when it opens; HELLO carries the token; one INPUT per tick with the last 4", async () => {
    const server = fakeServer();
    const s = session(server, () => ({ moveX: 1, moveZ: 0, yaw: Math.PI / 2 }));
    s.start();
    try {
      await until(() => s.state === "connected", 2000, "connected");
      assert.equal(s.transportKind, "webrtc");
      assert.equal(s.offerToOpenMs, 42);
      assert.deepEqual(server.hellos.map((h) => [h.kind, h.token]), [["webrtc", "tok-1"]]);
      const peer = server.peers[0];
      await sleep(300);
      const packets = peer.inputs();
      assert.ok(packets.length >= 4 && packets.length <= 8, `${packets.length} INPUT packets in 300 ms`);
      const last = packets[packets.length - 1];
      assert.equal(last.length, 4);
      assert.deepEqual(last.map((i) => i.seq), [0, 1, 2, 3].map((k) => last[0].seq + k));
      assert.equal(last[3].moveX, 127);
      assert.equal(last[3].yaw, 16384);
      // A snapshot: the own avatar at x = 1 with inputs up to 1 applied -> prediction replays the rest.
      const ack = 1;
      peer.snapshot(20, ack, [
        { id: WELCOME.entityId, x: 1, y: 0, z: 0 },
        { id: 5 << 16, x: -3, y: 0, z: 4 },
      ]);
      await until(() => s.firstSnapshot, 500, "snapshot");
      const ents = s.entities();
      assert.equal(ents.length, 2);
      const other = ents.find((e) => e.id === 5 << 16);
      assert.ok(Math.abs(other.x + 3) < 1e-9 && Math.abs(other.z - 4) < 1e-9);
      const pending = s.predictor.pending.length;
      assert.ok(pending >= 1);
      assert.ok(Math.abs(s.predicted[0] - (1 + 0.25 * pending)) < 1e-9, `${s.predicted[0]} with ${pending} pending`);
      const st = s.stats();
      assert.equal(st.transport, "webrtc");
      assert.equal(st.entities, 2);
    } finally {
      s.stop();
    }
  });

  it("falls back to the WebSocket when the data channel does not open", async () => {
    const server = fakeServer({ webrtc: "timeout" });
    const s = session(server);
    s.start();
    try {
      await until(() => s.state === "connected", 2000, "connected");
      assert.equal(s.transportKind, "websocket");
      assert.equal(s.webrtcFailures, 1);
      assert.match(s.stats().webrtc_error, /not open/);
    } finally {
      s.stop();
    }
  });

  it("goes straight to the WebSocket without RTCPeerConnection", async () => {
    const server = fakeServer({ webrtc: "missing" });
    const s = session(server);
    s.start();
    try {
      await until(() => s.state === "connected", 2000, "connected");
      assert.equal(s.transportKind, "websocket");
      assert.equal(s.webrtcFailures, 0);
    } finally {
      s.stop();
    }
  });

  it("reconnects with a new handshake after the transport is lost", async () => {
    const server = fakeServer();
    const s = session(server);
    s.start();
    try {
      await until(() => s.state === "connected", 2000, "connected");
      server.peers[0].drop();
      assert.equal(s.state, "reconnecting");
      await until(() => s.state === "connected" && server.hellos.length === 2, 3000, "reconnected");
      assert.notEqual(server.hellos[0].nonce, server.hellos[1].nonce);
      assert.equal(s.reconnects, 1);
      assert.equal(s.connects, 2);
    } finally {
      s.stop();
    }
  });

  it("a refusal stops the session", async () => {
    const server = fakeServer({ refuse: true });
    const s = session(server);
    s.start();
    try {
      await until(() => s.state === "refused", 2000, "refused");
      assert.match(s.error, /server_full/);
      await sleep(700);
      assert.equal(server.hellos.length, 1);
    } finally {
      s.stop();
    }
  });

  it("falls back when the handshake over WebRTC gets no answer", async () => {
    const server = fakeServer({ silent: true });
    const s = session(server);
    s.start();
    try {
      await until(() => server.peers.length === 2, 4000, "second transport");
      assert.equal(server.peers[1].kind, "websocket");
      // HELLO was resent every 250 ms on the silent data channel
      const hellos = server.peers[0].received.filter((b) => b[0] === P.HELLO).length;
      assert.ok(hellos >= 8, `${hellos} HELLOs`);
    } finally {
      s.stop();
    }
  });

  it("stop() sends DISCONNECT twice", async () => {
    const server = fakeServer();
    const s = session(server);
    s.start();
    await until(() => s.state === "connected", 2000, "connected");
    const peer = server.peers[0];
    s.stop();
    const byes = peer.received.filter((b) => b[0] === P.DISCONNECT);
    assert.equal(byes.length, 2);
    assert.equal(P.decodePacket(byes[0]).payload[0], P.DISCONNECT_CLIENT_LEFT);
    assert.equal(s.state, "stopped");
  });
});
