// Client-side prediction of the own avatar (SPEC section 3, INPUT): the same rule as the
// server, one input per tick: horizontal velocity = intent × max_speed (intent vectors longer
// than 1 scaled to 1), position clamped to the world bounds, and moved through the world's
// walls when it has any (./walls.js, the server's own rules). Inputs the server has not yet
// applied are kept; on each snapshot, those with seq <= input_ack are dropped and the rest are
// replayed on the server's position (reconciliation). Vertical motion (jumps) is not
// predicted: the server's height is used. Pure computation, no DOM, no clock.

import { INPUT_AXIS_SCALE } from "../protocol/messages.js";

/** @typedef {import("../protocol/messages.js").Input} Input */

export class Predictor {
  /**
   * @param {{maxSpeed: number, tickRate: number, mins: number[], maxs: number[]}} welcome
   * @param {import("./walls.js").Walls | null} [walls] the world's walls (null: none)
   */
  constructor(welcome, walls = null) {
    this.walls = walls;
    this.maxSpeed = welcome.maxSpeed;
    this.dt = 1 / welcome.tickRate;
    this.mins = welcome.mins;
    this.maxs = welcome.maxs;
    /** @type {Input[]} inputs not yet acknowledged, oldest first */
    this.pending = [];
    this.maxPending = 128;
  }

  /** One tick of `input` applied to pos [x, y, z]; returns a new array.
   * @param {number[]} pos @param {{ moveX: number, moveZ: number }} input @returns {number[]} */
  step(pos, input) {
    let ix = input.moveX / INPUT_AXIS_SCALE;
    let iz = input.moveZ / INPUT_AXIS_SCALE;
    const norm = Math.hypot(ix, iz);
    if (norm > 1) {
      ix /= norm;
      iz /= norm;
    }
    const d = this.maxSpeed * this.dt;
    if (this.walls) {
      const [wx, wz] = this.walls.move(pos[0], pos[2], ix * d, iz * d);
      return [wx, pos[1], wz];
    }
    const x = Math.min(Math.max(pos[0] + ix * d, this.mins[0]), this.maxs[0]);
    const z = Math.min(Math.max(pos[2] + iz * d, this.mins[2]), this.maxs[2]);
    return [x, pos[1], z];
  }

  /** Keeps an input sent to the server until a snapshot acknowledges it (at most maxPending).
   * @param {Input} input */
  record(input) {
    this.pending.push(input);
    if (this.pending.length > this.maxPending) this.pending.shift();
  }

  /** Drops inputs the server applied (seq <= inputAck) and replays the rest on serverPos.
   * @param {ArrayLike<number>} serverPos [x, y, z] @param {number} inputAck @returns {number[]} */
  reconcile(serverPos, inputAck) {
    let k = 0;
    while (k < this.pending.length && this.pending[k].seq <= inputAck) k++;
    if (k) this.pending.splice(0, k);
    let pos = [serverPos[0], serverPos[1], serverPos[2]];
    for (const input of this.pending) pos = this.step(pos, input);
    return pos;
  }

  /** Forgets the pending inputs. */
  clear() {
    this.pending.length = 0;
  }
}
