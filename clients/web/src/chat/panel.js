// The chat panel of the gallery page: the rooms (the public room, created and invited ones;
// create with a private toggle, invite by name, leave, delete), the messages of the current
// room by kind (text, image thumbnails, questions with an "answered" mark, notices), who is
// typing, older history when scrolled to the top, search with jump-to-message, image upload
// and the input line.
//
// Everything another player or the server wrote is put into the page with textContent (or
// as an <img> URL built from an image id), never parsed as HTML. Keys typed in the panel's
// inputs do not reach the avatar controls (main.js ignores keydown events from inputs).

import { ChatError, roomKey } from "./client.js";
import { fetchJson } from "../net/http.js";

const NEAR_BOTTOM_PX = 60; // counted as "at the bottom": new messages keep it scrolled down
const NEAR_TOP_PX = 40; // scrolled this close to the top: load older messages
const HIGHLIGHT_MS = 2500;
const TYPING_REFRESH_MS = 500;

/** Element helper: tag, class, text (as textContent), attributes.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {string} [cls]
 * @param {unknown} [text] shown with textContent; null or undefined for none
 * @param {Record<string, unknown> | null} [attrs]
 * @returns {HTMLElementTagNameMap[K]} */
function el(tag, cls = "", text = null, attrs = null) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== null && text !== undefined) e.textContent = String(text);
  if (attrs) for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

/** The URL of a chat image from a message's image field (an id, or an object with one).
 * @param {unknown} image
 * @returns {string | null} */
export function imageUrl(image) {
  let id = image;
  if (image && typeof image === "object") id = /** @type {{ id?: unknown }} */ (image).id ?? null;
  if (typeof id !== "string" && typeof id !== "number") return null;
  const s = String(id);
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(s)) return null;
  return `/api/chat/images/${encodeURIComponent(s)}`;
}

/** @param {unknown} ts seconds or milliseconds since the epoch, or a date string @returns {string} */
function timeText(ts) {
  if (ts === null || ts === undefined) return "";
  const n = Number(ts);
  const d = Number.isFinite(n) ? new Date(n < 1e12 ? n * 1000 : n) : new Date(String(ts));
  if (Number.isNaN(d.getTime())) return "";
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** "X is typing…", "X and Y are typing…", "X, Y and 2 others are typing…".
 * @param {string[]} users
 * @returns {string} */
export function typingText(users) {
  if (!users.length) return "";
  if (users.length === 1) return `${users[0]} is typing…`;
  if (users.length === 2) return `${users[0]} and ${users[1]} are typing…`;
  if (users.length === 3) return `${users[0]}, ${users[1]} and ${users[2]} are typing…`;
  return `${users[0]}, ${users[1]} and ${users.length - 2} others are typing…`;
}

/** Uploads an image file; resolves with the image id the server gave it.
 * @param {Blob} file
 * @param {string} token the join token
 * @param {string} [origin] "" for the page's own
 * @returns {Promise<string>} */
export async function uploadImage(file, token, origin = "") {
  const { ok, status, body } = await fetchJson(`${origin}/api/chat/images`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": file.type || "application/octet-stream", Accept: "application/json" },
    body: file,
  });
  if (!ok) {
    // {"error": "a sentence", "code": "too_large", "retry_after"?: s}
    const e = body && body.error;
    const msg = e && typeof e === "object" ? e.message || e.code : e;
    const code = (body && body.code) || (e && typeof e === "object" && e.code) || `http_${status}`;
    const retry = body && Number.isFinite(Number(body.retry_after)) ? Number(body.retry_after) : null;
    throw new ChatError(String(code), msg ? `image upload: ${msg}` : `image upload failed (HTTP ${status})`, retry);
  }
  const id = body && (body.id ?? (body.image && typeof body.image === "object" ? body.image.id : body.image));
  if (id === undefined || id === null) throw new ChatError("bad_reply", "unexpected answer to the upload");
  return String(id);
}

export class ChatPanel {
  // The panel's elements, made by _build.
  /** @type {HTMLSpanElement} */ title;
  /** @type {HTMLSpanElement} */ stateEl;
  /** @type {HTMLButtonElement} */ toggleBtn;
  /** @type {HTMLDivElement} */ body;
  /** @type {HTMLDivElement} */ roomsEl;
  /** @type {HTMLButtonElement} */ newRoomBtn;
  /** @type {HTMLFormElement} */ createForm;
  /** @type {HTMLInputElement} */ createName;
  /** @type {HTMLInputElement} */ createPrivate;
  /** @type {HTMLFormElement} */ roomTools;
  /** @type {HTMLInputElement} */ inviteName;
  /** @type {HTMLButtonElement} */ inviteBtn;
  /** @type {HTMLButtonElement} */ leaveBtn;
  /** @type {HTMLButtonElement} */ deleteRoomBtn;
  /** @type {HTMLFormElement} */ searchForm;
  /** @type {HTMLInputElement} */ searchInput;
  /** @type {HTMLDivElement} */ resultsEl;
  /** @type {HTMLDivElement} */ listEl;
  /** @type {HTMLDivElement} */ olderEl;
  /** @type {HTMLDivElement} */ itemsEl;
  /** @type {HTMLDivElement} */ pendingEl;
  /** @type {HTMLDivElement} */ typingEl;
  /** @type {HTMLDivElement} */ errorEl;
  /** @type {HTMLFormElement} */ inputForm;
  /** @type {HTMLSelectElement} */ kindSelect;
  /** @type {HTMLInputElement} */ fileInput;
  /** @type {HTMLButtonElement} */ fileBtn;
  /** @type {HTMLInputElement} */ input;
  /** @type {HTMLButtonElement} */ sendBtn;

  /**
   * client: a ChatClient; root: the element to build the panel in; token: the join token
   * (image uploads); onFocusChange(focused): the chat input got or lost the focus.
   * @param {{ client: import("./client.js").ChatClient, root: HTMLElement, token: string,
   *   onFocusChange?: (focused: boolean) => void }} options
   */
  constructor({ client, root, token, onFocusChange = (/** @type {boolean} */ _focused) => {} }) {
    this.client = client;
    this.root = root;
    this.token = token;
    this.onFocusChange = onFocusChange;
    /** @type {string | null} room key shown */
    this.current = null;
    /** @type {Map<string, HTMLElement>} message id (string) -> element, of the current room */
    this.msgEls = new Map();
    /** @type {string | null} */
    this.renderedRoom = null;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.highlightTimer = undefined;
    this.uploading = false;
    this._build();
    this._wire();
    this._typingTimer = setInterval(() => this._renderTyping(), TYPING_REFRESH_MS);
    this.render();
  }

  // ------------------------------------------------------------------ building

  _build() {
    const r = this.root;
    r.classList.add("chat");
    r.textContent = "";

    const head = el("div", "chat-head");
    this.title = el("span", "chat-title", "Chat");
    this.stateEl = el("span", "chat-state", "connecting…");
    this.toggleBtn = el("button", "chat-toggle", "–", { type: "button", title: "hide the chat" });
    head.append(this.title, this.stateEl, this.toggleBtn);

    this.body = el("div", "chat-body");

    // rooms
    const roomsBar = el("div", "chat-rooms-bar");
    this.roomsEl = el("div", "chat-rooms", null, { role: "tablist" });
    this.newRoomBtn = el("button", "chat-new-room", "+", { type: "button", title: "create a room" });
    roomsBar.append(this.roomsEl, this.newRoomBtn);

    this.createForm = el("form", "chat-create", null, { autocomplete: "off" });
    this.createForm.hidden = true;
    this.createName = el("input", "", null, { placeholder: "room name", maxlength: "64", "aria-label": "room name" });
    const privLabel = el("label", "chat-private");
    this.createPrivate = el("input", "", null, { type: "checkbox" });
    privLabel.append(this.createPrivate, document.createTextNode(" private"));
    const createBtn = el("button", "", "create", { type: "submit" });
    this.createForm.append(this.createName, privLabel, createBtn);

    this.roomTools = el("form", "chat-room-tools", null, { autocomplete: "off" });
    this.inviteName = el("input", "", null, { placeholder: "invite by name", maxlength: "24", "aria-label": "invite by name" });
    this.inviteBtn = el("button", "", "invite", { type: "submit" });
    this.leaveBtn = el("button", "", "leave", { type: "button" });
    this.deleteRoomBtn = el("button", "danger", "delete", { type: "button" });
    this.roomTools.append(this.inviteName, this.inviteBtn, this.leaveBtn, this.deleteRoomBtn);

    // search
    this.searchForm = el("form", "chat-search", null, { autocomplete: "off", role: "search" });
    this.searchInput = el("input", "", null, { type: "search", placeholder: "search this room", "aria-label": "search messages" });
    this.searchForm.append(this.searchInput);
    this.resultsEl = el("div", "chat-results");
    this.resultsEl.hidden = true;

    // messages
    this.listEl = el("div", "chat-messages", null, { role: "log", "aria-live": "polite" });
    this.olderEl = el("div", "chat-older", "");
    this.itemsEl = el("div", "chat-items");
    this.pendingEl = el("div", "chat-pending");
    this.listEl.append(this.olderEl, this.itemsEl, this.pendingEl);

    this.typingEl = el("div", "chat-typing", "");
    this.errorEl = el("div", "chat-error", "", { role: "alert" });

    // input line
    this.inputForm = el("form", "chat-input-row", null, { autocomplete: "off" });
    this.kindSelect = el("select", "chat-kind", null, { title: "kind of message", "aria-label": "kind of message" });
    for (const [value, label] of [["text", "say"], ["question", "ask"], ["notice", "notice"]]) {
      this.kindSelect.append(el("option", "", label, { value }));
    }
    this.fileInput = el("input", "", null, { type: "file", accept: "image/png,image/jpeg,image/webp,image/gif" });
    this.fileInput.hidden = true;
    this.fileBtn = el("button", "chat-attach", "img", { type: "button", title: "send an image", "aria-label": "send an image" });
    this.input = el("input", "", null, { id: "chat-input", placeholder: "say something…", maxlength: "2000", "aria-label": "chat message" });
    this.sendBtn = el("button", "", "send", { type: "submit" });
    this.inputForm.append(this.kindSelect, this.fileBtn, this.fileInput, this.input, this.sendBtn);

    this.body.append(roomsBar, this.createForm, this.roomTools, this.searchForm, this.resultsEl, this.listEl, this.typingEl, this.errorEl, this.inputForm);
    r.append(head, this.body);
  }

  _wire() {
    const c = this.client;
    c.on("state", () => this._renderState());
    c.on("rooms", () => this.render());
    c.on("messages", (key, added, info) => this._onMessages(key, added, info));
    c.on("outbox", (key) => {
      if (key === this.current) this._renderPending();
    });
    c.on("typing", (key) => {
      if (key === this.current) this._renderTyping();
    });
    c.on("removed", (key) => {
      if (key === this.current) this.current = null;
      this.render();
    });
    c.on("invited", (key, by) => this.notice(by ? `${by} invited you to ${this._roomName(key)}` : `invited to ${this._roomName(key)}`));
    c.on("error", (err) => this.showError(err));

    this.toggleBtn.addEventListener("click", () => {
      const hidden = !this.body.hidden;
      this.body.hidden = hidden;
      this.root.classList.toggle("collapsed", hidden);
      this.toggleBtn.textContent = hidden ? "+" : "–";
      this.toggleBtn.title = hidden ? "show the chat" : "hide the chat";
    });
    this.newRoomBtn.addEventListener("click", () => {
      this.createForm.hidden = !this.createForm.hidden;
      if (!this.createForm.hidden) this.createName.focus();
    });
    this.createForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const name = this.createName.value.trim();
      if (!name) return;
      this._run(async () => {
        const key = await c.createRoom(name, this.createPrivate.checked);
        this.createName.value = "";
        this.createForm.hidden = true;
        if (key) this.select(key);
      });
    });
    this.roomTools.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const user = this.inviteName.value.trim();
      if (!user || !this.current) return;
      const key = this.current;
      this._run(async () => {
        await c.invite(key, user);
        this.inviteName.value = "";
        this.notice(`invited ${user}`);
      });
    });
    this.leaveBtn.addEventListener("click", () => {
      if (!this.current) return;
      const key = this.current;
      this._run(() => c.leaveRoom(key));
    });
    this.deleteRoomBtn.addEventListener("click", () => {
      if (!this.current) return;
      const key = this.current;
      this._run(() => c.deleteRoom(key));
    });

    this.searchForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this._search(this.searchInput.value.trim());
    });
    this.searchInput.addEventListener("input", () => {
      if (!this.searchInput.value) this._closeResults();
    });
    this.searchInput.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") {
        this.searchInput.value = "";
        this._closeResults();
      }
    });

    this.listEl.addEventListener("scroll", () => {
      if (this.listEl.scrollTop < NEAR_TOP_PX) this._loadOlder();
    });
    this.olderEl.addEventListener("click", () => this._loadOlder());

    this.inputForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.submit();
    });
    this.input.addEventListener("input", () => {
      if (!this.current) return;
      if (this.input.value) c.typingInput(this.current);
      else c.typingStop(this.current);
    });
    this.input.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") this.input.blur();
    });
    this.input.addEventListener("focus", () => this.onFocusChange(true));
    this.input.addEventListener("blur", () => {
      if (this.current) c.typingStop(this.current);
      this.onFocusChange(false);
    });
    this.fileBtn.addEventListener("click", () => this.fileInput.click());
    this.fileInput.addEventListener("change", () => {
      const file = this.fileInput.files && this.fileInput.files[0];
      this.fileInput.value = "";
      if (file) this.sendImage(file);
    });
    // Enter anywhere else in the page focuses the chat input.
    window.addEventListener("keydown", (ev) => {
      const t = /** @type {HTMLElement | null} */ (ev.target);
      if (ev.key !== "Enter" || (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "BUTTON"))) return;
      if (this.body.hidden || !this.root.isConnected || this.root.hidden) return;
      ev.preventDefault();
      this.input.focus();
    });
  }

  // ------------------------------------------------------------------ actions

  /** Runs fn and shows what it throws. @param {() => unknown} fn @returns {Promise<unknown>} */
  _run(fn) {
    return Promise.resolve()
      .then(fn)
      .catch((err) => this.showError(err));
  }

  /** Shows an error under the messages for a few seconds (with the wait a rate limit asks).
   * @param {unknown} err */
  showError(err) {
    const text = err instanceof ChatError && err.retryAfter ? `${err.message} (try again in ${Math.ceil(err.retryAfter)} s)` : err instanceof Error && err.message ? err.message : String(err);
    this.errorEl.textContent = text;
    this.errorEl.dataset.kind = "error";
    clearTimeout(this._errorTimer);
    this._errorTimer = setTimeout(() => (this.errorEl.textContent = ""), 6000);
  }

  /** Shows an information line for a few seconds. @param {string} text */
  notice(text) {
    this.errorEl.textContent = text;
    this.errorEl.dataset.kind = "info";
    clearTimeout(this._errorTimer);
    this._errorTimer = setTimeout(() => (this.errorEl.textContent = ""), 4000);
  }

  /** Sends what is in the input line, of the kind chosen (say, ask, notice).
   * @returns {Promise<unknown> | null} null when there was nothing to send */
  submit() {
    const text = this.input.value.trim();
    if (!text || !this.current) return null;
    const kind = this.kindSelect.value || "text";
    this.input.value = "";
    this.kindSelect.value = "text";
    this.stickToBottom = true;
    return this.client.send(this.current, { kind, text }).catch((err) => {
      this.showError(err);
      if (!this.input.value) this.input.value = text; // give the text back
    });
  }

  /** Uploads an image and sends it to the current room, with the input line as its caption.
   * @param {File} file @returns {Promise<void>} */
  async sendImage(file) {
    if (!this.current || this.uploading) return;
    const key = this.current;
    this.uploading = true;
    this.fileBtn.disabled = true;
    this.notice(`uploading ${file.name || "image"}…`);
    try {
      const id = await uploadImage(file, this.token);
      const caption = this.input.value.trim();
      if (caption) this.input.value = "";
      await this.client.send(key, caption ? { kind: "image", image: id, text: caption } : { kind: "image", image: id });
      this.errorEl.textContent = "";
    } catch (err) {
      this.showError(err);
    } finally {
      this.uploading = false;
      this.fileBtn.disabled = false;
    }
  }

  /** Shows room `key` (null: none). @param {unknown} key */
  select(key) {
    const k = key === null ? null : roomKey(key);
    if (k !== null && !this.client.rooms.has(k)) return;
    if (this.current && this.current !== k) this.client.typingStop(this.current);
    this.current = k;
    this._closeResults();
    this.render();
  }

  async _loadOlder() {
    const key = this.current;
    const room = key ? this.client.rooms.get(key) : null;
    if (!key || !room || room.complete || room.loadingOlder) return;
    this.olderEl.textContent = "loading older messages…";
    await this.client.loadOlder(key);
    if (key === this.current) this._renderOlder(room);
  }

  async _search(query) {
    if (!query || !this.current) {
      this._closeResults();
      return;
    }
    const key = this.current;
    this.resultsEl.hidden = false;
    this.resultsEl.textContent = "";
    this.resultsEl.append(el("div", "chat-result-note", "searching…"));
    let results;
    try {
      results = await this.client.search(key, query);
    } catch (err) {
      this.resultsEl.textContent = "";
      this.resultsEl.append(el("div", "chat-result-note", (err instanceof Error && err.message) || String(err)));
      return;
    }
    if (key !== this.current) return;
    this.resultsEl.textContent = "";
    const close = el("button", "chat-results-close", "×", { type: "button", title: "close the results" });
    close.addEventListener("click", () => this._closeResults());
    this.resultsEl.append(close);
    if (!results.length) {
      this.resultsEl.append(el("div", "chat-result-note", "no messages found"));
      return;
    }
    for (const m of results) {
      const item = el("button", "chat-result", null, { type: "button", "data-id": m.id });
      item.append(el("span", "author", m.author), el("span", "text", m.kind === "image" && !m.text ? "[image]" : m.text), el("span", "time", timeText(m.ts)));
      item.addEventListener("click", () => this.jumpTo(key, m.id));
      this.resultsEl.append(item);
    }
  }

  _closeResults() {
    this.resultsEl.hidden = true;
    this.resultsEl.textContent = "";
  }

  /** Scrolls to a message (loading older pages if needed) and highlights it.
   * @param {string} key @param {import("./client.js").MessageId} id
   * @returns {Promise<boolean>} whether it was found */
  async jumpTo(key, id) {
    if (this.current !== key) this.select(key);
    const found = await this.client.loadUntil(key, id);
    if (key !== this.current) return false;
    this._renderMessages();
    const e = this.msgEls.get(String(id));
    if (!found || !e) {
      this.showError(new Error("that message is no longer available"));
      return false;
    }
    this.stickToBottom = false;
    for (const old of this.itemsEl.querySelectorAll(".highlight")) old.classList.remove("highlight");
    e.classList.add("highlight");
    if (e.scrollIntoView) e.scrollIntoView({ block: "center" });
    clearTimeout(this.highlightTimer);
    this.highlightTimer = setTimeout(() => e.classList.remove("highlight"), HIGHLIGHT_MS);
    return true;
  }

  // ------------------------------------------------------------------ rendering

  _roomName(key) {
    const r = this.client.rooms.get(key);
    return r ? r.name : String(key);
  }

  _renderState() {
    if (this.client.state === "ready") this.render();
    else this._renderStateText();
  }

  /** Draws everything again from the client's state (the current room: the public one when unset). */
  render() {
    const c = this.client;
    if (this.current === null || !c.rooms.has(this.current)) {
      const pub = c.publicRoom && c.rooms.has(c.publicRoom) ? c.publicRoom : null;
      const first = c.roomList()[0];
      this.current = pub || (first ? first.key : null);
    }
    this._renderStateText();
    this._renderRooms();
    this._renderTools();
    this._renderMessages();
    this._renderPending();
    this._renderTyping();
  }

  _renderStateText() {
    const c = this.client;
    this.stateEl.textContent = c.state === "ready" ? (c.user ? `as ${c.user}` : "connected") : c.state === "reconnecting" ? "reconnecting…" : c.state;
    this.stateEl.dataset.state = c.state;
    this.root.classList.toggle("offline", c.state !== "ready");
  }

  _renderRooms() {
    const list = this.client.roomList();
    this.roomsEl.textContent = "";
    for (const room of list) {
      const b = el("button", "chat-room", null, { type: "button", role: "tab", "data-room": room.key, title: room.private ? "private room" : "room" });
      if (room.private) b.append(el("span", "lock", "🔒"));
      b.append(el("span", "name", room.name));
      if (room.unread && room.key !== this.current) b.append(el("span", "unread", room.unread > 99 ? "99+" : room.unread));
      if (room.key === this.current) {
        b.classList.add("current");
        b.setAttribute("aria-selected", "true");
      }
      b.addEventListener("click", () => this.select(room.key));
      this.roomsEl.append(b);
    }
    // rooms we may join: invitations first, then other public rooms
    for (const room of this.client.availableRooms()) {
      const b = el("button", `chat-room joinable${room.invited ? " invited" : ""}`, null, {
        type: "button",
        "data-room": room.key,
        title: room.invited ? "you are invited: click to join" : "public room: click to join",
      });
      b.append(el("span", "plus", room.invited ? "✉" : "+"), el("span", "name", room.name));
      b.addEventListener("click", () =>
        this._run(async () => {
          const key = await this.client.joinRoom(room.key);
          this.select(key);
        }),
      );
      this.roomsEl.append(b);
    }
  }

  /** May we moderate room `key` (mark answers, post notices, delete any message)? */
  _canModerate(key) {
    const room = key ? this.client.rooms.get(key) : null;
    return !!room && (this.client.moderator || (room.owner !== null && room.owner === this.client.user));
  }

  _renderTools() {
    const room = this.current ? this.client.rooms.get(this.current) : null;
    const mod = this._canModerate(this.current);
    this.roomTools.hidden = !room || room.public;
    this.inviteName.hidden = this.inviteBtn.hidden = !room || !room.private;
    this.deleteRoomBtn.hidden = !room || room.public || !mod;
    const notice = /** @type {HTMLOptionElement} */ (this.kindSelect.querySelector('option[value="notice"]')); // made by _build
    notice.hidden = notice.disabled = !mod;
    if (!mod && this.kindSelect.value === "notice") this.kindSelect.value = "text";
    if (room) room.unread = 0;
    this.input.disabled = !room;
    const max = Number(this.client.limits && this.client.limits.max_message_chars);
    if (Number.isInteger(max) && max > 0) this.input.maxLength = max;
  }

  _renderOlder(room) {
    this.olderEl.textContent = room.complete ? (room.messages.length ? "— start of the room —" : "no messages yet") : room.loadingOlder ? "loading older messages…" : "scroll up for older messages";
  }

  _messageEl(m) {
    const item = el("div", `chat-msg kind-${m.kind}`, null, { "data-id": m.id });
    const meta = el("div", "meta");
    meta.append(el("span", "author", m.author), el("span", "time", timeText(m.ts)));
    item.append(meta);
    const body = el("div", "body");
    if (m.kind === "image") {
      const url = imageUrl(m.image);
      if (url) {
        const link = el("a", "thumb-link", null, { href: url, target: "_blank", rel: "noopener noreferrer" });
        const img = el("img", "chat-thumb", null, { alt: m.text || `image from ${m.author}`, loading: "lazy" });
        img.src = url;
        link.append(img);
        body.append(link);
      } else {
        body.append(el("span", "missing", "[image unavailable]"));
      }
      if (m.text) body.append(el("div", "text", m.text));
    } else if (m.kind === "notice") {
      body.append(el("span", "notice-mark", "notice"), el("span", "text", m.text));
    } else if (m.kind === "question") {
      body.append(el("span", "question-mark", "?"), el("span", "text", m.text));
    } else {
      body.append(el("span", "text", m.text));
    }
    item.append(body);
    if (m.kind === "question") item.append(el("div", "answer"));
    const tools = el("div", "tools");
    if (m.author === this.client.user || this._canModerate(m.room)) {
      const del = el("button", "delete", "×", { type: "button", title: "delete this message" });
      del.addEventListener("click", () => this._run(() => this.client.deleteMessage(m.room, m.id)));
      tools.append(del);
    }
    item.append(tools);
    this._updateMessageEl(item, m);
    return item;
  }

  _updateMessageEl(item, m) {
    if (m.kind !== "question") return;
    const box = item.querySelector(".answer");
    const state = m.answered ? "answered" : "open";
    if (box.dataset.state === state) return;
    box.dataset.state = state;
    box.textContent = "";
    item.classList.toggle("answered", m.answered);
    if (m.answered) {
      box.append(el("span", "answered-mark", m.answered_by ? `✓ answered (${m.answered_by})` : "✓ answered"));
    } else if (!this._canModerate(m.room)) {
      box.append(el("span", "open-mark", "open question"));
    } else {
      const b = el("button", "mark-answered", "mark answered", { type: "button" });
      b.addEventListener("click", () => this._run(() => this.client.answer(m.room, m.id)));
      box.append(b);
    }
  }

  _renderMessages(info = {}) {
    const key = this.current;
    const room = key ? this.client.rooms.get(key) : null;
    const list = this.listEl;
    if (this.renderedRoom !== key) {
      this.itemsEl.textContent = "";
      this.msgEls.clear();
      this.renderedRoom = key;
      this.stickToBottom = true;
    }
    if (!room) {
      this.olderEl.textContent = "";
      return;
    }
    const atBottom = this.stickToBottom || list.scrollHeight - list.scrollTop - list.clientHeight < NEAR_BOTTOM_PX;
    const prevHeight = list.scrollHeight;
    const prevTop = list.scrollTop;
    const keep = new Set();
    let cursor = this.itemsEl.firstChild;
    for (const m of room.messages) {
      const k = String(m.id);
      keep.add(k);
      let e = this.msgEls.get(k);
      if (!e) {
        e = this._messageEl(m);
        this.msgEls.set(k, e);
      } else {
        this._updateMessageEl(e, m);
      }
      if (cursor && e === cursor) {
        cursor = cursor.nextSibling;
      } else {
        this.itemsEl.insertBefore(e, cursor);
      }
    }
    for (const [k, e] of this.msgEls) {
      if (!keep.has(k)) {
        e.remove();
        this.msgEls.delete(k);
      }
    }
    this._renderOlder(room);
    if (atBottom && !info.older) {
      list.scrollTop = list.scrollHeight;
      this.stickToBottom = false;
    } else if (info.older) {
      list.scrollTop = prevTop + (list.scrollHeight - prevHeight); // keep the view where it was
    }
    // Not enough messages to scroll: nothing would ever ask for older ones, so ask now.
    if (!room.complete && !room.loadingOlder && this.client.ready && list.clientHeight > 0 && list.scrollHeight <= list.clientHeight) {
      queueMicrotask(() => this._loadOlder());
    }
  }

  _renderPending() {
    this.pendingEl.textContent = "";
    if (!this.current) return;
    for (const f of this.client.outbox(this.current)) {
      const item = el("div", `chat-msg pending kind-${f.kind}`);
      item.append(el("div", "meta", "sending…"), el("div", "body", f.kind === "image" && !f.text ? "[image]" : f.text || ""));
      this.pendingEl.append(item);
    }
  }

  _renderTyping() {
    const text = this.current ? typingText(this.client.typingUsers(this.current)) : "";
    if (this.typingEl.textContent !== text) this.typingEl.textContent = text;
  }

  _onMessages(key, added, info) {
    if (key !== this.current) {
      if (added.length && info.live) this._renderRooms();
      return;
    }
    const room = this.client.rooms.get(key);
    if (room) room.unread = 0;
    this._renderMessages(info);
    if (info.own) this._renderPending();
  }

  /** Stops the panel's timer and empties its element. */
  destroy() {
    clearInterval(this._typingTimer);
    this.root.textContent = "";
  }
}
