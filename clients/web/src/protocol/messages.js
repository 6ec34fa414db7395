// Messages inside packets: Welcome (msgpack, SPEC section 4, in ACCEPT) and the INPUT payload
// (fixed-width binary, SPEC section 3). Decoders are strict like the Python reference: exact
// array lengths and sizes, integer fields in range, floats finite; anything else throws
// ProtocolError.

import { ProtocolError } from "./errors.js";
import { Reader, Writer } from "./msgpack.js";

export const MAX_INPUTS_PER_PACKET = 8;
export const MAX_MESSAGE_SIZE = 2048;
export const INPUT_AXIS_SCALE = 127;
export const FLAG_JUMP = 1;
export const ANIM_IDLE = 0;
export const ANIM_WALK = 1;
export const ANIM_RUN = 2;
export const ANIM_JUMP = 3;

const U32 = 0xffffffff;

/** The server's Welcome (SPEC 4.1), as decodeWelcome returns it and encodeWelcome takes it
 * (keepaliveInterval and timeout may be left out when encoding).
 * @typedef {object} Welcome
 * @property {number} entityId the client's own entity
 * @property {number} tickRate ticks per second
 * @property {number} tick the server's tick when it accepted
 * @property {number[]} mins world bounds [x, y, z], metres
 * @property {number[]} maxs
 * @property {number} positionStep metres per quantization step
 * @property {number} maxSpeed metres per second
 * @property {number} interestRadius metres
 * @property {number} [keepaliveInterval] seconds
 * @property {number} [timeout] seconds
 */

/** One INPUT record (SPEC section 3): move axes in [-127, 127], yaw on the wire's 0..65535
 * circle, anim and flags bytes (flags defaults to 0 when encoding).
 * @typedef {{ seq: number, moveX: number, moveZ: number, yaw: number, anim: number, flags?: number }} Input */

/** @param {import("./msgpack.js").BytesLike} data @returns {Reader} */
function reader(data) {
  const r = new Reader(data);
  if (r.bytes.length > MAX_MESSAGE_SIZE) throw new ProtocolError("oversized", `message of ${r.bytes.length} bytes`);
  return r;
}

/** @param {Reader} r @param {string} what @returns {number[]} */
function vec3(r, what) {
  r.array(what, 3, 3);
  return [r.number(what), r.number(what), r.number(what)];
}

export const DEFAULT_KEEPALIVE_INTERVAL = 1.0;
export const DEFAULT_TIMEOUT = 5.0;

/** Welcome bytes (an array of 10, SPEC 4.1) -> { entityId, tickRate, tick, mins, maxs,
 * positionStep, maxSpeed, interestRadius, keepaliveInterval, timeout }. Float fields accept
 * msgpack float32, float64 and integers.
 * @param {import("./msgpack.js").BytesLike} data
 * @returns {Required<Welcome>} */
export function decodeWelcome(data) {
  const r = reader(data);
  r.array("Welcome", 10, 10);
  const w = {
    entityId: r.int("entity_id", 0, U32),
    tickRate: r.int("tick_rate", 1, 1000),
    tick: r.int("tick", 0, U32),
    mins: vec3(r, "mins"),
    maxs: vec3(r, "maxs"),
    positionStep: r.number("position_step"),
    maxSpeed: r.number("max_speed"),
    interestRadius: r.number("interest_radius"),
    keepaliveInterval: r.number("keepalive_interval"),
    timeout: r.number("timeout"),
  };
  r.end();
  if (!(w.positionStep > 0) || w.mins.some((lo, i) => !(lo < w.maxs[i]))) {
    throw new ProtocolError("bad_field", "bounds or position_step out of range");
  }
  if (!(w.keepaliveInterval > 0 && w.keepaliveInterval < w.timeout)) {
    throw new ProtocolError("bad_field", "keepalive_interval and timeout must satisfy 0 < keepalive_interval < timeout");
  }
  return w;
}

/** Welcome object -> bytes, as the server writes it (every float as float64); a missing
 * keepaliveInterval or timeout is written as its default (1.0, 5.0).
 * @param {Welcome} w
 * @returns {Uint8Array} */
export function encodeWelcome(w) {
  const wr = new Writer();
  wr.array(10).int(w.entityId).int(w.tickRate).int(w.tick);
  wr.array(3);
  for (const v of w.mins) wr.float64(v);
  wr.array(3);
  for (const v of w.maxs) wr.float64(v);
  wr.float64(w.positionStep).float64(w.maxSpeed).float64(w.interestRadius);
  wr.float64(w.keepaliveInterval ?? DEFAULT_KEEPALIVE_INTERVAL).float64(w.timeout ?? DEFAULT_TIMEOUT);
  return wr.finish();
}

/** @param {Required<Input>} i */
function checkInput(i) {
  const ok =
    Number.isInteger(i.seq) && i.seq >= 0 && i.seq <= U32 &&
    Number.isInteger(i.moveX) && Math.abs(i.moveX) <= 127 &&
    Number.isInteger(i.moveZ) && Math.abs(i.moveZ) <= 127 &&
    Number.isInteger(i.yaw) && i.yaw >= 0 && i.yaw <= 0xffff &&
    Number.isInteger(i.anim) && i.anim >= 0 && i.anim <= 255 &&
    Number.isInteger(i.flags) && i.flags >= 0 && i.flags <= 255;
  if (!ok) throw new RangeError(`input out of range: ${JSON.stringify(i)}`);
}

export const INPUT_RECORD_SIZE = 10; // seq u32, move_x i8, move_z i8, yaw u16, anim u8, flags u8

/** Inputs (oldest first; the newest MAX_INPUTS_PER_PACKET are kept) -> INPUT payload bytes:
 * a count byte, then one 10-byte little-endian record per input (SPEC section 3).
 * Each input is { seq, moveX, moveZ, yaw, anim, flags }.
 * @param {Input[]} inputs
 * @returns {Uint8Array} */
export function encodeInputs(inputs) {
  const list = inputs.slice(-MAX_INPUTS_PER_PACKET);
  if (list.length === 0) throw new RangeError("at least one input");
  const out = new Uint8Array(1 + INPUT_RECORD_SIZE * list.length);
  const dv = new DataView(out.buffer);
  out[0] = list.length;
  let o = 1;
  for (const i of list) {
    const flags = i.flags || 0;
    checkInput({ ...i, flags });
    dv.setUint32(o, i.seq, true);
    dv.setInt8(o + 4, i.moveX);
    dv.setInt8(o + 5, i.moveZ);
    dv.setUint16(o + 6, i.yaw, true);
    out[o + 8] = i.anim;
    out[o + 9] = flags;
    o += INPUT_RECORD_SIZE;
  }
  return out;
}

/** INPUT payload bytes -> every input, oldest first (the server's check: SPEC section 3).
 * @param {Uint8Array | ArrayBuffer} data
 * @returns {Required<Input>[]} */
export function decodeInputs(data) {
  const b = data instanceof Uint8Array ? data : new Uint8Array(data);
  const n = b.length ? b[0] : 0;
  if (n < 1 || n > MAX_INPUTS_PER_PACKET || b.length !== 1 + INPUT_RECORD_SIZE * n) {
    throw new ProtocolError("bad_message", `inputs must be a count of 1..${MAX_INPUTS_PER_PACKET} and that many ${INPUT_RECORD_SIZE}-byte records`);
  }
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const out = [];
  for (let k = 0, o = 1; k < n; k++, o += INPUT_RECORD_SIZE) {
    const moveX = dv.getInt8(o + 4);
    const moveZ = dv.getInt8(o + 5);
    if (moveX === -128 || moveZ === -128) throw new ProtocolError("bad_field", "move_x and move_z must be integers in [-127, 127]");
    out.push({ seq: dv.getUint32(o, true), moveX, moveZ, yaw: dv.getUint16(o + 6, true), anim: b[o + 8], flags: b[o + 9] });
  }
  return out;
}
