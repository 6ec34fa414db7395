// A curator hangs a picture live (issue 10), in headless chromium against a server hosting the
// gallery world beside the default one: the page at /w/gallery joins, shows the file's picture
// in slot --slot; this script then hangs --image there through the admin API (PUT
// /admin/api/worlds/gallery/pictures/SLOT?title=TITLE with the admin token) and waits, without
// touching the page, until its test hook reports the slot showing the new image (its texture
// loaded from the URL the API answered, at the image's width, its plaque saying --title); then
// takes it down (DELETE: an empty frame, no plaque), and closes the world (POST .../close with a
// reason): the page shows the reason and stays closed.
//
//   node tests/browser/pictures.mjs --url http://127.0.0.1:PORT --token ADMIN_TOKEN
//        --image PATH.png --slot north-1 --title TEXT [--timeout SECONDS]
// Prints one JSON object (see launch.mjs).

import { readFileSync } from "node:fs";

import { joinGallery, launch, runScript, waitFor } from "./launch.mjs";

runScript(async (args, state) => {
  for (const need of ["url", "token", "image", "slot", "title"]) if (!args[need]) throw new Error(`--${need} is required`);
  const admin = (method, path, body) =>
    fetch(`${args.url}/admin/api/worlds/gallery${path}`, {
      method,
      headers: { Authorization: `Bearer ${args.token}`, ...(body && !(body instanceof Uint8Array) ? { "Content-Type": "application/json" } : {}) },
      body: body instanceof Uint8Array ? body : body ? JSON.stringify(body) : undefined,
    }).then(async (r) => ({ status: r.status, body: await r.json() }));
  const slotOf = (page) =>
    page.evaluate((slot) => {
      const p = window.worldserverTest.pictures();
      return { version: p.version, updates: p.updates, slot: p.slots.find((s) => s.id === slot) || null };
    }, args.slot);

  state.browser = await launch();
  const page = await joinGallery(state.browser, `${args.url}/w/gallery`, `curator-${Math.random().toString(36).slice(2, 7)}`);
  const world = await page.evaluate(() => window.worldserverTest.world());
  await waitFor(page, (slot) => {
    const s = window.worldserverTest.pictures().slots.find((v) => v.id === slot);
    return s && s.loaded;
  }, { arg: args.slot, what: "the file's picture in the slot" });
  const before = await slotOf(page);

  const hung = await admin("PUT", `/pictures/${args.slot}?title=${encodeURIComponent(args.title)}`,
    new Uint8Array(readFileSync(args.image)));
  if (hung.status !== 200) throw new Error(`PUT answered ${hung.status}: ${JSON.stringify(hung.body)}`);
  const hungAt = Date.now();
  await waitFor(page, ({ slot, url }) => {
    const s = window.worldserverTest.pictures().slots.find((v) => v.id === slot);
    return s && s.loaded && s.src.endsWith(url);
  }, { arg: { slot: args.slot, url: hung.body.url }, timeout: 20000, what: "the hung picture in the page" });
  const after = await slotOf(page);
  const seenAfterMs = Date.now() - hungAt;

  const removed = await admin("DELETE", `/pictures/${args.slot}`);
  await waitFor(page, (slot) => {
    const s = window.worldserverTest.pictures().slots.find((v) => v.id === slot);
    return s && s.image === "" && !s.loaded;
  }, { arg: args.slot, timeout: 20000, what: "the slot to be emptied in the page" });
  const emptied = await slotOf(page);

  const closed = await admin("POST", "/close", { reason: "the gallery is closed for the night" });
  const notice = await waitFor(page, () => window.worldserverTest.notice, { what: "the page to show the close" });
  const stats = await page.evaluate(() => window.worldserverTest.stats());
  const box = await page.evaluate(() => {
    const r = document.getElementById("notice").getBoundingClientRect();
    return { width: r.width, height: r.height, top: r.top };
  });
  return { world, before, hung: hung.body, after, seen_after_ms: seenAfterMs, removed, emptied, closed, notice, notice_box: box,
    state: stats.state };
});
