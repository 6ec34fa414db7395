// The dashboard page (/admin, admin.html): asks once for the admin token (kept in
// sessionStorage for the tab), then polls the admin API once a second (status first, then
// players and rooms) and shows a top-down map of one hosted world (a dot per player coloured
// by transport, names on hover, the interest radius of a selected player), the players with
// kick and mute buttons, charts of the last minutes (ring of polled samples, samples.js),
// the hosted worlds (open, close, reload) and the picture slots of the world on the map
// (upload, remove: curator.js), the drops and the chat rooms with a notice box. The walls
// come from the world's document (GET /api/worlds/{id}, fetched again when its version
// changes); everything else is the admin API (api.js). Installs the test hook
// window.worldserverAdmin.
//
// Everything the server or a player wrote (names, rooms, error texts) is shown with
// textContent or drawn on canvases, never parsed as HTML. Must not: poll while a token is
// refused (wrong tokens lock the address out), overlap two polls, or keep more than the ring.

import { AdminClient, AdminError, UNAUTHORIZED_TEXT, storeToken, storedToken } from "./api.js";
import { drawChart, formatBytes, formatDuration } from "./charts.js";
import { Curator } from "./curator.js";
import { $, el } from "./dom.js";
import { TRANSPORT_COLORS, dotsNear, drawMap, floorOf, mapHeight, transportColor } from "./map.js";
import { SampleRing, sampleOf } from "./samples.js";
import { chooseWorld } from "./worlds.js";

/** @typedef {import("./api.js").AdminPlayer} AdminPlayer */
/** @typedef {import("./api.js").AdminRoom} AdminRoom */
/** @typedef {import("./api.js").AdminWorlds} AdminWorlds */
/** @typedef {import("./api.js").AdminSlot} AdminSlot */

export const POLL_MS = 1000;
const DOC_RETRY_MS = 10000; // a world document that failed is asked for again after this
const CHART_WINDOW = 300; // seconds the charts show at most (the ring's)
const CHART_MIN_WINDOW = 60; // seconds they show at least, while the ring fills
const TIP_NAMES = 6; // names in the map's hover tip at most

const state = {
  /** @type {AdminClient | null} */
  client: null,
  verified: false, // the token was accepted once
  polling: false,
  again: false, // poll once more as soon as the running poll ends
  timer: 0,
  polls: 0,
  lastOk: 0, // performance.now() of the last answered poll
  /** @type {any} */
  status: null,
  /** @type {AdminPlayer[]} */
  players: [],
  /** @type {AdminRoom[]} */
  rooms: [],
  ring: new SampleRing(),
  world: "",
  /** @type {AdminWorlds | null} */
  listing: null, // GET worlds of the last poll
  /** @type {{ id: string, title: string, version: number, pictures: AdminSlot[] } | null} */
  pictures: null, // the picture slots of the world on the map, at its listed version
  /** @type {Map<string, { doc: any, at: number, pending: boolean }>} */
  docs: new Map(),
  /** @type {number | null} */
  selected: null,
  /** @type {import("./map.js").Dot[]} */
  dots: [],
  /** @type {{ px: number, py: number, r: number } | null} */
  interest: null,
  mapScale: 0,
  /** @type {{ x: number, y: number } | null} */
  mouse: null,
  error: "",
  /** @type {Map<number, { tr: any, cells: any[], mute: any, kick: any }>} */
  rows: new Map(),
  /** @type {{ title: string, points: number, ymax: number, window: number }[]} */
  charts: [],
};

// ---------------------------------------------------------------------------- the token

function showLogin(message) {
  state.client = null;
  state.verified = false;
  window.clearTimeout(state.timer);
  $("login").hidden = false;
  $("board").hidden = true;
  $("forget").hidden = true;
  $("banner").hidden = true;
  $("token-error").textContent = message;
  $("token-button").disabled = false;
  $("token").value = "";
  $("token").focus();
}

/** Takes a token: the first poll says whether the server accepts it. @param {string} token */
function start(token) {
  state.client = new AdminClient(token);
  state.verified = false;
  $("token-button").disabled = true;
  $("token-error").textContent = "checking the token…";
  pollNow();
}

function refused(message) {
  storeToken(sessionStorage, "");
  showLogin(message);
}

// ---------------------------------------------------------------------------- polling

function pollNow() {
  window.clearTimeout(state.timer);
  if (state.polling) state.again = true;
  else void poll();
}

async function poll() {
  const client = state.client;
  if (!client) return;
  state.polling = true;
  const began = performance.now();
  try {
    const status = await client.status(); // alone first: a wrong token is refused once
    const [players, rooms, listing] = await Promise.all([client.players(), client.rooms(), client.worlds()]);
    const pictures = await picturesOf(client, listing, chooseWorld(listing.worlds, state.world));
    if (client !== state.client) return; // the token was forgotten meanwhile
    if (!state.verified) {
      state.verified = true;
      $("login").hidden = true;
      $("board").hidden = false;
      $("forget").hidden = false;
      $("token-error").textContent = "";
    }
    state.status = status;
    state.players = players;
    state.rooms = rooms;
    state.listing = listing;
    state.pictures = pictures;
    state.ring.push(sampleOf(status));
    state.polls++;
    state.lastOk = performance.now();
    setBanner("");
    render();
  } catch (e) {
    if (client !== state.client) return;
    if (e instanceof AdminError && e.kind === "unauthorized") {
      refused(state.verified ? `${UNAUTHORIZED_TEXT} (Was the server started again with a new token?)` : UNAUTHORIZED_TEXT);
      return;
    }
    const text = e instanceof Error ? e.message : String(e);
    if (!state.verified) {
      $("token-error").textContent = `Could not check the token: ${text}; trying again.`;
      setBanner(`Could not check the token: ${text}; trying again every second.`);
    } else if (e instanceof AdminError && e.kind === "unreachable") {
      const age = formatDuration((performance.now() - state.lastOk) / 1000);
      setBanner(`Cannot reach the server: ${text}. Trying again every second; the figures below are ${age} old.`);
    } else {
      setBanner(`The server answered: ${text}`);
    }
  } finally {
    state.polling = false;
    if (state.client === client) {
      if (state.again) {
        state.again = false;
        void poll();
      } else {
        state.timer = window.setTimeout(poll, Math.max(0, POLL_MS - (performance.now() - began)));
      }
    }
  }
}

/**
 * The picture slots of the world `id`: those of the last poll while its listed version is the
 * same, else asked for (null: it is not hosted, or was closed meanwhile).
 * @param {AdminClient} client @param {AdminWorlds} listing @param {string} id
 */
async function picturesOf(client, listing, id) {
  const listed = listing.worlds.find((w) => w.id === id);
  if (!listed) return null;
  const had = state.pictures;
  if (had && had.id === id && had.version === listed.version) return had;
  try {
    return await client.world(id);
  } catch (e) {
    if (e instanceof AdminError && e.kind === "refused" && e.status === 404) return null;
    throw e;
  }
}

/** @param {string} text */
function setBanner(text) {
  state.error = text;
  const b = $("banner");
  b.textContent = text;
  b.hidden = !text;
}

// ---------------------------------------------------------------------------- rendering

function render() {
  renderSummary();
  renderWorlds();
  renderMap();
  renderPlayers();
  renderCharts();
  renderDrops();
  renderRooms();
}

function renderSummary() {
  const s = state.status;
  $("s-version").textContent = s.version;
  $("s-uptime").textContent = formatDuration(s.uptime);
  $("s-rate").textContent = `${s.tick_rate} Hz`;
  const c = s.clients || {};
  const parts = ["udp", "webrtc", "ws", "hatongsu"].filter((t) => c[t]).map((t) => `${t} ${c[t]}`);
  $("s-clients").textContent = `${c.total || 0}${parts.length ? ` (${parts.join(", ")})` : ""}`;
  $("s-entities").textContent = String(s.entities);
  $("s-gc").textContent = `${(s.gc && s.gc.pause_ms_max) || 0} ms`;
  const chat = s.chat || {};
  $("s-chat").textContent = `${chat.users || 0} users, ${chat.sockets || 0} sockets, ${chat.messages_per_second || 0} msg/s`;
  const d = $("draining");
  d.hidden = !s.draining;
  if (s.draining) d.textContent = `Draining: the server takes no one new and stops in ${formatDuration(s.draining.stops_in)}.`;
}

function renderWorlds() {
  /** @type {{ id: string, title: string, default: boolean, players: number }[]} */
  const worlds = state.status.worlds || [];
  state.world = chooseWorld(worlds, state.world);
  const select = $("world");
  const wanted = worlds.map((w) => `${w.id}\u0000${w.title} (${w.players})`);
  const have = Array.from(select.options, (o) => `${o.value}\u0000${o.textContent}`);
  if (wanted.join("\n") !== have.join("\n")) {
    select.replaceChildren(...worlds.map((w) => {
      const o = el("option", "", `${w.title} (${w.players})`);
      o.value = w.id;
      return o;
    }));
  }
  select.value = state.world;
  if (state.listing) curator.renderWorlds(state.listing, state.world);
  curator.renderPictures(state.pictures && state.pictures.id === state.world ? state.pictures : null);
}

/** Shows the world `id` on the map and lists its pictures (asked for at once). @param {string} id */
function showWorld(id) {
  if (id === state.world) return;
  state.world = id;
  $("world").value = id;
  if (state.listing) curator.renderWorlds(state.listing, id);
  curator.renderPictures(null);
  renderMap();
  pollNow();
}

/** The world's document (walls, floor), asked for once and again when the admin API lists a
 * new version of it (a reload, a picture); the one at hand until the new one came, null until
 * the first did. @param {string} id */
function worldDoc(id) {
  if (!id) return null;
  const now = performance.now();
  let entry = state.docs.get(id);
  const listed = state.listing && state.listing.worlds.find((w) => w.id === id);
  const stale = Boolean(entry && entry.doc && listed && entry.doc.version !== listed.version);
  if (!entry || (!entry.pending && (stale || (!entry.doc && now - entry.at > DOC_RETRY_MS)))) {
    const fresh = { doc: entry ? entry.doc : null, at: now, pending: true };
    entry = fresh;
    state.docs.set(id, fresh);
    fetch(`/api/worlds/${encodeURIComponent(id)}`, { headers: { Accept: "application/json" } })
      .then((res) => (res.ok ? res.json() : null))
      .catch(() => null)
      .then((doc) => {
        fresh.doc = doc && typeof doc === "object" ? doc : null;
        fresh.pending = false;
        fresh.at = performance.now();
        if (fresh.doc && state.verified && id === state.world) renderMap();
      });
  }
  return entry.doc;
}

/** The players shown on the map: those of the selected world. */
function worldPlayers() {
  return state.players.filter((p) => p.world === state.world);
}

function renderMap() {
  if (!state.status) return;
  const canvas = $("map");
  const players = worldPlayers();
  const doc = worldDoc(state.world);
  const width = Math.max(200, Math.floor(canvas.parentElement.clientWidth));
  const height = mapHeight(floorOf(doc, players), width);
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
    canvas.style.height = `${height}px`;
  }
  const g = canvas.getContext("2d");
  if (!g) return;
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  const drawn = drawMap(g, { width, height, doc, players, selected: state.selected, radius: state.status.interest_radius || 0 });
  state.dots = drawn.dots;
  state.interest = drawn.interest;
  state.mapScale = drawn.scale;
  renderTip();
  renderMapInfo();
}

function renderMapInfo() {
  const info = $("map-info");
  const p = state.players.find((q) => q.id === state.selected);
  if (!p) {
    info.textContent = "Click a dot or a player's name to see its interest radius.";
    return;
  }
  const [x, , z] = p.position;
  info.textContent = `${p.name || `player ${p.id}`} (${p.transport}, world ${p.world}) at ${x.toFixed(1)}, ${z.toFixed(1)}: ` +
    `the ring is its interest radius, ${state.status.interest_radius} m.`;
}

function renderTip() {
  const tip = $("map-tip");
  const near = state.mouse ? dotsNear(state.dots, state.mouse.x, state.mouse.y) : [];
  if (!near.length || !state.mouse) {
    tip.hidden = true;
    return;
  }
  const lines = near.slice(0, TIP_NAMES).map((d) => `${d.name || `player ${d.id}`} (${d.transport})`);
  if (near.length > TIP_NAMES) lines.push(`and ${near.length - TIP_NAMES} more`);
  tip.textContent = lines.join("\n");
  tip.hidden = false;
  tip.style.left = `${state.mouse.x + 12}px`;
  tip.style.top = `${state.mouse.y + 12}px`;
}

/** Selects a player (null: none) and shows its world. @param {number | null} id */
function select(id) {
  state.selected = id;
  const p = state.players.find((q) => q.id === id);
  if (p) showWorld(p.world);
  for (const [rid, row] of state.rows) row.tr.classList.toggle("selected", rid === id);
  renderMap();
}

function renderPlayers() {
  const players = state.players;
  $("players-count").textContent = String(players.length);
  const tbody = $("players").tBodies[0];
  const seen = new Set();
  for (const p of players) {
    seen.add(p.id);
    let row = state.rows.get(p.id);
    if (!row) {
      row = playerRow(p);
      state.rows.set(p.id, row);
    }
    const [x, , z] = p.position;
    const muted = p.muted_for > 0;
    const texts = [
      String(p.id), p.name || "—", p.world, p.transport, p.address || "—", `${x.toFixed(1)}, ${z.toFixed(1)}`,
      p.rtt_ms === null ? "—" : `${p.rtt_ms} ms`, formatDuration(p.connected_for),
      `${formatBytes(p.bytes_in)} / ${formatBytes(p.bytes_out)}`,
      `${p.chat_sockets} socket${p.chat_sockets === 1 ? "" : "s"}${muted ? `, muted ${formatDuration(p.muted_for)}` : ""}`,
    ];
    texts.forEach((t, i) => {
      if (row.cells[i].textContent !== t) row.cells[i].textContent = t;
    });
    row.cells[3].style.setProperty("--dot", transportColor(p.transport));
    row.mute.textContent = muted ? "Unmute" : "Mute";
    row.mute.dataset.muted = muted ? "1" : "";
    row.mute.disabled = !p.name;
    row.tr.classList.toggle("selected", p.id === state.selected);
    tbody.appendChild(row.tr); // in the API's order (by id); moves an existing row only
  }
  for (const [id, row] of state.rows) {
    if (!seen.has(id)) {
      row.tr.remove();
      state.rows.delete(id);
    }
  }
  if (state.selected !== null && !seen.has(state.selected)) state.selected = null;
}

/** A table row for a player, its buttons wired to its id. @param {AdminPlayer} p */
function playerRow(p) {
  const tr = el("tr");
  tr.dataset.id = String(p.id);
  const cells = [];
  for (let i = 0; i < 10; i++) cells.push(tr.appendChild(el("td")));
  cells[1].className = "name";
  cells[1].title = "show on the map";
  cells[1].addEventListener("click", () => select(p.id));
  cells[3].className = "transport";
  const actions = tr.appendChild(el("td", "actions"));
  const kick = actions.appendChild(el("button", "danger kick", "Kick"));
  kick.type = "button";
  kick.setAttribute("aria-label", `kick ${p.name || `player ${p.id}`}`);
  kick.addEventListener("click", () => kickPlayer(p.id, p.name));
  const mute = actions.appendChild(el("button", "mute", "Mute"));
  mute.type = "button";
  mute.addEventListener("click", () => (mute.dataset.muted ? unmutePlayer(p.id) : mutePlayer(p.id)));
  return { tr, cells, mute, kick };
}

/** The chart definitions: title, the lines of a sample, the axis' format. */
const CHARTS = [
  {
    title: "tick duration, ms",
    format: (/** @type {number} */ v) => v.toFixed(v < 10 ? 1 : 0),
    lines: [
      { label: "p50", color: "#4f9de8", pick: (/** @type {import("./samples.js").Sample} */ s) => s.tickP50 },
      { label: "p99", color: "#f3c26b", pick: (/** @type {import("./samples.js").Sample} */ s) => s.tickP99 },
    ],
  },
  {
    title: "tick lateness, ms",
    format: (/** @type {number} */ v) => v.toFixed(v < 10 ? 1 : 0),
    lines: [
      { label: "p50", color: "#4f9de8", pick: (/** @type {import("./samples.js").Sample} */ s) => s.lateP50 },
      { label: "p99", color: "#f3c26b", pick: (/** @type {import("./samples.js").Sample} */ s) => s.lateP99 },
    ],
  },
  {
    title: "clients",
    format: (/** @type {number} */ v) => String(Math.round(v)),
    lines: [
      { label: "total", color: "#e9edf2", pick: (/** @type {import("./samples.js").Sample} */ s) => s.clients.total || 0 },
      ...["udp", "webrtc", "ws", "hatongsu"].map((t) => ({
        label: t, color: transportColor(t), pick: (/** @type {import("./samples.js").Sample} */ s) => s.clients[t] || 0,
      })),
    ],
  },
  {
    title: "bytes per second",
    format: (/** @type {number} */ v) => formatBytes(v),
    lines: [
      { label: "out", color: "#2e9d5b", pick: (/** @type {import("./samples.js").Sample} */ s) => s.bytesOut },
      { label: "in", color: "#c7812f", pick: (/** @type {import("./samples.js").Sample} */ s) => s.bytesIn },
    ],
  },
  {
    title: "drops per second",
    format: (/** @type {number} */ v) => (v < 10 ? v.toFixed(1) : String(Math.round(v))),
    lines: [{ label: "drops", color: "#ff9a9a", pick: (/** @type {import("./samples.js").Sample} */ s) => s.drops }],
  },
];

/** @type {{ canvas: any, now: any }[]} */
const chartViews = [];

function buildCharts() {
  const box = $("charts");
  for (const c of CHARTS) {
    const fig = box.appendChild(el("figure"));
    const cap = fig.appendChild(el("figcaption"));
    const title = cap.appendChild(el("span", "", c.title));
    for (const line of c.lines) {
      const key = title.appendChild(el("span", "key", line.label));
      key.style.setProperty("--line", line.color);
    }
    const now = cap.appendChild(el("span", "now"));
    const canvas = fig.appendChild(el("canvas"));
    canvas.setAttribute("aria-label", `chart: ${c.title}`);
    chartViews.push({ canvas, now });
  }
}

function renderCharts() {
  const ring = state.ring;
  const last = ring.last;
  if (!last) return;
  const span = last.t - ring.samples[0].t;
  const shown = Math.min(CHART_WINDOW, Math.max(CHART_MIN_WINDOW, Math.ceil(span / 60) * 60));
  state.charts = CHARTS.map((c, i) => {
    const { canvas, now } = chartViews[i];
    const width = Math.max(200, Math.floor(canvas.clientWidth || canvas.parentElement.clientWidth));
    const height = Math.max(60, Math.floor(canvas.clientHeight || 110));
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(height * dpr);
    }
    const g = canvas.getContext("2d");
    const lines = c.lines.map((l) => ({ label: l.label, color: l.color, points: ring.series(l.pick) }));
    now.textContent = c.lines.map((l) => `${l.label} ${c.format(l.pick(last))}`).join("  ");
    let ymax = 0;
    if (g) {
      g.setTransform(dpr, 0, 0, dpr, 0, 0);
      ymax = drawChart(g, { width, height, lines, now: last.t, window: shown, format: c.format });
    }
    return { title: c.title, points: ring.length, ymax, window: shown };
  });
}

function renderDrops() {
  const rows = state.ring.drops();
  const tbody = $("drops").tBodies[0];
  tbody.replaceChildren(...rows.map((r) => {
    const tr = el("tr");
    tr.append(el("td", "", r.reason), el("td", "", String(r.recent)), el("td", "", String(r.total)));
    return tr;
  }));
  $("drops-none").hidden = rows.length > 0;
  $("drops-rate").textContent = `${state.status.drops_per_second || 0}/s now`;
}

function renderRooms() {
  const rooms = state.rooms;
  const tbody = $("rooms").tBodies[0];
  tbody.replaceChildren(...rooms.map((r) => {
    const tr = el("tr");
    tr.dataset.id = String(r.id);
    const kind = r.public ? "public" : r.private ? "private" : "group";
    tr.append(el("td", "", String(r.id)), el("td", "", r.name), el("td", "", kind),
      el("td", "", String(r.sockets)), el("td", "", String(r.users)));
    return tr;
  }));
  const select = $("notice-room");
  const wanted = ["", ...rooms.map((r) => String(r.id))];
  if (Array.from(select.options, (o) => o.value).join(",") !== wanted.join(",")) {
    const keep = select.value;
    const every = el("option", "", "every room");
    every.value = "";
    select.replaceChildren(every, ...rooms.map((r) => {
      const o = el("option", "", `${r.name} (${r.id})`);
      o.value = String(r.id);
      return o;
    }));
    select.value = wanted.includes(keep) ? keep : "";
  }
}

// ---------------------------------------------------------------------------- actions

/**
 * Runs an action against the API and says how it went in `out`.
 * @param {any} out the element for the result
 * @param {(client: AdminClient) => Promise<any>} run
 * @param {(answer: any) => string} said the text of a success
 */
async function act(out, run, said) {
  const client = state.client;
  if (!client) return;
  out.className = "";
  out.textContent = "…";
  try {
    const answer = await run(client);
    out.className = "ok";
    out.textContent = said(answer);
    pollNow();
  } catch (e) {
    if (e instanceof AdminError && e.kind === "unauthorized") {
      refused(UNAUTHORIZED_TEXT);
      return;
    }
    out.className = "error";
    out.textContent = `Refused: ${e instanceof Error ? e.message : String(e)}`;
  }
}

/** @param {number} id @param {string} name */
function kickPlayer(id, name) {
  const reason = String($("kick-reason").value || "");
  const ban = Number($("kick-ban").value) || 0;
  void act($("action-result"), (c) => c.kick(id, reason, ban), (a) =>
    `Kicked ${a.name || name || `player ${id}`}: ${a.sessions} avatar(s), ${a.chat_sockets} chat socket(s)` +
    (a.ban > 0 ? `; banned for ${formatDuration(a.ban)}` : ""));
}

/** @param {number} id */
function mutePlayer(id) {
  const seconds = Number($("mute-seconds").value) || 600;
  void act($("action-result"), (c) => c.mute(id, seconds), (a) => `Muted ${a.name} for ${formatDuration(a.seconds)}`);
}

/** @param {number} id */
function unmutePlayer(id) {
  void act($("action-result"), (c) => c.unmute(id), (a) => (a.was_muted ? `Unmuted ${a.name}` : `${a.name} was not muted`));
}

function sendNotice(/** @type {Event} */ ev) {
  ev.preventDefault();
  const input = $("notice-text");
  const text = String(input.value || "");
  if (!text.trim()) return;
  const room = $("notice-room").value;
  void act($("notice-result"), (c) => c.notice(text, room ? Number(room) : null), (a) => {
    input.value = "";
    const n = (a.rooms || []).length;
    return `Sent to ${n} room${n === 1 ? "" : "s"}: ${a.text}`;
  });
}

const curator = new Curator({ act, show: showWorld });

// ---------------------------------------------------------------------------- the page

function installTestHook() {
  window.worldserverAdmin = {
    polls: () => state.polls,
    curator: () => curator.snapshot(),
    snapshot: () => ({
      verified: state.verified,
      login: !$("login").hidden,
      loginError: $("token-error").textContent,
      banner: state.error,
      world: state.world,
      worlds: Array.from($("world").options, (/** @type {any} */ o) => o.value),
      players: state.players.length,
      worldPlayers: worldPlayers().length,
      rows: $("players").tBodies[0].rows.length,
      dots: state.dots.map((d) => ({ ...d })),
      selected: state.selected,
      interest: state.interest,
      radius: state.status ? state.status.interest_radius : null,
      scale: state.mapScale,
      samples: state.ring.length,
      charts: state.charts,
      drops: state.ring.drops(),
      rooms: state.rooms.map((r) => ({ ...r })),
      tip: $("map-tip").hidden ? null : $("map-tip").textContent,
      actionResult: $("action-result").textContent,
      noticeResult: $("notice-result").textContent,
      tokenStored: Boolean(storedToken(sessionStorage)),
    }),
  };
}

function main() {
  installTestHook();
  buildCharts();
  $("legend").replaceChildren(...Object.keys(TRANSPORT_COLORS).filter((t) => t !== "other").map((t) => {
    const li = el("li", "", t);
    li.style.setProperty("--dot", transportColor(t));
    return li;
  }));
  $("token-form").addEventListener("submit", (/** @type {Event} */ ev) => {
    ev.preventDefault();
    const token = String($("token").value || "").trim();
    if (!token) {
      $("token-error").textContent = "Enter the admin token.";
      return;
    }
    storeToken(sessionStorage, token);
    start(token);
  });
  $("forget").addEventListener("click", () => refused(""));
  $("world").addEventListener("change", () => showWorld($("world").value));
  const canvas = $("map");
  canvas.addEventListener("mousemove", (/** @type {MouseEvent} */ ev) => {
    const r = canvas.getBoundingClientRect();
    state.mouse = { x: ev.clientX - r.left, y: ev.clientY - r.top };
    renderTip();
  });
  canvas.addEventListener("mouseleave", () => {
    state.mouse = null;
    renderTip();
  });
  canvas.addEventListener("click", (/** @type {MouseEvent} */ ev) => {
    const r = canvas.getBoundingClientRect();
    const near = dotsNear(state.dots, ev.clientX - r.left, ev.clientY - r.top);
    select(near.length ? near[0].id : null);
  });
  $("notice-form").addEventListener("submit", sendNotice);
  window.addEventListener("resize", () => {
    if (state.verified) {
      renderMap();
      renderCharts();
    }
  });
  const token = storedToken(sessionStorage);
  if (token) {
    $("login").hidden = true; // asked once per tab: a kept token is tried at once
    start(token);
  } else {
    showLogin("");
  }
}

main();
