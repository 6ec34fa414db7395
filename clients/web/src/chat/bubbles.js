// Speech bubbles over the avatars in the 3D view: the newest chat message of a player floats
// above their avatar (a CSS2D label, text set with textContent only) and fades out after a
// few seconds. A bubble for an avatar that is not in view yet waits (until it expires) and
// appears when the avatar does.

import { CSS2DObject } from "three/addons/renderers/CSS2DRenderer.js";

export const BUBBLE_SECONDS = 6; // fully visible, then
export const BUBBLE_FADE_SECONDS = 1.5; // fading out
const MAX_BUBBLE_CHARS = 140;
const BUBBLE_HEIGHT = 2.75; // metres above the avatar's feet (the name label is at 2.25)

/**
 * The text a bubble shows for a message: whitespace folded, shortened, "[image]" for an
 * image without caption (questions are told apart by the bubble's style, data-kind).
 * @param {{ text?: string | null, kind?: string }} message
 * @returns {string}
 */
export function bubbleText(message) {
  let text = String(message.text || "").replace(/\s+/g, " ").trim();
  if (message.kind === "image" && !text) text = "[image]";
  if (text.length > MAX_BUBBLE_CHARS) text = `${text.slice(0, MAX_BUBBLE_CHARS - 1)}…`;
  return text;
}

class Bubble {
  /** @param {number} entityId */
  constructor(entityId) {
    this.entityId = entityId;
    this.el = document.createElement("div");
    this.el.className = "speech-bubble";
    this.textEl = document.createElement("span");
    this.el.appendChild(this.textEl);
    this.object = new CSS2DObject(this.el);
    this.object.position.set(0, BUBBLE_HEIGHT, 0);
    this.object.center.set(0.5, 1);
    /** @type {import("three").Object3D | null} the avatar group it is attached to */
    this.parent = null;
    this.text = "";
    this.until = 0; // seconds (performance clock): fully visible until then
  }

  /** @param {string} text @param {number} now seconds @param {string | undefined} kind @param {boolean} isPrivate */
  set(text, now, kind, isPrivate) {
    this.text = text;
    this.textEl.textContent = text; // never HTML
    this.el.dataset.kind = kind || "text";
    this.el.classList.toggle("private", Boolean(isPrivate));
    this.until = now + BUBBLE_SECONDS;
  }

  /** Takes the bubble off its avatar and out of the page. */
  detach() {
    if (this.parent) this.parent.remove(this.object);
    this.parent = null;
    this.el.remove();
  }
}

export class SpeechBubbles {
  constructor() {
    /** @type {Map<number, Bubble>} entity id -> Bubble */
    this.bubbles = new Map();
  }

  /**
   * Shows `message` over the avatar of entity `entityId` (replacing its previous bubble);
   * a message of a private room gets a bubble styled as such.
   * @param {number} entityId
   * @param {{ text?: string | null, kind?: string }} message
   * @param {number} [now] seconds, performance clock
   * @param {boolean} [isPrivate]
   */
  say(entityId, message, now = performance.now() / 1000, isPrivate = false) {
    if (!Number.isInteger(entityId)) return;
    const text = bubbleText(message);
    if (!text) return;
    let b = this.bubbles.get(entityId);
    if (!b) {
      b = new Bubble(entityId);
      this.bubbles.set(entityId, b);
    }
    b.set(text, now, message.kind, isPrivate);
  }

  /** Once per frame: attach bubbles to avatars in view, fade and drop old ones.
   * @param {import("../scene/avatars.js").AvatarManager | null} avatarManager
   * @param {number} [now] seconds, performance clock */
  update(avatarManager, now = performance.now() / 1000) {
    for (const [id, b] of this.bubbles) {
      const left = b.until + BUBBLE_FADE_SECONDS - now;
      if (left <= 0) {
        b.detach();
        this.bubbles.delete(id);
        continue;
      }
      const avatar = avatarManager ? avatarManager.avatars.get(id) : null;
      const group = avatar && !avatar.leaving ? avatar.group : null;
      if (group !== b.parent) {
        if (b.parent) b.parent.remove(b.object);
        if (!group) b.el.remove(); // CSS2DRenderer leaves the element of a detached object
        else group.add(b.object);
        b.parent = group;
      }
      b.el.style.opacity = now < b.until ? "1" : String(Math.max(0, left / BUBBLE_FADE_SECONDS));
    }
  }

  /** The bubbles alive now: [{ entityId, text, attached }].
   * @param {number} [now] seconds, performance clock
   * @returns {{ entityId: number, text: string | null, attached: boolean }[]} */
  list(now = performance.now() / 1000) {
    const out = [];
    for (const b of this.bubbles.values()) {
      if (b.until + BUBBLE_FADE_SECONDS > now) out.push({ entityId: b.entityId, text: b.textEl.textContent, attached: b.parent !== null });
    }
    return out;
  }

  /** Removes every bubble. */
  clear() {
    for (const b of this.bubbles.values()) b.detach();
    this.bubbles.clear();
  }
}
