// Mounts the chat in the gallery page: the client (client.js) on /ws/chat with the join
// token, the panel (panel.js) in `root`, speech bubbles (bubbles.js) over the avatars of
// whoever speaks, and the test hook window.worldserverTest.chat.

import { SpeechBubbles } from "./bubbles.js";
import { ChatClient, chatSocketUrl } from "./client.js";
import { ChatPanel } from "./panel.js";

/** The test hook before the chat exists (not joined yet). */
export const idleChatHook = Object.freeze({
  ready: false,
  state: "idle",
  messages: () => [],
  send: () => Promise.reject(new Error("chat not started")),
  bubbles: () => [],
  rooms: () => [],
  typing: () => [],
  reconnect: () => {},
  stats: () => ({ state: "idle" }),
});

/** A message as the test hook reports it (only the fields that are set).
 * @param {import("./client.js").ChatMessage} m
 * @returns {Record<string, unknown>} */
function hookMessage(m) {
  /** @type {Record<string, unknown>} */
  const out = { id: m.id, author: m.author, kind: m.kind, text: m.text };
  if (m.image !== null) out.image = m.image;
  if (m.kind === "question") out.answered = m.answered;
  if (m.entity_id !== null) out.entity_id = m.entity_id;
  if (m.ts !== null) out.ts = m.ts;
  return out;
}

/** A moderator's admin token from the page's fragment (#admin=...; never sent in URLs).
 * @returns {string | null} */
function adminTokenFromHash() {
  try {
    return new URLSearchParams(location.hash.slice(1)).get("admin") || null;
  } catch {
    return null;
  }
}

/**
 * token: join token; root: the panel's element; origin: page origin; entityForName(name):
 * the entity id of a player's avatar or null (used when a message has no entity_id);
 * onFocusChange(focused): the chat input got/lost the keyboard; adminToken: the server's
 * chat.admin_token for a moderator (default: #admin=... in the page URL).
 * Returns { client, panel, bubbles, hook, update(avatarManager), stop() }.
 * @param {{ token: string, root: HTMLElement, origin?: string,
 *   entityForName?: (name: string) => number | null | undefined,
 *   onFocusChange?: (focused: boolean) => void, adminToken?: string | null }} options
 */
export function mountChat({ token, root, origin = location.origin, entityForName = (/** @type {string} */ _name) => null, onFocusChange = (/** @type {boolean} */ _focused) => {}, adminToken = adminTokenFromHash() }) {
  const client = new ChatClient({ url: chatSocketUrl(origin), token, adminToken });
  const bubbles = new SpeechBubbles();
  root.hidden = false;
  const panel = new ChatPanel({ client, root, token, onFocusChange });

  client.on("messages", (key, added, info) => {
    if (!info.live) return; // history and catch-up do not speak
    const room = client.rooms.get(key);
    for (const m of added) {
      if (m.kind === "notice" || m.deleted) continue;
      const entity = m.entity_id !== null ? m.entity_id : entityForName(m.author);
      if (entity !== null && entity !== undefined) bubbles.say(entity, m, performance.now() / 1000, room && room.private);
    }
  });

  const hook = {
    get ready() {
      return client.ready;
    },
    get state() {
      return client.state;
    },
    get user() {
      return client.user;
    },
    get currentRoom() {
      return panel.current;
    },
    /** Messages of a room (id, key or name; default the public room), oldest first.
     * @param {unknown} [room] */
    messages(room) {
      const r = client.getRoom(room);
      return r ? r.messages.map(hookMessage) : [];
    },
    /** Sends text to a room (default: the one shown in the panel); resolves with its id.
     * @param {unknown} text @param {unknown} [room] */
    async send(text, room) {
      const r = room === undefined ? client.rooms.get(/** @type {string} */ (panel.current)) : client.getRoom(room);
      if (!r) throw new Error("no such room");
      const m = await client.send(r.key, { kind: "text", text: String(text) });
      return m && m.id !== undefined ? m.id : null;
    },
    bubbles() {
      return bubbles.list();
    },
    rooms() {
      return client.roomList().map((r) => ({ id: r.id, name: r.name, private: r.private, public: r.public, unread: r.unread }));
    },
    /** Who is typing in a room (default the public room). @param {unknown} [room] */
    typing(room) {
      const r = client.getRoom(room);
      return r ? client.typingUsers(r.key) : [];
    },
    /** Drops the chat connection; it comes back after ms (catch-up with `since`).
     * @param {number} [ms] */
    reconnect(ms = 0) {
      client.reconnect(Number(ms) || 0);
    },
    stats() {
      return { state: client.state, connects: client.connects, reconnects: client.reconnects, error: client.error, rooms: client.rooms.size };
    },
  };

  client.start();
  return {
    client,
    panel,
    bubbles,
    hook,
    /** @param {import("../scene/avatars.js").AvatarManager | null} avatarManager */
    update(avatarManager) {
      bubbles.update(avatarManager, performance.now() / 1000);
    },
    stop() {
      client.stop();
    },
  };
}
