// The pure parts of the dashboard's worlds and pictures panels (curator.js draws them): which
// world the page shows, what the open box offers, a picture's title (and the one an upload
// sends, from its file's name), whether a chosen file can be sent at all, and the one-line
// texts of the answers of the admin API's world routes (worldserver/world_admin.py). No DOM,
// no requests.

import { HUNG_PREFIX } from "../world/live.js";
import { formatBytes } from "./charts.js";

/** @typedef {import("./api.js").AdminWorld} AdminWorld */

export { HUNG_PREFIX }; // pictures hung through the admin API (world_admin.HUNG_PREFIX)
export const MAX_TITLE = 100; // characters of a picture's title (world_admin.MAX_TITLE)
export const PICTURE_TYPES = "image/png,image/jpeg,image/webp"; // what a slot takes (a file input's accept)

/**
 * The world the page shows: `current` while it is still hosted, else the default world, else
 * the first; "" when none is hosted.
 * @param {{ id: string, default: boolean }[]} worlds
 * @param {string} current
 */
export function chooseWorld(worlds, current) {
  if (worlds.some((w) => w.id === current)) return current;
  const chosen = worlds.find((w) => w.default) || worlds[0];
  return chosen ? chosen.id : "";
}

/**
 * What the open box suggests: the names POST worlds takes besides a path (`builtin`, in the
 * server's order), those not hosted now.
 * @param {string[]} builtin
 * @param {{ id: string }[]} worlds
 */
export function openChoices(builtin, worlds) {
  const open = new Set(worlds.map((w) => w.id));
  return builtin.filter((name) => !open.has(name));
}

/** Whether a slot's image was hung through the admin API (not the world file's). @param {string} image */
export function isHung(image) {
  return image.startsWith(HUNG_PREFIX);
}

/**
 * A picture's title for the list: from its file name as the gallery makes it
 * (`sunset_over-sea.png` -> "Sunset over sea", worldserver/http_static.py image_title), "Hung
 * picture" for one hung through the API (its name is random), "" for an empty frame.
 * @param {string} image
 */
export function pictureTitle(image) {
  if (!image) return "";
  if (isHung(image)) return "Hung picture";
  return fileTitle(image) || image;
}

/**
 * A slot's title for the list: the one it was hung with (or its world file's), else made from
 * its image's name as pictureTitle does; "" for an empty frame.
 * @param {{ image: string, title?: string }} slot
 */
export function slotTitle(slot) {
  if (!slot.image) return "";
  return (typeof slot.title === "string" && slot.title) || pictureTitle(slot.image);
}

// What the server refuses in a title (the chat's single-line rule): control characters, line
// and paragraph separators, lone surrogates.
const BAD_IN_TITLE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/**
 * The title an upload sends by default: the file's name without its extension, cleaned so
 * the server takes it -- dashes, underscores and anything it refuses in a title become
 * spaces, runs of spaces one, NFC, the first letter capitalized, at most MAX_TITLE
 * characters (`harbour_at-dawn.jpg`: "Harbour at dawn"); "" when nothing is left.
 * @param {string} name
 */
export function fileTitle(name) {
  return cleanTitle(String(name).replace(/\.[^.]*$/, "").replace(BAD_IN_TITLE, " ").replace(/[-_\s]+/g, " "), true);
}

/**
 * A title typed by the curator, as the server will keep it: what it refuses in a title made a
 * space, NFC, trimmed, at most MAX_TITLE characters.
 * @param {string} text
 * @param {boolean} [capital] capitalize the first letter
 */
export function cleanTitle(text, capital = false) {
  const clean = String(text).replace(BAD_IN_TITLE, " ").normalize("NFC").trim();
  let chars = Array.from(clean); // the server counts code points
  if (capital && chars.length) chars = [...Array.from(chars[0].toUpperCase().normalize("NFC")), ...chars.slice(1)];
  return chars.slice(0, MAX_TITLE).join("").trim();
}

/**
 * Why a chosen file is not sent, or "" to send it (the server checks the rest, as it checks a
 * chat image: type, damage, pixels).
 * @param {{ name: string, size: number }} file
 * @param {number} maxBytes the server's max_image_bytes; 0: it decodes no images
 */
export function uploadProblem(file, maxBytes) {
  if (!(maxBytes > 0)) return "This server takes no pictures: it decodes no images (its chat has no images).";
  if (file.size === 0) return `${file.name} is empty.`;
  if (file.size > maxBytes) {
    return `${file.name} is ${formatBytes(file.size)} (${file.size} bytes); a picture may be at most ${maxBytes} bytes ` +
      `(${formatBytes(maxBytes)}, chat.max_image_bytes).`;
  }
  return "";
}

/** The last part of a path on the server (its whole text is the cell's tooltip). @param {string} path */
export function fileName(path) {
  const parts = path.split(/[\\/]/).filter(Boolean);
  return parts.length ? parts[parts.length - 1] : path;
}

/** "1 player", "2 players". @param {number} n @param {string} word */
export function count(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/** The pictures column of a world's row: "3 of 12 hung", "12 slots", "none". @param {AdminWorld} w */
export function slotsText(w) {
  if (!w.slots) return "none";
  return w.hung ? `${w.hung} of ${w.slots} hung` : count(w.slots, "slot");
}

/** @param {AdminWorld} a the answer of POST worlds */
export function openedText(a) {
  return `Opened ${a.id} (${a.title}): ${count(a.slots, "picture slot")}.`;
}

/** @param {{ id: string, players: number, reason: string, notice: boolean }} a the answer of a close */
export function closedText(a) {
  return `Closed ${a.id}: ${count(a.players, "player")} disconnected with "${a.reason}"` +
    (a.notice ? "; the notice is in its chat room." : ".");
}

/** @param {AdminWorld & { moved: number }} a the answer of a reload */
export function reloadedText(a) {
  return `Reloaded ${a.id} from its file: version ${a.version}, ${count(a.moved, "avatar")} moved clear of the walls.`;
}

/**
 * @param {string} file the name of the file sent
 * @param {{ slot: string, title?: string, width: number, height: number, bytes: number }} a the answer of a hang
 */
export function hungText(file, a) {
  const titled = a.title ? ` as "${a.title}"` : " untitled";
  return `Hung ${file}${titled} in ${a.slot}: ${a.width}×${a.height}, ${formatBytes(a.bytes)}.`;
}

/**
 * Why the title typed in a slot's row cannot be given to the picture it shows, or "" when it
 * can: only a picture hung through the admin API is retitled (the world file's own picture is
 * titled in its file), with a title that is something once cleaned and not the one it has.
 * @param {{ image: string, title?: string }} slot
 * @param {string} typed
 */
export function retitleProblem(slot, typed) {
  if (!slot.image) return "an empty frame has no title";
  if (!isHung(slot.image)) return "the world file's own picture is titled in the file";
  const title = cleanTitle(typed);
  if (!title) return "type the picture's new title in the box first";
  if (title === (slot.title || "")) return "the picture has this title already";
  return "";
}

/** @param {{ slot: string, title: string, changed?: boolean }} a the answer of a retitle */
export function retitledText(a) {
  if (a.changed === false) return `The picture of ${a.slot} has that title already.`;
  return a.title ? `Retitled the picture of ${a.slot}: "${a.title}".` : `The picture of ${a.slot} is untitled now.`;
}

/** @param {{ slot: string }} a the answer of a take-down */
export function takenDownText(a) {
  return `Took the picture of ${a.slot} down: an empty frame.`;
}
