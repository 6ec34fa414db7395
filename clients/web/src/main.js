// The web client's entry point: the join overlay, the 3D gallery view, keyboard, mouse and
// touch controls (ui/touch.js), the status panel and the page's layout (ui/layout.js), name
// labels from /api/players (which show: scene/labels.js), the camera kept in front of the
// walls (scene/camera.js), and the test hook window.worldserverTest. The network session
// lives in net/session.js.
//
// Everything a server or another player wrote (names, titles, error texts) is shown with
// textContent or drawn on canvases, never parsed as HTML.

import * as THREE from "three";
import { CSS2DRenderer } from "three/addons/renderers/CSS2DRenderer.js";

import { idleCallHook, mountCalls } from "./calls/index.js";
import { idleChatHook, mountChat } from "./chat/index.js";
import { fetchJson, getJson } from "./net/http.js";
import { lastName, remember, secretFor } from "./net/names.js";
import { NetSession } from "./net/session.js";
import { AvatarManager } from "./scene/avatars.js";
import { buildGallery } from "./scene/gallery.js";
import { buildWorld, hasRoom } from "./scene/world.js";
import { Walls } from "./world/walls.js";
import { DynamicResolution, isSoftwareRenderer, webglRendererName } from "./scene/quality.js";
import { FollowCamera } from "./scene/camera.js";
import { NameTags } from "./scene/labels.js";
import { PageLayout, fieldOfView } from "./ui/layout.js";
import { TouchStick, touchScreen } from "./ui/touch.js";
import { WallRays } from "./world/rays.js";
import { WorldWatcher } from "./world/live.js";

/** The page's element `id`: index.html has every one this script asks for.
 * @param {string} id @returns {HTMLElement} */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const PLAYERS_REFRESH_MS = 3000;
const PLAYERS_MIN_GAP_MS = 500;
const TURN_SPEED = 2.2; // rad/s with the arrow keys
const MOUSE_TURN = 0.005; // rad per pixel

/**
 * The page's state: one object read by the frame loop, the controls and the test hook.
 * @typedef {object} PageState
 * @property {NetSession | null} session
 * @property {ReturnType<typeof mountChat> | null} chat mountChat(): panel, client, speech bubbles
 * @property {ReturnType<typeof mountCalls> | null} [calls] mountCalls(): proximity calls on the chat socket
 * @property {string} name
 * @property {Map<number, string>} names entity id -> name
 * @property {number} playersFetchedAt
 * @property {boolean} playersInFlight
 * @property {number} yaw
 * @property {number} pitch
 * @property {Set<string>} keys
 * @property {boolean} jump
 * @property {{ mx: number, mz: number, until: number } | null} testMove
 * @property {THREE.WebGLRenderer | null} renderer
 * @property {CSS2DRenderer | null} labels
 * @property {THREE.Scene | null} scene
 * @property {THREE.PerspectiveCamera | null} camera
 * @property {AvatarManager | null} avatars
 * @property {import("./scene/gallery.js").BuiltRoom | null} gallery
 * @property {FollowCamera | null} follow the third-person camera, in front of the walls
 * @property {NameTags | null} tags which name tags show
 * @property {PageLayout | null} layout status toggle, chat folded on small screens
 * @property {TouchStick | null} stick walking on touch screens
 * @property {string} webglError
 * @property {number} lastFrame
 * @property {number} frames
 * @property {number} renderMs mean time of one render call
 * @property {number} lastRenderAt
 * @property {DynamicResolution | null} quality
 * @property {string} gpuName
 * @property {number} frameMs mean time between frames
 * @property {(import("./world/walls.js").WorldDoc & { id?: string }) | null} [worldDoc] the world document shown
 * @property {string} [worldId] the world joined ("" for the server's default)
 * @property {WorldWatcher | null} [watcher] keeps the world document current (world/live.js)
 */

/** @type {PageState} */
const state = {
  session: null,
  chat: null, // mountChat(): panel, client, speech bubbles
  name: "",
  names: new Map(), // entity id -> name
  playersFetchedAt: 0,
  playersInFlight: false,
  yaw: 0,
  pitch: 0.35,
  keys: new Set(),
  jump: false,
  testMove: null, // { mx, mz, until }
  renderer: null,
  labels: null,
  scene: null,
  camera: null,
  avatars: null,
  gallery: null,
  follow: null, // FollowCamera: the third-person camera, in front of the walls
  tags: null, // NameTags: which name tags show
  layout: null, // PageLayout: status toggle, chat folded on small screens
  stick: null, // TouchStick: walking on touch screens
  webglError: "",
  lastFrame: performance.now(),
  frames: 0,
  renderMs: 0, // mean time of one render call
  lastRenderAt: 0,
  quality: null, // DynamicResolution
  gpuName: "",
  frameMs: 0, // mean time between frames
};

// ---------------------------------------------------------------------------- controls

function movementIntent() {
  const now = performance.now();
  if (state.testMove && now < state.testMove.until) {
    const { mx, mz } = state.testMove;
    if (Math.hypot(mx, mz) > 0.01) state.yaw = Math.atan2(mx, mz);
    return { moveX: mx, moveZ: mz };
  }
  state.testMove = null;
  const k = state.keys;
  const stick = state.stick || { forward: 0, right: 0 }; // the touch stick adds to the keys
  const unit = (v) => Math.max(-1, Math.min(1, v));
  const fwd = unit((k.has("KeyW") || k.has("ArrowUp") ? 1 : 0) - (k.has("KeyS") || k.has("ArrowDown") ? 1 : 0) + stick.forward);
  const right = unit((k.has("KeyD") ? 1 : 0) - (k.has("KeyA") ? 1 : 0) + stick.right);
  const sin = Math.sin(state.yaw);
  const cos = Math.cos(state.yaw);
  // forward = (sin yaw, cos yaw); right = (-cos yaw, sin yaw) in (x, z)
  return { moveX: fwd * sin - right * cos, moveZ: fwd * cos + right * sin };
}

function controls() {
  const m = movementIntent();
  const jump = state.jump;
  state.jump = false;
  return { moveX: m.moveX, moveZ: m.moveZ, yaw: state.yaw, jump };
}

function typingInForm(ev) {
  const t = ev.target;
  return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA");
}

function installControls(canvas) {
  window.addEventListener("keydown", (ev) => {
    if (typingInForm(ev)) return;
    if (ev.code === "Space") state.jump = true;
    state.keys.add(ev.code);
    if (ev.code.startsWith("Arrow") || ev.code === "Space") ev.preventDefault();
  });
  window.addEventListener("keyup", (ev) => state.keys.delete(ev.code));
  window.addEventListener("blur", () => state.keys.clear());
  let dragging = false;
  let lastX = 0;
  let lastY = 0;
  canvas.addEventListener("pointerdown", (ev) => {
    dragging = true;
    lastX = ev.clientX;
    lastY = ev.clientY;
    canvas.setPointerCapture(ev.pointerId);
  });
  canvas.addEventListener("pointerup", (ev) => {
    dragging = false;
    canvas.releasePointerCapture(ev.pointerId);
  });
  canvas.addEventListener("pointermove", (ev) => {
    let dx;
    let dy;
    if (document.pointerLockElement === canvas) {
      dx = ev.movementX;
      dy = ev.movementY;
    } else if (dragging) {
      dx = ev.clientX - lastX;
      dy = ev.clientY - lastY;
      lastX = ev.clientX;
      lastY = ev.clientY;
    } else return;
    state.yaw -= dx * MOUSE_TURN;
    state.pitch = Math.min(1.2, Math.max(-0.2, state.pitch + dy * MOUSE_TURN));
  });
  canvas.addEventListener("dblclick", () => {
    if (canvas.requestPointerLock) canvas.requestPointerLock();
  });
}

// ---------------------------------------------------------------------------- names

async function refreshPlayers(force = false) {
  const now = performance.now();
  if (state.playersInFlight) return;
  if (!force && now - state.playersFetchedAt < PLAYERS_MIN_GAP_MS) return;
  state.playersInFlight = true;
  state.playersFetchedAt = now;
  try {
    const data = await getJson(`/api/players?world=${encodeURIComponent(state.worldId || "")}`);
    const names = new Map();
    for (const p of (data && data.players) || []) {
      if (p && Number.isInteger(p.entity_id)) names.set(p.entity_id >>> 0, String(p.name ?? ""));
    }
    state.names = names;
    if (state.watcher && data) state.watcher.note(data.world_version); // a picture hung, a reload
  } catch {
    // keep the names we had
  } finally {
    state.playersInFlight = false;
  }
}

// ---------------------------------------------------------------------------- 3D view

/** The world id of a /w/{id} address, or "" for any other path. */
export function worldFromPath(path) {
  const m = /^\/w\/([a-z0-9][a-z0-9_-]{0,31})\/?$/.exec(path || "");
  return m ? m[1] : "";
}

function initScene(images, worldDoc) {
  const scene = new THREE.Scene();
  const camera = new THREE.PerspectiveCamera(fieldOfView(window.innerWidth / window.innerHeight), window.innerWidth / window.innerHeight, 0.1, 400);
  camera.position.set(0, 3, -7);
  camera.lookAt(0, 1.5, 0);
  state.scene = scene;
  state.camera = camera;
  // A world with a room of its own (walls, benches, picture slots) is built from its document;
  // the open world keeps the gallery room sized by the images, as before.
  state.gallery = hasRoom(worldDoc) ? buildWorld(scene, worldDoc) : buildGallery(scene, images);
  state.avatars = new AvatarManager(scene);
  // The camera and the name tags see the world's walls (none in the open world).
  const rays = hasRoom(worldDoc) ? new WallRays(worldDoc) : null;
  state.follow = new FollowCamera({ rays });
  state.stick = new TouchStick(document.body);
  state.layout = new PageLayout({ statusEl: $("status"), chatEl: $("chat") });
  const layout = state.layout;
  const stick = state.stick;
  state.tags = new NameTags({ rays, panels: () => [...layout.panels(), stick.el, $("overlay"), ...(state.calls ? [state.calls.tiles.root] : [])] });
  const container = $("view");
  try {
    // Debug overrides: ?pr=<pixel ratio>&aa=0|1
    const qp = new URLSearchParams(location.search);
    state.gpuName = webglRendererName();
    state.quality = new DynamicResolution({
      software: isSoftwareRenderer(state.gpuName),
      devicePixelRatio: window.devicePixelRatio || 1,
      overrides: {
        pixelRatio: Number(qp.get("pr")) || 0,
        antialias: qp.has("aa") ? qp.get("aa") !== "0" : undefined,
      },
    });
    const renderer = new THREE.WebGLRenderer({ antialias: state.quality.antialias, preserveDrawingBuffer: false });
    renderer.setPixelRatio(state.quality.ratio);
    renderer.setSize(window.innerWidth, window.innerHeight);
    renderer.outputColorSpace = THREE.SRGBColorSpace;
    container.appendChild(renderer.domElement);
    state.renderer = renderer;
  } catch (e) {
    state.webglError = `3D view unavailable (WebGL): ${e instanceof Error ? e.message : e}`;
    const note = document.createElement("div");
    note.className = "webgl-error";
    note.textContent = state.webglError;
    container.appendChild(note);
  }
  const labels = new CSS2DRenderer();
  labels.setSize(window.innerWidth, window.innerHeight);
  labels.domElement.className = "labels";
  container.appendChild(labels.domElement);
  state.labels = labels;
  installControls(state.renderer ? state.renderer.domElement : labels.domElement);
  window.addEventListener("resize", () => {
    camera.aspect = window.innerWidth / window.innerHeight;
    camera.fov = fieldOfView(camera.aspect);
    camera.updateProjectionMatrix();
    if (state.renderer) state.renderer.setSize(window.innerWidth, window.innerHeight);
    labels.setSize(window.innerWidth, window.innerHeight);
  });
  requestAnimationFrame(frame);
}

function frame(t) {
  requestAnimationFrame(frame);
  const dt = Math.min(0.1, Math.max(0, (t - state.lastFrame) / 1000));
  state.lastFrame = t;
  state.frames++;
  const k = state.keys;
  const turn = (k.has("ArrowLeft") ? 1 : 0) - (k.has("ArrowRight") ? 1 : 0);
  state.yaw += turn * TURN_SPEED * dt;

  const { avatars, follow, layout, tags, labels, scene } = state;
  if (!avatars || !follow || !layout || !tags || !labels || !scene || !state.camera) return; // initScene made them
  const s = state.session;
  let self = null;
  let remote = new Map();
  if (s && s.state === "connected" && s.interp) {
    remote = s.interp.sample(performance.now() / 1000);
    const pos = s.selfRenderPosition(dt);
    if (pos && s.selfId !== null) self = { id: s.selfId, x: pos[0], y: pos[1], z: pos[2], yaw: state.yaw };
  }
  avatars.update(remote, self, state.names, dt);
  if (state.chat) state.chat.update(avatars);
  // Voices follow the avatars (calls/audio.js); who speaks in a call gets a ring on the name tag.
  const talking = state.calls
    ? state.calls.update({ self, position: (id) => { const a = avatars.avatars.get(id); return a ? a.group.position : null; } }, self ? self.id : null)
    : null;
  if (talking) for (const [id, a] of avatars.avatars) a.labelEl.classList.toggle("speaking", talking.has(id));

  const cam = state.camera;
  const head = self ? { x: self.x, y: self.y + 1.6, z: self.z } : { x: 0, y: 1.6, z: 0 };
  layout.applyView(cam); // the picture moves up while a phone's chat is open
  follow.apply(cam, head, state.yaw, state.pitch, dt);
  const mine = self ? avatars.avatars.get(self.id) : null;
  if (mine && follow.insideAvatar(head)) mine.group.visible = false; // pulled in by a wall
  const q = state.quality;
  if (q && !q.shouldRender(t)) return;
  const bubbles = state.chat ? state.chat.bubbles : null;
  tags.update({
    avatars, camera: cam, selfId: self ? self.id : null, bubbles,
    speaking: new Set([...(bubbles ? bubbles.list().map((b) => b.entityId) : []), ...(talking || [])]),
    width: window.innerWidth, height: window.innerHeight,
  });
  const r0 = performance.now();
  if (state.renderer) state.renderer.render(scene, cam);
  labels.render(scene, cam);
  const r1 = performance.now();
  state.renderMs += (r1 - r0 - state.renderMs) * 0.1;
  state.frameMs += ((q ? t - state.lastRenderAt : dt * 1000) - state.frameMs) * 0.1;
  state.lastRenderAt = t;
  if (q && state.renderer) {
    const ratio = q.adjust(t);
    if (ratio !== null) state.renderer.setPixelRatio(ratio);
  }
}

/** A new version of the world document (world/live.js): the pictures that changed are hung
 *  again; a changed floor, walls or slots rebuild the world, and the own avatar's prediction,
 *  the camera and the name tags take the new walls.
 * @param {import("./world/live.js").LiveDoc} doc
 * @param {import("./world/live.js").WorldChanges} changes */
function showWorld(doc, changes) {
  const built = /** @type {import("./scene/world.js").BuiltWorld | null} */ (/** @type {unknown} */ (state.gallery));
  state.worldDoc = doc;
  if (!built || !state.scene) return;
  if (!changes.rebuild) {
    for (const p of changes.pictures) built.setPicture(p);
    return;
  }
  built.remove();
  state.gallery = buildWorld(state.scene, /** @type {any} */ (doc));
  const walls = new Walls(doc);
  const rays = new WallRays(doc);
  if (state.session) {
    state.session.walls = walls;
    if (state.session.predictor) state.session.predictor.walls = walls;
  }
  if (state.follow) state.follow.rays = rays;
  if (state.tags) state.tags.rays = rays;
}

// ---------------------------------------------------------------------------- status

function updateStatus() {
  const s = state.session;
  const st = s ? s.stats() : null;
  const set = (id, text) => {
    const el = $(id);
    if (el && el.textContent !== text) el.textContent = text;
  };
  if (!st) return;
  set("st-state", st.state);
  set("st-transport", st.transport || "—");
  set("st-rtt", st.rtt_ms === null ? "—" : `${st.rtt_ms.toFixed(1)} ms`);
  set("st-snaps", `${st.snapshots_per_s.toFixed(1)} /s`);
  set("st-bytes", `${(st.bytes_in_per_s / 1024).toFixed(1)} / ${(st.bytes_out_per_s / 1024).toFixed(1)} KiB/s`);
  set("st-entities", String(st.entities));
  set("st-open", st.offer_to_open_ms === null ? "—" : `${st.offer_to_open_ms} ms`);
  const badge = $("transport-badge");
  const kind = st.transport || (st.state === "connected" ? "?" : st.state);
  set("transport-badge", kind);
  badge.dataset.kind = st.transport || "none";
  set("st-error", st.error || "");
}

// ---------------------------------------------------------------------------- join

function showJoinError(text) {
  $("join-error").textContent = text;
}

/** window.localStorage, or null where the page may not use it. */
function storage() {
  try {
    return window.localStorage || null;
  } catch {
    return null;
  }
}

/** POST /api/join. A name this browser joined as before is taken back with the secret the
 *  first join gave (net/names.js); a new name's secret is kept for next time. */
async function join(name) {
  const store = storage();
  const secret = store ? secretFor(store, name) : null;
  const { ok, status, body } = await fetchJson("/api/join", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(secret ? { name, secret, world: state.worldId } : { name, world: state.worldId }),
  });
  if (!ok) {
    const msg = body && body.error ? String(body.error) : `HTTP ${status}`;
    throw new Error(msg);
  }
  if (!body || typeof body.token !== "string") throw new Error("unexpected answer from /api/join");
  if (store && typeof body.name === "string") remember(store, body.name, typeof body.secret === "string" ? body.secret : null);
  return body;
}

/** Session states whose `error` the page's notice shows (the session will not reconnect). */
const ENDED_NOTICE = new Set(["closed", "kicked", "replaced"]);

function startSession(token, config) {
  const session = new NetSession({ origin: location.origin, token, config, controls });
  state.session = session;
  session.on("snapshot", (header, view) => {
    for (let i = 0; i < view.ids.length; i++) {
      if (!state.names.has(view.ids[i])) {
        refreshPlayers();
        break;
      }
    }
  });
  session.on("status", () => {
    updateStatus();
    // The session ended for good -- the operator closed this world, the operator or a moderator
    // kicked the player (the server's text: who, why, how long), or this player signed in
    // elsewhere: say so where it cannot be missed (no reconnect follows).
    const notice = $("notice");
    const ended = ENDED_NOTICE.has(session.state);
    notice.textContent = ended ? session.error : "";
    notice.hidden = !ended;
  });
  session.start();
  state.chat = mountChat({
    token,
    root: $("chat"),
    entityForName: (name) => {
      for (const [id, n] of state.names) if (n === name) return id;
      return null;
    },
    onFocusChange: () => state.keys.clear(), // keys held when the chat took the keyboard
  });
  const chat = state.chat;
  if (state.layout) state.layout.attachChat(chat.client);
  // Calls ride on the chat socket, whatever carries the movement (docs/calls.md).
  state.calls = mountCalls({ chat: chat.client, parent: document.body });
  const calls = state.calls;
  window.addEventListener("pagehide", () => {
    calls.stop();
    session.stop();
    chat.stop();
  });
  window.addEventListener("beforeunload", () => session.stop());
  setInterval(() => refreshPlayers(true), PLAYERS_REFRESH_MS);
  refreshPlayers(true);
}

function installTestHook() {
  const hook = {
    get ready() {
      const s = state.session;
      return !!(s && s.state === "connected" && s.firstSnapshot);
    },
    get transport() {
      const s = state.session;
      return s && s.state === "connected" ? s.transportKind : null;
    },
    get selfId() {
      const s = state.session;
      return s && s.selfId !== null ? s.selfId : null;
    },
    get name() {
      return state.name;
    },
    entities() {
      return state.session ? state.session.entities() : [];
    },
    /** Hold a world-space movement intent (x, z in -1..1) for ms milliseconds. */
    sendMove(mx, mz, ms) {
      state.testMove = { mx: Number(mx) || 0, mz: Number(mz) || 0, until: performance.now() + Number(ms || 0) };
      return new Promise((resolve) => setTimeout(resolve, Number(ms || 0)));
    },
    stats() {
      const st = state.session ? state.session.stats() : { state: "idle", transport: null };
      return { ...st, frames: state.frames, render_ms: Math.round(state.renderMs * 10) / 10, frame_ms: Math.round(state.frameMs * 10) / 10, pixel_ratio: state.quality ? Math.round(state.quality.ratio * 100) / 100 : null, gpu: state.gpuName, webgl: !!state.renderer, webgl_error: state.webglError, names: state.names.size };
    },
    /** The world the page shows: its id and how many picture slots the scene built. */
    world() {
      return { id: state.worldDoc ? state.worldDoc.id : null, pictures: state.gallery ? state.gallery.pictures.length : 0, walls: Boolean(state.session && state.session.walls) };
    },
    /** The world document's version the page shows, the documents applied since it started,
     *  and every picture slot: the image it names, its URL, its plaque's text, whether its
     *  texture loaded and the loaded image's address and width (scene/world.js). */
    pictures() {
      const built = /** @type {any} */ (state.gallery);
      return { version: state.watcher ? state.watcher.version : null, updates: state.watcher ? state.watcher.updates : 0, slots: built && built.slots ? built.slots() : [] };
    },
    /** The page's notice (why the session ended: a closed world, a kick, a newer login), "" when none shows. */
    get notice() {
      const el = $("notice");
      return el && !el.hidden ? el.textContent || "" : "";
    },
    names() {
      return Object.fromEntries(state.names);
    },
    /** The camera: position, yaw, pitch, and whether a wall pulled it in. */
    view() {
      if (!state.camera) return null; // before the scene
      const p = state.camera.position;
      return { x: p.x, y: p.y, z: p.z, yaw: state.yaw, pitch: state.pitch, blocked: state.follow ? state.follow.blocked : false };
    },
    /** Turns the view as the mouse would (radians; pitch -0.2..1.2). */
    setView(yaw, pitch = state.pitch) {
      state.yaw = Number(yaw) || 0;
      state.pitch = Math.min(1.2, Math.max(-0.2, Number(pitch)));
    },
    /** The name tags (scene/labels.js): the cap, and per avatar whether it shows and why not,
     *  its tag's world position, and its element's box on the page. */
    tags() {
      const avatars = state.avatars ? state.avatars.avatars : new Map();
      const tags = state.tags ? state.tags.list() : [];
      return {
        cap: state.tags ? state.tags.cap : 0,
        camera: state.tags ? state.tags.camera : null,
        updates: state.tags ? state.tags.updates : 0,
        tags: tags.map((t) => {
          const a = avatars.get(t.id);
          const el = a ? a.labelEl : null;
          const r = el && el.isConnected ? el.getBoundingClientRect() : null;
          return { ...t, name: a ? a.name : null, displayed: Boolean(r && el.style.display !== "none" && r.width > 0), rect: r ? { left: r.left, top: r.top, right: r.right, bottom: r.bottom } : null };
        }),
      };
    },
    /** The page's layout (ui/layout.js): small screen, chat folded, unread count, status. */
    layout() {
      return state.layout ? { ...state.layout.state(), stick: Boolean(state.stick && !state.stick.el.hidden) } : null;
    },
    get chat() {
      return state.chat ? state.chat.hook : idleChatHook;
    },
    /** Proximity calls (calls/index.js): state(), received() (getStats per received track), setMic, setCam. */
    get calls() {
      return state.calls ? state.calls.hook : idleCallHook;
    },
  };
  window.worldserverTest = hook;
}

async function main() {
  installTestHook();
  const [config, gallery] = await Promise.all([
    getJson("/api/client-config").catch(() => ({ datachannel_timeout_ms: 3000, tick_rate: 20 })),
    getJson("/gallery/images").catch(() => ({ images: [] })),
  ]);
  // The world document (docs/worlds.md): the scene and the own avatar's walls come from it.
  // The world: /w/{id} in the address names it, else the server's default one.
  state.worldId = worldFromPath(location.pathname) || config.world || "";
  const worldDoc = state.worldId
    ? await getJson(`/api/worlds/${encodeURIComponent(state.worldId)}`).catch(() => null)
    : null;
  state.worldDoc = worldDoc;
  if (worldDoc && ((worldDoc.walls && worldDoc.walls.length) || (worldDoc.obstacles && worldDoc.obstacles.length))) {
    config.walls = new Walls(worldDoc);
  }
  initScene((gallery && gallery.images) || [], worldDoc);
  if (worldDoc && hasRoom(worldDoc)) {
    const id = String(worldDoc.id);
    state.watcher = new WorldWatcher({ doc: worldDoc, fetchDoc: () => getJson(`/api/worlds/${encodeURIComponent(id)}`), apply: showWorld });
  }
  setInterval(updateStatus, 250);

  const form = /** @type {HTMLFormElement} */ ($("join-form"));
  const input = /** @type {HTMLInputElement} */ ($("join-name"));
  const button = /** @type {HTMLButtonElement} */ ($("join-button"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const name = input.value.trim();
    if (!name) {
      showJoinError("Please enter a nickname.");
      return;
    }
    button.disabled = true;
    showJoinError("");
    try {
      const r = await join(name);
      state.name = String(r.name ?? name);
      $("overlay").hidden = true;
      if (state.layout) state.layout.join(); // the status panel behind its toggle (open with ?debug)
      if (state.stick) state.stick.show(touchScreen());
      $("me").textContent = state.name;
      startSession(r.token, config);
    } catch (e) {
      showJoinError(e instanceof Error ? e.message : String(e));
    } finally {
      button.disabled = false;
    }
  });
  input.disabled = false;
  button.disabled = false;
  const store = storage();
  if (store && !input.value) input.value = lastName(store);
  input.focus();
  const auto = new URLSearchParams(location.search).get("name");
  if (auto) {
    input.value = auto;
    form.requestSubmit();
  }
}

main();
