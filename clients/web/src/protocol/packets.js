// Packet layouts of protocol/SPEC.md sections 2 and 3: encode and decode, nothing else.
// No state, no decisions. All integers little-endian; 64-bit nonces are BigInts.
//
// Handshake packets (HELLO, CHALLENGE, CONNECT, ACCEPT, REFUSE) have fixed layouts;
// connected packets share a 13-byte header (type, salt, sequence, ack, ack bits).

import { ProtocolError } from "./errors.js";
import { asBytes } from "./msgpack.js";

/** @typedef {import("./msgpack.js").BytesLike} BytesLike */
/** A connect token: bytes, or a string sent as UTF-8 (at most MAX_TOKEN bytes); none is empty.
 * @typedef {BytesLike | string | null | undefined} TokenLike */
/** A 64-bit nonce or cookie time: a BigInt, or a Number that is a safe integer.
 * @typedef {bigint | number} U64Like */

export const PROTOCOL_VERSION = 2; // 2: snapshots in parts, plain binary (SPEC section 5)

export const HELLO = 0x01;
export const CHALLENGE = 0x02;
export const CONNECT = 0x03;
export const ACCEPT = 0x04;
export const REFUSE = 0x05;
export const SNAPSHOT = 0x10;
export const INPUT = 0x11;
export const KEEPALIVE = 0x12;
export const DISCONNECT = 0x13;
export const MESSAGE = 0x14;

export const CONNECTED_TYPES = new Set([SNAPSHOT, INPUT, KEEPALIVE, DISCONNECT, MESSAGE]);

export const HANDSHAKE_SIZE = 128;
export const MAX_DATAGRAM = 1400;
export const MAC_SIZE = 16;
export const MAX_TOKEN = 64;
export const HEADER_SIZE = 13;
const CHALLENGE_SIZE = 35;
const ACCEPT_HEAD = 13;
const REFUSE_HEAD = 12;

export const REFUSE_VERSION = 1;
export const REFUSE_FULL = 2;
export const REFUSE_STALE_COOKIE = 3;
export const REFUSE_REPLAYED_COOKIE = 4;
/** @type {Record<number, string>} */
export const REFUSE_REASONS = {
  1: "version_mismatch",
  2: "server_full",
  3: "stale_cookie",
  4: "replayed_cookie",
  5: "address_limit",
  // Connect tokens (UDP only, SPEC 2): this client's transports (WebRTC, WebSocket) never get them.
  6: "token_required",
  7: "token_invalid",
  8: "token_expired",
  9: "token_used",
  // Operator decisions (SPEC 2): a ban from a kick that has not run out; a draining server.
  10: "banned",
  11: "shutting_down",
};

export const DISCONNECT_CLIENT_LEFT = 1;
export const DISCONNECT_SERVER_SHUTDOWN = 2;
export const DISCONNECT_TIMEOUT = 3;
export const DISCONNECT_KICKED = 4; // removed by the operator or a moderator; a text says who, why, how long
export const DISCONNECT_WORLD_CLOSED = 5; // the operator closed the world; a text says why
export const DISCONNECT_REPLACED = 6; // the same player logged in again (another window or device)
/** @type {Record<number, string>} */
export const DISCONNECT_REASONS = {
  1: "client_left",
  2: "server_shutdown",
  3: "timeout",
  4: "kicked",
  5: "world_closed",
  6: "replaced",
};
export const MAX_DISCONNECT_TEXT = 200;

const TEXT_ENCODER = new TextEncoder();
const TEXT_DECODER = new TextDecoder("utf-8"); // REFUSE text: invalid bytes are replaced

/** The text after a DISCONNECT payload's reason byte ("" for none; SPEC 3).
 * @param {Uint8Array} payload @returns {string} */
export function disconnectText(payload) {
  return payload.length > 1 ? TEXT_DECODER.decode(payload.subarray(1, 1 + MAX_DISCONNECT_TEXT)) : "";
}

/** A DISCONNECT payload: the reason byte, then `text` as UTF-8 cut to MAX_DISCONNECT_TEXT
 * bytes, never in the middle of a character (as protocol/packets.py disconnect_payload).
 * @param {number} reason @param {string} [text] @returns {Uint8Array} */
export function encodeDisconnectPayload(reason, text = "") {
  let body = TEXT_ENCODER.encode(text);
  if (body.length > MAX_DISCONNECT_TEXT) {
    let end = MAX_DISCONNECT_TEXT;
    while (end > 0 && (body[end] & 0xc0) === 0x80) end--; // back to the start of a character
    body = body.subarray(0, end);
  }
  const out = new Uint8Array(1 + body.length);
  out[0] = reason;
  out.set(body, 1);
  return out;
}

/** @param {Uint8Array} bytes @returns {DataView} */
function dv(bytes) {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** @param {TokenLike} token @returns {Uint8Array} */
function tokenBytes(token) {
  if (token === undefined || token === null) return new Uint8Array(0);
  const t = typeof token === "string" ? TEXT_ENCODER.encode(token) : asBytes(token);
  if (t.length > MAX_TOKEN) throw new RangeError(`token longer than ${MAX_TOKEN} bytes`);
  return t;
}

/** Type byte of a packet; throws for empty or oversized data.
 * @param {BytesLike} data
 * @returns {number} */
export function packetType(data) {
  const b = asBytes(data);
  if (b.length === 0) throw new ProtocolError("empty", "zero-length packet");
  if (b.length > MAX_DATAGRAM) throw new ProtocolError("oversized", `${b.length} bytes > ${MAX_DATAGRAM}`);
  return b[0];
}

/** @param {Uint8Array} b @param {number} at offset of the length byte @returns {Uint8Array} */
function readToken(b, at) {
  const n = b[at];
  if (n > MAX_TOKEN) throw new ProtocolError("bad_token", `token length ${n} > ${MAX_TOKEN}`);
  return b.slice(at + 1, at + 1 + n);
}

/** HELLO: 128 bytes (type, version u16, nonce u64, token length, token, zero padding).
 * @param {number} version @param {U64Like} nonce @param {TokenLike} [token]
 * @returns {Uint8Array} */
export function encodeHello(version, nonce, token) {
  const t = tokenBytes(token);
  const out = new Uint8Array(HANDSHAKE_SIZE);
  const v = dv(out);
  out[0] = HELLO;
  v.setUint16(1, version, true);
  v.setBigUint64(3, BigInt.asUintN(64, BigInt(nonce)), true);
  out[11] = t.length;
  out.set(t, 12);
  return out;
}

/** HELLO -> { version, nonce (BigInt), token (bytes) }.
 * @param {BytesLike} data
 * @returns {{ version: number, nonce: bigint, token: Uint8Array }} */
export function decodeHello(data) {
  const b = asBytes(data);
  if (b.length !== HANDSHAKE_SIZE) throw new ProtocolError("bad_size", `HELLO must be ${HANDSHAKE_SIZE} bytes`);
  const v = dv(b);
  return { version: v.getUint16(1, true), nonce: v.getBigUint64(3, true), token: readToken(b, 11) };
}

/** CHALLENGE: 35 bytes (type, version, nonce, cookie time in ms, 16-byte cookie MAC).
 * @param {number} version @param {U64Like} nonce @param {U64Like} cookieMs @param {Uint8Array} mac
 * @returns {Uint8Array} */
export function encodeChallenge(version, nonce, cookieMs, mac) {
  const out = new Uint8Array(CHALLENGE_SIZE);
  const v = dv(out);
  out[0] = CHALLENGE;
  v.setUint16(1, version, true);
  v.setBigUint64(3, BigInt(nonce), true);
  v.setBigUint64(11, BigInt(cookieMs), true);
  if (mac.length !== MAC_SIZE) throw new RangeError("cookie MAC must be 16 bytes");
  out.set(mac, 19);
  return out;
}

/** @typedef {{ version: number, nonce: bigint, cookieMs: bigint, mac: Uint8Array }} Challenge */

/** CHALLENGE -> { version, nonce, cookieMs (BigInts), mac }.
 * @param {BytesLike} data
 * @returns {Challenge} */
export function decodeChallenge(data) {
  const b = asBytes(data);
  if (b.length !== CHALLENGE_SIZE) throw new ProtocolError("bad_size", `CHALLENGE must be ${CHALLENGE_SIZE} bytes`);
  const v = dv(b);
  return {
    version: v.getUint16(1, true),
    nonce: v.getBigUint64(3, true),
    cookieMs: v.getBigUint64(11, true),
    mac: b.slice(19, 35),
  };
}

/** CONNECT: 128 bytes, the CHALLENGE echoed then the token.
 * @param {number} version @param {U64Like} nonce @param {U64Like} cookieMs @param {Uint8Array} mac
 * @param {TokenLike} [token]
 * @returns {Uint8Array} */
export function encodeConnect(version, nonce, cookieMs, mac, token) {
  const t = tokenBytes(token);
  const out = new Uint8Array(HANDSHAKE_SIZE);
  out.set(encodeChallenge(version, nonce, cookieMs, mac));
  out[0] = CONNECT;
  out[CHALLENGE_SIZE] = t.length;
  out.set(t, CHALLENGE_SIZE + 1);
  return out;
}

/** CONNECT -> the CHALLENGE's fields and the token.
 * @param {BytesLike} data
 * @returns {Challenge & { token: Uint8Array }} */
export function decodeConnect(data) {
  const b = asBytes(data);
  if (b.length !== HANDSHAKE_SIZE) throw new ProtocolError("bad_size", `CONNECT must be ${HANDSHAKE_SIZE} bytes`);
  const v = dv(b);
  return {
    version: v.getUint16(1, true),
    nonce: v.getBigUint64(3, true),
    cookieMs: v.getBigUint64(11, true),
    mac: b.slice(19, 35),
    token: readToken(b, CHALLENGE_SIZE),
  };
}

/** ACCEPT: type, nonce, salt, then the Welcome message's bytes.
 * @param {U64Like} nonce @param {number} salt @param {BytesLike} welcome
 * @returns {Uint8Array} */
export function encodeAccept(nonce, salt, welcome) {
  const w = asBytes(welcome);
  const out = new Uint8Array(ACCEPT_HEAD + w.length);
  const v = dv(out);
  out[0] = ACCEPT;
  v.setBigUint64(1, BigInt(nonce), true);
  v.setUint32(9, salt, true);
  out.set(w, ACCEPT_HEAD);
  return out;
}

/** ACCEPT -> { nonce (BigInt), salt, welcome (Uint8Array of the Welcome message) }.
 * @param {BytesLike} data
 * @returns {{ nonce: bigint, salt: number, welcome: Uint8Array }} */
export function decodeAccept(data) {
  const b = asBytes(data);
  if (b.length < ACCEPT_HEAD) throw new ProtocolError("truncated", "ACCEPT shorter than its header");
  const v = dv(b);
  return { nonce: v.getBigUint64(1, true), salt: v.getUint32(9, true), welcome: b.subarray(ACCEPT_HEAD) };
}

/** REFUSE: type, reason, server version, nonce, then UTF-8 text cut to fit `limit` bytes.
 * @param {number} reason @param {number} serverVersion @param {U64Like} nonce @param {string} text
 * @param {number} [limit]
 * @returns {Uint8Array} */
export function encodeRefuse(reason, serverVersion, nonce, text, limit = MAX_DATAGRAM) {
  const body = TEXT_ENCODER.encode(text).subarray(0, Math.max(0, limit - REFUSE_HEAD));
  const out = new Uint8Array(REFUSE_HEAD + body.length);
  const v = dv(out);
  out[0] = REFUSE;
  out[1] = reason;
  v.setUint16(2, serverVersion, true);
  v.setBigUint64(4, BigInt(nonce), true);
  out.set(body, REFUSE_HEAD);
  return out;
}

/** REFUSE -> { reason (number), reasonName, serverVersion, nonce (BigInt), text }.
 * @param {BytesLike} data
 * @returns {{ reason: number, reasonName: string, serverVersion: number, nonce: bigint, text: string }} */
export function decodeRefuse(data) {
  const b = asBytes(data);
  if (b.length < REFUSE_HEAD) throw new ProtocolError("truncated", "REFUSE shorter than its header");
  const v = dv(b);
  const reason = b[1];
  return {
    reason,
    reasonName: REFUSE_REASONS[reason] || `refused_${reason}`,
    serverVersion: v.getUint16(2, true),
    nonce: v.getBigUint64(4, true),
    text: TEXT_DECODER.decode(b.subarray(REFUSE_HEAD)),
  };
}

/** A connected packet: 13-byte header then the payload.
 * @param {number} type @param {number} salt @param {number} seq @param {number} ack @param {number} ackBits
 * @param {BytesLike | null} [payload]
 * @returns {Uint8Array} */
export function encodePacket(type, salt, seq, ack, ackBits, payload) {
  const p = payload ? asBytes(payload) : new Uint8Array(0);
  const out = new Uint8Array(HEADER_SIZE + p.length);
  const v = dv(out);
  out[0] = type;
  v.setUint32(1, salt >>> 0, true);
  v.setUint16(5, seq & 0xffff, true);
  v.setUint16(7, ack & 0xffff, true);
  v.setUint32(9, ackBits >>> 0, true);
  out.set(p, HEADER_SIZE);
  return out;
}

/** A decoded connected packet; payload is a view into the packet (no copy).
 * @typedef {{ type: number, salt: number, seq: number, ack: number, ackBits: number, payload: Uint8Array }} Packet */

/** Header of a connected packet -> { type, salt, seq, ack, ackBits, payload }.
 * @param {BytesLike} data
 * @returns {Packet} */
export function decodePacket(data) {
  const b = asBytes(data);
  if (b.length < HEADER_SIZE) throw new ProtocolError("truncated", "packet shorter than the 13-byte header");
  const v = dv(b);
  return {
    type: b[0],
    salt: v.getUint32(1, true),
    seq: v.getUint16(5, true),
    ack: v.getUint16(7, true),
    ackBits: v.getUint32(9, true),
    payload: b.subarray(HEADER_SIZE),
  };
}
