// A Hatongsu-style client in headless chromium: the unmodified @geckos.io/client (bundled
// here in memory with esbuild from clients/web/node_modules) speaking Hatongsu's JSON
// events, as the Hatongsu front end does. Driven by tests/test_hatongsu_browser.py, which
// runs a native Python bot next to it.
//
//   node tests/browser/hatongsu.mjs --url http://127.0.0.1:PORT [--timeout SECONDS]
//
// The page keeps players the way Hatongsu's PlayerManager does (serverNewPlayer /
// serverExistingPlayers add, serverPlayerDisconnected removes, updates for unknown ids are
// ignored), waits for its own spawn like the real client (sending nothing first; after 2 s
// of silence it sends one harmless clientAnimationUpdate, reported as `nudged`), then:
//  1. waits until exactly one remote player (the bot) moved more than 2 m;
//  2. walks its own avatar 6 m by clientPlayerUpdate at 10 Hz, 5 m/s, along the axis way
//     with the most room from its spawn in the default world (the closed gallery room: its
//     walls and benches must not stop the walk), said on stderr first as
//     "progress: walk-way DX DZ";
//  3. prints "progress: done-walking" on stderr, then waits until the bot's avatar is
//     removed by serverPlayerDisconnected (the test closes the bot when it saw the walk).
// Prints one JSON object on stdout (see launch.mjs).

import { createRequire } from "node:module";
import { join } from "node:path";

import { WEB, launch, roomiestWay, runScript, waitFor, worldDoc } from "./launch.mjs";

const WALK_M = 6;

/** The geckos client as one IIFE script that sets window.geckos (nothing of it changed). */
async function geckosBundle() {
  const require = createRequire(join(WEB, "package.json"));
  const esbuild = require("esbuild");
  const out = await esbuild.build({
    stdin: {
      contents: 'import geckos from "@geckos.io/client"; window.geckos = geckos;',
      resolveDir: WEB,
      loader: "js",
    },
    bundle: true,
    write: false,
    format: "iife",
    platform: "browser",
    target: ["es2020"],
    nodePaths: [join(WEB, "node_modules")],
    logLevel: "warning",
  });
  return out.outputFiles[0].text;
}

// Runs in the page: connect, track players like Hatongsu, expose state on window.hat.
const PAGE_CLIENT = (baseUrl) => {
  const hat = {
    id: null,
    connected: false,
    error: null,
    nudged: false,
    events: [],
    counts: {},
    players: [], // {id, mine, transform, state, history: [[x, z], ...]}
    ownSpawn: null,
  };
  window.hat = hat;
  const find = (id) => hat.players.find((p) => p.id === id);
  const channel = window.geckos({ url: baseUrl, port: null });
  hat.channel = channel;
  const note = (event, data) => {
    hat.counts[event] = (hat.counts[event] || 0) + 1;
    if (hat.events.length < 400) hat.events.push([event, data]);
  };
  const add = (p, mine) => {
    const pos = p.transform.position;
    hat.players.push({ id: p.playerId, mine, transform: p.transform, state: 0, history: [[pos.x, pos.z]] });
  };
  channel.onConnect((error) => {
    if (error) {
      hat.error = String(error);
      return;
    }
    hat.id = channel.id;
    hat.connected = true;
    channel.on("serverNewPlayer", (data) => {
      note("serverNewPlayer", data);
      if (data.playerId === channel.id) {
        hat.ownSpawn = data.transform;
        add(data, true);
      } else add(data, false);
    });
    channel.on("serverExistingPlayers", (data) => {
      note("serverExistingPlayers", data);
      for (const p of data) if (p.playerId !== channel.id) add(p, false);
    });
    channel.on("serverPlayerUpdate", (data) => {
      note("serverPlayerUpdate", data);
      const p = find(data.playerId);
      if (p && !p.mine && data.playerId !== channel.id) {
        p.transform = data.transform;
        p.history.push([data.transform.position.x, data.transform.position.z]);
      }
    });
    channel.on("serverPlayerAnimation", (data) => {
      note("serverPlayerAnimation", data);
      const p = find(data.playerId);
      if (p && !p.mine) p.state = data.state;
    });
    channel.on("serverPlayerDisconnected", (id) => {
      note("serverPlayerDisconnected", id);
      const i = hat.players.findIndex((p) => p.id === id);
      if (i !== -1) hat.players.splice(i, 1);
    });
    // Like Hatongsu: nothing is sent before the own spawn. A server that only recognises
    // the mode from a first message gets one harmless event after 2 s of silence.
    setTimeout(() => {
      if (!hat.ownSpawn) {
        hat.nudged = true;
        channel.emit("clientAnimationUpdate", { playerId: channel.id, state: 0 });
      }
    }, 2000);
  });
  hat.walk = (dx, dz, seconds) =>
    new Promise((resolve) => {
      const start = hat.ownSpawn.position;
      const yaw = Math.atan2(dx, dz); // facing the way it walks
      const rotation = { x: 0, y: Math.sin(yaw / 2), z: 0, w: Math.cos(yaw / 2) };
      const steps = Math.round(seconds * 10);
      let i = 0;
      channel.emit("clientAnimationUpdate", { playerId: channel.id, state: 2 });
      const timer = setInterval(() => {
        i += 1;
        const f = Math.min(i, steps) / steps;
        channel.emit("clientPlayerUpdate", { position: { x: start.x + dx * f, y: start.y, z: start.z + dz * f }, rotation });
        if (i >= steps + 5) {
          clearInterval(timer);
          channel.emit("clientAnimationUpdate", { playerId: channel.id, state: 0 });
          resolve({ x: start.x + dx, z: start.z + dz });
        }
      }, 100);
    });
};

const summary = () => {
  const hat = window.hat;
  return {
    id: hat.id,
    nudged: hat.nudged,
    ownSpawn: hat.ownSpawn,
    counts: hat.counts,
    players: hat.players.map((p) => ({ id: p.id, mine: p.mine, state: p.state, transform: p.transform, samples: p.history.length })),
  };
};

runScript(async (args, state) => {
  if (!args.url) throw new Error("--url is required");
  const bundle = await geckosBundle();
  state.browser = await launch();
  const page = await state.browser.newPage("hatongsu");
  // Same origin as the signaling routes: no CORS or private-network rules in the way.
  await page.goto(`${args.url}/health`, { waitUntil: "load" });
  await page.addScriptTag({ content: bundle });
  await page.evaluate(PAGE_CLIENT, args.url);

  await waitFor(page, () => window.hat.connected || window.hat.error, { what: "the data channel" });
  const err = await page.evaluate(() => window.hat.error);
  if (err) throw new Error(`geckos connect failed: ${err}`);
  await waitFor(page, () => window.hat.ownSpawn, { timeout: 15000, what: "the own serverNewPlayer" });

  // 1. The bot (one remote player) moves more than 2 m in what the page is told.
  const botSeen = await waitFor(
    page,
    () => {
      const remotes = window.hat.players.filter((p) => !p.mine);
      if (remotes.length !== 1) return null;
      const h = remotes[0].history;
      const xs = h.map((v) => v[0]);
      const zs = h.map((v) => v[1]);
      const span = Math.hypot(Math.max(...xs) - Math.min(...xs), Math.max(...zs) - Math.min(...zs));
      return span > 2 ? { id: remotes[0].id, span, samples: h.length, state: remotes[0].state } : null;
    },
    { timeout: 30000, what: "the bot to move more than 2 m" },
  );
  const beforeWalk = await page.evaluate(summary);

  // 2. Walk 6 m the way with the most room (the server walks the avatar there at up to max
  // speed); the test learns the way first.
  const spawn = await page.evaluate(() => window.hat.ownSpawn.position);
  const way = roomiestWay(await worldDoc(args.url), spawn.x, spawn.z);
  if (way.clear < WALK_M + 0.5) {
    throw new Error(`the spawn (${spawn.x}, ${spawn.z}) has ${way.clear.toFixed(2)} m of room, the walk needs ${WALK_M + 0.5}: ${JSON.stringify(way.ways)}`);
  }
  process.stderr.write(`progress: walk-way ${way.dx} ${way.dz}\n`);
  const walkedTo = await page.evaluate(([dx, dz]) => window.hat.walk(dx, dz, 1.2), [way.dx * WALK_M, way.dz * WALK_M]);
  process.stderr.write("progress: done-walking\n");

  // 3. The test closes the bot once it saw the walk: the page must be told.
  await waitFor(page, (id) => !window.hat.players.some((p) => p.id === id), {
    arg: botSeen.id,
    timeout: 30000,
    what: "serverPlayerDisconnected for the bot",
  });
  const after = await page.evaluate(summary);
  const events = await page.evaluate(() => window.hat.events.slice(0, 40));
  await page.evaluate(() => window.hat.channel.close());
  return { bot_seen: botSeen, before_walk: beforeWalk, way, walked_to: walkedTo, after, events };
});
