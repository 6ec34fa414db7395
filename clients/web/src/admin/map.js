// The dashboard's top-down map of one world: the floor, the walls of its document (GET
// /api/worlds/{id}: the segments of world/walls.js, drawn as thick as they are), every player
// as a dot coloured by its transport, and the interest radius of a selected player. Seen from
// above: x to the right, z downward. The placement and the hit test are pure functions; draw
// only paints the canvas context it is given.

import { wallSegments } from "../world/walls.js";

/** A dot's colour per transport (the same as the page's transport badge where it has one). */
export const TRANSPORT_COLORS = Object.freeze({
  udp: "#4f9de8",
  webrtc: "#2e9d5b",
  ws: "#c7812f",
  hatongsu: "#b26ad6",
  other: "#9aa4b2",
});
export const DOT_RADIUS = 5; // CSS pixels
export const HOVER_REACH = 9; // CSS pixels from a dot's centre that count as over it
export const MAP_PAD = 12; // CSS pixels around the floor

/** @param {string} transport */
export function transportColor(transport) {
  return /** @type {Record<string, string>} */ (TRANSPORT_COLORS)[transport] || TRANSPORT_COLORS.other;
}

/**
 * How a floor ({min: [x, z], max: [x, z]}, metres) fits a canvas of width x height CSS
 * pixels, `pad` pixels kept free around it, the same scale on both axes, centred.
 * @param {{ min: number[], max: number[] }} floor
 * @param {number} width
 * @param {number} height
 * @param {number} [pad]
 * @returns {{ scale: number, toPx: (x: number, z: number) => number[], toWorld: (px: number, py: number) => number[] }}
 */
export function fitFloor(floor, width, height, pad = MAP_PAD) {
  const [x0, z0] = floor.min;
  const [x1, z1] = floor.max;
  const w = Math.max(x1 - x0, 1e-6);
  const d = Math.max(z1 - z0, 1e-6);
  const scale = Math.max(Math.min((width - 2 * pad) / w, (height - 2 * pad) / d), 1e-6);
  const ox = (width - w * scale) / 2;
  const oz = (height - d * scale) / 2;
  return {
    scale,
    toPx: (x, z) => [ox + (x - x0) * scale, oz + (z - z0) * scale],
    toWorld: (px, py) => [x0 + (px - ox) / scale, z0 + (py - oz) / scale],
  };
}

/**
 * The height a map of this floor wants at `width` CSS pixels (its aspect, within limits).
 * @param {{ min: number[], max: number[] }} floor
 * @param {number} width
 */
export function mapHeight(floor, width) {
  const w = Math.max(floor.max[0] - floor.min[0], 1e-6);
  const d = Math.max(floor.max[1] - floor.min[1], 1e-6);
  return Math.round(Math.min(Math.max((width - 2 * MAP_PAD) * (d / w) + 2 * MAP_PAD, 200), 720));
}

/**
 * A dot on the map: a player at its canvas position.
 * @typedef {{ id: number, name: string, transport: string, x: number, z: number, px: number, py: number, color: string }} Dot
 */

/**
 * The dots within `reach` pixels of (px, py), nearest first.
 * @param {Dot[]} dots
 * @param {number} px
 * @param {number} py
 * @param {number} [reach]
 * @returns {Dot[]}
 */
export function dotsNear(dots, px, py, reach = HOVER_REACH) {
  return dots
    .map((d) => ({ d, r: Math.hypot(d.px - px, d.py - py) }))
    .filter((e) => e.r <= reach)
    .sort((a, b) => a.r - b.r || a.d.id - b.d.id)
    .map((e) => e.d);
}

/**
 * The floor of a world: its document's, or, for a world the page has no document of yet, a
 * square around the players (at least 20 m).
 * @param {{ floor?: { min: number[], max: number[] } } | null} doc
 * @param {{ position: number[] }[]} players
 * @returns {{ min: number[], max: number[] }}
 */
export function floorOf(doc, players) {
  if (doc && doc.floor && doc.floor.min && doc.floor.max) return doc.floor;
  let reach = 10;
  for (const p of players) reach = Math.max(reach, Math.abs(p.position[0]) + 2, Math.abs(p.position[2]) + 2);
  return { min: [-reach, -reach], max: [reach, reach] };
}

/**
 * Paints the map and returns the dots drawn.
 * @param {CanvasRenderingContext2D} g a context of a canvas `width` x `height` CSS pixels (scaled already)
 * @param {object} view
 * @param {number} view.width
 * @param {number} view.height
 * @param {any} view.doc the world document, or null
 * @param {import("./api.js").AdminPlayer[]} view.players the players of this world
 * @param {number | null} view.selected the selected player's id
 * @param {number} view.radius the interest radius, metres
 * @returns {{ dots: Dot[], scale: number, interest: { px: number, py: number, r: number } | null }}
 */
export function drawMap(g, { width, height, doc, players, selected, radius }) {
  const floor = floorOf(doc, players);
  const fit = fitFloor(floor, width, height);
  g.clearRect(0, 0, width, height);
  g.fillStyle = "#14171c";
  g.fillRect(0, 0, width, height);
  const [fx0, fz0] = fit.toPx(floor.min[0], floor.min[1]);
  const [fx1, fz1] = fit.toPx(floor.max[0], floor.max[1]);
  g.fillStyle = "#262b33";
  g.fillRect(fx0, fz0, fx1 - fx0, fz1 - fz0);
  drawGrid(g, fit, floor);
  if (doc) {
    const { segs, half } = wallSegments(doc);
    g.strokeStyle = "#c9ced6";
    g.lineCap = "round";
    segs.forEach(([ax, az, bx, bz], i) => {
      const [pax, paz] = fit.toPx(ax, az);
      const [pbx, pbz] = fit.toPx(bx, bz);
      g.lineWidth = Math.max(1, 2 * half[i] * fit.scale);
      g.beginPath();
      g.moveTo(pax, paz);
      g.lineTo(pbx, pbz);
      g.stroke();
    });
  }
  /** @type {Dot[]} */
  const dots = players.map((p) => {
    const [px, py] = fit.toPx(p.position[0], p.position[2]);
    return { id: p.id, name: p.name, transport: p.transport, x: p.position[0], z: p.position[2], px, py, color: transportColor(p.transport) };
  });
  let interest = null;
  const chosen = dots.find((d) => d.id === selected);
  if (chosen) {
    interest = { px: chosen.px, py: chosen.py, r: radius * fit.scale };
    g.save();
    g.beginPath();
    g.arc(chosen.px, chosen.py, interest.r, 0, 2 * Math.PI);
    g.fillStyle = "rgba(243, 194, 107, 0.10)";
    g.fill();
    g.setLineDash([6, 4]);
    g.strokeStyle = "rgba(243, 194, 107, 0.9)";
    g.lineWidth = 1.5;
    g.stroke();
    g.restore();
  }
  for (const d of dots) {
    g.beginPath();
    g.arc(d.px, d.py, DOT_RADIUS, 0, 2 * Math.PI);
    g.fillStyle = d.color;
    g.fill();
    if (d.id === selected) {
      g.lineWidth = 2;
      g.strokeStyle = "#f3c26b";
      g.stroke();
    }
  }
  return { dots, scale: fit.scale, interest };
}

/** Faint lines every 10 m (every 50 m on large floors). */
function drawGrid(g, fit, floor) {
  const span = Math.max(floor.max[0] - floor.min[0], floor.max[1] - floor.min[1]);
  const step = span > 120 ? 50 : 10;
  g.strokeStyle = "rgba(255, 255, 255, 0.05)";
  g.lineWidth = 1;
  g.beginPath();
  for (let x = Math.ceil(floor.min[0] / step) * step; x <= floor.max[0]; x += step) {
    const [px, pz0] = fit.toPx(x, floor.min[1]);
    const [, pz1] = fit.toPx(x, floor.max[1]);
    g.moveTo(px, pz0);
    g.lineTo(px, pz1);
  }
  for (let z = Math.ceil(floor.min[1] / step) * step; z <= floor.max[1]; z += step) {
    const [px0, pz] = fit.toPx(floor.min[0], z);
    const [px1] = fit.toPx(floor.max[0], z);
    g.moveTo(px0, pz);
    g.lineTo(px1, pz);
  }
  g.stroke();
}
