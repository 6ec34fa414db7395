// Which name tags the 3D view shows, so a crowd stays readable: a tag is shown only when its
// avatar is in view, no wall stands between the camera and the tag (../world/rays.js), and its
// screen box does not touch one of the page's panels (chat, status, join overlay, touch
// controls); of those, at most a cap (by screen size) are shown: the own tag first, then
// whoever is speaking (a speech bubble alive, ../chat/bubbles.js), then the nearest, and a tag
// that would cover one ranked before it is left out; tags fade with distance and are gone
// beyond TAG_FAR. A speech bubble behind a wall is hidden too.
//
// selectTags, placeTags and tagCap are pure (unit-tested); NameTags applies them to the avatars'
// CSS2D labels (../scene/avatars.js) once a frame, before the labels are rendered. The labels'
// layer is also stacked under the panels by the page's CSS (#view is its own stacking
// context). Must not: change an avatar's name, position or fade, or create DOM elements.

import { Vector3 } from "three";

export const TAG_FAR = 28; // metres: no tag beyond (except speakers')
export const TAG_FADE_FROM = 12; // metres: tags fade from here to TAG_FAR
export const MIN_OPACITY = 0.05; // fainter than this is not shown
export const HYSTERESIS = 1; // metres of advantage for a tag shown last frame (no flicker)

/**
 * How many tags a view of width x height CSS pixels shows: 8 on the smallest phones, 18 on
 * large screens (about one per 50 x 50 px of the view's diagonal squared).
 * @param {number} width @param {number} height
 * @returns {number}
 */
export function tagCap(width, height) {
  const n = Math.round(Math.sqrt(Math.max(0, width) * Math.max(0, height)) / 50);
  return Math.max(8, Math.min(18, n));
}

/**
 * @typedef {{id: number, x: number, y: number, z: number, self?: boolean, speaking?: boolean, inView?: boolean}} TagCandidate
 */

/**
 * Chooses the tags to show. `candidates`: tag positions (world, metres) with flags; options:
 * camera {x, y, z}, cap, far, fadeFrom, blocked(from, to) -> true when a wall is between,
 * previous: ids shown last frame (they get HYSTERESIS metres of advantage in the ranking).
 * Returns { shown: Map id -> opacity (0..1], hidden: Map id -> reason ("view", "far", "wall",
 * "cap") }. The own tag and speakers' tags are not faded; speakers' are shown at any distance.
 * @param {TagCandidate[]} candidates
 * @param {{camera: {x: number, y: number, z: number}, cap: number, far?: number, fadeFrom?: number,
 *   blocked?: ((from: object, to: object) => boolean) | null, previous?: Set<number> | null}} options
 * @returns {{shown: Map<number, number>, hidden: Map<number, string>}}
 */
export function selectTags(candidates, { camera, cap, far = TAG_FAR, fadeFrom = TAG_FADE_FROM, blocked = null, previous = null }) {
  const shown = new Map();
  const hidden = new Map();
  const ranked = [];
  for (const c of candidates) {
    if (c.inView === false) {
      hidden.set(c.id, "view");
      continue;
    }
    const d = Math.hypot(c.x - camera.x, c.y - camera.y, c.z - camera.z);
    let opacity = 1;
    if (!c.self && !c.speaking) {
      opacity = d <= fadeFrom ? 1 : 1 - (d - fadeFrom) / Math.max(far - fadeFrom, 1e-9);
      if (opacity < MIN_OPACITY) {
        hidden.set(c.id, "far");
        continue;
      }
    }
    if (!c.self && blocked && blocked(camera, c)) {
      hidden.set(c.id, "wall");
      continue;
    }
    const group = c.self ? 0 : c.speaking ? 1 : 2;
    const key = d - (previous && previous.has(c.id) ? HYSTERESIS : 0);
    ranked.push({ id: c.id, group, key, opacity });
  }
  ranked.sort((a, b) => a.group - b.group || a.key - b.key || a.id - b.id);
  ranked.forEach((r, i) => {
    if (i < cap) shown.set(r.id, Math.min(1, r.opacity));
    else hidden.set(r.id, "cap");
  });
  return { shown, hidden };
}

/**
 * True when two boxes {left, top, right, bottom} overlap (touching edges do not).
 * @param {{left: number, top: number, right: number, bottom: number}} a
 * @param {{left: number, top: number, right: number, bottom: number}} b
 */
export function boxesOverlap(a, b) {
  return a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
}

/**
 * Lays the chosen tags out on the screen in rank order: a tag whose box overlaps one of the
 * page's panels is hidden ("panel"), and so is one that covers a tag placed before it by more
 * than `slack` of its size on a side ("crowded"), so tags never pile up. `items`: [{ id, box }]
 * best first; `panels`: boxes. Returns Map id -> "" (shown) or the reason.
 * @param {{id: number, box: {left: number, top: number, right: number, bottom: number}}[]} items
 * @param {{left: number, top: number, right: number, bottom: number}[]} panels
 * @param {number} [slack]
 * @returns {Map<number, string>}
 */
export function placeTags(items, panels, slack = 0.15) {
  const kept = [];
  const out = new Map();
  for (const { id, box } of items) {
    if (panels.some((p) => boxesOverlap(box, p))) {
      out.set(id, "panel");
      continue;
    }
    const dx = ((box.right - box.left) * slack) / 2;
    const dy = ((box.bottom - box.top) * slack) / 2;
    const core = { left: box.left + dx, top: box.top + dy, right: box.right - dx, bottom: box.bottom - dy };
    if (kept.some((k) => boxesOverlap(core, k))) {
      out.set(id, "crowded");
      continue;
    }
    kept.push(core);
    out.set(id, "");
  }
  return out;
}

/** A generous guess at a tag's size in CSS pixels before it was laid out (styles.css
 *  .name-label: 13 px text, 8 px side padding, at most 220 px of text). */
function guessSize(text) {
  return { w: Math.min(240, 24 + 8.5 * String(text || "").length), h: 22 };
}

export class NameTags {
  /**
   * rays: a WallRays or null (no walls); panels(): the page elements tags must stay off (hidden
   * ones are skipped).
   * @param {{rays?: {blocked: (from: object, to: object) => boolean} | null, panels?: () => (HTMLElement | null)[]}} [options]
   */
  constructor({ rays = null, panels = () => [] } = {}) {
    this.rays = rays;
    this.panels = panels;
    this.previous = new Set();
    this.state = new Map(); // id -> { shown, opacity, reason, x, y, z }
    this.cap = 0;
    this.camera = null; // {x, y, z} the last choice was made from
    this.updates = 0; // how many times update ran (the labels render right after each)
    this._v = new Vector3();
  }

  /**
   * Once a frame, after the avatars and the camera moved and before the labels render.
   * avatars: the AvatarManager; camera: the three.js camera; selfId; speaking: ids with a
   * speech bubble alive; bubbles: the SpeechBubbles (or null); width, height: the view's size.
   * @param {{avatars: {avatars: Map<number, any>}, camera: import("three").Camera, selfId?: number | null,
   *   speaking?: Set<number>, bubbles?: {bubbles: Map<number, {entityId: number, object: {visible: boolean}}>} | null,
   *   width: number, height: number}} frame
   */
  update({ avatars, camera, selfId = null, speaking = new Set(), bubbles = null, width, height }) {
    camera.updateMatrixWorld();
    const cam = { x: camera.position.x, y: camera.position.y, z: camera.position.z };
    this.camera = cam;
    this.updates++;
    const cands = [];
    const screen = new Map();
    const gone = new Map(); // id -> "leaving" or "hidden" (the avatar itself is not drawn)
    for (const a of avatars.avatars.values()) {
      if (a.leaving || !a.group.visible) {
        a.label.visible = false;
        gone.set(a.id, a.leaving ? "leaving" : "hidden");
        continue;
      }
      const g = a.group;
      const c = { id: a.id, x: g.position.x, y: g.position.y + a.label.position.y * g.scale.y, z: g.position.z, self: a.id === selfId, speaking: speaking.has(a.id) };
      const v = this._v.set(c.x, c.y, c.z).project(camera);
      c.inView = v.z > -1 && v.z < 1 && Math.abs(v.x) <= 1.05 && Math.abs(v.y) <= 1.05;
      screen.set(a.id, { sx: ((v.x + 1) / 2) * width, sy: ((1 - v.y) / 2) * height });
      cands.push(c);
    }
    this.cap = tagCap(width, height);
    const rays = this.rays;
    const blocked = rays ? (/** @type {object} */ from, /** @type {object} */ to) => rays.blocked(from, to) : null;
    const { shown, hidden } = selectTags(cands, { camera: cam, cap: this.cap, blocked, previous: this.previous });
    const boxes = [];
    for (const el of this.panels()) {
      if (!el || !el.isConnected || el.hidden) continue;
      const r = el.getBoundingClientRect();
      if (r.width > 0 && r.height > 0) boxes.push(r);
    }
    // Reads (layout) first, then writes, so the page lays out at most once for this.
    const items = [];
    for (const id of shown.keys()) {
      const size = this._size(avatars.avatars.get(id));
      const { sx, sy } = screen.get(id);
      items.push({ id, box: { left: sx - size.w / 2, top: sy - size.h / 2, right: sx + size.w / 2, bottom: sy + size.h / 2 } });
    }
    const placed = placeTags(items, boxes);
    const verdict = new Map();
    for (const c of cands) {
      const reason = placed.has(c.id) ? placed.get(c.id) : hidden.get(c.id) || "cap";
      verdict.set(c.id, { opacity: reason ? 0 : shown.get(c.id) || 0, reason });
    }
    this.previous = new Set();
    this.state = new Map();
    for (const c of cands) {
      const a = avatars.avatars.get(c.id);
      const { opacity, reason } = verdict.get(c.id);
      a.label.visible = opacity > 0;
      if (opacity > 0) {
        a.labelEl.style.opacity = String(a.fade * opacity);
        this.previous.add(c.id);
      }
      const { sx, sy } = screen.get(c.id);
      this.state.set(c.id, { shown: opacity > 0, opacity, reason, x: c.x, y: c.y, z: c.z, sx, sy });
    }
    for (const [id, reason] of gone) {
      const g = avatars.avatars.get(id).group;
      this.state.set(id, { shown: false, opacity: 0, reason, x: g.position.x, y: g.position.y, z: g.position.z, sx: NaN, sy: NaN });
    }
    if (bubbles) {
      for (const b of bubbles.bubbles.values()) {
        const s = this.state.get(b.entityId);
        b.object.visible = !(s && s.reason === "wall");
      }
    }
  }

  /** The label's size in CSS pixels: measured once it was laid out, guessed until then. */
  _size(a) {
    let m = a._tagSize;
    if (!m || m.name !== a.name || m.guessed) {
      const w = a.labelEl.offsetWidth;
      const h = a.labelEl.offsetHeight;
      m = w > 0 && h > 0 ? { name: a.name, w, h, guessed: false } : { name: a.name, ...guessSize(a.name), guessed: true };
      a._tagSize = m;
    }
    return m;
  }

  /** For the test hook: [{ id, shown, opacity, reason, x, y, z, sx, sy }] of the avatars in
   *  the scene (sx, sy: the tag's centre on the page). */
  list() {
    return Array.from(this.state, ([id, s]) => ({ id, ...s }));
  }
}
