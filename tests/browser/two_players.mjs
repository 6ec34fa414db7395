// Two players in one headless chromium: both join through the overlay, A walks (test hook
// sendMove), B must see A's avatar move in its own decoded snapshots; B's view is captured
// as a PNG and its pixel statistics reported. With --block-webrtc, RTCPeerConnection is
// deleted from every page first, so the client must fall back to the WebSocket.
//
//   node tests/browser/two_players.mjs --url http://127.0.0.1:PORT [--screenshot FILE]
//        [--block-webrtc] [--timeout SECONDS]
// Prints one JSON object (see launch.mjs); exit code 0 when everything checked out.

import { writeFileSync } from "node:fs";

import { joinGallery, launch, pngStats, runScript, waitFor } from "./launch.mjs";

const BLOCK_WEBRTC = `
  delete window.RTCPeerConnection;
  delete window.webkitRTCPeerConnection;
  delete window.RTCDataChannel;
`;

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
  // A walks along x (towards the world centre) for 1.5 s: 7.5 m at 5 m/s.
  const dir = before.x > 0 ? -1 : 1;
  const walk = a.evaluate((d) => window.worldserverTest.sendMove(d, 0, 1500), dir);
  const after = await waitFor(
    b,
    ([id, x0, d]) => {
      const e = window.worldserverTest.entities().find((v) => v.id === id);
      return e && (e.x - x0) * d > 3 ? e : null;
    },
    { arg: [sa.selfId, before.x, dir], what: "B to see A move more than 3 m" },
  );
  await walk;
  // A has stopped: A's own position and B's view of A converge on the same server state.
  // A's mirror trails the server by a snapshot or more (fewer per second when the server
  // sheds load), so first wait until A's own authoritative position has stopped changing
  // while newer ticks keep arriving.
  const selfA = await waitFor(
    a,
    () => {
      const t = window.worldserverTest;
      const e = t.entities().find((v) => v.id === t.selfId);
      const tick = t.stats().tick;
      if (!e) return null;
      const seen = window.__selfSettle;
      if (!seen || seen.x !== e.x || seen.z !== e.z) {
        window.__selfSettle = { x: e.x, z: e.z, tick };
        return null;
      }
      return tick - seen.tick >= 10 ? e : null; // unchanged over 10 ticks (0.5 s)
    },
    { what: "A's own position to settle after the walk" },
  );
  const settled = await waitFor(
    b,
    ([id, x]) => {
      const e = window.worldserverTest.entities().find((v) => v.id === id);
      return e && Math.abs(e.x - x) < 0.5 ? e : null;
    },
    { arg: [sa.selfId, selfA ? selfA.x : NaN], what: "B's view of A to settle where A stopped" },
  );
  // Keyboard: A holds W for 1 s; A now faces the way it walked, so it goes on that way.
  await a.bringToFront();
  const k0 = await a.evaluate(() => {
    const t = window.worldserverTest;
    return t.entities().find((e) => e.id === t.selfId) || null;
  });
  await a.keyboard.down("w");
  await a.waitForTimeout(1000);
  await a.keyboard.up("w");
  const k1 = await waitFor(
    a,
    ([x0, d]) => {
      const t = window.worldserverTest;
      const e = t.entities().find((v) => v.id === t.selfId);
      return e && (e.x - x0) * d > 2 ? e : null;
    },
    { arg: [k0.x, dir], timeout: 5000, what: "A to walk with the W key" },
  );
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
  const labelTexts = await b.evaluate(() => Array.from(document.querySelectorAll(".name-label")).map((el) => el.textContent));

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

  // Let A stop and the view settle, then capture B's view.
  await b.waitForTimeout(700);
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
    moved: after.x - before.x,
    keyboard_moved: k1.x - k0.x,
    direction: dir,
    name_seen: nameSeen,
    labels: labelTexts,
    join_errors: joinErrors,
    screenshot: args.screenshot || null,
    png_bytes: png.length,
    image,
    stats_a: finalA.stats,
    stats_b: finalB.stats,
  };
});
