// The dashboard's worlds and pictures panels (/admin, clients/web/src/admin/curator.js) in
// headless chromium against a server hosting --worlds (tests/test_admin_worlds_browser.py
// starts it, with a bot in the second world). A gallery page (/w/ of the first world) is open
// beside it. From the dashboard only: a file that is no image is chosen for slot --slot (the
// server's refusal is shown in the slot's row), one larger than the server takes (the page
// says so and sends nothing), then --image is dropped on the slot's row: the row shows it under
// the title made from its file's name, the admin API lists it and the gallery page, untouched,
// shows it with that title on its plaque; chosen again with --title typed in the row's title
// box, it hangs under that title (row, API, plaque); --retitle typed in the box and Save title
// retitles it without an upload (same image; row, API, plaque); Remove empties the slot;
// opening a world that is open is refused in words; the second world is closed through the
// confirmation with --reason (typed across polls) and opened again by its id; --file (a world file's path) is opened and shown; the first world is
// reloaded. After each step the script asks the admin API itself what it reports. Last the
// page is looked at at two widths (screenshots, no sideways scrolling).
//
//   node tests/browser/admin_worlds.mjs --url http://127.0.0.1:PORT --token TOKEN
//        --worlds gallery,halls --slot north-1 --image PATH.png --junk PATH --reason TEXT
//        --file PATH.toml --file-id annex --title TEXT --retitle TEXT [--screenshot PATH_PREFIX]
//        [--timeout SECONDS]
// Prints one JSON object (see launch.mjs).

import { readFileSync } from "node:fs";
import { basename } from "node:path";

import { joinGallery, launch, runScript, waitFor } from "./launch.mjs";

const curator = () => window.worldserverAdmin.curator();

runScript(async (args, state) => {
  for (const need of ["url", "token", "worlds", "slot", "image", "junk", "reason", "file", "file-id", "title", "retitle"]) {
    if (!args[need]) throw new Error(`--${need} is required`);
  }
  const [home, other] = args.worlds.split(",");
  const slot = args.slot;
  const api = async (method, path, body) => {
    const res = await fetch(`${args.url}/admin/api/${path}`, {
      method,
      headers: { Authorization: `Bearer ${args.token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    return { status: res.status, body: await res.json() };
  };
  const apiSlot = async () => {
    const world = await api("GET", `worlds/${home}`);
    return world.body.pictures.find((p) => p.id === slot) || null;
  };
  const out = {};

  state.browser = await launch({ viewport: { width: 1280, height: 1000 } });
  const gallery = await joinGallery(state.browser, `${args.url}/w/${home}`, `visitor-${Math.random().toString(36).slice(2, 7)}`);
  const page = await state.browser.newPage("admin");
  await page.goto(`${args.url}/admin`, { waitUntil: "load" });
  await page.waitForSelector("#token:visible");
  await page.fill("#token", args.token);
  await page.click("#token-button");
  await waitFor(page, ({ home, other }) => {
    const c = window.worldserverAdmin.curator();
    const ids = c.worlds.map((w) => w.id);
    return ids.includes(home) && ids.includes(other) && c.pictures && c.pictures.world === home && c.slots.length > 0 &&
      c.worlds.find((w) => w.id === other).players === 1;
  }, { arg: { home, other }, what: "the worlds and the pictures of the default world" });
  const row = page.locator(`#slots li[data-slot="${slot}"]`);
  await row.scrollIntoViewIfNeeded();
  await waitFor(page, (slot) => {
    const s = window.worldserverAdmin.curator().slots.find((v) => v.id === slot);
    return s && s.thumb && s.thumb.complete && s.thumb.width > 0;
  }, { arg: slot, what: "the thumbnail of the slot's picture" });
  out.first = await page.evaluate(curator);
  out.closeDisabled = await page.locator(`#worlds tr[data-id="${home}"] button.close`).isDisabled();
  out.apiBefore = await apiSlot();

  // -- a file that is no image: the server's refusal, in the slot's row
  const result = (pattern) => waitFor(page, ({ slot, pattern }) => {
    const s = window.worldserverAdmin.curator().slots.find((v) => v.id === slot);
    return s && new RegExp(pattern).test(s.result) && s;
  }, { arg: { slot, pattern }, what: `the slot's answer /${pattern}/` });
  const input = row.locator('input[type="file"]');
  await input.setInputFiles(args.junk);
  out.junk = await result("^Refused");
  // -- a file larger than the server takes: said at once, not sent
  const max = out.first.maxBytes;
  await input.setInputFiles({ name: "huge.png", mimeType: "image/png", buffer: Buffer.alloc(max + 1, 7) });
  out.huge = await result("at most");
  out.dropsAfterBad = (await api("GET", "status")).body.drops;

  // -- the image, dropped on the slot's row: in the row, in the API, in the gallery page
  await row.evaluate((li, { name, b64 }) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const dataTransfer = new DataTransfer();
    dataTransfer.items.add(new File([bytes], name, { type: "image/png" }));
    li.dispatchEvent(new DragEvent("dragover", { dataTransfer, bubbles: true, cancelable: true }));
    const marked = li.classList.contains("drop");
    li.dispatchEvent(new DragEvent("drop", { dataTransfer, bubbles: true, cancelable: true }));
    window.droppedMarked = marked;
  }, { name: basename(args.image), b64: readFileSync(args.image).toString("base64") });
  out.dropMarked = await page.evaluate(() => window.droppedMarked);
  out.hung = await result("^Hung");
  out.hungSlot = await waitFor(page, (slot) => {
    const s = window.worldserverAdmin.curator().slots.find((v) => v.id === slot);
    return s && s.image.startsWith("hung-") && s.thumb && s.thumb.complete && s.thumb.width > 0 && s;
  }, { arg: slot, what: "the hung picture's thumbnail" });
  out.apiHung = await apiSlot();
  out.apiWorldsHung = (await api("GET", "worlds")).body.worlds.find((w) => w.id === home);
  out.hungRow = await waitFor(page, (id) => {
    const w = window.worldserverAdmin.curator().worldRows.find((r) => r.id === id && !r.confirm);
    return w && /1 of \d+ hung/.test(w.text) && w.text;
  }, { arg: home, what: "the world's row to count the hung picture" });
  out.galleryHung = await waitFor(gallery, ({ slot, url }) => {
    const s = window.worldserverTest.pictures().slots.find((v) => v.id === slot);
    return s && s.loaded && s.src.endsWith(url) && s;
  }, { arg: { slot, url: out.apiHung.url }, what: "the hung picture in the gallery page" });

  // -- the same file again, with a title typed in the row: hung under that title
  await row.locator("input.title-input").fill(args.title);
  await input.setInputFiles(args.image);
  out.titled = await result("^Hung .* as");
  out.titledSlot = await waitFor(page, ({ slot, title }) => {
    const s = window.worldserverAdmin.curator().slots.find((v) => v.id === slot);
    return s && s.title === title && s;
  }, { arg: { slot, title: args.title }, what: "the typed title in the slot's row" });
  out.apiTitled = await apiSlot();
  out.galleryTitled = await waitFor(gallery, ({ slot, url }) => {
    const s = window.worldserverTest.pictures().slots.find((v) => v.id === slot);
    return s && s.loaded && s.src.endsWith(url) && s;
  }, { arg: { slot, url: out.apiTitled.url }, what: "the titled picture in the gallery page" });

  // -- retitled from the row: --retitle typed in the box, Save title; the image is not sent again
  const canRetitle = async () => (await page.evaluate(curator)).slots.find((v) => v.id === slot).canRetitle;
  await row.locator("input.title-input").fill(args.title); // the title it has: nothing to save
  out.retitleSameTitle = await canRetitle();
  await row.locator("input.title-input").fill(args.retitle);
  out.retitleTyped = await canRetitle();
  await row.locator("button.retitle").click();
  out.retitled = await result("^Retitled");
  out.retitledSlot = await waitFor(page, ({ slot, title }) => {
    const s = window.worldserverAdmin.curator().slots.find((v) => v.id === slot);
    return s && s.title === title && s;
  }, { arg: { slot, title: args.retitle }, what: "the new title in the slot's row" });
  out.apiRetitled = await apiSlot();
  out.galleryRetitled = await waitFor(gallery, ({ slot, title }) => {
    const s = window.worldserverTest.pictures().slots.find((v) => v.id === slot);
    return s && s.loaded && s.title === title && s;
  }, { arg: { slot, title: args.retitle }, what: "the new title on the gallery page's plaque" });

  // -- Remove: an empty frame
  await row.locator("button.remove").click();
  out.removed = await result("^Took");
  out.emptied = await waitFor(page, (slot) => {
    const s = window.worldserverAdmin.curator().slots.find((v) => v.id === slot);
    return s && s.image === "" && s.thumb === null && !s.canRemove && s;
  }, { arg: slot, what: "the slot to show an empty frame" });
  out.apiRemoved = await apiSlot();
  out.galleryEmptied = await waitFor(gallery, (slot) => {
    const s = window.worldserverTest.pictures().slots.find((v) => v.id === slot);
    return s && s.image === "" && s;
  }, { arg: slot, what: "the gallery page to empty the slot" });

  // -- opening a world that is open: refused, in words
  const worldsResult = (pattern) => waitFor(page, (pattern) => {
    const c = window.worldserverAdmin.curator();
    return new RegExp(pattern).test(c.worldsResult) && c.worldsResult;
  }, { arg: pattern, what: `the worlds panel's answer /${pattern}/` });
  await page.fill("#open-name", home);
  await page.click("#open-button");
  out.openTwice = await worldsResult("^Refused");
  out.openTwiceError = (await page.evaluate(curator)).worldsResultError;

  // -- close the other world: asked first, then closed with the reason
  await page.locator(`#worlds tr[data-id="${other}"] button.close`).click();
  out.asking = await page.evaluate(curator);
  out.stillThere = (await api("GET", "worlds")).body.worlds.map((w) => w.id); // nothing closed yet
  // typed across polls: the row and its input stay (focused, the text kept)
  const half = Math.floor(args.reason.length / 2);
  await page.click("#close-reason");
  await page.keyboard.type(args.reason.slice(0, half));
  const polls = await page.evaluate(() => window.worldserverAdmin.polls());
  await waitFor(page, (p) => window.worldserverAdmin.polls() >= p + 2, { arg: polls, what: "two polls while typing" });
  await page.keyboard.type(args.reason.slice(half));
  out.typed = await page.evaluate(() => ({ focused: document.activeElement && document.activeElement.id,
    value: document.getElementById("close-reason").value }));
  await page.click("#close-confirm");
  out.closed = await worldsResult("^Closed");
  out.afterClose = await waitFor(page, (other) => {
    const c = window.worldserverAdmin.curator();
    return c.worldRows.every((r) => r.id !== other) && c.openChoices.includes(other) && c;
  }, { arg: other, what: "the closed world to leave the table" });
  out.apiAfterClose = (await api("GET", "worlds")).body.worlds.map((w) => w.id);

  // -- open it again by its id, and a world file by its path
  await page.fill("#open-name", other);
  await page.click("#open-button");
  out.reopened = await worldsResult(`^Opened ${other}`);
  await page.fill("#open-name", args.file);
  await page.click("#open-button");
  out.openedFile = await worldsResult(`^Opened ${args["file-id"]}`);
  await waitFor(page, (ids) => {
    const rows = window.worldserverAdmin.curator().worldRows.map((r) => r.id);
    return ids.every((id) => rows.includes(id));
  }, { arg: [home, other, args["file-id"]], what: "the three worlds in the table" });
  out.apiAfterOpen = (await api("GET", "worlds")).body.worlds;
  await page.locator(`#worlds tr[data-id="${args["file-id"]}"] button.show`).click();
  out.fileShown = await waitFor(page, (id) => {
    const c = window.worldserverAdmin.curator();
    return c.pictures && c.pictures.world === id && window.worldserverAdmin.snapshot().world === id && c;
  }, { arg: args["file-id"], what: "the opened file's world on the map and its slots" });

  // -- reload the first world from its file
  await page.locator(`#worlds tr[data-id="${home}"] button.reload`).click();
  out.reloaded = await worldsResult(`^Reloaded ${home}`);

  // -- the layout at the dashboard's sizes
  await page.selectOption("#world", home);
  await waitFor(page, (home) => { const c = window.worldserverAdmin.curator(); return c.pictures && c.pictures.world === home; },
    { arg: home, what: "the first world's slots again" });
  const layout = async (width) => {
    await page.setViewportSize({ width, height: 1000 });
    await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))));
    await row.scrollIntoViewIfNeeded();
    const shape = await page.evaluate((slot) => {
      const box = (sel) => { const r = document.querySelector(sel).getBoundingClientRect(); return { left: r.left, right: r.right, width: r.width }; };
      return {
        width: window.innerWidth, scrollWidth: document.documentElement.scrollWidth,
        worlds: box("#worlds-panel"), pictures: box("#pictures-panel"), map: box("#map-panel"),
        upload: box(`#slots li[data-slot="${slot}"] button.upload`), remove: box(`#slots li[data-slot="${slot}"] button.remove`),
        open: box("#open-button"), close: box("#worlds tbody tr:last-child button.close"),
        tables: ["#worlds-panel .scroll", "#pictures-panel .scroll"].map((sel) => {
          const e = document.querySelector(sel);
          return { scrollWidth: e.scrollWidth, clientWidth: e.clientWidth };
        }),
      };
    }, slot);
    if (args.screenshot) await page.screenshot({ path: `${args.screenshot}-${width}.png`, fullPage: true });
    return shape;
  };
  out.wide = await layout(1280);
  out.narrow = await layout(760);
  out.final = await page.evaluate(curator);
  out.image = basename(args.image);
  out.imageBytes = readFileSync(args.image).length;
  return out;
});
