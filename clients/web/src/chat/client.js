// The chat client without DOM: one WebSocket to /ws/chat speaking JSON text frames
// (protocol/SPEC.md section 7). It keeps the rooms this player is in and, per room, a contiguous
// run of messages (ordered and deduplicated by message id), the members and who is typing;
// it correlates requests with replies, throttles typing frames and reconnects with backoff,
// asking for what it missed (`since`) so that nothing is lost or shown twice -- except after
// a close 4001 (the server's operator or a moderator kicked the player: state "kicked", the
// close reason says who, why and for how long a ban lasts) or 4002 (a newer login of the same
// player: state "replaced"): either ended this page's token, so it does not reconnect.
//
// Everything here is plain data; the panel (panel.js) renders it with textContent only.
// The socket, the timers and the clock are injectable so node tests drive it with a fake.

const BACKOFF_MIN = 0.5; // seconds
const BACKOFF_MAX = 10;
const REQUEST_TIMEOUT_MS = 15000;
const TYPING_INTERVAL_MS = 1000; // at most one typing frame per second while typing
const TYPING_IDLE_MS = 4000; // no keystroke for this long: send active:false
const TYPING_TTL_DEFAULT_MS = 5000; // how long another user's typing mark lasts unless renewed
const HISTORY_PAGE = 50;
const SINCE_PAGE = 500; // messages per msg.since page (the protocol's maximum)
const SINCE_PAGES_MAX = 40; // catch-up pages per room after a reconnect before giving up
const KEEPALIVE_MS = 25000; // send something at least this often (the server drops silent sockets)
export const CLOSE_KICKED = 4001; // the operator or a moderator kicked the player (SPEC 7.8)
export const CLOSE_REPLACED = 4002; // the same player signed in again elsewhere
const MAX_MESSAGES_PER_ROOM = 2000; // older messages are dropped from memory beyond this

/** A message id as the server sends it (a number; numeric strings compare as numbers).
 * @typedef {number | string} MessageId */

/** A message as the client keeps it (normalizeMessage: a copy with only known fields).
 * @typedef {object} ChatMessage
 * @property {MessageId} id
 * @property {string} room the room's key
 * @property {number | null} ts
 * @property {string} author
 * @property {string} kind "text", "image", "question" or "notice"
 * @property {string} text
 * @property {unknown} image the server's image reference, null for none
 * @property {boolean} answered
 * @property {number | null} entity_id the author's avatar, when the server knows it
 * @property {boolean} deleted
 * @property {string} [client_id]
 * @property {string} [answered_by]
 */

/** A WebSocket, or what tests give instead.
 * @typedef {object} ChatSocket
 * @property {number} readyState 1: open
 * @property {(data: string) => void} send
 * @property {(code?: number, reason?: string) => void} close
 * @property {(() => void) | null} onopen
 * @property {((ev: { data?: unknown }) => void) | null} onmessage
 * @property {((ev: { code?: number, reason?: string }) => void) | null} onclose
 * @property {(() => void) | null} onerror
 */

/** Timers (replaceable in tests).
 * @typedef {{ setTimeout(fn: () => void, ms: number): unknown, clearTimeout(t: unknown): void }} ChatTimers */

/** The chat WebSocket's URL for a page origin (http -> ws, https -> wss).
 * @param {string | URL} origin
 * @returns {string} */
export function chatSocketUrl(origin) {
  const u = new URL(origin);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  u.pathname = "/ws/chat";
  u.search = "";
  u.hash = "";
  return u.toString();
}

/** Room ids are used as Map keys as strings (JSON object keys are strings anyway). */
export const roomKey = (/** @type {unknown} */ room) => String(room);

/** Message ids compare as numbers when they are numbers (or numeric strings).
 * @param {MessageId} a @param {MessageId} b @returns {boolean} */
function idLess(a, b) {
  const na = Number(a);
  const nb = Number(b);
  if (Number.isFinite(na) && Number.isFinite(nb)) return na < nb;
  return String(a) < String(b);
}

/** @param {{ id?: MessageId | null }[] | null | undefined} list @returns {MessageId | null} */
function newestOf(list) {
  let out = null;
  for (const m of list || []) if (m && m.id != null) out = idMax(out, m.id);
  return out;
}

/** @param {MessageId | null | undefined} a @param {MessageId | null | undefined} b @returns {MessageId | null} */
function idMax(a, b) {
  if (a === null || a === undefined) return b ?? null;
  if (b === null || b === undefined) return a;
  return idLess(a, b) ? b : a;
}

/** An error answer of the server (or of the client itself: code "disconnected", "timeout"). */
export class ChatError extends Error {
  /** @param {string} code @param {string} [message] @param {number | null} [retryAfter] seconds */
  constructor(code, message, retryAfter = null) {
    super(message || code);
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** @param {any} err the error object of a reply @returns {ChatError} */
function errorFrom(err) {
  if (err && typeof err === "object") {
    const ra = Number(err.retry_after);
    return new ChatError(String(err.code || "error"), String(err.message || err.code || "error"), Number.isFinite(ra) ? ra : null);
  }
  return new ChatError("error", String(err || "error"));
}

/** A message as the client keeps it (a copy; only known fields).
 * @param {any} m a message of the server @param {string} key its room's key
 * @returns {ChatMessage | null} */
function normalizeMessage(m, key) {
  if (!m || typeof m !== "object" || m.id === undefined || m.id === null) return null;
  /** @type {ChatMessage} */
  const out = {
    id: m.id,
    room: key,
    ts: m.ts ?? null,
    author: m.author == null ? "" : String(m.author),
    kind: m.kind == null ? "text" : String(m.kind),
    text: m.text == null ? "" : String(m.text),
    image: m.image == null ? null : m.image,
    answered: Boolean(m.answered),
    entity_id: Number.isInteger(m.entity_id) ? m.entity_id : null,
    deleted: Boolean(m.deleted),
  };
  if (m.client_id != null) out.client_id = String(m.client_id);
  if (m.answered_by != null) out.answered_by = String(m.answered_by);
  return out;
}

/** One room's state. */
class Room {
  /** @param {{ id: string | number, name?: string, private?: boolean, owner?: string | null, joined?: boolean }} info */
  constructor(info) {
    this.id = info.id;
    this.key = roomKey(info.id);
    this.name = String(info.name ?? info.id);
    this.private = Boolean(info.private);
    this.public = false; // the world's public room
    /** @type {string | null} */
    this.owner = info.owner == null ? null : String(info.owner);
    this.joined = info.joined === undefined ? true : Boolean(info.joined);
    this.invited = false; // a private room we are invited to (not joined yet)
    /** @type {ChatMessage[]} sorted by id, no duplicates */
    this.messages = [];
    /** @type {Map<string, ChatMessage>} id (as string) -> message */
    this.byId = new Map();
    /** @type {MessageId | null} newest id up to which nothing is missing (for `since`) */
    this.sinceId = null;
    this.synced = false; // live events may advance sinceId only when caught up
    this.complete = false; // no older history on the server
    /** @type {Promise<number> | null} while a msg.history is on its way */
    this.loadingOlder = null;
    /** @type {Map<string, { online: boolean }>} user -> { online } */
    this.members = new Map();
    /** @type {Map<string, number>} user -> expiry (ms, client clock) */
    this.typing = new Map();
    this.unread = 0;
  }

  /** @param {{ name?: string, private?: boolean, owner?: string | null }} info */
  update(info) {
    if (info.name != null) this.name = String(info.name);
    if (info.private !== undefined) this.private = Boolean(info.private);
    if (info.owner != null) this.owner = String(info.owner);
  }

  /** @type {MessageId | null} */
  get oldestId() {
    return this.messages.length ? this.messages[0].id : null;
  }

  /** @type {MessageId | null} */
  get newestId() {
    return this.messages.length ? this.messages[this.messages.length - 1].id : null;
  }

  /** Merges messages (any order, maybe known already); returns the ones that were new.
   * @param {(ChatMessage | null)[]} list @returns {ChatMessage[]} */
  merge(list) {
    /** @type {ChatMessage[]} */
    const added = [];
    for (const m of list) {
      if (!m) continue;
      const k = String(m.id);
      const have = this.byId.get(k);
      if (have) {
        // the same message again (a replay, our own echo): refresh what may change
        if (m.answered) have.answered = true;
        if (m.deleted) have.deleted = true;
        if (m.entity_id !== null && have.entity_id === null) have.entity_id = m.entity_id;
        continue;
      }
      this.byId.set(k, m);
      added.push(m);
      const n = this.messages.length;
      if (n === 0 || idLess(this.messages[n - 1].id, m.id)) {
        this.messages.push(m);
      } else {
        let lo = 0;
        let hi = n;
        while (lo < hi) {
          const mid = (lo + hi) >> 1;
          if (idLess(this.messages[mid].id, m.id)) lo = mid + 1;
          else hi = mid;
        }
        this.messages.splice(lo, 0, m);
      }
    }
    if (this.messages.length > MAX_MESSAGES_PER_ROOM) {
      const drop = this.messages.splice(0, this.messages.length - MAX_MESSAGES_PER_ROOM);
      for (const m of drop) this.byId.delete(String(m.id));
      this.complete = false;
    }
    return added;
  }

  /** Forgets message `id`; returns it, or null when it was not here.
   * @param {MessageId} id @returns {ChatMessage | null} */
  remove(id) {
    const k = String(id);
    const m = this.byId.get(k);
    if (!m) return null;
    this.byId.delete(k);
    const i = this.messages.indexOf(m);
    if (i >= 0) this.messages.splice(i, 1);
    return m;
  }
}

/** @type {ChatTimers} */
const defaultTimers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (t) => clearTimeout(/** @type {ReturnType<typeof setTimeout>} */ (t)),
};

/** @param {string} url @returns {ChatSocket} */
function defaultOpenSocket(url) {
  return /** @type {ChatSocket} */ (/** @type {unknown} */ (new WebSocket(url)));
}

export class ChatClient {
  /**
   * url: the /ws/chat URL (see chatSocketUrl); token: the join token.
   * Options for tests: openSocket(url) -> a WebSocket-like object (send, close, readyState,
   * onopen, onmessage({data}), onclose({code, reason}), onerror); timers ({setTimeout,
   * clearTimeout}); now() in ms; random() in [0, 1).
   * @param {{ url: string, token: string, openSocket?: (url: string) => ChatSocket, timers?: ChatTimers,
   *   now?: () => number, random?: () => number, adminToken?: string | null }} options
   */
  constructor({ url, token, openSocket = defaultOpenSocket, timers = defaultTimers, now = () => Date.now(), random = Math.random, adminToken = null }) {
    this.url = url;
    this.token = token;
    this.adminToken = adminToken;
    this.openSocket = openSocket;
    this.timers = timers;
    this.now = now;
    this.random = random;
    /** @type {"idle" | "connecting" | "ready" | "reconnecting" | "stopped" | "replaced" | "kicked"} replaced: closed 4002; kicked: 4001 */
    this.state = "idle";
    /** @type {string | null} our name, from the hello reply */
    this.user = null;
    this.moderator = false;
    /** @type {number | null} our avatar, as the hello reply says */
    this.entityId = null;
    /** @type {Record<string, any>} max_message_chars, rate, burst, max_image_bytes (hello reply) */
    this.limits = {};
    /** @type {string | null} key of the public room */
    this.publicRoom = null;
    /** @type {Map<string, Room>} key -> Room, in the order they became known */
    this.rooms = new Map();
    this.typingTtlMs = TYPING_TTL_DEFAULT_MS;
    this.error = ""; // the last error worth showing
    this.connects = 0;
    this.reconnects = 0;
    this.backoff = BACKOFF_MIN;
    /** @type {ChatSocket | null} */
    this.ws = null;
    this._epoch = 0;
    this._nextId = 1;
    /** @type {Map<number, { resolve: (reply: any) => void, reject: (err: ChatError) => void, timer: unknown, op: string }>} request id -> */
    this._pending = new Map();
    /** @type {{ key: string, frame: Record<string, unknown>, resolve: (m: any) => void, reject: (err: ChatError) => void, inflight: boolean }[]} messages to send */
    this._outbox = [];
    /** @type {Map<string, { active: boolean, lastSentAt: number, idleTimer: unknown }>} room key -> */
    this._typingOut = new Map();
    /** @type {unknown} */
    this._reconnectTimer = null;
    /** @type {unknown} */
    this._keepaliveTimer = null;
    /** @type {Map<string, Function[]>} */
    this._listeners = new Map();
    this._clientSeq = 0;
    this._clientTag = Math.floor(random() * 2 ** 32).toString(36);
  }

  // ------------------------------------------------------------------ events

  /**
   * Events: "state" (client), "rooms" (), "messages" (roomKey, added[], {live, older}),
   * "typing" (roomKey), "members" (roomKey), "invited" (roomKey, by), "removed" (roomKey,
   * reason), "error" (ChatError), "outbox" (roomKey), "call" (a call.* event frame, as sent).
   * @param {string} event
   * @param {(...args: any[]) => void} cb
   * @returns {() => void} stops listening
   */
  on(event, cb) {
    let l = this._listeners.get(event);
    if (!l) this._listeners.set(event, (l = []));
    l.push(cb);
    return () => {
      const i = l.indexOf(cb);
      if (i >= 0) l.splice(i, 1);
    };
  }

  /** @param {string} event @param {...any} args */
  _emit(event, ...args) {
    for (const cb of this._listeners.get(event) || []) {
      try {
        cb(...args);
      } catch (e) {
        console.error(e);
      }
    }
  }

  /** @param {ChatClient["state"]} s */
  _setState(s) {
    if (this.state === s) return;
    this.state = s;
    this._emit("state", this);
  }

  /** @param {ChatError} err */
  _fail(err) {
    this.error = err.message;
    this._emit("error", err);
  }

  // ------------------------------------------------------------------ connection

  /** Connected and past the hello. @type {boolean} */
  get ready() {
    return this.state === "ready";
  }

  /** Connects (once; later calls do nothing). */
  start() {
    if (this.state !== "idle") return;
    this._connect();
  }

  /** Leaves for good: pending requests and the outbox are rejected with "stopped". */
  stop() {
    if (this.state === "stopped") return;
    this._epoch++;
    this.timers.clearTimeout(this._reconnectTimer);
    this.timers.clearTimeout(this._keepaliveTimer);
    for (const t of this._typingOut.values()) this.timers.clearTimeout(t.idleTimer);
    this._typingOut.clear();
    this._rejectPending(new ChatError("stopped", "chat stopped"));
    for (const e of this._outbox) e.reject(new ChatError("stopped", "chat stopped"));
    this._outbox = [];
    this._closeSocket();
    this._setState("stopped");
  }

  _closeSocket() {
    const ws = this.ws;
    this.ws = null;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(1000, "bye");
    } catch {
      // already closed
    }
  }

  _connect() {
    const epoch = ++this._epoch;
    this._setState(this.connects ? "reconnecting" : "connecting");
    let ws;
    try {
      ws = this.openSocket(this.url);
    } catch (e) {
      this._lost(`cannot open the chat socket: ${e instanceof Error ? e.message : e}`);
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (epoch === this._epoch) this._hello(epoch);
    };
    ws.onmessage = (ev) => {
      if (epoch === this._epoch) this._onText(ev && ev.data);
    };
    ws.onclose = (ev) => {
      if (epoch !== this._epoch) return;
      const code = ev && ev.code;
      const why = ev && (ev.reason || code) ? `closed (${code || ""}${ev.reason ? ` ${ev.reason}` : ""})` : "closed";
      if (code === CLOSE_REPLACED) {
        // The same player signed in again (another window or device): this page's token is
        // dead, and reconnecting would not help.
        this.stop();
        this._fail(new ChatError("replaced", "signed in elsewhere: this chat was closed for a newer login"));
        this._setState("replaced");
        return;
      }
      if (code === CLOSE_KICKED) {
        // The server's operator or a moderator removed the player (the reason says who, why and
        // for how long a ban lasts): the kick ended this page's token, so no reconnect.
        this.stop();
        this._fail(new ChatError("kicked", (ev && ev.reason) || "removed by the server's operator"));
        this._setState("kicked");
        return;
      }
      this._lost(why);
    };
    ws.onerror = () => {
      // a close event follows
    };
  }

  /** @param {string} why @param {number | null} [delayOverride] seconds */
  _lost(why, delayOverride = null) {
    if (this.state === "stopped" || this.state === "replaced" || this.state === "kicked") return;
    this._closeSocket();
    this.timers.clearTimeout(this._keepaliveTimer);
    if (!this.error || delayOverride === null) this.error = `chat connection lost: ${why}`;
    this._rejectPending(new ChatError("disconnected", this.error));
    for (const e of this._outbox) e.inflight = false;
    for (const room of this.rooms.values()) {
      room.synced = false;
      room.typing.clear();
      room.loadingOlder = null;
    }
    for (const t of this._typingOut.values()) {
      this.timers.clearTimeout(t.idleTimer);
      t.active = false;
    }
    this._scheduleReconnect(delayOverride);
  }

  /** Drops the connection and connects again after delayMs (a test hook uses it).
   * @param {number} [delayMs] */
  reconnect(delayMs = 0) {
    if (this.state === "stopped" || this.state === "idle" || this.state === "replaced" || this.state === "kicked") return;
    this._lost("reconnect asked", delayMs / 1000);
  }

  /** @param {number | null} [delayOverride] seconds */
  _scheduleReconnect(delayOverride = null) {
    const epoch = ++this._epoch;
    const delay = delayOverride !== null ? delayOverride : this.backoff * (0.8 + 0.4 * this.random());
    this.backoff = Math.min(BACKOFF_MAX, this.backoff * 2);
    this.reconnects++;
    this._setState("reconnecting");
    this.timers.clearTimeout(this._reconnectTimer);
    this._reconnectTimer = this.timers.setTimeout(() => {
      if (epoch === this._epoch) this._connect();
    }, delay * 1000);
  }

  /** @param {ChatError} err */
  _rejectPending(err) {
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const p of pending) {
      this.timers.clearTimeout(p.timer);
      p.reject(err);
    }
  }

  /** @param {Record<string, unknown>} obj @returns {boolean} whether it went out */
  _sendFrame(obj) {
    if (!this.ws || this.ws.readyState !== 1) return false;
    try {
      this.ws.send(JSON.stringify(obj));
    } catch {
      return false;
    }
    this._armKeepalive();
    return true;
  }

  /**
   * The server closes a socket that stays silent (browsers send no WebSocket pings), so
   * after KEEPALIVE_MS without a frame from us we ask for the room list (which also brings
   * rooms that appeared meanwhile).
   */
  _armKeepalive() {
    this.timers.clearTimeout(this._keepaliveTimer);
    const epoch = this._epoch;
    this._keepaliveTimer = this.timers.setTimeout(() => {
      if (epoch !== this._epoch || this.state !== "ready") return;
      this.listRooms().catch(() => {});
    }, KEEPALIVE_MS);
  }

  /** Sends an op and resolves with the reply (without re/ok) or rejects with a ChatError. */
  /**
   * @param {string} op
   * @param {Record<string, unknown>} [fields]
   * @param {{ beforeReady?: boolean }} [options]
   * @returns {Promise<any>} the reply frame (ok), or rejects with a ChatError
   */
  request(op, fields = {}, { beforeReady = false } = {}) {
    if (!beforeReady && this.state !== "ready") return Promise.reject(new ChatError("disconnected", "chat is not connected"));
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      const timer = this.timers.setTimeout(() => {
        if (this._pending.delete(id)) reject(new ChatError("timeout", `no answer to ${op}`));
      }, REQUEST_TIMEOUT_MS);
      this._pending.set(id, { resolve, reject, timer, op });
      if (!this._sendFrame({ ...fields, id, op })) {
        this._pending.delete(id);
        this.timers.clearTimeout(timer);
        reject(new ChatError("disconnected", "chat is not connected"));
      }
    });
  }

  /** @param {number} epoch */
  _hello(epoch) {
    /** @type {Record<string, number>} */
    const since = {};
    for (const room of this.rooms.values()) {
      if (room.joined && room.sinceId !== null) since[room.key] = Number(room.sinceId);
    }
    /** @type {Record<string, unknown>} */
    const frame = { token: this.token };
    if (Object.keys(since).length) frame.since = since;
    if (this.adminToken) frame.admin_token = this.adminToken;
    this.request("hello", frame, { beforeReady: true }).then(
      (reply) => {
        if (epoch === this._epoch) this._onHello(reply, epoch, since);
      },
      (err) => {
        if (epoch !== this._epoch) return;
        if (err.code === "forbidden" && this.adminToken && /admin/i.test(err.message)) {
          // a wrong admin token: chat on as a normal player
          this.adminToken = null;
          err = new ChatError(err.code, `${err.message}: continuing without moderator rights`);
        }
        this._fail(err);
        // a refused hello (bad or expired token, kicked): try again later
        this._lost(`hello refused: ${err.message}`);
      },
    );
  }

  /** @param {unknown} text */
  _onText(text) {
    let f;
    try {
      f = JSON.parse(String(text));
    } catch {
      return; // not JSON: ignore
    }
    if (!f || typeof f !== "object") return;
    if (f.re !== undefined) {
      const p = this._pending.get(f.re);
      if (!p) return;
      this._pending.delete(f.re);
      this.timers.clearTimeout(p.timer);
      if (f.ok) p.resolve(f);
      else p.reject(errorFrom(f.error));
      return;
    }
    if (typeof f.ev === "string") this._onEvent(f);
  }

  // ------------------------------------------------------------------ rooms

  /** The room of `info` (a room object or an id), made known or updated; null without an id.
   * @param {any} info @returns {Room | null} */
  _room(info) {
    if (info === null || info === undefined) return null;
    const obj = typeof info === "object" ? info : { id: info };
    if (obj.id === undefined || obj.id === null) return null;
    const key = roomKey(obj.id);
    let room = this.rooms.get(key);
    if (!room) {
      room = new Room(obj);
      this.rooms.set(key, room);
    } else {
      room.update(obj);
    }
    if (obj.public) {
      room.public = true;
      this.publicRoom = key;
    }
    return room;
  }

  /** The rooms we are in, in display order: the public room first, then by name.
   * @returns {Room[]} */
  roomList() {
    const list = [...this.rooms.values()].filter((r) => r.joined);
    list.sort((a, b) => (b.public ? 1 : 0) - (a.public ? 1 : 0) || a.name.localeCompare(b.name));
    return list;
  }

  /** Rooms we could join: invitations first, then other public rooms, by name.
   * @returns {Room[]} */
  availableRooms() {
    const list = [...this.rooms.values()].filter((r) => !r.joined);
    list.sort((a, b) => (b.invited ? 1 : 0) - (a.invited ? 1 : 0) || a.name.localeCompare(b.name));
    return list;
  }

  /** A room by id, key or name; the public room when ref is missing; null when unknown.
   * @param {unknown} [ref] @returns {Room | null} */
  getRoom(ref) {
    if (ref === undefined || ref === null) return (this.publicRoom && this.rooms.get(this.publicRoom)) || null;
    const byKey = this.rooms.get(roomKey(ref));
    if (byKey) return byKey;
    for (const r of this.rooms.values()) if (r.name === String(ref)) return r;
    return null;
  }

  /**
   * Applies a list of rooms (hello, rooms.list): adds and updates them, and forgets joined
   * rooms the server no longer lists (deleted or left meanwhile).
   */
  _applyRoomList(list, publicId) {
    const listed = new Set();
    for (const info of list || []) {
      if (!info || typeof info !== "object") continue;
      const room = this._room(info);
      if (!room) continue;
      if (info.joined !== undefined) room.joined = Boolean(info.joined);
      room.invited = !room.joined && room.private;
      listed.add(room.key);
    }
    if (publicId !== null && publicId !== undefined) {
      const room = /** @type {Room} */ (this._room({ id: publicId, public: true })); // the id is set
      room.joined = true;
      listed.add(room.key);
    }
    for (const [key, room] of [...this.rooms]) {
      if (!listed.has(key)) {
        this.rooms.delete(key);
        this._typingOut.delete(key);
        if (room.joined) this._emit("removed", key, "gone");
      }
    }
  }

  _onHello(reply, epoch, askedSince) {
    this.user = reply.user == null ? this.user : String(reply.user);
    this.moderator = Boolean(reply.moderator);
    this.entityId = Number.isInteger(reply.entity_id) ? reply.entity_id : null;
    if (reply.limits && typeof reply.limits === "object") this.limits = { ...reply.limits };
    const ttl = Number(reply.typing_ttl);
    if (Number.isFinite(ttl) && ttl > 0) this.typingTtlMs = ttl * 1000;
    this._applyRoomList(reply.rooms, reply.public_room ?? null);
    // Each joined room comes with its recent history, or with what it missed (since).
    const batches = new Map();
    for (const info of reply.rooms || []) {
      if (!info || typeof info !== "object" || !Array.isArray(info.messages)) continue;
      const key = roomKey(info.id);
      batches.set(key, { messages: info.messages, more: Boolean(info.more) });
      this._mergeInto(key, info.messages, { live: false });
    }
    this.connects++;
    this.backoff = BACKOFF_MIN;
    this.error = "";
    this._setState("ready");
    this._emit("rooms");
    this._catchUp(epoch, batches, askedSince);
    this._flushOutbox();
  }

  /**
   * After hello: a room we asked `since` for continues with msg.since while the server says
   * there is more; a room seen for the first time starts from the history in the reply (or
   * asks for it). Only then may live messages move the room's sinceId again.
   */
  async _catchUp(epoch, batches, askedSince) {
    for (const room of [...this.rooms.values()]) {
      if (!room.joined || room.synced) continue;
      const batch = batches.get(room.key);
      const asked = askedSince[room.key];
      try {
        if (asked !== undefined) {
          let after = batch ? idMax(asked, newestOf(batch.messages)) : asked;
          let more = batch ? batch.more : true;
          for (let page = 0; more && page < SINCE_PAGES_MAX; page++) {
            const r = await this.request("msg.since", { room: room.id, after: Number(after), limit: SINCE_PAGE });
            if (epoch !== this._epoch) return;
            const list = r.messages || [];
            this._mergeInto(room.key, list, { live: false });
            const newest = newestOf(list);
            more = Boolean(r.more) && newest !== null;
            if (newest !== null) after = idMax(after, newest);
          }
        } else if (batch) {
          room.complete = !batch.more;
        } else if (!room.messages.length) {
          const r = await this.request("msg.history", { room: room.id, limit: HISTORY_PAGE });
          if (epoch !== this._epoch) return;
          this._mergeInto(room.key, r.messages || [], { live: false });
          room.complete = r.more === undefined ? (r.messages || []).length < HISTORY_PAGE : !r.more;
        }
      } catch (e) {
        if (epoch !== this._epoch) return;
        const code = e instanceof ChatError ? e.code : "";
        if (code === "disconnected" || code === "timeout") return; // the next hello retries
        if (code === "not_found" || code === "forbidden") {
          this._dropRoom(room.key, "gone");
          continue;
        }
      }
      this._markSynced(room);
    }
  }

  _markSynced(room) {
    room.synced = true;
    room.sinceId = idMax(room.sinceId, room.newestId);
  }

  _mergeInto(key, list, { live = false, older = false, own = false } = {}) {
    const room = this.rooms.get(roomKey(key));
    if (!room) return [];
    const msgs = [];
    for (const m of list || []) {
      const n = normalizeMessage(m, room.key);
      if (n && !n.deleted) msgs.push(n);
    }
    const added = room.merge(msgs);
    if (room.synced && !older) room.sinceId = idMax(room.sinceId, room.newestId);
    if (added.length) {
      if (live && !own) room.unread += added.filter((m) => m.author !== this.user).length;
      this._emit("messages", room.key, added, { live, older, own });
    }
    return added;
  }

  // ------------------------------------------------------------------ events from the server

  _onEvent(f) {
    switch (f.ev) {
      case "message": {
        const room = this.rooms.get(roomKey(f.room));
        if (!room) return; // not a room of ours (left or deleted meanwhile)
        const msg = f.message || f;
        if (msg.author != null && this.user !== null && String(msg.author) !== this.user) {
          room.typing.delete(String(msg.author));
          this._emit("typing", room.key);
        }
        this._mergeInto(room.key, [msg], { live: true });
        break;
      }
      case "typing": {
        const room = this.rooms.get(roomKey(f.room));
        if (!room || f.user == null) return;
        const user = String(f.user);
        if (user === this.user) return;
        const ttl = Number(f.ttl);
        if (f.active) room.typing.set(user, this.now() + (Number.isFinite(ttl) && ttl > 0 ? ttl * 1000 : this.typingTtlMs));
        else room.typing.delete(user);
        this._emit("typing", room.key);
        break;
      }
      case "room.member": {
        const room = this.rooms.get(roomKey(f.room));
        if (!room || f.user == null) return;
        const user = String(f.user);
        const action = String(f.action || "");
        if (action === "leave" || action === "left" || action === "removed" || action === "kicked") {
          room.members.delete(user);
          room.typing.delete(user);
          if (user === this.user) this._dropRoom(room.key, action);
        } else {
          room.members.set(user, { online: f.online === undefined ? true : Boolean(f.online) });
        }
        this._emit("members", room.key);
        break;
      }
      case "presence": {
        if (f.user == null) return;
        const user = String(f.user);
        const online = Boolean(f.online);
        for (const room of this.rooms.values()) {
          const m = room.members.get(user);
          if (m) {
            m.online = online;
            if (!online) room.typing.delete(user);
            this._emit("members", room.key);
          }
        }
        break;
      }
      case "room.deleted":
        this._dropRoom(roomKey(f.room && typeof f.room === "object" ? f.room.id : f.room), "deleted");
        break;
      case "invited": {
        // an invitation: the room is listed; joining it is the player's choice (room.join)
        const room = this._room(f.room);
        if (!room) return;
        if (!room.joined) room.invited = true;
        this._emit("rooms");
        this._emit("invited", room.key, f.by == null ? "" : String(f.by));
        break;
      }
      case "message.deleted": {
        const room = this.rooms.get(roomKey(f.room));
        if (!room) return;
        const id = f.message && typeof f.message === "object" ? f.message.id : (f.message ?? f.id);
        if (room.remove(id)) this._emit("messages", room.key, [], { live: false, removed: id });
        break;
      }
      case "message.answered": {
        const room = this.rooms.get(roomKey(f.room));
        if (!room) return;
        const id = f.message && typeof f.message === "object" ? f.message.id : (f.message ?? f.id);
        const m = room.byId.get(String(id));
        if (m) {
          m.answered = true;
          if (f.by != null) m.answered_by = String(f.by);
          this._emit("messages", room.key, [], { live: false, answered: id });
        }
        break;
      }
      default:
        // Proximity calls ride on this socket (docs/calls.md); ../calls/index.js listens.
        if (f.ev.startsWith("call.")) this._emit("call", f);
        break;
    }
  }

  _dropRoom(key, reason) {
    const room = this.rooms.get(key);
    if (!room || room.public) return;
    this.rooms.delete(key);
    this._typingOut.delete(key);
    this._emit("removed", key, reason);
    this._emit("rooms");
  }

  // ------------------------------------------------------------------ typing

  /** Users typing in a room now (not us), by name.
   * @param {string} key @returns {string[]} */
  typingUsers(key) {
    const room = this.rooms.get(roomKey(key));
    if (!room) return [];
    const t = this.now();
    const out = [];
    for (const [user, until] of room.typing) {
      if (until > t) out.push(user);
      else room.typing.delete(user);
    }
    return out.sort();
  }

  /** Call on every keystroke in the input: sends typing active:true at most once a second.
   * @param {string} key */
  typingInput(key) {
    const room = this.rooms.get(roomKey(key));
    if (!room || this.state !== "ready") return;
    let t = this._typingOut.get(room.key);
    if (!t) {
      t = { active: false, lastSentAt: -Infinity, idleTimer: null };
      this._typingOut.set(room.key, t);
    }
    const now = this.now();
    if (!t.active || now - t.lastSentAt >= TYPING_INTERVAL_MS) {
      if (this._sendFrame({ id: this._nextId++, op: "typing", room: room.id, active: true })) {
        t.active = true;
        t.lastSentAt = now;
      }
    }
    this.timers.clearTimeout(t.idleTimer);
    t.idleTimer = this.timers.setTimeout(() => this.typingStop(room.key), TYPING_IDLE_MS);
  }

  /** Call on send, blur or an emptied input: typing active:false once, if we said true.
   * @param {string} key */
  typingStop(key) {
    const t = this._typingOut.get(roomKey(key));
    if (!t) return;
    this.timers.clearTimeout(t.idleTimer);
    t.idleTimer = null;
    if (!t.active) return;
    t.active = false;
    t.lastSentAt = -Infinity;
    const room = this.rooms.get(roomKey(key));
    if (room) this._sendFrame({ id: this._nextId++, op: "typing", room: room.id, active: false });
  }

  // ------------------------------------------------------------------ messages

  /**
   * Sends a message; resolves with the stored message (also merged into the room). While
   * the chat is disconnected the message waits in the outbox and goes out after the next
   * hello, with the same client_id (so a retry is not stored twice).
   * @param {string} key
   * @param {{ kind?: string, text?: string, image?: unknown }} [message]
   * @returns {Promise<ChatMessage | any>} the stored message (or the reply when it has none)
   */
  send(key, { kind = "text", text = undefined, image = undefined } = {}) {
    const room = this.rooms.get(roomKey(key));
    if (!room) return Promise.reject(new ChatError("no_room", "no such room"));
    this.typingStop(room.key);
    /** @type {Record<string, unknown>} */
    const frame = { room: room.id, kind, client_id: `${this._clientTag}-${++this._clientSeq}` };
    if (text !== undefined) frame.text = String(text);
    if (image !== undefined) frame.image = image;
    return new Promise((resolve, reject) => {
      this._outbox.push({ key: room.key, frame, resolve, reject, inflight: false });
      this._emit("outbox", room.key);
      this._flushOutbox();
    });
  }

  /** Messages waiting for the server's answer, for a room (shown as "sending").
   * @param {string} key @returns {Record<string, unknown>[]} the frames */
  outbox(key) {
    return this._outbox.filter((e) => e.key === roomKey(key)).map((e) => ({ ...e.frame }));
  }

  _flushOutbox() {
    if (this.state !== "ready") return;
    for (const entry of this._outbox) {
      if (entry.inflight) continue;
      if (!this.rooms.has(entry.key)) {
        this._settleOutbox(entry, new ChatError("no_room", "the room is gone"));
        continue;
      }
      entry.inflight = true;
      this.request("msg.send", entry.frame).then(
        (reply) => {
          const m = reply.message || null;
          if (m) this._mergeInto(entry.key, [m], { live: true, own: true });
          this._settleOutbox(entry, null, m ? normalizeMessage(m, entry.key) : reply);
        },
        (err) => {
          if (err.code === "disconnected" || err.code === "timeout") {
            entry.inflight = false; // sent again after the next hello
            if (err.code === "timeout" && this.ws) this._lost("no answer");
            return;
          }
          this._fail(err);
          this._settleOutbox(entry, err);
        },
      );
    }
  }

  _settleOutbox(entry, err, value) {
    const i = this._outbox.indexOf(entry);
    if (i >= 0) this._outbox.splice(i, 1);
    if (err) entry.reject(err);
    else entry.resolve(value);
    this._emit("outbox", entry.key);
  }

  /** Loads one page of older messages; resolves with how many were new (0: nothing more).
   * @param {string} key @returns {Promise<number>} */
  loadOlder(key) {
    const room = this.rooms.get(roomKey(key));
    if (!room || room.complete || this.state !== "ready") return Promise.resolve(0);
    if (room.loadingOlder) return room.loadingOlder;
    const before = room.oldestId;
    /** @type {Record<string, unknown>} */
    const fields = { room: room.id, limit: HISTORY_PAGE };
    if (before !== null) fields.before = before;
    const epoch = this._epoch;
    room.loadingOlder = this.request("msg.history", fields).then(
      (r) => {
        room.loadingOlder = null;
        if (epoch !== this._epoch) return 0;
        const list = r.messages || [];
        const added = this._mergeInto(room.key, list, { older: true });
        if (r.more === false || (r.more === undefined && list.length < HISTORY_PAGE)) room.complete = true;
        return added.length;
      },
      (err) => {
        room.loadingOlder = null;
        if (err.code !== "disconnected") this._fail(err);
        return 0;
      },
    );
    return room.loadingOlder;
  }

  /**
   * Makes sure message `id` is loaded (paging back through history); resolves true when it
   * is in the room's messages.
   * @param {string} key @param {MessageId} id @param {number} [maxPages]
   * @returns {Promise<boolean>}
   */
  async loadUntil(key, id, maxPages = 20) {
    const room = this.rooms.get(roomKey(key));
    if (!room) return false;
    for (let i = 0; i < maxPages; i++) {
      if (room.byId.has(String(id))) return true;
      if (room.complete || this.state !== "ready") break;
      if (room.oldestId !== null && idLess(room.oldestId, id)) break; // inside the loaded run
      const n = await this.loadOlder(room.key);
      if (!n && room.complete) break;
    }
    return room.byId.has(String(id));
  }

  /** Messages of a room that match `query` (the server's search).
   * @param {string} key @param {string} query @returns {Promise<ChatMessage[]>} */
  async search(key, query) {
    const room = this.rooms.get(roomKey(key));
    if (!room) return [];
    const r = await this.request("msg.search", { room: room.id, query: String(query) });
    const list = r.messages || r.results || [];
    return list.map((/** @type {unknown} */ m) => normalizeMessage(m, room.key)).filter(Boolean);
  }

  /** Marks question `id` answered (moderators and the room's owner).
   * @param {string} key @param {MessageId} id @returns {Promise<any>} the reply */
  async answer(key, id) {
    const room = this.rooms.get(roomKey(key));
    if (!room) throw new ChatError("no_room", "no such room");
    const r = await this.request("msg.answer", { room: room.id, message: id });
    const m = room.byId.get(String(id));
    if (m) {
      m.answered = true;
      this._emit("messages", room.key, [], { answered: id });
    }
    return r;
  }

  /** Deletes message `id` (moderators and the room's owner).
   * @param {string} key @param {MessageId} id @returns {Promise<any>} the reply */
  async deleteMessage(key, id) {
    const room = this.rooms.get(roomKey(key));
    if (!room) throw new ChatError("no_room", "no such room");
    const r = await this.request("msg.delete", { room: room.id, message: id });
    if (room.remove(id)) this._emit("messages", room.key, [], { removed: id });
    return r;
  }

  // ------------------------------------------------------------------ room operations

  /** Asks for the rooms visible to us (public ones, ours, invitations) and applies the list.
   * @returns {Promise<object[]>} the rooms as the server listed them */
  async listRooms() {
    const r = await this.request("rooms.list");
    const list = (r.rooms || []).filter((x) => x && typeof x === "object");
    this._applyRoomList(list, this.publicRoom !== null ? this.rooms.get(this.publicRoom)?.id : null);
    this._emit("rooms");
    return list;
  }

  /** Creates a room (we join it); resolves with its key, null when the reply named none.
   * @param {string} name @param {boolean} isPrivate @returns {Promise<string | null>} */
  async createRoom(name, isPrivate) {
    const r = await this.request("room.create", { name: String(name), private: Boolean(isPrivate) });
    const info = r.room && typeof r.room === "object" ? r.room : { id: r.room ?? r.id, name, private: isPrivate };
    const room = this._room(info);
    if (!room) return null;
    room.joined = true;
    this._markSynced(room);
    room.complete = true;
    this._emit("rooms");
    return room.key;
  }

  /** Joins a public room or one we are invited to; its recent history comes with the reply.
   * @param {any} ref a room id, key or room object @returns {Promise<string>} the room's key */
  async joinRoom(ref) {
    const known = this.rooms.get(roomKey(ref && typeof ref === "object" ? ref.id : ref));
    const id = known ? known.id : ref && typeof ref === "object" ? ref.id : ref;
    const r = await this.request("room.join", { room: id });
    const room = this._room(r.room && typeof r.room === "object" ? r.room : { id });
    if (!room) throw new ChatError("no_room", "no such room"); // neither the reply nor ref named one
    room.joined = true;
    room.invited = false;
    this._mergeInto(room.key, r.messages || [], { live: false });
    this._markSynced(room);
    this._emit("rooms");
    return room.key;
  }

  /** @param {string} key @returns {Promise<void>} */
  async leaveRoom(key) {
    const room = this.rooms.get(roomKey(key));
    if (!room) return;
    await this.request("room.leave", { room: room.id });
    this._dropRoom(room.key, "left");
  }

  /** @param {string} key @returns {Promise<void>} */
  async deleteRoom(key) {
    const room = this.rooms.get(roomKey(key));
    if (!room) return;
    await this.request("room.delete", { room: room.id });
    this._dropRoom(room.key, "deleted");
  }

  /** Invites `user` into a private room. @param {string} key @param {string} user @returns {Promise<any>} */
  async invite(key, user) {
    const room = this.rooms.get(roomKey(key));
    if (!room) throw new ChatError("no_room", "no such room");
    return this.request("room.invite", { room: room.id, user: String(user) });
  }

  /** A room's members as the server lists them now.
   * @param {string} key @returns {Promise<{ user: string, online: boolean }[]>} */
  async members(key) {
    const room = this.rooms.get(roomKey(key));
    if (!room) return [];
    const r = await this.request("room.members", { room: room.id });
    room.members.clear();
    for (const m of r.members || []) {
      if (m && typeof m === "object" && m.user != null) room.members.set(String(m.user), { online: m.online === undefined ? true : Boolean(m.online) });
      else if (m && typeof m === "object" && m.name != null) room.members.set(String(m.name), { online: m.online === undefined ? true : Boolean(m.online) });
      else if (typeof m === "string") room.members.set(m, { online: true });
    }
    this._emit("members", room.key);
    return [...room.members].map(([user, v]) => ({ user, online: v.online }));
  }
}
