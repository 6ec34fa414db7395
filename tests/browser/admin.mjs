// The dashboard (/admin) in headless chromium against a server with bots in two worlds
// (tests/test_admin_browser.py starts both): a wrong token first (the page says so and keeps
// nothing), then the right one; the map of the default world shows a dot per bot of that world
// (read back from the canvas' pixels), a walking bot's dot moves, the names show on hover, a
// click shows a player's interest radius, the world selector shows the other world's bots; a
// reload keeps the token (not asked again); the Kick button of one bot removes it from the
// table and the map; a notice is sent from the notice box; the charts fill with samples.
//
//   node tests/browser/admin.mjs --url http://127.0.0.1:PORT --token TOKEN
//        --worlds '{"gallery": 12, "halls": 3}' --walker NAME --kick NAME --notice TEXT
//        [--screenshot PATH] [--timeout SECONDS]
// Prints one JSON object (see launch.mjs).

import { launch, runScript, waitFor } from "./launch.mjs";

const snap = () => window.worldserverAdmin.snapshot();

/** The colours of the canvas at each dot's centre, as [r, g, b]. */
const dotPixels = () => {
  const canvas = document.getElementById("map");
  const g = canvas.getContext("2d");
  const scale = canvas.width / canvas.getBoundingClientRect().width;
  return window.worldserverAdmin.snapshot().dots.map((d) => {
    const px = g.getImageData(Math.round(d.px * scale), Math.round(d.py * scale), 1, 1).data;
    return { id: d.id, name: d.name, rgb: [px[0], px[1], px[2]] };
  });
};

/** How many pixels of each chart's canvas are not blank. */
const chartInk = () => Array.from(document.querySelectorAll("#charts canvas"), (c) => {
  const { data } = c.getContext("2d").getImageData(0, 0, c.width, c.height);
  let ink = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 0) ink++;
  return ink;
});

async function main(args, state) {
  const worlds = JSON.parse(args.worlds);
  const total = Object.values(worlds).reduce((a, b) => a + b, 0);
  const [home, other] = Object.keys(worlds);
  const browser = await launch({ viewport: { width: 1280, height: 1000 } });
  state.browser = browser;
  const page = await browser.newPage("admin");
  const out = {};

  // -- a wrong token: a clear message, nothing kept, no polling
  await page.goto(`${args.url}/admin`, { waitUntil: "load" });
  await page.waitForSelector("#token:visible");
  await page.fill("#token", "not-the-admin-token");
  await page.click("#token-button");
  await waitFor(page, () => /refused/.test(document.getElementById("token-error").textContent), { what: "the refusal" });
  out.wrong = await page.evaluate(snap);

  // -- the right one
  await page.fill("#token", args.token);
  await page.click("#token-button");
  await waitFor(page, (n) => { const s = window.worldserverAdmin.snapshot(); return s.verified && s.players === n && s.rows === n; },
    { arg: total, what: `the table to list ${total} players` });
  await waitFor(page, (n) => window.worldserverAdmin.snapshot().dots.length === n, { arg: worlds[home], what: "the dots of the default world" });
  out.first = await page.evaluate(snap);
  out.pixels = await page.evaluate(dotPixels);

  // -- the map is live: the walker's dot moves
  const walker = [];
  for (let i = 0; i < 6; i++) {
    const polls = await page.evaluate(() => window.worldserverAdmin.polls());
    await waitFor(page, (p) => window.worldserverAdmin.polls() > p, { arg: polls, what: "the next poll" });
    const dot = (await page.evaluate(snap)).dots.find((d) => d.name === args.walker);
    if (dot) walker.push({ x: dot.x, z: dot.z, px: dot.px, py: dot.py });
  }
  out.walker = walker;

  // -- hover shows names; a click selects a player and draws its interest radius
  const box = await page.locator("#map").boundingBox();
  const target = out.first.dots.find((d) => d.name !== args.walker);
  await page.mouse.move(box.x + target.px, box.y + target.py);
  out.tip = await waitFor(page, () => window.worldserverAdmin.snapshot().tip, { what: "the hover tip" });
  out.hovered = target.name;
  const fresh = (await page.evaluate(snap)).dots.find((d) => d.id === target.id);
  await page.mouse.click(box.x + fresh.px, box.y + fresh.py);
  await waitFor(page, (id) => window.worldserverAdmin.snapshot().selected === id, { arg: target.id, what: "the selection" });
  out.selected = await page.evaluate(snap);
  out.selectedRow = await page.evaluate(() => document.querySelector("#players tr.selected")?.dataset.id || null);

  // -- the other world
  await page.selectOption("#world", other);
  await waitFor(page, (n) => window.worldserverAdmin.snapshot().dots.length === n, { arg: worlds[other], what: `the dots of ${other}` });
  out.other = await page.evaluate(snap);
  await page.selectOption("#world", home);
  await waitFor(page, (n) => window.worldserverAdmin.snapshot().dots.length === n, { arg: worlds[home], what: `the dots of ${home}` });

  // -- a reload keeps the token for the tab
  await page.reload({ waitUntil: "load" });
  await waitFor(page, (n) => { const s = window.worldserverAdmin.snapshot(); return s.verified && s.players === n; },
    { arg: total, what: "the board after a reload" });
  out.reloaded = await page.evaluate(snap);

  // -- kick one bot from its row
  const row = page.locator("#players tbody tr", { has: page.locator("td.name", { hasText: new RegExp(`^${args.kick}$`) }) });
  out.kickRows = await row.count();
  await row.locator("button.kick").click();
  await waitFor(page, (name) => { const s = window.worldserverAdmin.snapshot(); return /^Kicked/.test(s.actionResult) && s.dots.every((d) => d.name !== name); },
    { arg: args.kick, what: "the kicked bot to leave the map" });
  await waitFor(page, (n) => window.worldserverAdmin.snapshot().rows === n, { arg: total - 1, what: "the table without the kicked bot" });
  out.kicked = await page.evaluate(snap);
  out.kickedNames = await page.evaluate(() => Array.from(document.querySelectorAll("#players td.name"), (td) => td.textContent));

  // -- a notice to every room
  await page.fill("#notice-text", args.notice);
  await page.click("#notice-send");
  out.notice = await waitFor(page, () => { const t = window.worldserverAdmin.snapshot().noticeResult; return /^(Sent|Refused)/.test(t) && t; }, { what: "the notice's answer" });

  // -- the charts hold the polled samples
  await waitFor(page, () => window.worldserverAdmin.snapshot().samples >= 5, { what: "5 samples" });
  out.final = await page.evaluate(snap);
  out.chartInk = await page.evaluate(chartInk);
  if (args.screenshot) await page.screenshot({ path: args.screenshot, fullPage: true });
  return out;
}

runScript(main);
