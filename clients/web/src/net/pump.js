// A steady timer for the network pump that keeps running while the tab is in the
// background: browsers throttle a hidden page's own timers to once a second (and later to
// once a minute), which would starve inputs and keep-alives and end the connection. Timers in
// a dedicated worker are not throttled that way; its messages wake the page. The page's own
// interval stays as well (either may be late; the pump is idempotent).

/** Calls fn every intervalMs from the page and from a worker; returns the function that stops both.
 * @param {() => void} fn
 * @param {number} intervalMs
 * @returns {() => void} */
export function startPump(fn, intervalMs) {
  const own = setInterval(fn, intervalMs);
  /** @type {Worker | null} */
  let worker = null;
  /** @type {string | null} */
  let url = null;
  try {
    if (typeof Worker !== "undefined" && typeof Blob !== "undefined" && typeof URL !== "undefined") {
      const src = `setInterval(() => postMessage(0), ${Math.max(10, intervalMs * 4)});`;
      url = URL.createObjectURL(new Blob([src], { type: "text/javascript" }));
      worker = new Worker(url);
      worker.onmessage = () => fn();
    }
  } catch {
    worker = null; // no workers (or blocked): the page's own timer only
  }
  return () => {
    clearInterval(own);
    if (worker) worker.terminate();
    if (url) URL.revokeObjectURL(url);
  };
}
