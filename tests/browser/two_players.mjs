// Two players in one headless chromium: both join through the overlay, A walks (test hook
// sendMove) the way with the most room in the hosted world (the default world is the closed
// gallery room: its walls and benches must not stop the walk) until B saw A's avatar move in
// its own decoded snapshots, then A turns round and walks back with the W key; B turns to A
// and shows A's name over A's avatar; B's view is captured as a PNG and its pixel statistics
// reported. Every wait is a condition with a deadline. With --block-webrtc,
// RTCPeerConnection is deleted from every page first, so the client must fall back to the
// WebSocket.
//
//   node tests/browser/two_players.mjs --url http://127.0.0.1:PORT [--screenshot FILE]
//        [--block-webrtc] [--timeout SECONDS]
// Prints one JSON object (see launch.mjs); exit code 0 when everything checked out.

import { writeFileSync } from "node:fs";

import { joinGallery, launch, pngStats, roomiestWay, runScript, settledSelf, waitFor, worldDoc } from "./launch.mjs";

// A walks (test hook sendMove) until B saw it go more than WALK_SEEN_M, then stops; the
// way it takes must have WALK_ROOM_M free so that B sees that before A can reach a wall.
const WALK_SEEN_M = 3;
const WALK_ROOM_M = 5;
// Then A turns round (as the mouse turns the view) and holds W until it went KEY_WALK_M back
// along the way it came (free floor: it just walked there), released as soon as it did.
const KEY_WALK_M = 2;

const BLOCK_WEBRTC = `
  delete window.RTCPeerConnection;
  delete window.webkitRTCPeerConnection;
  delete window.RTCDataChannel;
`;

/** B's view of the entity `id` once it is within 0.5 m of (x, z). */
const seenNear = ([id, x, z]) => {
  const e = window.worldserverTest.entities().find((v) => v.id === id);
  return e && Math.hypot(e.x - x, e.z - z) < 0.5 ? e : null;
};

const hookState = () => {
  const t = window.worldserverTest;
  return { transport: t.transport, selfId: t.selfId, ready: t.ready, stats: t.stats() };
};

runScript(async (args, state) => {
  if (!args.url) throw new Error("--url is required");
  const block = Boolean(args["block-webrtc"]);
  state.browser = await launch({ initScript: block ? BLOCK_WEBRTC : null });
  const browser = state.browser;
  const tag = Math.random().toString(36).slice(2, 7);
  const nameA = `alice-${tag}`;
  const nameB = `bob-${tag}`;

  const t0 = Date.now();
  const a = await joinGallery(browser, args.url, nameA, { label: "A" });
  const b = await joinGallery(browser, args.url, nameB, { label: "B" });
  const joinedMs = Date.now() - t0;
  const sa = await a.evaluate(hookState);
  const sb = await b.evaluate(hookState);
  const webrtcPresent = await a.evaluate(() => typeof RTCPeerConnection !== "undefined");

  // B sees A (A's entity in B's mirror).
  const before = await waitFor(
    b,
    (id) => window.worldserverTest.entities().find((e) => e.id === id) || null,
    { arg: sa.selfId, what: "B to see A's avatar" },
  );
  // A walks the way with the most room: a closed room's walls and benches must not stop it.
  const worldId = await a.evaluate(() => window.worldserverTest.world().id);
  const doc = await worldDoc(args.url, worldId);
  const way = roomiestWay(doc, before.x, before.z);
  if (way.clear < WALK_ROOM_M) {
    throw new Error(`A at (${before.x}, ${before.z}) in ${worldId} has ${way.clear.toFixed(2)} m of room, the walk needs ${WALK_ROOM_M}: ${JSON.stringify(way.ways)}`);
  }
  const along = (e, x0, z0) => (e.x - x0) * way.dx + (e.z - z0) * way.dz;
  // The intent is held for at most 10 s (a wall would stop A first); A stops once B saw it.
  await a.evaluate(([dx, dz]) => void window.worldserverTest.sendMove(dx, dz, 10000), [way.dx, way.dz]);
  let after;
  try {
    after = await waitFor(
      b,
      ([id, x0, z0, dx, dz, m]) => {
        const e = window.worldserverTest.entities().find((v) => v.id === id);
        return e && (e.x - x0) * dx + (e.z - z0) * dz > m ? e : null;
      },
      { arg: [sa.selfId, before.x, before.z, way.dx, way.dz, WALK_SEEN_M], what: `B to see A move more than ${WALK_SEEN_M} m` },
    );
  } finally {
    await a.evaluate(() => void window.worldserverTest.sendMove(0, 0, 0));
  }
  // A's view turned with the walk (the page faces the way it moves).
  const walkYaw = await a.evaluate(() => window.worldserverTest.view().yaw);
  // A has stopped: A's own position and B's view of A converge on the same server state.
  const selfA = await waitFor(a, settledSelf, { arg: ["__selfSettle", 10], what: "A's own position to settle after the walk" });
  const settled = await waitFor(b, seenNear, {
    arg: [sa.selfId, selfA.x, selfA.z],
    what: "B's view of A to settle where A stopped",
  });
  // Keyboard: A turns round and holds W until it went KEY_WALK_M back the way it came.
  await a.bringToFront();
  const k0 = selfA;
  const back = { dx: -way.dx, dz: -way.dz, yaw: way.yaw + Math.PI };
  await a.evaluate((yaw) => window.worldserverTest.setView(yaw), back.yaw);
  let k1;
  await a.keyboard.down("w");
  try {
    k1 = await waitFor(
      a,
      ([x0, z0, dx, dz, m]) => {
        const t = window.worldserverTest;
        const e = t.entities().find((v) => v.id === t.selfId);
        return e && (e.x - x0) * dx + (e.z - z0) * dz > m ? e : null;
      },
      { arg: [k0.x, k0.z, back.dx, back.dz, KEY_WALK_M], timeout: 5000, what: `A to walk ${KEY_WALK_M} m back with the W key` },
    );
  } finally {
    await a.keyboard.up("w");
  }
  // A stops again, and B's view of A follows it there.
  const keyStop = await waitFor(a, settledSelf, { arg: ["__keySettle", 10], what: "A's own position to settle after the W key" });
  const keySeen = await waitFor(b, seenNear, {
    arg: [sa.selfId, keyStop.x, keyStop.z],
    what: "B's view of A to settle where A stopped after the W key",
  });
  await b.bringToFront();
  // B learns A's name (labels come from /api/players).
  let nameSeen = null;
  try {
    nameSeen = await waitFor(b, (id) => window.worldserverTest.names()[id] || null, {
      arg: sa.selfId,
      timeout: 8000,
      what: "B to know A's name",
    });
  } catch (e) {
    nameSeen = null;
  }
  // B turns to look at A (a tag is on the page only once its avatar was in view; in a room A
  // may well be behind B) and shows A's name over A's avatar.
  await b.evaluate((id) => {
    const t = window.worldserverTest;
    const me = t.entities().find((e) => e.id === t.selfId);
    const other = t.entities().find((e) => e.id === id);
    if (me && other) t.setView(Math.atan2(other.x - me.x, other.z - me.z));
  }, sa.selfId);
  let labelA = null;
  try {
    labelA = await waitFor(
      b,
      ([id, name]) => window.worldserverTest.tags().tags.find((t) => t.id === id && t.displayed && t.name === name) || null,
      { arg: [sa.selfId, nameA], timeout: 8000, what: "B to show A's name over A's avatar" },
    );
  } catch (e) {
    labelA = null;
  }
  const labelTexts = await b.evaluate(() =>
    Array.from(document.querySelectorAll(".name-label"))
      .filter((el) => el.isConnected && el.style.display !== "none")
      .map((el) => el.textContent),
  );
  const tagsB = await b.evaluate(() => window.worldserverTest.tags());

  // A third page: a taken name and a name with markup are refused with the server's message,
  // shown as text (never HTML), and the overlay stays.
  const c = await browser.newPage("C");
  await c.goto(args.url, { waitUntil: "load" });
  await c.waitForSelector("#join-name:not([disabled])");
  // C is someone else: without A's secret (this profile's localStorage holds it) A's name
  // is taken; with it, C would be A logging in again (tests/browser/names.mjs).
  await c.evaluate(() => localStorage.clear());
  const tryJoin = async (name) => {
    await c.evaluate(() => (document.getElementById("join-error").textContent = ""));
    await c.fill("#join-name", name);
    await c.click("#join-button");
    await waitFor(c, () => document.getElementById("join-error").textContent.length > 0, {
      timeout: 10000,
      what: `an error for the name ${JSON.stringify(name)}`,
    });
    return c.evaluate(() => ({
      text: document.getElementById("join-error").textContent,
      elements: document.getElementById("join-error").children.length,
      overlay: !document.getElementById("overlay").hidden,
    }));
  };
  const joinErrors = [await tryJoin(nameA), await tryJoin("<b>x</b>")];
  await c.close();
  await b.bringToFront();

  // A stopped and B's view of it settled (above): capture B's view.
  const png = await b.screenshot({ type: "png" });
  if (args.screenshot) writeFileSync(args.screenshot, png);
  const image = await pngStats(b, png);

  const finalA = await a.evaluate(hookState);
  const finalB = await b.evaluate(hookState);
  return {
    block_webrtc: block,
    webrtc_present: webrtcPresent,
    names: [nameA, nameB],
    join_ms: joinedMs,
    transport_a: finalA.transport,
    transport_b: finalB.transport,
    self_a: sa.selfId,
    self_b: sb.selfId,
    seen_before: before,
    seen_after: after,
    seen_settled: settled,
    self_a_after: selfA,
    world: worldId,
    way,
    walk_yaw: walkYaw,
    moved: along(settled, before.x, before.z),
    seen_moved: along(after, before.x, before.z),
    keyboard_moved: -along(k1, k0.x, k0.z),
    keyboard_stop: keyStop,
    keyboard_seen: keySeen,
    direction: [way.dx, way.dz],
    name_seen: nameSeen,
    labels: labelTexts,
    label_a: labelA,
    tags_b: tagsB,
    join_errors: joinErrors,
    screenshot: args.screenshot || null,
    png_bytes: png.length,
    image,
    stats_a: finalA.stats,
    stats_b: finalB.stats,
  };
});
