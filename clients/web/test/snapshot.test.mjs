// The JavaScript snapshot decoder, format v2 (SPEC 5): protocol/vectors/snapshot_*.json
// (every part parsed field by field, the tick's view decoded from all parts, in order and in
// reverse order), hand-made parts for every validation rule, and the store that assembles
// the parts of a tick and keeps the mirror.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { ProtocolError } from "../src/protocol/errors.js";
import { Quantizer } from "../src/protocol/quantize.js";
import { decodePart, FIELDS, NONE, parsePart, readPartHeader, SnapshotStore } from "../src/protocol/snapshot.js";
import { bitmap, deltaRecord, encodeSnapshot, hex, loadVector, makeView, rawPart, snapshotVectorNames, unhex, zigzag } from "./helpers.mjs";

function plain(view) {
  const q = [];
  for (let i = 0; i < view.ids.length; i++) q.push(Array.from(view.q.subarray(i * FIELDS, (i + 1) * FIELDS)));
  return { tick: view.tick, ids: Array.from(view.ids), q };
}

const bytesOf = (hexes) => Uint8Array.from(Buffer.from(hexes.replace(/\s+/g, ""), "hex"));

function throwsReason(fn, reason) {
  assert.throws(fn, (e) => {
    assert.ok(e instanceof ProtocolError, `not a ProtocolError: ${e}`);
    assert.equal(e.reason, reason, e.message);
    return true;
  });
}

// ---------------------------------------------------------------------------------------
// protocol/vectors/snapshot_*.json (SPEC 5.5), written by the Python reference.

const NAMES = snapshotVectorNames();
const vecView = (v) => makeView(v.tick, v.ids, v.q);
const vecBaselines = (vec) => new Map(vec.baseline ? [[vec.baseline.tick, vecView(vec.baseline)]] : []);
const vecParts = (vec) => vec.expected_parts_hex.map(unhex);

describe("snapshot vectors", () => {
  it("finds the vectors, format 2, parts and multi-part ones among them", () => {
    assert.ok(NAMES.length >= 10, `only ${NAMES.length} snapshot vectors`);
    const multi = NAMES.filter((n) => loadVector(n).expected_parts_hex.length > 1);
    assert.ok(multi.length >= 2, `multi-part vectors: ${multi}`);
  });
  for (const name of NAMES) {
    const vec = loadVector(name);
    const dtype = vec.position_dtype;
    it(`${name}: every part parses to expected_fields`, () => {
      assert.equal(vec.format, "worldserver-snapshot-vector/2");
      const parts = vecParts(vec);
      assert.equal(parts.length, vec.expected_fields.length);
      parts.forEach((bytes, i) => {
        const e = vec.expected_fields[i];
        const f = parsePart(bytes, dtype);
        const h = f.header;
        assert.deepEqual(
          [h.tick, h.baselineTick === null ? NONE : h.baselineTick, h.inputAck < 0 ? NONE : h.inputAck, h.selfId, h.part, h.parts, h.firstId, h.lastId, h.removedCount, h.addedCount, h.keptCount],
          [e.tick, e.baseline_tick, e.input_ack, e.self_id, e.part, e.parts, e.first_id, e.last_id, e.R, e.A, e.K],
          `part ${i} header`,
        );
        assert.equal(h.inputAck, vec.input_ack);
        assert.equal(h.baselineTick, vec.baseline ? vec.baseline.tick : null);
        assert.deepEqual(Array.from(f.removedIds), e.removed, `part ${i} removed`);
        assert.deepEqual(plain({ tick: 0, ids: f.added.ids, q: f.added.q }), { tick: 0, ids: e.added.ids, q: e.added.q }, `part ${i} added`);
        assert.equal(hex(f.upd), e.upd, `part ${i} upd`);
        assert.equal(hex(f.records), e.records, `part ${i} records`);
        assert.deepEqual(readPartHeader(bytes), decodePart(bytes, vecBaselines(vec), dtype).header);
      });
    });
    it(`${name}: the parts decode to expected_view (each part its range), in order and in reverse order`, () => {
      const parts = vecParts(vec);
      const got = { tick: vec.tick, ids: [], q: [] };
      for (const bytes of parts) {
        const { header, view } = decodePart(bytes, vecBaselines(vec), dtype);
        for (const id of view.ids) assert.ok(id >= header.firstId && id <= header.lastId);
        got.ids.push(...view.ids);
        got.q.push(...plain(view).q);
      }
      assert.deepEqual(got, vec.expected_view);
      for (const order of [parts, [...parts].reverse()]) {
        const store = new SnapshotStore(dtype);
        if (vec.baseline) store.views.set(vec.baseline.tick, vecView(vec.baseline));
        order.forEach((bytes, i) => {
          const r = store.receive(bytes);
          assert.ok(r, `dropped: ${JSON.stringify(store.drops)}`);
          assert.equal(r.complete, i === order.length - 1);
        });
        assert.deepEqual(plain(store.mirror), vec.expected_view);
        assert.deepEqual(store.header, {
          tick: vec.tick,
          baselineTick: vec.baseline ? vec.baseline.tick : null,
          inputAck: vec.input_ack,
          selfId: vec.self_id,
          parts: parts.length,
        });
      }
    });
    it(`${name}: decoding twice gives the same view, the baseline untouched`, () => {
      const b = vecBaselines(vec);
      const before = vec.baseline ? plain(b.get(vec.baseline.tick)) : null;
      for (const bytes of vecParts(vec)) {
        assert.deepEqual(plain(decodePart(bytes, b, dtype).view), plain(decodePart(bytes, b, dtype).view));
      }
      if (before) assert.deepEqual(plain(b.get(vec.baseline.tick)), before);
    });
    it(`${name}: truncations and trailing bytes are rejected`, () => {
      for (const bytes of vecParts(vec)) {
        for (let n = 0; n < bytes.length; n++) {
          assert.throws(() => decodePart(bytes.subarray(0, n), vecBaselines(vec), dtype), ProtocolError);
        }
        const longer = new Uint8Array(bytes.length + 1);
        longer.set(bytes);
        throwsReason(() => decodePart(longer, vecBaselines(vec), dtype), "bad_length");
      }
    });
    it(`${name}: the tests' encoder, given the baseline, the view and the cuts, writes the same bytes`, () => {
      const cuts = vec.expected_fields.slice(1).map((e) => e.first_id);
      const parts = encodeSnapshot(vec.baseline && vecView(vec.baseline), vecView(vec.expected_view), {
        inputAck: vec.input_ack,
        selfId: vec.self_id,
        cuts,
        positionSize: dtype === "<u2" ? 2 : 4,
      });
      assert.deepEqual(parts.map(hex), vec.expected_parts_hex);
    });
  }
  it("a wrong position type is rejected", () => {
    const vec = loadVector("snapshot_full.json");
    assert.equal(vec.position_dtype, "<u2");
    throwsReason(() => decodePart(vecParts(vec)[0], null, "<u4"), "bad_length");
  });
  it("a Quantizer bounds positions to its steps", () => {
    const vec = loadVector("snapshot_full.json"); // has 65535 positions
    const q = new Quantizer([-110, -10, -110], [110, 50, 110], 0.01); // steps 22000, 6000, 22000
    throwsReason(() => decodePart(vecParts(vec)[0], null, q), "out_of_range");
  });
  it("a vector's parts against a missing baseline, and a part twice or mismatching, in the store", () => {
    const vec = loadVector("snapshot_parts.json");
    const parts = vecParts(vec);
    const store = new SnapshotStore(vec.position_dtype);
    assert.equal(store.receive(parts[0]), null);
    assert.deepEqual(store.drops, { unknown_baseline: 1 });
    store.views.set(vec.baseline.tick, vecView(vec.baseline));
    assert.ok(store.receive(parts[1]));
    assert.equal(store.receive(parts[1]), null);
    const other = parts[0].slice();
    other[17] += 1; // parts + 1
    other[8] ^= 1; // another input_ack
    assert.equal(store.receive(other), null);
    assert.deepEqual(store.drops, { unknown_baseline: 1, duplicate_part: 1, part_mismatch: 1 });
    for (const bytes of [...parts].reverse()) store.receive(bytes);
    assert.deepEqual(plain(store.mirror), vec.expected_view);
  });
});

// The example of SPEC 5.2: 5 kept entities, entities 0, 1, 3 updated.
const S = (slot) => slot << 16;
const BASE = makeView(100, [S(1), S(2), S(3), S(4), S(5)], [
  [1000, 200, 3000, 0, 1],
  [0, 200, 40, 65000, 1],
  [65535, 0, 0, 7, 0],
  [500, 500, 500, 100, 2],
  [9, 9, 9, 9, 9],
]);
const EXAMPLE = {
  tick: 101,
  baselineTick: 100,
  inputAck: 77,
  selfId: S(4),
  K: 5,
  upd: new Uint8Array([0x0b]),
  records: bytesOf("053219 0502fe 117f01"),
};
const EXAMPLE_VIEW = {
  tick: 101,
  ids: [S(1), S(2), S(3), S(4), S(5)],
  q: [
    [1025, 200, 2987, 0, 1],
    [1, 200, 167, 65000, 1],
    [65535, 0, 0, 7, 0],
    [436, 500, 500, 100, 1],
    [9, 9, 9, 9, 9],
  ],
};
const baseMap = () => new Map([[100, BASE]]);

describe("decodePart: well-formed parts", () => {
  it("decodes the SPEC 5.2 example", () => {
    const { header, view } = decodePart(rawPart(EXAMPLE), baseMap(), "<u2");
    assert.deepEqual(plain(view), EXAMPLE_VIEW);
    assert.deepEqual(header, {
      tick: 101,
      baselineTick: 100,
      inputAck: 77,
      selfId: S(4),
      part: 0,
      parts: 1,
      firstId: 0,
      lastId: NONE,
    });
  });

  it("0xFFFFFFFF baseline and input_ack read as a full snapshot (null) and none (-1)", () => {
    const p = rawPart({ tick: 5, added: [[S(2), 1, 2, 3, 65535, 255]] });
    assert.equal(new DataView(p.buffer).getUint32(4, true), NONE);
    assert.equal(new DataView(p.buffer).getUint32(8, true), NONE);
    const { header, view } = decodePart(p, new Map(), "<u2");
    assert.equal(header.baselineTick, null);
    assert.equal(header.inputAck, -1);
    assert.deepEqual(plain(view), { tick: 5, ids: [S(2)], q: [[1, 2, 3, 65535, 255]] });
    // input_ack 0xFFFFFFFE is an ordinary (large) sequence number
    const q = rawPart({ tick: 5, inputAck: 0xfffffffe });
    assert.equal(decodePart(q, null, "<u2").header.inputAck, 0xfffffffe);
  });

  it("added records are row-major with u32 positions under <u4", () => {
    const p = rawPart({
      tick: 9,
      positionSize: 4,
      added: [
        [3, 70000, 1, 2 ** 31 - 1, 4, 5],
        [S(9), 0, 0, 0, 0, 0],
      ],
    });
    assert.equal(p.length, 32 + 2 * (4 + 15));
    const { view } = decodePart(p, null, "<u4");
    assert.deepEqual(plain(view), { tick: 9, ids: [3, S(9)], q: [[70000, 1, 2 ** 31 - 1, 4, 5], [0, 0, 0, 0, 0]] });
    // The same bytes read as u2 positions do not add up.
    throwsReason(() => decodePart(p, null, "<u2"), "bad_length");
  });

  it("wide fields and yaw wrapping", () => {
    const base = makeView(1, [7], [[10, 20, 30, 65530, 0]]);
    // the SPEC's example record: x +200 (z = 400, wide), yaw -3
    assert.deepEqual(deltaRecord([200, 0, 0, -3, 0]), [0x29, 0x01, 0x90, 0x01, 0x00, 0x00, 0x05]);
    const p0 = rawPart({ tick: 2, baselineTick: 1, upd: [1], records: bytesOf("29 01 90010000 05") });
    assert.deepEqual(plain(decodePart(p0, new Map([[1, base]]), "<u2").view).q, [[210, 20, 30, 65527, 0]]);
    // x +1000 (wide), y -20, yaw +10 wraps past 65535, anim +200 (z = 400, wide)
    const rec = deltaRecord([1000, -20, 0, 10, 200]);
    assert.deepEqual(rec, [0x3b, 0x11, 0xd0, 0x07, 0, 0, 39, 20, 0x90, 0x01, 0, 0]);
    const p = rawPart({ tick: 2, baselineTick: 1, upd: [1], records: Uint8Array.from(rec) });
    assert.deepEqual(plain(decodePart(p, new Map([[1, base]]), "<u2").view).q, [[1010, 0, 30, 4, 200]]);
    // z = 255 is the largest narrow value; yaw -32768 (z = 65535) the most negative delta
    assert.deepEqual(deltaRecord([-128, 0, 0, 0, 0]), [0x01, 255]);
    const p2 = rawPart({ tick: 2, baselineTick: 1, upd: [1], records: Uint8Array.from(deltaRecord([-10, 0, 0, -32768, 0])) });
    assert.deepEqual(plain(decodePart(p2, new Map([[1, base]]), "<u2").view).q[0], [0, 20, 30, 65530 - 32768, 0]);
    // the largest position delta of a u4 axis, down to 0
    const big = makeView(1, [7], [[2 ** 31 - 1, 0, 0, 0, 0]]);
    const p3 = rawPart({ tick: 2, baselineTick: 1, upd: [1], records: Uint8Array.from(deltaRecord([-(2 ** 31 - 1), 0, 0, 0, 0])) });
    assert.deepEqual(plain(decodePart(p3, new Map([[1, big]]), "<u4").view).q[0], [0, 0, 0, 0, 0]);
  });

  it("packed walks: x and z in one byte, and only that way", () => {
    const base = makeView(1, [7], [[10, 20, 30, 100, 1]]);
    const bases = new Map([[1, base]]);
    // the SPEC's example: x +7 (z = 14), z -3 (z = 5)
    assert.deepEqual(deltaRecord([7, 0, -3, 0, 0]), [0x45, 0x5e]);
    const p = rawPart({ tick: 2, baselineTick: 1, upd: [1], records: bytesOf("45 5e") });
    assert.deepEqual(plain(decodePart(p, bases, "<u2").view).q, [[17, 20, 27, 100, 1]]);
    // zigzag 16 does not fit a nibble: the long form
    assert.deepEqual(deltaRecord([8, 0, 1, 0, 0]), [0x05, 16, 2]);
    for (const [records, reason] of [
      ["45 50", "bad_delta"], // x nibble zero
      ["45 0e", "bad_delta"], // z nibble zero
      ["05 0e 05", "bad_delta"], // a small walk in the long form
      ["65 5e", "bad_mask"], // packed with the wide flag
      ["47 5e", "bad_mask"], // packed with y too
    ]) {
      throwsReason(() => decodePart(rawPart({ tick: 2, baselineTick: 1, upd: [1], records: bytesOf(records) }), bases, "<u2"), reason);
    }
  });

  it("a part sees only its range of the baseline; removed and added interleave with kept", () => {
    const base = makeView(50, [1, 5, 9, 12, 20], [[1, 0, 0, 0, 0], [5, 0, 0, 0, 0], [9, 0, 0, 0, 0], [12, 0, 0, 0, 0], [20, 0, 0, 0, 0]]);
    // part 1 of 2 covers [9, 0xffffffff]: baseline ids 9, 12, 20; 12 removed; 10 and 30 added; 20 moved
    const p = rawPart({
      tick: 51,
      baselineTick: 50,
      part: 1,
      parts: 2,
      firstId: 9,
      lastId: NONE,
      removed: [12],
      added: [[10, 3, 3, 3, 3, 3], [30, 4, 4, 4, 4, 4]],
      upd: [0, 1],
      records: Uint8Array.from(deltaRecord([0, 7, 0, 0, 0])),
    });
    const { header, view } = decodePart(p, new Map([[50, base]]), "<u2");
    assert.equal(header.part, 1);
    assert.equal(header.firstId, 9);
    assert.deepEqual(plain(view), {
      tick: 51,
      ids: [9, 10, 20, 30],
      q: [[9, 0, 0, 0, 0], [3, 3, 3, 3, 3], [20, 7, 0, 0, 0], [4, 4, 4, 4, 4]],
    });
  });

  it("decoding twice gives the same view and leaves the baseline untouched", () => {
    const before = plain(BASE);
    const a = decodePart(rawPart(EXAMPLE), baseMap(), "<u2").view;
    const b = decodePart(rawPart(EXAMPLE), baseMap(), "<u2").view;
    assert.deepEqual(plain(a), plain(b));
    assert.deepEqual(plain(BASE), before);
  });

  it("decodes a part inside a larger buffer (subarray) and from an ArrayBuffer", () => {
    const p = rawPart(EXAMPLE);
    const big = new Uint8Array(p.length + 10);
    big.set(p, 7);
    assert.deepEqual(plain(decodePart(big.subarray(7, 7 + p.length), baseMap(), "<u2").view), EXAMPLE_VIEW);
    assert.deepEqual(plain(decodePart(p.slice().buffer, baseMap(), "<u2").view), EXAMPLE_VIEW);
  });

  it("parsePart splits the sections", () => {
    const f = parsePart(rawPart({ ...EXAMPLE, removed: [S(6)], added: [[S(9), 1, 2, 3, 4, 5]], K: 5 }), "<u2");
    assert.equal(f.header.removedCount, 1);
    assert.equal(f.header.addedCount, 1);
    assert.equal(f.header.keptCount, 5);
    assert.deepEqual(Array.from(f.removedIds), [S(6)]);
    assert.deepEqual(Array.from(f.added.ids), [S(9)]);
    assert.deepEqual(Array.from(f.added.q), [1, 2, 3, 4, 5]);
    assert.deepEqual(Array.from(f.upd), [0x0b]);
    assert.deepEqual(Buffer.from(f.records).toString("hex"), "0532190502fe117f01");
  });
});

// A random but reproducible world: views of ticks, deltas, cuts.
function rng(seed) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
}

function randomView(r, tick, ids, prev, big) {
  const rows = ids.map((id) => {
    const old = prev && prev.get(id);
    if (old && r() < 0.4) return old.slice();
    if (old && r() < 0.8) {
      const row = old.slice();
      row[0] = Math.min(65535, Math.max(0, row[0] + Math.round((r() - 0.5) * (big ? 4000 : 60))));
      row[2] = Math.min(65535, Math.max(0, row[2] + Math.round((r() - 0.5) * 300)));
      row[3] = (row[3] + Math.round((r() - 0.5) * 65535) + 65536) % 65536;
      if (r() < 0.2) row[4] = Math.floor(r() * 256);
      return row;
    }
    return [0, 1, 2].map(() => Math.floor(r() * 65536)).concat([Math.floor(r() * 65536), Math.floor(r() * 256)]);
  });
  return makeView(tick, ids, rows);
}

function randomIds(r, n) {
  const set = new Set();
  while (set.size < n) set.add(((Math.floor(r() * 400) << 16) | Math.floor(r() * 4)) >>> 0);
  return [...set].sort((a, b) => a - b);
}

function rowsById(view) {
  const m = new Map();
  view.ids.forEach((id, i) => m.set(id, Array.from(view.q.subarray(5 * i, 5 * i + 5))));
  return m;
}

function randomCuts(r, maxParts) {
  const n = Math.floor(r() * maxParts);
  const set = new Set();
  for (let i = 0; i < n; i++) set.add(1 + Math.floor(r() * (400 << 16)));
  return [...set].sort((a, b) => a - b);
}

describe("decodePart and SnapshotStore against an independent encoder (random worlds)", () => {
  it("every part decodes against the baseline; the concatenation is the new view", () => {
    const r = rng(12345);
    for (let round = 0; round < 150; round++) {
      const baseIds = randomIds(r, Math.floor(r() * 60));
      const base = randomView(r, 1000 + round, baseIds, null, false);
      const keep = baseIds.filter(() => r() < 0.8);
      const ids = [...new Set([...keep, ...randomIds(r, Math.floor(r() * 20))])].sort((a, b) => a - b);
      const next = randomView(r, 1001 + round + Math.floor(r() * 5), ids, rowsById(base), round % 3 === 0);
      const cuts = randomCuts(r, 6);
      const parts = encodeSnapshot(round % 5 ? base : null, next, { inputAck: round, selfId: ids[0] || 0, cuts });
      const stored = new Map([[base.tick, base]]);
      const got = { ids: [], q: [] };
      parts.forEach((p, i) => {
        const { header, view } = decodePart(p, stored, "<u2");
        assert.equal(header.part, i);
        assert.equal(header.parts, parts.length);
        assert.equal(header.inputAck, round);
        for (const id of view.ids) assert.ok(id >= header.firstId && id <= header.lastId);
        got.ids.push(...view.ids);
        got.q.push(...plain(view).q);
      });
      assert.deepEqual({ tick: next.tick, ...got }, plain(next), `round ${round}`);
    }
  });

  it("the store assembles ticks from parts in order and in reverse order, each a baseline for the next", () => {
    const r = rng(777);
    for (const reverse of [false, true]) {
      const store = new SnapshotStore("<u2");
      let prev = null;
      let ids = randomIds(r, 40);
      for (let tick = 10; tick < 60; tick++) {
        const next = randomView(r, tick, ids, prev && rowsById(prev), false);
        const baseline = store.mirror.tick >= 0 && r() < 0.8 ? store.mirror : null;
        const parts = encodeSnapshot(baseline, next, { inputAck: tick * 3, selfId: 1, cuts: randomCuts(r, 5) });
        const order = reverse ? [...parts].reverse() : parts;
        order.forEach((p, i) => {
          const res = store.receive(p);
          assert.ok(res, `tick ${tick}: part dropped ${JSON.stringify(store.drops)}`);
          assert.equal(res.complete, i === order.length - 1);
          if (!res.complete) assert.equal(store.mirror.tick, tick - 1 < 10 ? -1 : tick - 1);
        });
        assert.deepEqual(plain(store.mirror), plain(next));
        assert.equal(store.header.inputAck, tick * 3);
        assert.equal(store.pending.size, 0);
        prev = next;
        const kept = ids.filter(() => r() < 0.9);
        ids = [...new Set([...kept, ...randomIds(r, Math.floor(r() * 6))])].sort((a, b) => a - b);
      }
      assert.deepEqual(store.drops, {});
    }
  });
});

describe("decodePart: validation (each rule rejects with its reason)", () => {
  const example = (change = {}) => rawPart({ ...EXAMPLE, ...change });

  it("every truncation of a part and one trailing byte are rejected", () => {
    const parts = [
      rawPart(EXAMPLE),
      rawPart({ tick: 3, removed: [], added: [[1, 2, 3, 4, 5, 6]] }),
      ...encodeSnapshot(BASE, makeView(101, [S(1), S(3), S(7)], [[1, 2, 3, 4, 5], [65535, 0, 0, 7, 0], [1, 1, 1, 1, 1]]), {
        cuts: [S(3)],
      }),
    ];
    const escaped = rawPart({ tick: 2, baselineTick: 1, upd: [1], records: Uint8Array.from(deltaRecord([5000, 0, -300, 1, 0])) });
    const escBase = new Map([[1, makeView(1, [7], [[10, 20, 1000, 40, 0]])]]);
    for (const [p, bases] of [...parts.map((p) => [p, baseMap()]), [escaped, escBase]]) {
      decodePart(p, bases, "<u2");
      for (let n = 0; n < p.length; n++) {
        assert.throws(() => decodePart(p.subarray(0, n), bases, "<u2"), ProtocolError, `prefix of ${n}/${p.length}`);
      }
      const longer = new Uint8Array(p.length + 1);
      longer.set(p);
      throwsReason(() => decodePart(longer, bases, "<u2"), "bad_length");
    }
    throwsReason(() => decodePart(new Uint8Array(0), null, "<u2"), "truncated");
    throwsReason(() => decodePart(new Uint8Array(31), null, "<u2"), "truncated");
    throwsReason(() => decodePart(new Uint8Array(65536), null, "<u2"), "oversized");
    throwsReason(() => readPartHeader(new Uint8Array(31)), "truncated");
  });

  it("header: baseline below tick, tick not 0xFFFFFFFF, part below parts, parts >= 1", () => {
    throwsReason(() => decodePart(example({ baselineTick: 101 }), baseMap(), "<u2"), "bad_field");
    throwsReason(() => decodePart(example({ baselineTick: 102 }), baseMap(), "<u2"), "bad_field");
    throwsReason(() => decodePart(rawPart({ tick: NONE }), null, "<u2"), "bad_field");
    const empty = { tick: NONE - 2, ids: new Uint32Array(0), q: new Int32Array(0) };
    assert.equal(decodePart(rawPart({ tick: NONE - 1, baselineTick: NONE - 2 }), new Map([[NONE - 2, empty]]), "<u2").header.tick, NONE - 1);
    throwsReason(() => decodePart(rawPart({ tick: 1, part: 1, parts: 1 }), null, "<u2"), "bad_range");
    throwsReason(() => decodePart(rawPart({ tick: 1, part: 0, parts: 0 }), null, "<u2"), "bad_range");
    throwsReason(() => readPartHeader(rawPart({ tick: 1, part: 2, parts: 2 })), "bad_range");
    // the header is checked before the sections' lengths
    throwsReason(() => decodePart(rawPart({ tick: 1, parts: 0, added: [[1, 0, 0, 0, 0, 0]] }).subarray(0, 32), null, "<u2"), "bad_range");
  });

  it("ranges: first <= last, part 0 starts at 0, the last part ends at 0xFFFFFFFF, ids inside", () => {
    throwsReason(() => decodePart(rawPart({ tick: 1, part: 1, parts: 3, firstId: 10, lastId: 9 }), null, "<u2"), "bad_range");
    throwsReason(() => decodePart(rawPart({ tick: 1, part: 0, parts: 2, firstId: 1, lastId: 9 }), null, "<u2"), "bad_range");
    throwsReason(() => decodePart(rawPart({ tick: 1, part: 1, parts: 2, firstId: 10, lastId: NONE - 1 }), null, "<u2"), "bad_range");
    throwsReason(() => decodePart(rawPart({ tick: 1, part: 0, parts: 1, firstId: 0, lastId: 5 }), null, "<u2"), "bad_range");
    // a middle part may end anywhere
    assert.ok(decodePart(rawPart({ tick: 1, part: 1, parts: 3, firstId: 10, lastId: 10 }), null, "<u2"));
    const mid = { tick: 1, part: 1, parts: 3, firstId: 10, lastId: 20 };
    throwsReason(() => decodePart(rawPart({ ...mid, added: [[21, 0, 0, 0, 0, 0]] }), null, "<u2"), "bad_range");
    throwsReason(() => decodePart(rawPart({ ...mid, added: [[9, 0, 0, 0, 0, 0]] }), null, "<u2"), "bad_range");
    const base = new Map([[0, makeView(0, [5, 15, 25], [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]])]]);
    throwsReason(() => decodePart(rawPart({ ...mid, baselineTick: 0, removed: [25], K: 1, upd: [0] }), base, "<u2"), "bad_range");
    // in range, the same removal is fine
    const ok = decodePart(rawPart({ ...mid, baselineTick: 0, removed: [15], K: 0 }), base, "<u2");
    assert.deepEqual(Array.from(ok.view.ids), []);
  });

  it("ids strictly ascending", () => {
    throwsReason(() => decodePart(rawPart({ tick: 1, added: [[5, 0, 0, 0, 0, 0], [5, 0, 0, 0, 0, 0]] }), null, "<u2"), "unsorted_ids");
    throwsReason(() => decodePart(rawPart({ tick: 1, added: [[6, 0, 0, 0, 0, 0], [5, 0, 0, 0, 0, 0]] }), null, "<u2"), "unsorted_ids");
    throwsReason(() => decodePart(example({ removed: [S(3), S(2)], K: 3, upd: [0, 0, 0], records: [] }), baseMap(), "<u2"), "unsorted_ids");
  });

  it("removed ids must be in the baseline, added ids must not", () => {
    throwsReason(() => decodePart(example({ removed: [S(6)], K: 4, upd: [0, 0, 0, 0], records: [] }), baseMap(), "<u2"), "bad_removed");
    throwsReason(() => decodePart(example({ removed: [S(2) + 1], K: 4, upd: [0, 0, 0, 0], records: [] }), baseMap(), "<u2"), "bad_removed");
    throwsReason(() => decodePart(example({ added: [[S(3), 0, 0, 0, 0, 0]] }), baseMap(), "<u2"), "bad_added");
    // removed and re-added in the same part
    throwsReason(
      () => decodePart(example({ removed: [S(3)], added: [[S(3), 0, 0, 0, 0, 0]], K: 4, upd: [0, 0, 0, 0], records: [] }), baseMap(), "<u2"),
      "bad_added",
    );
    // a full snapshot has no baseline to remove from
    throwsReason(() => decodePart(rawPart({ tick: 1, removed: [4] }), null, "<u2"), "bad_removed");
  });

  it("K must equal the kept count", () => {
    // 5 in the baseline: K 4 or 6 (with a consistent bitmap length) is wrong
    throwsReason(() => decodePart(example({ K: 4, upd: new Uint8Array([0x0b]) }), baseMap(), "<u2"), "bad_kept_count");
    throwsReason(() => decodePart(example({ K: 6, upd: new Uint8Array([0x0b]) }), baseMap(), "<u2"), "bad_kept_count");
    throwsReason(() => decodePart(example({ removed: [S(5)], K: 5, upd: new Uint8Array([0x0b]) }), baseMap(), "<u2"), "bad_kept_count");
    // and the bitmap length follows K: K = 9 needs two bytes
    throwsReason(() => decodePart(example({ K: 9, upd: new Uint8Array([0x0b]), records: [] }), baseMap(), "<u2"), "bad_length");
  });

  it("padding bits of the update bitmap are zero", () => {
    throwsReason(() => decodePart(example({ upd: new Uint8Array([0x0b | 0x20]) }), baseMap(), "<u2"), "bad_padding");
    throwsReason(() => decodePart(example({ upd: new Uint8Array([0x8b]) }), baseMap(), "<u2"), "bad_padding");
    // 8 kept entities have no padding: bit 7 is an entity
    const ids = [1, 2, 3, 4, 5, 6, 7, 8];
    const base = new Map([[1, makeView(1, ids, ids.map(() => [0, 0, 0, 0, 0]))]]);
    const p = rawPart({ tick: 2, baselineTick: 1, K: 8, upd: new Uint8Array([0x80]), records: Uint8Array.from(deltaRecord([1, 0, 0, 0, 0])) });
    assert.deepEqual(plain(decodePart(p, base, "<u2").view).q[7], [1, 0, 0, 0, 0]);
  });

  it("record masks: bits 0-4 non-zero, bits 6-7 clear; wide non-zero, within the mask, present exactly with bit 5", () => {
    const one = (rec) => rawPart({ tick: 2, baselineTick: 1, upd: [1], records: Uint8Array.from(rec) });
    const base = new Map([[1, makeView(1, [7], [[1000, 1000, 1000, 1000, 10]])]]);
    throwsReason(() => decodePart(one([0x00]), base, "<u2"), "bad_mask");
    throwsReason(() => decodePart(one([0x20, 0x01, 0, 1, 0]), base, "<u2"), "bad_mask"); // only the wide flag
    for (const bit of [0x40, 0x80]) throwsReason(() => decodePart(one([0x01 | bit, 2]), base, "<u2"), "bad_mask");
    throwsReason(() => decodePart(one([0x21, 0x00, 2]), base, "<u2"), "bad_mask"); // wide empty
    throwsReason(() => decodePart(one([0x21, 0x02, 2, 0, 0, 0]), base, "<u2"), "bad_mask"); // y wide, y unchanged
    throwsReason(() => decodePart(one([0x23, 0x04, 2, 0, 1, 0, 0]), base, "<u2"), "bad_mask"); // z wide, z unchanged
    for (const bit of [0x20, 0x40, 0x80]) {
      throwsReason(() => decodePart(one([0x21, 0x01 | bit, 0, 1, 0, 0]), base, "<u2"), "bad_mask"); // wide bits 5-7
    }
    assert.deepEqual(plain(decodePart(one([0x21, 0x01, 0, 1, 0, 0]), base, "<u2").view).q[0], [1128, 1000, 1000, 1000, 10]);
    // a mask whose lengths do not add up is a length error first (as in the reference)
    throwsReason(() => decodePart(one([0x21, 0x01, 2]), base, "<u2"), "bad_length");
  });

  it("records: as many as updated entities, ending exactly at the end of the part", () => {
    const base = new Map([[1, makeView(1, [7, 8], [[1000, 1000, 1000, 1000, 10], [5, 5, 5, 5, 5]])]]);
    const two = (upd, rec) => rawPart({ tick: 2, baselineTick: 1, upd, records: Uint8Array.from(rec) });
    throwsReason(() => decodePart(two([1, 1], [0x01, 2]), base, "<u2"), "bad_length");
    throwsReason(() => decodePart(two([1, 0], [0x01, 2, 0x01, 2]), base, "<u2"), "bad_length");
    throwsReason(() => decodePart(two([0, 0], [0x01]), base, "<u2"), "bad_length");
    assert.deepEqual(plain(decodePart(two([0, 1], [0x01, 2]), base, "<u2").view).q[1], [6, 5, 5, 5, 5]);
  });

  it("deltas: no zero, no wide value below 256, yaw within [-32768, 32767]", () => {
    const one = (rec) => rawPart({ tick: 2, baselineTick: 1, upd: [1], records: Uint8Array.from(rec) });
    const base = new Map([[1, makeView(1, [7], [[1000, 1000, 1000, 1000, 10]])]]);
    throwsReason(() => decodePart(one([0x01, 0]), base, "<u2"), "bad_delta");
    throwsReason(() => decodePart(one([0x21, 0x01, 0, 0, 0, 0]), base, "<u2"), "bad_delta");
    throwsReason(() => decodePart(one([0x21, 0x01, 255, 0, 0, 0]), base, "<u2"), "bad_delta");
    throwsReason(() => decodePart(one(deltaRecord([-3, 0, 0, 0, 0], { wide: 1 })), base, "<u2"), "bad_delta");
    assert.equal(plain(decodePart(one([0x21, 0x01, 0, 1, 0, 0]), base, "<u2").view).q[0][0], 1000 + 128);
    throwsReason(() => decodePart(one(deltaRecord([0, 0, 0, 32768, 0])), base, "<u2"), "bad_delta");
    throwsReason(() => decodePart(one(deltaRecord([0, 0, 0, -32769, 0])), base, "<u2"), "bad_delta");
    assert.equal(plain(decodePart(one(deltaRecord([0, 0, 0, 32767, 0])), base, "<u2").view).q[0][3], 1000 + 32767);
    assert.equal(zigzag(-32769), 65537);
    // a bad delta in a later record outranks an out-of-range value in an earlier one (reference order)
    const two = rawPart({ tick: 2, baselineTick: 1, upd: [1, 1], records: Uint8Array.from([...deltaRecord([0, 0, 0, 0, 250]), 0x01, 0]) });
    const base2 = new Map([[1, makeView(1, [7, 8], [[1000, 1000, 1000, 1000, 10], [5, 5, 5, 5, 5]])]]);
    throwsReason(() => decodePart(two, base2, "<u2"), "bad_delta");
  });

  it("resulting values in range: positions 0..steps (or the type's maximum), anim 0..255", () => {
    const one = (d) => rawPart({ tick: 2, baselineTick: 1, upd: [1], records: Uint8Array.from(deltaRecord(d)) });
    const base = new Map([[1, makeView(1, [7], [[0, 65535, 21990, 0, 250]])]]);
    throwsReason(() => decodePart(one([-1, 0, 0, 0, 0]), base, "<u2"), "out_of_range");
    throwsReason(() => decodePart(one([0, 1, 0, 0, 0]), base, "<u2"), "out_of_range");
    throwsReason(() => decodePart(one([0, 0, 0, 0, 6]), base, "<u2"), "out_of_range");
    throwsReason(() => decodePart(one([0, 0, 0, 0, -251]), base, "<u2"), "out_of_range");
    assert.deepEqual(plain(decodePart(one([0, 0, 0, 0, 5]), base, "<u2").view).q[0], [0, 65535, 21990, 0, 255]);
    // With the Welcome's bounds (steps 22000, 6000, 22000) the limits are tighter.
    const Q = new Quantizer([-110, -10, -110], [110, 50, 110], 0.01);
    const qbase = new Map([[1, makeView(1, [7], [[0, 6000, 21990, 0, 0]])]]);
    throwsReason(() => decodePart(one([0, 0, 11, 0, 0]), qbase, Q), "out_of_range");
    throwsReason(() => decodePart(one([0, 1, 0, 0, 0]), qbase, Q), "out_of_range");
    assert.deepEqual(plain(decodePart(one([0, 0, 10, 0, 0]), qbase, Q).view).q[0], [0, 6000, 22000, 0, 0]);
    // added positions too
    throwsReason(() => decodePart(rawPart({ tick: 1, added: [[1, 22001, 0, 0, 0, 0]] }), null, Q), "out_of_range");
    throwsReason(() => decodePart(rawPart({ tick: 1, added: [[1, 0, 6001, 0, 0, 0]] }), null, Q), "out_of_range");
    assert.ok(decodePart(rawPart({ tick: 1, added: [[1, 22000, 6000, 22000, 65535, 255]] }), null, Q));
    throwsReason(() => decodePart(rawPart({ tick: 1, positionSize: 4, added: [[1, 2 ** 31, 0, 0, 0, 0]] }), null, "<u4"), "out_of_range");
  });

  it("at most 65536 entities", () => {
    // 65535 kept and 2 added
    const ids = Uint32Array.from({ length: 65535 }, (_, i) => 10 + i);
    const base = new Map([[1, { tick: 1, ids, q: new Int32Array(65535 * FIELDS) }]]);
    const p = rawPart({
      tick: 2,
      baselineTick: 1,
      K: 65535,
      upd: new Uint8Array(8192),
      added: [[1, 0, 0, 0, 0, 0], [2, 0, 0, 0, 0, 0]],
    });
    throwsReason(() => decodePart(p, base, "<u2"), "too_many_entities");
    const q = rawPart({ tick: 2, baselineTick: 1, K: 65535, upd: new Uint8Array(8192), added: [[1, 0, 0, 0, 0, 0]] });
    assert.equal(decodePart(q, base, "<u2").view.ids.length, 65536);
  });

  it("an unknown baseline tick", () => {
    throwsReason(() => decodePart(rawPart(EXAMPLE), new Map(), "<u2"), "unknown_baseline");
    throwsReason(() => decodePart(rawPart(EXAMPLE), new Map([[99, { ...BASE, tick: 99 }]]), "<u2"), "unknown_baseline");
    throwsReason(() => decodePart(rawPart(EXAMPLE), null, "<u2"), "unknown_baseline");
  });
});

describe("SnapshotStore", () => {
  const world = (tick, n = 30) =>
    makeView(
      tick,
      Array.from({ length: n }, (_, i) => S(i + 1)),
      Array.from({ length: n }, (_, i) => [i * 10 + tick, 5, 7, (tick * 100) % 65536, 1]),
    );
  const CUTS = [S(10), S(20)];
  const snap = (tick, baseline = null, opts = {}) => encodeSnapshot(baseline, world(tick), { selfId: S(1), cuts: CUTS, ...opts });
  const snapshotOf = (store) => ({
    views: [...store.views.keys()],
    pending: [...store.pending.keys()],
    mirror: store.mirror.tick,
    got: [...store.pending.values()].map((e) => e.got),
  });

  it("a tick becomes the mirror only when all its parts are decoded", () => {
    const store = new SnapshotStore("<u2");
    const [p0, p1, p2] = snap(10, null, { inputAck: 4 });
    const r1 = store.receive(p1);
    assert.deepEqual([r1.complete, r1.view, r1.newest], [false, null, false]);
    assert.deepEqual(Array.from(r1.part.ids), Array.from(world(10).ids.slice(9, 19)));
    assert.equal(store.mirror.tick, -1);
    assert.equal(store.header, null);
    assert.equal(store.receive(p2).complete, false);
    assert.equal(store.views.size, 0);
    const r3 = store.receive(p0);
    assert.ok(r3.complete && r3.newest);
    assert.deepEqual(plain(r3.view), plain(world(10)));
    assert.equal(store.mirror, r3.view);
    assert.deepEqual(store.header, { tick: 10, baselineTick: null, inputAck: 4, selfId: S(1), parts: 3 });
    assert.deepEqual(snapshotOf(store), { views: [10], pending: [], mirror: 10, got: [] });
    // the next tick against it, cut elsewhere
    const parts = encodeSnapshot(store.views.get(10), world(11), { cuts: [S(3)], inputAck: 5 });
    assert.equal(store.receive(parts[1]).complete, false);
    assert.ok(store.receive(parts[0]).newest);
    assert.deepEqual(plain(store.mirror), plain(world(11)));
    assert.equal(store.header.baselineTick, 10);
  });

  it("a lost part: the tick never completes, the mirror stays, the next tick repairs", () => {
    const store = new SnapshotStore("<u2");
    for (const p of snap(10)) store.receive(p);
    const [a, , c] = snap(11, store.views.get(10));
    store.receive(a);
    store.receive(c);
    assert.equal(store.mirror.tick, 10);
    for (const p of snap(12, store.views.get(10))) store.receive(p);
    assert.deepEqual(plain(store.mirror), plain(world(12)));
    assert.deepEqual(snapshotOf(store), { views: [10, 12], pending: [], mirror: 12, got: [] });
  });

  it("duplicate parts are harmless, before and after the tick completes", () => {
    const store = new SnapshotStore("<u2");
    const [p0, p1, p2] = snap(10);
    store.receive(p0);
    assert.equal(store.receive(p0), null);
    assert.deepEqual(snapshotOf(store), { views: [], pending: [10], mirror: -1, got: [1] });
    store.receive(p1);
    const done = store.receive(p2);
    assert.ok(done.complete);
    assert.equal(store.receive(p1), null);
    assert.equal(store.mirror, done.view);
    assert.deepEqual(plain(store.mirror), plain(world(10)));
    assert.equal(store.drops.duplicate_part, 2);
  });

  it("a part that disagrees with the parts of its tick is dropped as part_mismatch", () => {
    const store = new SnapshotStore("<u2");
    for (const p of snap(10)) store.receive(p);
    const b10 = store.views.get(10);
    const [p0, p1, p2] = snap(12, b10, { inputAck: 9 });
    store.receive(p1);
    const before = snapshotOf(store);
    const bad = [
      snap(12, null, { inputAck: 9 })[0], // another baseline (full)
      encodeSnapshot(b10, world(12), { selfId: S(1), cuts: [S(10)], inputAck: 9 })[0], // 2 parts, not 3
      snap(12, b10, { inputAck: 8 })[0], // another input_ack
      snap(12, b10, { inputAck: 9, selfId: S(2) })[0], // another self id
      encodeSnapshot(b10, world(12), { selfId: S(1), cuts: [S(9), S(20)], inputAck: 9 })[0], // part 0 not touching part 1
      encodeSnapshot(b10, world(12), { selfId: S(1), cuts: [S(11), S(20)], inputAck: 9 })[0], // overlaps part 1
      encodeSnapshot(b10, world(12), { selfId: S(1), cuts: [S(10), S(21)], inputAck: 9 })[2], // a gap after part 1
      encodeSnapshot(b10, world(12), { selfId: S(1), cuts: [S(10), S(19)], inputAck: 9 })[2], // overlaps part 1
      encodeSnapshot(b10, world(12), { selfId: S(1), cuts: [S(10), S(19)], inputAck: 9 })[1], // part 1 again, other range
    ];
    for (const p of bad) {
      assert.ok(decodePart(p, store.views, "<u2"), "each is a valid part on its own");
      assert.equal(store.receive(p), null);
      assert.deepEqual(snapshotOf(store), before);
    }
    assert.equal(store.drops.part_mismatch, bad.length);
    store.receive(p2);
    assert.ok(store.receive(p0).newest);
    assert.deepEqual(plain(store.mirror), plain(world(12)));
  });

  it("a part outside the parts' order (a gap between non-adjacent parts) is a mismatch", () => {
    const store = new SnapshotStore("<u2");
    const four = encodeSnapshot(null, world(10), { cuts: [S(5), S(10), S(20)] });
    store.receive(four[0]);
    // part 2 claiming ids below part 0's end
    const wrong = rawPart({ tick: 10, part: 2, parts: 4, firstId: 3, lastId: S(20) - 1 });
    assert.equal(store.receive(wrong), null);
    assert.equal(store.drops.part_mismatch, 1);
    for (const p of four.slice(1)) store.receive(p);
    assert.deepEqual(plain(store.mirror), plain(world(10)));
  });

  it("incomplete ticks older than a newly complete one are discarded; an older tick completing late is stored", () => {
    const store = new SnapshotStore("<u2");
    const t10 = snap(10);
    const t11 = snap(11);
    store.receive(t10[0]);
    store.receive(t11[2]);
    for (const p of snap(12)) store.receive(p);
    assert.deepEqual(snapshotOf(store), { views: [12], pending: [], mirror: 12, got: [] });
    // tick 10's part 0 is forgotten: its other parts alone do not complete it
    assert.equal(store.receive(t10[1]).complete, false);
    assert.equal(store.receive(t10[2]).complete, false);
    assert.deepEqual(snapshotOf(store), { views: [12], pending: [10], mirror: 12, got: [2] });
    // with all its parts again, tick 10 completes late: stored (a possible baseline), not the mirror
    const r = store.receive(t10[0]);
    assert.ok(r.complete && !r.newest);
    assert.equal(store.mirror.tick, 12);
    assert.deepEqual(plain(store.views.get(10)), plain(world(10)));
    // so is an older single-part tick
    assert.ok(!store.receive(encodeSnapshot(null, world(11))[0]).newest);
    assert.deepEqual(plain(store.views.get(11)), plain(world(11)));
    // a newer tick's parts stay pending while an older one completes
    store.receive(snap(14)[0]);
    for (const p of snap(13)) store.receive(p);
    assert.deepEqual(snapshotOf(store), { views: [12, 10, 11, 13], pending: [14], mirror: 13, got: [1] });
    assert.deepEqual(store.drops, {});
  });

  it("at most maxPending incomplete ticks; the oldest goes first", () => {
    const store = new SnapshotStore("<u2", 64, 8);
    for (let t = 20; t < 29; t++) store.receive(snap(t)[1]);
    assert.deepEqual(snapshotOf(store).pending, [21, 22, 23, 24, 25, 26, 27, 28]);
    assert.equal(store.drops.pending_overflow, 1);
    // a part of a tick older than all pending ones does not evict a newer one
    assert.equal(store.receive(snap(15)[1]), null);
    assert.deepEqual(snapshotOf(store).pending, [21, 22, 23, 24, 25, 26, 27, 28]);
    assert.equal(store.drops.pending_overflow, 1);
    assert.equal(store.drops.stale_part, 1);
    const t28 = snap(28);
    store.receive(t28[0]);
    store.receive(t28[2]);
    assert.equal(store.mirror.tick, 28);
    assert.equal(store.pending.size, 0);
  });

  it("keeps only the newest `keep` ticks; a tick can be a baseline while kept", () => {
    const store = new SnapshotStore("<u2", 4);
    for (let t = 0; t < 10; t++) for (const p of snap(t)) assert.ok(store.receive(p));
    assert.deepEqual([...store.views.keys()].sort((a, b) => a - b), [6, 7, 8, 9]);
    assert.equal(store.mirror.tick, 9);
    const old = snap(10, world(5));
    assert.equal(store.receive(old[0]), null);
    assert.equal(store.drops.unknown_baseline, 1);
    for (const p of snap(10, store.views.get(6))) store.receive(p);
    assert.deepEqual(plain(store.mirror), plain(world(10)));
  });

  it("malformed parts and unknown baselines are counted by reason and change nothing", () => {
    const store = new SnapshotStore("<u2");
    for (const p of snap(10)) store.receive(p);
    store.receive(snap(11, store.views.get(10))[0]);
    const before = snapshotOf(store);
    const mirror = store.mirror;
    const good = snap(12, store.views.get(10))[1];
    const broken = good.slice();
    broken[30] += 1; // K
    assert.equal(store.receive(broken), null);
    assert.equal(store.receive(good.subarray(0, 40)), null);
    assert.equal(store.receive(snap(12, world(7))[1]), null);
    assert.deepEqual(store.drops, { bad_kept_count: 1, bad_length: 1, unknown_baseline: 1 });
    assert.deepEqual(snapshotOf(store), before);
    assert.equal(store.mirror, mirror);
  });

  it("more than 65536 entities over all parts of a tick drops the tick", () => {
    // 14 parts of 4700 entities each (a part holds at most about 5000 added records)
    const store = new SnapshotStore("<u2");
    const parts = 14;
    for (let part = 0; part < parts; part++) {
      const p = rawPart({
        tick: 3,
        part,
        parts,
        firstId: part * 10000,
        lastId: part === parts - 1 ? NONE : part * 10000 + 9999,
        added: Array.from({ length: 4700 }, (_, i) => [part * 10000 + i, 0, 0, 0, 0, 0]),
      });
      const r = store.receive(p);
      if (part < parts - 1) assert.ok(r && !r.complete);
      else assert.equal(r, null);
    }
    assert.equal(store.drops.too_many_entities, 1);
    assert.equal(store.mirror.tick, -1);
    assert.equal(store.views.size, 0);
    assert.equal(store.pending.size, 0);
  });

  it("bitmap helper sanity: least significant bit first", () => {
    assert.deepEqual(Array.from(bitmap([1, 1, 0, 1, 0])), [0x0b]);
  });
});
