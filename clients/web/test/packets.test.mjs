// Packet codecs against protocol/vectors/packets.json: every vector encoded byte-exact and
// decoded back to its fields. The file is read with plain JSON.parse: its u64 fields are
// decimal strings (SPEC 4.2), so nothing is rounded.

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";

import { Link } from "../src/protocol/link.js";
import { decodeInputs, decodeWelcome, encodeInputs, encodeWelcome } from "../src/protocol/messages.js";
import { Writer } from "../src/protocol/msgpack.js";
import * as P from "../src/protocol/packets.js";
import { blake2b } from "./blake2b.mjs";
import { VECTORS_DIR, hex, unhex } from "./helpers.mjs";

const DOC = JSON.parse(readFileSync(join(VECTORS_DIR, "packets.json"), "utf8"));
const V = Object.fromEntries(DOC.vectors.map((v) => [v.name, v]));
const NAMES_COVERED = new Set();
const U64_FIELDS = new Set(["nonce", "time_ms", "identity", "expires_ms"]);

function vec(name) {
  NAMES_COVERED.add(name);
  assert.ok(V[name], `vector ${name} missing`);
  return V[name];
}

/** A u64 field of the file: a decimal string, read exactly. */
function u64(s) {
  assert.equal(typeof s, "string", `u64 field ${s} must be a string`);
  assert.match(s, /^(0|[1-9][0-9]*)$/);
  const n = BigInt(s);
  assert.ok(n < 1n << 64n);
  return n;
}

const inputObj = ([seq, moveX, moveZ, yaw, anim, flags]) => ({ seq, moveX, moveZ, yaw, anim, flags });

const welcomeObj = (f) => ({
  entityId: f.entity_id,
  tickRate: f.tick_rate,
  tick: f.tick,
  mins: f.mins,
  maxs: f.maxs,
  positionStep: f.position_step,
  maxSpeed: f.max_speed,
  interestRadius: f.interest_radius,
  keepaliveInterval: f.keepalive_interval,
  timeout: f.timeout,
});

describe("packets.json", () => {
  it("format 2: u64 fields as decimal strings, every other integer exact in a double", () => {
    assert.equal(DOC.format, 2);
    assert.equal(DOC.protocol_version, P.PROTOCOL_VERSION); // the vectors speak this client's version
    assert.equal(V.hello.fields.version, P.PROTOCOL_VERSION);
    for (const v of DOC.vectors) {
      for (const key of Object.keys(v)) assert.ok(["name", "fields", "hex", "decode_only"].includes(key), key);
      assert.match(v.hex, /^([0-9a-f]{2})*$/);
    }
    let u64Count = 0;
    const walk = (obj, key) => {
      if (Array.isArray(obj)) obj.forEach((x) => walk(x, key));
      else if (obj !== null && typeof obj === "object") for (const [k, x] of Object.entries(obj)) walk(x, k);
      else if (U64_FIELDS.has(key)) {
        u64(obj);
        u64Count++;
      } else if (typeof obj === "number" && Number.isInteger(obj)) assert.ok(Number.isSafeInteger(obj), `${key}: ${obj}`);
    };
    walk(DOC);
    assert.ok(u64Count >= 8);
    // A nonce above 2^53 comes through exactly.
    const big = u64(V.hello_with_token.fields.nonce);
    assert.ok(big > 2n ** 53n);
    assert.equal(P.decodeHello(unhex(V.hello_with_token.hex)).nonce, big);
  });
  it("hello", () => {
    const v = vec("hello");
    const bytes = P.encodeHello(v.fields.version, u64(v.fields.nonce), "");
    assert.equal(hex(bytes), v.hex);
    const d = P.decodeHello(unhex(v.hex));
    assert.equal(d.version, v.fields.version);
    assert.equal(d.nonce, u64(v.fields.nonce));
    assert.equal(d.token.length, 0);
  });
  it("hello_with_token", () => {
    const v = vec("hello_with_token");
    assert.equal(hex(P.encodeHello(v.fields.version, u64(v.fields.nonce), v.fields.token)), v.hex);
    const d = P.decodeHello(unhex(v.hex));
    assert.equal(new TextDecoder().decode(d.token), v.fields.token);
    assert.equal(d.nonce, u64(v.fields.nonce));
  });
  it("cookie_mac (HMAC-SHA256 keyed with the raw secret bytes, of version|ip|port|nonce|time, first 16 bytes)", () => {
    const v = vec("cookie_mac");
    const f = v.fields;
    const msg = `${f.version}|${f.ip}|${f.port}|${u64(f.nonce)}|${u64(f.time_ms)}`;
    const mac = createHmac("sha256", Buffer.from(f.secret_hex, "hex")).update(msg).digest().subarray(0, 16);
    assert.equal(mac.toString("hex"), v.hex);
    // Keyed with the hex text of the secret instead, the MAC differs.
    const wrong = createHmac("sha256", Buffer.from(f.secret_hex, "ascii")).update(msg).digest().subarray(0, 16);
    assert.notEqual(wrong.toString("hex"), v.hex);
  });
  it("challenge", () => {
    const v = vec("challenge");
    const f = v.fields;
    assert.equal(hex(P.encodeChallenge(f.version, u64(f.nonce), u64(f.time_ms), unhex(f.mac_hex))), v.hex);
    const d = P.decodeChallenge(unhex(v.hex));
    assert.equal(d.version, f.version);
    assert.equal(d.nonce, u64(f.nonce));
    assert.equal(d.cookieMs, u64(f.time_ms));
    assert.equal(hex(d.mac), f.mac_hex);
  });
  it("connect", () => {
    const v = vec("connect");
    const f = v.fields;
    assert.equal(hex(P.encodeConnect(f.version, u64(f.nonce), u64(f.time_ms), unhex(f.mac_hex), f.token)), v.hex);
    const d = P.decodeConnect(unhex(v.hex));
    assert.equal(d.nonce, u64(f.nonce));
    assert.equal(d.cookieMs, u64(f.time_ms));
    assert.equal(hex(d.mac), f.mac_hex);
    assert.equal(new TextDecoder().decode(d.token), f.token);
  });
  it("welcome", () => {
    const v = vec("welcome");
    const w = welcomeObj(v.fields);
    assert.equal(hex(encodeWelcome(w)), v.hex);
    assert.deepEqual(decodeWelcome(unhex(v.hex)), w);
  });
  it("welcome_other_numbers (decode only: integers and float32 where the server writes float64)", () => {
    const v = vec("welcome_other_numbers");
    assert.equal(v.decode_only, true);
    const w = welcomeObj(v.fields);
    assert.deepEqual(decodeWelcome(unhex(v.hex)), w);
    assert.notEqual(hex(encodeWelcome(w)), v.hex); // our encoder writes float64 throughout
    assert.deepEqual(decodeWelcome(encodeWelcome(w)), w);
  });
  it("accept", () => {
    const v = vec("accept");
    const f = v.fields;
    assert.equal(hex(P.encodeAccept(u64(f.nonce), f.salt, unhex(f.welcome_hex))), v.hex);
    const d = P.decodeAccept(unhex(v.hex));
    assert.equal(d.nonce, u64(f.nonce));
    assert.equal(d.salt, f.salt);
    assert.equal(hex(d.welcome), f.welcome_hex);
  });
  it("refuse_version", () => {
    const v = vec("refuse_version");
    const f = v.fields;
    assert.equal(hex(P.encodeRefuse(f.reason, f.server_version, u64(f.nonce), f.text, 128)), v.hex);
    const d = P.decodeRefuse(unhex(v.hex));
    assert.equal(d.reason, f.reason);
    assert.equal(d.reasonName, "version_mismatch");
    assert.equal(d.serverVersion, f.server_version);
    assert.equal(d.nonce, u64(f.nonce));
    assert.equal(d.text, f.text);
  });
  it("inputs", () => {
    const v = vec("inputs");
    const inputs = v.fields.inputs.map(inputObj);
    assert.equal(hex(encodeInputs(inputs)), v.hex);
    assert.deepEqual(decodeInputs(unhex(v.hex)), inputs);
  });
  for (const name of ["input_packet", "first_input_packet"]) {
    it(name, () => {
      const v = vec(name);
      const f = v.fields;
      assert.equal(hex(P.encodePacket(f.type, f.salt, f.seq, f.ack, f.ack_bits, unhex(f.payload_hex))), v.hex);
      const d = P.decodePacket(unhex(v.hex));
      assert.deepEqual(
        { type: d.type, salt: d.salt, seq: d.seq, ack: d.ack, ackBits: d.ackBits, payload: hex(d.payload) },
        { type: f.type, salt: f.salt, seq: f.seq, ack: f.ack, ackBits: f.ack_bits, payload: f.payload_hex },
      );
    });
  }
  it("first_input_packet: the ack of a side that has received nothing acknowledges nothing", () => {
    const f = vec("first_input_packet").fields;
    // What a Link sends before it accepted anything ...
    const client = new Link(0);
    assert.deepEqual(client.nextSend(0), { seq: 0, ack: f.ack, ackBits: f.ack_bits });
    // ... applied by the ordinary rules on a peer that sent 40 packets: none acked, none lost.
    const server = new Link(0);
    for (let i = 0; i < 40; i++) server.nextSend(i * 0.05);
    assert.deepEqual(server.processAcks(f.ack, f.ack_bits, 2), []);
    assert.equal(server.packetsLost, 0);
    assert.equal(server.unacked.size, 40);
    assert.deepEqual(decodeInputs(unhex(f.payload_hex)).map((i) => i.seq), [0]);
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
  it("disconnect_world_closed_packet (reason 5, then UTF-8 text)", () => {
    const v = vec("disconnect_world_closed_packet");
    const f = v.fields;
    const d = P.decodePacket(unhex(v.hex));
    assert.equal(d.type, P.DISCONNECT);
    assert.equal(d.payload[0], f.reason);
    assert.equal(P.DISCONNECT_REASONS[d.payload[0]], "world_closed");
    assert.equal(P.disconnectText(d.payload), f.text);
    assert.equal(P.disconnectText(new Uint8Array([2])), "");
    assert.equal(hex(P.encodeDisconnectPayload(f.reason, f.text)), hex(d.payload));
  });
  for (const [name, reason] of [["disconnect_kicked_packet", P.DISCONNECT_KICKED], ["disconnect_replaced_packet", P.DISCONNECT_REPLACED]]) {
    it(`${name} (a kick and a newer login are different reasons)`, () => {
      const v = vec(name);
      const f = v.fields;
      assert.equal(f.reason, reason);
      assert.equal(hex(P.encodePacket(f.type, f.salt, f.seq, f.ack, f.ack_bits, P.encodeDisconnectPayload(f.reason, f.text))), v.hex);
      const d = P.decodePacket(unhex(v.hex));
      assert.equal(d.type, P.DISCONNECT);
      assert.equal(P.DISCONNECT_REASONS[d.payload[0]], f.reason_name);
      assert.equal(P.disconnectText(d.payload), f.text);
    });
  }
  it("a DISCONNECT text is cut to its limit between characters", () => {
    let payload = P.encodeDisconnectPayload(P.DISCONNECT_KICKED, "é".repeat(150)); // 300 bytes of text
    assert.equal(payload.length, 1 + P.MAX_DISCONNECT_TEXT);
    assert.equal(P.disconnectText(payload), "é".repeat(100));
    payload = P.encodeDisconnectPayload(P.DISCONNECT_KICKED, "a" + "é".repeat(150)); // 2-byte characters from byte 1
    assert.equal(payload.length, P.MAX_DISCONNECT_TEXT);
    assert.equal(P.disconnectText(payload), "a" + "é".repeat(99));
    assert.deepEqual([...P.encodeDisconnectPayload(P.DISCONNECT_REPLACED)], [6]);
    assert.equal(P.DISCONNECT_REASONS[250], undefined); // unknown: the connection maps it to "server_disconnect"
  });
  it("connect_token (format u8, identity u64, expires_ms u64, 15 random bytes; opaque to clients)", () => {
    const v = vec("connect_token");
    const t = unhex(v.hex);
    const view = new DataView(t.buffer, t.byteOffset, t.byteLength);
    assert.equal(t.length, 32);
    assert.equal(t[0], v.fields.format);
    assert.equal(view.getBigUint64(1, true), u64(v.fields.identity));
    assert.equal(view.getBigUint64(9, true), u64(v.fields.expires_ms));
    assert.equal(hex(t.subarray(17)), v.fields.random_hex);
  });
  it("blake2b (RFC 7693) as the tags use it: keyed, output length 8", () => {
    // RFC 7693 appendix A: BLAKE2b-512("abc").
    assert.equal(
      hex(blake2b(new TextEncoder().encode("abc"))),
      "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d17d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923",
    );
    const key = unhex(V.connect_with_token.fields.key_hex);
    assert.notEqual(hex(blake2b(new Uint8Array(3), key, 8)), hex(blake2b(new Uint8Array(3), key, 64).subarray(0, 8)));
  });
  it("connect_with_token (the last 8 bytes: the tag of the first 120 under the connect key)", () => {
    const v = vec("connect_with_token");
    const f = v.fields;
    const key = unhex(f.key_hex);
    const unsigned = P.encodeConnect(f.version, u64(f.nonce), u64(f.time_ms), unhex(f.mac_hex), unhex(f.token_hex));
    const tag = blake2b(unsigned.subarray(0, 120), key, 8);
    assert.equal(hex(tag), f.tag_hex);
    const signed = new Uint8Array(unsigned);
    signed.set(tag, 120);
    assert.equal(hex(signed), v.hex);
    const d = P.decodeConnect(unhex(v.hex));
    assert.equal(hex(d.token), f.token_hex);
    assert.equal(d.nonce, u64(f.nonce));
  });
  it("accept_tagged and tagged_input_packet (header and payload, then the tag over them)", () => {
    const a = vec("accept_tagged");
    const key = unhex(a.fields.key_hex);
    const accept = P.encodeAccept(u64(a.fields.nonce), a.fields.salt, unhex(a.fields.welcome_hex));
    assert.equal(hex(blake2b(accept, key, 8)), a.fields.tag_hex);
    assert.equal(hex(accept) + a.fields.tag_hex, a.hex);
    const v = vec("tagged_input_packet");
    const f = v.fields;
    const body = P.encodePacket(f.type, f.salt, f.seq, f.ack, f.ack_bits, unhex(f.payload_hex));
    assert.equal(hex(blake2b(body, unhex(f.key_hex), 8)), f.tag_hex);
    assert.equal(hex(body) + f.tag_hex, v.hex);
    const d = P.decodePacket(unhex(v.hex).subarray(0, -8));
    assert.deepEqual([d.type, d.salt, d.seq, d.ack, d.ackBits, hex(d.payload)], [f.type, f.salt, f.seq, f.ack, f.ack_bits, f.payload_hex]);
    // One bit changed anywhere: another tag.
    const broken = new Uint8Array(body);
    broken[5] ^= 1;
    assert.notEqual(hex(blake2b(broken, unhex(f.key_hex), 8)), f.tag_hex);
  });
  it("refusal reasons up to token_used", () => {
    assert.deepEqual([5, 6, 7, 8, 9].map((r) => P.REFUSE_REASONS[r]),
      ["address_limit", "token_required", "token_invalid", "token_expired", "token_used"]);
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
  it("Welcome is an array of 10; a missing keepalive/timeout is encoded as 1.0/5.0", () => {
    const w = welcomeObj(V.welcome.fields);
    const { keepaliveInterval, timeout, ...older } = w;
    assert.deepEqual([keepaliveInterval, timeout], [1, 5]);
    const changed = { ...w, keepaliveInterval: 0.5, timeout: 2 };
    assert.deepEqual(decodeWelcome(encodeWelcome(changed)), changed);
    assert.deepEqual(decodeWelcome(encodeWelcome({ ...older, tick: 9 })), { ...w, tick: 9 });
    const first8 = (n) => {
      const wr = new Writer();
      wr.array(n).int(w.entityId).int(w.tickRate).int(w.tick);
      for (const v3 of [w.mins, w.maxs]) {
        wr.array(3);
        for (const x of v3) wr.float64(x);
      }
      wr.float64(w.positionStep).float64(w.maxSpeed).float64(w.interestRadius);
      return wr;
    };
    assert.throws(() => decodeWelcome(first8(8).finish()), (e) => e.reason === "bad_shape"); // the version 1 form
    assert.throws(() => decodeWelcome(first8(9).float64(1).finish()), (e) => e.reason === "bad_shape");
    assert.deepEqual(decodeWelcome(first8(10).float64(1).float64(5).finish()), w);
    const bad = (ka, to) => encodeWelcome({ ...w, keepaliveInterval: ka, timeout: to });
    assert.throws(() => decodeWelcome(bad(5, 5)), (e) => e.reason === "bad_field");
    assert.throws(() => decodeWelcome(bad(0, 5)), (e) => e.reason === "bad_field");
    assert.throws(() => decodeWelcome(bad(1, Infinity)), (e) => e.reason === "bad_field");
  });
  it("Welcome is strict", () => {
    const ok = unhex(V.welcome.hex);
    // tick_rate 20 (0x14) -> a float 20.0 is not an integer
    assert.equal(ok[6], 0x14);
    const asFloat = new Uint8Array([...ok.subarray(0, 6), 0xcb, 0x40, 0x34, 0, 0, 0, 0, 0, 0, ...ok.subarray(7)]);
    assert.throws(() => decodeWelcome(asFloat), (e) => e.reason === "bad_field");
    assert.throws(() => decodeWelcome(ok.subarray(0, ok.length - 1)));
    assert.throws(() => decodeWelcome(new Uint8Array([...ok, 0])), (e) => e.reason === "bad_msgpack");
  });
  it("inputs are strict", () => {
    assert.throws(() => decodeInputs(new Uint8Array([0x00])), (e) => e.reason === "bad_message");
    assert.throws(() => decodeInputs(new Uint8Array(12).fill(1)), (e) => e.reason === "bad_message");
    const bad = encodeInputs([{ seq: 1, moveX: 0, moveZ: 0, yaw: 0, anim: 0 }]);
    bad[6] = 0x80; // move_z = -128
    assert.throws(() => decodeInputs(bad), (e) => e.reason === "bad_field");
    assert.throws(() => encodeInputs([{ seq: 1, moveX: 128, moveZ: 0, yaw: 0, anim: 0 }]), RangeError);
    const nine = Array.from({ length: 9 }, (_, i) => ({ seq: i, moveX: 0, moveZ: 0, yaw: 0, anim: 0, flags: 0 }));
    assert.deepEqual(decodeInputs(encodeInputs(nine)).map((i) => i.seq), [1, 2, 3, 4, 5, 6, 7, 8]);
  });
});
