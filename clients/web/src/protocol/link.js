// Per-connection sequence, acknowledgement and replay state of one side (SPEC section 3),
// a port of protocol/link.py: which of our packets the peer acknowledged (and the round-trip
// time they show), which of the peer's packets we accept (newer, or at most 32 older and not
// seen), and the ack/ack-bits to put in our next packet. Pure state: `now` is passed in
// (seconds, any monotonic clock).

export const WINDOW = 32;
const HALF = 0x8000;
const MAX_UNACKED = 64;

/** Whether 16-bit sequence a is newer than b (wrapping). @param {number} a @param {number} b @returns {boolean} */
export function seqNewer(a, b) {
  const d = (a - b) & 0xffff;
  return d > 0 && d < HALF;
}

/** What goes in the header of our next packet. @typedef {{ seq: number, ack: number, ackBits: number }} SendHeader */

export class Link {
  /** @param {number} now seconds on any monotonic clock */
  constructor(now) {
    this.localSeq = 0;
    this.remoteSeq = -1; // none received yet
    this.recvBits = 0; // uint32
    /** @type {Map<number, number>} */
    this.unacked = new Map(); // our sequence -> send time (insertion order = send order)
    this.rtt = 0;
    this.lastRecv = now;
    this.lastSend = now;
    this.packetsLost = 0;
    this.duplicates = 0;
    this.stale = 0;
  }

  /** Allocates a sequence number for an outgoing packet: { seq, ack, ackBits }.
   * @param {number} now
   * @returns {SendHeader} */
  nextSend(now) {
    const seq = this.localSeq;
    this.localSeq = (seq + 1) & 0xffff;
    this.unacked.delete(seq); // a wrapped-around sequence starts over
    this.unacked.set(seq, now);
    if (this.unacked.size > MAX_UNACKED) {
      const oldest = this.unacked.keys().next().value;
      if (oldest !== undefined) this.unacked.delete(oldest);
      this.packetsLost++;
    }
    this.lastSend = now;
    return { seq, ack: this.remoteSeq & 0xffff, ackBits: this.recvBits >>> 0 };
  }

  /** Records an incoming sequence number; false for a duplicate or too old packet.
   * @param {number} seq
   * @returns {boolean} */
  accept(seq) {
    const remote = this.remoteSeq;
    if (remote < 0) {
      this.remoteSeq = seq;
      return true;
    }
    const diff = (seq - remote) & 0xffff;
    if (diff === 0) {
      this.duplicates++;
      return false;
    }
    if (diff < HALF) {
      let bits = 0;
      if (diff <= WINDOW) {
        // (recvBits << diff) | (1 << (diff - 1)), kept to 32 bits
        const shifted = diff === 32 ? 0 : this.recvBits << diff;
        bits = (shifted | (1 << (diff - 1))) >>> 0;
      }
      this.recvBits = bits;
      this.remoteSeq = seq;
      return true;
    }
    const back = 0x10000 - diff;
    if (back > WINDOW) {
      this.stale++;
      return false;
    }
    const mask = (1 << (back - 1)) >>> 0;
    if ((this.recvBits & mask) >>> 0) {
      this.duplicates++;
      return false;
    }
    this.recvBits = (this.recvBits | mask) >>> 0;
    return true;
  }

  /** Our sequence numbers newly acknowledged by (ack, ackBits); `ack` itself, when newly
   * acknowledged, updates the RTT (seconds), as protocol/link.py does.
   * @param {number} ack @param {number} ackBits @param {number} now
   * @returns {number[]} */
  processAcks(ack, ackBits, now) {
    /** @type {number[]} */
    const acked = [];
    if (this.unacked.size === 0) return acked;
    /** @type {number[]} */
    const lost = [];
    for (const [seq, sent] of this.unacked) {
      const d = (ack - seq) & 0xffff;
      if (d === 0 || (d <= WINDOW && (ackBits >>> (d - 1)) & 1)) {
        acked.push(seq);
        if (d === 0) {
          // Only ack itself is a round-trip sample: the others may have waited for the peer's next send.
          const sample = now - sent;
          this.rtt = this.rtt === 0 ? sample : this.rtt + 0.1 * (sample - this.rtt);
        }
      } else if (d > WINDOW && d < HALF) {
        lost.push(seq);
      }
    }
    for (const seq of acked) this.unacked.delete(seq);
    for (const seq of lost) this.unacked.delete(seq);
    this.packetsLost += lost.length;
    return acked;
  }
}
