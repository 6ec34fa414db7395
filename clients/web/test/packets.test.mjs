// Packet codecs against protocol/vectors/packets.json: every vector encoded byte-exact and
// decoded back to its fields.

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { describe, it } from "node:test";

import { decodeInputs, decodeWelcome, encodeInputs, encodeWelcome } from "../src/protocol/messages.js";
import * as P from "../src/protocol/packets.js";
import { hex, loadVector, unhex } from "./helpers.mjs";

const DOC = loadVector("packets.json");
const V = Object.fromEntries(DOC.vectors.map((v) => [v.name, v]));
const NAMES_COVERED = new Set();

function vec(name) {
  NAMES_COVERED.add(name);
  assert.ok(V[name], `vector ${name} missing`);
  return V[name];
}

const inputObj = ([seq, moveX, moveZ, yaw, anim, flags]) => ({ seq, moveX, moveZ, yaw, anim, flags });

describe("packets.json", () => {
  it("hello", () => {
    const v = vec("hello");
    const bytes = P.encodeHello(v.fields.version, BigInt(v.fields.nonce), "");
    assert.equal(hex(bytes), v.hex);
    const d = P.decodeHello(unhex(v.hex));
    assert.equal(d.version, v.fields.version);
    assert.equal(d.nonce, BigInt(v.fields.nonce));
    assert.equal(d.token.length, 0);
  });
  it("hello_with_token", () => {
    const v = vec("hello_with_token");
    assert.equal(hex(P.encodeHello(v.fields.version, BigInt(v.fields.nonce), v.fields.token)), v.hex);
    const d = P.decodeHello(unhex(v.hex));
    assert.equal(new TextDecoder().decode(d.token), v.fields.token);
    assert.equal(d.nonce, BigInt(v.fields.nonce));
  });
  it("cookie_mac (HMAC-SHA256 of version|ip|port|nonce|time, first 16 bytes)", () => {
    const v = vec("cookie_mac");
    const f = v.fields;
    const msg = `${f.version}|${f.ip}|${f.port}|${f.nonce}|${f.time_ms}`;
    const mac = createHmac("sha256", Buffer.from(f.secret_hex, "hex")).update(msg).digest().subarray(0, 16);
    assert.equal(mac.toString("hex"), v.hex);
  });
  it("challenge", () => {
    const v = vec("challenge");
    const f = v.fields;
    assert.equal(hex(P.encodeChallenge(f.version, BigInt(f.nonce), BigInt(f.time_ms), unhex(f.mac_hex))), v.hex);
    const d = P.decodeChallenge(unhex(v.hex));
    assert.equal(d.version, f.version);
    assert.equal(d.nonce, BigInt(f.nonce));
    assert.equal(d.cookieMs, BigInt(f.time_ms));
    assert.equal(hex(d.mac), f.mac_hex);
  });
  it("connect", () => {
    const v = vec("connect");
    const f = v.fields;
    assert.equal(hex(P.encodeConnect(f.version, BigInt(f.nonce), BigInt(f.time_ms), unhex(f.mac_hex), f.token)), v.hex);
    const d = P.decodeConnect(unhex(v.hex));
    assert.equal(d.nonce, BigInt(f.nonce));
    assert.equal(hex(d.mac), f.mac_hex);
    assert.equal(new TextDecoder().decode(d.token), f.token);
  });
  it("welcome", () => {
    const v = vec("welcome");
    const f = v.fields;
    const w = {
      entityId: f.entity_id,
      tickRate: f.tick_rate,
      tick: f.tick,
      mins: f.mins,
      maxs: f.maxs,
      positionStep: f.position_step,
      maxSpeed: f.max_speed,
      interestRadius: f.interest_radius,
    };
    assert.equal(hex(encodeWelcome(w)), v.hex);
    assert.deepEqual(decodeWelcome(unhex(v.hex)), w);
  });
  it("accept", () => {
    const v = vec("accept");
    const f = v.fields;
    assert.equal(hex(P.encodeAccept(BigInt(f.nonce), f.salt, unhex(f.welcome_hex))), v.hex);
    const d = P.decodeAccept(unhex(v.hex));
    assert.equal(d.nonce, BigInt(f.nonce));
    assert.equal(d.salt, f.salt);
    assert.equal(hex(d.welcome), f.welcome_hex);
  });
  it("refuse_version", () => {
    const v = vec("refuse_version");
    const f = v.fields;
    assert.equal(hex(P.encodeRefuse(f.reason, f.server_version, BigInt(f.nonce), f.text, 128)), v.hex);
    const d = P.decodeRefuse(unhex(v.hex));
    assert.equal(d.reason, f.reason);
    assert.equal(d.reasonName, "version_mismatch");
    assert.equal(d.serverVersion, f.server_version);
    assert.equal(d.nonce, BigInt(f.nonce));
    assert.equal(d.text, f.text);
  });
  it("inputs", () => {
    const v = vec("inputs");
    const inputs = v.fields.inputs.map(inputObj);
    assert.equal(hex(encodeInputs(inputs)), v.hex);
    assert.deepEqual(decodeInputs(unhex(v.hex)), inputs);
  });
  it("input_packet", () => {
    const v = vec("input_packet");
    const f = v.fields;
    assert.equal(hex(P.encodePacket(f.type, f.salt, f.seq, f.ack, f.ack_bits, unhex(f.payload_hex))), v.hex);
    const d = P.decodePacket(unhex(v.hex));
    assert.deepEqual(
      { type: d.type, salt: d.salt, seq: d.seq, ack: d.ack, ackBits: d.ackBits, payload: hex(d.payload) },
      { type: f.type, salt: f.salt, seq: f.seq, ack: f.ack, ackBits: f.ack_bits, payload: f.payload_hex },
    );
  });
  it("keepalive_packet", () => {
    const v = vec("keepalive_packet");
    const f = v.fields;
    assert.equal(hex(P.encodePacket(f.type, f.salt, f.seq, f.ack, f.ack_bits, null)), v.hex);
    const d = P.decodePacket(unhex(v.hex));
    assert.equal(d.type, P.KEEPALIVE);
    assert.equal(d.ack, f.ack);
    assert.equal(d.payload.length, 0);
  });
  it("disconnect_packet", () => {
    const v = vec("disconnect_packet");
    const f = v.fields;
    assert.equal(hex(P.encodePacket(f.type, f.salt, f.seq, f.ack, f.ack_bits, new Uint8Array([f.reason]))), v.hex);
    const d = P.decodePacket(unhex(v.hex));
    assert.equal(d.type, P.DISCONNECT);
    assert.equal(d.ackBits, f.ack_bits);
    assert.equal(d.payload[0], f.reason);
    assert.equal(P.DISCONNECT_REASONS[d.payload[0]], "server_shutdown");
  });
  it("every vector in the file is covered", () => {
    for (const v of DOC.vectors) assert.ok(NAMES_COVERED.has(v.name), `no test for vector ${v.name}`);
  });
});

describe("packet validation", () => {
  it("HELLO and CONNECT must be 128 bytes", () => {
    const h = P.encodeHello(1, 5n, "x");
    assert.throws(() => P.decodeHello(h.subarray(0, 127)));
    assert.throws(() => P.decodeConnect(new Uint8Array(129)));
  });
  it("tokens are at most 64 bytes", () => {
    assert.throws(() => P.encodeHello(1, 1n, "a".repeat(65)), RangeError);
    const bad = P.encodeHello(1, 1n, "");
    bad[11] = 65;
    assert.throws(() => P.decodeHello(bad), (e) => e.reason === "bad_token");
  });
  it("short packets", () => {
    assert.throws(() => P.decodePacket(new Uint8Array(12)), (e) => e.reason === "truncated");
    assert.throws(() => P.decodeAccept(new Uint8Array(12)), (e) => e.reason === "truncated");
    assert.throws(() => P.packetType(new Uint8Array(0)), (e) => e.reason === "empty");
    assert.throws(() => P.packetType(new Uint8Array(1401)), (e) => e.reason === "oversized");
  });
  it("Welcome is strict", () => {
    const ok = unhex(V.welcome.hex);
    // tick_rate 20 (0x14) -> a float 20.0 is not an integer
    const asFloat = new Uint8Array([...ok.subarray(0, 6), 0xcb, 0x40, 0x34, 0, 0, 0, 0, 0, 0, ...ok.subarray(7)]);
    assert.throws(() => decodeWelcome(asFloat), (e) => e.reason === "bad_field");
    assert.throws(() => decodeWelcome(ok.subarray(0, ok.length - 1)));
    assert.throws(() => decodeWelcome(new Uint8Array([...ok, 0])), (e) => e.reason === "bad_msgpack");
  });
  it("inputs are strict", () => {
    assert.throws(() => decodeInputs(new Uint8Array([0x90])), (e) => e.reason === "bad_shape");
    assert.throws(() => encodeInputs([{ seq: 1, moveX: 128, moveZ: 0, yaw: 0, anim: 0 }]), RangeError);
    const nine = Array.from({ length: 9 }, (_, i) => ({ seq: i, moveX: 0, moveZ: 0, yaw: 0, anim: 0, flags: 0 }));
    assert.deepEqual(decodeInputs(encodeInputs(nine)).map((i) => i.seq), [1, 2, 3, 4, 5, 6, 7, 8]);
  });
});
