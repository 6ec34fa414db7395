// net/names.js: the secrets of the names this browser holds, in a storage like localStorage.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { lastName, MAX_NAMES, NAMES_KEY, nameKey, remember, secretFor } from "../src/net/names.js";

class MemoryStorage {
  constructor() {
    this.items = new Map();
  }
  getItem(key) {
    return this.items.has(key) ? this.items.get(key) : null;
  }
  setItem(key, value) {
    this.items.set(key, String(value));
  }
}

class BrokenStorage {
  getItem() {
    throw new Error("denied");
  }
  setItem() {
    throw new Error("denied");
  }
}

const SECRET = "s".repeat(43);

describe("names", () => {
  it("keeps a new name's secret and finds it ignoring case, width and outer spaces", () => {
    const s = new MemoryStorage();
    assert.equal(secretFor(s, "Alice"), null);
    assert.equal(lastName(s), "");
    assert.ok(remember(s, "Alice", SECRET, 1));
    for (const typed of ["Alice", "alice", " ALICE ", "Ａｌｉｃｅ"]) assert.equal(secretFor(s, typed), SECRET);
    assert.equal(secretFor(s, "alicia"), null);
    assert.equal(lastName(s), "Alice");
    assert.equal(nameKey("  갤러리  짱 "), "갤러리 짱");
  });

  it("a join without a secret in the answer (a name taken back) keeps the held secret", () => {
    const s = new MemoryStorage();
    remember(s, "kim", SECRET, 1);
    remember(s, "kim", null, 2);
    assert.equal(secretFor(s, "kim"), SECRET);
    remember(s, "kim", "t".repeat(43), 3); // a new secret (the server made the name again)
    assert.equal(secretFor(s, "kim"), "t".repeat(43));
    remember(s, "nobody", null, 4); // nothing to keep: no entry, but the last name
    assert.equal(secretFor(s, "nobody"), null);
    assert.equal(lastName(s), "nobody");
  });

  it("keeps at most MAX_NAMES, dropping the least recently used", () => {
    const s = new MemoryStorage();
    for (let i = 0; i <= MAX_NAMES; i++) remember(s, `p${i}`, SECRET, i);
    remember(s, "p0", null, 1000); // not kept any more: it was the oldest when p20 came
    assert.equal(secretFor(s, "p0"), null);
    assert.equal(secretFor(s, "p1"), SECRET);
    assert.equal(Object.keys(JSON.parse(s.getItem(NAMES_KEY)).names).length, MAX_NAMES);
  });

  it("garbage or a broken storage is an empty one", () => {
    const s = new MemoryStorage();
    for (const junk of ["not json", "[1]", "null", '{"names": 5}', '{"names": {"a": {"secret": 5}}}']) {
      s.setItem(NAMES_KEY, junk);
      assert.equal(secretFor(s, "a"), null);
      assert.ok(remember(s, "a", SECRET, 1));
      assert.equal(secretFor(s, "a"), SECRET);
    }
    const broken = new BrokenStorage();
    assert.equal(secretFor(broken, "a"), null);
    assert.equal(lastName(broken), "");
    assert.equal(remember(broken, "a", SECRET), false);
  });
});
