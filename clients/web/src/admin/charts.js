// The dashboard's line charts, drawn on a plain canvas: a few series of [uptime, value]
// points over the ring's window, a y axis from 0 to a round number, the newest second on the
// right. Formatting helpers for the page's figures live here too. No DOM beyond the context
// draw is given.

/**
 * The smallest "round" number (1, 2 or 5 times a power of ten) at or above `v` (1 for 0).
 * @param {number} v
 */
export function niceMax(v) {
  if (!(v > 0) || !Number.isFinite(v)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v * (1 - 1e-12)) return m * p;
  return 10 * p;
}

/** Bytes (or bytes per second) as text: 950 B, 12.3 kB, 4.1 MB. @param {number} n */
export function formatBytes(n) {
  const abs = Math.abs(n);
  if (abs < 1000) return `${Math.round(n)} B`;
  if (abs < 1e6) return `${(n / 1e3).toFixed(abs < 1e4 ? 1 : 0)} kB`;
  if (abs < 1e9) return `${(n / 1e6).toFixed(abs < 1e7 ? 1 : 0)} MB`;
  return `${(n / 1e9).toFixed(1)} GB`;
}

/** Seconds as text: 42 s, 3 min 05 s, 2 h 07 min, 3 d 4 h. @param {number} s */
export function formatDuration(s) {
  const t = Math.max(0, Math.floor(s));
  if (t < 60) return `${t} s`;
  if (t < 3600) return `${Math.floor(t / 60)} min ${String(t % 60).padStart(2, "0")} s`;
  if (t < 86400) return `${Math.floor(t / 3600)} h ${String(Math.floor((t % 3600) / 60)).padStart(2, "0")} min`;
  return `${Math.floor(t / 86400)} d ${Math.floor((t % 86400) / 3600)} h`;
}

/**
 * A chart line.
 * @typedef {{ label: string, color: string, points: number[][], dash?: number[] }} Line
 */

/**
 * Paints a chart of `lines` over the last `window` seconds up to `now` (the newest uptime).
 * Returns the y axis' top.
 * @param {CanvasRenderingContext2D} g a context of a canvas `width` x `height` CSS pixels (scaled already)
 * @param {object} chart
 * @param {number} chart.width
 * @param {number} chart.height
 * @param {Line[]} chart.lines
 * @param {number} chart.now
 * @param {number} chart.window seconds shown
 * @param {(v: number) => string} [chart.format] the axis' labels
 */
export function drawChart(g, { width, height, lines, now, window, format = (v) => String(v) }) {
  const left = 56;
  const right = 8;
  const top = 8;
  const bottom = 18;
  let high = 0;
  for (const line of lines) for (const [t, v] of line.points) if (t >= now - window && v > high) high = v;
  const ymax = niceMax(high);
  const w = Math.max(width - left - right, 1);
  const h = Math.max(height - top - bottom, 1);
  const px = (/** @type {number} */ t) => left + w * (1 - (now - t) / window);
  const py = (/** @type {number} */ v) => top + h * (1 - v / ymax);
  g.clearRect(0, 0, width, height);
  g.font = "11px system-ui, sans-serif";
  g.fillStyle = "#9aa4b2";
  g.strokeStyle = "rgba(255, 255, 255, 0.08)";
  g.lineWidth = 1;
  g.textBaseline = "middle";
  g.textAlign = "right";
  for (const f of [0, 0.5, 1]) {
    const y = py(ymax * f);
    g.beginPath();
    g.moveTo(left, y);
    g.lineTo(left + w, y);
    g.stroke();
    g.fillText(format(ymax * f), left - 6, y);
  }
  g.textAlign = "left";
  g.textBaseline = "alphabetic";
  g.fillText(window < 120 ? `-${Math.round(window)} s` : `-${Math.round(window / 60)} min`, left, height - 4);
  g.textAlign = "right";
  g.fillText("now", left + w, height - 4);
  g.save();
  g.beginPath();
  g.rect(left, top - 1, w, h + 2);
  g.clip();
  for (const line of lines) {
    g.strokeStyle = line.color;
    g.lineWidth = 1.5;
    g.setLineDash(line.dash || []);
    g.beginPath();
    let started = false;
    for (const [t, v] of line.points) {
      if (t < now - window - 2) continue;
      if (started) g.lineTo(px(t), py(v));
      else g.moveTo(px(t), py(v));
      started = true;
    }
    g.stroke();
  }
  g.restore();
  return ymax;
}
