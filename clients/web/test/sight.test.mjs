// Lines of sight against the walls (src/world/rays.js), the third-person camera that stays in
// front of them (src/scene/camera.js) and the choice of name tags (src/scene/labels.js), with
// the shipped worlds' documents from worldserver/worlds/collision_vectors.json.
import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";

import { CAMERA_DISTANCE, CAMERA_PAD, FollowCamera, cameraDirection } from "../src/scene/camera.js";
import { PerspectiveCamera } from "three";

import { boxesOverlap, NameTags, placeTags, selectTags, tagCap, TAG_FAR } from "../src/scene/labels.js";
import { capsuleInterval, WallRays } from "../src/world/rays.js";

const { worlds } = JSON.parse(
  readFileSync(new URL("../../../worldserver/worlds/collision_vectors.json", import.meta.url), "utf8"),
);

/** Distance from (x, z) to the segment (ax, az)-(bx, bz). */
function segDist(x, z, [ax, az, bx, bz]) {
  const dx = bx - ax;
  const dz = bz - az;
  const l2 = dx * dx + dz * dz;
  const t = l2 ? Math.min(Math.max(((x - ax) * dx + (z - az) * dz) / l2, 0), 1) : 0;
  return Math.hypot(x - ax - t * dx, z - az - t * dz);
}

/** A seeded generator (mulberry32), so failures repeat. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe("lines of sight against walls", () => {
  it("a line through a capsule enters and leaves it where the distance equals the radius", () => {
    const r = rng(7);
    let hits = 0;
    for (let i = 0; i < 2000; i++) {
      const seg = [r() * 10 - 5, r() * 10 - 5, r() * 10 - 5, r() * 10 - 5];
      const rad = r() * 1.5;
      const p = [r() * 20 - 10, r() * 20 - 10];
      const d = [r() * 20 - 10, r() * 20 - 10];
      const iv = capsuleInterval(p[0], p[1], d[0], d[1], ...seg, rad);
      // brute force: sample the line finely
      let inside = 0;
      for (let k = -400; k <= 400; k++) {
        const t = k / 100;
        if (segDist(p[0] + t * d[0], p[1] + t * d[1], seg) < rad - 1e-6) inside++;
      }
      if (!iv) {
        assert.equal(inside, 0, `line ${p} ${d} misses ${seg} r=${rad} but samples are inside`);
        continue;
      }
      hits++;
      for (const t of iv) assert.ok(Math.abs(segDist(p[0] + t * d[0], p[1] + t * d[1], seg) - rad) < 1e-6);
      const mid = (iv[0] + iv[1]) / 2;
      assert.ok(segDist(p[0] + mid * d[0], p[1] + mid * d[1], seg) <= rad + 1e-9);
    }
    assert.ok(hits > 200);
  });

  it("the gallery's walls block a line out of the room, not one inside it, and not one over a bench", () => {
    const rays = new WallRays(worlds.gallery);
    assert.equal(rays.blocked({ x: 0, y: 1.6, z: 0 }, { x: 5, y: 2, z: 5 }), false);
    assert.equal(rays.blocked({ x: 0, y: 1.6, z: 0 }, { x: 0, y: 2, z: 12 }), true);
    // the wall is 5 m high: a line from above it to far outside passes over it
    assert.equal(rays.blocked({ x: 0, y: 6, z: 0 }, { x: 0, y: 6, z: 12 }), false);
    // a bench (0.45 m) at x = -4: a line at head height passes over it, one at knee height not
    assert.equal(rays.blocked({ x: -8, y: 1.6, z: 0 }, { x: 0, y: 1.6, z: 0 }), false);
    assert.equal(rays.blocked({ x: -8, y: 0.3, z: 0 }, { x: 0, y: 0.3, z: 0 }), true);
    // the north wall's inner face is at z = 9.85: the line reaches it at that fraction
    const t = rays.firstHit({ x: 0, y: 1.6, z: 0 }, { x: 0, y: 1.6, z: 20 });
    assert.ok(Math.abs(t * 20 - 9.85) < 1e-9, t);
    const padded = rays.firstHit({ x: 0, y: 1.6, z: 0 }, { x: 0, y: 1.6, z: 20 }, 0.25);
    assert.ok(Math.abs(padded * 20 - 9.6) < 1e-9, padded);
  });

  it("a line coming down onto a wall's top is stopped at the top", () => {
    const rays = new WallRays(worlds.gallery);
    // from 7 m inside the room down to 3 m outside: crosses the wall line (z = 10) at y = 5
    const t = rays.firstHit({ x: 0, y: 7, z: 8 }, { x: 0, y: 3, z: 12 });
    assert.ok(t !== null);
    assert.ok(Math.abs(7 - 4 * t - 5) < 1e-9, t); // stopped where the line reaches the top
  });

  it("in the halls a room's wall hides the corridor except through its doorway", () => {
    const rays = new WallRays(worlds.halls);
    const corner = { x: -29, y: 1.6, z: 22 };
    assert.equal(rays.blocked(corner, { x: -25, y: 2.25, z: 0 }), true); // corridor, behind z = 3
    assert.equal(rays.blocked(corner, { x: -10, y: 2.25, z: 15 }), false); // same room
    // through the doorway (x -16.5..-13.5 at z = 3)
    assert.equal(rays.blocked({ x: -15, y: 1.6, z: 10 }, { x: -15, y: 2.25, z: -1 }), false);
  });

  it("a line that starts inside a padded wall is stopped when it goes deeper, not when it leaves", () => {
    const rays = new WallRays(worlds.gallery);
    const from = { x: 0, y: 1.6, z: 9.7 }; // 0.15 m from the face, within a 0.25 pad
    assert.equal(rays.firstHit(from, { x: 0, y: 1.6, z: 12 }, 0.25), 0);
    assert.equal(rays.firstHit(from, { x: 0, y: 1.6, z: 0 }, 0.25), null);
  });
});

describe("the third-person camera", () => {
  /** The camera settled (many frames) for an avatar's head, yaw and pitch. */
  function settle(cam, head, yaw, pitch = 0.35, frames = 240) {
    let p = null;
    for (let i = 0; i < frames; i++) {
      p = cam.step(head, yaw, pitch, 1 / 60);
      checkInside(cam, head, p);
    }
    return p;
  }

  function checkInside(cam, head, p) {
    // never behind a wall as seen from the head, never within CAMERA_PAD of one
    for (const w of cam.rays.walls) {
      const d = segDist(p.x, p.z, [w.ax, w.az, w.bx, w.bz]);
      if (p.y <= w.height + CAMERA_PAD) assert.ok(d >= w.half + CAMERA_PAD - 1e-6, `camera ${JSON.stringify(p)} in a wall`);
    }
    assert.equal(cam.rays.blocked(head, p), false, `a wall between the head and the camera ${JSON.stringify(p)}`);
  }

  it("with nothing in the way it sits CAMERA_DISTANCE behind the head", () => {
    const cam = new FollowCamera({ rays: new WallRays(worlds.gallery) });
    const head = { x: 0, y: 1.6, z: 0 };
    const p = settle(cam, head, 0.3);
    const dir = cameraDirection(0.3, 0.35);
    assert.ok(Math.hypot(p.x - (head.x + dir.x * CAMERA_DISTANCE), p.y - (head.y + dir.y * CAMERA_DISTANCE), p.z - (head.z + dir.z * CAMERA_DISTANCE)) < 1e-3);
    assert.equal(cam.blocked, false);
  });

  it("in a corner of the gallery, at every yaw, it stays inside the room in front of the walls", () => {
    const cam = new FollowCamera({ rays: new WallRays(worlds.gallery) });
    const head = { x: 9.5, y: 1.6, z: 9.5 }; // the avatar against the north-east corner
    let pulled = 0;
    for (let k = 0; k < 16; k++) {
      const yaw = (k / 16) * 2 * Math.PI;
      const p = settle(cam, head, yaw, 0.35, 90);
      assert.ok(p.x < 10 - 0.15 - CAMERA_PAD + 1e-6 && p.z < 10 - 0.15 - CAMERA_PAD + 1e-6, JSON.stringify(p));
      if (cam.blocked) pulled++;
    }
    assert.ok(pulled >= 8, `pulled in at ${pulled} of 16 yaws`);
  });

  it("turning quickly never carries the smoothed camera through a wall", () => {
    const cam = new FollowCamera({ rays: new WallRays(worlds.halls) });
    const r = rng(11);
    const head = { x: -15, y: 1.6, z: 4 }; // in a doorway of the halls
    let yaw = 0;
    for (let i = 0; i < 3000; i++) {
      yaw += (r() - 0.5) * 1.5;
      const pitch = -0.2 + r() * 1.0;
      const p = cam.step(head, yaw, pitch, (1 + r() * 4) / 60);
      checkInside(cam, head, p);
    }
  });

  it("the distance comes back out when the wall is gone", () => {
    const cam = new FollowCamera({ rays: new WallRays(worlds.gallery) });
    settle(cam, { x: 0, y: 1.6, z: -9.5 }, 0); // facing north against the south wall
    assert.ok(cam.current < 0.5, cam.current);
    assert.equal(cam.insideAvatar({ x: 0, y: 1.6, z: -9.5 }), true); // the own avatar is hidden
    const p = settle(cam, { x: 0, y: 1.6, z: 0 }, 0, 0.35, 600);
    assert.ok(Math.abs(Math.hypot(p.x, p.y - 1.6, p.z) - CAMERA_DISTANCE) < 1e-3);
    assert.equal(cam.insideAvatar({ x: 0, y: 1.6, z: 0 }), false);
  });

  it("without walls (an open world) it is never pulled in", () => {
    const cam = new FollowCamera({ rays: null });
    let p = null;
    for (let i = 0; i < 120; i++) p = cam.step({ x: 50, y: 1.6, z: 50 }, 1, 0.35, 1 / 60);
    assert.equal(cam.blocked, false);
    assert.ok(Math.abs(Math.hypot(p.x - 50, p.y - 1.6, p.z - 50) - CAMERA_DISTANCE) < 1e-3);
  });
});

describe("which name tags are shown", () => {
  const camera = { x: 0, y: 4, z: -6 };
  const crowd = (n, r) => Array.from({ length: n }, (_, i) => ({ id: i + 1, x: r() * 20 - 10, y: 2.25, z: r() * 20 - 10, inView: true }));

  it("a crowd shows at most the cap, nearest first, and the own tag always", () => {
    const cands = crowd(70, rng(3));
    cands.push({ id: 999, x: 0, y: 2.25, z: 0, self: true, inView: true });
    const { shown, hidden } = selectTags(cands, { camera, cap: 12 });
    assert.equal(shown.size, 12);
    assert.ok(shown.has(999));
    const dist = (c) => Math.hypot(c.x - camera.x, c.y - camera.y, c.z - camera.z);
    const farthestShown = Math.max(...cands.filter((c) => shown.has(c.id) && !c.self).map(dist));
    for (const c of cands) if (hidden.get(c.id) === "cap") assert.ok(dist(c) >= farthestShown);
    assert.equal(shown.size + hidden.size, cands.length);
  });

  it("speakers come before the nearest, at any distance", () => {
    const cands = crowd(40, rng(5));
    cands.push({ id: 500, x: 0, y: 2.25, z: 60, speaking: true, inView: true }); // 66 m away
    const { shown } = selectTags(cands, { camera, cap: 8 });
    assert.equal(shown.get(500), 1);
    assert.equal(shown.size, 8);
  });

  it("tags behind a wall, out of view or beyond TAG_FAR are hidden, with the reason", () => {
    const rays = new WallRays(worlds.halls);
    const eye = { x: -20, y: 3, z: 15 }; // in the north-west room
    const cands = [
      { id: 1, x: -20, y: 2.25, z: 10, inView: true },
      { id: 2, x: -20, y: 2.25, z: 0, inView: true }, // corridor: behind the z = 3 wall
      { id: 3, x: -20, y: 2.25, z: 0, inView: true, speaking: true }, // speaking, still behind it
      { id: 4, x: -25, y: 2.25, z: 12, inView: false },
      { id: 5, x: -20 + TAG_FAR + 1, y: 2.25, z: 15, inView: true }, // beyond the inner wall too
      { id: 6, x: -5, y: 2.25, z: 20, inView: true },
    ];
    const { shown, hidden } = selectTags(cands, { camera: eye, cap: 10, blocked: (a, b) => rays.blocked(a, b) });
    assert.deepEqual([...shown.keys()].sort(), [1, 6]);
    assert.equal(hidden.get(2), "wall");
    assert.equal(hidden.get(3), "wall");
    assert.equal(hidden.get(4), "view");
    assert.equal(hidden.get(5), "far");
  });

  it("tags fade with distance: full up close, fainter further, gone at TAG_FAR", () => {
    const at = (z) => ({ id: z, x: 0, y: 4, z: -6 + z, inView: true });
    const { shown, hidden } = selectTags([at(5), at(15), at(25), at(TAG_FAR + 0.5)], { camera, cap: 10 });
    assert.equal(shown.get(5), 1);
    assert.ok(shown.get(15) < 1 && shown.get(15) > shown.get(25));
    assert.equal(hidden.get(TAG_FAR + 0.5), "far");
  });

  it("a tag shown last frame keeps its place against one barely nearer (no flicker)", () => {
    const a = { id: 1, x: 0, y: 4, z: 4, inView: true }; // 10 m
    const b = { id: 2, x: 0, y: 4, z: 3.6, inView: true }; // 9.6 m
    assert.deepEqual([...selectTags([a, b], { camera, cap: 1 }).shown.keys()], [2]);
    assert.deepEqual([...selectTags([a, b], { camera, cap: 1, previous: new Set([1]) }).shown.keys()], [1]);
  });

  it("the cap follows the screen: a phone shows fewer than a desktop", () => {
    assert.equal(tagCap(412, 915), 12);
    assert.equal(tagCap(960, 600), 15);
    assert.equal(tagCap(320, 480), 8);
    assert.equal(tagCap(3840, 2160), 18);
  });

  it("on screen, tags under a panel or covering a better-ranked tag are left out", () => {
    const box = (x, y) => ({ left: x, top: y, right: x + 100, bottom: y + 20 });
    const chat = { left: 600, top: 80, right: 960, bottom: 600 };
    const placed = placeTags(
      [
        { id: 1, box: box(100, 100) },
        { id: 2, box: box(150, 105) }, // half over tag 1: crowded
        { id: 3, box: box(190, 117) }, // only its edge over tag 1 (within the slack): shown
        { id: 4, box: box(550, 300) }, // reaches under the chat panel
        { id: 5, box: box(100, 130) },
      ],
      [chat],
    );
    assert.deepEqual(Object.fromEntries(placed), { 1: "", 2: "crowded", 3: "", 4: "panel", 5: "" });
  });

  it("boxes overlap only when they share area", () => {
    const a = { left: 0, top: 0, right: 10, bottom: 10 };
    assert.equal(boxesOverlap(a, { left: 5, top: 5, right: 15, bottom: 15 }), true);
    assert.equal(boxesOverlap(a, { left: 10, top: 0, right: 20, bottom: 10 }), false);
    assert.equal(boxesOverlap(a, { left: 0, top: 11, right: 10, bottom: 20 }), false);
  });
});

describe("the name tags of a frame", () => {
  /** An avatar as scene/avatars.js makes it, without the DOM: what NameTags reads and sets. */
  const avatar = (id, x, z) => ({
    id, name: `p${id}`, leaving: false, fade: 1,
    group: { visible: true, position: { x, y: 0, z }, scale: { y: 1 } },
    label: { visible: true, position: { y: 2.25 } },
    labelEl: { style: {}, offsetWidth: 60, offsetHeight: 19 },
  });

  it("in the halls: through the doorway yes, through the wall no, under the chat panel no", () => {
    const camera = new PerspectiveCamera(60, 960 / 600, 0.1, 400);
    camera.position.set(-5, 3, 13); // in the north-west room, looking east at its doorway
    camera.lookAt(5, 2, 13);
    const list = [
      avatar(1, -3, 13), // the own avatar
      avatar(2, -2, 11), // in the room
      avatar(3, 5, 9), // in the north-east room, behind the wall at x = 0
      avatar(4, 5, 13.5), // in the north-east room, seen through the doorway
      avatar(5, -10, 13), // behind the camera
      avatar(6, -1, 16), // in the room, far right: under the chat panel
      { ...avatar(7, -2, 12), leaving: true }, // fading out
    ];
    const avatars = { avatars: new Map(list.map((a) => [a.id, a])) };
    const chat = { isConnected: true, hidden: false, getBoundingClientRect: () => ({ left: 600, top: 0, right: 960, bottom: 600, width: 360, height: 600 }) };
    const folded = { isConnected: true, hidden: true, getBoundingClientRect: () => ({ left: 0, top: 0, right: 960, bottom: 600, width: 960, height: 600 }) };
    const bubble = (id) => ({ entityId: id, object: { visible: true } });
    const bubbles = { bubbles: new Map([[2, bubble(2)], [3, bubble(3)]]) };
    const tags = new NameTags({ rays: new WallRays(worlds.halls), panels: () => [chat, folded, null] });
    tags.update({ avatars, camera, selfId: 1, bubbles, speaking: new Set([3]), width: 960, height: 600 });
    const by = Object.fromEntries(tags.list().map((t) => [t.id, t]));
    assert.deepEqual(Object.fromEntries(tags.list().map((t) => [t.id, t.reason])), { 1: "", 2: "", 3: "wall", 4: "", 5: "view", 6: "panel", 7: "leaving" });
    for (const a of list) assert.equal(a.label.visible, by[a.id].shown, `tag ${a.id}`);
    assert.equal(list[3].labelEl.style.opacity, "1");
    assert.ok(by[6].sx > 600, by[6].sx); // it was under the panel indeed
    assert.equal(bubbles.bubbles.get(2).object.visible, true);
    assert.equal(bubbles.bubbles.get(3).object.visible, false); // a speech bubble behind the wall
    assert.equal(tags.cap, 15);
    assert.deepEqual(tags.camera, { x: -5, y: 3, z: 13 });
  });
});
