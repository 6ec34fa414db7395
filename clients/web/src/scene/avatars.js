// Avatars: a capsule body with a head and a visor (to show the facing), a name label
// (CSS2D, text set with textContent only), and smooth appearance: new avatars grow and fade
// in, avatars that left the view shrink and fade out before they are removed.

import * as THREE from "three";
import { CSS2DObject } from "three/addons/renderers/CSS2DRenderer.js";

const FADE_SECONDS = 0.35;

/** @param {number} id @returns {THREE.Color} */
function colorFor(id) {
  // A stable pleasant colour per entity slot.
  const slot = id >>> 16;
  const hue = ((slot * 137.508) % 360) / 360;
  return new THREE.Color().setHSL(hue, 0.55, 0.55);
}

class Avatar {
  /** @param {number} id @param {boolean} isSelf */
  constructor(id, isSelf) {
    this.id = id;
    this.group = new THREE.Group();
    /** @type {THREE.Material[]} */
    this.materials = [];
    const color = isSelf ? new THREE.Color(0x2f7de1) : colorFor(id);
    const bodyMat = new THREE.MeshStandardMaterial({ color, roughness: 0.6, transparent: true });
    const headMat = new THREE.MeshStandardMaterial({ color: 0xf1d3b8, roughness: 0.7, transparent: true });
    const visorMat = new THREE.MeshStandardMaterial({ color: 0x1d2430, roughness: 0.3, transparent: true });
    this.materials.push(bodyMat, headMat, visorMat);
    const body = new THREE.Mesh(new THREE.CapsuleGeometry(0.33, 0.85, 4, 12), bodyMat);
    body.position.y = 0.33 + 0.425;
    const head = new THREE.Mesh(new THREE.SphereGeometry(0.24, 16, 12), headMat);
    head.position.y = 1.72;
    const visor = new THREE.Mesh(new THREE.BoxGeometry(0.3, 0.1, 0.12), visorMat);
    visor.position.set(0, 1.75, 0.2);
    this.group.add(body, head, visor);
    this.labelEl = document.createElement("div");
    this.labelEl.className = isSelf ? "name-label self" : "name-label";
    this.label = new CSS2DObject(this.labelEl);
    this.label.position.set(0, 2.25, 0);
    this.group.add(this.label);
    /** @type {string | null} */
    this.name = null;
    this.fade = 0; // 0..1 appearance
    this.leaving = false;
    this.apply();
  }

  /** @param {string | null | undefined} name */
  setName(name) {
    const text = name || `#${this.id >>> 16}`;
    if (text !== this.name) {
      this.name = text;
      this.labelEl.textContent = text; // never HTML
    }
  }

  /** Scale, opacity and visibility from the fade (0..1). */
  apply() {
    const f = this.fade;
    const s = 0.05 + 0.95 * (1 - (1 - f) * (1 - f));
    this.group.scale.setScalar(s);
    for (const m of this.materials) m.opacity = f;
    this.labelEl.style.opacity = String(f);
    this.group.visible = f > 0.001;
  }

  /** Frees the geometry and materials and removes the label element. */
  dispose() {
    this.group.traverse((o) => {
      if (o instanceof THREE.Mesh) o.geometry.dispose();
    });
    for (const m of this.materials) m.dispose();
    this.labelEl.remove();
  }
}

/** A state to place an avatar at: metres and yaw in radians.
 * @typedef {{ x: number, y: number, z: number, yaw: number }} AvatarPose */

export class AvatarManager {
  /** @param {THREE.Scene} scene */
  constructor(scene) {
    this.scene = scene;
    /** @type {Map<number, Avatar>} */
    this.avatars = new Map();
  }

  /** @param {number} id @param {boolean} isSelf @returns {Avatar} */
  _get(id, isSelf) {
    let a = this.avatars.get(id);
    if (!a) {
      a = new Avatar(id, isSelf);
      this.avatars.set(id, a);
      this.scene.add(a.group);
    }
    a.leaving = false;
    return a;
  }

  /**
   * states: Map id -> { x, y, z, yaw } of remote avatars (interpolated); self: { id, x, y,
   * z, yaw } or null; names: Map id -> name; dt: seconds since the last frame.
   * @param {Map<number, AvatarPose>} states
   * @param {(AvatarPose & { id: number }) | null} self
   * @param {Map<number, string>} names
   * @param {number} dt
   */
  update(states, self, names, dt) {
    const seen = new Set();
    const step = dt / FADE_SECONDS;
    const place = (/** @type {Avatar} */ a, /** @type {AvatarPose} */ s) => {
      a.group.position.set(s.x, s.y, s.z);
      a.group.rotation.y = s.yaw;
      a.setName(names.get(a.id));
      a.fade = Math.min(1, a.fade + step);
    };
    for (const [id, s] of states) {
      if (self && id === self.id) continue;
      seen.add(id);
      place(this._get(id, false), s);
    }
    if (self) {
      seen.add(self.id);
      place(this._get(self.id, true), self);
    }
    for (const [id, a] of this.avatars) {
      if (seen.has(id)) {
        a.apply();
        continue;
      }
      a.leaving = true;
      a.fade = Math.max(0, a.fade - step);
      a.apply();
      if (a.fade <= 0) {
        this.scene.remove(a.group);
        a.dispose();
        this.avatars.delete(id);
      }
    }
  }

  /** Removes every avatar from the scene. */
  clear() {
    for (const a of this.avatars.values()) {
      this.scene.remove(a.group);
      a.dispose();
    }
    this.avatars.clear();
  }
}
