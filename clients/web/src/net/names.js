// The names this browser holds: for every name it joined as, the secret that POST /api/join
// gave it the first time (the server keeps only a hash; the secret is what proves the name is
// ours after a reload, an idle hour or a server restart). Kept in localStorage under
// NAMES_KEY as { key: { name, secret, used } }, at most MAX_NAMES (the least recently used
// go first), and the name last joined as, to fill in the join form.
//
// No network and no DOM: the caller passes the storage (window.localStorage, or an object
// with getItem/setItem in tests). A storage that throws (private mode, disabled, full) is
// treated as empty: the player can still join, only under a fresh name next time.

export const NAMES_KEY = "worldserver.names";
export const MAX_NAMES = 20;

/** window.localStorage, or anything with its getItem/setItem.
 * @typedef {Pick<Storage, "getItem" | "setItem">} NameStorage */
/** What is kept under NAMES_KEY.
 * @typedef {{ names: Record<string, { name: string, secret: string, used: number }>, last: string }} HeldNames */

/** How names are compared here: compatibility-normalized, lower case, spaces as the server
 *  trims them (the server's uniqueness key also folds case the Unicode way).
 * @param {string} name
 * @returns {string} */
export function nameKey(name) {
  return String(name).normalize("NFKC").toLowerCase().trim().replace(/ {2,}/g, " ");
}

/** @param {NameStorage} storage @returns {HeldNames} */
function load(storage) {
  try {
    const value = JSON.parse(storage.getItem(NAMES_KEY) || "{}");
    if (!value || typeof value !== "object" || Array.isArray(value)) return { names: {}, last: "" };
    const names = value.names && typeof value.names === "object" && !Array.isArray(value.names) ? value.names : {};
    return { names, last: typeof value.last === "string" ? value.last : "" };
  } catch {
    return { names: {}, last: "" };
  }
}

/** @param {NameStorage} storage @param {HeldNames} value @returns {boolean} */
function store(storage, value) {
  try {
    storage.setItem(NAMES_KEY, JSON.stringify(value));
    return true;
  } catch {
    return false;
  }
}

/** The secret this browser holds for `name`, or null.
 * @param {NameStorage} storage @param {string} name
 * @returns {string | null} */
export function secretFor(storage, name) {
  const entry = load(storage).names[nameKey(name)];
  return entry && typeof entry.secret === "string" ? entry.secret : null;
}

/** The name last joined as ("" if none).
 * @param {NameStorage} storage
 * @returns {string} */
export function lastName(storage) {
  return load(storage).last;
}

/** Remember a successful join as `name` (the name the server answered); `secret` when the
 *  answer carried one (a new name), else the one held stays. Returns false if it could not
 *  be stored.
 * @param {NameStorage} storage
 * @param {string} name
 * @param {string | null} [secret]
 * @param {number} [now] milliseconds since the epoch (the least recently used names go first)
 * @returns {boolean} */
export function remember(storage, name, secret = null, now = Date.now()) {
  const value = load(storage);
  const key = nameKey(name);
  const held = value.names[key];
  const kept = typeof secret === "string" ? secret : held && typeof held.secret === "string" ? held.secret : null;
  if (kept !== null) value.names[key] = { name: String(name), secret: kept, used: Number(now) };
  const keys = Object.keys(value.names).sort((a, b) => (Number(value.names[b].used) || 0) - (Number(value.names[a].used) || 0));
  for (const old of keys.slice(MAX_NAMES)) delete value.names[old];
  value.last = String(name);
  return store(storage, value);
}
