// Shared helpers of the node tests: the repository's protocol vectors, read with big
// integers (64-bit nonces) kept exact, and hex conversion.

import { readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const VECTORS_DIR = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "protocol", "vectors");

/** JSON.parse, but integers of 16 digits or more become strings (they may exceed 2^53). */
export function parseJsonExact(text) {
  return JSON.parse(text.replace(/([:[,]\s*)(-?\d{16,})(?=\s*[,\]}])/g, '$1"$2"'));
}

export function loadVector(name) {
  return parseJsonExact(readFileSync(join(VECTORS_DIR, name), "utf8"));
}

export function snapshotVectorNames() {
  return readdirSync(VECTORS_DIR)
    .filter((f) => f.startsWith("snapshot_") && f.endsWith(".json"))
    .sort();
}

export function hex(bytes) {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}

export function unhex(s) {
  return new Uint8Array(Buffer.from(s, "hex"));
}

// ---------------------------------------------------------------------------------------
// Snapshot v2 parts (SPEC 5.2), written from the SPEC for the tests: `rawPart` lays out the
// sections it is given (so tests can break any of them); `encodeSnapshot` computes a whole
// delta snapshot of a view against a baseline, cut into parts at the given ids.

const NONE = 0xffffffff;

/** Zigzag of an int32 delta, as a uint32. */
export function zigzag(d) {
  return ((d << 1) ^ (d >> 31)) >>> 0;
}

/**
 * A delta record (SPEC 5.2): the mask (bit f: field f changed; bit 5: a `wide` byte follows),
 * `wide` (bit f: field f written as u32), then each changed field's zigzag value, one byte
 * when it fits, else u32; a small walk (x and z only, both zigzags <= 15) is packed into one
 * byte. deltas: 5 numbers (0 = unchanged). `wide` forces its bits wide; `longWalk` writes a
 * small walk in the (invalid) long form.
 */
export function deltaRecord(deltas, { wide = 0, longWalk = false } = {}) {
  let mask = 0;
  let w = 0;
  const vals = [];
  for (let f = 0; f < 5; f++) {
    if (!deltas[f]) continue;
    mask |= 1 << f;
    const z = zigzag(deltas[f]);
    if (z > 255 || (wide >> f) & 1) {
      w |= 1 << f;
      vals.push(z & 0xff, (z >>> 8) & 0xff, (z >>> 16) & 0xff, z >>> 24);
    } else vals.push(z);
  }
  if (!w && mask === 0x05 && vals[0] <= 15 && vals[1] <= 15 && !longWalk) {
    return [0x45, vals[0] | (vals[1] << 4)]; // a packed walk (SPEC 5.2)
  }
  return w ? [mask | 0x20, w, ...vals] : [mask, ...vals];
}

/** Bitmap bytes of an array of 0/1, least significant bit first. */
export function bitmap(bits) {
  const out = new Uint8Array((bits.length + 7) >> 3);
  bits.forEach((b, j) => {
    if (b) out[j >> 3] |= 1 << (j & 7);
  });
  return out;
}

/**
 * One part from its sections. added: rows [id, x, y, z, yaw, anim]; upd: bitmap bytes (or an
 * array of 0/1 of length K); records: bytes. K defaults to the length of an upd bit array.
 */
export function rawPart({
  tick,
  baselineTick = null,
  inputAck = -1,
  selfId = 0,
  part = 0,
  parts = 1,
  firstId = 0,
  lastId = NONE,
  removed = [],
  added = [],
  K = null,
  upd = [],
  records = [],
  positionSize = 2,
}) {
  const updBytes = upd instanceof Uint8Array ? upd : bitmap(upd);
  const k = K === null ? (upd instanceof Uint8Array ? 0 : upd.length) : K;
  const S = 3 * positionSize + 3;
  const n = 32 + 4 * removed.length + added.length * (4 + S) + updBytes.length + records.length;
  const out = new Uint8Array(n);
  const v = new DataView(out.buffer);
  v.setUint32(0, tick, true);
  v.setUint32(4, baselineTick === null ? NONE : baselineTick, true);
  v.setUint32(8, inputAck < 0 ? NONE : inputAck, true);
  v.setUint32(12, selfId, true);
  out[16] = part;
  out[17] = parts;
  v.setUint32(18, firstId, true);
  v.setUint32(22, lastId, true);
  v.setUint16(26, removed.length, true);
  v.setUint16(28, added.length, true);
  v.setUint16(30, k, true);
  let o = 32;
  for (const id of removed) {
    v.setUint32(o, id, true);
    o += 4;
  }
  for (const [id, x, y, z, yaw, anim] of added) {
    v.setUint32(o, id, true);
    o += 4;
    for (const p of [x, y, z]) {
      if (positionSize === 2) v.setUint16(o, p, true);
      else v.setUint32(o, p, true);
      o += positionSize;
    }
    v.setUint16(o, yaw, true);
    out[o + 2] = anim;
    o += 3;
  }
  out.set(updBytes, o);
  o += updBytes.length;
  out.set(records, o);
  return out;
}

/** A view from plain ids and rows. */
export function makeView(tick, ids, rows) {
  return { tick, ids: Uint32Array.from(ids), q: Int32Array.from(rows.flat()) };
}

/**
 * The parts of the snapshot of `view` against `baseline` (a view, or null for a full
 * snapshot), cut before each id of `cuts` (ascending, > 0). Returns Uint8Array payloads.
 */
export function encodeSnapshot(baseline, view, { inputAck = -1, selfId = 0, cuts = [], positionSize = 2 } = {}) {
  const starts = [0, ...cuts];
  const parts = starts.length;
  const bmap = new Map();
  if (baseline) baseline.ids.forEach((id, i) => bmap.set(id, Array.from(baseline.q.subarray(5 * i, 5 * i + 5))));
  const nmap = new Map();
  view.ids.forEach((id, i) => nmap.set(id, Array.from(view.q.subarray(5 * i, 5 * i + 5))));
  const out = [];
  for (let p = 0; p < parts; p++) {
    const firstId = starts[p];
    const lastId = p + 1 < parts ? starts[p + 1] - 1 : NONE;
    const inRange = (id) => id >= firstId && id <= lastId;
    const bIds = baseline ? Array.from(baseline.ids).filter(inRange) : [];
    const nIds = Array.from(view.ids).filter(inRange);
    const removed = bIds.filter((id) => !nmap.has(id));
    const kept = bIds.filter((id) => nmap.has(id));
    const added = nIds.filter((id) => !bmap.has(id)).map((id) => [id, ...nmap.get(id)]);
    const upd = [];
    const records = [];
    for (const id of kept) {
      const a = bmap.get(id);
      const b = nmap.get(id);
      const d = b.map((x, f) => (f === 3 ? ((((x - a[f] + 32768) % 65536) + 65536) % 65536) - 32768 : x - a[f]));
      const changed = d.some((x) => x !== 0);
      upd.push(changed ? 1 : 0);
      if (changed) records.push(...deltaRecord(d));
    }
    out.push(
      rawPart({
        tick: view.tick,
        baselineTick: baseline ? baseline.tick : null,
        inputAck,
        selfId,
        part: p,
        parts,
        firstId,
        lastId,
        removed,
        added,
        upd,
        records: Uint8Array.from(records),
        positionSize,
      }),
    );
  }
  return out;
}
