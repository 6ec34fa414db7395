// Touch controls for phones and tablets: a thumb stick in the lower left corner of the view.
// Pushing it walks like the keys do (up is forward where the camera looks, sideways strafes,
// the push's length is the speed); the rest of the view keeps drag-to-look (main.js). Built
// with pointer events, so a pen or a mouse can use it too; it is shown on touch screens only
// (or with ?touch in the URL).
//
// stickVector is pure (unit-tested). Must not: send anything itself (main.js reads forward
// and right into the same movement intent as the keys) or take events outside its element.

export const DEAD_ZONE = 0.12; // share of the radius that is no push at all

/**
 * The walking intent of the knob pushed (dx, dy) CSS pixels from the centre of a stick of
 * the given radius: forward (up on the screen) and right, each in -1..1, the vector's length
 * at most 1 and 0 within the dead zone (then rescaled so walking starts gently at its edge).
 * @param {number} dx @param {number} dy @param {number} radius
 * @returns {{forward: number, right: number}}
 */
export function stickVector(dx, dy, radius) {
  const len = Math.hypot(dx, dy);
  if (!(radius > 0) || !(len > DEAD_ZONE * radius)) return { forward: 0, right: 0 };
  const amount = Math.min(1, (len / radius - DEAD_ZONE) / (1 - DEAD_ZONE));
  return { forward: (-dy / len) * amount, right: (dx / len) * amount };
}

/** True on a device whose main pointer is a finger (or when the URL asks with ?touch).
 *  @param {{location: {search: string}, matchMedia?: (query: string) => {matches: boolean}, navigator?: {maxTouchPoints: number}}} [win] */
export function touchScreen(win = globalThis) {
  try {
    if (new URLSearchParams(win.location.search).has("touch")) return true;
    if (win.matchMedia && win.matchMedia("(pointer: coarse)").matches) return true;
    return Boolean(win.navigator && win.navigator.maxTouchPoints > 0);
  } catch {
    return false;
  }
}

export class TouchStick {
  /** Builds the stick in `parent` (hidden until show()). */
  constructor(parent) {
    this.forward = 0;
    this.right = 0;
    this.pointer = null; // the pointer id holding the knob
    this.el = document.createElement("div");
    this.el.id = "stick";
    this.el.className = "stick";
    this.el.hidden = true;
    this.el.setAttribute("aria-label", "walk: push the stick");
    this.knob = document.createElement("div");
    this.knob.className = "stick-knob";
    this.el.appendChild(this.knob);
    parent.appendChild(this.el);
    const move = (ev) => {
      const r = this.el.getBoundingClientRect();
      const radius = r.width / 2;
      let dx = ev.clientX - (r.left + radius);
      let dy = ev.clientY - (r.top + radius);
      const v = stickVector(dx, dy, radius);
      this.forward = v.forward;
      this.right = v.right;
      const len = Math.hypot(dx, dy);
      if (len > radius) {
        dx *= radius / len;
        dy *= radius / len;
      }
      this.knob.style.transform = `translate(${dx}px, ${dy}px)`;
    };
    this.el.addEventListener("pointerdown", (ev) => {
      if (this.pointer !== null) return;
      this.pointer = ev.pointerId;
      this.el.setPointerCapture(ev.pointerId);
      this.el.classList.add("active");
      move(ev);
      ev.preventDefault();
    });
    this.el.addEventListener("pointermove", (ev) => {
      if (ev.pointerId === this.pointer) move(ev);
    });
    const end = (ev) => {
      if (ev.pointerId !== this.pointer) return;
      this.release();
    };
    this.el.addEventListener("pointerup", end);
    this.el.addEventListener("pointercancel", end);
    this.el.addEventListener("lostpointercapture", end);
    this.el.addEventListener("contextmenu", (ev) => ev.preventDefault());
  }

  /** Lets go of the knob: no push. */
  release() {
    this.pointer = null;
    this.forward = 0;
    this.right = 0;
    this.knob.style.transform = "";
    this.el.classList.remove("active");
  }

  show(visible = true) {
    this.el.hidden = !visible;
    if (!visible) this.release();
  }
}
