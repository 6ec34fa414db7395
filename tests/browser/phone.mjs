// The page on a phone: headless chromium emulating a Pixel 7 (412 x 839 CSS pixels, touch,
// mobile) against a server started by tests/test_phone_browser.py.
//
// Page A joins without ?debug: the status panel is hidden behind its toggle, the chat is
// folded into its button, the touch stick shows, and the panels leave most of the view clear.
// A finger (real touch events through the DevTools protocol, Input.dispatchTouchEvent) pushes
// the stick up and holds it (the view turned first the way with the most room: the default
// world is the closed gallery room): the server's position of A's avatar moves; a drag
// across the view turns it. Page B (same phone) says something in the chat: A's chat button shows one
// unread message; a tap on the button opens the chat with B's message in it and clears the
// count, the stick hides and A's avatar (its name tag) stays above the chat; another tap
// folds it. A page opened with ?debug shows the status panel from the
// start, and A's toggle shows it on a tap.
//
//   node tests/browser/phone.mjs --url http://127.0.0.1:PORT [--screenshot PREFIX] [--timeout SECONDS]
// Prints one JSON object (see launch.mjs).

import { writeFileSync } from "node:fs";

import { deviceOptions, joinGallery, launch, roomiestWay, runScript, waitFor, worldDoc } from "./launch.mjs";

// Room the stick walk needs: 3 m, and what the avatar goes on for until the finger lifts.
const ROOM_NEEDED_M = 4.5;

const selfPos = () => {
  const t = window.worldserverTest;
  return t.entities().find((e) => e.id === t.selfId) || null;
};

/** What the page shows of its layout: the hook's state and the boxes of visible panels. */
const layoutState = () => {
  const shown = (el) => {
    if (!el) return null;
    const cs = getComputedStyle(el);
    const r = el.getBoundingClientRect();
    if (cs.display === "none" || cs.visibility === "hidden" || r.width === 0 || r.height === 0) return null;
    return { left: r.left, top: r.top, right: r.right, bottom: r.bottom };
  };
  const ids = ["status", "chat", "chat-button", "status-toggle", "stick", "overlay"];
  const boxes = Object.fromEntries(ids.map((id) => [id, shown(document.getElementById(id))]));
  const badge = document.querySelector("#chat-button .badge");
  const t = window.worldserverTest;
  const mine = t.tags().tags.find((g) => g.id === t.selfId) || null;
  return {
    hook: t.layout(),
    self_tag: mine ? { displayed: mine.displayed, shown: mine.shown, reason: mine.reason, rect: mine.rect, sx: mine.sx, sy: mine.sy } : null,
    boxes,
    badge: badge && !badge.hidden ? badge.textContent : "",
    viewport: { width: window.innerWidth, height: window.innerHeight },
  };
};

/** The share of the viewport covered by the visible panels (their boxes, overlaps counted once). */
function covered(state) {
  const { width, height } = state.viewport;
  const boxes = Object.values(state.boxes).filter(Boolean);
  let n = 0;
  let hit = 0;
  for (let y = 0.5; y < height; y += 4) {
    for (let x = 0.5; x < width; x += 4) {
      n++;
      if (boxes.some((b) => x >= b.left && x < b.right && y >= b.top && y < b.bottom)) hit++;
    }
  }
  return hit / n;
}

/** Waits until the page rendered its view (and chose its name tags) n more times. */
async function rendered(page, n) {
  const u0 = await page.evaluate(() => window.worldserverTest.tags().updates);
  await waitFor(page, (u) => window.worldserverTest.tags().updates >= u, { arg: u0 + n, what: `${n} more renders` });
}

/** A finger: touchStart at (x, y), moves along to the given points, optionally ends. */
async function touch(cdp, type, x, y) {
  await cdp.send("Input.dispatchTouchEvent", {
    type,
    touchPoints: type === "touchEnd" ? [] : [{ x, y, id: 1, radiusX: 6, radiusY: 6, force: 1 }],
  });
}

async function drag(cdp, from, to, steps = 8) {
  await touch(cdp, "touchStart", from.x, from.y);
  for (let i = 1; i <= steps; i++) {
    await touch(cdp, "touchMove", from.x + ((to.x - from.x) * i) / steps, from.y + ((to.y - from.y) * i) / steps);
  }
}

runScript(async (args, state) => {
  if (!args.url) throw new Error("--url is required");
  const device = deviceOptions("Pixel 7");
  state.browser = await launch({ device });
  const browser = state.browser;
  const tag = Math.random().toString(36).slice(2, 7);
  const a = await joinGallery(browser, args.url, `phone-${tag}`, { label: "A" });
  await waitFor(a, () => window.worldserverTest.chat.ready, { what: "A's chat to be ready" });
  const shot = async (page, name) => {
    if (args.screenshot) writeFileSync(`${args.screenshot}-${name}.png`, await page.screenshot({ type: "png" }));
  };
  const joined = await a.evaluate(layoutState);
  const touchInfo = await a.evaluate(() => ({
    coarse: matchMedia("(pointer: coarse)").matches,
    maxTouchPoints: navigator.maxTouchPoints,
  }));
  await shot(a, "joined");

  // The stick: push it up (forward) and hold; the server moves the avatar.
  const cdp = await browser.context.newCDPSession(a);
  const stick = joined.boxes.stick;
  if (!stick) throw new Error(`no touch stick shown: ${JSON.stringify(joined)}`);
  const centre = { x: (stick.left + stick.right) / 2, y: (stick.top + stick.bottom) / 2 };
  const start = await waitFor(a, selfPos, { what: "the own avatar" });
  // Look the way with the most room first: in a closed room (the default world is the
  // gallery) a wall or a bench could be less than 3 m ahead.
  const worldId = await a.evaluate(() => window.worldserverTest.world().id);
  const way = roomiestWay(await worldDoc(args.url, worldId), start.x, start.z);
  if (way.clear < ROOM_NEEDED_M) {
    throw new Error(`A at (${start.x}, ${start.z}) in ${worldId} has ${way.clear.toFixed(2)} m of room, the walk needs ${ROOM_NEEDED_M}: ${JSON.stringify(way.ways)}`);
  }
  await a.evaluate((yaw) => window.worldserverTest.setView(yaw), way.yaw);
  const yaw0 = await a.evaluate(() => window.worldserverTest.view().yaw);
  await drag(cdp, centre, { x: centre.x, y: centre.y - 55 });
  const pushed = await a.evaluate(() => window.worldserverTest.layout());
  const moved = await waitFor(
    a,
    ([x0, z0]) => {
      const t = window.worldserverTest;
      const e = t.entities().find((v) => v.id === t.selfId);
      return e && Math.hypot(e.x - x0, e.z - z0) > 3 ? e : null;
    },
    { arg: [start.x, start.z], timeout: 15000, what: "the avatar to walk 3 m with the stick held" },
  );
  await touch(cdp, "touchEnd", 0, 0);
  // Released: the avatar stops (its server position holds still over 10 ticks).
  const stopped = await waitFor(
    a,
    () => {
      const t = window.worldserverTest;
      const e = t.entities().find((v) => v.id === t.selfId);
      const tick = t.stats().tick;
      if (!e) return null;
      const seen = window.__stop;
      if (!seen || seen.x !== e.x || seen.z !== e.z) {
        window.__stop = { x: e.x, z: e.z, tick };
        return null;
      }
      return tick - seen.tick >= 10 ? e : null;
    },
    { what: "the avatar to stop once the finger is lifted" },
  );

  // Drag to look: a finger across the middle of the view turns it.
  const vp = joined.viewport;
  await drag(cdp, { x: vp.width * 0.7, y: vp.height * 0.4 }, { x: vp.width * 0.3, y: vp.height * 0.4 });
  await touch(cdp, "touchEnd", 0, 0);
  const yaw1 = await a.evaluate(() => window.worldserverTest.view().yaw);

  // B says something: A's folded chat counts it.
  const b = await joinGallery(browser, args.url, `other-${tag}`, { label: "B" });
  await waitFor(b, () => window.worldserverTest.chat.ready, { what: "B's chat to be ready" });
  const text = `hello phone ${tag}`;
  await b.evaluate((t) => window.worldserverTest.chat.send(t), text);
  await a.bringToFront();
  const unread = await waitFor(a, () => {
    const s = window.worldserverTest.layout();
    return s.unread > 0 ? s : null;
  }, { what: "A's chat button to count B's message" });
  const beforeOpen = await a.evaluate(layoutState);
  await shot(a, "unread");
  await a.tap("#chat-button");
  await waitFor(a, () => !window.worldserverTest.layout().folded, { what: "the chat to unfold" });
  await rendered(a, 3); // the view and its tags laid out again with the chat open
  const opened = await a.evaluate(layoutState);
  const shownText = await waitFor(
    a,
    (t) => Array.from(document.querySelectorAll("#chat .chat-msg")).some((m) => m.textContent.includes(t)),
    { arg: text, what: "B's message in A's open chat" },
  );
  await shot(a, "open");
  await a.tap("#chat-button");
  await waitFor(a, () => window.worldserverTest.layout().folded, { what: "the chat to fold again" });
  const folded = await a.evaluate(layoutState);

  // The status panel: A's toggle shows it; a page with ?debug shows it from the start.
  await a.tap("#status-toggle");
  const toggled = await a.evaluate(layoutState);
  const c = await browser.newPage("C");
  const u = new URL(args.url);
  u.searchParams.set("debug", "");
  u.searchParams.set("name", `debug-${tag}`);
  await c.goto(u.toString(), { waitUntil: "load" });
  await waitFor(c, () => window.worldserverTest && window.worldserverTest.ready, { what: "the ?debug page to connect" });
  const debug = await c.evaluate(layoutState);
  await c.close();

  return {
    device: { viewport: device.viewport, isMobile: device.isMobile, hasTouch: device.hasTouch },
    touch: touchInfo,
    joined,
    covered_joined: covered(joined),
    pushed,
    start,
    world: worldId,
    way,
    moved,
    stopped,
    yaw0,
    yaw1,
    unread,
    before_open: beforeOpen,
    opened,
    covered_open: covered(opened),
    shown_text: shownText,
    folded,
    toggled,
    debug,
  };
});
