// Prediction with reconciliation, and the adaptive interpolation buffer.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { quantizeYaw, dequantizeYaw, Quantizer } from "../src/protocol/quantize.js";
import { Interpolator } from "../src/world/interpolate.js";
import { Predictor } from "../src/world/predict.js";

const W = { maxSpeed: 5, tickRate: 20, mins: [-110, -10, -110], maxs: [110, 50, 110] };
const inp = (seq, moveX, moveZ) => ({ seq, moveX, moveZ, yaw: 0, anim: 1, flags: 0 });

describe("Predictor", () => {
  it("moves intent × max_speed × dt per input, diagonal scaled to 1, clamped to the bounds", () => {
    const p = new Predictor(W);
    assert.deepEqual(p.step([0, 0, 0], inp(0, 127, 0)), [0.25, 0, 0]);
    const d = p.step([0, 0, 0], inp(0, 127, 127));
    assert.ok(Math.abs(Math.hypot(d[0], d[2]) - 0.25) < 1e-12);
    assert.deepEqual(p.step([109.9, 1, -109.9], inp(0, 127, -127)), [110, 1, -110]);
  });
  it("reconciles: drops acknowledged inputs, replays the rest on the server position", () => {
    const p = new Predictor(W);
    for (let s = 0; s < 6; s++) p.record(inp(s, 127, 0));
    const pos = p.reconcile([1, 0, 0], 3); // inputs 4 and 5 still pending
    assert.deepEqual(p.pending.map((i) => i.seq), [4, 5]);
    assert.ok(Math.abs(pos[0] - 1.5) < 1e-12);
    assert.deepEqual(p.reconcile([2, 0, 0], 5), [2, 0, 0]);
    assert.equal(p.pending.length, 0);
    p.record(inp(6, 0, 127));
    assert.deepEqual(p.reconcile([0, 0, 0], -1), [0, 0, 0.25]);
  });
});

describe("quantization", () => {
  it("steps and dtype follow the SPEC", () => {
    const q = new Quantizer([-110, -10, -110], [110, 50, 110], 0.01);
    assert.deepEqual(q.steps, [22000, 6000, 22000]);
    assert.equal(q.positionDtype, "<u2");
    assert.equal(new Quantizer([-400, 0, 0], [400, 1, 1], 0.01).positionDtype, "<u4");
    assert.ok(Math.abs(q.dequantizeAxis(0, q.quantizeAxis(0, 12.345)) - 12.35) < 1e-9);
    assert.equal(q.quantizeAxis(0, 1e9), 22000);
  });
  it("yaw wraps", () => {
    assert.equal(quantizeYaw(0), 0);
    assert.equal(quantizeYaw(Math.PI / 2), 16384);
    assert.equal(quantizeYaw(-Math.PI / 2), 49152);
    assert.equal(quantizeYaw(2 * Math.PI - 1e-7), 0);
    assert.ok(Math.abs(dequantizeYaw(16384) - Math.PI / 2) < 1e-12);
  });
});

function states(x, yaw = 0) {
  return new Map([[7, { x, y: 0, z: 0, yaw, anim: 1 }]]);
}

describe("Interpolator", () => {
  it("samples between snapshots, 2-3 intervals behind, with steady arrivals", () => {
    const ip = new Interpolator(20);
    for (let k = 0; k < 40; k++) ip.push(100 + k, 10 + k * 0.05 + 0.02, states(k));
    assert.ok(ip.delay >= 0.1 - 1e-9 && ip.delay <= 0.15 + 1e-9, `delay ${ip.delay}`);
    const now = 10 + 39 * 0.05 + 0.02;
    const s = ip.sample(now).get(7);
    const expected = 39 - ip.delay / 0.05;
    assert.ok(Math.abs(s.x - expected) < 0.05, `${s.x} vs ${expected}`);
  });
  it("raises the delay when arrivals jitter", () => {
    const ip = new Interpolator(20);
    let seed = 1;
    const rnd = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    for (let k = 0; k < 200; k++) ip.push(k, k * 0.05 + rnd() * 0.08, states(k));
    assert.ok(ip.jitter > 0.01, `jitter ${ip.jitter}`);
    assert.ok(ip.delay > 0.12, `delay ${ip.delay}`);
    assert.ok(ip.delay <= 0.3 + 1e-9);
  });
  it("yaw takes the shorter arc; late and duplicate snapshots are ordered", () => {
    const ip = new Interpolator(20);
    ip.push(1, 1.0, states(0, 6.2));
    ip.push(3, 1.1, states(2, 0.2));
    ip.push(2, 1.2, states(1, 0.0)); // late
    ip.push(2, 1.3, states(99, 0.0)); // duplicate tick: ignored
    assert.deepEqual(ip.frames.map((f) => f.tick), [1, 2, 3]);
    ip.offset = 0;
    ip.delay = 0;
    const s = ip.sample(0.125).get(7);
    assert.ok(Math.abs(s.x - 1.5) < 1e-9);
    assert.ok(s.yaw < 0.2 && s.yaw > 0, `yaw ${s.yaw}`);
  });
});
