// Snapshot decoding, format v2 (SPEC section 5): a snapshot is sent as one or more parts,
// one SNAPSHOT packet each, every part a plain binary payload covering its own range of
// entity ids. `decodePart` decodes one part against the client's stored views (baselines);
// `SnapshotStore` collects the parts of a tick until it has all of them, stores the tick's
// view (the concatenation of its parts' views) by tick and keeps the mirror (the complete
// view with the newest tick). A port of the decoder of protocol/snapshot.py with the same
// validation: a malformed part throws ProtocolError and changes no state; an unknown
// baseline throws ProtocolError("unknown_baseline") and the caller drops the part.
//
// A View is { tick, ids: Uint32Array (sorted, unique), q: Int32Array of 5 values per id
// (x, y, z, yaw, anim), row-major }. Views are treated as immutable.

import { ProtocolError } from "./errors.js";
import { asBytes } from "./msgpack.js";
import { positionLayout } from "./quantize.js";

/** The entity states of a tick: ids sorted and unique, q five values per id
 * (x, y, z, yaw, anim), row-major. Treated as immutable.
 * @typedef {{ tick: number, ids: Uint32Array, q: Int32Array }} View */

/** The stored views a part may name as its baseline: a Map tick -> View (or anything with
 * such a get), a function tick -> View|undefined, or an object keyed by tick; null when
 * there are none.
 * @typedef {{ get(tick: number): View | undefined } | ((tick: number) => View | undefined) | Record<number, View> | null | undefined} Baselines */

/** A part's header as decodePart and readPartHeader report it.
 * @typedef {object} PartHeader
 * @property {number} tick
 * @property {number | null} baselineTick null: a full snapshot
 * @property {number} inputAck the newest input applied, -1: none
 * @property {number} selfId the receiver's own entity id
 * @property {number} part
 * @property {number} parts
 * @property {number} firstId first id of the part's range
 * @property {number} lastId last id of the part's range (NONE for the last part)
 */

export const MAX_ENTITIES = 65536;
export const MAX_PAYLOAD = 65535;
export const MAX_TICK = 2 ** 32 - 1;
export const FIELDS = 5;
export const PART_HEADER_SIZE = 32;
/** baseline_tick of a full snapshot, input_ack before any input was applied, last_id of the last part. */
export const NONE = 0xffffffff;
/** Record mask bit 5: a `wide` byte follows the mask. */
export const WIDE_FLAG = 0x20;
/** The mask of a packed walk (SPEC 5.2): x and z, both zigzags 1..15, in one byte. */
export const PACKED = 0x45;
const YAW = 3;
const POPCOUNT = new Uint8Array(256);
for (let i = 1; i < 256; i++) POPCOUNT[i] = (i & 1) + POPCOUNT[i >> 1];

/** @type {Readonly<View>} */
export const EMPTY_VIEW = Object.freeze({ tick: -1, ids: new Uint32Array(0), q: new Int32Array(0) });

/** @param {string} reason @param {string} detail @returns {never} */
function fail(reason, detail) {
  throw new ProtocolError(reason, detail);
}

/** First index in ids[lo, hi) whose id is >= x.
 * @param {Uint32Array} ids @param {number} x @param {number} lo @param {number} hi @returns {number} */
function lowerBound(ids, x, lo, hi) {
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ids[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** First index in ids[lo, hi) whose id is > x.
 * @param {Uint32Array} ids @param {number} x @param {number} lo @param {number} hi @returns {number} */
function upperBound(ids, x, lo, hi) {
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ids[mid] <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** @param {Baselines} baselines @param {number} tick @returns {View | undefined} */
function lookup(baselines, tick) {
  if (!baselines) return undefined;
  if (typeof baselines === "function") return baselines(tick);
  if ("get" in baselines && typeof baselines.get === "function") return baselines.get(tick);
  return /** @type {Record<number, View>} */ (baselines)[tick];
}

/** The header fields of a part and the checks of the header alone.
 * @param {Uint8Array} bytes @param {DataView} v */
function checkHeader(bytes, v) {
  const n = bytes.length;
  if (n > MAX_PAYLOAD) fail("oversized", `snapshot part of ${n} bytes > ${MAX_PAYLOAD}`);
  if (n < PART_HEADER_SIZE) fail("truncated", `snapshot part of ${n} bytes, shorter than its ${PART_HEADER_SIZE}-byte header`);
  const tick = v.getUint32(0, true);
  const baselineTick = v.getUint32(4, true);
  const part = bytes[16];
  const parts = bytes[17];
  const firstId = v.getUint32(18, true);
  const lastId = v.getUint32(22, true);
  if (tick === NONE) fail("bad_field", "tick 0xFFFFFFFF");
  if (baselineTick !== NONE && baselineTick >= tick) fail("bad_field", `baseline tick ${baselineTick} not below tick ${tick}`);
  if (parts === 0 || part >= parts) fail("bad_range", `part ${part} of ${parts}`);
  if (firstId > lastId || (part === 0 && firstId !== 0) || (part === parts - 1 && lastId !== NONE)) {
    fail("bad_range", `part ${part} of ${parts} covers [${firstId}, ${lastId}]`);
  }
  return { tick, baselineTick, part, parts, firstId, lastId };
}

/** The header, the counts and the section offsets of a part; the fixed sections must fit. S = 3·P + 3.
 * @param {Uint8Array} bytes @param {DataView} v @param {number} stateSize */
function readLayout(bytes, v, stateSize) {
  const header = checkHeader(bytes, v);
  const R = v.getUint16(26, true);
  const A = v.getUint16(28, true);
  const K = v.getUint16(30, true);
  const removedAt = PART_HEADER_SIZE;
  const addedAt = removedAt + 4 * R;
  const updAt = addedAt + A * (4 + stateSize);
  const recordsAt = updAt + ((K + 7) >> 3);
  if (recordsAt > bytes.length) fail("bad_length", `part of ${bytes.length} bytes shorter than its counts R=${R} A=${A} K=${K}`);
  return { ...header, R, A, K, removedAt, addedAt, updAt, recordsAt };
}

/** @param {DataView} v @param {ReturnType<typeof checkHeader>} L @returns {PartHeader} */
function publicHeader(v, L) {
  const inputAck = v.getUint32(8, true);
  return {
    tick: L.tick,
    baselineTick: L.baselineTick === NONE ? null : L.baselineTick,
    inputAck: inputAck === NONE ? -1 : inputAck,
    selfId: v.getUint32(12, true),
    part: L.part,
    parts: L.parts,
    firstId: L.firstId,
    lastId: L.lastId,
  };
}

/** Ids at `at`, `count` of them, `stride` bytes apart: strictly ascending, then inside the range.
 * @param {DataView} v @param {number} at @param {number} count @param {number} stride
 * @param {number} first @param {number} last @param {string} what */
function checkIds(v, at, count, stride, first, last, what) {
  if (!count) return;
  let prev = v.getUint32(at, true);
  for (let i = 1, o = at + stride; i < count; i++, o += stride) {
    const id = v.getUint32(o, true);
    if (id <= prev) fail("unsorted_ids", `${what} ids must be strictly ascending`);
    prev = id;
  }
  if (v.getUint32(at, true) < first || prev > last) fail("bad_range", `${what} ids outside the part's id range`);
}

/**
 * The header of a part, validated on its own (as the Python reference's read_header):
 * { tick, baselineTick (null: full), inputAck (-1: none), selfId, part, parts, firstId, lastId }.
 * @param {import("./msgpack.js").BytesLike} payload
 * @returns {PartHeader}
 */
export function readPartHeader(payload) {
  const bytes = asBytes(payload);
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return publicHeader(v, checkHeader(bytes, v));
}

/**
 * Parse a part without a baseline, for diagnostics and tests: its header (as in decodePart,
 * plus the counts R, A, K), the removed ids, the added ids and their absolute states, and the
 * `upd` and `records` sections as bytes. Checks the header and that the sections fit; the
 * content is checked by decodePart.
 * layout: a Quantizer or "<u2"/"<u4" (the position size fixes the added records' size).
 * @param {import("./msgpack.js").BytesLike} payload
 * @param {import("./quantize.js").LayoutLike} layout
 * @returns {{ header: PartHeader & { removedCount: number, addedCount: number, keptCount: number },
 *   removedIds: Uint32Array, added: { ids: Uint32Array, q: Int32Array }, upd: Uint8Array, records: Uint8Array }}
 */
export function parsePart(payload, layout) {
  const bytes = asBytes(payload);
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const P = positionLayout(layout).size;
  const L = readLayout(bytes, v, 3 * P + 3);
  const removedIds = new Uint32Array(L.R);
  for (let i = 0; i < L.R; i++) removedIds[i] = v.getUint32(L.removedAt + 4 * i, true);
  const addedIds = new Uint32Array(L.A);
  const addedQ = new Int32Array(L.A * FIELDS);
  for (let i = 0, o = L.addedAt; i < L.A; i++, o += 4 + 3 * P + 3) {
    addedIds[i] = v.getUint32(o, true);
    for (let axis = 0; axis < 3; axis++) {
      addedQ[i * FIELDS + axis] = P === 2 ? v.getUint16(o + 4 + 2 * axis, true) : v.getUint32(o + 4 + 4 * axis, true);
    }
    addedQ[i * FIELDS + 3] = v.getUint16(o + 4 + 3 * P, true);
    addedQ[i * FIELDS + 4] = bytes[o + 4 + 3 * P + 2];
  }
  return {
    header: { ...publicHeader(v, L), removedCount: L.R, addedCount: L.A, keptCount: L.K },
    removedIds,
    added: { ids: addedIds, q: addedQ },
    upd: bytes.subarray(L.updAt, L.recordsAt),
    records: bytes.subarray(L.recordsAt),
  };
}

/**
 * Decode one part against the stored views.
 * baselines: a Map tick -> View, a function tick -> View|undefined, or an object.
 * layout: a Quantizer (positions bounded by its steps) or "<u2"/"<u4".
 * Returns { header, view }: header { tick, baselineTick (null: full), inputAck (-1: none),
 * selfId, part, parts, firstId, lastId }; view: the part's view (ids in [firstId, lastId]).
 * The checks come in the order of the Python reference, so a part with several faults
 * is rejected with the same reason.
 * @param {import("./msgpack.js").BytesLike} payload
 * @param {Baselines} baselines
 * @param {import("./quantize.js").LayoutLike} layout
 * @returns {{ header: PartHeader, view: View }}
 */
export function decodePart(payload, baselines, layout) {
  const bytes = asBytes(payload);
  const n = bytes.length;
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const { size: P, limits } = positionLayout(layout);
  const stateSize = 3 * P + 3;
  const rec = 4 + stateSize;
  const L = readLayout(bytes, v, stateSize);
  const { tick, firstId, lastId, R, A, K, removedAt, addedAt, updAt, recordsAt } = L;
  const lim0 = limits[0];
  const lim1 = limits[1];
  const lim2 = limits[2];
  const wide4 = P === 4;

  checkIds(v, removedAt, R, 4, firstId, lastId, "removed");
  checkIds(v, addedAt, A, rec, firstId, lastId, "added");
  if (K & 7 && bytes[recordsAt - 1] >> (K & 7)) fail("bad_padding", "upd has nonzero padding bits");
  let nu = 0;
  for (let o = updAt; o < recordsAt; o++) nu += POPCOUNT[bytes[o]];

  // The baseline, restricted to the range.
  /** @type {Readonly<View>} */
  let base = EMPTY_VIEW;
  if (L.baselineTick !== NONE) {
    const found = lookup(baselines, L.baselineTick);
    if (!found || found.tick !== L.baselineTick) return fail("unknown_baseline", `baseline tick ${L.baselineTick}`);
    base = found;
  }
  const bids = base.ids;
  const bq = base.q;
  const lo = lowerBound(bids, firstId, 0, bids.length);
  const hi = upperBound(bids, lastId, lo, bids.length);

  // Removed ids are in the baseline; K is the kept count.
  let at = lo;
  for (let i = 0, o = removedAt; i < R; i++, o += 4) {
    const id = v.getUint32(o, true);
    at = lowerBound(bids, id, at, hi);
    if (at >= hi || bids[at] !== id) fail("bad_removed", `removed id ${id} not in the baseline`);
    at++;
  }
  if (hi - lo - R !== K) fail("bad_kept_count", `K is ${K}, the baseline keeps ${hi - lo - R}`);
  if (K + A > MAX_ENTITIES) fail("too_many_entities", `${K + A} entities`);

  // Records: the chain of lengths (each known from its first two bytes) must end exactly at
  // the end of the part; then every mask must be valid.
  let off = recordsAt;
  for (let u = 0; u < nu; u++) {
    if (off >= n) fail("bad_length", "records shorter than the updated entities");
    const m = bytes[off];
    if (m & 0x40) {
      off += 2; // a packed walk: the mask and one byte
      continue;
    }
    const w = m & WIDE_FLAG ? (off + 1 < n ? bytes[off + 1] : 0) : 0;
    off += 1 + (m & WIDE_FLAG ? 1 : 0) + POPCOUNT[m & 0x1f] + 3 * POPCOUNT[w & 0x1f];
  }
  if (off !== n) fail("bad_length", nu ? `records end at ${off - recordsAt}, part at ${n - recordsAt}` : "records without updated entities");
  off = recordsAt;
  for (let u = 0; u < nu; u++) {
    const m = bytes[off];
    if (m === PACKED) {
      off += 2;
      continue;
    }
    const hasWide = m & WIDE_FLAG;
    const w = hasWide ? bytes[off + 1] : 0;
    // bits 0-4 of the mask non-zero, 6-7 clear (bit 6 is only in PACKED); `wide` non-zero,
    // within the mask's bits 0-4
    if (!(m & 0x1f) || m & 0xc0 || (hasWide && (w === 0 || (w & ~m & 0x1f) !== 0 || (w & 0xe0) !== 0))) {
      fail("bad_mask", `invalid record mask 0x${m.toString(16)}${hasWide ? ` wide 0x${w.toString(16)}` : ""}`);
    }
    off += 1 + (hasWide ? 1 : 0) + POPCOUNT[m & 0x1f] + 3 * POPCOUNT[w & 0x1f];
  }

  // Merge kept (baseline minus removed, with their deltas) and added, in id order.
  const total = K + A;
  const ids = new Uint32Array(total);
  const q = new Int32Array(total * FIELDS);
  let bi = lo;
  let ri = 0;
  let nextRemoved = R ? v.getUint32(removedAt, true) : -1;
  let ai = 0;
  let nextAdded = A ? v.getUint32(addedAt, true) : -1;
  let j = 0; // kept index
  let outOfRange = false; // reported after every delta is checked, as the reference does
  off = recordsAt;
  for (let k = 0, row = 0; k < total; k++, row += FIELDS) {
    while (bi < hi && bids[bi] === nextRemoved) {
      bi++;
      ri++;
      nextRemoved = ri < R ? v.getUint32(removedAt + 4 * ri, true) : -1;
    }
    if (ai < A && (bi >= hi || nextAdded < bids[bi])) {
      const o = addedAt + ai * rec + 4;
      ids[k] = nextAdded;
      if (wide4) {
        q[row] = v.getUint32(o, true);
        q[row + 1] = v.getUint32(o + 4, true);
        q[row + 2] = v.getUint32(o + 8, true);
      } else {
        q[row] = v.getUint16(o, true);
        q[row + 1] = v.getUint16(o + 2, true);
        q[row + 2] = v.getUint16(o + 4, true);
      }
      q[row + 3] = v.getUint16(o + 3 * P, true);
      q[row + 4] = bytes[o + 3 * P + 2];
      ai++;
      nextAdded = ai < A ? v.getUint32(addedAt + ai * rec, true) : -1;
      continue;
    }
    // A kept entity: its baseline state, then its delta record if updated.
    ids[k] = bids[bi];
    const src = bi * FIELDS;
    q[row] = bq[src];
    q[row + 1] = bq[src + 1];
    q[row + 2] = bq[src + 2];
    q[row + 3] = bq[src + 3];
    q[row + 4] = bq[src + 4];
    bi++;
    if ((bytes[updAt + (j >> 3)] >> (j & 7)) & 1) {
      const m = bytes[off++];
      if (m === PACKED) {
        const b = bytes[off++];
        const zx = b & 15;
        const zz = b >> 4;
        if (zx === 0 || zz === 0) fail("bad_delta", "zero delta in a packed walk");
        const nx = q[row] + ((zx >>> 1) ^ -(zx & 1));
        const nz = q[row + 2] + ((zz >>> 1) ^ -(zz & 1));
        if (nx < 0 || nx > lim0 || nz < 0 || nz > lim2) outOfRange = true;
        q[row] = nx;
        q[row + 2] = nz;
        j++;
        continue;
      }
      const w = m & WIDE_FLAG ? bytes[off++] : 0;
      if ((m & 0x3f) === 0x05 && bytes[off] <= 15 && bytes[off + 1] <= 15) {
        fail("bad_delta", "a small walk not packed (the encoding is canonical)");
      }
      for (let f = 0; f < FIELDS; f++) {
        if (!((m >> f) & 1)) continue;
        let z;
        if ((w >> f) & 1) {
          z = v.getUint32(off, true);
          off += 4;
          if (z < 256) fail("bad_delta", `wide value ${z} below 256`);
        } else {
          z = bytes[off++];
          if (z === 0) fail("bad_delta", "zero delta for a changed field");
        }
        const d = (z >>> 1) ^ -(z & 1); // zigzag, as an int32
        if (f === YAW) {
          if (d < -32768 || d > 32767) fail("bad_delta", "yaw delta out of [-32768, 32767]");
          q[row + YAW] = (q[row + YAW] + d) & 0xffff;
        } else {
          const nv = q[row + f] + d;
          const top = f === 0 ? lim0 : f === 1 ? lim1 : f === 2 ? lim2 : 0xff;
          if (nv < 0 || nv > top) outOfRange = true;
          q[row + f] = nv;
        }
      }
    }
    j++;
  }
  if (outOfRange) fail("out_of_range", "position or anim out of range");

  // Added ids are not in the baseline; their positions are within the bounds.
  at = lo;
  for (let i = 0, o = addedAt; i < A; i++, o += rec) {
    const id = v.getUint32(o, true);
    at = lowerBound(bids, id, at, hi);
    if (at < hi && bids[at] === id) fail("bad_added", `added id ${id} already in the baseline`);
  }
  for (let i = 0, o = addedAt + 4; i < A; i++, o += rec) {
    const x = wide4 ? v.getUint32(o, true) : v.getUint16(o, true);
    const y = wide4 ? v.getUint32(o + 4, true) : v.getUint16(o + 2, true);
    const z = wide4 ? v.getUint32(o + 8, true) : v.getUint16(o + 4, true);
    if (x > lim0 || y > lim1 || z > lim2) fail("out_of_range", "position or anim out of range");
  }
  return { header: publicHeader(v, L), view: { tick, ids, q } };
}

/** Row `i` of a view as [x, y, z, yaw, anim].
 * @param {{ q: Int32Array }} view @param {number} i @returns {number[]} */
export function viewRow(view, i) {
  return Array.from(view.q.subarray(i * FIELDS, i * FIELDS + FIELDS));
}

/** The view of a tick from the views of all its parts, in part order.
 * @param {number} tick
 * @param {{ ids: Uint32Array, q: Int32Array }[]} views
 * @returns {View} */
export function concatViews(tick, views) {
  if (views.length === 1) return { tick, ids: views[0].ids, q: views[0].q };
  let total = 0;
  for (const pv of views) total += pv.ids.length;
  if (total > MAX_ENTITIES) fail("too_many_entities", `${total} entities in tick ${tick}`);
  const ids = new Uint32Array(total);
  const q = new Int32Array(total * FIELDS);
  let at = 0;
  for (const pv of views) {
    ids.set(pv.ids, at);
    q.set(pv.q, at * FIELDS);
    at += pv.ids.length;
  }
  return { tick, ids, q };
}

/** @param {PartHeader} a @param {PartHeader} b @returns {boolean} */
function sameTick(a, b) {
  return a.baselineTick === b.baselineTick && a.parts === b.parts && a.inputAck === b.inputAck && a.selfId === b.selfId;
}

/**
 * The client's decoded views by tick (SPEC 5.3), the counterpart of the Python reference's
 * PartAssembler. Each part is decoded against the stored view of its baseline tick; the
 * parts of a tick are collected until all have arrived, then the tick's view is stored (the
 * newest `keep` ticks are kept) and becomes the mirror if its tick is newer than the
 * mirror's. A tick completing late is stored (it may be a baseline) but does not replace the
 * mirror. Duplicate parts are harmless; a part that disagrees with the parts of its tick
 * already held (another baseline_tick, parts, input_ack or self_id, or a range that overlaps
 * or leaves a gap) is dropped as `part_mismatch`; incomplete ticks older than a newly
 * complete mirror are discarded, and at most `maxPending` ticks are incomplete at once (the
 * oldest goes first, or the new part when it is the oldest). `maxPending` is at least 34: a
 * packet is accepted up to 32 behind the newest (SPEC 3), so a tick's last part may still
 * arrive and be acknowledged that late, and the server may then take that tick as the
 * baseline (SPEC 5.3). Dropped parts are counted by reason in `drops`.
 */
export const MIN_PENDING = 34;

/** A part's view held until its tick is complete.
 * @typedef {{ ids: Uint32Array, q: Int32Array, firstId: number, lastId: number }} PartView */

/** What SnapshotStore.receive reports for a part it kept.
 * @typedef {object} PartResult
 * @property {PartHeader} header the part's
 * @property {View} part the part's view
 * @property {boolean} complete every part of the tick has arrived
 * @property {View | null} view the tick's view once complete
 * @property {boolean} newest the tick became the mirror
 */

export class SnapshotStore {
  /** @param {import("./quantize.js").LayoutLike} layout @param {number} [keep] complete ticks kept @param {number} [maxPending] */
  constructor(layout, keep = 64, maxPending = MIN_PENDING) {
    this.layout = layout;
    this.keep = keep;
    this.maxPending = maxPending;
    /** @type {Map<number, View>} tick -> View, complete ticks only */
    this.views = new Map();
    /** @type {Map<number, { header: PartHeader, views: (PartView | undefined)[], got: number }>} */
    this.pending = new Map();
    /** @type {Readonly<View>} */
    this.mirror = EMPTY_VIEW;
    /** Of the mirror's tick. @type {{ tick: number, baselineTick: number | null, inputAck: number, selfId: number, parts: number } | null} */
    this.header = null;
    /** Parts dropped, by reason. @type {Record<string, number>} */
    this.drops = {};
  }

  /** @param {string} reason @returns {null} */
  _drop(reason) {
    this.drops[reason] = (this.drops[reason] || 0) + 1;
    return null;
  }

  /**
   * Decode one part and assemble. Returns null when the part was dropped (malformed, unknown
   * baseline, mismatching or a duplicate), else { header (the part's), part (its view),
   * complete, view (the tick's view once complete, else null), newest (it became the mirror) }.
   * @param {import("./msgpack.js").BytesLike} payload
   * @returns {PartResult | null}
   */
  receive(payload) {
    let header;
    try {
      header = readPartHeader(payload);
    } catch (e) {
      if (e instanceof ProtocolError) return this._drop(e.reason);
      throw e;
    }
    const tick = header.tick;
    if (this.views.has(tick)) return this._drop("duplicate_part"); // the tick is complete already
    let entry = this.pending.get(tick);
    if (entry) {
      if (!sameTick(entry.header, header)) return this._drop("part_mismatch");
      const mine = entry.views[header.part];
      if (mine) return this._drop(mine.firstId === header.firstId && mine.lastId === header.lastId ? "duplicate_part" : "part_mismatch");
      // The parts held: those before this one lie below it, those after above it, and
      // neighbours touch it.
      for (let i = 0; i < entry.views.length; i++) {
        const other = entry.views[i];
        if (!other) continue;
        const ok =
          i < header.part
            ? other.lastId < header.firstId && (i !== header.part - 1 || other.lastId + 1 === header.firstId)
            : header.lastId < other.firstId && (i !== header.part + 1 || header.lastId + 1 === other.firstId);
        if (!ok) return this._drop("part_mismatch");
      }
    }
    let partView;
    try {
      partView = decodePart(payload, this.views, this.layout).view;
    } catch (e) {
      if (e instanceof ProtocolError) return this._drop(e.reason);
      throw e;
    }

    let view = partView;
    if (header.parts > 1) {
      if (!entry) {
        entry = { header, views: new Array(header.parts), got: 0 };
        this.pending.set(tick, entry);
        if (this.pending.size > this.maxPending) {
          let oldest = tick;
          for (const t of this.pending.keys()) if (t < oldest) oldest = t;
          this.pending.delete(oldest);
          if (oldest === tick) return this._drop("stale_part"); // SPEC 5.3, as the reference
          this._drop("pending_overflow"); // an older incomplete tick given up
        }
      }
      entry.views[header.part] = { ids: partView.ids, q: partView.q, firstId: header.firstId, lastId: header.lastId };
      entry.got++;
      if (entry.got < header.parts) return { header, part: partView, complete: false, view: null, newest: false };
      this.pending.delete(tick);
      try {
        view = concatViews(tick, /** @type {PartView[]} */ (entry.views));
      } catch (e) {
        if (e instanceof ProtocolError) return this._drop(e.reason);
        throw e;
      }
    }
    this.views.set(tick, view);
    if (this.views.size > this.keep) {
      let oldest = tick;
      for (const t of this.views.keys()) if (t < oldest) oldest = t;
      this.views.delete(oldest);
    }
    const newest = tick > this.mirror.tick;
    if (newest) {
      this.mirror = view;
      const { baselineTick, inputAck, selfId, parts } = header;
      this.header = { tick, baselineTick, inputAck, selfId, parts };
      for (const t of this.pending.keys()) if (t < tick) this.pending.delete(t);
    }
    return { header, part: partView, complete: true, view, newest };
  }

  /** Forgets every view (a new connection). */
  clear() {
    this.views.clear();
    this.pending.clear();
    this.mirror = EMPTY_VIEW;
    this.header = null;
  }
}
