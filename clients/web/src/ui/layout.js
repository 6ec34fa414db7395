// The page's layout around the 3D view, so the view stays clear on every screen: the
// developer status panel sits behind a toggle button (shown from the start only with ?debug
// in the URL, on every screen size); on a small screen (a phone) the chat is folded into a
// round button with the count of messages others sent while it was folded (the server's join
// and leave notices are not counted), and unfolds over the lower part of the view on a tap
// (the touch stick hides meanwhile, and the picture moves up so the own avatar stands in the
// part of the view the chat leaves free); the camera's field of view widens on a tall screen
// so a portrait phone still sees the room around the avatar.
//
// smallScreen, debugMode, fieldOfView, badgeText and countsAsUnread are pure or read only the
// given window. Must not:
// change the chat's rooms or messages (it only listens to the chat client's events) or touch
// the 3D scene.

export const SMALL_SCREEN = "(max-width: 700px), (max-height: 500px)";

/** The parts of a window these functions read (a plain object in the unit tests).
 * @typedef {{location: {search: string}, matchMedia?: (query: string) => {matches: boolean}}} WindowLike */

/** True on a phone-sized view. @param {WindowLike} [win] */
export function smallScreen(win = globalThis) {
  return Boolean(win.matchMedia && win.matchMedia(SMALL_SCREEN).matches);
}

/** True when the page's URL has ?debug (the developer status panel shows from the start).
 *  @param {WindowLike} [win] */
export function debugMode(win = globalThis) {
  try {
    return new URLSearchParams(win.location.search).has("debug");
  } catch {
    return false;
  }
}

/**
 * The vertical field of view (degrees) for a view's aspect (width / height): 60 on wide
 * screens, wider on tall ones so at least 50 degrees are seen across, at most 80.
 * @param {number} aspect
 * @returns {number}
 */
export function fieldOfView(aspect) {
  if (!(aspect > 0)) return 60;
  const v = (2 * Math.atan(Math.tan((25 * Math.PI) / 180) / aspect) * 180) / Math.PI;
  return Math.max(60, Math.min(80, v));
}

/** "" for none, the count, or "99+". @param {number} n */
export function badgeText(n) {
  return n <= 0 ? "" : n > 99 ? "99+" : String(n);
}

/** The chat's author of join and leave notices (worldserver/chat/service.py SERVER_AUTHOR). */
export const SERVER_AUTHOR = "server";

/**
 * True when a chat message that came in while the chat was folded counts on its button:
 * someone else's message, not the server's join and leave notices.
 * @param {{author: string, kind: string, deleted?: boolean} | null} m
 * @param {string | null} user our own name
 */
export function countsAsUnread(m, user) {
  if (!m || m.deleted || m.author === user) return false;
  return !(m.kind === "notice" && m.author === SERVER_AUTHOR);
}

export class PageLayout {
  /**
   * statusEl: the status panel; chatEl: the chat panel's root; parent: where the buttons go.
   * @param {{statusEl: HTMLElement, chatEl: HTMLElement, parent?: HTMLElement, win?: Window}} options
   */
  constructor({ statusEl, chatEl, parent = document.body, win = window }) {
    this.win = win;
    this.statusEl = statusEl;
    this.chatEl = chatEl;
    this.debug = debugMode(win);
    this.small = smallScreen(win);
    this.joined = false;
    this.chatOpen = false; // unfolded on a small screen
    this.unread = 0;
    this.client = null;
    this._viewKey = ""; // what applyView last set the camera for

    this.statusBtn = document.createElement("button");
    this.statusBtn.id = "status-toggle";
    this.statusBtn.type = "button";
    this.statusBtn.hidden = true;
    this.statusBtn.textContent = "i";
    this.statusBtn.addEventListener("click", () => this.showStatus(this.statusEl.hidden));

    this.chatBtn = document.createElement("button");
    this.chatBtn.id = "chat-button";
    this.chatBtn.type = "button";
    this.chatBtn.hidden = true;
    this.chatLabel = document.createElement("span");
    this.chatLabel.className = "label";
    this.badge = document.createElement("span");
    this.badge.className = "badge";
    this.chatBtn.append(this.chatLabel, this.badge);
    this.chatBtn.addEventListener("click", () => this.openChat(!this.chatOpen));
    parent.append(this.statusBtn, this.chatBtn);

    if (win.matchMedia) {
      const mq = win.matchMedia(SMALL_SCREEN);
      const changed = () => {
        this.small = mq.matches;
        if (!this.small) this.chatOpen = false;
        this._render();
      };
      if (mq.addEventListener) mq.addEventListener("change", changed);
    }
    this._render();
  }

  /** The player joined: the status toggle appears, the status panel only with ?debug. */
  join() {
    this.joined = true;
    this.showStatus(this.debug);
  }

  /** Shows or hides the status panel. */
  showStatus(visible) {
    this.statusEl.hidden = !visible;
    this._render();
  }

  /** The chat is mounted: count what others say while it is folded. @param {{on: Function, user: string|null}} client */
  attachChat(client) {
    this.client = client;
    client.on("messages", (key, added, info) => {
      if (!info || !info.live || info.own || !this.folded) return;
      const n = added.filter((m) => countsAsUnread(m, client.user)).length;
      if (n) {
        this.unread += n;
        this._render();
      }
    });
    this._render();
  }

  /** Unfolds (or folds) the chat on a small screen; unfolding clears the unread count. */
  openChat(open) {
    this.chatOpen = Boolean(open);
    if (this.chatOpen) this.unread = 0;
    this._render();
  }

  /** True when the chat shows only as its button. */
  get folded() {
    return Boolean(this.client) && this.small && !this.chatOpen;
  }

  /**
   * How many CSS pixels the picture moves up: with the chat unfolded over the lower part of a
   * small screen, the centre of the part left free. Reads the chat's box (a layout).
   */
  viewShift() {
    if (!(this.client && this.small && this.chatOpen)) return 0;
    const h = this.win.innerHeight;
    const top = this.chatEl.getBoundingClientRect().top;
    return top > 0 && top < h ? Math.round((h - top) / 2) : 0;
  }

  /**
   * Once a frame: moves the camera's picture up by viewShift() (a view offset of a taller
   * image), or back; only when the chat's state or the window's size changed.
   * @param {{aspect: number, fov: number, setViewOffset: Function, clearViewOffset: Function}} camera
   *   a three.js PerspectiveCamera (its aspect and field of view become the taller image's, so
   *   pixels stay square and things keep their size)
   */
  applyView(camera) {
    const w = this.win.innerWidth;
    const h = this.win.innerHeight;
    const key = `${this.small && this.chatOpen && Boolean(this.client)}:${w}x${h}`;
    if (key === this._viewKey) return;
    this._viewKey = key;
    const d = this.viewShift();
    const base = (fieldOfView(w / h) * Math.PI) / 360; // half the visible part's angle
    camera.fov = (Math.atan((Math.tan(base) * (h + 2 * d)) / h) * 360) / Math.PI;
    camera.aspect = w / (h + 2 * d);
    if (d > 0) camera.setViewOffset(w, h + 2 * d, 0, 2 * d, w, h);
    else camera.clearViewOffset();
  }

  /** The page's elements name tags must stay off. */
  panels() {
    return [this.statusEl, this.chatEl, this.statusBtn, this.chatBtn];
  }

  _render() {
    this.statusBtn.hidden = !this.joined;
    this.statusBtn.setAttribute("aria-pressed", String(!this.statusEl.hidden));
    this.statusBtn.title = this.statusEl.hidden ? "show the connection status" : "hide the connection status";
    const chatMounted = Boolean(this.client);
    this.chatEl.classList.toggle("folded", this.folded);
    const sheet = chatMounted && this.small && this.chatOpen;
    this.chatEl.classList.toggle("sheet", sheet);
    document.body.classList.toggle("chat-sheet-open", sheet);
    this.chatBtn.hidden = !(chatMounted && this.small);
    this.chatBtn.classList.toggle("open", this.chatOpen);
    this.chatLabel.textContent = this.chatOpen ? "×" : "Chat";
    const text = this.folded ? badgeText(this.unread) : "";
    this.badge.textContent = text;
    this.badge.hidden = !text;
    this.chatBtn.setAttribute("aria-label", this.chatOpen ? "close the chat" : text ? `chat, ${text} unread` : "chat");
  }

  /** For the test hook. */
  state() {
    return {
      small: this.small,
      debug: this.debug,
      folded: this.folded,
      unread: this.unread,
      status: !this.statusEl.hidden,
      chat_button: !this.chatBtn.hidden,
      badge: this.badge.hidden ? "" : this.badge.textContent,
    };
  }
}
