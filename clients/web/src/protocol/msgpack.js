// Minimal MessagePack for the worldserver protocol (protocol/SPEC.md): written for this
// client rather than taken from npm so that encoding is byte-identical to the Python
// reference (shortest integer forms, float64 for floats, bin for bytes) and decoding can be
// strict and typed (an integer field must be a msgpack int, a float 5.0 is not one).
//
// Writer: explicit typed writes (uint/int, float64, bin, str, nil, array headers) plus a
// generic encode() for plain values. Reader: a cursor over bytes with typed reads that throw
// ProtocolError on anything unexpected, plus a generic bounded decode().
//
// No DOM, no I/O: usable from node and the browser.

import { ProtocolError } from "./errors.js";

const TEXT_ENCODER = new TextEncoder();
const TEXT_DECODER = new TextDecoder("utf-8", { fatal: true });

/** Bytes as the decoders accept them: an ArrayBuffer, a view on one, or a node Buffer.
 * @typedef {ArrayBuffer | ArrayBufferView} BytesLike */

/** A decoded value (Reader.any): maps become plain objects.
 * @typedef {null | boolean | number | string | Uint8Array | MsgpackArray | MsgpackMap} MsgpackValue */
/** @typedef {{ [key: string]: MsgpackValue }} MsgpackMap */
/** @typedef {MsgpackValue[]} MsgpackArray */

/** Bounds on a generic decode (see DEFAULT_LIMITS).
 * @typedef {{ maxStr: number, maxBin: number, maxArray: number, maxMap: number, maxDepth: number }} DecodeLimits */

/** The kinds Reader.peekKind reports.
 * @typedef {"int" | "float" | "nil" | "bool" | "str" | "bin" | "array" | "map" | "ext" | "invalid"} MsgpackKind */

/** A float that must be written as msgpack float64 even when its value is integral. */
export class Float64 {
  /** @param {number} value */
  constructor(value) {
    this.value = Number(value);
  }
}

/** A growing buffer with typed msgpack writes; every write returns the writer. */
export class Writer {
  /** @param {number} [initial] first buffer size in bytes */
  constructor(initial = 64) {
    this.buf = new Uint8Array(initial);
    this.view = new DataView(this.buf.buffer);
    this.length = 0;
  }

  /** @param {number} n */
  _reserve(n) {
    const need = this.length + n;
    if (need <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < need) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  /** @param {number} v */
  _u8(v) {
    this._reserve(1);
    this.buf[this.length++] = v;
  }

  /** @param {number} v */
  _be16(v) {
    this._reserve(2);
    this.view.setUint16(this.length, v);
    this.length += 2;
  }

  /** @param {number} v */
  _be32(v) {
    this._reserve(4);
    this.view.setUint32(this.length, v);
    this.length += 4;
  }

  /** Raw bytes, no header. @param {Uint8Array} data */
  bytes(data) {
    this._reserve(data.length);
    this.buf.set(data, this.length);
    this.length += data.length;
  }

  /** @returns {this} */
  nil() {
    this._u8(0xc0);
    return this;
  }

  /** @param {boolean} v @returns {this} */
  bool(v) {
    this._u8(v ? 0xc3 : 0xc2);
    return this;
  }

  /** An integer in the shortest msgpack form (the form Python's msgpack.packb chooses).
   * @param {number | bigint} v
   * @returns {this} */
  int(v) {
    if (typeof v === "bigint") return this._bigint(v);
    if (!Number.isSafeInteger(v)) throw new RangeError(`not a safe integer: ${v}`);
    if (v >= 0) {
      if (v <= 0x7f) this._u8(v);
      else if (v <= 0xff) {
        this._u8(0xcc);
        this._u8(v);
      } else if (v <= 0xffff) {
        this._u8(0xcd);
        this._be16(v);
      } else if (v <= 0xffffffff) {
        this._u8(0xce);
        this._be32(v);
      } else return this._bigint(BigInt(v));
    } else if (v >= -32) this._u8(v & 0xff);
    else if (v >= -128) {
      this._u8(0xd0);
      this._u8(v & 0xff);
    } else if (v >= -32768) {
      this._u8(0xd1);
      this._be16(v & 0xffff);
    } else if (v >= -2147483648) {
      this._u8(0xd2);
      this._be32(v >>> 0);
    } else return this._bigint(BigInt(v));
    return this;
  }

  /** @param {bigint} v @returns {this} */
  _bigint(v) {
    if (v >= 0n && v <= 0xffffffffn) return this.int(Number(v));
    if (v < 0n && v >= -2147483648n) return this.int(Number(v));
    this._reserve(9);
    if (v > 0n) {
      if (v > 0xffffffffffffffffn) throw new RangeError("integer above uint64");
      this.buf[this.length] = 0xcf;
      this.view.setBigUint64(this.length + 1, v);
    } else {
      if (v < -0x8000000000000000n) throw new RangeError("integer below int64");
      this.buf[this.length] = 0xd3;
      this.view.setBigInt64(this.length + 1, v);
    }
    this.length += 9;
    return this;
  }

  /** @param {number} v @returns {this} */
  float64(v) {
    this._reserve(9);
    this.buf[this.length] = 0xcb;
    this.view.setFloat64(this.length + 1, v);
    this.length += 9;
    return this;
  }

  /** @param {string} s @returns {this} */
  str(s) {
    const data = TEXT_ENCODER.encode(s);
    const n = data.length;
    if (n <= 31) this._u8(0xa0 | n);
    else if (n <= 0xff) {
      this._u8(0xd9);
      this._u8(n);
    } else if (n <= 0xffff) {
      this._u8(0xda);
      this._be16(n);
    } else {
      this._u8(0xdb);
      this._be32(n);
    }
    this.bytes(data);
    return this;
  }

  /** @param {Uint8Array} data @returns {this} */
  bin(data) {
    const n = data.length;
    if (n <= 0xff) {
      this._u8(0xc4);
      this._u8(n);
    } else if (n <= 0xffff) {
      this._u8(0xc5);
      this._be16(n);
    } else {
      this._u8(0xc6);
      this._be32(n);
    }
    this.bytes(data);
    return this;
  }

  /** An array header for n elements. @param {number} n @returns {this} */
  array(n) {
    if (n <= 15) this._u8(0x90 | n);
    else if (n <= 0xffff) {
      this._u8(0xdc);
      this._be16(n);
    } else {
      this._u8(0xdd);
      this._be32(n);
    }
    return this;
  }

  /** A map header for n pairs. @param {number} n @returns {this} */
  map(n) {
    if (n <= 15) this._u8(0x80 | n);
    else if (n <= 0xffff) {
      this._u8(0xde);
      this._be16(n);
    } else {
      this._u8(0xdf);
      this._be32(n);
    }
    return this;
  }

  /** Generic: null, booleans, integers (int), other numbers and Float64 (float64),
   * strings, Uint8Array (bin), arrays, plain objects (maps with string keys).
   * @param {unknown} value
   * @returns {this} */
  encode(value) {
    if (value === null || value === undefined) return this.nil();
    if (value instanceof Float64) return this.float64(value.value);
    switch (typeof value) {
      case "boolean":
        return this.bool(value);
      case "number":
        return Number.isSafeInteger(value) ? this.int(value) : this.float64(value);
      case "bigint":
        return this.int(value);
      case "string":
        return this.str(value);
      default:
        break;
    }
    if (value instanceof Uint8Array) return this.bin(value);
    if (value instanceof ArrayBuffer) return this.bin(new Uint8Array(value));
    if (Array.isArray(value)) {
      this.array(value.length);
      for (const item of value) this.encode(item);
      return this;
    }
    if (typeof value === "object") {
      const obj = /** @type {Record<string, unknown>} */ (value);
      const keys = Object.keys(obj);
      this.map(keys.length);
      for (const k of keys) {
        this.str(k);
        this.encode(obj[k]);
      }
      return this;
    }
    throw new TypeError(`cannot msgpack-encode ${typeof value}`);
  }

  /** A copy of the bytes written. @returns {Uint8Array} */
  finish() {
    return this.buf.slice(0, this.length);
  }
}

/** Encode one value (see Writer.encode) to a new Uint8Array.
 * @param {unknown} value
 * @returns {Uint8Array} */
export function encode(value) {
  return new Writer().encode(value).finish();
}

/** Turns an ArrayBuffer, a view on one, or a node Buffer into a Uint8Array without copying.
 * @param {BytesLike} data
 * @returns {Uint8Array} */
export function asBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError("expected bytes");
}

/** Bytes after the header of each multi-byte int form (peekKind said "int").
 * @type {Record<number, number>} */
const INT_SIZES = { 0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8, 0xd0: 1, 0xd1: 2, 0xd2: 4, 0xd3: 8 };

/** @type {Record<string, string>} */
const KIND_NAMES = { int: "an integer", float: "a float", nil: "nil", bin: "bin", str: "str" };

/** A cursor over msgpack bytes with strict typed reads (ProtocolError on anything else). */
export class Reader {
  /** @param {BytesLike} data */
  constructor(data) {
    this.bytes = asBytes(data);
    this.view = new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength);
    this.pos = 0;
  }

  /** Bytes not read yet. @type {number} */
  get remaining() {
    return this.bytes.length - this.pos;
  }

  /** @param {number} n */
  _need(n) {
    if (this.pos + n > this.bytes.length) throw new ProtocolError("bad_msgpack", "truncated");
  }

  /** @returns {number} */
  _u8() {
    this._need(1);
    return this.bytes[this.pos++];
  }

  /** The next byte, not consumed. @returns {number} */
  peek() {
    this._need(1);
    return this.bytes[this.pos];
  }

  /** The kind of the next value: int, float, nil, bool, str, bin, array, map, ext.
   * @returns {MsgpackKind} */
  peekKind() {
    const b = this.peek();
    if (b <= 0x7f || b >= 0xe0) return "int";
    if (b <= 0x8f) return "map";
    if (b <= 0x9f) return "array";
    if (b <= 0xbf) return "str";
    switch (b) {
      case 0xc0:
        return "nil";
      case 0xc2:
      case 0xc3:
        return "bool";
      case 0xc4:
      case 0xc5:
      case 0xc6:
        return "bin";
      case 0xca:
      case 0xcb:
        return "float";
      case 0xcc:
      case 0xcd:
      case 0xce:
      case 0xcf:
      case 0xd0:
      case 0xd1:
      case 0xd2:
      case 0xd3:
        return "int";
      case 0xd9:
      case 0xda:
      case 0xdb:
        return "str";
      case 0xdc:
      case 0xdd:
        return "array";
      case 0xde:
      case 0xdf:
        return "map";
      case 0xc1:
        return "invalid";
      default:
        return "ext";
    }
  }

  /** @param {MsgpackKind} kind @param {string} what */
  _expect(kind, what) {
    const got = this.peekKind();
    if (got !== kind) {
      throw new ProtocolError("bad_field", `${what} must be ${KIND_NAMES[kind] || kind}, got ${got}`);
    }
  }

  /** An integer (any msgpack int form) in [lo, hi]; returned as a Number.
   * @param {string} [what] the field's name for errors
   * @param {number} [lo]
   * @param {number} [hi]
   * @returns {number} */
  int(what = "value", lo = -Number.MAX_SAFE_INTEGER, hi = Number.MAX_SAFE_INTEGER) {
    this._expect("int", what);
    const b = this._u8();
    let v;
    if (b <= 0x7f) v = b;
    else if (b >= 0xe0) v = b - 0x100;
    else {
      const size = INT_SIZES[b];
      this._need(size);
      const p = this.pos;
      const dv = this.view;
      switch (b) {
        case 0xcc:
          v = dv.getUint8(p);
          break;
        case 0xcd:
          v = dv.getUint16(p);
          break;
        case 0xce:
          v = dv.getUint32(p);
          break;
        case 0xcf: {
          const big = dv.getBigUint64(p);
          v = big > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(big);
          break;
        }
        case 0xd0:
          v = dv.getInt8(p);
          break;
        case 0xd1:
          v = dv.getInt16(p);
          break;
        case 0xd2:
          v = dv.getInt32(p);
          break;
        default: {
          const big = dv.getBigInt64(p);
          v =
            big > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity
            : big < -BigInt(Number.MAX_SAFE_INTEGER) ? -Infinity
            : Number(big);
        }
      }
      this.pos += size;
    }
    if (!(v >= lo && v <= hi)) {
      throw new ProtocolError("bad_field", `${what} must be an integer in [${lo}, ${hi}]`);
    }
    return v;
  }

  /** nil (returned as null) or an integer in [lo, hi].
   * @param {string} what @param {number} lo @param {number} hi
   * @returns {number | null} */
  intOrNil(what, lo, hi) {
    if (this.peek() === 0xc0) {
      this.pos++;
      return null;
    }
    return this.int(what, lo, hi);
  }

  /** A finite number: msgpack int or float.
   * @param {string} [what]
   * @returns {number} */
  number(what = "value") {
    const kind = this.peekKind();
    let v;
    if (kind === "int") v = this.int(what);
    else if (kind === "float") {
      const b = this._u8();
      if (b === 0xca) {
        this._need(4);
        v = this.view.getFloat32(this.pos);
        this.pos += 4;
      } else {
        this._need(8);
        v = this.view.getFloat64(this.pos);
        this.pos += 8;
      }
    } else throw new ProtocolError("bad_field", `${what} must be a number, got ${kind}`);
    if (!Number.isFinite(v)) throw new ProtocolError("bad_field", `${what} must be a finite number`);
    return v;
  }

  /** An array header; returns the element count (checked against [lo, hi]).
   * @param {string} [what] @param {number} [lo] @param {number} [hi]
   * @returns {number} */
  array(what = "value", lo = 0, hi = 0xffffffff) {
    this._expect("array", what);
    const b = this._u8();
    let n;
    if (b <= 0x9f) n = b & 0x0f;
    else if (b === 0xdc) {
      this._need(2);
      n = this.view.getUint16(this.pos);
      this.pos += 2;
    } else {
      this._need(4);
      n = this.view.getUint32(this.pos);
      this.pos += 4;
    }
    if (n < lo || n > hi) {
      const want = lo === hi ? `${lo}` : `${lo}..${hi}`;
      throw new ProtocolError("bad_shape", `${what} must be an array of ${want}, got ${n}`);
    }
    return n;
  }

  /** The length that follows header byte b: in b itself (small), or 1, 2 or 4 bytes.
   * @param {number} b
   * @param {{ base: number, mask: number } | null} small
   * @param {number} b8 @param {number} b16 @param {number} b32
   * @returns {number} */
  _len(b, small, b8, b16, b32) {
    if (small !== null && (b & ~small.mask) === small.base) return b & small.mask;
    let size;
    if (b === b8) size = 1;
    else if (b === b16) size = 2;
    else if (b === b32) size = 4;
    else throw new ProtocolError("bad_msgpack", `unexpected header byte 0x${b.toString(16)}`);
    this._need(size);
    const n = size === 1 ? this.view.getUint8(this.pos) : size === 2 ? this.view.getUint16(this.pos) : this.view.getUint32(this.pos);
    this.pos += size;
    return n;
  }

  /** A bin (bin8/16/32) of at most maxLen bytes; returns a Uint8Array view (no copy).
   * @param {string} [what] @param {number} [maxLen]
   * @returns {Uint8Array} */
  bin(what = "value", maxLen = 0xffffffff) {
    this._expect("bin", what);
    const n = this._len(this._u8(), null, 0xc4, 0xc5, 0xc6);
    if (n > maxLen) throw new ProtocolError("bad_length", `${what}: bin of ${n} bytes`);
    this._need(n);
    const out = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** A UTF-8 str of at most maxLen bytes.
   * @param {string} [what] @param {number} [maxLen]
   * @returns {string} */
  str(what = "value", maxLen = 0xffffffff) {
    this._expect("str", what);
    const n = this._len(this._u8(), { base: 0xa0, mask: 0x1f }, 0xd9, 0xda, 0xdb);
    if (n > maxLen) throw new ProtocolError("bad_length", `${what}: str of ${n} bytes`);
    this._need(n);
    let s;
    try {
      s = TEXT_DECODER.decode(this.bytes.subarray(this.pos, this.pos + n));
    } catch {
      throw new ProtocolError("bad_msgpack", `${what}: invalid UTF-8`);
    }
    this.pos += n;
    return s;
  }

  /** Any value, bounded: ints and floats as Numbers, bin as Uint8Array, str as string,
   * arrays as arrays, maps as plain objects (keys must be str or int). No ext types.
   * @param {DecodeLimits} [limits]
   * @param {number} [depth]
   * @returns {MsgpackValue} */
  any(limits = DEFAULT_LIMITS, depth = 0) {
    if (depth > limits.maxDepth) throw new ProtocolError("bad_msgpack", "nested too deep");
    const kind = this.peekKind();
    switch (kind) {
      case "int":
        return this.int();
      case "float":
        return this.number();
      case "nil":
        this.pos++;
        return null;
      case "bool":
        return this._u8() === 0xc3;
      case "bin":
        return this.bin("value", limits.maxBin);
      case "str":
        return this.str("value", limits.maxStr);
      case "array": {
        const n = this.array("value", 0, limits.maxArray);
        const out = new Array(n);
        for (let i = 0; i < n; i++) out[i] = this.any(limits, depth + 1);
        return out;
      }
      case "map": {
        const b = this._u8();
        const n = this._len(b, { base: 0x80, mask: 0x0f }, -1, 0xde, 0xdf);
        if (n > limits.maxMap) throw new ProtocolError("bad_msgpack", `map of ${n} entries`);
        /** @type {MsgpackMap} */
        const out = {};
        for (let i = 0; i < n; i++) {
          const k = this.peekKind();
          if (k !== "str" && k !== "int") throw new ProtocolError("bad_msgpack", "map key type");
          const key = /** @type {string | number} */ (this.any(limits, depth + 1));
          out[key] = this.any(limits, depth + 1);
        }
        return out;
      }
      default:
        throw new ProtocolError("bad_msgpack", `unsupported type ${kind}`);
    }
  }

  /** Throws unless every byte has been consumed. @returns {void} */
  end() {
    if (this.pos !== this.bytes.length) {
      throw new ProtocolError("bad_msgpack", `${this.bytes.length - this.pos} trailing bytes`);
    }
  }
}

/** @type {Readonly<DecodeLimits>} */
export const DEFAULT_LIMITS = Object.freeze({
  maxStr: 256,
  maxBin: 1400,
  maxArray: 64,
  maxMap: 32,
  maxDepth: 16,
});

/** Decode exactly one value from data (trailing bytes are an error).
 * @param {BytesLike} data
 * @param {DecodeLimits} [limits]
 * @returns {MsgpackValue} */
export function decode(data, limits = DEFAULT_LIMITS) {
  const r = new Reader(data);
  const value = r.any(limits);
  r.end();
  return value;
}
