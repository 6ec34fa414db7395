// The world document kept current while the page runs (src/world/live.js): what changed
// between two versions, and one fetch per new version.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";

import { WorldWatcher, plaqueText, worldChanges } from "../src/world/live.js";

const GALLERY = JSON.parse(readFileSync(new URL("../../../worldserver/worlds/collision_vectors.json", import.meta.url), "utf8")).worlds.gallery;
const copy = (doc) => JSON.parse(JSON.stringify(doc));

describe("worldChanges", () => {
  it("names the slots whose image or placement changed", () => {
    const after = copy(GALLERY);
    after.version = 2;
    after.pictures[1].image = "hung-gallery-south-2-abc.png";
    after.pictures[4].size = [1, 1];
    const changes = worldChanges(GALLERY, after);
    assert.equal(changes.rebuild, false);
    assert.deepEqual(changes.pictures.map((p) => p.id), [GALLERY.pictures[1].id, GALLERY.pictures[4].id]);
    assert.equal(changes.pictures[0].image, "hung-gallery-south-2-abc.png");
    assert.deepEqual(worldChanges(GALLERY, copy(GALLERY)), { rebuild: false, pictures: [] });
  });
  it("rebuilds for new walls, obstacles, floor, style, radius or slots", () => {
    const edits = [
      (d) => d.walls[0].points[0][0] += 1,
      (d) => d.obstacles.pop(),
      (d) => (d.floor.max = [12, 12]),
      (d) => (d.style.preset = "night"),
      (d) => (d.entity_radius = 0.4),
      (d) => d.pictures.pop(),
    ];
    for (const edit of edits) {
      const after = copy(GALLERY);
      edit(after);
      assert.deepEqual(worldChanges(GALLERY, after), { rebuild: true, pictures: [] }, String(edit));
    }
  });
});

describe("plaqueText", () => {
  it("says a slot's title; a file's picture without one its file name; a hung one without one nothing", () => {
    const hung = "hung-gallery-north-1-AbCdEfGhIjKlMnOpQrStUv.png";
    assert.equal(plaqueText({ image: hung, title: "Harbour at dawn" }), "Harbour at dawn");
    assert.equal(plaqueText({ image: hung, title: "" }), ""); // no plaque: its name is random
    assert.equal(plaqueText({ image: "glowing-checkerboard.png", title: "" }), "glowing checkerboard"); // as before
    assert.equal(plaqueText({ image: "sunset_over-sea.JPG" }), "sunset over sea"); // a document without titles
    assert.equal(plaqueText({ image: "sunset_over-sea.png", title: "At sea" }), "At sea"); // the file's own title
    assert.equal(plaqueText({ image: "", title: "" }), ""); // an empty frame
  });
  it("a new title alone is a change of the slot", () => {
    const before = copy(GALLERY);
    for (const p of before.pictures) assert.equal(p.title, ""); // the shipped gallery titles none
    const after = copy(GALLERY);
    after.version = 2;
    after.pictures[0].title = "Named";
    assert.deepEqual(worldChanges(before, after).pictures.map((p) => p.id), [GALLERY.pictures[0].id]);
  });
});

describe("WorldWatcher", () => {
  it("fetches once per new version and applies what changed; a failure is tried again", async () => {
    const served = copy(GALLERY);
    served.version = 2;
    served.pictures[0].image = "";
    let fetches = 0;
    let fail = true;
    const applied = [];
    const watcher = new WorldWatcher({
      doc: copy(GALLERY),
      fetchDoc: async () => {
        fetches++;
        if (fail) throw new Error("offline");
        return copy(served);
      },
      apply: (doc, changes) => applied.push([doc.version, changes]),
    });
    assert.equal(watcher.version, 1);
    await watcher.note(1); // the version shown: nothing to fetch
    await watcher.note(undefined); // an old server without versions
    assert.equal(fetches, 0);
    await watcher.note(2);
    assert.equal(fetches, 1);
    assert.equal(watcher.version, 1); // the fetch failed: still the old one
    fail = false;
    const first = watcher.note(2);
    const second = watcher.note(2); // while one is under way: no second fetch
    await Promise.all([first, second]);
    assert.equal(fetches, 2);
    assert.equal(watcher.version, 2);
    assert.equal(watcher.updates, 1);
    assert.deepEqual(applied.map(([v, c]) => [v, c.rebuild, c.pictures.map((p) => [p.id, p.image])]), [[2, false, [[GALLERY.pictures[0].id, ""]]]]);
    await watcher.note(2);
    assert.equal(fetches, 2);
    served.id = "halls"; // another world's document is never shown here
    served.version = 3;
    await watcher.note(3);
    assert.equal(watcher.version, 2);
  });
});
