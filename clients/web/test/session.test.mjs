// NetSession against an in-process fake server (fake transports, real protocol codecs):
// transport choice and fallback, handshake with the token, one INPUT per tick carrying the
// last 4 inputs, snapshots into the mirror with prediction, reconnect after a loss, refusal,
// and DISCONNECT on stop. Tests that count time (ticks, resends, reconnect delays) run on a
// virtual clock (virtualClock: mocked timers and performance.now), never the wall clock.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { encodeWelcome, decodeInputs } from "../src/protocol/messages.js";
import * as P from "../src/protocol/packets.js";
import { Quantizer, quantizeYaw } from "../src/protocol/quantize.js";
import { NetSession } from "../src/net/session.js";
import { encodeSnapshot, makeView } from "./helpers.mjs";

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

/** Snapshot parts (format v2) of `entities` ([{ id, x, y, z, yaw }], sorted by id). */
function snapshotParts(tick, inputAck, selfId, entities, { baseline = null, cuts = [] } = {}) {
  const view = makeView(
    tick,
    entities.map((e) => e.id),
    entities.map((e) => [Q.quantizeAxis(0, e.x), Q.quantizeAxis(1, e.y), Q.quantizeAxis(2, e.z), quantizeYaw(e.yaw || 0), e.anim || 0]),
  );
  return { view, parts: encodeSnapshot(baseline, view, { inputAck, selfId, cuts }) };
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

  /** Sends a snapshot (full, or against `baseline`), cut into parts before the ids of `cuts`. */
  snapshot(tick, inputAck, entities, opts = {}) {
    const { view, parts } = snapshotParts(tick, inputAck, WELCOME.entityId, entities, opts);
    for (const part of opts.order ? opts.order.map((i) => parts[i]) : parts) this.sendPart(part);
    return view;
  }

  sendPart(part) {
    this.deliver(P.encodePacket(P.SNAPSHOT, this.salt, this.seq++, 0, 0, part));
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

/**
 * A virtual clock for test `t`, set before the session starts: node's mocked setTimeout and
 * setInterval (`t.mock.timers`) and a mocked `performance.now` (the session's clock) that
 * move together. `advance(ms)` lets `ms` milliseconds pass one at a time, each after the
 * promises then due have settled (a setImmediate turn, which the mock leaves real). Nothing
 * waits for the wall clock, so the outcome does not depend on the machine's speed.
 */
function virtualClock(t) {
  t.mock.timers.enable({ apis: ["setTimeout", "setInterval"] });
  let now = 10_000;
  t.mock.method(performance, "now", () => now);
  return async function advance(ms) {
    for (let i = 0; i < ms; i++) {
      await new Promise((r) => setImmediate(r));
      now += 1;
      t.mock.timers.tick(1);
    }
    await new Promise((r) => setImmediate(r));
  };
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
  it("uses WebRTC when it opens; HELLO carries the token; one INPUT per tick with the last 4", async (t) => {
    const advance = virtualClock(t);
    const server = fakeServer();
    const s = session(server, () => ({ moveX: 1, moveZ: 0, yaw: Math.PI / 2 }));
    s.start();
    try {
      await advance(2); // HELLO, the ACCEPT 1 ms later
      assert.equal(s.state, "connected");
      assert.equal(s.transportKind, "webrtc");
      assert.equal(s.offerToOpenMs, 42);
      assert.deepEqual(server.hellos.map((h) => [h.kind, h.token]), [["webrtc", "tok-1"]]);
      const peer = server.peers[0];
      const before = peer.inputs().length;
      await advance(300);
      const packets = peer.inputs();
      assert.equal(packets.length - before, 6, "one INPUT packet per tick: 6 in 300 ms at 20 Hz");
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
      assert.ok(s.firstSnapshot); // taken as it arrives
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

  it("reconnects with a new handshake after the transport is lost", async (t) => {
    const advance = virtualClock(t);
    const server = fakeServer();
    const s = session(server);
    s.start();
    try {
      await advance(2); // HELLO, the ACCEPT 1 ms later
      assert.equal(s.state, "connected");
      server.peers[0].drop();
      assert.equal(s.state, "reconnecting");
      await advance(300);
      assert.equal(server.hellos.length, 1); // the first reconnect waits 0.4 to 0.6 s
      await advance(400); // the same 700 ms the tests below wait for no reconnect
      assert.equal(s.state, "connected");
      assert.equal(server.hellos.length, 2);
      assert.notEqual(server.hellos[0].nonce, server.hellos[1].nonce);
      assert.equal(s.reconnects, 1);
      assert.equal(s.connects, 2);
    } finally {
      s.stop();
    }
  });

  it("a refusal stops the session", async (t) => {
    const advance = virtualClock(t);
    const server = fakeServer({ refuse: true });
    const s = session(server);
    s.start();
    try {
      await advance(2); // HELLO, the REFUSE 1 ms later
      assert.equal(s.state, "refused");
      assert.match(s.error, /server_full/);
      await advance(700); // longer than the first reconnect delay (mocked time)
      assert.equal(server.hellos.length, 1);
      assert.equal(s.state, "refused");
    } finally {
      s.stop();
    }
  });

  it("a DISCONNECT replaced (the player logged in again elsewhere) ends it without reconnecting", async (t) => {
    const advance = virtualClock(t);
    const server = fakeServer();
    const s = session(server);
    s.start();
    try {
      await advance(2); // HELLO, the ACCEPT 1 ms later
      assert.equal(s.state, "connected");
      const peer = server.peers[0];
      peer.deliver(P.encodePacket(P.DISCONNECT, peer.salt, peer.seq++, 0, 0, Uint8Array.of(P.DISCONNECT_REPLACED)));
      assert.equal(s.state, "replaced");
      assert.match(s.error, /signed in elsewhere/);
      assert.equal(s.stats().last_close_reason, "replaced");
      assert.ok(peer.closed);
      await advance(700); // longer than the first reconnect delay (mocked time)
      assert.equal(server.hellos.length, 1);
      assert.equal(s.state, "replaced");
    } finally {
      s.stop();
    }
  });

  /** Connects, then delivers a DISCONNECT with `payload`; returns the session, still running. */
  async function disconnectedBy(payload) {
    const server = fakeServer();
    const s = session(server);
    s.start();
    await until(() => s.state === "connected", 2000, "connected");
    const peer = server.peers[0];
    peer.deliver(P.encodePacket(P.DISCONNECT, peer.salt, peer.seq++, 0, 0, payload));
    return { s, peer, server };
  }

  it("a DISCONNECT kicked (the operator or a moderator) shows the server's text and does not reconnect", async () => {
    const text = "removed by the operator: spamming the gallery — ça suffit; banned for 10 min";
    const { s, peer, server } = await disconnectedBy(P.encodeDisconnectPayload(P.DISCONNECT_KICKED, text));
    try {
      // not taken for a newer login, and no reconnect scheduled (that would say "reconnecting")
      assert.equal(s.state, "kicked");
      assert.equal(s.error, text);
      assert.doesNotMatch(s.error, /signed in elsewhere/);
      assert.equal(s.stats().last_close_reason, "kicked");
      assert.ok(peer.closed);
      peer.drop(); // the transport's own close afterwards changes nothing
      assert.equal(s.state, "kicked");
      assert.equal(server.hellos.length, 1);
    } finally {
      s.stop();
    }
    // without a text (an older server's kick): still a kick, with a plain explanation
    const bare = await disconnectedBy(Uint8Array.of(P.DISCONNECT_KICKED));
    try {
      assert.equal(bare.s.state, "kicked");
      assert.equal(bare.s.error, "removed by the server's operator");
    } finally {
      bare.s.stop();
    }
  });

  it("a DISCONNECT with a reason it does not know (or none) is a loss: it reconnects", async () => {
    for (const payload of [Uint8Array.of(250, 0x68, 0x69), new Uint8Array(0)]) {
      const { s, peer } = await disconnectedBy(payload);
      try {
        assert.equal(s.stats().last_close_reason, "server_disconnect");
        assert.equal(s.state, "reconnecting"); // scheduled at once, no crash
        assert.ok(peer.closed);
      } finally {
        s.stop();
      }
    }
  });

  it("falls back when the handshake over WebRTC gets no answer", async (t) => {
    const advance = virtualClock(t);
    const server = fakeServer({ silent: true });
    const s = session(server);
    s.start();
    try {
      await advance(2500);
      assert.equal(server.peers.length, 1); // still waiting: the handshake has 2.5 s
      await advance(10);
      assert.equal(server.peers.length, 2);
      assert.equal(server.peers[1].kind, "websocket");
      // HELLO was resent every 250 ms on the silent data channel: at 0, 0.25, ..., 2.5 s
      const hellos = server.peers[0].received.filter((b) => b[0] === P.HELLO).length;
      assert.equal(hellos, 11);
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

// The snapshot path of a session without transports or timers: the Welcome, the inputs and
// the SNAPSHOT payloads are handed to it directly.
describe("NetSession snapshots (format v2)", () => {
  const other = 5 << 16;
  function connected(moveX = 127) {
    const s = session(fakeServer(), () => ({ moveX: moveX / 127, moveZ: 0, yaw: 0 }));
    s._onWelcome(WELCOME, 0);
    return s;
  }
  const ents = (selfX, otherX) => [
    { id: WELCOME.entityId, x: selfX, y: 0, z: 0 },
    { id: other, x: otherX, y: 0, z: 4 },
    { id: 9 << 16, x: 7, y: 1, z: -7 },
  ];

  it("a tick's parts: the mirror, the prediction and the snapshot event wait for the last part", () => {
    const s = connected();
    const events = [];
    s.on("snapshot", (header, view) => events.push({ header, ids: Array.from(view.ids) }));
    for (let k = 0; k < 3; k++) s._makeInput();
    assert.deepEqual(s.predictor.pending.map((i) => i.seq), [0, 1, 2]);
    const { parts } = snapshotParts(30, 0, WELCOME.entityId, ents(1, -3), { cuts: [other, 9 << 16] });
    assert.equal(parts.length, 3);
    s._onSnapshot(parts[2], 1);
    s._onSnapshot(parts[0], 1);
    assert.equal(s.firstSnapshot, false);
    assert.deepEqual(s.entities(), []);
    assert.equal(s.predicted, null);
    assert.equal(s.stats().pending_ticks, 1);
    assert.equal(events.length, 0);
    s._onSnapshot(parts[1], 1);
    assert.equal(s.firstSnapshot, true);
    assert.deepEqual(s.entities().map((e) => e.id), [WELCOME.entityId, other, 9 << 16]);
    assert.equal(s.stats().pending_ticks, 0);
    assert.equal(s.stats().tick, 30);
    assert.equal(s.stats().input_ack, 0);
    assert.deepEqual(events, [{ header: { tick: 30, baselineTick: null, inputAck: 0, selfId: WELCOME.entityId, parts: 3 }, ids: [WELCOME.entityId, other, 9 << 16] }]);
    // input 0 applied: inputs 1 and 2 replayed on the server's position
    assert.deepEqual(s.predictor.pending.map((i) => i.seq), [1, 2]);
    assert.ok(Math.abs(s.predicted[0] - 1.5) < 1e-9, `${s.predicted[0]}`);
    // a duplicate part changes nothing and is counted
    s._onSnapshot(parts[1], 1);
    assert.equal(events.length, 1);
    assert.equal(s.stats().drops["snapshot.duplicate_part"], 1);
  });

  it("input_ack none (0xFFFFFFFF): no input is dropped; all are replayed on the server's position", () => {
    const s = connected();
    for (let k = 0; k < 3; k++) s._makeInput();
    const first = snapshotParts(40, -1, WELCOME.entityId, ents(1, -3));
    assert.equal(new DataView(first.parts[0].buffer).getUint32(8, true), 0xffffffff);
    s._onSnapshot(first.parts[0], 1);
    assert.equal(s.store.header.inputAck, -1);
    assert.equal(s.stats().input_ack, -1);
    assert.deepEqual(s.predictor.pending.map((i) => i.seq), [0, 1, 2]);
    assert.ok(Math.abs(s.predicted[0] - (1 + 3 * 0.25)) < 1e-9, `${s.predicted[0]}`);
    // the prediction goes on with the next input
    s._makeInput();
    assert.ok(Math.abs(s.predicted[0] - 2) < 1e-9);
    // then the server applies inputs 0..2 (a delta against tick 40): only input 3 remains
    const second = snapshotParts(41, 2, WELCOME.entityId, ents(1.75, -3), { baseline: first.view, cuts: [other] });
    for (const p of second.parts.reverse()) s._onSnapshot(p, 2);
    assert.equal(s.store.mirror.tick, 41);
    assert.deepEqual(s.predictor.pending.map((i) => i.seq), [3]);
    assert.ok(Math.abs(s.predicted[0] - 2) < 1e-9, `${s.predicted[0]}`);
    assert.ok(Math.abs(s.correction[0]) < 1e-9, "a correct prediction needs no correction");
  });

  it("an older tick completing late does not move the mirror or the prediction", () => {
    const s = connected();
    s._makeInput();
    const t50 = snapshotParts(50, -1, WELCOME.entityId, ents(1, -3), { cuts: [other] });
    const t51 = snapshotParts(51, 0, WELCOME.entityId, ents(1.25, -2), { baseline: t50.view });
    s._onSnapshot(t50.parts[0], 1);
    for (const p of t51.parts) s._onSnapshot(p, 1); // unknown baseline: 50 is not complete
    assert.equal(s.stats().drops["snapshot.unknown_baseline"], 1);
    s._onSnapshot(t50.parts[1], 1);
    assert.equal(s.store.mirror.tick, 50);
    for (const p of t51.parts) s._onSnapshot(p, 1);
    assert.equal(s.store.mirror.tick, 51);
    const at = s.predicted.slice();
    const late = snapshotParts(49, -1, WELCOME.entityId, ents(-50, 50));
    s._onSnapshot(late.parts[0], 1);
    assert.ok(s.store.views.has(49));
    assert.equal(s.store.mirror.tick, 51);
    assert.deepEqual(s.predicted, at);
    assert.ok(Math.abs(s.entities().find((e) => e.id === other).x + 2) < 1e-9);
  });
});
