// Proximity calls on the gallery page (docs/calls.md): the call client on the chat socket.
// When the chat is connected it sends call.enable (only where the browser has getUserMedia);
// on call.joined it asks once for the microphone and a small camera (listening only when
// refused), then connects the call the server chose: a mesh (mesh.js, one connection per other
// member, signaling relayed by call.signal) or a Janus room (janus.js, with the event's
// ticket). call.members opens and closes mesh connections, call.left ends everything (the
// connections closed, the local tracks stopped, the tiles gone), call.full shows a waiting
// line. Each frame, update() places every voice at its member's avatar relative to the own
// avatar (audio.js) and reports who speaks, for the name tags.
//
// The calls ride on the chat socket, so they work whatever carries the movement (WebRTC data
// channel or the WebSocket fallback). Must not: touch the chat's rooms and messages, or the
// movement session.

import { CallAudio, SELF } from "./audio.js";
import { JanusRoom } from "./janus.js";
import { MeshPeer } from "./mesh.js";
import { parseCallEvent, planPeers, relativePosition, sfuUrl } from "./logic.js";
import { CallTiles } from "./tiles.js";

/** @typedef {import("./logic.js").CallMember} CallMember */
/** @typedef {import("./logic.js").CallEvent} CallEvent */
/** @typedef {import("./logic.js").SignalData} SignalData */

/** The camera we ask for: small, so a call costs little on a slow machine. */
export const VIDEO_CONSTRAINTS = Object.freeze({ width: { ideal: 160 }, height: { ideal: 120 }, frameRate: { ideal: 10, max: 10 } });
const MAX_PENDING_SIGNALS = 200; // per sender, while our media or its membership is not settled
const SIGNAL_RETRIES = 4; // a rate-limited signal is sent again at most this many times
const EVENT_LOG = 60; // the test hook keeps this many call events

/** @typedef {"unsupported" | "off" | "idle" | "waiting" | "starting" | "in_call"} CallState */

/** The chat client's parts a call uses (chat/client.js ChatClient).
 * @typedef {{ state: string, user: string | null, request(op: string, fields?: Record<string, unknown>): Promise<any>,
 *   on(event: string, cb: (...args: any[]) => void): () => void }} ChatLike */

/** What the page gives each frame: the own avatar and where each avatar stands.
 * @typedef {{ self: { x: number, y: number, z: number, yaw: number, id?: number } | null,
 *   position: (entityId: number) => { x: number, y: number, z: number } | null }} FrameView */

/** A remote member's media. */
class Remote {
  /** @param {string} name */
  constructor(name) {
    this.name = name;
    /** @type {MediaStream | null} */
    this.video = null;
    /** @type {MediaStreamTrack[]} */
    this.tracks = [];
  }
}

export class CallClient {
  /**
   * @param {{
   *   chat: ChatLike,
   *   tiles: CallTiles,
   *   audio: CallAudio,
   *   wantVideo?: boolean,
   *   createPeerConnection?: (() => RTCPeerConnection) | null,
   *   getUserMedia?: ((c: MediaStreamConstraints) => Promise<MediaStream>) | null,
   *   openJanusSocket?: (url: string, protocol: string) => import("./janus.js").JanusSocket,
   *   now?: () => number,
   * }} options
   * (The node tests give stand-ins for tiles, audio, the connections and the media.)
   */
  constructor({ chat, tiles, audio, wantVideo = true, createPeerConnection = defaultCreatePeerConnection(), getUserMedia = defaultGetUserMedia(), openJanusSocket = undefined, now = () => performance.now() }) {
    this.chat = chat;
    this.tiles = tiles;
    this.audio = audio;
    this.wantVideo = wantVideo;
    this.createPeerConnection = createPeerConnection || (() => { throw new Error("no WebRTC"); });
    this.getUserMedia = getUserMedia;
    this.openJanusSocket = openJanusSocket;
    this.now = now;
    /** @type {CallState} without getUserMedia or WebRTC the page never asks for calls */
    this.state = getUserMedia && createPeerConnection ? "off" : "unsupported";
    this.enabled = false; // the server has our call.enable on this chat connection
    /** @type {string | null} */
    this.group = null;
    /** @type {string | null} */
    this.zone = null;
    /** @type {"mesh" | "sfu" | null} */
    this.mode = null;
    /** @type {CallMember[]} */
    this.members = [];
    /** @type {import("./logic.js").SfuTicket | null} */
    this.ticket = null;
    /** @type {Map<string, MeshPeer>} */
    this.peers = new Map();
    /** @type {JanusRoom | null} */
    this.room = null;
    /** @type {Map<string, Remote>} member name -> */
    this.remotes = new Map();
    /** @type {Map<string, SignalData[]>} signals that came before we could use them */
    this.pendingSignals = new Map();
    /** @type {MediaStream | null} */
    this.local = null;
    this.refused = false; // the player (or the browser) said no: listen only from now on
    this.mediaError = "";
    /** @type {Promise<MediaStream | null> | null} */
    this._media = null;
    this._epoch = 0; // bumped when a call ends: stale async work checks it
    /** @type {{ ev: string, group: string, t: number, reason?: string, mode?: string, members?: string[] }[]} */
    this.events = [];
    this.counts = { signals_in: 0, signals_out: 0, signal_errors: 0, bad_events: 0, joined: 0, left: 0 };
    this.error = "";
    /** @type {Set<string>} member names that were seen speaking during this page's life */
    this.spokeEver = new Set();
    /** @type {Set<string>} */
    this.speakingNow = new Set();
    this.selfSpeaking = false;
    this.joinedAt = /** @type {number | null} */ (null);
    this.leftAt = /** @type {number | null} */ (null);
    this.unsubscribe = [
      chat.on("state", () => this._chatState()),
      chat.on("call", (/** @type {unknown} */ f) => this._onFrame(f)),
    ];
    this._chatState();
  }

  // ------------------------------------------------------------------ the chat connection

  _chatState() {
    if (this.state === "unsupported") return;
    if (this.chat.state === "ready") {
      if (this.enabled) return;
      this.enabled = true;
      this.chat.request("call.enable", { on: true }).then(
        () => {
          if (this.state === "off") this._setState("idle");
        },
        (err) => {
          // a server without calls (unknown op) or with calls off: the page stays without
          this.enabled = false;
          this.error = `call.enable: ${err && err.message ? err.message : err}`;
        },
      );
    } else if (this.enabled) {
      // The server disables calls with the chat socket: whatever call we were in is over.
      this.enabled = false;
      this._end("disabled");
      this._setState("off");
    }
  }

  /** @param {CallState} s */
  _setState(s) {
    this.state = s;
  }

  /** @param {unknown} f */
  _onFrame(f) {
    const e = parseCallEvent(f);
    if (!e) {
      this.counts.bad_events++;
      return;
    }
    if (e.ev !== "call.signal") {
      /** @type {{ ev: string, group: string, t: number, reason?: string, mode?: string, members?: string[] }} */
      const entry = { ev: e.ev, group: e.group, t: this.now() };
      if (e.ev === "call.left") entry.reason = e.reason;
      if (e.ev === "call.joined") entry.mode = e.mode;
      if (e.ev === "call.joined" || e.ev === "call.members") entry.members = e.members.map((m) => m.name);
      this.events.push(entry);
      if (this.events.length > EVENT_LOG) this.events.splice(0, this.events.length - EVENT_LOG);
    }
    switch (e.ev) {
      case "call.joined":
        this._joined(e);
        break;
      case "call.members":
        if (e.group !== this.group) return;
        this._setMembers(e.members);
        break;
      case "call.left":
        if (this.group !== null && e.group !== this.group) return;
        this.counts.left++;
        this.leftAt = this.now();
        this._end(e.reason);
        this._setState(this.enabled ? "idle" : "off");
        break;
      case "call.full":
        if (this.group !== null && this.group !== e.group) this._end("ended");
        this._setState("waiting");
        this.tiles.show(true, "waiting: the call is full");
        break;
      case "call.signal":
        this.counts.signals_in++;
        this._signal(e.from, e.group, e.data);
        break;
    }
  }

  // ------------------------------------------------------------------ joining

  /** @param {Extract<CallEvent, { ev: "call.joined" }>} e */
  _joined(e) {
    this.counts.joined++;
    if (this.group !== null && (this.group !== e.group || this.mode !== e.mode)) {
      // Another group, or the same group on another medium: the old connections go (a new
      // group also means new media; the same group keeps the tracks).
      this._closeConnections();
      if (this.group !== e.group) this._end("ended");
    }
    const fresh = this.group === null;
    this.group = e.group;
    this.zone = e.zone;
    this.mode = e.mode;
    this.ticket = e.sfu;
    this.members = e.members;
    if (fresh) this.joinedAt = this.now();
    this._setState("starting");
    this.tiles.show(true, "");
    const epoch = this._epoch;
    this._ensureMedia().then((stream) => {
      if (epoch !== this._epoch || this.group !== e.group || this.mode !== e.mode) return;
      this._setState("in_call");
      this._showSelf(stream);
      this._syncTiles();
      if (this.mode === "mesh") this._setMembers(this.members);
      else if (!this.room || !sameTicket(this.room.ticket, this.ticket)) {
        if (this.room) this._closeConnections();
        this._startRoom();
      }
    });
  }

  /** The local media: asked for once (a refusal is remembered: listen only). @returns {Promise<MediaStream | null>} */
  _ensureMedia() {
    if (this.local && this.local.getTracks().some((t) => t.readyState === "live")) return Promise.resolve(this.local);
    if (this._media) return this._media;
    if (this.refused || !this.getUserMedia) return Promise.resolve(null);
    const gum = this.getUserMedia;
    const epoch = this._epoch;
    this._media = (async () => {
      /** @type {MediaStream | null} */
      let stream = null;
      const tries = this.wantVideo ? [{ audio: true, video: VIDEO_CONSTRAINTS }, { audio: true, video: false }] : [{ audio: true, video: false }];
      for (const c of tries) {
        try {
          stream = await gum(c);
          break;
        } catch (err) {
          const name = err && typeof err === "object" && "name" in err ? String(err.name) : "";
          this.mediaError = `${name || "error"}: ${err instanceof Error ? err.message : err}`;
          if (name === "NotAllowedError" || name === "SecurityError") break; // said no: do not ask again
        }
      }
      this._media = null;
      if (!stream) {
        this.refused = true;
        return null;
      }
      if (epoch !== this._epoch) {
        // the call ended while the browser asked: nothing may keep the camera on
        for (const t of stream.getTracks()) t.stop();
        return null;
      }
      this.local = stream;
      this.audio.setLocal(stream.getAudioTracks()[0] || null);
      return stream;
    })();
    return this._media;
  }

  /** @param {MediaStream | null} stream */
  _showSelf(stream) {
    const name = this.chat.user || "me";
    const hasVideo = Boolean(stream && stream.getVideoTracks().length);
    this.tiles.setSelf(name, hasVideo ? stream : null);
    this._renderToggles();
    if (!stream) this.tiles.show(true, "listening only");
  }

  _renderToggles() {
    const a = this.local ? this.local.getAudioTracks()[0] : undefined;
    const v = this.local ? this.local.getVideoTracks()[0] : undefined;
    this.tiles.setToggles({ hasMic: Boolean(a), hasCam: Boolean(v), mic: Boolean(a && a.enabled), cam: Boolean(v && v.enabled) });
  }

  /** Mutes or unmutes the microphone (the track keeps running: no renegotiation). @param {boolean} on */
  setMic(on) {
    for (const t of this.local ? this.local.getAudioTracks() : []) t.enabled = Boolean(on);
    this._renderToggles();
  }

  /** Turns the camera's picture off (black frames) or on. @param {boolean} on */
  setCam(on) {
    for (const t of this.local ? this.local.getVideoTracks() : []) t.enabled = Boolean(on);
    this._renderToggles();
  }

  // ------------------------------------------------------------------ mesh

  /** @param {CallMember[]} members */
  _setMembers(members) {
    this.members = members;
    if (this.state !== "in_call") return;
    this._syncTiles();
    if (this.mode !== "mesh") return;
    const self = this.chat.user;
    if (!self) return;
    const plan = planPeers(self, members, this.peers.keys());
    for (const name of plan.close) this._closePeer(name);
    for (const { name, offer } of plan.open) this._openPeer(name, offer);
    // signals of someone who is no member (any more): forget them
    const names = new Set(members.map((m) => m.name));
    for (const name of [...this.pendingSignals.keys()]) if (!names.has(name)) this.pendingSignals.delete(name);
  }

  /** @param {string} name @param {boolean} offer */
  _openPeer(name, offer) {
    const group = /** @type {string} */ (this.group);
    const stream = this.local;
    const tracks = stream ? stream.getTracks().filter((t) => t.readyState === "live") : [];
    const peer = new MeshPeer({
      name,
      offerer: offer,
      createPeerConnection: this.createPeerConnection,
      tracks,
      stream,
      send: (data) => this._sendSignal(name, group, data),
      onTrack: (track) => this._remoteTrack(name, track),
      onError: (err) => {
        this.error = `${name}: ${err instanceof Error ? err.message : err}`;
      },
    });
    this.peers.set(name, peer);
    peer.start();
    const waiting = this.pendingSignals.get(name);
    this.pendingSignals.delete(name);
    for (const d of waiting || []) peer.handle(d);
  }

  /** @param {string} name */
  _closePeer(name) {
    const peer = this.peers.get(name);
    if (peer) {
      this.peers.delete(name);
      peer.close();
    }
    this._dropRemote(name);
  }

  /** @param {string} from @param {string} group @param {SignalData} data */
  _signal(from, group, data) {
    if (group !== this.group || this.mode !== "mesh") return; // an old call's: nothing to do with it
    const peer = this.peers.get(from);
    if (peer) {
      peer.handle(data);
      return;
    }
    // Our media or the member list is not settled yet: keep it for the connection to come.
    let list = this.pendingSignals.get(from);
    if (!list) this.pendingSignals.set(from, (list = []));
    if (list.length < MAX_PENDING_SIGNALS) list.push(data);
  }

  /** Sends a signal to `to`, again after `retry_after` when rate-limited (a few times).
   * @param {string} to @param {string} group @param {SignalData} data @param {number} [attempt] */
  _sendSignal(to, group, data, attempt = 0) {
    if (group !== this.group || !this.peers.has(to)) return;
    this.counts.signals_out++;
    this.chat.request("call.signal", { to, data }).catch((err) => {
      if (err && err.code === "rate_limited" && attempt < SIGNAL_RETRIES) {
        const wait = Math.max(50, 1000 * (Number(err.retryAfter) || 0.2));
        setTimeout(() => this._sendSignal(to, group, data, attempt + 1), wait);
        return;
      }
      this.counts.signal_errors++;
      this.error = `call.signal to ${to}: ${err && err.message ? err.message : err}`;
    });
  }

  // ------------------------------------------------------------------ SFU

  _startRoom() {
    const ticket = this.ticket;
    if (!ticket) return;
    const stream = this.local;
    const room = new JanusRoom({
      ticket: { ...ticket, url: sfuUrl(ticket.url, typeof location === "undefined" ? "localhost" : location.hostname) },
      tracks: stream ? stream.getTracks().filter((t) => t.readyState === "live") : [],
      stream,
      createPeerConnection: this.createPeerConnection,
      ...(this.openJanusSocket ? { openSocket: this.openJanusSocket } : {}),
      onTrack: (track, publisher) => this._remoteTrack(publisher.display || `#${publisher.id}`, track),
      onGone: (publisher) => this._dropRemote(publisher.display || `#${publisher.id}`),
      onState: (r) => {
        if (r.state === "failed") this.error = `SFU: ${r.error}`;
      },
    });
    this.room = room;
    room.start();
  }

  // ------------------------------------------------------------------ remote media

  /** @param {string} name @param {MediaStreamTrack} track */
  _remoteTrack(name, track) {
    let r = this.remotes.get(name);
    if (!r) this.remotes.set(name, (r = new Remote(name)));
    r.tracks.push(track);
    if (track.kind === "audio") {
      this.audio.addRemote(name, track);
    } else if (track.kind === "video") {
      r.video = new MediaStream([track]);
      this.tiles.tile(name).setVideo(r.video);
    }
    if (!this.tiles.tiles.has(name)) this.tiles.tile(name);
  }

  /** @param {string} name */
  _dropRemote(name) {
    this.remotes.delete(name);
    this.audio.removeRemote(name);
    if (this.members.some((m) => m.name === name)) this.tiles.tile(name).setVideo(null);
    else this.tiles.remove(name);
  }

  /** A tile for every other member (its video comes when a track does), none for anyone else. */
  _syncTiles() {
    const others = new Set(this.members.map((m) => m.name).filter((n) => n !== this.chat.user));
    for (const name of others) this.tiles.tile(name);
    for (const name of [...this.tiles.tiles.keys()]) if (!others.has(name)) this.tiles.remove(name);
  }

  _closeConnections() {
    for (const name of [...this.peers.keys()]) this._closePeer(name);
    this.pendingSignals.clear();
    if (this.room) {
      this.room.close();
      this.room = null;
    }
    for (const name of [...this.remotes.keys()]) this._dropRemote(name);
  }

  /** Ends the call here: connections closed, local tracks stopped, tiles and voices gone.
   * @param {string} _reason */
  _end(_reason) {
    this._epoch++;
    this._closeConnections();
    if (this.local) for (const t of this.local.getTracks()) t.stop();
    this.audio.clear();
    this.tiles.clear();
    this.group = null;
    this.zone = null;
    this.mode = null;
    this.ticket = null;
    this.members = [];
    this.speakingNow = new Set();
    this.selfSpeaking = false;
  }

  // ------------------------------------------------------------------ every frame

  /**
   * Places the voices at their avatars and finds who speaks; returns the entity ids of the
   * speaking avatars (the own one too while our microphone carries a voice).
   * @param {FrameView} view
   * @param {number | null} selfEntity
   * @returns {Set<number>}
   */
  update(view, selfEntity) {
    /** @type {Set<number>} */
    const out = new Set();
    if (this.group === null) return out;
    const entityOf = new Map(this.members.map((m) => [m.name, m.entityId]));
    if (view.self) {
      for (const name of this.audio.voices.keys()) {
        const id = entityOf.get(name);
        const p = id === undefined ? null : view.position(id);
        if (p) this.audio.place(name, relativePosition(view.self, p));
      }
    }
    const speaking = this.audio.speaking(this.now());
    this.selfSpeaking = speaking.has(SELF);
    speaking.delete(SELF);
    this.speakingNow = speaking;
    for (const name of speaking) {
      this.spokeEver.add(name);
      const id = entityOf.get(name);
      if (id !== undefined) out.add(id);
    }
    if (this.selfSpeaking && selfEntity !== null) out.add(selfEntity);
    this.tiles.setSpeaking(speaking, this.selfSpeaking);
    return out;
  }

  /** The page leaves: the call ends, the server hears nothing more from us. */
  stop() {
    for (const u of this.unsubscribe) u();
    this._end("ended");
    this.state = "off";
  }

  // ------------------------------------------------------------------ the test hook

  /** The call's state as plain data. */
  describe() {
    const trackState = (/** @type {MediaStreamTrack | undefined} */ t) => (t ? { state: t.readyState, enabled: t.enabled } : null);
    /** @type {Record<string, unknown>} */
    const peers = {};
    for (const [name, p] of this.peers) peers[name] = { state: p.state, offerer: p.offerer, connection: p.pc.connectionState, tracks: p.remoteTracks.map((t) => t.kind), signals_in: p.signalsIn, signals_out: p.signalsOut, ignored: p.ignored };
    return {
      state: this.state,
      enabled: this.enabled,
      group: this.group,
      zone: this.zone,
      mode: this.mode,
      members: this.members.map((m) => m.name),
      peers,
      sfu: this.room ? { state: this.room.state, error: this.room.error, feeds: [...this.room.subs.values()].map((s) => s.display), published: Boolean(this.room.pubPc) } : null,
      remotes: [...this.remotes.values()].map((r) => ({ name: r.name, kinds: r.tracks.map((t) => t.kind), tile: this.tiles.tiles.has(r.name), first_frame_at: this.tiles.tiles.get(r.name)?.firstFrameAt ?? null })),
      local: { audio: trackState(this.local?.getAudioTracks()[0]), video: trackState(this.local?.getVideoTracks()[0]), refused: this.refused, error: this.mediaError },
      tiles: { shown: !this.tiles.root.hidden, names: [...this.tiles.tiles.keys()], self: Boolean(this.tiles.self), line: this.tiles.line.textContent },
      speaking: [...this.speakingNow],
      self_speaking: this.selfSpeaking,
      spoke: [...this.spokeEver],
      audio: this.audio.describe(),
      events: this.events.slice(),
      counts: { ...this.counts },
      joined_at: this.joinedAt,
      left_at: this.leftAt,
      error: this.error,
    };
  }

  /** Every connection of the call (mesh peers or the SFU's) with the page's name for it. */
  connections() {
    /** @type {{ name: string, pc: RTCPeerConnection }[]} */
    const out = [];
    for (const [name, p] of this.peers) out.push({ name, pc: p.pc });
    if (this.room) for (const c of this.room.connections()) out.push({ name: c.feed === null ? "(publish)" : c.display, pc: c.pc });
    return out;
  }

  /** What each received track carried (getStats inbound-rtp): frames decoded for video,
   *  samples for audio. */
  async received() {
    const out = [];
    for (const { name, pc } of this.connections()) {
      let report;
      try {
        report = await pc.getStats();
      } catch {
        continue;
      }
      report.forEach((s) => {
        if (s.type !== "inbound-rtp") return;
        out.push({
          name,
          kind: s.kind,
          bytes: s.bytesReceived || 0,
          packets: s.packetsReceived || 0,
          frames_decoded: s.kind === "video" ? s.framesDecoded || 0 : null,
          samples: s.kind === "audio" ? s.totalSamplesReceived || 0 : null,
          audio_energy: s.kind === "audio" ? s.totalAudioEnergy || 0 : null,
        });
      });
    }
    return out;
  }
}

/** @param {import("./logic.js").SfuTicket} a @param {import("./logic.js").SfuTicket | null} b */
function sameTicket(a, b) {
  return Boolean(b) && a.url === b?.url && a.room === b?.room && a.token === b?.token;
}

/** A new RTCPeerConnection (one bundle for audio and video), or null without WebRTC. */
function defaultCreatePeerConnection() {
  return typeof RTCPeerConnection === "undefined" ? null : () => new RTCPeerConnection({ bundlePolicy: "max-bundle" });
}

/** navigator.mediaDevices.getUserMedia bound, or null where the browser has none (an insecure
 *  origin, an old browser). */
function defaultGetUserMedia() {
  const md = typeof navigator !== "undefined" ? navigator.mediaDevices : undefined;
  return md && typeof md.getUserMedia === "function" ? (/** @type {MediaStreamConstraints} */ c) => md.getUserMedia(c) : null;
}

/** The test hook before the calls exist. */
export const idleCallHook = Object.freeze({
  state: () => ({ state: "off" }),
  received: () => Promise.resolve([]),
  setMic: () => {},
  setCam: () => {},
});

/**
 * Mounts the calls on the page: the strip of tiles in `parent`, the voices, the client on the
 * chat. `?cam=0` in the page's address joins calls without the camera.
 * @param {{ chat: ChatLike, parent?: HTMLElement }} options
 */
export function mountCalls({ chat, parent = document.body }) {
  const audio = new CallAudio();
  /** @type {CallClient | null} */
  let client = null;
  const tiles = new CallTiles({
    parent,
    onMic: (on) => client && client.setMic(on),
    onCam: (on) => client && client.setCam(on),
  });
  const wantVideo = new URLSearchParams(location.search).get("cam") !== "0";
  client = new CallClient({ chat, tiles, audio, wantVideo });
  const c = client;
  // The browser may start the audio context suspended until the page is touched again.
  const wake = () => {
    if (audio.ctx && audio.ctx.state === "suspended") audio.ctx.resume().catch(() => {});
  };
  window.addEventListener("pointerdown", wake);
  window.addEventListener("keydown", wake);
  const hook = {
    state: () => c.describe(),
    received: () => c.received(),
    /** @param {boolean} on */
    setMic: (on) => c.setMic(on),
    /** @param {boolean} on */
    setCam: (on) => c.setCam(on),
  };
  return {
    client: c,
    tiles,
    hook,
    /** @param {FrameView} view @param {number | null} selfEntity */
    update: (view, selfEntity) => c.update(view, selfEntity),
    stop: () => c.stop(),
  };
}

