// The voices of a call through WebAudio: every remote audio track goes through its own
// PannerNode (equal-power panning, inverse distance: the nearer person is louder and on the
// correct side) placed each frame at that member's avatar relative to the listener
// (logic.js relativePosition), and through an AnalyserNode whose level, like the local
// microphone's, drives the speaking indicator (logic.js SpeakingDetector).
//
// Chromium hands a remote WebRTC track's audio to WebAudio only while a media element plays
// it, so each remote track also plays in a muted <audio> element (the sound itself comes from
// the panner). Must not: touch the call's connections or stop tracks it did not create.

import { SpeakingDetector, rmsLevel } from "./logic.js";

/** The key of the local microphone among the levels. */
export const SELF = "";

class Voice {
  /** @param {AudioContext} ctx @param {MediaStreamTrack} track @param {boolean} remote */
  constructor(ctx, track, remote) {
    this.track = track;
    this.stream = new MediaStream([track]);
    /** @type {HTMLAudioElement | null} */
    this.element = null;
    if (remote) {
      const el = new Audio();
      el.muted = true;
      el.srcObject = this.stream;
      el.play().catch(() => {});
      this.element = el;
    }
    this.source = ctx.createMediaStreamSource(this.stream);
    this.analyser = ctx.createAnalyser();
    this.analyser.fftSize = 512;
    this.data = new Float32Array(this.analyser.fftSize);
    this.source.connect(this.analyser);
    /** @type {PannerNode | null} */
    this.panner = null;
    if (remote) {
      this.panner = new PannerNode(ctx, {
        panningModel: "equalpower",
        distanceModel: "inverse",
        refDistance: 1,
        maxDistance: 100,
        rolloffFactor: 1,
        positionX: 0,
        positionY: 0,
        positionZ: -1,
      });
      this.source.connect(this.panner).connect(ctx.destination);
    }
    this.detector = new SpeakingDetector();
    this.level = 0;
    this.position = { x: 0, y: 0, z: -1 };
  }

  dispose() {
    this.source.disconnect();
    if (this.panner) this.panner.disconnect();
    if (this.element) {
      this.element.pause();
      this.element.srcObject = null;
    }
  }
}

export class CallAudio {
  constructor() {
    /** @type {AudioContext | null} */
    this.ctx = null;
    /** @type {Map<string, Voice>} remote key (member name) -> */
    this.voices = new Map();
    /** @type {Voice | null} */
    this.local = null;
    this.unavailable = "";
  }

  /** The audio context, made on first use (after the player's click on "Join", so the
   *  browser lets it play) and resumed when the browser suspended it. @returns {AudioContext | null} */
  context() {
    if (!this.ctx) {
      try {
        this.ctx = new AudioContext({ latencyHint: "interactive" });
      } catch (e) {
        this.unavailable = `no WebAudio: ${e instanceof Error ? e.message : e}`;
        return null;
      }
    }
    if (this.ctx.state === "suspended") this.ctx.resume().catch(() => {});
    return this.ctx;
  }

  /** A remote audio track of member `key` (replaces its previous one).
   * @param {string} key @param {MediaStreamTrack} track */
  addRemote(key, track) {
    const ctx = this.context();
    if (!ctx) return;
    this.removeRemote(key);
    this.voices.set(key, new Voice(ctx, track, true));
  }

  /** @param {string} key */
  removeRemote(key) {
    const v = this.voices.get(key);
    if (!v) return;
    this.voices.delete(key);
    v.dispose();
  }

  /** The local microphone's track (level only, never played), or null.
   * @param {MediaStreamTrack | null} track */
  setLocal(track) {
    if (this.local) this.local.dispose();
    this.local = null;
    const ctx = track ? this.context() : null;
    if (track && ctx) this.local = new Voice(ctx, track, false);
  }

  /** Places member `key`'s voice (listener coordinates, logic.js relativePosition).
   * @param {string} key @param {{ x: number, y: number, z: number }} p */
  place(key, p) {
    const v = this.voices.get(key);
    if (!v || !v.panner || !this.ctx) return;
    if (!Number.isFinite(p.x) || !Number.isFinite(p.y) || !Number.isFinite(p.z)) return;
    v.position = { x: p.x, y: p.y, z: p.z };
    v.panner.positionX.value = p.x;
    v.panner.positionY.value = p.y;
    v.panner.positionZ.value = p.z;
  }

  /**
   * The levels now and who speaks (remote keys, and SELF for the microphone while it is on).
   * @param {number} now ms
   * @returns {Set<string>}
   */
  speaking(now) {
    const out = new Set();
    const check = (/** @type {string} */ key, /** @type {Voice} */ v) => {
      v.analyser.getFloatTimeDomainData(v.data);
      v.level = rmsLevel(v.data);
      const on = v.detector.update(v.track.enabled && v.track.readyState === "live" ? v.level : 0, now);
      if (on) out.add(key);
    };
    for (const [key, v] of this.voices) check(key, v);
    if (this.local) check(SELF, this.local);
    return out;
  }

  /** Every voice's position and level, for the test hook. */
  describe() {
    /** @type {Record<string, { x: number, y: number, z: number, level: number }>} */
    const out = {};
    for (const [key, v] of this.voices) out[key] = { ...v.position, level: Math.round(v.level * 1000) / 1000 };
    return { state: this.ctx ? this.ctx.state : "none", voices: out, local: this.local ? Math.round(this.local.level * 1000) / 1000 : null };
  }

  /** Every remote voice and the microphone's level go (the context stays for the next call). */
  clear() {
    for (const key of [...this.voices.keys()]) this.removeRemote(key);
    this.setLocal(null);
  }
}
