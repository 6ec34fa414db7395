// Rendering quality that keeps the page responsive: on a software WebGL renderer
// (SwiftShader, llvmpipe: machines without a GPU, headless browsers) the render of a full
// resolution frame can block the page's main thread for hundreds of milliseconds, which
// would delay the network timers (inputs, acks) too. So: antialiasing off and a low pixel
// ratio on software renderers, a frame-rate cap there, and on any machine a dynamic
// resolution that lowers the pixel ratio while frames come too slowly and raises it again
// when they are quick.

const SOFTWARE = /swiftshader|llvmpipe|softpipe|software|basic render/i;

/** Whether a WebGL renderer string names a software renderer.
 * @param {string | null | undefined} name
 * @returns {boolean} */
export function isSoftwareRenderer(name) {
  return SOFTWARE.test(name || "");
}

/** The WebGL renderer string ("" when WebGL or the debug extension is missing).
 * @returns {string} */
export function webglRendererName() {
  try {
    const canvas = document.createElement("canvas");
    const gl = canvas.getContext("webgl2") || canvas.getContext("webgl");
    if (!gl) return "";
    const ext = gl.getExtension("WEBGL_debug_renderer_info");
    const name = ext ? gl.getParameter(ext.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER);
    const lose = gl.getExtension("WEBGL_lose_context");
    if (lose) lose.loseContext();
    return String(name || "");
  } catch {
    return "";
  }
}

export class DynamicResolution {
  /** software: a software renderer; overrides: { pixelRatio, antialias } from the URL.
   * @param {{ software: boolean, devicePixelRatio?: number,
   *   overrides?: { pixelRatio?: number | null, antialias?: boolean | null } }} options */
  constructor({ software, devicePixelRatio = 1, overrides = {} }) {
    this.software = software;
    this.maxRatio = software ? 0.5 : Math.min(devicePixelRatio, 2);
    this.minRatio = 0.2;
    this.ratio = software ? 0.3 : this.maxRatio;
    this.fixed = false;
    if (overrides.pixelRatio != null && overrides.pixelRatio > 0) {
      this.ratio = this.maxRatio = overrides.pixelRatio;
      this.fixed = true;
    }
    this.antialias = overrides.antialias ?? !software;
    this.minFrameMs = software ? 40 : 0; // at most 25 frames per second in software
    this.target = Math.max(1000 / 60, this.minFrameMs);
    this._sum = 0;
    this._n = 0;
    this._windowStart = 0;
    this._good = 0;
    this.lastRender = -Infinity;
  }

  /** Whether to render at time t (ms): enforces the frame-rate cap.
   * @param {number} t @returns {boolean} */
  shouldRender(t) {
    if (t - this.lastRender < this.minFrameMs - 2) return false;
    if (this.lastRender > 0) {
      this._sum += t - this.lastRender;
      this._n++;
    }
    this.lastRender = t;
    return true;
  }

  /** Once per second: returns the new pixel ratio when it changed, else null.
   * @param {number} t milliseconds @returns {number | null} */
  adjust(t) {
    if (this.fixed) return null;
    if (t - this._windowStart < 1000 || this._n < 3) {
      if (t - this._windowStart > 3000) this._windowStart = t; // page was idle
      return null;
    }
    const mean = this._sum / this._n;
    this._sum = 0;
    this._n = 0;
    this._windowStart = t;
    let next = this.ratio;
    if (mean > 1.6 * this.target) {
      next = Math.max(this.minRatio, this.ratio * 0.7);
      this._good = 0;
    } else if (mean < 1.2 * this.target) {
      this._good++;
      if (this._good >= 4) {
        next = Math.min(this.maxRatio, this.ratio * 1.2);
        this._good = 0;
      }
    } else this._good = 0;
    if (Math.abs(next - this.ratio) < 1e-3) return null;
    this.ratio = next;
    return next;
  }
}
