// The dashboard's client of the admin API (/admin/api/, worldserver/admin_api.py; its worlds
// and pictures, worldserver/world_admin.py): JSON requests (images sent as they are) with the
// bearer token, every failure turned into an AdminError the page can say in one line. The
// token lives in sessionStorage (asked for once per tab), never in the URL.
// No DOM here beyond the Storage it is given; `fetch` can be replaced for the node tests.
//
// Must not: send two requests with a token that has not been accepted yet (wrong admin
// tokens are counted per address and lock it out after chat.admin_max_failures), or retry a
// refused token by itself.

import { fetchJson } from "../net/http.js";

export const ADMIN_API = "/admin/api/";
export const TOKEN_KEY = "worldserver.admin_token";

/** What went wrong with a request: `unauthorized` (401: a wrong, missing or locked-out
 * token), `unreachable` (no answer: the server is down or the network failed), `refused`
 * (the server answered no: `status`, the API's `code` and message). */
export class AdminError extends Error {
  /**
   * @param {"unauthorized" | "unreachable" | "refused"} kind
   * @param {string} message
   * @param {number} [status]
   * @param {string} [code]
   */
  constructor(kind, message, status = 0, code = "") {
    super(message);
    this.kind = kind;
    this.status = status;
    this.code = code;
  }
}

/** The text the page shows for a refused token: the API says no more than 401. */
export const UNAUTHORIZED_TEXT =
  "The server refused this admin token: it is wrong, or this address is locked out for a while " +
  "after too many wrong ones. The token is server.admin_token, or the file admin.token in the " +
  "server's data directory (written at each start).";

/** The admin API of the server this page came from. */
export class AdminClient {
  /**
   * @param {string} token the bearer token
   * @param {{ fetch?: typeof fetch, base?: string }} [options] `base`: the server's origin
   * ("" for this page's)
   */
  constructor(token, { fetch: fetchFn = globalThis.fetch.bind(globalThis), base = "" } = {}) {
    this.token = token;
    this.fetch = fetchFn;
    this.base = base;
  }

  /**
   * One request; resolves to the answer's JSON object or rejects with an AdminError.
   * @param {"GET" | "POST" | "PUT" | "PATCH" | "DELETE"} method
   * @param {string} path under /admin/api/, e.g. "status" or "players/7/kick"
   * @param {object | Blob} [body] sent as JSON, or a Blob (a File) as it is, with its type
   * @returns {Promise<any>}
   */
  async request(method, path, body) {
    /** @type {Record<string, string>} */
    const headers = { Authorization: `Bearer ${this.token}`, Accept: "application/json" };
    /** @type {RequestInit} */
    const init = { method, headers, cache: "no-store" };
    if (body instanceof Blob) {
      headers["Content-Type"] = body.type || "application/octet-stream";
      init.body = body;
    } else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    /** @type {import("../net/http.js").JsonAnswer} */
    let answer;
    try {
      answer = await fetchJson(`${this.base}${ADMIN_API}${path}`, init, this.fetch);
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      throw new AdminError("unreachable", `cannot reach the server (${why})`);
    }
    const { ok, status, body: data } = answer;
    if (status === 401) throw new AdminError("unauthorized", UNAUTHORIZED_TEXT, 401, "unauthorized");
    if (!ok) {
      const said = data && typeof data.error === "string" ? data.error : `HTTP ${status}`;
      const code = data && typeof data.code === "string" ? data.code : "";
      throw new AdminError("refused", said, status, code);
    }
    if (data === null || typeof data !== "object" || Array.isArray(data)) {
      throw new AdminError("refused", `the server answered ${path} with no JSON object`, status, "bad_answer");
    }
    return data;
  }

  status() {
    return this.request("GET", "status");
  }

  /** @returns {Promise<AdminPlayer[]>} */
  async players() {
    return (await this.request("GET", "players")).players;
  }

  /** @returns {Promise<AdminRoom[]>} */
  async rooms() {
    return (await this.request("GET", "rooms")).rooms;
  }

  /** @param {number | string} id @param {string} reason @param {number} ban seconds (0: none) */
  kick(id, reason, ban) {
    /** @type {{ reason?: string, ban: number }} */
    const body = { ban };
    if (reason.trim()) body.reason = reason;
    return this.request("POST", `players/${encodeURIComponent(String(id))}/kick`, body);
  }

  /** @param {number | string} id @param {number} seconds */
  mute(id, seconds) {
    return this.request("POST", `players/${encodeURIComponent(String(id))}/mute`, { seconds });
  }

  /** @param {number | string} id */
  unmute(id) {
    return this.request("POST", `players/${encodeURIComponent(String(id))}/unmute`, {});
  }

  /** @param {string} text @param {number | null} room a room id, null for every room */
  notice(text, room) {
    return this.request("POST", "notice", room === null ? { text } : { text, room });
  }

  /** The hosted worlds, the names `openWorld` takes besides a path, the largest picture.
   * @returns {Promise<AdminWorlds>} */
  worlds() {
    return this.request("GET", "worlds");
  }

  /** One world as listed, with its picture slots. @param {string} id
   * @returns {Promise<AdminWorld & { pictures: AdminSlot[] }>} */
  world(id) {
    return this.request("GET", `worlds/${encodeURIComponent(id)}`);
  }

  /** Opens a world: a built-in id, open, or the path of a world file on the server.
   * @param {string} name @returns {Promise<AdminWorld>} */
  openWorld(name) {
    return this.request("POST", "worlds", { world: name });
  }

  /** Closes a world; its players are disconnected with the reason ("": the server's).
   * @param {string} id @param {string} reason
   * @returns {Promise<{ id: string, players: number, reason: string, notice: boolean }>} */
  closeWorld(id, reason) {
    return this.request("POST", `worlds/${encodeURIComponent(id)}/close`, reason.trim() ? { reason } : {});
  }

  /** Reads a world's file again. @param {string} id @returns {Promise<AdminWorld & { moved: number }>} */
  reloadWorld(id) {
    return this.request("POST", `worlds/${encodeURIComponent(id)}/reload`, {});
  }

  /** Hangs an image (a File or Blob, sent as it is) in a picture slot under `title` (its
   * plaque's text, ?title=; "" for none).
   * @param {string} id @param {string} slot @param {Blob} image @param {string} [title]
   * @returns {Promise<{ world: string, slot: string, image: string, title: string, url: string, version: number,
   *   type: string, width: number, height: number, bytes: number }>} */
  hangPicture(id, slot, image, title = "") {
    const query = title ? `?title=${encodeURIComponent(title)}` : "";
    return this.request("PUT", `worlds/${encodeURIComponent(id)}/pictures/${encodeURIComponent(slot)}${query}`, image);
  }

  /** Gives the picture hung in a slot a new title (its plaque's text; "" for none), without
   * sending the image again.
   * @param {string} id @param {string} slot @param {string} title
   * @returns {Promise<{ world: string, slot: string, image: string, title: string, url: string, version: number,
   *   changed: boolean }>} */
  retitlePicture(id, slot, title) {
    return this.request("PATCH", `worlds/${encodeURIComponent(id)}/pictures/${encodeURIComponent(slot)}`, { title });
  }

  /** Empties a picture slot. @param {string} id @param {string} slot
   * @returns {Promise<{ world: string, slot: string, image: string, url: string, version: number }>} */
  takeDownPicture(id, slot) {
    return this.request("DELETE", `worlds/${encodeURIComponent(id)}/pictures/${encodeURIComponent(slot)}`);
  }
}

/**
 * A hosted world as GET /admin/api/worlds lists it (worldserver/world_admin.py).
 * @typedef {object} AdminWorld
 * @property {string} id
 * @property {string} title
 * @property {boolean} default where clients that name no world go; it cannot be closed
 * @property {number} players
 * @property {number} version of its document: a new one at each change of its pictures or file
 * @property {string} file its world file ("" for the open world)
 * @property {number} slots picture slots
 * @property {number} hung pictures hung through the admin API
 */

/** @typedef {{ default: string, worlds: AdminWorld[], builtin: string[], max_image_bytes: number }} AdminWorlds */

/** A picture slot: the image it shows ("" for an empty frame), its title ("" for none: the
 * world file's picture is titled from its file name) and its URL.
 * @typedef {{ id: string, image: string, title: string, url: string }} AdminSlot */

/**
 * A player as GET /admin/api/players lists it (docs/architecture.md, "Admin API").
 * @typedef {object} AdminPlayer
 * @property {number} id
 * @property {number} entity_id
 * @property {string} name
 * @property {string} world
 * @property {string} transport udp, webrtc, ws, hatongsu
 * @property {string | null} address
 * @property {number[]} position [x, y, z] metres
 * @property {number} yaw
 * @property {number | null} rtt_ms
 * @property {number} connected_for seconds
 * @property {number} bytes_in
 * @property {number} bytes_out
 * @property {number} chat_sockets
 * @property {number} muted_for seconds
 */

/**
 * A chat room as GET /admin/api/rooms lists it.
 * @typedef {{ id: number, name: string, private: boolean, public: boolean, sockets: number, users: number }} AdminRoom
 */

/** The token kept for this tab, or "". @param {Storage} storage */
export function storedToken(storage) {
  try {
    return (storage.getItem(TOKEN_KEY) || "").trim();
  } catch {
    return "";
  }
}

/** Keeps (or with "" forgets) the token for this tab. @param {Storage} storage @param {string} token */
export function storeToken(storage, token) {
  try {
    if (token) storage.setItem(TOKEN_KEY, token);
    else storage.removeItem(TOKEN_KEY);
  } catch {
    // storage refused (private mode quotas): the page keeps the token in memory only
  }
}
