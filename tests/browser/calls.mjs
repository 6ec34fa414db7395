// Proximity calls in headless chromium with fake media devices (driven by tests/test_calls_browser.py
// and tools/bench/calls_first_frame.py): pages join the gallery, walk (test hook sendMove) and
// report what their call did (window.worldserverTest.calls: state(), received() from getStats).
// One browser process, several pages; the fake camera is asked for 160x120 at 10 fps.
//
//   node tests/browser/calls.mjs --url http://127.0.0.1:PORT --scenario pair|zone|five|first_frame
//        [--rounds N] [--radius M] [--leave-radius M] [--timeout SECONDS]
//
// pair: A walks away from the spawn, B joins; A walks up to B: both get call.joined, then
//   every track each receives carries media (video frames decoded, audio samples), the voice
//   sits about where the other avatar stands, each hears the other speak (the fake microphone
//   beeps); A walks away: both get call.left, which the report times from the first snapshot
//   that showed them farther apart than the leave radius; the local tracks end, the tiles go.
// zone: two pages walk into the world's call zone (the gallery's corner) and are in its call,
//   a third one, far from it, is not, until it walks in too; then one walks out.
// five: five pages in the zone, the first with a camera, the others with a microphone only
//   (?cam=0): each receives the voices of the four others and the one camera.
// first_frame: A stands, B walks up to it from 6 m, `rounds` times: the time from the first
//   snapshot showing them within the radius to the first remote video frame on each page.
//
// Every wait is a condition with a deadline that only guards against a hang. Prints one JSON
// object (see launch.mjs). CALLS_TRACE=1 in the environment prints each walking step on stderr.

import { WallRays } from "../../clients/web/src/world/rays.js";
import { joinGallery, launch, runScript, settledSelf } from "./launch.mjs";

/** Fake media: a camera and a microphone (which beeps), granted without asking. */
const MEDIA_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"];
const VIEWPORT = { width: 400, height: 300 }; // small pages: five render at once on two cores
const PAGE_QUERY = "pr=0.5"; // and at half the pixels
const SPEED = 5; // sim.max_speed, m/s

// ------------------------------------------------------------------------------ in the page

const selfPos = () => {
  const t = window.worldserverTest;
  const e = t.entities().find((v) => v.id === t.selfId);
  return e ? { x: e.x, z: e.z } : null;
};

const calls = () => window.worldserverTest.calls.state();

/** Starts timing in the page: every 10 ms, the distance between our avatar and `other`'s in
 *  the newest snapshot; the first time it is within `near` (and after that beyond `far`) is
 *  kept with performance.now(). */
const watchDistance = ([other, near, far]) => {
  const t = window.worldserverTest;
  const w = { near: null, far: null, nearDist: null, farDist: null };
  window.__callWatch = w;
  clearInterval(window.__callWatchTimer);
  window.__callWatchTimer = setInterval(() => {
    const list = t.entities();
    const a = list.find((e) => e.id === t.selfId);
    const b = list.find((e) => e.id === other);
    if (!a || !b) return;
    const d = Math.hypot(a.x - b.x, a.z - b.z);
    if (w.near === null && d <= near) {
      w.near = performance.now();
      w.nearDist = d;
    }
    if (w.near !== null && w.far === null && d > far) {
      w.far = performance.now();
      w.farDist = d;
    }
  }, 10);
};

// ------------------------------------------------------------------------------ in node

async function state(page) {
  return page.evaluate(calls);
}

/** Waits until pred(state of page's call) holds; resolves with that state. On a timeout the
 *  error shows the call's last state (and the avatar's position). */
async function callUntil(page, pred, what, { timeout = 30000, every = 200 } = {}) {
  return until(async () => {
    const s = await state(page);
    if (pred(s)) return s;
    const { state: st, group, zone, mode, members, peers, sfu, error, events } = s;
    return { ok: false, at: await pos(page), state: st, group, zone, mode, members, peers, sfu, error, events: events.slice(-4) };
  }, { what, timeout, every });
}

async function pos(page) {
  return page.evaluate(selfPos);
}

/** Polls fn() until it returns something truthy; `what` names it in the error. */
async function until(fn, { timeout = 30000, every = 200, what = "condition" } = {}) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    last = await fn();
    if (last && (typeof last !== "object" || last.ok !== false)) return last;
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${what}: ${JSON.stringify(last)?.slice(0, 3000)}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

/** The position of `page`'s avatar once it stands still. */
async function settled(page, ticks = 4) {
  await page.evaluate(() => { window.__settle = null; });
  return until(() => page.evaluate(settledSelf, ["__settle", ticks]), { what: "our avatar to stand still", every: 50 });
}

/**
 * Walks `page`'s avatar to (x, z) in the world `rays` (null: the open square), around walls and
 * benches through one waypoint when the straight way is blocked; resolves with the position.
 * Each step walks a little less than the way left and waits until the avatar stands still.
 */
async function walkTo(page, x, z, { rays = null, radius = 0.35, tolerance = 0.4, timeout = 90000 } = {}) {
  const end = Date.now() + timeout;
  let stuck = 0;
  let last = null;
  while (Date.now() < end) {
    const p = await settled(page);
    const dist = Math.hypot(x - p.x, z - p.z);
    if (dist <= tolerance) return p;
    let tx = x;
    let tz = z;
    if (rays && rays.firstHit({ x: p.x, y: 0.5, z: p.z }, { x, y: 0.5, z }, radius + 0.15) !== null) {
      const via = waypoint(rays, p, { x, z }, radius + 0.15);
      if (via) {
        tx = via.x;
        tz = via.z;
      }
    }
    const d = Math.hypot(tx - p.x, tz - p.z);
    const slow = d < 1.5 ? 0.4 : 1; // the last steps at 2 m/s: 10 cm a tick
    const ms = Math.max(40, Math.min(1500, ((0.9 * d) / (SPEED * slow)) * 1000));
    if (last && Math.hypot(p.x - last.x, p.z - last.z) < 0.02) stuck++;
    else stuck = 0;
    last = p;
    // a sidestep when stuck against something the plan did not see
    const jitter = stuck > 2 ? [Math.random() - 0.5, Math.random() - 0.5] : [0, 0];
    await page.evaluate(([mx, mz, t]) => window.worldserverTest.sendMove(mx, mz, t), [slow * ((tx - p.x) / d + jitter[0]), slow * ((tz - p.z) / d + jitter[1]), ms]);
  }
  throw new Error(`could not walk to (${x}, ${z}); at ${JSON.stringify(await pos(page))}`);
}

/** The point of a 0.5 m grid from which both legs of the way are clear, shortest first. */
function waypoint(rays, from, to, pad) {
  let best = null;
  for (let gx = -20; gx <= 20; gx += 0.5) {
    for (let gz = -20; gz <= 20; gz += 0.5) {
      const len = Math.hypot(gx - from.x, gz - from.z) + Math.hypot(to.x - gx, to.z - gz);
      if (best && len >= best.len) continue;
      if (rays.firstHit({ x: from.x, y: 0.5, z: from.z }, { x: gx, y: 0.5, z: gz }, pad) !== null) continue;
      if (rays.firstHit({ x: gx, y: 0.5, z: gz }, { x: to.x, y: 0.5, z: to.z }, pad) !== null) continue;
      best = { x: gx, z: gz, len };
    }
  }
  return best;
}

/** What `page` received, per other member: tracks and whether each carried media. */
async function received(page) {
  return page.evaluate(() => window.worldserverTest.calls.received());
}

/**
 * True when `page` receives audio from every name in `audioFrom` and video from every name in
 * `videoFrom`, each with media (samples, decoded frames). Returns the evidence.
 */
async function mediaFrom(page, audioFrom, videoFrom) {
  const got = await received(page);
  const has = (name, kind, key) => got.some((r) => r.name === name && r.kind === kind && r[key] > 0);
  const missing = [
    ...audioFrom.filter((n) => !has(n, "audio", "samples")).map((n) => `audio of ${n}`),
    ...videoFrom.filter((n) => !has(n, "video", "frames_decoded")).map((n) => `video of ${n}`),
  ];
  if (!missing.length) return { ok: true, missing, got };
  // Not yet: what the call looks like, so that a timeout explains itself (peers' connection
  // states, signals in and out, errors).
  const { state: st, group, mode, members, peers, error, counts, local } = await state(page);
  return { ok: false, missing, got, call: { state: st, group, mode, members, peers, error, counts, local } };
}

async function join(browser, url, name, { query = "" } = {}) {
  const q = [PAGE_QUERY, query].filter(Boolean).join("&");
  const page = await joinGallery(browser, `${url}/?${q}`, name, { label: name });
  // enabled: idle, or in a call already (it may have appeared next to someone)
  await callUntil(page, (s) => s.state !== "off" && s.state !== "unsupported", `${name}'s calls to be enabled`, { timeout: 20000 });
  return page;
}

async function worldRays(url) {
  const res = await fetch(`${url}/api/worlds`);
  if (!res.ok) return { id: null, rays: null, doc: null };
  const list = await res.json();
  const id = list.default;
  const doc = await (await fetch(`${url}/api/worlds/${encodeURIComponent(id)}`)).json();
  const walled = (doc.walls && doc.walls.length) || (doc.obstacles && doc.obstacles.length);
  return { id, doc, rays: walled ? new WallRays(doc) : null };
}

/** The entity id of a page's own avatar. */
async function selfId(page) {
  return page.evaluate(() => window.worldserverTest.selfId);
}

// ------------------------------------------------------------------------------ scenarios

async function pair(browser, args) {
  const radius = Number(args.radius || 2.5);
  const leave = Number(args["leave-radius"] || 3.5);
  const tag = Math.random().toString(36).slice(2, 6);
  const nameA = `ann-${tag}`;
  const nameB = `bob-${tag}`;
  const a = await join(browser, args.url, nameA);
  // A walks 9 m away from the spawn before B comes (the open square: no walls).
  const start = await pos(a);
  await walkTo(a, start.x + 9, start.z);
  const b = await join(browser, args.url, nameB);
  const [idA, idB] = [await selfId(a), await selfId(b)];
  const before = { a: await state(a), b: await state(b) };
  const transport = { a: await a.evaluate(() => window.worldserverTest.transport), b: await b.evaluate(() => window.worldserverTest.transport) };
  await a.evaluate(watchDistance, [idB, radius, leave]);
  await b.evaluate(watchDistance, [idA, radius, leave]);
  // A walks up to 1.5 m from B, on B's +x side.
  const pb = await pos(b);
  await walkTo(a, pb.x + 1.5, pb.z);
  const joinedA = await until(async () => { const s = await state(a); return s.state === "in_call" && s.members.length === 2 ? s : null; }, { what: "A in the call" });
  const joinedB = await until(async () => { const s = await state(b); return s.state === "in_call" && s.members.length === 2 ? s : null; }, { what: "B in the call" });
  const mediaA = await until(() => mediaFrom(a, [nameB], [nameB]), { what: "A to receive B's audio and video", timeout: 40000 });
  const mediaB = await until(() => mediaFrom(b, [nameA], [nameA]), { what: "B to receive A's audio and video", timeout: 40000 });
  // The fake microphone beeps: each hears the other speak (the speaking ring's detector).
  const heardA = await until(async () => { const s = await state(a); return s.spoke.includes(nameB) ? s : null; }, { what: "A to hear B speak" });
  const heardB = await until(async () => { const s = await state(b); return s.spoke.includes(nameA) ? s : null; }, { what: "B to hear A speak" });
  const view = (page) => page.evaluate(() => window.worldserverTest.view());
  const inCall = { a: await state(a), b: await state(b), pos_a: await pos(a), pos_b: await pos(b), view_a: await view(a), view_b: await view(b) };
  const tags = await b.evaluate(() => window.worldserverTest.tags().tags.map((t) => ({ name: t.name, shown: t.shown, displayed: t.displayed })));
  // A walks away: 6 m further on +x.
  await walkTo(a, pb.x + 7.5, pb.z);
  const leftA = await until(async () => { const s = await state(a); return s.left_at !== null && s.state === "idle" ? s : null; }, { what: "A's call.left" });
  const leftB = await until(async () => { const s = await state(b); return s.left_at !== null && s.state === "idle" ? s : null; }, { what: "B's call.left" });
  const watch = { a: await a.evaluate(() => window.__callWatch), b: await b.evaluate(() => window.__callWatch) };
  const domA = await a.evaluate(() => ({ bar_hidden: document.getElementById("call-bar").hidden, tiles: document.querySelectorAll("#call-bar .call-tile").length, videos: Array.from(document.querySelectorAll("video")).filter((v) => v.srcObject).length }));
  return { names: [nameA, nameB], transport, before, joined: { a: joinedA, b: joinedB }, media: { a: mediaA, b: mediaB }, heard: { a: heardA.spoke, b: heardB.spoke }, in_call: inCall, tags, left: { a: leftA, b: leftB }, watch, dom_after: domA };
}

/** Places inside the gallery's call zone (center 7.5, 7.5; 3.5 m square). */
const ZONE_SPOTS = [[6.4, 6.4], [8.6, 6.4], [6.4, 8.6], [8.6, 8.6], [7.5, 7.5]];

async function zone(browser, args) {
  const { id: world, rays } = await worldRays(args.url);
  const tag = Math.random().toString(36).slice(2, 6);
  const names = [`ada-${tag}`, `ben-${tag}`, `cid-${tag}`];
  const pages = [];
  for (const n of names) pages.push(await join(browser, args.url, n));
  const [a, b, c] = pages;
  // C goes to the far corner; A and B into the call zone.
  await Promise.all([walkTo(c, -7.5, -7.5, { rays }), walkTo(a, ...ZONE_SPOTS[0], { rays }), walkTo(b, ...ZONE_SPOTS[1], { rays })]);
  const inZone = (page, members) => callUntil(page, (s) => s.state === "in_call" && s.zone === "corner" && s.members.length === members.length && members.every((m) => s.members.includes(m)), `the zone call of ${members.join(", ")}`);
  const twoA = await inZone(a, names.slice(0, 2));
  const twoB = await inZone(b, names.slice(0, 2));
  const outsider = await state(c);
  const twoMedia = {
    a: await until(() => mediaFrom(a, [names[1]], [names[1]]), { what: "A to receive B in the zone", timeout: 40000 }),
    b: await until(() => mediaFrom(b, [names[0]], [names[0]]), { what: "B to receive A in the zone", timeout: 40000 }),
  };
  // C walks in: everyone in the zone is in one call.
  await walkTo(c, ...ZONE_SPOTS[4], { rays });
  const three = [];
  for (const p of pages) three.push(await inZone(p, names));
  const threeMedia = [];
  for (const [i, p] of pages.entries()) {
    const others = names.filter((_, j) => j !== i);
    threeMedia.push(await until(() => mediaFrom(p, others, others), { what: `${names[i]} to receive the two others`, timeout: 40000 }));
  }
  // A walks out of the zone (towards the middle of the room).
  await walkTo(a, 2, 2, { rays });
  const aLeft = await until(async () => { const s = await state(a); return s.left_at !== null && s.group === null ? s : null; }, { what: "A's call.left" });
  const bAfter = await until(async () => { const s = await state(b); return s.members.length === 2 ? s : null; }, { what: "B's members without A" });
  return { world, names, two: { a: twoA, b: twoB }, outsider, two_media: twoMedia, three, three_media: threeMedia, a_left: aLeft, b_after: bAfter };
}

async function five(browser, args) {
  const { id: world, rays } = await worldRays(args.url);
  const tag = Math.random().toString(36).slice(2, 6);
  const names = ["eve", "fay", "gus", "hal", "ivy"].map((n) => `${n}-${tag}`);
  const pages = [];
  for (const [i, n] of names.entries()) pages.push(await join(browser, args.url, n, { query: i === 0 ? "" : "cam=0" }));
  await Promise.all(pages.map((p, i) => walkTo(p, ...ZONE_SPOTS[i], { rays })));
  const walked = [];
  for (const p of pages) walked.push(await pos(p));
  const states = [];
  for (const [i, p] of pages.entries()) {
    states.push(await callUntil(p, (s) => s.state === "in_call" && s.zone === "corner" && s.members.length === 5, `${names[i]} in the five-member zone call`, { timeout: 40000 }));
  }
  const media = [];
  for (const [i, p] of pages.entries()) {
    const others = names.filter((_, j) => j !== i);
    const video = i === 0 ? [] : [names[0]];
    media.push(await until(() => mediaFrom(p, others, video), { what: `${names[i]} to receive four voices and the camera`, timeout: 60000, every: 500 }));
  }
  const final = [];
  for (const p of pages) final.push(await state(p));
  return { world, names, walked, states: final, media };
}

async function firstFrame(browser, args) {
  const rounds = Number(args.rounds || 3);
  const radius = Number(args.radius || 2.5);
  const leave = Number(args["leave-radius"] || 3.5);
  const tag = Math.random().toString(36).slice(2, 6);
  const a = await join(browser, args.url, `ari-${tag}`);
  const start = await pos(a);
  await walkTo(a, start.x - 8, start.z);
  const b = await join(browser, args.url, `bea-${tag}`);
  const [idA, idB] = [await selfId(a), await selfId(b)];
  const out = [];
  for (let r = 0; r < rounds; r++) {
    const pa = await pos(a);
    await walkTo(b, pa.x + 6, pa.z);
    await until(async () => (await state(a)).group === null && (await state(b)).group === null, { what: "no call before the round" });
    await a.evaluate(watchDistance, [idB, radius, leave]);
    await b.evaluate(watchDistance, [idA, radius, leave]);
    // B walks straight at A at full speed and stops 1.5 m before it.
    await b.evaluate(([ms]) => window.worldserverTest.sendMove(-1, 0, ms), [((6 - 1.5) / SPEED) * 1000]);
    const frame = async (page, other) => {
      const s = await state(page);
      const r2 = s.remotes.find((x) => x.name === other);
      const w = await page.evaluate(() => window.__callWatch);
      return r2 && r2.first_frame_at !== null && w.near !== null ? { near: w.near, first_frame: r2.first_frame_at, joined: s.joined_at } : null;
    };
    const fa = await until(() => frame(a, `bea-${tag}`), { what: "A's first frame of B", timeout: 30000, every: 100 });
    const fb = await until(() => frame(b, `ari-${tag}`), { what: "B's first frame of A", timeout: 30000, every: 100 });
    out.push({ a_ms: Math.round(fa.first_frame - fa.near), b_ms: Math.round(fb.first_frame - fb.near), a_joined_ms: Math.round(fa.joined - fa.near), b_joined_ms: Math.round(fb.joined - fb.near) });
    // B walks back out; both leave the call.
    await walkTo(b, pa.x + 6, pa.z);
    await until(async () => (await state(a)).group === null && (await state(b)).group === null, { what: "the call to end after the round" });
  }
  return { rounds: out };
}

const SCENARIOS = { pair, zone, five, first_frame: firstFrame };

runScript(async (args, st) => {
  if (!args.url) throw new Error("--url is required");
  const run = SCENARIOS[args.scenario];
  if (!run) throw new Error(`--scenario must be one of ${Object.keys(SCENARIOS).join(", ")}`);
  st.browser = await launch({ extraArgs: MEDIA_ARGS, viewport: VIEWPORT });
  return run(st.browser, args);
});

