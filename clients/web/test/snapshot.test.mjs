// The JavaScript snapshot decoder against protocol/vectors/snapshot_*.json (byte-exact
// parse of every part, the decoded view), plus the decoder's validation rules and the store
// of views by tick.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { ProtocolError } from "../src/protocol/errors.js";
import { Writer } from "../src/protocol/msgpack.js";
import { Quantizer } from "../src/protocol/quantize.js";
import { decodeSnapshot, parseSnapshot, SnapshotStore, FIELDS } from "../src/protocol/snapshot.js";
import { hex, loadVector, snapshotVectorNames, unhex } from "./helpers.mjs";

function toView(v) {
  return { tick: v.tick, ids: Uint32Array.from(v.ids), q: Int32Array.from(v.q.flat()) };
}

function plain(view) {
  const q = [];
  for (let i = 0; i < view.ids.length; i++) q.push(Array.from(view.q.subarray(i * FIELDS, (i + 1) * FIELDS)));
  return { tick: view.tick, ids: Array.from(view.ids), q };
}

function baselines(vec) {
  const m = new Map();
  if (vec.baseline) m.set(vec.baseline.tick, toView(vec.baseline));
  return m;
}

const NAMES = snapshotVectorNames();

describe("snapshot vectors", () => {
  it("finds the vectors", () => {
    assert.ok(NAMES.length >= 8, `only ${NAMES.length} snapshot vectors`);
  });
  for (const name of NAMES) {
    const vec = loadVector(name);
    it(`${name}: parts`, () => {
      assert.equal(vec.format, "worldserver-snapshot-vector/1");
      const p = parseSnapshot(unhex(vec.expected_hex));
      const e = vec.expected_parts;
      assert.equal(p.tick, e.tick);
      assert.equal(p.baselineTick, e.baseline_tick);
      assert.equal(p.inputAck, e.input_ack);
      assert.equal(p.selfId, e.self_id);
      for (const k of ["removed", "added_ids", "added_state", "upd_mask", "field_mask", "small", "wide"]) {
        assert.equal(hex(p[k]), e[k], k);
      }
    });
    it(`${name}: view`, () => {
      const { header, view } = decodeSnapshot(unhex(vec.expected_hex), baselines(vec), vec.position_dtype);
      assert.deepEqual(plain(view), vec.expected_view);
      assert.equal(header.tick, vec.tick);
      assert.equal(header.inputAck, vec.input_ack);
      assert.equal(header.selfId, vec.self_id);
      assert.equal(header.baselineTick, vec.baseline ? vec.baseline.tick : null);
    });
    it(`${name}: decoding twice gives the same view, baseline untouched`, () => {
      const b = baselines(vec);
      const before = vec.baseline ? plain(b.get(vec.baseline.tick)) : null;
      const v1 = decodeSnapshot(unhex(vec.expected_hex), b, vec.position_dtype).view;
      const v2 = decodeSnapshot(unhex(vec.expected_hex), b, vec.position_dtype).view;
      assert.deepEqual(plain(v1), plain(v2));
      if (before) assert.deepEqual(plain(b.get(vec.baseline.tick)), before);
    });
    it(`${name}: truncations and trailing bytes are rejected`, () => {
      const bytes = unhex(vec.expected_hex);
      for (let n = 0; n < bytes.length; n++) {
        assert.throws(() => decodeSnapshot(bytes.subarray(0, n), baselines(vec), vec.position_dtype), ProtocolError);
      }
      const longer = new Uint8Array(bytes.length + 1);
      longer.set(bytes);
      assert.throws(() => decodeSnapshot(longer, baselines(vec), vec.position_dtype), ProtocolError);
    });
  }
});

function payload(parts) {
  const w = new Writer();
  w.array(11);
  w.int(parts.tick);
  if (parts.baselineTick === null) w.nil();
  else w.int(parts.baselineTick);
  w.int(parts.inputAck).int(parts.selfId);
  for (const k of ["removed", "added_ids", "added_state", "upd_mask", "field_mask", "small", "wide"]) {
    w.bin(parts[k]);
  }
  return w.finish();
}

function reject(vecName, change, reason) {
  const vec = loadVector(vecName);
  const parts = parseSnapshot(unhex(vec.expected_hex));
  const copy = { ...parts };
  for (const k of Object.keys(copy)) if (copy[k] instanceof Uint8Array) copy[k] = Uint8Array.from(copy[k]);
  change(copy);
  assert.throws(
    () => decodeSnapshot(payload(copy), baselines(vec), vec.position_dtype),
    (e) => e instanceof ProtocolError && (!reason || e.reason === reason),
  );
}

describe("snapshot validation", () => {
  it("re-encoding the parts gives the vector bytes", () => {
    for (const name of NAMES) {
      const vec = loadVector(name);
      assert.equal(hex(payload(parseSnapshot(unhex(vec.expected_hex)))), vec.expected_hex, name);
    }
  });
  it("unknown baseline", () => {
    const vec = loadVector("snapshot_delta_moves.json");
    assert.throws(
      () => decodeSnapshot(unhex(vec.expected_hex), new Map(), vec.position_dtype),
      (e) => e.reason === "unknown_baseline",
    );
  });
  it("baseline_tick must be below tick", () => {
    reject("snapshot_delta_moves.json", (p) => (p.baselineTick = p.tick), "bad_field");
  });
  it("input_ack below -1", () => reject("snapshot_delta_moves.json", (p) => (p.inputAck = -2), "bad_field"));
  it("removed id not in the baseline", () => {
    reject("snapshot_spawn_despawn.json", (p) => (p.removed[0] ^= 0x40), null);
  });
  it("unsorted added ids", () => {
    reject("snapshot_full.json", (p) => p.added_ids.set(p.added_ids.slice(0, 4), 4), "unsorted_ids");
  });
  it("added id already in baseline", () => {
    const vec = loadVector("snapshot_delta_moves.json");
    reject("snapshot_delta_moves.json", (p) => {
      p.added_ids = new Uint8Array(new Uint32Array([vec.baseline.ids[4]]).buffer);
      p.added_state = new Uint8Array(9);
    }, "bad_added");
  });
  it("wrong added_state length", () => {
    reject("snapshot_full.json", (p) => (p.added_state = p.added_state.subarray(1)), "bad_length");
  });
  it("nonzero padding bits in the update mask", () => {
    reject("snapshot_delta_moves.json", (p) => (p.upd_mask[0] |= 0x80), "bad_padding");
  });
  it("updated entity with no changed field", () => {
    reject("snapshot_delta_moves.json", (p) => {
      p.upd_mask[0] |= 0x04; // entity 2 updated, but its fields follow nobody
    }, null);
  });
  it("zero delta", () => {
    reject("snapshot_delta_moves.json", (p) => (p.small[0] = 0), "bad_delta");
  });
  it("wide value below 255", () => {
    reject("snapshot_wide_yaw_wrap.json", (p) => new DataView(p.wide.buffer).setUint32(0, 254, true), "bad_delta");
  });
  it("small/wide length mismatch", () => {
    reject("snapshot_delta_moves.json", (p) => (p.small = p.small.subarray(1)), "bad_length");
    reject("snapshot_wide_yaw_wrap.json", (p) => (p.wide = p.wide.subarray(4)), "bad_length");
  });
  it("position out of range after a delta", () => {
    // entity 1 starts at x = 0: a negative delta on its x (second updated entity) is out of range
    reject("snapshot_delta_moves.json", (p) => (p.small[2] = 0x03), "out_of_range");
    // entity 2 (x = 65535) is not updated; entity 3's anim 2 - 64 is below 0
    reject("snapshot_delta_moves.json", (p) => (p.small[5] = 0x7f), "out_of_range");
  });
  it("not an 11-element array", () => {
    const w = new Writer();
    w.array(10);
    for (let i = 0; i < 10; i++) w.int(0);
    assert.throws(() => decodeSnapshot(w.finish(), new Map(), "<u2"), ProtocolError);
    assert.throws(() => decodeSnapshot(new Uint8Array([0xc1]), new Map(), "<u2"), ProtocolError);
  });
  it("a Quantizer bounds positions to its steps", () => {
    const vec = loadVector("snapshot_full.json"); // has 65535 positions
    const q = new Quantizer([-110, -10, -110], [110, 50, 110], 0.01); // steps 22000, 6000, 22000
    assert.throws(() => decodeSnapshot(unhex(vec.expected_hex), new Map(), q), (e) => e.reason === "out_of_range");
  });
});

describe("SnapshotStore", () => {
  it("decodes a delta against a stored full snapshot and keeps the newest as the mirror", () => {
    const full = loadVector("snapshot_full.json"); // tick 100: the baseline of the next one
    const delta = loadVector("snapshot_delta_moves.json");
    assert.deepEqual(full.expected_view, delta.baseline);
    const store = new SnapshotStore(full.position_dtype);
    const r1 = store.receive(unhex(full.expected_hex));
    assert.ok(r1 && r1.newest);
    assert.deepEqual(plain(store.mirror), full.expected_view);
    const r2 = store.receive(unhex(delta.expected_hex));
    assert.ok(r2 && r2.newest);
    assert.deepEqual(plain(store.mirror), delta.expected_view);
    assert.equal(store.header.inputAck, delta.input_ack);
  });
  it("drops a snapshot whose baseline is not stored, and malformed ones, counted", () => {
    const delta = loadVector("snapshot_delta_moves.json");
    const store = new SnapshotStore(delta.position_dtype);
    assert.equal(store.receive(unhex(delta.expected_hex)), null);
    assert.equal(store.receive(new Uint8Array([0x93, 1, 2, 3])), null);
    assert.equal(store.drops.unknown_baseline, 1);
    assert.equal(store.drops.bad_shape, 1);
    assert.equal(store.mirror.tick, -1);
  });
  it("a late snapshot is stored but does not replace the mirror", () => {
    const vec = loadVector("snapshot_delta_moves.json");
    const store = new SnapshotStore(vec.position_dtype);
    store.views.set(vec.baseline.tick, toView(vec.baseline));
    store.mirror = { tick: vec.tick + 5, ids: new Uint32Array(0), q: new Int32Array(0) };
    const r = store.receive(unhex(vec.expected_hex));
    assert.equal(r.newest, false);
    assert.equal(store.mirror.tick, vec.tick + 5);
    assert.ok(store.views.has(vec.tick));
  });
  it("keeps only the newest ticks", () => {
    const store = new SnapshotStore("<u2", 4);
    for (let t = 0; t < 10; t++) {
      const w = new Writer();
      w.array(11).int(t).nil().int(-1).int(1);
      for (let k = 0; k < 7; k++) w.bin(new Uint8Array(0));
      assert.ok(store.receive(w.finish()));
    }
    assert.deepEqual([...store.views.keys()].sort((a, b) => a - b), [6, 7, 8, 9]);
    assert.equal(store.mirror.tick, 9);
  });
});
