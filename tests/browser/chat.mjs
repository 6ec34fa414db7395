// Chat between two players in one headless chromium (driven by tests/test_chat_browser.py):
// A types a message into the chat input (real key presses, then Enter); B must get it in its
// panel and see it as a speech bubble over A's avatar. While A types, B shows "A is typing…"
// and A's avatar does not walk (the letters include w, a, s, d). A message that looks like
// HTML must show as text in B's panel and bubble. Then: B's chat connection drops for a
// while, A sends during the gap, and B, reconnected, has every message exactly once; an image
// uploaded by A shows as a thumbnail in B's panel; B finds a message with the search box;
// A creates a private room and invites B, who joins it from the room bar and reads there.
//
//   node tests/browser/chat.mjs --url http://127.0.0.1:PORT [--timeout SECONDS]
// Prints one JSON object (see launch.mjs); exit code 0 when everything checked out.

import { deflateSync } from "node:zlib";

import { joinGallery, launch, runScript, waitFor } from "./launch.mjs";

const chatReady = () => window.worldserverTest.chat && window.worldserverTest.chat.ready;

const selfPosition = () => {
  const t = window.worldserverTest;
  const e = t.entities().find((v) => v.id === t.selfId);
  return e ? { x: e.x, z: e.z } : null;
};

/** The panel's rendered message with this text (the last one), as B's page shows it. */
const panelMessage = (text) => {
  const items = Array.from(document.querySelectorAll("#chat .chat-items .chat-msg"));
  const el = items.reverse().find((e) => {
    const t = e.querySelector(".body .text");
    return t && t.textContent === text;
  });
  if (!el) return null;
  const body = el.querySelector(".body");
  return {
    id: el.dataset.id,
    author: el.querySelector(".author").textContent,
    text: el.querySelector(".body .text").textContent,
    body_elements: Array.from(body.querySelectorAll("*")).map((e) => e.tagName.toLowerCase()),
    classes: el.className,
  };
};

/** A small valid PNG (w x h, RGB gradient), made here so the test needs no files. */
function makePng(w, h) {
  const crcTable = new Int32Array(256).map((_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c;
  });
  const crc = (buf) => {
    let c = -1;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ -1) >>> 0;
  };
  const chunk = (type, data) => {
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    out.write(type, 4, "ascii");
    data.copy(out, 8);
    out.writeUInt32BE(crc(out.subarray(4, 8 + data.length)), 8 + data.length);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  const raw = Buffer.alloc(h * (1 + 3 * w));
  for (let y = 0; y < h; y++) {
    raw[y * (1 + 3 * w)] = 0;
    for (let x = 0; x < w; x++) {
      const o = y * (1 + 3 * w) + 1 + 3 * x;
      raw[o] = (x * 255) / w;
      raw[o + 1] = (y * 255) / h;
      raw[o + 2] = 128;
    }
  }
  const sig = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([sig, chunk("IHDR", ihdr), chunk("IDAT", deflateSync(raw)), chunk("IEND", Buffer.alloc(0))]);
}

runScript(async (args, state) => {
  if (!args.url) throw new Error("--url is required");
  state.browser = await launch();
  const browser = state.browser;
  const tag = Math.random().toString(36).slice(2, 7);
  const nameA = `alice-${tag}`;
  const nameB = `bob-${tag}`;
  const a = await joinGallery(browser, args.url, nameA, { label: "A" });
  const b = await joinGallery(browser, args.url, nameB, { label: "B" });
  await waitFor(a, chatReady, { what: "A's chat to be ready" });
  await waitFor(b, chatReady, { what: "B's chat to be ready" });
  const selfA = await a.evaluate(() => window.worldserverTest.selfId);
  const roomsB = await b.evaluate(() => window.worldserverTest.chat.rooms());
  // B sees A's avatar (bubbles attach to it).
  await waitFor(b, (id) => window.worldserverTest.entities().some((e) => e.id === id), { arg: selfA, what: "B to see A's avatar" });

  // --- A types (real key presses); B sees "A is typing…"; A's avatar stays put.
  await a.bringToFront();
  await a.click("#chat-input");
  const posBefore = await a.evaluate(selfPosition);
  const text = `hello from ${nameA}: wasd wasd!`;
  const half = Math.floor(text.length / 2);
  await a.keyboard.type(text.slice(0, half), { delay: 40 });
  let typingSeen = null;
  try {
    typingSeen = await waitFor(b, () => document.querySelector("#chat .chat-typing").textContent || null, {
      timeout: 5000,
      what: "B to show A typing",
    });
  } catch {
    typingSeen = null;
  }
  await a.keyboard.type(text.slice(half), { delay: 40 });
  await a.keyboard.press("Enter");
  const inputAfter = await a.evaluate(() => document.getElementById("chat-input").value);
  const posAfter = await a.evaluate(selfPosition);

  // --- B gets it: panel, hook, speech bubble over A's avatar.
  const got = await waitFor(
    b,
    (t) => window.worldserverTest.chat.messages().find((m) => m.text === t) || null,
    { arg: text, what: "B to receive A's message" },
  );
  const panelB = await waitFor(b, panelMessage, { arg: text, timeout: 5000, what: "B's panel to show A's message" });
  const bubble = await waitFor(
    b,
    ([id, t]) => window.worldserverTest.chat.bubbles().find((x) => x.entityId === id && x.text === t && x.attached) || null,
    { arg: [selfA, text], timeout: 8000, what: "a speech bubble over A's avatar in B's view" },
  );
  // The bubble is attached in the frame's update; its element enters the page at the next
  // frame that renders (the quality governor skips some), so wait for it.
  const bubbleDom = await waitFor(
    b,
    (t) => Array.from(document.querySelectorAll(".speech-bubble")).filter((e) => e.textContent === t).length || null,
    { arg: text, timeout: 5000, what: "the speech bubble's element in B's page" },
  ).catch(() => 0);
  const bubbleTags = bubbleDom ? null : await b.evaluate(() => window.worldserverTest.tags());
  const typingAfter = await waitFor(b, () => document.querySelector("#chat .chat-typing").textContent === "", {
    timeout: 8000,
    what: "B's typing line to clear after the message",
  }).catch(() => false);
  const ownA = await waitFor(a, (t) => window.worldserverTest.chat.messages().find((m) => m.text === t) || null, {
    arg: text,
    timeout: 5000,
    what: "A to have its own message",
  });

  // --- Holding a movement key in the chat input does not walk either (0.8 s of "d").
  await a.bringToFront();
  await a.click("#chat-input");
  const holdBefore = await a.evaluate(selfPosition);
  await a.keyboard.down("d");
  await a.waitForTimeout(800);
  await a.keyboard.up("d");
  await a.waitForTimeout(300);
  const holdAfter = await a.evaluate(selfPosition);
  const heldText = await a.evaluate(() => document.getElementById("chat-input").value);
  await a.fill("#chat-input", "");

  // --- A message that looks like HTML is text, in the panel and in the bubble.
  const evil = `<img src=x onerror="window.__pwned=1"><b>bold</b> ${tag}`;
  await a.click("#chat-input");
  await a.keyboard.type(evil);
  await a.keyboard.press("Enter");
  await waitFor(b, (t) => window.worldserverTest.chat.messages().some((m) => m.text === t), { arg: evil, what: "B to receive the HTML-looking message" });
  const evilPanel = await waitFor(b, panelMessage, { arg: evil, timeout: 5000, what: "B's panel to show the HTML-looking message" });
  const evilBubble = await waitFor(
    b,
    ([id, t]) => window.worldserverTest.chat.bubbles().find((x) => x.entityId === id && x.text === t) || null,
    { arg: [selfA, evil], timeout: 8000, what: "the HTML-looking bubble" },
  );
  await b.waitForTimeout(300); // an onerror would have fired by now
  const evilDom = await b.evaluate(() => ({
    pwned_b: window.__pwned === 1,
    imgs_in_messages: document.querySelectorAll("#chat .chat-items img:not(.chat-thumb)").length,
    bold_in_messages: document.querySelectorAll("#chat .chat-items b").length,
    elements_in_bubbles: document.querySelectorAll(".speech-bubble img, .speech-bubble b").length,
  }));
  evilDom.pwned_a = await a.evaluate(() => window.__pwned === 1);

  // --- B drops its chat connection for 3 s; A sends twice meanwhile; B catches up once.
  await b.evaluate(() => window.worldserverTest.chat.reconnect(3000));
  await waitFor(b, () => !window.worldserverTest.chat.ready, { timeout: 3000, what: "B's chat to be down" });
  const gap = [`during the gap 1 ${tag}`, `during the gap 2 ${tag}`];
  for (const t of gap) await a.evaluate((x) => window.worldserverTest.chat.send(x), t);
  await waitFor(b, chatReady, { timeout: 15000, what: "B's chat to come back" });
  await waitFor(
    b,
    (texts) => texts.every((t) => window.worldserverTest.chat.messages().some((m) => m.text === t)),
    { arg: gap, timeout: 10000, what: "B to catch up with the messages sent while it was away" },
  );
  await a.evaluate((x) => window.worldserverTest.chat.send(x), `after the gap ${tag}`);
  await waitFor(b, (t) => window.worldserverTest.chat.messages().some((m) => m.text === t), {
    arg: `after the gap ${tag}`,
    what: "B to get live messages again",
  });
  const afterGap = await b.evaluate(() => {
    const list = window.worldserverTest.chat.messages();
    const ids = list.map((m) => m.id);
    const sorted = ids.every((id, i) => i === 0 || Number(ids[i - 1]) < Number(id));
    const dom = Array.from(document.querySelectorAll("#chat .chat-items .chat-msg")).map((e) => e.dataset.id);
    return { count: ids.length, unique: new Set(ids).size, sorted, dom_count: dom.length, dom_unique: new Set(dom).size, stats: window.worldserverTest.chat.stats() };
  });

  // --- A uploads an image (file input); B shows it as a thumbnail.
  let image = null;
  try {
    await a.setInputFiles("#chat input[type=file]", { name: "gradient.png", mimeType: "image/png", buffer: makePng(64, 48) });
    const imgMsg = await waitFor(
      b,
      (author) => window.worldserverTest.chat.messages().find((m) => m.kind === "image" && m.author === author) || null,
      { arg: nameA, timeout: 15000, what: "B to receive A's image" },
    );
    const thumb = await waitFor(
      b,
      (id) => {
        const img = document.querySelector(`#chat .chat-msg[data-id="${id}"] img.chat-thumb`);
        return img && img.complete && img.naturalWidth > 0 ? { width: img.naturalWidth, height: img.naturalHeight, src: img.getAttribute("src") } : null;
      },
      { arg: String(imgMsg.id), timeout: 10000, what: "the thumbnail to load in B's panel" },
    );
    image = { message: imgMsg, thumb };
  } catch (e) {
    image = { error: e.message };
  }

  // --- B searches (search box + Enter) and jumps to a result.
  let search = null;
  try {
    await b.bringToFront();
    await b.fill("#chat .chat-search input", "gap");
    await b.press("#chat .chat-search input", "Enter");
    const results = await waitFor(
      b,
      () => {
        const r = Array.from(document.querySelectorAll("#chat .chat-results .chat-result"));
        return r.length ? r.map((e) => ({ id: e.dataset.id, text: e.querySelector(".text").textContent })) : null;
      },
      { timeout: 8000, what: "search results in B's panel" },
    );
    const wanted = results.find((r) => r.text === gap[0]);
    if (!wanted) throw new Error(`search for "gap" did not list ${JSON.stringify(gap[0])}: ${JSON.stringify(results)}`);
    await b.click(`#chat .chat-results .chat-result[data-id="${wanted.id}"]`);
    const highlighted = await waitFor(b, () => {
      const e = document.querySelector("#chat .chat-msg.highlight .body .text");
      return e ? e.textContent : null;
    }, { timeout: 5000, what: "the found message to be highlighted" });
    search = { results, wanted: wanted.text, highlighted };
  } catch (e) {
    search = { error: e.message };
  }

  // --- A creates a private room in the panel and invites B; B joins from the room bar.
  let rooms = null;
  try {
    const roomName = `secret ${tag}`;
    await a.bringToFront();
    await a.click("#chat .chat-new-room");
    await a.fill("#chat .chat-create input:not([type=checkbox])", roomName);
    await a.check("#chat .chat-create input[type=checkbox]");
    await a.click("#chat .chat-create button[type=submit]");
    await waitFor(a, (n) => window.worldserverTest.chat.rooms().some((r) => r.name === n && r.private), {
      arg: roomName,
      timeout: 8000,
      what: "A's private room",
    });
    await a.fill("#chat .chat-room-tools input", nameB);
    await a.click("#chat .chat-room-tools button[type=submit]");
    await b.bringToFront();
    const invitedSel = `#chat .chat-room.joinable.invited`;
    await waitFor(b, (sel) => Array.from(document.querySelectorAll(sel)).map((e) => e.textContent).join("|") || null, {
      arg: invitedSel,
      timeout: 8000,
      what: "B to be invited",
    });
    await b.click(invitedSel);
    await waitFor(b, (n) => window.worldserverTest.chat.rooms().some((r) => r.name === n), {
      arg: roomName,
      timeout: 8000,
      what: "B to join the private room",
    });
    await a.bringToFront();
    const secret = `for your eyes only ${tag}`;
    await a.click("#chat-input");
    await a.keyboard.type(secret);
    await a.keyboard.press("Enter");
    const inRoom = await waitFor(
      b,
      ([n, t]) => window.worldserverTest.chat.messages(n).find((m) => m.text === t) || null,
      { arg: [roomName, secret], timeout: 8000, what: "B to get the private room's message" },
    );
    const inLobby = await b.evaluate((t) => window.worldserverTest.chat.messages().some((m) => m.text === t), secret);
    rooms = {
      name: roomName,
      a: await a.evaluate(() => window.worldserverTest.chat.rooms()),
      b: await b.evaluate(() => window.worldserverTest.chat.rooms()),
      message: inRoom,
      in_lobby: inLobby,
    };
  } catch (e) {
    rooms = { error: e.message };
  }

  return {
    names: [nameA, nameB],
    self_a: selfA,
    rooms_b: roomsB,
    text,
    typing_seen: typingSeen,
    typing_cleared: typingAfter === true,
    input_after: inputAfter,
    pos_before: posBefore,
    pos_after: posAfter,
    hold_before: holdBefore,
    hold_after: holdAfter,
    held_text: heldText,
    got,
    own_a: ownA,
    panel_b: panelB,
    bubble,
    bubble_dom: bubbleDom,
    bubble_tags: bubbleTags,
    evil,
    evil_panel: evilPanel,
    evil_bubble: evilBubble,
    evil_dom: evilDom,
    after_gap: afterGap,
    image,
    search,
    rooms,
    chat_a: await a.evaluate(() => window.worldserverTest.chat.stats()),
    chat_b: await b.evaluate(() => window.worldserverTest.chat.stats()),
  };
});
