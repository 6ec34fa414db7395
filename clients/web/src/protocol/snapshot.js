// Snapshot decoding (SPEC section 5): a payload plus the client's stored views (baselines)
// gives the new View; and the store of decoded views keyed by tick (the mirror is the view
// with the newest tick). A port of the decoder of protocol/snapshot.py with the same
// validation: any malformed payload throws ProtocolError and changes no state; an unknown
// baseline throws ProtocolError("unknown_baseline") and the caller drops the snapshot.
//
// A View is { tick, ids: Uint32Array (sorted, unique), q: Int32Array of 5 values per id
// (x, y, z, yaw, anim) }. Views are treated as immutable.

import { ProtocolError } from "./errors.js";
import { Reader } from "./msgpack.js";
import { positionLayout } from "./quantize.js";

export const MAX_ENTITIES = 65536;
export const MAX_PAYLOAD = 65535;
export const MAX_TICK = 2 ** 32 - 1;
export const FIELDS = 5;
const WIDE = 255;

export const EMPTY_VIEW = Object.freeze({ tick: -1, ids: new Uint32Array(0), q: new Int32Array(0) });

function dataView(b) {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function readIds(bin, what) {
  if (bin.length % 4) throw new ProtocolError("bad_length", `${what} length ${bin.length} not a multiple of 4`);
  const n = bin.length >> 2;
  const v = dataView(bin);
  const ids = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    ids[i] = v.getUint32(4 * i, true);
    if (i && ids[i] <= ids[i - 1]) throw new ProtocolError("unsorted_ids", `${what} must be strictly ascending`);
  }
  return ids;
}

/** Exactly `count` bits, least significant first; checks length and zero padding. */
function readBits(bin, count, what) {
  if (bin.length !== (count + 7) >> 3) {
    throw new ProtocolError("bad_length", `${what} has ${bin.length} bytes for ${count} bits`);
  }
  if (count & 7 && bin[bin.length - 1] >> (count & 7)) {
    throw new ProtocolError("bad_padding", `${what} has nonzero padding bits`);
  }
  const bits = new Uint8Array(count);
  for (let j = 0; j < count; j++) bits[j] = (bin[j >> 3] >> (j & 7)) & 1;
  return bits;
}

/** Index of id in sorted ids, or -1. */
function indexOf(ids, id) {
  let lo = 0;
  let hi = ids.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const v = ids[mid];
    if (v === id) return mid;
    if (v < id) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

function lookup(baselines, tick) {
  if (!baselines) return undefined;
  if (typeof baselines === "function") return baselines(tick);
  if (typeof baselines.get === "function") return baselines.get(tick);
  return baselines[tick];
}

/** Parse the 11-element array without interpreting it. Returns the scalars and the raw bins. */
export function parseSnapshot(payload) {
  const r = new Reader(payload);
  if (r.bytes.length > MAX_PAYLOAD) throw new ProtocolError("oversized", `snapshot of ${r.bytes.length} bytes`);
  try {
    r.array("snapshot", 11, 11);
  } catch (e) {
    if (e instanceof ProtocolError && e.reason === "bad_field") throw new ProtocolError("bad_shape", e.message);
    throw e;
  }
  const tick = r.int("tick", 0, MAX_TICK);
  const baselineTick = r.intOrNil("baseline_tick", 0, tick - 1);
  const inputAck = r.int("input_ack", -1, MAX_TICK);
  const selfId = r.int("self_id", 0, 0xffffffff);
  const names = ["removed", "added_ids", "added_state", "upd_mask", "field_mask", "small", "wide"];
  const parts = { tick, baselineTick, inputAck, selfId };
  for (const name of names) parts[name] = r.bin(name, MAX_PAYLOAD);
  r.end();
  return parts;
}

/**
 * Decode a snapshot payload against the stored views.
 * baselines: a Map tick -> View, a function tick -> View|undefined, or an object.
 * layout: a Quantizer (positions bounded by its steps) or "<u2"/"<u4".
 * Returns { header: { tick, baselineTick, inputAck, selfId }, view }.
 */
export function decodeSnapshot(payload, baselines, layout) {
  const { size: psize, limits } = positionLayout(layout);
  const hi = [limits[0], limits[1], limits[2], 0xffff, 0xff];
  const p = parseSnapshot(payload);
  const header = { tick: p.tick, baselineTick: p.baselineTick, inputAck: p.inputAck, selfId: p.selfId };
  const stateSize = 3 * psize + 3;
  const removed = readIds(p.removed, "removed");
  const added = readIds(p.added_ids, "added_ids");
  const na = added.length;
  if (p.added_state.length !== na * stateSize) {
    throw new ProtocolError("bad_length", "added_state does not match added_ids");
  }
  if (p.wide.length % 4) throw new ProtocolError("bad_length", "wide length not a multiple of 4");

  let base = EMPTY_VIEW;
  if (p.baselineTick !== null) {
    base = lookup(baselines, p.baselineTick);
    if (!base || base.tick !== p.baselineTick) {
      throw new ProtocolError("unknown_baseline", `baseline tick ${p.baselineTick}`);
    }
  }
  const bids = base.ids;
  const bq = base.q;
  const nb = bids.length;

  // Removals: each must be in the baseline.
  const keep = new Uint8Array(nb).fill(1);
  for (let i = 0; i < removed.length; i++) {
    const at = indexOf(bids, removed[i]);
    if (at < 0) throw new ProtocolError("bad_removed", "removed id not in baseline");
    keep[at] = 0;
  }
  const nk = nb - removed.length;
  if (nk + na > MAX_ENTITIES) throw new ProtocolError("too_many_entities", `${nk + na} entities`);

  // Kept entities in baseline order, with their baseline state.
  const keptIds = new Uint32Array(nk);
  const keptQ = new Int32Array(nk * FIELDS);
  for (let i = 0, k = 0; i < nb; i++) {
    if (!keep[i]) continue;
    keptIds[k] = bids[i];
    for (let f = 0; f < FIELDS; f++) keptQ[k * FIELDS + f] = bq[i * FIELDS + f];
    k++;
  }

  // Updates.
  const upd = readBits(p.upd_mask, nk, "upd_mask");
  let nu = 0;
  for (let j = 0; j < nk; j++) nu += upd[j];
  const fields = readBits(p.field_mask, FIELDS * nu, "field_mask");
  let nVals = 0;
  for (let u = 0; u < nu; u++) {
    let any = 0;
    for (let f = 0; f < FIELDS; f++) any |= fields[u * FIELDS + f];
    if (!any) throw new ProtocolError("bad_field_mask", "updated entity with no changed field");
  }
  for (let j = 0; j < fields.length; j++) nVals += fields[j];
  const small = p.small;
  if (small.length !== nVals) throw new ProtocolError("bad_length", `small has ${small.length} bytes for ${nVals}`);
  let nWide = 0;
  for (let j = 0; j < small.length; j++) if (small[j] === WIDE) nWide++;
  if (p.wide.length !== 4 * nWide) throw new ProtocolError("bad_length", `wide has ${p.wide.length} bytes for ${nWide}`);
  if (nu) {
    const wv = dataView(p.wide);
    let vi = 0;
    let wi = 0;
    for (let j = 0, u = 0; j < nk; j++) {
      if (!upd[j]) continue;
      for (let f = 0; f < FIELDS; f++) {
        if (!fields[u * FIELDS + f]) continue;
        let z = small[vi++];
        if (z === WIDE) {
          z = wv.getUint32(4 * wi++, true);
          if (z < WIDE) throw new ProtocolError("bad_delta", "wide value below 255");
        }
        if (z === 0) throw new ProtocolError("bad_delta", "zero delta for a changed field");
        // zigzag: d = (z >> 1) ^ -(z & 1), on up to 32-bit z without overflow
        const d = z & 1 ? -((z - 1) / 2) - 1 : z / 2;
        const at = j * FIELDS + f;
        let nv;
        if (f === 3) {
          if (d < -32768 || d > 32767) throw new ProtocolError("bad_delta", "yaw delta out of [-32768, 32767]");
          nv = (keptQ[at] + d) & 0xffff;
        } else {
          nv = keptQ[at] + d;
          if (nv < 0 || nv > hi[f]) throw new ProtocolError("out_of_range", "position or anim out of range");
        }
        keptQ[at] = nv;
      }
      u++;
    }
  }

  if (na === 0) return { header, view: { tick: p.tick, ids: keptIds, q: keptQ } };

  // Additions: absolute state, column-major; must not collide with the baseline.
  for (let i = 0; i < na; i++) {
    if (indexOf(bids, added[i]) >= 0) throw new ProtocolError("bad_added", "added id already in baseline");
  }
  const sv = dataView(p.added_state);
  const aq = new Int32Array(na * FIELDS);
  for (let axis = 0; axis < 3; axis++) {
    for (let i = 0; i < na; i++) {
      const off = (axis * na + i) * psize;
      const v = psize === 2 ? sv.getUint16(off, true) : sv.getUint32(off, true);
      if (v > hi[axis]) throw new ProtocolError("out_of_range", "position or anim out of range");
      aq[i * FIELDS + axis] = v;
    }
  }
  const yawOff = 3 * na * psize;
  for (let i = 0; i < na; i++) {
    aq[i * FIELDS + 3] = sv.getUint16(yawOff + 2 * i, true);
    aq[i * FIELDS + 4] = p.added_state[yawOff + 2 * na + i];
  }

  // Merge the two sorted id lists.
  const n = nk + na;
  const ids = new Uint32Array(n);
  const q = new Int32Array(n * FIELDS);
  let a = 0;
  let b = 0;
  for (let k = 0; k < n; k++) {
    let fromKept;
    if (a >= nk) fromKept = false;
    else if (b >= na) fromKept = true;
    else fromKept = keptIds[a] < added[b];
    if (fromKept) {
      ids[k] = keptIds[a];
      q.set(keptQ.subarray(a * FIELDS, a * FIELDS + FIELDS), k * FIELDS);
      a++;
    } else {
      ids[k] = added[b];
      q.set(aq.subarray(b * FIELDS, b * FIELDS + FIELDS), k * FIELDS);
      b++;
    }
  }
  return { header, view: { tick: p.tick, ids, q } };
}

/** Row `i` of a view as [x, y, z, yaw, anim]. */
export function viewRow(view, i) {
  return Array.from(view.q.subarray(i * FIELDS, i * FIELDS + FIELDS));
}

/**
 * The client's decoded views by tick (SPEC 5.3): decodes each snapshot against the stored
 * view of its baseline tick, keeps the newest `keep` ticks, and tracks the mirror (the view
 * with the newest tick). A late snapshot is stored (it may be a baseline) but does not
 * replace the mirror.
 */
export class SnapshotStore {
  constructor(layout, keep = 64) {
    this.layout = layout;
    this.keep = keep;
    this.views = new Map();
    this.mirror = EMPTY_VIEW;
    this.header = null; // header of the mirror's snapshot
    this.drops = {};
  }

  _drop(reason) {
    this.drops[reason] = (this.drops[reason] || 0) + 1;
  }

  /** Decode and store. Returns { header, view, newest } or null when the snapshot was dropped. */
  receive(payload) {
    let out;
    try {
      out = decodeSnapshot(payload, this.views, this.layout);
    } catch (e) {
      if (e instanceof ProtocolError) {
        this._drop(e.reason);
        return null;
      }
      throw e;
    }
    const { header, view } = out;
    this.views.set(view.tick, view);
    if (this.views.size > this.keep) {
      const ticks = [...this.views.keys()].sort((x, y) => x - y);
      for (const t of ticks.slice(0, ticks.length - this.keep)) this.views.delete(t);
    }
    const newest = view.tick > this.mirror.tick;
    if (newest) {
      this.mirror = view;
      this.header = header;
    }
    return { header, view, newest };
  }

  clear() {
    this.views.clear();
    this.mirror = EMPTY_VIEW;
    this.header = null;
  }
}
