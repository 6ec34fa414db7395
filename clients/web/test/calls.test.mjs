// Proximity calls on the page (src/calls/): the pure rules (who offers, the peers to open and
// close, the call.* events checked, where a voice sits, speaking), the mesh signaling state
// machine against a fake RTCPeerConnection, the Janus VideoRoom client against a fake Janus
// that answers like Janus 1.1 does, and the call client on a fake chat socket: call.enable,
// media asked once, mesh peers per member, call.left ending everything.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { CallClient } from "../src/calls/index.js";
import { ChatClient } from "../src/chat/client.js";
import {
  JanusRoom, attachMsg, parseJanus, publisherJoin, roomEvent, subscriberJoin, trickleMsg,
} from "../src/calls/janus.js";
import {
  SpeakingDetector, compareNames, inverseGain, isOfferer, parseCallEvent, parseSignalData, planPeers,
  relativePosition, rmsLevel, sfuUrl,
} from "../src/calls/logic.js";
import { MeshPeer } from "../src/calls/mesh.js";

/** Lets every pending promise callback run (the fakes answer in microtasks and timeouts of 0). */
const settle = async (rounds = 20) => {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setImmediate(r));
};

// ------------------------------------------------------------------------------ fakes

class FakeTrack {
  constructor(kind) {
    this.kind = kind;
    this.readyState = "live";
    this.enabled = true;
  }

  stop() {
    this.readyState = "ended";
  }
}

class FakeStream {
  constructor(tracks = []) {
    this.tracks = tracks;
  }

  getTracks() {
    return [...this.tracks];
  }

  getAudioTracks() {
    return this.tracks.filter((t) => t.kind === "audio");
  }

  getVideoTracks() {
    return this.tracks.filter((t) => t.kind === "video");
  }
}
globalThis.MediaStream = FakeStream; // the call client groups remote video tracks in streams

let pcCount = 0;
class FakePC {
  constructor() {
    this.id = ++pcCount;
    this.transceivers = [];
    this.added = [];
    this.localDescription = null;
    this.remoteDescription = null;
    this.candidates = [];
    this.connectionState = "new";
    this.closed = false;
    this.restarted = false;
    this.onicecandidate = null;
    this.ontrack = null;
    this.onconnectionstatechange = null;
    this.offers = 0;
  }

  addTransceiver(trackOrKind, init) {
    const track = typeof trackOrKind === "string" ? null : trackOrKind;
    this.transceivers.push({ kind: track ? track.kind : trackOrKind, track, direction: init.direction });
  }

  addTrack(track) {
    this.added.push(track);
  }

  async createOffer(opts = {}) {
    this.offers++;
    return { type: "offer", sdp: `v=0 offer ${this.id}.${this.offers}${opts.iceRestart ? " restart" : ""}` };
  }

  async createAnswer() {
    return { type: "answer", sdp: `v=0 answer ${this.id}` };
  }

  async setLocalDescription(d) {
    this.localDescription = d;
  }

  async setRemoteDescription(d) {
    this.remoteDescription = d;
  }

  async addIceCandidate(c) {
    if (c.candidate === "bad") throw new Error("bad candidate");
    this.candidates.push(c);
  }

  restartIce() {
    this.restarted = true;
  }

  close() {
    this.closed = true;
  }

  async getStats() {
    return new Map();
  }

  // the test's side
  emitCandidate(c) {
    this.onicecandidate({ candidate: c });
  }

  fireTrack(kind) {
    const track = new FakeTrack(kind);
    this.ontrack({ track, streams: [] });
    return track;
  }

  setConnection(state) {
    this.connectionState = state;
    this.onconnectionstatechange();
  }
}

// ------------------------------------------------------------------------------ logic.js

describe("calls: who offers and which peers", () => {
  it("orders names by code point, as the server's Python does", () => {
    assert.ok(compareNames("alice", "bob") < 0);
    assert.ok(compareNames("bob", "alice") > 0);
    assert.equal(compareNames("ann", "ann"), 0);
    assert.ok(compareNames("ann", "anna") < 0);
    // U+FF5E sorts before U+1F600 by code point, though its UTF-16 unit is larger than the
    // surrogate's: JavaScript's `<` would say the opposite.
    assert.ok("\uff5e" > "\u{1f600}");
    assert.ok(compareNames("\uff5e", "\u{1f600}") < 0);
  });

  it("exactly one of two members offers", () => {
    for (const [a, b] of [["alice", "bob"], ["zed", "Zed"], ["x1", "x10"]]) {
      assert.notEqual(isOfferer(a, b), isOfferer(b, a));
    }
    assert.equal(isOfferer("alice", "bob"), true);
  });

  it("plans one connection per other member", () => {
    const members = [{ name: "bob", entityId: 2 }, { name: "alice", entityId: 1 }, { name: "carol", entityId: 3 }];
    assert.deepEqual(planPeers("bob", members, []), { open: [{ name: "alice", offer: false }, { name: "carol", offer: true }], close: [] });
    assert.deepEqual(planPeers("bob", members.slice(0, 2), ["alice", "carol"]), { open: [], close: ["carol"] });
    assert.deepEqual(planPeers("bob", [], ["alice"]), { open: [], close: ["alice"] });
  });
});

describe("calls: events from the server", () => {
  const members = [{ name: "alice", entity_id: 65536 }, { name: "bob", entity_id: 131072 }];

  it("keeps a call.joined of either mode", () => {
    assert.deepEqual(parseCallEvent({ ev: "call.joined", group: "p3", zone: null, mode: "mesh", members, sfu: null }), {
      ev: "call.joined", group: "p3", zone: null, mode: "mesh", sfu: null,
      members: [{ name: "alice", entityId: 65536 }, { name: "bob", entityId: 131072 }],
    });
    const sfu = { url: "ws://127.0.0.1:8188", room: 1234, token: "t0k", display: "bob" };
    const e = parseCallEvent({ ev: "call.joined", group: "zone:stage", zone: "stage", mode: "sfu", members, sfu });
    assert.deepEqual(e.sfu, sfu);
    assert.equal(e.zone, "stage");
  });

  it("takes a ticket for a Janus on every address (\":<port>\") and completes it with the page's host", () => {
    const e = parseCallEvent({ ev: "call.joined", group: "open/zone:stage", zone: "stage", mode: "sfu", members, sfu: { url: ":8188", room: 7, token: "t", display: "bob" } });
    assert.equal(e.sfu.url, ":8188");
    assert.equal(sfuUrl(":8188", "gallery.example"), "ws://gallery.example:8188");
    assert.equal(sfuUrl(":8188", "::1"), "ws://[::1]:8188");
    assert.equal(sfuUrl(":8188", "[::1]"), "ws://[::1]:8188");
    assert.equal(sfuUrl("wss://sfu.example/janus", "gallery.example"), "wss://sfu.example/janus");
    assert.equal(parseCallEvent({ ev: "call.joined", group: "g", mode: "sfu", members, sfu: { url: ":80a", room: 7, token: "t", display: "b" } }), null);
  });

  it("refuses malformed events", () => {
    const bad = [
      null, [], { ev: "call.joined", group: "p1", mode: "p2p", members: [] },
      { ev: "call.joined", group: "p1", mode: "mesh", members: "x" },
      { ev: "call.joined", group: "p1", mode: "sfu", members, sfu: null },
      { ev: "call.joined", group: "p1", mode: "sfu", members, sfu: { url: "http://x", room: 1, token: "t", display: "d" } },
      { ev: "call.joined", group: "p1", mode: "sfu", members, sfu: { url: "ws://x", room: -1, token: "t", display: "d" } },
      { ev: "call.members", group: 3, members },
      { ev: "call.left" },
      { ev: "call.signal", from: "alice", group: "p1", data: { type: "offer" } },
      { ev: "call.signal", from: "alice", group: "p1", data: { type: "offer", sdp: "x".repeat(12 * 1024 + 1) } },
      { ev: "call.signal", from: "", group: "p1", data: { type: "answer", sdp: "v=0" } },
      { ev: "call.nonsense", group: "p1" },
    ];
    for (const f of bad) assert.equal(parseCallEvent(f), null, JSON.stringify(f)?.slice(0, 80));
  });

  it("drops malformed and repeated members, keeps an unknown left reason as ended", () => {
    const e = parseCallEvent({ ev: "call.members", group: "p1", members: [...members, { name: "alice", entity_id: 9 }, { name: "x" }, { entity_id: 4 }, "bob"] });
    assert.deepEqual(e.members.map((m) => m.name), ["alice", "bob"]);
    assert.equal(parseCallEvent({ ev: "call.left", group: "p1", reason: "moved_away" }).reason, "moved_away");
    assert.equal(parseCallEvent({ ev: "call.left", group: "p1", reason: "exploded" }).reason, "ended");
    assert.deepEqual(parseCallEvent({ ev: "call.full", group: "p1" }), { ev: "call.full", group: "p1" });
  });

  it("checks signal data", () => {
    assert.deepEqual(parseSignalData({ type: "candidate", candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host", sdpMid: "0", sdpMLineIndex: 0, usernameFragment: "abcd" }),
      { type: "candidate", candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host", sdpMid: "0", sdpMLineIndex: 0, usernameFragment: "abcd" });
    assert.deepEqual(parseSignalData({ type: "candidate", candidate: "" }), { type: "candidate", candidate: "", sdpMid: null, sdpMLineIndex: null, usernameFragment: null });
    assert.equal(parseSignalData({ type: "candidate", candidate: "c", usernameFragment: 5 }), null);
    assert.equal(parseSignalData({ type: "candidate", candidate: "c", sdpMLineIndex: -1 }), null);
    assert.equal(parseSignalData({ type: "candidate", candidate: "c", sdpMid: 3 }), null);
    assert.equal(parseSignalData({ type: "pranswer", sdp: "v=0" }), null);
  });
});

describe("calls: where a voice sits", () => {
  const near = 1e-9;
  const close = (a, b) => assert.ok(Math.abs(a - b) < 1e-9, `${a} != ${b}`);

  it("puts a voice ahead at -z and one to the right at +x, whatever the yaw", () => {
    for (const yaw of [0, 0.7, Math.PI / 2, Math.PI, -2.1]) {
      const me = { x: 3, z: -4, yaw };
      const fwd = [Math.sin(yaw), Math.cos(yaw)];
      const right = [-Math.cos(yaw), Math.sin(yaw)];
      const ahead = relativePosition(me, { x: 3 + 2 * fwd[0], z: -4 + 2 * fwd[1] });
      close(ahead.x, 0);
      close(ahead.z, -2);
      const onRight = relativePosition(me, { x: 3 + 1.5 * right[0], z: -4 + 1.5 * right[1] });
      close(onRight.x, 1.5);
      close(onRight.z, 0);
      const behindLeft = relativePosition(me, { x: 3 - fwd[0] - right[0], z: -4 - fwd[1] - right[1] });
      assert.ok(behindLeft.x < -1 + near && behindLeft.z > 1 - near);
    }
  });

  it("the right is the screen's right: at yaw 0 the camera looks along +z and -x is on its right", () => {
    const p = relativePosition({ x: 0, z: 0, yaw: 0 }, { x: -1, z: 0 });
    assert.ok(p.x > 0.99);
  });

  it("keeps the distance, so the nearer voice is louder", () => {
    const me = { x: 0, z: 0, yaw: 1 };
    const a = relativePosition(me, { x: 1, z: 1 });
    const b = relativePosition(me, { x: 2, z: 2 });
    const len = (p) => Math.hypot(p.x, p.y, p.z);
    close(len(a), Math.SQRT2);
    assert.ok(inverseGain(len(a)) > inverseGain(len(b)));
    assert.equal(inverseGain(0.2), 1);
  });

  it("measures levels and speaking with hysteresis", () => {
    assert.equal(rmsLevel([]), 0);
    close(rmsLevel([0.5, -0.5, 0.5, -0.5]), 0.5);
    const d = new SpeakingDetector({ on: 0.1, off: 0.05, holdMs: 300 });
    assert.equal(d.update(0.02, 0), false);
    assert.equal(d.update(0.2, 10), true);
    assert.equal(d.update(0.07, 20), true); // between the thresholds
    assert.equal(d.update(0.01, 100), true); // quiet, but not for long
    assert.equal(d.update(0.01, 350), true);
    assert.equal(d.update(0.01, 400), false);
    assert.equal(d.update(0.07, 500), false); // not loud enough to start again
    assert.equal(d.update(0.3, 600), true);
  });
});

// ------------------------------------------------------------------------------ mesh.js

function meshPair() {
  const sent = { alice: [], bob: [] };
  const tracks = () => [new FakeTrack("audio"), new FakeTrack("video")];
  const a = new MeshPeer({ name: "bob", offerer: true, createPeerConnection: () => new FakePC(), tracks: tracks(), send: (d) => sent.alice.push(d) });
  const b = new MeshPeer({ name: "alice", offerer: false, createPeerConnection: () => new FakePC(), tracks: tracks(), send: (d) => sent.bob.push(d) });
  return { a, b, sent };
}

describe("calls: a mesh connection's signaling", () => {
  it("offer, answer and trickled candidates, in order", async () => {
    const { a, b, sent } = meshPair();
    a.start();
    b.start(); // the answerer waits
    await settle();
    assert.equal(a.state, "offering");
    assert.equal(b.state, "new");
    assert.deepEqual(a.pc.transceivers.map((t) => [t.kind, t.direction]), [["audio", "sendrecv"], ["video", "sendrecv"]]);
    assert.equal(sent.alice.length, 1);
    assert.equal(sent.alice[0].type, "offer");
    // a candidate of A before B has the offer waits for it
    a.pc.emitCandidate({ candidate: "candidate:1 1 udp 9 127.0.0.1 4000 typ host", sdpMid: "0", sdpMLineIndex: 0, usernameFragment: "uf1" });
    const cand = sent.alice[1];
    assert.deepEqual(cand, { type: "candidate", candidate: "candidate:1 1 udp 9 127.0.0.1 4000 typ host", sdpMid: "0", sdpMLineIndex: 0, usernameFragment: "uf1" });
    await b.handle(cand);
    assert.equal(b.pc.candidates.length, 0);
    assert.equal(b.queued.length, 1);
    await b.handle(sent.alice[0]);
    assert.equal(b.pc.remoteDescription.sdp, sent.alice[0].sdp);
    assert.deepEqual(b.pc.added.map((t) => t.kind), ["audio", "video"]); // after the offer: its transceivers
    assert.deepEqual(b.pc.candidates, [{ candidate: "candidate:1 1 udp 9 127.0.0.1 4000 typ host", sdpMid: "0", sdpMLineIndex: 0, usernameFragment: "uf1" }]);
    assert.equal(sent.bob[0].type, "answer");
    assert.equal(b.state, "stable");
    await a.handle(sent.bob[0]);
    assert.equal(a.state, "stable");
    assert.equal(a.pc.remoteDescription.type, "answer");
    // the end of candidates goes as an empty candidate
    b.pc.emitCandidate(null);
    assert.deepEqual(sent.bob[1], { type: "candidate", candidate: "", sdpMid: null, sdpMLineIndex: null });
    await a.handle(sent.bob[1]);
    assert.equal(a.pc.candidates.at(-1).candidate, "");
    b.pc.setConnection("connected");
    assert.equal(b.state, "connected");
  });

  it("ignores signals that make no sense in its state", async () => {
    const { a, b } = meshPair();
    a.start();
    await settle();
    await a.handle({ type: "offer", sdp: "v=0 x" }); // the offerer takes no offer
    await b.handle({ type: "answer", sdp: "v=0 y" }); // the answerer takes no answer
    assert.equal(a.ignored, 1);
    assert.equal(b.ignored, 1);
    assert.equal(b.pc.remoteDescription, null);
    await b.handle({ type: "offer", sdp: "v=0 z" });
    await b.handle({ type: "candidate", candidate: "bad", sdpMid: "0", sdpMLineIndex: 0 }); // the browser refuses it
    assert.equal(b.ignored, 2);
    assert.equal(b.state, "stable");
  });

  it("receives only when it has nothing to send, and restarts ICE when the connection fails", async () => {
    const sent = [];
    const p = new MeshPeer({ name: "zoe", offerer: true, createPeerConnection: () => new FakePC(), tracks: [], send: (d) => sent.push(d), maxRestarts: 1 });
    const tracks = [];
    p.onTrack = (t) => tracks.push(t.kind);
    p.start();
    await settle();
    assert.deepEqual(p.pc.transceivers.map((t) => [t.kind, t.direction]), [["audio", "recvonly"], ["video", "recvonly"]]);
    await p.handle({ type: "answer", sdp: "v=0 answer" });
    p.pc.fireTrack("audio");
    assert.deepEqual(tracks, ["audio"]);
    p.pc.setConnection("failed");
    await settle();
    assert.equal(p.pc.restarted, true);
    assert.equal(sent.filter((d) => d.type === "offer").length, 2);
    assert.match(sent.at(-1).sdp, /restart/);
    p.pc.setConnection("failed"); // no second restart (maxRestarts 1)
    await settle();
    assert.equal(sent.filter((d) => d.type === "offer").length, 2);
  });

  it("closes once; nothing goes out after", async () => {
    const { a, sent } = meshPair();
    let states = 0;
    a.onState = () => states++;
    a.start();
    await settle();
    a.close();
    a.close();
    assert.equal(a.state, "closed");
    assert.equal(a.pc.closed, true);
    assert.equal(a.pc.onicecandidate, null);
    const before = sent.alice.length;
    await a.handle({ type: "answer", sdp: "v=0" });
    assert.equal(sent.alice.length, before);
    assert.equal(states, 2); // offering, closed
  });
});

// ------------------------------------------------------------------------------ janus.js

/** A fake Janus 1.1 behind a fake WebSocket: it answers the way the real one does (an ack,
 *  then the plugin's event with the same transaction) and lets the test push room events. */
class FakeJanus {
  constructor({ publishers = [], refuseToken = null } = {}) {
    this.publishers = publishers;
    this.refuseToken = refuseToken;
    this.got = [];
    this.sockets = [];
    this.nextId = 1000;
    this.session = null;
    this.handles = new Map(); // handle -> "publisher" | feed (subscriber)
    this.pubHandle = null;
  }

  open(url, protocol) {
    const janus = this;
    const ws = {
      url, protocol, readyState: 0, closed: false, onopen: null, onmessage: null, onclose: null, onerror: null,
      send(text) {
        janus.got.push(JSON.parse(text));
        queueMicrotask(() => janus.answer(ws, JSON.parse(text)));
      },
      close() {
        ws.closed = true;
        ws.readyState = 3;
      },
    };
    this.sockets.push(ws);
    setImmediate(() => {
      ws.readyState = 1;
      ws.onopen();
    });
    return ws;
  }

  push(ws, msg) {
    if (ws.onmessage && !ws.closed) ws.onmessage({ data: JSON.stringify(msg) });
  }

  answer(ws, m) {
    const tx = m.transaction;
    const ev = (sender, data, jsep) => this.push(ws, { janus: "event", session_id: this.session, transaction: tx, sender, plugindata: { plugin: "janus.plugin.videoroom", data }, ...(jsep ? { jsep } : {}) });
    switch (m.janus) {
      case "create":
        this.session = ++this.nextId;
        return this.push(ws, { janus: "success", transaction: tx, data: { id: this.session } });
      case "attach": {
        const id = ++this.nextId;
        this.handles.set(id, null);
        return this.push(ws, { janus: "success", session_id: this.session, transaction: tx, data: { id } });
      }
      case "keepalive":
      case "trickle":
        return this.push(ws, { janus: "ack", session_id: this.session, transaction: tx });
      case "detach":
      case "destroy":
        return this.push(ws, { janus: "success", session_id: this.session, transaction: tx });
      case "message": {
        this.push(ws, { janus: "ack", session_id: this.session, transaction: tx });
        const b = m.body;
        const h = m.handle_id;
        if (b.request === "join" && b.ptype === "publisher") {
          if (b.token === this.refuseToken) return ev(h, { videoroom: "event", error_code: 433, error: "Unauthorized (not in the allowed list)" });
          this.pubHandle = h;
          this.handles.set(h, "publisher");
          return ev(h, { videoroom: "joined", room: b.room, id: 7, private_id: 99, publishers: this.publishers });
        }
        if (b.request === "publish") return ev(h, { videoroom: "event", room: 1, configured: "ok" }, { type: "answer", sdp: "v=0 janus answer" });
        if (b.request === "join" && b.ptype === "subscriber") {
          this.handles.set(h, b.streams[0].feed);
          return ev(h, { videoroom: "attached", room: b.room, streams: [] }, { type: "offer", sdp: `v=0 janus offer ${b.streams[0].feed}` });
        }
        if (b.request === "start") return ev(h, { videoroom: "event", started: "ok" });
        return ev(h, { videoroom: "event", error_code: 499, error: "unknown request" });
      }
      default:
        return undefined;
    }
  }
}

class ManualTimers {
  constructor() {
    this.intervals = [];
  }

  setTimeout() {
    return 0;
  }

  clearTimeout() {}

  setInterval(fn, ms) {
    const t = { fn, ms, cleared: false };
    this.intervals.push(t);
    return t;
  }

  clearInterval(t) {
    if (t) t.cleared = true;
  }

  tick() {
    for (const t of this.intervals) if (!t.cleared) t.fn();
  }
}

const TICKET = { url: "ws://127.0.0.1:8188", room: 4242, token: "tok-bob", display: "bob" };

describe("calls: Janus messages", () => {
  it("builds the requests of the VideoRoom", () => {
    assert.deepEqual(publisherJoin(TICKET), { request: "join", ptype: "publisher", room: 4242, display: "bob", token: "tok-bob" });
    assert.deepEqual(subscriberJoin(TICKET, 55, 99), { request: "join", ptype: "subscriber", room: 4242, streams: [{ feed: 55 }], token: "tok-bob", private_id: 99 });
    assert.deepEqual(subscriberJoin(TICKET, 55, null).private_id, undefined);
    assert.deepEqual(attachMsg("t1", 12), { janus: "attach", transaction: "t1", session_id: 12, plugin: "janus.plugin.videoroom" });
    assert.deepEqual(trickleMsg("t2", 1, 2, null).candidate, { completed: true });
    assert.deepEqual(trickleMsg("t2", 1, 2, { candidate: "c", sdpMid: "0", sdpMLineIndex: 0 }).candidate, { candidate: "c", sdpMid: "0", sdpMLineIndex: 0 });
  });

  it("parses Janus's answers, errors and events", () => {
    assert.equal(parseJanus("not json"), null);
    assert.equal(parseJanus({ nojanus: 1 }), null);
    const ok = parseJanus('{"janus":"success","transaction":"t1","data":{"id":4402660921214621}}');
    assert.equal(ok.data.id, 4402660921214621);
    const err = parseJanus({ janus: "error", transaction: "t", error: { code: 458, reason: "No such session" } });
    assert.deepEqual(err.error, { code: 458, reason: "No such session" });
    const perr = parseJanus({ janus: "event", sender: 5, transaction: "t", plugindata: { plugin: "janus.plugin.videoroom", data: { videoroom: "event", error_code: 433, error: "Unauthorized (not in the allowed list)" } } });
    assert.deepEqual(perr.error, { code: 433, reason: "Unauthorized (not in the allowed list)" });
    assert.equal(perr.sender, 5);
    const offer = parseJanus({ janus: "event", jsep: { type: "offer", sdp: "v=0" } });
    assert.deepEqual(offer.jsep, { type: "offer", sdp: "v=0" });
    assert.equal(parseJanus({ janus: "event", jsep: { type: "bogus", sdp: "v=0" } }).jsep, null);
  });

  it("reads the room's events", () => {
    const joined = roomEvent({ videoroom: "joined", id: 7, private_id: 99, publishers: [{ id: 8, display: "alice" }, { id: 7, display: "me" }, { id: "x" }, { id: 9, display: "d", dummy: true }] }, null);
    assert.deepEqual(joined.joined, { id: 7, privateId: 99 });
    assert.deepEqual(joined.publishers, [{ id: 8, display: "alice" }]);
    assert.deepEqual(roomEvent({ videoroom: "event", publishers: [{ id: 10, display: "carol" }] }, 7).publishers, [{ id: 10, display: "carol" }]);
    assert.deepEqual(roomEvent({ videoroom: "event", unpublished: 10 }, 7).gone, [10]);
    assert.deepEqual(roomEvent({ videoroom: "event", leaving: 8, reason: "kicked" }, 7).gone, [8]);
    assert.equal(roomEvent({ videoroom: "event", leaving: "ok", reason: "kicked" }, 7).kicked, true);
    assert.equal(roomEvent({ videoroom: "event", unpublished: "ok" }, 7).kicked, false);
    assert.equal(roomEvent({ videoroom: "destroyed", room: 4242 }, 7).destroyed, true);
  });
});

describe("calls: the Janus room client", () => {
  it("joins with the ticket, subscribes to the others, publishes, follows the room, keeps alive, leaves", async () => {
    const janus = new FakeJanus({ publishers: [{ id: 8, display: "alice" }] });
    const timers = new ManualTimers();
    const pcs = [];
    const got = [];
    const gone = [];
    const room = new JanusRoom({
      ticket: TICKET,
      tracks: [new FakeTrack("audio"), new FakeTrack("video")],
      createPeerConnection: () => {
        const pc = new FakePC();
        pcs.push(pc);
        return pc;
      },
      openSocket: (url, protocol) => janus.open(url, protocol),
      timers,
      onTrack: (track, p) => got.push([p.display, track.kind]),
      onGone: (p) => gone.push(p.display),
    });
    await room.start();
    await settle();
    const ws = janus.sockets[0];
    assert.equal(ws.url, TICKET.url);
    assert.equal(ws.protocol, "janus-protocol");
    assert.equal(room.state, "published");
    assert.equal(room.selfId, 7);
    const kinds = janus.got.map((m) => (m.janus === "message" ? `${m.janus}:${m.body.request}${m.body.ptype ? `/${m.body.ptype}` : ""}` : m.janus));
    assert.deepEqual(kinds.slice(0, 3), ["create", "attach", "message:join/publisher"]);
    assert.ok(kinds.includes("message:publish") && kinds.includes("message:join/subscriber") && kinds.includes("message:start"), kinds.join());
    const join = janus.got.find((m) => m.body && m.body.ptype === "publisher");
    assert.deepEqual(join.body, publisherJoin(TICKET));
    const sub = janus.got.find((m) => m.body && m.body.ptype === "subscriber");
    assert.deepEqual(sub.body.streams, [{ feed: 8 }]);
    assert.equal(sub.body.private_id, 99);
    const publish = janus.got.find((m) => m.body && m.body.request === "publish");
    assert.equal(publish.jsep.type, "offer");
    const start = janus.got.find((m) => m.body && m.body.request === "start");
    assert.deepEqual(start.jsep, { type: "answer", sdp: pcs[1].localDescription.sdp });
    // the publisher's connection sends only; the subscription's got Janus's offer
    const [pubPc, subPc] = room.pubPc === pcs[0] ? [pcs[0], pcs[1]] : [pcs[1], pcs[0]];
    assert.deepEqual(pubPc.transceivers.map((t) => t.direction), ["sendonly", "sendonly"]);
    assert.equal(pubPc.remoteDescription.sdp, "v=0 janus answer");
    assert.equal(subPc.remoteDescription.sdp, "v=0 janus offer 8");
    subPc.fireTrack("audio");
    subPc.fireTrack("video");
    assert.deepEqual(got, [["alice", "audio"], ["alice", "video"]]);
    // local candidates are trickled on the handle of their connection
    subPc.emitCandidate({ candidate: "candidate:x", sdpMid: "0", sdpMLineIndex: 0 });
    const trickle = janus.got.at(-1);
    assert.equal(trickle.janus, "trickle");
    assert.equal(trickle.handle_id, sub.handle_id);
    // keepalive
    timers.tick();
    assert.equal(janus.got.at(-1).janus, "keepalive");
    assert.equal(janus.got.at(-1).session_id, janus.session);
    // a new publisher, then the first one goes
    janus.push(ws, { janus: "event", session_id: janus.session, sender: janus.pubHandle, plugindata: { plugin: "janus.plugin.videoroom", data: { videoroom: "event", room: 4242, publishers: [{ id: 10, display: "carol" }] } } });
    await settle();
    assert.deepEqual([...room.subs.keys()].sort(), [10, 8]);
    janus.push(ws, { janus: "event", session_id: janus.session, sender: janus.pubHandle, plugindata: { plugin: "janus.plugin.videoroom", data: { videoroom: "event", room: 4242, unpublished: 8 } } });
    assert.deepEqual(gone, ["alice"]);
    assert.equal(subPc.closed, true);
    assert.equal(janus.got.at(-1).janus, "detach");
    assert.deepEqual([...room.subs.keys()], [10]);
    // leave: the session is destroyed, every connection closed, no more keepalives
    room.close();
    assert.equal(janus.got.at(-1).janus, "destroy");
    assert.equal(ws.closed, true);
    assert.ok(pcs.every((pc) => pc.closed));
    assert.equal(room.state, "closed");
    const n = janus.got.length;
    timers.tick();
    assert.equal(janus.got.length, n);
  });

  it("listens only without local tracks, and fails with Janus's reason on a refused token", async () => {
    const janus = new FakeJanus();
    const room = new JanusRoom({ ticket: TICKET, tracks: [], createPeerConnection: () => new FakePC(), openSocket: (u, p) => janus.open(u, p), timers: new ManualTimers() });
    await room.start();
    assert.equal(room.state, "joined");
    assert.equal(room.pubPc, null);
    assert.ok(!janus.got.some((m) => m.body && m.body.request === "publish"));

    const refusing = new FakeJanus({ refuseToken: "tok-bob" });
    const r2 = new JanusRoom({ ticket: TICKET, tracks: [], createPeerConnection: () => new FakePC(), openSocket: (u, p) => refusing.open(u, p), timers: new ManualTimers() });
    await r2.start();
    assert.equal(r2.state, "failed");
    assert.match(r2.error, /Unauthorized/);
  });

  it("fails when the SFU closes the socket, and on a session timeout", async () => {
    const janus = new FakeJanus();
    const room = new JanusRoom({ ticket: TICKET, tracks: [], createPeerConnection: () => new FakePC(), openSocket: (u, p) => janus.open(u, p), timers: new ManualTimers() });
    await room.start();
    janus.push(janus.sockets[0], { janus: "timeout", session_id: janus.session });
    assert.equal(room.state, "failed");
    assert.match(room.error, /timed out/);
    const j2 = new FakeJanus();
    const r2 = new JanusRoom({ ticket: TICKET, tracks: [], createPeerConnection: () => new FakePC(), openSocket: (u, p) => j2.open(u, p), timers: new ManualTimers() });
    await r2.start();
    j2.sockets[0].onclose({ code: 1006 });
    assert.equal(r2.state, "failed");
  });
});

// ------------------------------------------------------------------------------ index.js

class FakeChat {
  constructor(user = "bob") {
    this.state = "connecting";
    this.user = user;
    this.requests = [];
    this.listeners = new Map();
    this.answer = () => Promise.resolve({ ok: true });
  }

  on(event, cb) {
    if (!this.listeners.has(event)) this.listeners.set(event, []);
    this.listeners.get(event).push(cb);
    return () => {};
  }

  emit(event, ...args) {
    for (const cb of this.listeners.get(event) || []) cb(...args);
  }

  request(op, fields = {}) {
    this.requests.push({ op, ...fields });
    return this.answer(op, fields);
  }

  setState(s) {
    this.state = s;
    this.emit("state", this);
  }

  signals(to) {
    return this.requests.filter((r) => r.op === "call.signal" && (to === undefined || r.to === to));
  }
}

function fakeTiles() {
  return {
    root: { hidden: true },
    line: { textContent: "" },
    tiles: new Map(),
    self: null,
    shown: false,
    show(v, text = "") {
      this.shown = v;
      this.root.hidden = !v;
      this.line.textContent = text;
    },
    setSelf(name, stream) {
      this.self = { name, stream };
    },
    setToggles(s) {
      this.toggles = s;
    },
    tile(name) {
      if (!this.tiles.has(name)) this.tiles.set(name, { video: null, firstFrameAt: null, setVideo(s) { this.video = s; } });
      return this.tiles.get(name);
    },
    remove(name) {
      this.tiles.delete(name);
    },
    setSpeaking(names, self) {
      this.speaking = [names, self];
    },
    clear() {
      this.tiles.clear();
      this.self = null;
      this.show(false);
    },
  };
}

function fakeAudio() {
  return {
    voices: new Map(),
    local: null,
    placed: new Map(),
    loud: new Set(),
    addRemote(key, track) {
      this.voices.set(key, track);
    },
    removeRemote(key) {
      this.voices.delete(key);
    },
    setLocal(track) {
      this.local = track;
    },
    place(key, p) {
      this.placed.set(key, p);
    },
    speaking() {
      return new Set(this.loud);
    },
    describe() {
      return {};
    },
    clear() {
      this.voices.clear();
      this.local = null;
    },
  };
}

const MEMBERS = [{ name: "alice", entity_id: 65536 }, { name: "bob", entity_id: 131072 }, { name: "carol", entity_id: 196608 }];

function callClient({ refuse = false, chat = new FakeChat() } = {}) {
  const asked = [];
  const streams = [];
  const pcs = [];
  const client = new CallClient({
    chat,
    tiles: fakeTiles(),
    audio: fakeAudio(),
    createPeerConnection: () => {
      const pc = new FakePC();
      pcs.push(pc);
      return pc;
    },
    getUserMedia: async (c) => {
      asked.push(c);
      if (refuse) throw Object.assign(new Error("denied"), { name: "NotAllowedError" });
      const s = new FakeStream([new FakeTrack("audio"), ...(c.video ? [new FakeTrack("video")] : [])]);
      streams.push(s);
      return s;
    },
    now: () => 1000,
  });
  return { client, chat, asked, streams, pcs };
}

describe("calls: the call client on the chat socket", () => {
  it("enables calls on every chat connection and ends the call when the socket goes", async () => {
    const { client, chat } = callClient();
    assert.equal(client.state, "off");
    chat.setState("ready");
    await settle();
    assert.deepEqual(chat.requests, [{ op: "call.enable", on: true }]);
    assert.equal(client.state, "idle");
    chat.emit("call", { ev: "call.joined", group: "p1", zone: null, mode: "mesh", members: MEMBERS, sfu: null });
    await settle();
    assert.equal(client.state, "in_call");
    chat.setState("reconnecting");
    assert.equal(client.state, "off");
    assert.equal(client.group, null);
    chat.setState("ready");
    await settle();
    assert.equal(chat.requests.filter((r) => r.op === "call.enable").length, 2);
  });

  it("does nothing without getUserMedia, or when the server has no calls", async () => {
    const chat = new FakeChat();
    const c = new CallClient({ chat, tiles: fakeTiles(), audio: fakeAudio(), createPeerConnection: () => new FakePC(), getUserMedia: null });
    chat.setState("ready");
    assert.equal(c.state, "unsupported");
    assert.equal(chat.requests.length, 0);
    const chat2 = new FakeChat();
    chat2.answer = () => Promise.reject(Object.assign(new Error("unknown op"), { code: "bad_request" }));
    const { client } = callClient({ chat: chat2 });
    chat2.setState("ready");
    await settle();
    assert.equal(client.state, "off");
    assert.match(client.error, /unknown op/);
  });

  it("asks for the media once, opens one connection per member, relays the signaling", async () => {
    const { client, chat, asked, pcs } = callClient();
    chat.setState("ready");
    await settle();
    // alice's offer comes while we are still being asked for the media: it waits
    chat.emit("call", { ev: "call.joined", group: "p1", zone: null, mode: "mesh", members: MEMBERS, sfu: null });
    chat.emit("call", { ev: "call.signal", from: "alice", group: "p1", data: { type: "offer", sdp: "v=0 alice" } });
    chat.emit("call", { ev: "call.signal", from: "mallory", group: "p9", data: { type: "offer", sdp: "v=0 old" } }); // another call's
    await settle();
    assert.equal(asked.length, 1);
    assert.deepEqual(asked[0].video, { width: { ideal: 160 }, height: { ideal: 120 }, frameRate: { ideal: 10, max: 10 } });
    assert.deepEqual([...client.peers.keys()].sort(), ["alice", "carol"]);
    assert.equal(client.peers.get("alice").offerer, false);
    assert.equal(client.peers.get("carol").offerer, true);
    assert.equal(pcs.length, 2);
    assert.deepEqual([...client.tiles.tiles.keys()].sort(), ["alice", "carol"]); // a tile per other member
    assert.equal(client.tiles.self.name, "bob");
    // the toggles: the tracks keep running, muted or black
    client.setMic(false);
    client.setCam(false);
    assert.deepEqual(client.tiles.toggles, { hasMic: true, hasCam: true, mic: false, cam: false });
    assert.ok(client.local.getTracks().every((t) => !t.enabled && t.readyState === "live"));
    client.setMic(true);
    assert.equal(client.local.getAudioTracks()[0].enabled, true);
    // bob answered alice and offered to carol, each through call.signal to that member only
    assert.deepEqual(chat.signals("alice").map((r) => r.data.type), ["answer"]);
    assert.deepEqual(chat.signals("carol").map((r) => r.data.type), ["offer"]);
    assert.equal(chat.signals().length, 2);
    // remote media: a voice for the audio, a tile for the video
    const carolPc = client.peers.get("carol").pc;
    carolPc.fireTrack("audio");
    carolPc.fireTrack("video");
    assert.ok(client.audio.voices.has("carol"));
    assert.ok(client.tiles.tiles.get("carol").video);
    // voices sit at their avatars; speakers are reported by entity id
    client.audio.loud.add("carol");
    const positions = new Map([[196608, { x: 2, y: 0, z: 0 }], [65536, { x: 0, y: 0, z: 5 }]]);
    const talking = client.update({ self: { x: 0, y: 0, z: 0, yaw: 0 }, position: (id) => positions.get(id) || null }, 131072);
    assert.deepEqual([...talking], [196608]);
    assert.deepEqual(client.audio.placed.get("carol"), relativePosition({ x: 0, z: 0, yaw: 0 }, { x: 2, y: 0, z: 0 }));
    assert.deepEqual(client.describe().spoke, ["carol"]);
    // carol walks away: her connection and media go
    chat.emit("call", { ev: "call.members", group: "p1", members: MEMBERS.slice(0, 2) });
    assert.equal(carolPc.closed, true);
    assert.ok(!client.audio.voices.has("carol"));
    assert.ok(!client.tiles.tiles.has("carol"));
    assert.deepEqual([...client.peers.keys()], ["alice"]);
  });

  it("call.left closes every connection and stops the local tracks; the next call asks again", async () => {
    const { client, chat, asked, streams, pcs } = callClient();
    chat.setState("ready");
    await settle();
    chat.emit("call", { ev: "call.joined", group: "p1", zone: null, mode: "mesh", members: MEMBERS, sfu: null });
    await settle();
    chat.emit("call", { ev: "call.left", group: "p1", reason: "moved_away" });
    assert.ok(pcs.every((pc) => pc.closed));
    assert.ok(streams[0].getTracks().every((t) => t.readyState === "ended"));
    assert.equal(client.tiles.shown, false);
    assert.equal(client.peers.size, 0);
    assert.equal(client.state, "idle");
    assert.deepEqual(client.describe().events.map((e) => [e.ev, e.reason ?? null]), [["call.joined", null], ["call.left", "moved_away"]]);
    chat.emit("call", { ev: "call.joined", group: "p2", zone: null, mode: "mesh", members: MEMBERS.slice(1), sfu: null });
    await settle();
    assert.equal(asked.length, 2);
    assert.equal(streams[1].getTracks().every((t) => t.readyState === "live"), true);
  });

  it("a call left while the browser asks for media keeps no camera on", async () => {
    const { client, chat, streams } = callClient();
    chat.setState("ready");
    await settle();
    chat.emit("call", { ev: "call.joined", group: "p1", zone: null, mode: "mesh", members: MEMBERS, sfu: null });
    chat.emit("call", { ev: "call.left", group: "p1", reason: "moved_away" });
    await settle();
    assert.equal(streams.length, 1);
    assert.ok(streams[0].getTracks().every((t) => t.readyState === "ended"));
    assert.equal(client.peers.size, 0);
    assert.equal(client.local, null);
  });

  it("listens only when the media are refused, and never asks again", async () => {
    const { client, chat, asked, pcs } = callClient({ refuse: true });
    chat.setState("ready");
    await settle();
    chat.emit("call", { ev: "call.joined", group: "p1", zone: null, mode: "mesh", members: MEMBERS, sfu: null });
    await settle();
    assert.equal(asked.length, 1);
    assert.equal(client.state, "in_call");
    assert.equal(client.tiles.line.textContent, "listening only");
    const carol = pcs.find((pc) => pc === client.peers.get("carol").pc);
    assert.deepEqual(carol.transceivers.map((t) => t.direction), ["recvonly", "recvonly"]);
    chat.emit("call", { ev: "call.left", group: "p1", reason: "moved_away" });
    chat.emit("call", { ev: "call.joined", group: "p2", zone: null, mode: "mesh", members: MEMBERS, sfu: null });
    await settle();
    assert.equal(asked.length, 1);
    assert.equal(client.describe().local.refused, true);
  });

  it("waits when the call is full, and sends a rate-limited signal again", async () => {
    const chat = new FakeChat("alice");
    let refusals = 1;
    chat.answer = (op) => {
      if (op === "call.signal" && refusals > 0) {
        refusals--;
        return Promise.reject(Object.assign(new Error("slow down"), { code: "rate_limited", retryAfter: 0.01 }));
      }
      return Promise.resolve({ ok: true });
    };
    const { client } = callClient({ chat });
    chat.setState("ready");
    await settle();
    chat.emit("call", { ev: "call.full", group: "p1" });
    assert.equal(client.state, "waiting");
    assert.match(client.tiles.line.textContent, /full/);
    chat.emit("call", { ev: "call.joined", group: "p1", zone: null, mode: "mesh", members: MEMBERS.slice(0, 2), sfu: null });
    await settle();
    await new Promise((r) => setTimeout(r, 80));
    const offers = chat.signals("bob").filter((r) => r.data.type === "offer");
    assert.equal(offers.length, 2); // refused once, sent again
    assert.equal(client.counts.signal_errors, 0);
  });

  it("joins the SFU room of the ticket, and goes back to a mesh when told", async () => {
    const janus = new FakeJanus({ publishers: [{ id: 8, display: "alice" }] });
    const chat = new FakeChat();
    const client = new CallClient({
      chat, tiles: fakeTiles(), audio: fakeAudio(), createPeerConnection: () => new FakePC(),
      getUserMedia: async () => new FakeStream([new FakeTrack("audio")]),
      openJanusSocket: (u, p) => janus.open(u, p),
    });
    chat.setState("ready");
    await settle();
    chat.emit("call", { ev: "call.joined", group: "zone:stage", zone: "stage", mode: "sfu", members: MEMBERS, sfu: TICKET });
    await settle(40);
    assert.equal(client.room.state, "published");
    assert.deepEqual([...client.room.subs.values()].map((s) => s.display), ["alice"]);
    assert.equal(client.peers.size, 0);
    const room = client.room;
    // the same event again (a repeat) does not join twice
    chat.emit("call", { ev: "call.joined", group: "zone:stage", zone: "stage", mode: "sfu", members: MEMBERS, sfu: TICKET });
    await settle(40);
    assert.equal(client.room, room);
    chat.emit("call", { ev: "call.joined", group: "zone:stage", zone: "stage", mode: "mesh", members: MEMBERS, sfu: null });
    await settle(40);
    assert.equal(room.state, "closed");
    assert.equal(client.room, null);
    assert.deepEqual([...client.peers.keys()].sort(), ["alice", "carol"]);
    assert.equal(client.local.getTracks()[0].readyState, "live"); // the same call: the microphone stays
  });
});

describe("calls: on the real chat client", () => {
  it("call.* events reach the call client, and its requests go out on the chat socket", async () => {
    const sockets = [];
    const chat = new ChatClient({
      url: "ws://test/ws/chat",
      token: "tok",
      openSocket: (url) => {
        const ws = {
          url, readyState: 0, sent: [], onopen: null, onmessage: null, onclose: null, onerror: null,
          send(text) { this.sent.push(JSON.parse(text)); },
          close() { this.readyState = 3; },
          push(f) { this.onmessage({ data: JSON.stringify(f) }); },
        };
        sockets.push(ws);
        return ws;
      },
      timers: { setTimeout: () => 0, clearTimeout: () => {} },
    });
    const pcs = [];
    const client = new CallClient({
      chat, tiles: fakeTiles(), audio: fakeAudio(),
      createPeerConnection: () => { const pc = new FakePC(); pcs.push(pc); return pc; },
      getUserMedia: async () => new FakeStream([new FakeTrack("audio")]),
    });
    chat.start();
    const ws = sockets[0];
    ws.readyState = 1;
    ws.onopen();
    const hello = ws.sent.find((f) => f.op === "hello");
    ws.push({ re: hello.id, ok: true, user: "bob", rooms: [], public_room: null });
    await settle();
    const enable = ws.sent.find((f) => f.op === "call.enable");
    assert.deepEqual({ op: enable.op, on: enable.on }, { op: "call.enable", on: true });
    ws.push({ re: enable.id, ok: true });
    await settle();
    assert.equal(client.state, "idle");
    ws.push({ ev: "call.joined", group: "open/p1", zone: null, mode: "mesh", members: MEMBERS.slice(0, 2), sfu: null });
    ws.push({ ev: "call.signal", from: "alice", group: "open/p1", data: { type: "offer", sdp: "v=0 alice", } });
    await settle();
    assert.equal(client.state, "in_call");
    const answer = ws.sent.find((f) => f.op === "call.signal");
    assert.equal(answer.to, "alice");
    assert.equal(answer.data.type, "answer");
    assert.equal(pcs[0].remoteDescription.sdp, "v=0 alice");
    // the chat socket drops: the call is over on the page, at once
    ws.readyState = 3;
    ws.onclose({ code: 1006 });
    assert.equal(client.state, "off");
    assert.equal(pcs[0].closed, true);
    assert.equal(client.local.getTracks()[0].readyState, "ended");
  });
});
