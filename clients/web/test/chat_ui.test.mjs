// The chat panel's and speech bubbles' pure helpers (typing line, image URLs, bubble text),
// and a check of the chat sources: no HTML parsing APIs anywhere (text goes in with
// textContent only).

import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";

import { bubbleText } from "../src/chat/bubbles.js";
import { imageUrl, typingText } from "../src/chat/panel.js";

const CHAT_SRC = join(dirname(fileURLToPath(import.meta.url)), "..", "src", "chat");

describe("chat panel helpers", () => {
  it("says who is typing", () => {
    assert.equal(typingText([]), "");
    assert.equal(typingText(["bob"]), "bob is typing…");
    assert.equal(typingText(["bob", "carol"]), "bob and carol are typing…");
    assert.equal(typingText(["a", "b", "c"]), "a, b and c are typing…");
    assert.equal(typingText(["a", "b", "c", "d", "e"]), "a, b and 3 others are typing…");
  });

  it("builds image URLs only from plain ids", () => {
    assert.equal(imageUrl("AbCdEfGhIjKlMnOpQrSt_-"), "/api/chat/images/AbCdEfGhIjKlMnOpQrSt_-");
    assert.equal(imageUrl({ id: "abc123" }), "/api/chat/images/abc123");
    assert.equal(imageUrl(42), "/api/chat/images/42");
    for (const bad of ["../../etc/passwd", "x\" onerror=\"alert(1)", "javascript:alert(1)", "", null, {}, "a/b", "a?b"]) {
      assert.equal(imageUrl(bad), null, String(bad));
    }
  });
});

describe("speech bubble text", () => {
  it("is the message text, shortened; an image without caption says so", () => {
    assert.equal(bubbleText({ kind: "text", text: "  hello\n  world " }), "hello world");
    assert.equal(bubbleText({ kind: "question", text: "where?" }), "where?");
    assert.equal(bubbleText({ kind: "image", text: "" }), "[image]");
    assert.equal(bubbleText({ kind: "image", text: "my cat" }), "my cat");
    const long = bubbleText({ kind: "text", text: "x".repeat(500) });
    assert.equal(long.length, 140);
    assert.ok(long.endsWith("…"));
    const markup = '<img src=x onerror="alert(1)">';
    assert.equal(bubbleText({ kind: "text", text: markup }), markup, "markup stays text");
  });
});

describe("chat sources", () => {
  it("never parse HTML (textContent only)", () => {
    const files = readdirSync(CHAT_SRC).filter((f) => f.endsWith(".js"));
    assert.ok(files.length >= 4, files.join(","));
    for (const f of files) {
      const src = readFileSync(join(CHAT_SRC, f), "utf8");
      for (const api of ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "createContextualFragment", "DOMParser", "srcdoc", "eval("]) {
        assert.equal(src.includes(api), false, `${f} uses ${api}`);
      }
    }
  });
});
