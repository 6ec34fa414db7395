// The phone layout's pure parts: the touch stick's walking intent (src/ui/touch.js), the
// field of view, the unread badge and the window checks of src/ui/layout.js (a plain object
// stands for the window).
import { strict as assert } from "node:assert";
import { describe, it } from "node:test";

import { badgeText, countsAsUnread, debugMode, fieldOfView, smallScreen, SMALL_SCREEN } from "../src/ui/layout.js";
import { DEAD_ZONE, stickVector, touchScreen } from "../src/ui/touch.js";

const near = (a, b, eps = 1e-9) => Math.abs(a - b) < eps;

/** A stand-in window: its URL's query, the media queries that match, its touch points. */
function fakeWindow({ search = "", matches = [], touchPoints = 0 } = {}) {
  return {
    location: { search },
    matchMedia: (q) => ({ matches: matches.includes(q) }),
    navigator: { maxTouchPoints: touchPoints },
  };
}

describe("the touch stick", () => {
  it("pushed up walks forward, sideways strafes, at the push's length", () => {
    const r = 60;
    assert.deepEqual(stickVector(0, -r, r), { forward: 1, right: 0 });
    const down = stickVector(0, r * 2, r); // beyond the rim: full speed backwards
    assert.ok(near(down.forward, -1) && near(down.right, 0));
    const side = stickVector(r, 0, r);
    assert.ok(near(side.forward, 0) && near(side.right, 1));
    const half = stickVector(0, -r * (DEAD_ZONE + (1 - DEAD_ZONE) / 2), r);
    assert.ok(near(half.forward, 0.5), JSON.stringify(half));
    const diag = stickVector(r, -r, r);
    assert.ok(near(Math.hypot(diag.forward, diag.right), 1) && near(diag.forward, diag.right));
  });

  it("does nothing within the dead zone or without a size", () => {
    assert.deepEqual(stickVector(3, -3, 60), { forward: 0, right: 0 });
    assert.deepEqual(stickVector(30, 30, 0), { forward: 0, right: 0 });
    assert.deepEqual(stickVector(NaN, 5, 60), { forward: 0, right: 0 });
  });

  it("shows on touch screens, or when the URL asks", () => {
    assert.equal(touchScreen(fakeWindow()), false);
    assert.equal(touchScreen(fakeWindow({ matches: ["(pointer: coarse)"] })), true);
    assert.equal(touchScreen(fakeWindow({ touchPoints: 5 })), true);
    assert.equal(touchScreen(fakeWindow({ search: "?touch" })), true);
  });
});

describe("the page layout", () => {
  it("a small screen and ?debug are read from the window", () => {
    assert.equal(smallScreen(fakeWindow({ matches: [SMALL_SCREEN] })), true);
    assert.equal(smallScreen(fakeWindow()), false);
    assert.equal(debugMode(fakeWindow({ search: "?debug" })), true);
    assert.equal(debugMode(fakeWindow({ search: "?name=x&debug=1" })), true);
    assert.equal(debugMode(fakeWindow({ search: "?name=debug" })), false);
  });

  it("a tall screen gets a wider field of view, within 60..80 degrees", () => {
    assert.equal(fieldOfView(16 / 9), 60);
    assert.equal(fieldOfView(960 / 600), 60);
    const phone = fieldOfView(412 / 915);
    assert.ok(phone > 75 && phone <= 80, phone);
    assert.ok(fieldOfView(0.8) > 60 && fieldOfView(0.8) < phone);
    assert.equal(fieldOfView(0), 60);
  });

  it("counts others' messages as unread, not our own nor the server's join notices", () => {
    assert.equal(countsAsUnread({ author: "bob", kind: "text" }, "alice"), true);
    assert.equal(countsAsUnread({ author: "mod", kind: "notice" }, "alice"), true); // a moderator's notice
    assert.equal(countsAsUnread({ author: "alice", kind: "text" }, "alice"), false);
    assert.equal(countsAsUnread({ author: "server", kind: "notice" }, "alice"), false);
    assert.equal(countsAsUnread({ author: "bob", kind: "text", deleted: true }, "alice"), false);
    assert.equal(countsAsUnread(null, "alice"), false);
  });

  it("the unread badge counts up to 99", () => {
    assert.equal(badgeText(0), "");
    assert.equal(badgeText(3), "3");
    assert.equal(badgeText(99), "99");
    assert.equal(badgeText(250), "99+");
  });
});
