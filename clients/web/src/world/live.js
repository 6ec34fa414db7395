// A world document kept current while the page runs (docs/worlds.md, "Changes while the
// server runs"). The server gives the document a new `version` whenever a curator hangs or
// takes down a picture or the operator reloads the world's file; GET /api/players, which the
// page polls every few seconds for the names anyway, carries it as `world_version`. A
// WorldWatcher hears of each version (note), fetches the document once per new version (never
// two fetches at once; a failed fetch is tried again at the next note), and hands the page
// the new document with what changed (worldChanges): the picture slots to hang again, or, when
// the floor, walls, obstacles, style, radius or the set of slots changed, a rebuild.
//
// A slot's `title` (the one a curator hung the picture with, or the world file's) is what its
// plaque says (plaqueText).
//
// No DOM, no three.js: the page does the drawing (scene/world.js setPicture, remove).

/** The start of the file names of pictures hung through the admin API (worldserver/world_admin.py
 * HUNG_PREFIX): `hung-<world>-<slot>-<random>.<ext>`. */
export const HUNG_PREFIX = "hung-";

/** @typedef {import("./walls.js").WorldDoc & { id?: string, version?: number, style?: unknown,
 *   pictures?: { id: string, position: number[], facing: number, size: number[], image: string, title?: string }[] }} LiveDoc */
/** @typedef {NonNullable<LiveDoc["pictures"]>[number]} LiveSlot */
/** What changed between two versions of a document: rebuild the whole world, or hang these
 * slots again (their image or placement changed).
 * @typedef {{ rebuild: boolean, pictures: LiveSlot[] }} WorldChanges */

/**
 * The text on a picture slot's plaque: its title; without one, for a picture of the world
 * file, its file name without the extension, dashes and underscores as spaces
 * (`sunset_over-sea.png`: "sunset over sea"); "" (no plaque) for an empty frame or a picture
 * hung without a title (its file name is random).
 * @param {{ image: string, title?: string }} slot
 * @returns {string}
 */
export function plaqueText(slot) {
  if (typeof slot.title === "string" && slot.title) return slot.title;
  if (!slot.image || slot.image.startsWith(HUNG_PREFIX)) return "";
  return slot.image.replace(/\.[a-z0-9]+$/i, "").replace(/[-_]+/g, " ");
}

/** @param {unknown} value @returns {string} */
const key = (value) => JSON.stringify(value === undefined ? null : value);

/**
 * What changed from `before` to `after` (two versions of one world's document).
 * @param {LiveDoc} before
 * @param {LiveDoc} after
 * @returns {WorldChanges}
 */
export function worldChanges(before, after) {
  const shape = (/** @type {LiveDoc} */ d) =>
    key([d.id, d.floor, d.walls, d.obstacles, d.style, d.entity_radius, (d.pictures || []).map((p) => p.id)]);
  if (shape(before) !== shape(after)) return { rebuild: true, pictures: [] };
  const old = new Map((before.pictures || []).map((p) => [p.id, key(p)]));
  return { rebuild: false, pictures: (after.pictures || []).filter((p) => old.get(p.id) !== key(p)) };
}

export class WorldWatcher {
  /**
   * @param {{ doc: LiveDoc, fetchDoc: () => Promise<LiveDoc>, apply: (doc: LiveDoc, changes: WorldChanges) => void }} options
   *   doc: the document the page shows; fetchDoc(): its newest version (GET /api/worlds/{id});
   *   apply(doc, changes): show it.
   */
  constructor({ doc, fetchDoc, apply }) {
    this.doc = doc;
    this.version = doc.version ?? 1;
    this.fetchDoc = fetchDoc;
    this.apply = apply;
    this.busy = false;
    this.updates = 0; // documents applied since the page started
  }

  /**
   * The server says the document's version is `version` (any other value than the one shown
   * means a change: a restarted server counts from 1 again). Resolves when a fetch it started
   * is done.
   * @param {unknown} version
   * @returns {Promise<void>}
   */
  async note(version) {
    if (typeof version !== "number" || version === this.version || this.busy) return;
    this.busy = true;
    try {
      const doc = await this.fetchDoc();
      if (!doc || typeof doc.version !== "number" || doc.id !== this.doc.id || doc.version === this.version) return;
      const changes = worldChanges(this.doc, doc);
      this.doc = doc;
      this.version = doc.version;
      this.updates++;
      this.apply(doc, changes);
    } catch {
      // the next note tries again
    } finally {
      this.busy = false;
    }
  }
}
