// The own avatar's walls (src/world/walls.js) against the server's: vectors made by
// worldserver/worlds/make_collision_vectors.py from worldserver/collision.py.
import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";

import { Walls, wallSegments } from "../src/world/walls.js";
import { Predictor } from "../src/world/predict.js";

const vectors = JSON.parse(
  readFileSync(new URL("../../../worldserver/worlds/collision_vectors.json", import.meta.url), "utf8"),
);

describe("walls (prediction) match the server's collision", () => {
  it("every move of every vector lands on the server's point", () => {
    const walls = Object.fromEntries(Object.entries(vectors.worlds).map(([id, doc]) => [id, new Walls(doc)]));
    let checked = 0;
    let touched = 0;
    for (const c of vectors.cases) {
      const w = walls[c.world];
      let [x, z] = c.start;
      c.moves.forEach(([dx, dz], i) => {
        [x, z] = w.move(x, z, dx, dz);
        const [ex, ez] = c.expected[i];
        assert.ok(Math.abs(x - ex) <= vectors.tolerance && Math.abs(z - ez) <= vectors.tolerance,
          `${c.world} case from ${c.start} move ${i}: ${[x, z]} != ${[ex, ez]}`);
        assert.ok(w.penetration(x, z) <= 1e-6);
        if (Math.hypot(x - (ex - dx), z - (ez - dz)) > 1e-6) touched++;
        checked++;
      });
    }
    assert.ok(checked >= 2000 && touched > 0);
  });

  it("a world document gives the server's capsules (walls, then obstacles' edges)", () => {
    const { segs, half } = wallSegments(vectors.worlds.halls);
    assert.equal(segs.length, 30);
    assert.equal(half.filter((h) => h === 0).length, 16); // 4 benches x 4 edges
  });

  it("the predictor stops at a wall instead of walking through it", () => {
    const doc = vectors.worlds.gallery;
    const p = new Predictor({ maxSpeed: 5, tickRate: 20, mins: [-10, 0, -10], maxs: [10, 50, 10] }, new Walls(doc));
    let pos = [0, 0, 8];
    for (let i = 0; i < 40; i++) pos = p.step(pos, { seq: i, moveX: 0, moveZ: 127, yaw: 0, anim: 1 });
    assert.ok(Math.abs(pos[2] - (10 - 0.15 - 0.35)) < 1e-5, `${pos}`);
  });
});
