// Link (sequence/ack/replay), the sans-IO client connection over a trusted transport, and
// the msgpack subset.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { ClientConnection, CLOSED, CONNECTED, HELLO_SENT } from "../src/protocol/connection.js";
import { Link, seqNewer } from "../src/protocol/link.js";
import { decodeInputs, encodeInputs, encodeWelcome } from "../src/protocol/messages.js";
import { decode, encode, Float64, Reader } from "../src/protocol/msgpack.js";
import * as P from "../src/protocol/packets.js";
import { hex } from "./helpers.mjs";

const WELCOME = {
  entityId: (3 << 16) | 1,
  tickRate: 20,
  tick: 77,
  mins: [-110, -10, -110],
  maxs: [110, 50, 110],
  positionStep: 0.01,
  maxSpeed: 5,
  interestRadius: 50,
  keepaliveInterval: 1,
  timeout: 5,
};

describe("Link", () => {
  it("sequence comparison wraps", () => {
    assert.ok(seqNewer(1, 0));
    assert.ok(seqNewer(0, 65535));
    assert.ok(!seqNewer(0, 1));
    assert.ok(!seqNewer(5, 5));
  });
  it("accepts newer and recent older packets once, builds ack bits", () => {
    const l = new Link(0);
    assert.ok(l.accept(10));
    assert.ok(l.accept(12));
    assert.ok(l.accept(11));
    assert.ok(!l.accept(11));
    assert.ok(!l.accept(12));
    const s = l.nextSend(0);
    assert.equal(s.ack, 12);
    assert.equal(s.ackBits, 0b11); // 11 and 10
    assert.ok(l.accept(12 + 32)); // 12 now exactly 32 back
    assert.equal(l.nextSend(0).ackBits >>> 31, 1);
    assert.ok(!l.accept(11)); // more than 32 back
    assert.equal(l.stale, 1);
  });
  it("accepts across the wrap-around", () => {
    const l = new Link(0);
    assert.ok(l.accept(65534));
    assert.ok(l.accept(1));
    assert.ok(l.accept(65535));
    assert.ok(l.accept(0));
    const s = l.nextSend(0);
    assert.equal(s.ack, 1);
    assert.equal(s.ackBits & 0b111, 0b111);
  });
  it("processes acks and measures the round trip", () => {
    const l = new Link(0);
    for (let i = 0; i < 5; i++) l.nextSend(i * 0.05); // seqs 0..4
    const acked = l.processAcks(4, 0b0101, 0.3); // 4, 3, 1
    assert.deepEqual(acked.sort(), [1, 3, 4]);
    assert.ok(l.rtt > 0 && l.rtt <= 0.3);
    assert.deepEqual(l.processAcks(4, 0b0101, 0.4), []);
  });
  it("takes the round trip from the newest packet acknowledged only (an idle peer's wait is not RTT)", () => {
    // As tests/test_link.py: a packet every 50 ms, the peer answers once a second, 20 ms after
    // the newest one; the 19 older ones acknowledged with it waited up to a second.
    const server = new Link(0);
    const client = new Link(0);
    let now = 0;
    for (let s = 0; s < 10; s++) {
      for (let i = 0; i < 20; i++) {
        client.accept(server.nextSend(now).seq);
        now += 0.05;
      }
      const answer = now - 0.05 + 0.02;
      const sent = client.nextSend(answer);
      assert.equal(server.processAcks(sent.ack, sent.ackBits, answer).length, 20);
    }
    assert.ok(Math.abs(server.rtt - 0.02) < 1e-9, String(server.rtt));
  });
});

function accept(conn, salt = 0x01020304) {
  return P.encodeAccept(conn.nonce, salt, encodeWelcome(WELCOME));
}

describe("ClientConnection (trusted)", () => {
  it("HELLO carries the token; ACCEPT gives the Welcome", () => {
    const c = new ClientConnection({ token: "tok-1", nonce: 42n });
    const hello = c.connect(0);
    assert.equal(hello.length, 128);
    const h = P.decodeHello(hello);
    assert.equal(h.nonce, 42n);
    assert.equal(new TextDecoder().decode(h.token), "tok-1");
    assert.equal(c.state, HELLO_SENT);
    const ev = c.receive(accept(c), 0.01);
    assert.equal(ev.length, 1);
    assert.equal(ev[0].type, "connected");
    assert.deepEqual(ev[0].welcome, WELCOME);
    assert.equal(c.state, CONNECTED);
  });
  it("takes the keep-alive interval and timeout from the Welcome", () => {
    const c = new ClientConnection({ nonce: 7n });
    c.connect(0);
    const w = { ...WELCOME, keepaliveInterval: 0.5, timeout: 2 };
    c.receive(P.encodeAccept(c.nonce, 0x01020304, encodeWelcome(w)), 0.01);
    assert.equal(c.keepaliveInterval, 0.5);
    assert.equal(c.timeout, 2);
    const quiet = c.poll(2.5); // nothing received for more than 2 s: timed out
    assert.equal(quiet.events[0].reason, "timeout");
  });
  it("ignores an ACCEPT with another nonce and resends HELLO every 250 ms, gives up after 5 s", () => {
    const c = new ClientConnection({ nonce: 1n });
    c.connect(0);
    assert.deepEqual(c.receive(P.encodeAccept(2n, 5, encodeWelcome(WELCOME)), 0), []);
    assert.equal(c.drops.wrong_nonce, 1);
    assert.equal(c.poll(0.1).packets.length, 0);
    assert.equal(c.poll(0.26).packets.length, 1);
    assert.equal(c.poll(0.3).packets.length, 0);
    const r = c.poll(5.1);
    assert.equal(r.events[0].reason, "handshake_timeout");
    assert.equal(c.state, CLOSED);
  });
  it("REFUSE stops", () => {
    const c = new ClientConnection({ nonce: 9n });
    c.connect(0);
    const ev = c.receive(P.encodeRefuse(2, 1, 9n, "full"), 0);
    assert.deepEqual(ev[0], { type: "refused", reason: "server_full", text: "full", serverVersion: 1 });
    assert.equal(c.state, CLOSED);
  });
  it("connected packets: salt, acks in every packet, duplicates dropped, keepalive, timeout", () => {
    const c = new ClientConnection({ nonce: 3n });
    c.connect(0);
    c.receive(accept(c, 777), 0);
    const input = c.packet(P.INPUT, encodeInputs([{ seq: 0, moveX: 0, moveZ: 0, yaw: 0, anim: 0 }]), 0.05);
    const ih = P.decodePacket(input);
    assert.equal(ih.salt, 777);
    assert.equal(ih.seq, 0);
    assert.equal(decodeInputs(ih.payload)[0].seq, 0);
    // server snapshot seq 0 acking our seq 0
    const snap = P.encodePacket(P.SNAPSHOT, 777, 0, 0, 0, new Uint8Array([1, 2]));
    const ev = c.receive(snap, 0.1);
    assert.equal(ev[0].type, "packet");
    assert.deepEqual(ev[0].acked, [0]);
    assert.ok(Math.abs(c.link.rtt - 0.05) < 1e-9);
    assert.deepEqual(c.receive(snap, 0.11), []); // duplicate
    assert.deepEqual(c.receive(P.encodePacket(P.SNAPSHOT, 778, 1, 0, 0, null), 0.12), []); // bad salt
    const next = P.decodePacket(c.packet(P.INPUT, new Uint8Array([0x91, 0x96, 1, 0, 0, 0, 0, 0]), 0.15));
    assert.equal(next.ack, 0);
    assert.equal(next.seq, 1);
    // idle: keepalive after 1 s without sending
    assert.equal(c.poll(0.5).packets.length, 0);
    const ka = c.poll(1.2).packets;
    assert.equal(ka.length, 1);
    assert.equal(P.decodePacket(ka[0]).type, P.KEEPALIVE);
    // silence: timeout after 5 s without receiving
    const t = c.poll(5.2);
    assert.equal(t.events[0].reason, "timeout");
  });
  it("server DISCONNECT ends the connection; our DISCONNECT says client_left", () => {
    const c = new ClientConnection({ nonce: 4n });
    c.connect(0);
    c.receive(accept(c, 9), 0);
    const ev = c.receive(P.encodePacket(P.DISCONNECT, 9, 0, 0, 0, new Uint8Array([2])), 0.1);
    assert.deepEqual(ev, [{ type: "disconnected", reason: "server_shutdown", text: "" }]);
    const w = new ClientConnection({ nonce: 6n }); // world_closed, with the text saying why
    w.connect(0);
    w.receive(accept(w, 9), 0);
    const why = new TextEncoder().encode("closed for the night");
    const closed = w.receive(P.encodePacket(P.DISCONNECT, 9, 0, 0, 0, new Uint8Array([5, ...why])), 0.1);
    assert.deepEqual(closed, [{ type: "disconnected", reason: "world_closed", text: "closed for the night" }]);
    assert.equal(w.closeText, "closed for the night");
    const d = new ClientConnection({ nonce: 5n });
    d.connect(0);
    d.receive(accept(d, 9), 0);
    const bye = P.decodePacket(d.disconnect(0.2));
    assert.equal(bye.type, P.DISCONNECT);
    assert.equal(bye.payload[0], P.DISCONNECT_CLIENT_LEFT);
    assert.equal(d.disconnect(0.3), null);
  });
  it("garbage is dropped and counted", () => {
    const c = new ClientConnection();
    c.connect(0);
    assert.deepEqual(c.receive(new Uint8Array([0x04, 1, 2]), 0), []);
    assert.deepEqual(c.receive(new Uint8Array([0x10, 1, 2]), 0), []);
    assert.equal(c.drops.truncated, 1);
    assert.equal(c.drops.not_connected, 1);
  });
});

describe("msgpack subset", () => {
  it("shortest integer forms, like Python's msgpack", () => {
    const cases = [
      [0, "00"], [127, "7f"], [128, "cc80"], [255, "ccff"], [256, "cd0100"], [65535, "cdffff"],
      [65536, "ce00010000"], [2 ** 32 - 1, "ceffffffff"], [2 ** 32, "cf0000000100000000"],
      [-1, "ff"], [-32, "e0"], [-33, "d0df"], [-128, "d080"], [-129, "d1ff7f"], [-32769, "d2ffff7fff"],
    ];
    for (const [v, h] of cases) {
      assert.equal(hex(encode(v)), h, String(v));
      assert.equal(decode(encode(v)), v);
    }
  });
  it("floats, bins, strings, arrays, maps round-trip", () => {
    assert.equal(hex(encode(new Float64(5))), "cb4014000000000000");
    const value = [1.5, null, true, "héllo", new Uint8Array([1, 2, 3]), { a: [1, -2] }];
    const back = decode(encode(value));
    assert.deepEqual(back.slice(0, 4), [1.5, null, true, "héllo"]);
    assert.deepEqual(Array.from(back[4]), [1, 2, 3]);
    assert.deepEqual(back[5], { a: [1, -2] });
    const big = new Uint8Array(300);
    assert.equal(hex(encode(big).subarray(0, 3)), "c5012c");
  });
  it("typed reads are strict", () => {
    assert.throws(() => new Reader(encode(1.5)).int("x"), (e) => e.reason === "bad_field");
    assert.throws(() => new Reader(encode(300)).int("x", 0, 255), (e) => e.reason === "bad_field");
    assert.throws(() => new Reader(new Uint8Array([0xcd, 1])).int("x"), (e) => e.reason === "bad_msgpack");
    assert.throws(() => decode(new Uint8Array([0xd4, 0, 0])), (e) => e.reason === "bad_msgpack"); // ext
    assert.throws(() => decode(new Uint8Array([0x01, 0x02])), (e) => e.reason === "bad_msgpack"); // trailing
  });
});
