// The own avatar at the world's walls, in headless chromium against a server started on a
// world file (--set worlds.hosted=gallery): the page builds the room from the world document,
// the player walks straight into the north wall and then slides along it diagonally; the
// server's view of the avatar ends against the wall, and no reconciliation ever moved the
// predicted avatar by more than a few centimetres (the prediction uses the server's walls).
//
//   node tests/browser/walls.mjs --url http://127.0.0.1:PORT [--timeout SECONDS]
// Prints one JSON object (see launch.mjs).

import { joinGallery, launch, runScript, waitFor } from "./launch.mjs";

runScript(async (args, state) => {
  if (!args.url) throw new Error("--url is required");
  state.browser = await launch();
  const page = await joinGallery(state.browser, args.url, `wall-${Math.random().toString(36).slice(2, 7)}`);
  const world = await page.evaluate(() => window.worldserverTest.world());
  const selfPos = () => {
    const t = window.worldserverTest;
    return t.entities().find((e) => e.id === t.selfId) || null;
  };
  const start = await waitFor(page, selfPos, { what: "the own avatar" });
  await page.evaluate(() => window.worldserverTest.sendMove(0, 1, 3500)); // 17.5 m toward +z
  await page.evaluate(() => window.worldserverTest.sendMove(0.7071, 0.7071, 1500)); // slide along it
  // settled: the server's position of the avatar unchanged over 10 ticks
  const end = await waitFor(
    page,
    () => {
      const t = window.worldserverTest;
      const e = t.entities().find((v) => v.id === t.selfId);
      const tick = t.stats().tick;
      if (!e) return null;
      const seen = window.__settle;
      if (!seen || seen.x !== e.x || seen.z !== e.z) {
        window.__settle = { x: e.x, z: e.z, tick };
        return null;
      }
      return tick - seen.tick >= 10 ? e : null;
    },
    { what: "the avatar to stop at the wall" },
  );
  const stats = await page.evaluate(() => window.worldserverTest.stats());
  return { ok: true, world, start, end, stats };
});
