// Shared helpers for the browser test scripts (driven by tests/test_browser*.py): launch
// Debian's chromium through playwright-core (installed in clients/web/node_modules) with a
// fresh user-data-dir and the flags this machine needs, join the gallery as a player, find
// the way with the most room to walk in the world the server hosts (its walls and benches:
// the default world is the closed gallery room), and report a JSON result on stdout.
//
//   import { launch, joinGallery, parseArgs, finish } from "./launch.mjs";
//   const args = parseArgs();                       // --url http://127.0.0.1:PORT ...
//   const browser = await launch();                 // { context, newPage, close, logs }
//   const page = await joinGallery(browser, args.url, "alice");
//   ...
//   await finish(browser, { ok: true, ... });       // prints JSON, closes, exits 0
//
// Scripts print exactly one JSON object on stdout; on failure it has ok: false and an
// error, and the process exits with code 1. Diagnostics (page console errors) are
// included in the JSON.

import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { WallRays } from "../../clients/web/src/world/rays.js";

const HERE = dirname(fileURLToPath(import.meta.url));
export const REPO = join(HERE, "..", "..");
export const WEB = join(REPO, "clients", "web");
export const CHROMIUM = process.env.WORLDSERVER_CHROMIUM || "/usr/bin/chromium";

/** Flags for headless chromium on this machine (closed network, no GPU, loopback WebRTC). */
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-quic",
  "--no-first-run",
  "--allow-loopback-in-peer-connection",
  "--disable-features=WebRtcHideLocalIpsWithMdns",
  // WebGL without a GPU: SwiftShader through ANGLE (newer Chromium needs this opt-in).
  "--use-angle=swiftshader",
  "--enable-unsafe-swiftshader",
];

const SETUP_HINT = "run `bash scripts/web.sh --browser`";

/** playwright-core's chromium, resolved from clients/web/node_modules. */
export function playwrightChromium() {
  const require = createRequire(join(WEB, "package.json"));
  let pw;
  try {
    pw = require("playwright-core");
  } catch (e) {
    throw new Error(`playwright-core is not installed in clients/web/node_modules: ${SETUP_HINT} (${e.message})`);
  }
  return pw.chromium;
}

/** A device of playwright's list (e.g. "Pixel 7": viewport, userAgent, deviceScaleFactor,
 *  isMobile, hasTouch) as options for launch({ device }). */
export function deviceOptions(name) {
  const require = createRequire(join(WEB, "package.json"));
  const d = require("playwright-core").devices[name];
  if (!d) throw new Error(`unknown device ${name}`);
  const { defaultBrowserType, ...options } = d;
  return options;
}

/**
 * Launches chromium with a fresh user-data-dir. Options: extraArgs (more flags), viewport,
 * initScript (a function or source string run in every page before its scripts), device
 * (deviceOptions(name): phone emulation with touch; its viewport wins).
 * Returns { context, newPage(), close(), logs }.
 */
export async function launch({ extraArgs = [], viewport = { width: 960, height: 600 }, initScript = null, device = null } = {}) {
  if (!existsSync(CHROMIUM)) throw new Error(`chromium not found at ${CHROMIUM}: ${SETUP_HINT}`);
  const chromium = playwrightChromium();
  const userDataDir = mkdtempSync(join(tmpdir(), "worldserver-chromium-"));
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: [...CHROMIUM_ARGS, ...extraArgs],
      viewport,
      timeout: 60000,
      ...(device || {}),
    });
  } catch (e) {
    rmSync(userDataDir, { recursive: true, force: true });
    throw e;
  }
  if (initScript) await context.addInitScript(initScript);
  const logs = [];
  const watch = (page, label) => {
    page.on("console", (msg) => {
      if (msg.type() === "error" || msg.type() === "warning") logs.push(`${label} console.${msg.type()}: ${msg.text()}`);
    });
    page.on("pageerror", (err) => logs.push(`${label} pageerror: ${err.message}`));
  };
  let pages = 0;
  const browser = {
    context,
    logs,
    userDataDir,
    async newPage(label = `page${++pages}`) {
      const page = await context.newPage();
      watch(page, label);
      return page;
    },
    async close() {
      try {
        await context.close();
      } finally {
        rmSync(userDataDir, { recursive: true, force: true });
      }
    },
  };
  return browser;
}

/** Waits until fn(arg) is truthy in the page; throws with `what` on timeout. */
export async function waitFor(page, fn, { arg, timeout = 20000, what = "condition" } = {}) {
  try {
    const handle = await page.waitForFunction(fn, arg, { timeout, polling: 100 });
    return await handle.jsonValue();
  } catch (e) {
    throw new Error(`timed out after ${timeout} ms waiting for ${what}: ${e.message.split("\n")[0]}`);
  }
}

/**
 * Opens the gallery at baseUrl in a new page, types `name` into the join overlay, submits,
 * and waits until window.worldserverTest.ready (connected, first snapshot decoded).
 */
/** For `page.evaluate`/`waitFor` with `[key, ticks]`: our avatar's authoritative position
 *  ({x, z}) once it stopped changing over `ticks` server ticks while newer snapshots kept
 *  coming (a busy page sends its inputs late and its mirror trails the server: the avatar may
 *  still move after a walk's time is up); null until then. `key` names the page global that
 *  keeps the last change. */
export const settledSelf = ([key, ticks]) => {
  const t = window.worldserverTest;
  const e = t.entities().find((v) => v.id === t.selfId);
  const tick = t.stats().tick;
  if (!e) return null;
  const seen = window[key];
  if (!seen || seen.x !== e.x || seen.z !== e.z) {
    window[key] = { x: e.x, z: e.z, tick };
    return null;
  }
  return tick - seen.tick >= ticks ? { x: e.x, z: e.z } : null;
};

export async function joinGallery(browser, baseUrl, name, { label = name, timeout = 30000 } = {}) {
  const page = await browser.newPage(label);
  await page.goto(baseUrl, { waitUntil: "load", timeout });
  await page.waitForSelector("#join-name:not([disabled])", { timeout });
  await page.fill("#join-name", name);
  await page.click("#join-button");
  try {
    await waitFor(page, () => window.worldserverTest && window.worldserverTest.ready, {
      timeout,
      what: `${label} to be connected`,
    });
  } catch (e) {
    const info = await page
      .evaluate(() => ({
        joinError: document.getElementById("join-error")?.textContent,
        stats: window.worldserverTest ? window.worldserverTest.stats() : null,
      }))
      .catch(() => null);
    throw new Error(`${e.message}; page state: ${JSON.stringify(info)}`);
  }
  return page;
}

/** A hosted world's document (GET /api/worlds/{id}; without an id, the default world's). */
export async function worldDoc(baseUrl, id = null) {
  const get = async (path) => {
    const res = await fetch(`${baseUrl}${path}`, { headers: { Accept: "application/json" } });
    if (!res.ok) throw new Error(`GET ${path}: HTTP ${res.status}`);
    return res.json();
  };
  const world = id || (await get("/api/worlds")).default;
  return get(`/api/worlds/${encodeURIComponent(world)}`);
}

/**
 * The straight way with the most room for an avatar standing at (x, z) in the world `doc`
 * (worldDoc): of the four axis directions (+x, -x, +z, -z), the one where the avatar's circle
 * (the world's entity_radius) goes farthest before it touches a wall or a bench (the walls of
 * the page's own collision, clients/web/src/world/rays.js) or the edge of the floor.
 * Returns { dx, dz, yaw, clear } (unit direction, the page's yaw for it, metres free) and
 * `ways`, the room of all four. Tests walk this way so that a closed room does not stop them.
 */
export function roomiestWay(doc, x, z) {
  const r = doc.entity_radius;
  const rays = new WallRays(doc);
  const reach = 4 * Math.max(doc.floor.max[0] - doc.floor.min[0], doc.floor.max[1] - doc.floor.min[1]);
  const ways = [[1, 0], [-1, 0], [0, 1], [0, -1]].map(([dx, dz]) => {
    const hit = rays.firstHit({ x, y: 0, z }, { x: x + dx * reach, y: 0, z: z + dz * reach }, r);
    const toWall = hit === null ? Infinity : hit * reach;
    const toEdge = dx > 0 ? doc.floor.max[0] - r - x : dx < 0 ? x - (doc.floor.min[0] + r) : dz > 0 ? doc.floor.max[1] - r - z : z - (doc.floor.min[1] + r);
    return { dx, dz, yaw: Math.atan2(dx, dz), clear: Math.max(0, Math.min(toWall, toEdge)) };
  });
  const best = ways.reduce((a, b) => (b.clear > a.clear ? b : a));
  return { ...best, ways: ways.map((w) => ({ dx: w.dx, dz: w.dz, clear: w.clear })) };
}

/** --key value pairs (and bare --flags) from argv. */
export function parseArgs(argv = process.argv.slice(2)) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) continue;
    const key = a.slice(2);
    if (i + 1 < argv.length && !argv[i + 1].startsWith("--")) out[key] = argv[++i];
    else out[key] = true;
  }
  return out;
}

/** Prints the JSON result, closes the browser, exits (1 unless result.ok). */
export async function finish(browser, result) {
  if (browser) {
    result.logs = [...(result.logs || []), ...browser.logs].slice(0, 50);
    await browser.close().catch(() => {});
  }
  // Exit only once the line is written: a pipe takes 64 KiB at a time, and exiting earlier
  // would cut a long result short.
  await new Promise((resolve) => process.stdout.write(`${JSON.stringify(result)}\n`, resolve));
  process.exit(result.ok ? 0 : 1);
}

/** Runs main(args) -> result object; any exception becomes { ok: false, error }. */
export async function runScript(main) {
  const args = parseArgs();
  const state = { browser: null };
  const timer = setTimeout(() => {
    finish(state.browser, { ok: false, error: `script timed out after ${args.timeout || 120} s` });
  }, 1000 * Number(args.timeout || 120));
  try {
    const result = await main(args, state);
    clearTimeout(timer);
    await finish(state.browser, { ok: true, ...result });
  } catch (e) {
    clearTimeout(timer);
    await finish(state.browser, { ok: false, error: e && e.stack ? e.stack : String(e) });
  }
}

/** Pixel statistics of a PNG (bytes) computed in a page canvas: distinct colours, spread. */
export async function pngStats(page, pngBytes) {
  const dataUrl = `data:image/png;base64,${Buffer.from(pngBytes).toString("base64")}`;
  return page.evaluate(async (src) => {
    const img = new Image();
    img.src = src;
    await img.decode();
    const c = document.createElement("canvas");
    c.width = img.naturalWidth;
    c.height = img.naturalHeight;
    const g = c.getContext("2d");
    g.drawImage(img, 0, 0);
    const { data } = g.getImageData(0, 0, c.width, c.height);
    const colors = new Set();
    let sum = 0;
    let sum2 = 0;
    const n = data.length / 4;
    for (let i = 0; i < data.length; i += 4) {
      const lum = 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
      sum += lum;
      sum2 += lum * lum;
      if (colors.size < 100000) colors.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
    }
    const mean = sum / n;
    return { width: c.width, height: c.height, distinct_colors: colors.size, luminance_mean: mean, luminance_std: Math.sqrt(Math.max(0, sum2 / n - mean * mean)) };
  }, dataUrl);
}
