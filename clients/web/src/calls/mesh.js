// One peer-to-peer connection of a mesh call (docs/calls.md): the signaling state machine
// around an RTCPeerConnection. The member whose name sorts first offers (logic.js isOfferer);
// the other answers. Offers, answers and trickled ICE candidates go out through `send` (the
// page relays them as call.signal requests on the chat socket) and come in through handle().
// Remote candidates that come before the remote description wait for it; every operation on
// the connection runs in order, one at a time. A failed connection is restarted by the
// offerer (an ICE restart, at most `maxRestarts` times).
//
// The connection comes from `createPeerConnection`, so node tests drive this with a fake.
// Must not: touch the DOM, WebAudio or the chat socket itself, or stop the local tracks (they
// belong to the call, not to one peer).

/** @typedef {import("./logic.js").SignalData} SignalData */

/** @typedef {"new" | "offering" | "answering" | "stable" | "connected" | "failed" | "closed"} PeerState */

const MAX_QUEUED_CANDIDATES = 200;

export class MeshPeer {
  /**
   * @param {{
   *   name: string,
   *   offerer: boolean,
   *   createPeerConnection: () => RTCPeerConnection,
   *   tracks: MediaStreamTrack[],
   *   stream?: MediaStream | null,
   *   send: (data: SignalData) => unknown,
   *   onTrack?: (track: MediaStreamTrack, peer: MeshPeer) => void,
   *   onState?: (peer: MeshPeer) => void,
   *   onError?: (err: unknown, peer: MeshPeer) => void,
   *   maxRestarts?: number,
   * }} options
   */
  constructor({ name, offerer, createPeerConnection, tracks, stream = null, send, onTrack = () => {}, onState = () => {}, onError = () => {}, maxRestarts = 2 }) {
    this.name = name;
    this.offerer = offerer;
    this.tracks = tracks;
    this.stream = stream;
    this.send = send;
    this.onTrack = onTrack;
    this.onState = onState;
    this.onError = onError;
    this.maxRestarts = maxRestarts;
    this.restarts = 0;
    /** @type {PeerState} */
    this.state = "new";
    this.pc = createPeerConnection();
    /** @type {MediaStreamTrack[]} the remote tracks received */
    this.remoteTracks = [];
    /** @type {RTCIceCandidateInit[]} remote candidates waiting for the remote description */
    this.queued = [];
    this.tracksAdded = false;
    this.signalsIn = 0;
    this.signalsOut = 0;
    this.ignored = 0; // signals that made no sense in the state they came in
    /** @type {Promise<void>} */
    this._chain = Promise.resolve();
    const pc = this.pc;
    pc.onicecandidate = (ev) => {
      if (this._closed()) return;
      const c = ev.candidate;
      this._send(c
        ? { type: "candidate", candidate: c.candidate, sdpMid: c.sdpMid ?? null, sdpMLineIndex: c.sdpMLineIndex ?? null, usernameFragment: c.usernameFragment ?? null }
        : { type: "candidate", candidate: "", sdpMid: null, sdpMLineIndex: null });
    };
    pc.ontrack = (ev) => {
      if (this._closed()) return;
      this.remoteTracks.push(ev.track);
      this.onTrack(ev.track, this);
    };
    pc.onconnectionstatechange = () => this._connectionChanged();
  }

  /** Starts the connection: the offerer makes its offer; the answerer waits for it. */
  start() {
    if (!this.offerer || this.state !== "new") return;
    this._run(async () => {
      // One audio and one video transceiver: ours when we have the track, else receive only,
      // so a listener without a camera (or microphone) still gets the other's.
      for (const kind of ["audio", "video"]) {
        const track = this.tracks.find((t) => t.kind === kind);
        if (track) this.pc.addTransceiver(track, { direction: "sendrecv", streams: this.stream ? [this.stream] : [] });
        else this.pc.addTransceiver(kind, { direction: "recvonly" });
      }
      this.tracksAdded = true;
      await this._offer(false);
    });
  }

  /** @param {boolean} iceRestart */
  async _offer(iceRestart) {
    const offer = await this.pc.createOffer(iceRestart ? { iceRestart: true } : {});
    if (this._closed()) return;
    await this.pc.setLocalDescription(offer);
    if (this._closed()) return;
    this._setState("offering");
    const local = this.pc.localDescription;
    this._send({ type: "offer", sdp: local ? local.sdp : offer.sdp || "" });
  }

  /**
   * A signal of the other member (call.signal's data, checked by logic.parseSignalData).
   * @param {SignalData} data
   * @returns {Promise<void>} when it is applied
   */
  handle(data) {
    this.signalsIn++;
    return this._run(async () => {
      if (this._closed()) return;
      if (data.type === "offer") {
        if (this.offerer) {
          this.ignored++; // only the other side answers
          return;
        }
        this._setState("answering");
        await this.pc.setRemoteDescription({ type: "offer", sdp: data.sdp });
        if (!this.tracksAdded) {
          // After the remote offer: addTrack takes the transceivers the offer made.
          for (const t of this.tracks) this.pc.addTrack(t, ...(this.stream ? [this.stream] : []));
          this.tracksAdded = true;
        }
        const answer = await this.pc.createAnswer();
        if (this._closed()) return;
        await this.pc.setLocalDescription(answer);
        if (this._closed()) return;
        const local = this.pc.localDescription;
        this._send({ type: "answer", sdp: local ? local.sdp : answer.sdp || "" });
        this._stable();
        await this._flushCandidates();
      } else if (data.type === "answer") {
        if (!this.offerer || this.state !== "offering") {
          this.ignored++;
          return;
        }
        await this.pc.setRemoteDescription({ type: "answer", sdp: data.sdp });
        this._stable();
        await this._flushCandidates();
      } else {
        /** @type {RTCIceCandidateInit} */
        const init = { candidate: data.candidate, sdpMid: data.sdpMid, sdpMLineIndex: data.sdpMLineIndex };
        if (data.usernameFragment) init.usernameFragment = data.usernameFragment;
        if (!this.pc.remoteDescription) {
          if (this.queued.length < MAX_QUEUED_CANDIDATES) this.queued.push(init);
          else this.ignored++;
          return;
        }
        await this._addCandidate(init);
      }
    });
  }

  _stable() {
    const s = this.pc.connectionState;
    this._setState(s === "connected" ? "connected" : "stable");
  }

  async _flushCandidates() {
    const list = this.queued;
    this.queued = [];
    for (const c of list) await this._addCandidate(c);
  }

  /** @param {RTCIceCandidateInit} init */
  async _addCandidate(init) {
    try {
      await this.pc.addIceCandidate(init);
    } catch {
      this.ignored++; // a candidate of an older session, or one this browser cannot use
    }
  }

  _connectionChanged() {
    if (this._closed()) return;
    const s = this.pc.connectionState;
    if (s === "connected") {
      this.restarts = 0;
      this._setState("connected");
    } else if (s === "failed") {
      this._setState("failed");
      if (this.offerer && this.restarts < this.maxRestarts) {
        this.restarts++;
        this._run(async () => {
          if (this._closed()) return;
          if (typeof this.pc.restartIce === "function") this.pc.restartIce();
          await this._offer(true);
        });
      }
    }
  }

  /** @param {PeerState} s */
  _setState(s) {
    if (this.state === s || this.state === "closed") return;
    this.state = s;
    this.onState(this);
  }

  /** @param {SignalData} data */
  _send(data) {
    this.signalsOut++;
    try {
      this.send(data);
    } catch (e) {
      this.onError(e, this);
    }
  }

  /** Runs fn after every operation before it; an error goes to onError, not to the caller.
   * @param {() => Promise<void>} fn @returns {Promise<void>} */
  _run(fn) {
    this._chain = this._chain.then(fn).catch((e) => {
      if (this.state !== "closed") this.onError(e, this);
    });
    return this._chain;
  }

  /** @returns {boolean} (a method, so the checks after an await are not narrowed away) */
  _closed() {
    return this.state === "closed";
  }

  /** Closes the connection (the local tracks stay: they belong to the call). */
  close() {
    if (this._closed()) return;
    this.state = "closed";
    this.queued = [];
    const pc = this.pc;
    pc.onicecandidate = null;
    pc.ontrack = null;
    pc.onconnectionstatechange = null;
    try {
      pc.close();
    } catch {
      // already closed
    }
    this.onState(this);
  }
}
