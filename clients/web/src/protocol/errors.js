// The one error type the protocol modules throw for malformed input: `reason` is a short
// machine-readable word (the same words as the Python reference's ProtocolError, e.g.
// "bad_msgpack", "unknown_baseline"), `message` says more for people.

export class ProtocolError extends Error {
  /** @param {string} reason a short machine-readable word @param {string} [detail] */
  constructor(reason, detail = "") {
    super(detail ? `${reason}: ${detail}` : reason);
    this.name = "ProtocolError";
    this.reason = reason;
  }
}
