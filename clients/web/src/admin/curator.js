// The dashboard's worlds and pictures panels (admin.html #worlds-panel, #pictures-panel): the
// hosted worlds with their players (the default one marked), a box that opens a world (a
// built-in id, suggested, or the path of a world file on the server), Reload and Close (Close
// asks first, with the reason its players will read) per world; and the picture slots of the
// world shown on the map, each with its image's thumbnail and title, Upload (a file chosen or
// dropped on the row, sent as it is: the server checks it as it checks a chat image; its title
// is the one typed in the row's title box, else the file's name without its extension), Save
// title (the title typed in that box given to the picture hung there, without sending it
// again: only for a picture hung through the API, not the world file's own) and Remove.
// main.js polls and hands over the API's answers; every action goes through its `act`
// (the admin API only, its answer or refusal said in one line next to what was clicked).
//
// Rows are kept between polls and only their texts changed, so a half-typed close reason or
// an upload in flight survives the next poll. Everything the server sent (titles, file paths,
// error texts) is shown with textContent, and thumbnails load from the server's own
// /gallery/images/. Must not: close a world without the confirmation, send a file the server's
// limit already refuses, or ask the server for anything by itself (main.js polls).

import { formatBytes } from "./charts.js";
import { $, el, place } from "./dom.js";
import {
  MAX_TITLE, PICTURE_TYPES, cleanTitle, closedText, count, fileName, fileTitle, hungText, isHung, openChoices,
  openedText, reloadedText, retitleProblem, retitledText, slotTitle, slotsText, takenDownText, uploadProblem,
} from "./worlds.js";

/** @typedef {import("./api.js").AdminClient} AdminClient */
/** @typedef {import("./api.js").AdminWorld} AdminWorld */
/** @typedef {import("./api.js").AdminWorlds} AdminWorlds */
/** @typedef {import("./api.js").AdminSlot} AdminSlot */

/**
 * Runs an action against the API and says how it went in `out` (main.js: it polls again on
 * success and asks for the token on a 401).
 * @typedef {(out: any, run: (client: AdminClient) => Promise<any>, said: (answer: any) => string) => Promise<void>} Act
 */

/** @typedef {{ tr: any, texts: any[], file: any, badge: any, show: any, reload: any, close: any }} WorldRow */
/** @typedef {{ li: any, thumb: any, empty: any, title: any, file: any, titleInput: any, input: any, upload: any,
 *   retitle: any, remove: any, result: any, image: string, hungTitle: string, busy: boolean }} SlotRow */

export class Curator {
  /**
   * @param {{ act: Act, show: (id: string) => void }} hooks `show`: show that world on the map
   */
  constructor({ act, show }) {
    this.act = act;
    this.show = show;
    /** @type {AdminWorlds | null} */
    this.listing = null;
    this.shown = "";
    /** @type {Map<string, WorldRow>} */
    this.worldRows = new Map();
    this.confirming = ""; // the world whose close waits for its confirmation
    this.confirmRow = this.buildConfirm();
    /** @type {{ id: string, title: string, version: number, pictures: AdminSlot[] } | null} */
    this.pictures = null;
    this.picturesWorld = ""; // the world the slot rows are of
    /** @type {Map<string, SlotRow>} */
    this.slotRows = new Map();
    this.maxBytes = 0;
    $("open-form").addEventListener("submit", (/** @type {Event} */ ev) => {
      ev.preventDefault();
      this.openWorld();
    });
  }

  // -------------------------------------------------------------------------- worlds

  /** The poll's GET worlds and the world on the map. @param {AdminWorlds} listing @param {string} shown */
  renderWorlds(listing, shown) {
    this.listing = listing;
    this.shown = shown;
    this.maxBytes = listing.max_image_bytes || 0;
    const worlds = listing.worlds || [];
    $("worlds-count").textContent = String(worlds.length);
    const tbody = $("worlds").tBodies[0];
    const seen = new Set();
    let at = 0; // the next row's index: rows move only when out of order (a focused input stays focused)
    for (const w of worlds) {
      seen.add(w.id);
      let row = this.worldRows.get(w.id);
      if (!row) {
        row = this.worldRow(w.id);
        this.worldRows.set(w.id, row);
      }
      const texts = [w.title, w.id, String(w.players), slotsText(w), w.file ? fileName(w.file) : "—"];
      row.texts.forEach((cell, i) => {
        if (cell.textContent !== texts[i]) cell.textContent = texts[i];
      });
      row.file.title = w.file ? w.file : "the open world has no file";
      row.badge.hidden = !w.default;
      row.tr.classList.toggle("default", w.default);
      row.tr.classList.toggle("shown", w.id === shown);
      row.show.disabled = w.id === shown;
      row.reload.disabled = !w.file;
      row.reload.title = w.file ? `read ${w.file} again` : "the open world has no file to read again";
      row.close.disabled = w.default;
      row.close.title = w.default
        ? "the default world cannot be closed: clients that name no world go there (the first of worlds.hosted)"
        : `close ${w.id}: its players are disconnected`;
      place(tbody, row.tr, at++); // in the API's order
      if (this.confirming === w.id) {
        if (w.default) this.confirming = "";
        else {
          const text = `Close ${w.id} (${w.title})? ${count(w.players, "player")} in it will be disconnected and ` +
            "read this reason:";
          if (this.confirmRow.text.textContent !== text) this.confirmRow.text.textContent = text;
          this.confirmRow.button.textContent = `Close ${w.id}`;
          place(tbody, this.confirmRow.tr, at++);
        }
      }
    }
    for (const [id, row] of this.worldRows) {
      if (!seen.has(id)) {
        row.tr.remove();
        this.worldRows.delete(id);
      }
    }
    if (this.confirming && !seen.has(this.confirming)) this.confirming = "";
    if (!this.confirming) this.confirmRow.tr.remove();
    const choices = openChoices(listing.builtin || [], worlds);
    const list = $("open-choices");
    if (Array.from(list.options, (/** @type {any} */ o) => o.value).join("\n") !== choices.join("\n")) {
      list.replaceChildren(...choices.map((name) => {
        const o = el("option");
        o.value = name;
        return o;
      }));
    }
    $("open-name").placeholder = choices.length
      ? `${choices.slice(0, 3).join(", ")}, or a world file's path on the server`
      : "a world file's path on the server";
  }

  /** A table row for a world, its buttons wired to its id. @param {string} id @returns {WorldRow} */
  worldRow(id) {
    const tr = el("tr");
    tr.dataset.id = id;
    const name = tr.appendChild(el("td", "world"));
    const line = name.appendChild(el("div", "title-line"));
    const title = line.appendChild(el("span", "title"));
    const badge = line.appendChild(el("span", "badge", "default"));
    badge.title = "clients that name no world go here; it cannot be closed";
    const ident = name.appendChild(el("div", "id muted"));
    const players = tr.appendChild(el("td"));
    const slots = tr.appendChild(el("td"));
    const file = tr.appendChild(el("td", "file"));
    const actions = tr.appendChild(el("td", "actions"));
    const show = actions.appendChild(el("button", "show", "Map"));
    show.type = "button";
    show.title = `show ${id} on the map and list its pictures`;
    show.addEventListener("click", () => this.show(id));
    const reload = actions.appendChild(el("button", "reload", "Reload"));
    reload.type = "button";
    reload.addEventListener("click", () => {
      void this.act($("worlds-result"), (c) => c.reloadWorld(id), reloadedText);
    });
    const close = actions.appendChild(el("button", "danger close", "Close…"));
    close.type = "button";
    close.addEventListener("click", () => this.askClose(id));
    return { tr, texts: [title, ident, players, slots, file], file, badge, show, reload, close };
  }

  /** The row under a world's that asks before it closes. */
  buildConfirm() {
    const tr = el("tr", "confirm");
    const td = tr.appendChild(el("td"));
    td.colSpan = 5;
    const form = td.appendChild(el("form"));
    form.autocomplete = "off";
    const text = form.appendChild(el("span"));
    const reason = form.appendChild(el("input"));
    reason.id = "close-reason";
    reason.maxLength = 200;
    reason.placeholder = "the world was closed by the operator";
    reason.setAttribute("aria-label", "the reason its players read");
    const button = form.appendChild(el("button", "danger", "Close"));
    button.type = "submit";
    button.id = "close-confirm";
    const cancel = form.appendChild(el("button", "", "Cancel"));
    cancel.type = "button";
    cancel.id = "close-cancel";
    const stop = () => {
      this.confirming = "";
      tr.remove();
    };
    cancel.addEventListener("click", stop);
    form.addEventListener("keydown", (/** @type {KeyboardEvent} */ ev) => {
      if (ev.key === "Escape") stop();
    });
    form.addEventListener("submit", (/** @type {Event} */ ev) => {
      ev.preventDefault();
      const id = this.confirming;
      if (!id) return;
      const why = String(reason.value || "");
      this.confirming = "";
      tr.remove();
      reason.value = "";
      void this.act($("worlds-result"), (c) => c.closeWorld(id, why), closedText);
    });
    return { tr, text, reason, button };
  }

  /** Shows the confirmation under the world's row. @param {string} id */
  askClose(id) {
    this.confirming = id;
    this.confirmRow.reason.value = "";
    if (this.listing) this.renderWorlds(this.listing, this.shown);
    this.confirmRow.reason.focus();
  }

  openWorld() {
    const input = $("open-name");
    const name = String(input.value || "").trim();
    if (!name) {
      $("worlds-result").className = "error";
      $("worlds-result").textContent = "Type a built-in world's id or the path of a world file on the server.";
      return;
    }
    void this.act($("worlds-result"), (c) => c.openWorld(name), (a) => {
      input.value = "";
      return openedText(a);
    });
  }

  // -------------------------------------------------------------------------- pictures

  /**
   * The picture slots of the world on the map (GET worlds/{id}), null while none came.
   * @param {{ id: string, title: string, version: number, pictures: AdminSlot[] } | null} world
   */
  renderPictures(world) {
    this.pictures = world;
    const id = world ? world.id : "";
    if (id !== this.picturesWorld) {
      this.slotRows.clear();
      $("slots").replaceChildren();
      this.picturesWorld = id;
    }
    $("pictures-world").textContent = world ? `of ${world.title} (${world.id})` : "";
    const slots = world ? world.pictures : [];
    $("pictures-none").hidden = !world || slots.length > 0;
    $("pictures-limit").textContent = this.maxBytes > 0
      ? `PNG, JPEG or WebP, at most ${formatBytes(this.maxBytes)}: choose a file, or drop it on a slot`
      : "this server takes no pictures (it decodes no images)";
    const list = $("slots");
    const seen = new Set();
    let at = 0;
    for (const slot of slots) {
      seen.add(slot.id);
      let row = this.slotRows.get(slot.id);
      if (!row) {
        row = this.slotRow(id, slot.id);
        this.slotRows.set(slot.id, row);
      }
      const title = slotTitle(slot);
      row.hungTitle = typeof slot.title === "string" ? slot.title : "";
      if (row.title.textContent !== (slot.image ? title : "Empty frame")) {
        row.title.textContent = slot.image ? title : "Empty frame";
      }
      if (row.image !== slot.image) {
        row.image = slot.image;
        row.thumb.hidden = !slot.image;
        row.empty.hidden = Boolean(slot.image);
        row.thumb.classList.remove("missing");
        if (slot.image) {
          row.thumb.src = slot.url;
          row.thumb.alt = `the picture in ${slot.id}`;
        } else {
          row.thumb.removeAttribute("src");
        }
        row.file.textContent = slot.image ? (isHung(slot.image) ? `${slot.image} (hung here)` : slot.image) : "no picture";
        row.file.title = slot.image;
      }
      this.slotButtons(row);
      place(list, row.li, at++); // in the document's order
    }
    for (const [slotId, row] of this.slotRows) {
      if (!seen.has(slotId)) {
        row.li.remove();
        this.slotRows.delete(slotId);
      }
    }
  }

  /** @param {SlotRow} row */
  slotButtons(row) {
    row.upload.disabled = row.busy || !(this.maxBytes > 0);
    row.remove.disabled = row.busy || !row.image;
    const problem = retitleProblem({ image: row.image, title: row.hungTitle }, row.titleInput.value || "");
    row.retitle.disabled = row.busy || Boolean(problem);
    const tip = problem || `give the picture in ${row.li.dataset.slot} the title typed in its box (it is not sent again)`;
    if (row.retitle.title !== tip) row.retitle.title = tip;
  }

  /** A list item for a slot, its buttons wired to the world and the slot. @param {string} world @param {string} slot
   * @returns {SlotRow} */
  slotRow(world, slot) {
    const li = el("li");
    li.dataset.slot = slot;
    const frame = li.appendChild(el("div", "frame"));
    const thumb = frame.appendChild(el("img", "thumb"));
    thumb.width = 72;
    thumb.height = 54;
    thumb.loading = "lazy";
    thumb.decoding = "async";
    thumb.addEventListener("error", () => {
      thumb.classList.add("missing");
      thumb.title = "the image file is missing on the server";
    });
    const empty = frame.appendChild(el("span", "empty", "empty"));
    const info = li.appendChild(el("div", "info"));
    const head = info.appendChild(el("div", "head"));
    head.append(el("span", "slot", slot));
    const title = head.appendChild(el("span", "picture-title"));
    const file = info.appendChild(el("div", "file muted"));
    const titleInput = info.appendChild(el("input", "title-input"));
    titleInput.type = "text";
    titleInput.maxLength = MAX_TITLE;
    titleInput.placeholder = "title (else the file's name)";
    titleInput.setAttribute("aria-label", `title of the picture hung next in ${slot}, or, with Save title, of the one there`);
    const result = info.appendChild(el("div"));
    result.setAttribute("role", "status");
    const actions = li.appendChild(el("div", "actions"));
    const input = actions.appendChild(el("input"));
    input.type = "file";
    input.accept = PICTURE_TYPES;
    input.hidden = true;
    input.setAttribute("aria-label", `image for ${slot}`);
    const retitle = actions.appendChild(el("button", "retitle", "Save title"));
    retitle.type = "button";
    const upload = actions.appendChild(el("button", "upload", "Upload…"));
    upload.type = "button";
    upload.title = `choose an image to hang in ${slot}`;
    const remove = actions.appendChild(el("button", "danger remove", "Remove"));
    remove.type = "button";
    remove.title = `take the picture of ${slot} down (an empty frame)`;
    /** @type {SlotRow} */
    const row = { li, thumb, empty, title, file, titleInput, input, upload, retitle, remove, result, image: "\u0000",
      hungTitle: "", busy: false };
    titleInput.addEventListener("input", () => this.slotButtons(row));
    titleInput.addEventListener("keydown", (/** @type {KeyboardEvent} */ ev) => {
      if (ev.key === "Enter" && !retitle.disabled) {
        ev.preventDefault();
        void this.retitle(world, slot, row);
      }
    });
    retitle.addEventListener("click", () => void this.retitle(world, slot, row));
    upload.addEventListener("click", () => input.click());
    input.addEventListener("change", () => {
      const chosen = input.files && input.files[0];
      input.value = ""; // the same file can be chosen again
      if (chosen) void this.hang(world, slot, row, chosen);
    });
    li.addEventListener("dragover", (/** @type {DragEvent} */ ev) => {
      if (!ev.dataTransfer || !Array.from(ev.dataTransfer.types).includes("Files")) return;
      ev.preventDefault();
      li.classList.add("drop");
    });
    li.addEventListener("dragleave", () => li.classList.remove("drop"));
    li.addEventListener("drop", (/** @type {DragEvent} */ ev) => {
      ev.preventDefault();
      li.classList.remove("drop");
      const dropped = ev.dataTransfer && ev.dataTransfer.files[0];
      if (dropped && !upload.disabled) void this.hang(world, slot, row, dropped);
    });
    remove.addEventListener("click", () => {
      void this.busy(row, this.act(result, (c) => c.takeDownPicture(world, slot), takenDownText));
    });
    return row;
  }

  /** Sends `file` into the slot (unless the server's limit refuses it already) under the title
   * typed in the row, else the file's name made a title.
   * @param {string} world @param {string} slot @param {SlotRow} row @param {File} file */
  async hang(world, slot, row, file) {
    const problem = uploadProblem(file, this.maxBytes);
    if (problem) {
      row.result.className = "error";
      row.result.textContent = problem;
      return;
    }
    const title = cleanTitle(row.titleInput.value || "") || fileTitle(file.name);
    await this.busy(row, this.act(row.result, (c) => c.hangPicture(world, slot, file, title), (a) => {
      row.titleInput.value = ""; // the next upload's title is typed afresh
      return hungText(file.name, a);
    }));
  }

  /** Gives the picture hung in the slot the title typed in the row (the image is not sent).
   * @param {string} world @param {string} slot @param {SlotRow} row */
  async retitle(world, slot, row) {
    const title = cleanTitle(row.titleInput.value || "");
    if (!title) return;
    await this.busy(row, this.act(row.result, (c) => c.retitlePicture(world, slot, title), (a) => {
      row.titleInput.value = "";
      return retitledText(a);
    }));
  }

  /** The row's buttons off while `running` runs. @param {SlotRow} row @param {Promise<void>} running */
  async busy(row, running) {
    row.busy = true;
    this.slotButtons(row);
    try {
      await running;
    } finally {
      row.busy = false;
      this.slotButtons(row);
    }
  }

  // -------------------------------------------------------------------------- the test hook

  snapshot() {
    const listing = this.listing;
    return {
      worlds: listing ? listing.worlds.map((w) => ({ ...w })) : [],
      defaultWorld: listing ? listing.default : "",
      builtin: listing ? [...listing.builtin] : [],
      maxBytes: this.maxBytes,
      openChoices: Array.from($("open-choices").options, (/** @type {any} */ o) => o.value),
      worldRows: Array.from($("worlds").tBodies[0].rows, (/** @type {any} */ tr) => ({
        id: tr.dataset.id || "", confirm: tr.classList.contains("confirm"), text: tr.innerText,
      })),
      confirming: this.confirming,
      worldsResult: $("worlds-result").textContent,
      worldsResultError: $("worlds-result").classList.contains("error"),
      pictures: this.pictures ? { world: this.pictures.id, version: this.pictures.version } : null,
      slots: Array.from(this.slotRows.values(), (r) => ({
        id: r.li.dataset.slot, image: r.image, title: r.title.textContent, file: r.file.textContent,
        titleInput: r.titleInput.value,
        thumb: r.thumb.hidden ? null : { src: r.thumb.currentSrc || r.thumb.src, width: r.thumb.naturalWidth,
          complete: r.thumb.complete, missing: r.thumb.classList.contains("missing") },
        result: r.result.textContent, error: r.result.classList.contains("error"), busy: r.busy,
        canRemove: !r.remove.disabled, canRetitle: !r.retitle.disabled,
      })),
    };
  }
}
