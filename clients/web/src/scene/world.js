// A world's scene built from its world document (GET /api/worlds/{id}, docs/worlds.md): the
// floor, the walls as boxes along their segments (thickness and height from the file), the
// obstacles (benches), the lights of the style preset and the framed pictures in their slots
// (images from GET /gallery/images/{name}; an empty slot or a missing image shows a neutral
// canvas). The walls the avatar collides with are the same segments (../world/walls.js).
// Everything goes into one group, so that a world reloaded while the page runs can be taken
// out (remove) and built again; a picture hung or taken down while the page runs replaces its
// slot's frame (setPicture; ../world/live.js says what changed). A picture's plaque says its
// title (../world/live.js plaqueText).

import * as THREE from "three";

import { plaqueText } from "../world/live.js";
import { addPicture, floorTexture, placeholderTexture } from "./gallery.js";

/** @type {Record<string, { background: number, wall: number, hemi: number[], sun: number }>} */
const STYLES = {
  gallery: { background: 0xbfd4e6, wall: 0xe9e4da, hemi: [0xfff8ee, 0x6b5a48, 1.1], sun: 1.4 },
  museum: { background: 0xa9b7c6, wall: 0xdcd3c4, hemi: [0xfff3e0, 0x5a4b3c, 1.0], sun: 1.2 },
  night: { background: 0x1b2230, wall: 0x9a968f, hemi: [0x8090b0, 0x202028, 0.6], sun: 0.5 },
};

/** @param {string} name an image file name of the world document, "" for none */
function imageUrl(name) {
  return name ? `/gallery/images/${encodeURIComponent(name)}` : "";
}

/** A world document's picture slot. @typedef {{id: string, position: number[], facing: number, size: number[], image: string,
 *   title?: string}} SlotDoc */
/** What a picture slot shows now: the image named, its URL, its plaque's text ("" for none), and
 * whether its texture loaded (`src`: the loaded image's address, `width` its pixels; "" and 0
 * until it has).
 * @typedef {{ id: string, image: string, url: string, title: string, loaded: boolean, src: string, width: number }} SlotState */
/** What buildWorld returns: a BuiltRoom that can change its pictures and be removed.
 * @typedef {import("./gallery.js").BuiltRoom & {
 *   setPicture: (p: SlotDoc) => Promise<boolean>,
 *   slots: () => SlotState[],
 *   remove: () => void,
 * }} BuiltWorld */

/**
 * Builds `doc` into `scene`. Returns { half, pictures, loaded: Promise resolving when every
 * picture loaded or failed } like buildGallery, and setPicture, slots and remove.
 * @param {THREE.Scene} scene
 * @param {{floor: {min: number[], max: number[]}, walls: {points: number[][], thickness: number, height: number}[],
 *   obstacles: {kind: string, center: number[], size: number[], rotation: number, height: number}[],
 *   pictures: SlotDoc[],
 *   style: {preset: string}}} doc
 * @returns {BuiltWorld}
 */
export function buildWorld(scene, doc) {
  const root = new THREE.Group(); // everything of this world: remove() takes it out
  scene.add(root);
  const style = STYLES[(doc.style && doc.style.preset) || "gallery"] || STYLES.gallery;
  const [x0, z0] = doc.floor.min;
  const [x1, z1] = doc.floor.max;
  const half = Math.max(Math.abs(x0), Math.abs(x1), Math.abs(z0), Math.abs(z1));
  scene.background = new THREE.Color(style.background);
  scene.fog = new THREE.Fog(style.background, 60, 200);

  const ground = new THREE.Mesh(
    new THREE.PlaneGeometry(4 * half + 40, 4 * half + 40),
    new THREE.MeshStandardMaterial({ color: 0x7d8b6a, roughness: 1 }),
  );
  ground.rotation.x = -Math.PI / 2;
  ground.position.y = -0.02;
  root.add(ground);
  const tex = floorTexture();
  tex.repeat.set((x1 - x0) / 8, (z1 - z0) / 8);
  const floor = new THREE.Mesh(
    new THREE.PlaneGeometry(x1 - x0, z1 - z0),
    new THREE.MeshStandardMaterial({ map: tex, roughness: 0.85 }),
  );
  floor.rotation.x = -Math.PI / 2;
  floor.position.set((x0 + x1) / 2, 0, (z0 + z1) / 2);
  root.add(floor);

  const room = new THREE.Group();
  const wallMat = new THREE.MeshStandardMaterial({ color: style.wall, roughness: 0.95 });
  const trim = new THREE.MeshStandardMaterial({ color: 0x4a4038, roughness: 0.7 });
  let tallest = 3;
  for (const w of doc.walls || []) {
    tallest = Math.max(tallest, w.height);
    for (let i = 0; i + 1 < w.points.length; i++) {
      const [ax, az] = w.points[i];
      const [bx, bz] = w.points[i + 1];
      const len = Math.hypot(bx - ax, bz - az);
      const thick = Math.max(w.thickness, 0.02);
      const wall = new THREE.Mesh(new THREE.BoxGeometry(len + thick, w.height, thick), wallMat);
      wall.position.set((ax + bx) / 2, w.height / 2, (az + bz) / 2);
      wall.rotation.y = -Math.atan2(bz - az, bx - ax);
      room.add(wall);
      const skirting = new THREE.Mesh(new THREE.BoxGeometry(len + thick, 0.2, thick + 0.06), trim);
      skirting.position.set(wall.position.x, 0.1, wall.position.z);
      skirting.rotation.y = wall.rotation.y;
      room.add(skirting);
    }
  }
  const benchMat = new THREE.MeshStandardMaterial({ color: 0x5b4636, roughness: 0.6 });
  for (const o of doc.obstacles || []) {
    const box = new THREE.Mesh(new THREE.BoxGeometry(o.size[0], o.height, o.size[1]), benchMat);
    box.position.set(o.center[0], o.height / 2, o.center[1]);
    box.rotation.y = (o.rotation * Math.PI) / 180;
    room.add(box);
  }
  root.add(room);

  const [sky, groundColor, intensity] = style.hemi;
  root.add(new THREE.HemisphereLight(sky, groundColor, intensity));
  const sun = new THREE.DirectionalLight(0xffffff, style.sun);
  sun.position.set(half * 0.6, 30, half * 0.3);
  root.add(sun);
  const panelMat = new THREE.MeshBasicMaterial({ color: 0xfffbe8 });
  for (let x = x0 + 4; x < x1 - 2; x += 8) {
    for (let z = z0 + 4; z < z1 - 2; z += 8) {
      const panel = new THREE.Mesh(new THREE.BoxGeometry(2.2, 0.08, 0.6), panelMat);
      panel.position.set(x, tallest - 0.1, z);
      root.add(panel);
    }
  }

  const loader = new THREE.TextureLoader();
  /** @type {THREE.Group[]} */
  const pictures = [];
  /** @type {Map<string, { holder: THREE.Group, image: string, title: string, loaded: boolean }>} slot id -> its frame */
  const bySlot = new Map();
  /** Hangs the frame of slot `p` (in place of the one there); resolves when its image loaded.
   * @param {SlotDoc} p @returns {Promise<boolean>} */
  const hang = (p) => {
    const image = { url: imageUrl(p.image), title: plaqueText(p) };
    const slot = {
      x: p.position[0], y: p.position[1], z: p.position[2],
      rotY: (p.facing * Math.PI) / 180, w: p.size[0], h: p.size[1],
    };
    return new Promise((resolve) => {
      const entry = { holder: new THREE.Group(), image: p.image, title: image.title, loaded: false };
      const done = (/** @type {boolean} */ ok) => {
        entry.loaded = ok;
        resolve(ok);
      };
      entry.holder = addPicture(room, loader, image, slot, done);
      const old = bySlot.get(p.id);
      if (old) {
        const i = pictures.indexOf(old.holder);
        if (i >= 0) pictures[i] = entry.holder;
        room.remove(old.holder);
        dispose(old.holder);
      } else pictures.push(entry.holder);
      bySlot.set(p.id, entry);
      if (!image.url) {
        const board = /** @type {THREE.Mesh<THREE.PlaneGeometry, THREE.MeshStandardMaterial>} */ (entry.holder.children[1]);
        board.material.map = placeholderTexture();
        board.material.needsUpdate = true;
        resolve(false);
      }
    });
  };
  const waits = (doc.pictures || []).map(hang);
  return {
    half,
    pictures,
    loaded: Promise.all(waits),
    setPicture: hang,
    slots() {
      return [...bySlot].map(([id, e]) => {
        const board = /** @type {THREE.Mesh<THREE.PlaneGeometry, THREE.MeshStandardMaterial>} */ (e.holder.children[1]);
        const img = e.loaded && board.material.map ? /** @type {HTMLImageElement | null} */ (board.material.map.image) : null;
        const plaque = e.holder.children.length > 2; // frame, picture, then the plaque when it has one (addPicture)
        return { id, image: e.image, url: imageUrl(e.image), title: plaque ? e.title : "", loaded: e.loaded, src: img ? img.src : "",
          width: img ? img.naturalWidth || img.width : 0 };
      });
    },
    remove() {
      scene.remove(root);
      dispose(root);
    },
  };
}

/** Frees the GPU side of everything under `object` (geometries, materials, textures).
 * @param {THREE.Object3D} object */
function dispose(object) {
  object.traverse((o) => {
    const mesh = /** @type {THREE.Mesh<THREE.BufferGeometry, THREE.Material | THREE.Material[]>} */ (o);
    if (mesh.geometry) mesh.geometry.dispose();
    const materials = mesh.material ? (Array.isArray(mesh.material) ? mesh.material : [mesh.material]) : [];
    for (const m of materials) {
      const map = /** @type {THREE.MeshStandardMaterial} */ (m).map;
      if (map) map.dispose();
      m.dispose();
    }
  });
}

/** True when a world document describes more than open ground (walls, obstacles or pictures).
 * @param {{ walls?: unknown[], obstacles?: unknown[], pictures?: unknown[] } | null | undefined} doc
 * @returns {boolean} */
export function hasRoom(doc) {
  return Boolean(doc && ((doc.walls && doc.walls.length) || (doc.obstacles && doc.obstacles.length) || (doc.pictures && doc.pictures.length)));
}
