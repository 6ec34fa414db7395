// Shared helpers of the node tests: the repository's protocol vectors, read with big
// integers (64-bit nonces) kept exact, and hex conversion.

import { readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const VECTORS_DIR = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "protocol", "vectors");

/** JSON.parse, but integers of 16 digits or more become strings (they may exceed 2^53). */
export function parseJsonExact(text) {
  return JSON.parse(text.replace(/([:[,]\s*)(-?\d{16,})(?=\s*[,\]}])/g, '$1"$2"'));
}

export function loadVector(name) {
  return parseJsonExact(readFileSync(join(VECTORS_DIR, name), "utf8"));
}

export function snapshotVectorNames() {
  return readdirSync(VECTORS_DIR)
    .filter((f) => f.startsWith("snapshot_") && f.endsWith(".json"))
    .sort();
}

export function hex(bytes) {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}

export function unhex(s) {
  return new Uint8Array(Buffer.from(s, "hex"));
}
