// The dashboard's two DOM helpers, shared by its panels (main.js, curator.js): the page's
// elements by id and new elements with a class and a text. Text only: nothing here parses HTML.

/** The page's element `id`: admin.html has every one the scripts ask for.
 * @param {string} id @returns {any} */
export const $ = (id) => document.getElementById(id);

/** @param {string} tag @param {string} [cls] @param {string} [text] @returns {any} */
export function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

/**
 * Puts `node` at `index` among `parent`'s children, moving it only when it is elsewhere: a
 * row moved out and back loses the focus of what is in it (a half-typed input, a button).
 * @param {any} parent @param {any} node @param {number} index
 */
export function place(parent, node, index) {
  const at = parent.children[index] || null;
  if (at !== node) parent.insertBefore(node, at);
}
