// The call's strip over the 3D view: one small video tile per member with its name (the own
// camera first, mirrored, with the microphone and camera toggles), a speaking mark on the
// tile of whoever speaks, and a line for the call's state ("waiting: the call is full",
// "listening only"). It sits in a row along the top of the view, clear of the status toggle,
// the chat panel and the phone layout's buttons (styles.css #call-bar).
//
// Names are shown with textContent only. Must not: own the media (it shows the streams it is
// given) or send anything; the toggles call back.

/** @param {string} tag @param {string} [className] @returns {HTMLElement} */
function el(tag, className = "") {
  const e = document.createElement(tag);
  if (className) e.className = className;
  return e;
}

class Tile {
  /** @param {string} name @param {boolean} self */
  constructor(name, self) {
    this.name = name;
    this.root = el("figure", self ? "call-tile self" : "call-tile");
    this.root.dataset.name = name;
    this.video = /** @type {HTMLVideoElement} */ (el("video"));
    this.video.muted = true; // the voice plays through WebAudio (audio.js)
    this.video.autoplay = true;
    this.video.playsInline = true;
    this.initial = el("span", "call-initial");
    this.initial.textContent = Array.from(name)[0] || "?";
    this.caption = el("figcaption");
    this.caption.textContent = name;
    this.root.append(this.video, this.initial, this.caption);
    /** @type {MediaStream | null} */
    this.stream = null;
    this.firstFrameAt = /** @type {number | null} */ (null);
    this.setVideo(null);
  }

  /** @param {MediaStream | null} stream */
  setVideo(stream) {
    if (this.stream === stream) return;
    this.stream = stream;
    this.video.srcObject = stream;
    this.root.classList.toggle("has-video", Boolean(stream));
    if (!stream) return;
    this.video.play().catch(() => {});
    const v = /** @type {any} */ (this.video);
    if (this.firstFrameAt === null && typeof v.requestVideoFrameCallback === "function") {
      v.requestVideoFrameCallback(() => {
        if (this.firstFrameAt === null) this.firstFrameAt = performance.now();
      });
    }
  }
}

export class CallTiles {
  /**
   * @param {{ parent?: HTMLElement, onMic?: (on: boolean) => void, onCam?: (on: boolean) => void }} [options]
   */
  constructor({ parent = document.body, onMic = () => {}, onCam = () => {} } = {}) {
    this.root = el("div");
    this.root.id = "call-bar";
    this.root.hidden = true;
    this.root.setAttribute("aria-label", "call");
    this.line = el("div", "call-line");
    this.row = el("div", "call-tiles");
    this.root.append(this.row, this.line);
    this.mic = /** @type {HTMLButtonElement} */ (el("button", "call-mic"));
    this.cam = /** @type {HTMLButtonElement} */ (el("button", "call-cam"));
    for (const b of [this.mic, this.cam]) b.type = "button";
    this.mic.addEventListener("click", () => onMic(this.mic.getAttribute("aria-pressed") !== "true"));
    this.cam.addEventListener("click", () => onCam(this.cam.getAttribute("aria-pressed") !== "true"));
    this.buttons = el("div", "call-buttons");
    this.buttons.append(this.mic, this.cam);
    /** @type {Tile | null} */
    this.self = null;
    /** @type {Map<string, Tile>} */
    this.tiles = new Map();
    parent.append(this.root);
    this.setToggles({ mic: false, cam: false, hasMic: false, hasCam: false });
  }

  /** Shows the strip with a line of text ("" for none). @param {boolean} visible @param {string} [text] */
  show(visible, text = "") {
    this.root.hidden = !visible;
    this.line.textContent = text;
    this.line.hidden = !text;
  }

  /** The own tile: the name and the local camera (null: none). @param {string} name @param {MediaStream | null} stream */
  setSelf(name, stream) {
    if (!this.self || this.self.name !== name) {
      if (this.self) this.self.root.remove();
      this.self = new Tile(name, true);
      this.self.root.append(this.buttons);
      this.row.prepend(this.self.root);
    }
    this.self.setVideo(stream);
  }

  /** @param {{ mic: boolean, cam: boolean, hasMic: boolean, hasCam: boolean }} s */
  setToggles(s) {
    this.mic.disabled = !s.hasMic;
    this.cam.disabled = !s.hasCam;
    this.mic.setAttribute("aria-pressed", String(s.hasMic && s.mic));
    this.cam.setAttribute("aria-pressed", String(s.hasCam && s.cam));
    this.mic.textContent = "Mic";
    this.cam.textContent = "Cam";
    this.mic.title = s.hasMic ? (s.mic ? "mute the microphone" : "unmute the microphone") : "no microphone";
    this.cam.title = s.hasCam ? (s.cam ? "turn the camera off" : "turn the camera on") : "no camera";
  }

  /** A member's tile (made when missing). @param {string} name @returns {Tile} */
  tile(name) {
    let t = this.tiles.get(name);
    if (!t) {
      t = new Tile(name, false);
      this.tiles.set(name, t);
      this.row.append(t.root);
    }
    return t;
  }

  /** @param {string} name */
  remove(name) {
    const t = this.tiles.get(name);
    if (!t) return;
    t.setVideo(null);
    t.root.remove();
    this.tiles.delete(name);
  }

  /** Marks who speaks (member names; `self` for the own tile).
   * @param {Set<string>} names @param {boolean} self */
  setSpeaking(names, self) {
    for (const [name, t] of this.tiles) t.root.classList.toggle("speaking", names.has(name));
    if (this.self) this.self.root.classList.toggle("speaking", self);
  }

  /** Every tile goes and the strip hides. */
  clear() {
    for (const name of [...this.tiles.keys()]) this.remove(name);
    if (this.self) {
      this.self.setVideo(null);
      this.self.root.remove();
      this.self = null;
    }
    this.show(false);
  }
}
