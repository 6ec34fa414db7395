// The worldserver native protocol in JavaScript (protocol/SPEC.md), usable from node and
// the browser: packets, the link layer, messages, the snapshot decoder, quantization and the
// sans-IO client connection.

export * from "./connection.js";
export * from "./errors.js";
export * from "./link.js";
export * from "./messages.js";
export * as msgpack from "./msgpack.js";
export * as packets from "./packets.js";
export * from "./quantize.js";
export * from "./snapshot.js";
