// The page in a crowd, in headless chromium against a server on a world file with bots in it
// (tests/test_crowd_browser.py starts both): the page joins, waits until it sees the bots and
// knows their names, looks toward them and samples its name tags; then it walks a route of
// waypoints (the last one beyond a corner, so it ends there), turns the view to eight yaws and
// samples the camera and the tags while the camera settles. Each sample holds the camera the
// tags were chosen from, every avatar's tag (shown or why not, its world position) and the
// name tags the page really displays (computed style and box), and the chat panel's box; the
// Python test checks them against the world's walls.
//
//   node tests/browser/crowd.mjs --url http://127.0.0.1:PORT --bots N --route '[[x, z], ...]'
//        [--screenshot PREFIX] [--timeout SECONDS]
// --screenshot saves PREFIX-crowd.png and PREFIX-corner-K.png (K = 0..7, the yaws).
// Prints one JSON object (see launch.mjs).

import { writeFileSync } from "node:fs";

import { joinGallery, launch, runScript, waitFor } from "./launch.mjs";

const SPEED = 5; // sim.max_speed, m/s

const selfPos = () => {
  const t = window.worldserverTest;
  return t.entities().find((e) => e.id === t.selfId) || null;
};

/** One sample of the page's view: see the header. */
const sample = () => {
  const t = window.worldserverTest;
  const box = (r) => ({ left: r.left, top: r.top, right: r.right, bottom: r.bottom });
  const dom = [];
  for (const el of document.querySelectorAll("#view .labels .name-label")) {
    const cs = getComputedStyle(el);
    const r = el.getBoundingClientRect();
    if (cs.display !== "none" && cs.visibility !== "hidden" && Number(cs.opacity) > 0 && r.width > 0) dom.push({ text: el.textContent, ...box(r) });
  }
  const chat = document.getElementById("chat");
  return {
    view: t.view(),
    tags: t.tags(),
    dom,
    chat: chat && !chat.hidden ? box(chat.getBoundingClientRect()) : null,
    self: t.entities().find((e) => e.id === t.selfId) || null,
    frames: t.stats().frames,
  };
};

/** Waits until the page rendered its view (and chose its name tags) `n` more times (no
 *  wall-clock waits). */
async function frames(page, n) {
  const u0 = await page.evaluate(() => window.worldserverTest.tags().updates);
  await waitFor(page, (u) => window.worldserverTest.tags().updates >= u, { arg: u0 + n, what: `${n} renders` });
}

/** `count` samples, `gap` frames apart. */
async function samples(page, count, gap) {
  const out = [];
  for (let i = 0; i < count; i++) {
    await frames(page, gap);
    out.push(await page.evaluate(sample));
  }
  return out;
}

/** Walks toward (x, z) in short holds until there or stopped by a wall; returns where. A
 *  null coordinate keeps the avatar's own. */
async function walkTo(page, x0, z0) {
  let last = null;
  let still = 0;
  for (let i = 0; i < 80; i++) {
    const e = await waitFor(page, selfPos, { what: "the own avatar" });
    const x = x0 === null ? e.x : x0;
    const z = z0 === null ? e.z : z0;
    const dx = x - e.x;
    const dz = z - e.z;
    const len = Math.hypot(dx, dz);
    if (len < 0.3) return e;
    if (last && Math.hypot(e.x - last.x, e.z - last.z) < 0.05) {
      if (++still >= 2) return e;
    } else still = 0;
    last = e;
    const ms = Math.max(120, Math.min(600, (len / SPEED) * 1000));
    await page.evaluate(([mx, mz, t]) => window.worldserverTest.sendMove(mx, mz, t), [dx / len, dz / len, ms]);
  }
  return waitFor(page, selfPos, { what: "the own avatar" });
}

runScript(async (args, state) => {
  if (!args.url) throw new Error("--url is required");
  const bots = Number(args.bots || 0);
  const route = JSON.parse(args.route || "[]");
  state.browser = await launch();
  const page = await joinGallery(state.browser, args.url, `viewer-${Math.random().toString(36).slice(2, 7)}`);
  // every bot in view and named (names come from /api/players)
  const seen = () => {
    const t = window.worldserverTest;
    return { entities: t.entities().length, names: Object.keys(t.names()).length, tags: t.tags().tags.length };
  };
  try {
    await waitFor(
      page,
      (n) => {
        const t = window.worldserverTest;
        return t.entities().length >= n + 1 && Object.keys(t.names()).length >= n + 1 && t.tags().tags.length >= n + 1;
      },
      { arg: bots, timeout: 30000, what: `${bots} bots in view, named` },
    );
  } catch (e) {
    throw new Error(`${e.message}; seen: ${JSON.stringify(await page.evaluate(seen))}`);
  }
  // look toward the crowd
  const yaw = await page.evaluate(() => {
    const t = window.worldserverTest;
    const me = t.entities().find((e) => e.id === t.selfId);
    const others = t.entities().filter((e) => e.id !== t.selfId);
    const cx = others.reduce((s, e) => s + e.x, 0) / others.length;
    const cz = others.reduce((s, e) => s + e.z, 0) / others.length;
    return Math.hypot(cx - me.x, cz - me.z) > 0.5 ? Math.atan2(cx - me.x, cz - me.z) : 0;
  });
  await page.evaluate((y) => window.worldserverTest.setView(y, 0.35), yaw);
  await frames(page, 10);
  const crowd = await samples(page, 5, 3);
  const shot = async (name) => {
    if (args.screenshot) writeFileSync(`${args.screenshot}-${name}.png`, await page.screenshot({ type: "png" }));
  };
  await shot("crowd");

  const walked = [];
  for (const [x, z] of route) walked.push(await walkTo(page, x, z));
  const corner = [];
  for (let k = 0; k < 8; k++) {
    const y = (k / 8) * 2 * Math.PI;
    await page.evaluate((v) => window.worldserverTest.setView(v, 0.35), y);
    for (const s of await samples(page, 5, 3)) corner.push({ yaw: y, ...s });
    await shot(`corner-${k}`);
  }
  const world = await page.evaluate(() => window.worldserverTest.world());
  const stats = await page.evaluate(() => window.worldserverTest.stats());
  return { world, crowd, walked, corner, stats };
});
