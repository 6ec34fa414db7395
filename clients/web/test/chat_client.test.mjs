// The chat client (src/chat/client.js) against a fake socket the test plays the server on,
// with a manual clock: frame handling, request/reply, dedupe by message id, `since`
// bookkeeping across reconnects, the typing throttle, the outbox, history, room events.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { ChatClient, ChatError, chatSocketUrl } from "../src/chat/client.js";

class FakeSocket {
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = []; // parsed frames the client sent
    this.closed = false;
    this.onopen = null;
    this.onmessage = null;
    this.onclose = null;
    this.onerror = null;
  }

  send(text) {
    if (this.readyState !== 1) throw new Error("not open");
    this.sent.push(JSON.parse(text));
  }

  close() {
    this.closed = true;
    this.readyState = 3;
  }

  // --- the test's side

  open() {
    this.readyState = 1;
    if (this.onopen) this.onopen({});
  }

  /** Sends a frame to the client (an object, JSON-encoded, or raw text). */
  push(frame) {
    if (this.onmessage) this.onmessage({ data: typeof frame === "string" ? frame : JSON.stringify(frame) });
  }

  /** The server side drops the connection. */
  drop(code = 1006, reason = "") {
    this.readyState = 3;
    if (this.onclose) this.onclose({ code, reason });
  }

  /** The frames sent with op `op`. */
  ops(op) {
    return this.sent.filter((f) => f.op === op);
  }

  last(op) {
    const l = this.ops(op);
    return l[l.length - 1];
  }

  reply(request, fields = {}) {
    this.push({ re: request.id, ok: true, ...fields });
  }

  fail(request, code, message = code, extra = {}) {
    this.push({ re: request.id, ok: false, error: { code, message, ...extra } });
  }
}

class FakeClock {
  constructor() {
    this.t = 1_000_000;
    this.timers = [];
    this.seq = 0;
    this.delays = []; // every delay asked for, in order
  }

  now() {
    return this.t;
  }

  setTimeout(fn, ms) {
    const id = ++this.seq;
    this.delays.push(ms);
    this.timers.push({ id, at: this.t + ms, fn });
    return id;
  }

  clearTimeout(id) {
    this.timers = this.timers.filter((x) => x.id !== id);
  }

  /** Moves the clock on by ms, running the timers that fall due, in order. */
  advance(ms) {
    const end = this.t + ms;
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at || a.id - b.id);
      const next = this.timers[0];
      if (!next || next.at > end) break;
      this.timers.shift();
      this.t = next.at;
      next.fn();
    }
    this.t = end;
  }
}

/** Lets pending promise callbacks run. */
const flush = async () => {
  for (let i = 0; i < 10; i++) await Promise.resolve();
};

function makeClient({ token = "tok" } = {}) {
  const clock = new FakeClock();
  const sockets = [];
  const client = new ChatClient({
    url: "ws://test/ws/chat",
    token,
    openSocket: (url) => {
      const s = new FakeSocket(url);
      sockets.push(s);
      return s;
    },
    timers: { setTimeout: (fn, ms) => clock.setTimeout(fn, ms), clearTimeout: (id) => clock.clearTimeout(id) },
    now: () => clock.now(),
    random: () => 0.5, // no jitter: delays are exactly the backoff
  });
  const events = [];
  for (const ev of ["state", "rooms", "messages", "typing", "members", "invited", "removed", "error"]) {
    client.on(ev, (...args) => events.push([ev, ...args]));
  }
  return { client, clock, sockets, events, socket: () => sockets[sockets.length - 1] };
}

const msg = (id, author = "bob", text = `m${id}`, extra = {}) => ({ id, ts: 1700000000 + id, author, kind: "text", text, ...extra });

/**
 * A hello reply as the server sends it: the rooms visible to the user (`joined` or not), each
 * joined one with its recent history (or what was missed after `since`) and `more`.
 */
function helloReply({ history = [], more = false, team = [], teamMore = false, rooms = null, user = "alice" } = {}) {
  return {
    user,
    moderator: false,
    entity_id: 65537,
    public_room: 1,
    typing_ttl: 5,
    limits: { max_message_chars: 2000, rate: 2, burst: 10, max_image_bytes: 2000000 },
    rooms: rooms || [
      { id: 1, name: "lobby", owner: "server", private: false, joined: true, public: true, messages: history, more },
      { id: 7, name: "team", owner: "alice", private: true, joined: true, messages: team, more: teamMore },
      { id: 8, name: "open house", owner: "dora", private: false, joined: false },
    ],
  };
}

/** Opens the client's newest socket, answers its hello; returns the socket. */
async function hello(h, reply = {}) {
  const s = h.socket();
  s.open();
  const f = s.sent[0];
  assert.equal(f.op, "hello");
  s.reply(f, helloReply(reply));
  await flush();
  return s;
}

/** Answers every unanswered msg.history / msg.since request with `messages` (default none). */
async function answerCatchUp(s, messages = {}) {
  s.answered = s.answered || new Set();
  for (let round = 0; round < 5; round++) {
    const open = s.sent.filter((f) => (f.op === "msg.history" || f.op === "msg.since") && !s.answered.has(f.id));
    if (!open.length) break;
    for (const f of open) {
      s.answered.add(f.id);
      s.reply(f, { messages: messages[f.room] || [] });
    }
    await flush();
  }
}

async function readyClient(reply = {}) {
  const h = makeClient();
  h.client.start();
  const s = await hello(h, reply);
  await answerCatchUp(s);
  return { ...h, s };
}

const ids = (client, room = 1) => client.getRoom(room).messages.map((m) => m.id);

describe("chat client: connection and hello", () => {
  it("builds the socket URL from the page origin", () => {
    assert.equal(chatSocketUrl("http://127.0.0.1:8080"), "ws://127.0.0.1:8080/ws/chat");
    assert.equal(chatSocketUrl("https://example.org/"), "wss://example.org/ws/chat");
  });

  it("sends hello with the token first and becomes ready with rooms and history", async () => {
    const h = makeClient({ token: "secret-token" });
    h.client.start();
    assert.equal(h.client.state, "connecting");
    const s = h.socket();
    assert.equal(s.url, "ws://test/ws/chat");
    assert.equal(s.sent.length, 0, "nothing before the socket opens");
    s.open();
    assert.equal(s.sent.length, 1);
    const f = s.sent[0];
    assert.deepEqual(Object.keys(f).sort(), ["id", "op", "token"]);
    assert.equal(f.op, "hello");
    assert.equal(f.token, "secret-token");
    assert.equal(h.client.ready, false);
    s.reply(f, helloReply({ history: [msg(3), msg(1), msg(2, "alice")] }));
    await flush();
    assert.equal(h.client.ready, true);
    assert.equal(h.client.user, "alice");
    assert.equal(h.client.publicRoom, "1");
    assert.deepEqual(ids(h.client), [1, 2, 3], "history sorted by id");
    assert.deepEqual(
      h.client.roomList().map((r) => [r.name, r.private, r.public]),
      [["lobby", false, true], ["team", true, false]],
    );
    assert.equal(h.client.getRoom("team").key, "7", "rooms found by name too");
    assert.deepEqual(h.client.availableRooms().map((r) => r.name), ["open house"], "a public room not joined");
    assert.equal(h.client.entityId, 65537);
    assert.equal(h.client.limits.max_message_chars, 2000);
    // the history came with the reply: nothing more to ask for
    assert.equal(s.ops("msg.history").length + s.ops("msg.since").length, 0);
    assert.equal(h.client.getRoom(1).complete, true, "more: false");
    assert.equal(h.client.getRoom(1).sinceId, 3);
  });

  it("asks for a joined room's history when the hello reply had none for it", async () => {
    const h = makeClient();
    h.client.start();
    const rooms = helloReply().rooms;
    delete rooms[1].messages; // e.g. beyond the rooms a hello reply fills
    const s = await hello(h, { rooms });
    const f = s.last("msg.history");
    assert.equal(f.room, 7);
    s.reply(f, { room: 7, messages: [msg(40, "alice")], more: true });
    await flush();
    assert.deepEqual(ids(h.client, 7), [40]);
    assert.equal(h.client.getRoom(7).complete, false);
    assert.equal(h.client.getRoom(7).sinceId, 40);
  });

  it("ignores frames that are not JSON objects and replies nobody waits for", async () => {
    const { client, s } = await readyClient();
    s.push("not json");
    s.push("42");
    s.push({ re: 999, ok: true });
    s.push({ ev: "nonsense" });
    assert.equal(client.ready, true);
  });

  it("reconnects with exponential backoff, reset after a successful hello", async () => {
    const h = makeClient();
    h.client.start();
    h.socket().drop();
    assert.equal(h.client.state, "reconnecting");
    const waits = [];
    for (let i = 0; i < 7; i++) {
      const before = h.sockets.length;
      const delay = h.clock.timers.map((t) => t.at - h.clock.t).sort((a, b) => a - b)[0];
      waits.push(delay);
      h.clock.advance(delay);
      assert.equal(h.sockets.length, before + 1, "a new socket after the delay");
      h.socket().drop();
    }
    assert.deepEqual(waits, [500, 1000, 2000, 4000, 8000, 10000, 10000]);
    h.clock.advance(10000);
    await hello(h);
    assert.equal(h.client.ready, true);
    h.socket().drop();
    const delay = h.clock.timers.map((t) => t.at - h.clock.t).sort((a, b) => a - b)[0];
    assert.equal(delay, 500, "backoff starts over once connected");
  });

  it("a refused hello shows the error and tries again later", async () => {
    const h = makeClient();
    h.client.start();
    const s = h.socket();
    s.open();
    s.fail(s.sent[0], "unauthorized", "unknown or expired join token");
    await flush();
    assert.equal(h.client.state, "reconnecting");
    assert.ok(h.events.some(([e, err]) => e === "error" && err.code === "unauthorized"));
    assert.equal(s.closed, true);
    h.clock.advance(500);
    assert.equal(h.sockets.length, 2);
  });

  it("requests get their own reply by id; errors become ChatError with retry_after", async () => {
    const { client, s } = await readyClient();
    const p1 = client.search(1, "cats");
    const p2 = client.members(1);
    const [q1, q2] = [s.last("msg.search"), s.last("room.members")];
    assert.notEqual(q1.id, q2.id);
    assert.deepEqual({ room: q1.room, query: q1.query }, { room: 1, query: "cats" });
    s.reply(q2, { members: [{ user: "bob", online: true }, { user: "carol", online: false }] });
    s.fail(q1, "rate_limited", "slow down", { retry_after: 1.5 });
    assert.deepEqual(await p2, [{ user: "bob", online: true }, { user: "carol", online: false }]);
    await assert.rejects(p1, (e) => e instanceof ChatError && e.code === "rate_limited" && e.retryAfter === 1.5);
  });

  it("pending requests fail with 'disconnected' when the socket drops, and time out", async () => {
    const { client, s, clock } = await readyClient();
    const p = client.search(1, "x");
    s.drop();
    await assert.rejects(p, (e) => e.code === "disconnected");
    clock.advance(500);
    const s2 = await hello({ socket: () => client.ws });
    await answerCatchUp(s2);
    const q = client.members(1);
    clock.advance(15000);
    await assert.rejects(q, (e) => e.code === "timeout");
  });
});

describe("chat client: dedupe and order", () => {
  it("keeps one copy of each message, in id order, whatever the source", async () => {
    const { client, s, events } = await readyClient({ history: [msg(10), msg(11)] });
    s.push({ ev: "message", room: 1, message: msg(13) });
    s.push({ ev: "message", room: 1, message: msg(12) }); // late
    s.push({ ev: "message", room: 1, message: msg(11) }); // again
    s.push({ ev: "message", room: 1, message: msg(13) });
    assert.deepEqual(ids(client), [10, 11, 12, 13]);
    const live = events.filter(([e, , , info]) => e === "messages" && info.live).map(([, , added]) => added.map((m) => m.id));
    assert.deepEqual(live, [[13], [12]], "only new messages are announced");
    assert.equal(client.getRoom(1).unread, 2);
  });

  it("our own message: the send reply and the broadcast make one message", async () => {
    const { client, s } = await readyClient();
    const p = client.send(1, { text: "hi all" });
    const f = s.last("msg.send");
    assert.equal(f.room, 1);
    assert.equal(f.kind, "text");
    assert.equal(f.text, "hi all");
    assert.equal(typeof f.client_id, "string");
    const stored = msg(20, "alice", "hi all", { entity_id: 65537, client_id: f.client_id });
    s.push({ ev: "message", room: 1, message: stored });
    s.reply(f, { message: stored });
    const m = await p;
    assert.equal(m.id, 20);
    assert.deepEqual(ids(client), [20]);
    assert.equal(client.getRoom(1).messages[0].entity_id, 65537);
    assert.equal(client.getRoom(1).unread, 0, "own messages are not unread");
    assert.deepEqual(client.outbox(1), []);
  });

  it("stores text as given (markup is data, not HTML)", async () => {
    const { client, s } = await readyClient();
    const evil = '<img src=x onerror="alert(1)"><b>bold</b>';
    s.push({ ev: "message", room: 1, message: msg(5, "bob", evil) });
    assert.equal(client.getRoom(1).messages[0].text, evil);
  });

  it("message.deleted removes and message.answered marks", async () => {
    const { client, s } = await readyClient({ history: [msg(1), msg(2, "bob", "why?", { kind: "question" })] });
    s.push({ ev: "message.answered", room: 1, message: 2 });
    assert.equal(client.getRoom(1).byId.get("2").answered, true);
    s.push({ ev: "message.deleted", room: 1, message: 1 });
    assert.deepEqual(ids(client), [2]);
    s.push({ ev: "message", room: 1, message: msg(2, "bob", "why?", { kind: "question", answered: true }) });
    assert.deepEqual(ids(client), [2]);
  });
});

describe("chat client: since across reconnects", () => {
  it("asks for what came after the newest message it has, and dedupes the overlap", async () => {
    const { client, s, clock } = await readyClient({ history: [msg(1), msg(2), msg(3)] });
    s.push({ ev: "message", room: 1, message: msg(4) });
    s.drop();
    assert.equal(client.state, "reconnecting");
    clock.advance(500);
    const s2 = client.ws;
    s2.open();
    const h2 = s2.sent[0];
    assert.equal(h2.op, "hello");
    assert.deepEqual(h2.since, { 1: 4 }, "since: the newest id of each joined room that has messages");
    // the reply holds what was missed (5, 6; a repeated 4 is harmless); then a live 7
    s2.reply(h2, helloReply({ history: [msg(4), msg(5), msg(6)] }));
    await flush();
    s2.push({ ev: "message", room: 1, message: msg(7) });
    s2.push({ ev: "message", room: 1, message: msg(6) });
    assert.equal(s2.ops("msg.since").length, 0, "more: false, nothing to page");
    assert.deepEqual(ids(client), [1, 2, 3, 4, 5, 6, 7]);
    assert.equal(client.getRoom(1).sinceId, 7);
  });

  it("does not move `since` past a gap: live messages during catch-up wait for it", async () => {
    const { client, s, clock } = await readyClient({ history: [msg(1), msg(2)] });
    s.drop();
    clock.advance(500);
    let sock = client.ws;
    sock.open();
    assert.deepEqual(sock.sent[0].since, { 1: 2 });
    sock.reply(sock.sent[0], helloReply({ history: [msg(3), msg(4)], more: true })); // 5.. to page
    await flush();
    sock.push({ ev: "message", room: 1, message: msg(9) }); // 5..8 not here yet
    const since = sock.last("msg.since");
    assert.deepEqual([since.room, since.after], [1, 4], "pages on from the newest of the reply");
    assert.equal(client.getRoom(1).sinceId, 2);
    sock.drop(); // before the msg.since answer
    clock.advance(1000);
    sock = client.ws;
    sock.open();
    assert.deepEqual(sock.sent[0].since, { 1: 2 }, "still asks from 2, not from 9");
    sock.reply(sock.sent[0], helloReply({ history: [3, 4, 5, 6, 7, 8, 9].map((i) => msg(i)) }));
    await flush();
    assert.deepEqual(ids(client), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.equal(client.getRoom(1).sinceId, 9);
    sock.push({ ev: "message", room: 1, message: msg(10) });
    assert.equal(client.getRoom(1).sinceId, 10, "synced again: live messages move it");
  });

  it("pages msg.since while the server says there is more", async () => {
    const { client, s, clock } = await readyClient({ history: [msg(1)] });
    s.drop();
    clock.advance(500);
    const sock = client.ws;
    sock.open();
    sock.reply(sock.sent[0], helloReply({ history: [msg(2)], more: true }));
    await flush();
    let since = sock.last("msg.since");
    assert.deepEqual([since.room, since.after, since.limit], [1, 2, 500]);
    sock.reply(since, { room: 1, messages: [msg(3), msg(4)], more: true });
    await flush();
    since = sock.last("msg.since");
    assert.equal(since.after, 4);
    sock.reply(since, { room: 1, messages: [msg(5)], more: false });
    await flush();
    assert.equal(sock.ops("msg.since").length, 2);
    assert.deepEqual(ids(client), [1, 2, 3, 4, 5]);
    assert.equal(client.getRoom(1).sinceId, 5);
  });

  it("a room the server no longer lists after a reconnect is dropped", async () => {
    const { client, s, clock, events } = await readyClient();
    s.drop();
    clock.advance(500);
    const sock = client.ws;
    sock.open();
    sock.reply(sock.sent[0], helloReply({ rooms: [helloReply().rooms[0]] }));
    await flush();
    assert.equal(client.getRoom(7), null);
    assert.ok(events.some(([e, key]) => e === "removed" && key === "7"));
  });
});

describe("chat client: typing", () => {
  it("sends at most one typing frame per second while typing, and active:false once", async () => {
    const { client, s, clock } = await readyClient();
    const typing = () => s.ops("typing");
    client.typingInput(1);
    for (const dt of [100, 300, 400, 199]) {
      clock.advance(dt);
      client.typingInput(1);
    }
    assert.equal(typing().length, 1, "999 ms of keystrokes: one frame");
    assert.deepEqual({ room: typing()[0].room, active: typing()[0].active }, { room: 1, active: true });
    clock.advance(1);
    client.typingInput(1);
    assert.equal(typing().length, 2, "the next second: one more");
    clock.advance(500);
    client.typingInput(1);
    assert.equal(typing().length, 2);
    client.typingStop(1);
    assert.equal(typing().length, 3);
    assert.equal(typing()[2].active, false);
    client.typingStop(1);
    assert.equal(typing().length, 3, "no second active:false");
    client.typingInput(1);
    assert.equal(typing().length, 4, "typing again right after a stop is said at once");
    assert.equal(typing()[3].active, true);
  });

  it("sending a message ends typing; so does a pause", async () => {
    const { client, s, clock } = await readyClient();
    client.typingInput(1);
    client.send(1, { text: "x" });
    const frames = s.sent.filter((f) => f.op === "typing" || f.op === "msg.send").map((f) => `${f.op}:${f.active ?? ""}`);
    assert.deepEqual(frames, ["typing:true", "typing:false", "msg.send:"]);
    client.typingInput(1);
    clock.advance(4000);
    const last = s.last("typing");
    assert.equal(last.active, false, "idle for 4 s: active:false");
  });

  it("shows who else is typing until it expires, is renewed or they send", async () => {
    const { client, s, clock, events } = await readyClient();
    s.push({ ev: "typing", room: 1, user: "bob", active: true });
    s.push({ ev: "typing", room: 1, user: "alice", active: true }); // ourselves: ignored
    s.push({ ev: "typing", room: 1, user: "carol", active: true });
    assert.deepEqual(client.typingUsers(1), ["bob", "carol"]);
    assert.ok(events.some(([e, key]) => e === "typing" && key === "1"));
    s.push({ ev: "typing", room: 1, user: "carol", active: false });
    assert.deepEqual(client.typingUsers(1), ["bob"]);
    clock.advance(4000);
    s.push({ ev: "typing", room: 1, user: "bob", active: true }); // renewed
    clock.advance(4000);
    assert.deepEqual(client.typingUsers(1), ["bob"]);
    clock.advance(1001);
    assert.deepEqual(client.typingUsers(1), [], "expired after the ttl");
    s.push({ ev: "typing", room: 1, user: "bob", active: true });
    s.push({ ev: "message", room: 1, message: msg(1, "bob") });
    assert.deepEqual(client.typingUsers(1), [], "a message ends the typing mark");
  });
});

describe("chat client: outbox", () => {
  it("queues messages while disconnected and sends them after hello, same client_id on retry", async () => {
    const { client, s, clock } = await readyClient();
    const p1 = client.send(1, { text: "one" });
    const first = s.last("msg.send");
    s.drop(); // no answer: did the server store it? we do not know
    const p2 = client.send(1, { kind: "question", text: "two?" });
    assert.equal(client.outbox(1).length, 2);
    clock.advance(500);
    const sock = client.ws;
    sock.open();
    assert.equal(sock.ops("msg.send").length, 0, "nothing before hello is answered");
    sock.reply(sock.sent[0], helloReply());
    await flush();
    const sends = sock.ops("msg.send");
    assert.equal(sends.length, 2);
    assert.equal(sends[0].client_id, first.client_id);
    assert.equal(sends[0].text, "one");
    assert.equal(sends[1].kind, "question");
    assert.notEqual(sends[1].client_id, first.client_id);
    sock.reply(sends[0], { message: msg(5, "alice", "one") });
    sock.reply(sends[1], { message: msg(6, "alice", "two?", { kind: "question" }) });
    assert.equal((await p1).id, 5);
    assert.equal((await p2).id, 6);
    assert.deepEqual(client.outbox(1), []);
  });

  it("a refused message is rejected and leaves the outbox", async () => {
    const { client, s, events } = await readyClient();
    const p = client.send(1, { text: "x".repeat(5000) });
    s.fail(s.last("msg.send"), "too_long", "message too long");
    await assert.rejects(p, (e) => e.code === "too_long");
    assert.deepEqual(client.outbox(1), []);
    assert.ok(events.some(([e, err]) => e === "error" && err.code === "too_long"));
  });

  it("sends images by id", async () => {
    const { client, s } = await readyClient();
    client.send(1, { kind: "image", image: "AbCdEfGhIjKlMnOpQrStUv" });
    const f = s.last("msg.send");
    assert.equal(f.kind, "image");
    assert.equal(f.image, "AbCdEfGhIjKlMnOpQrStUv");
    assert.equal("text" in f, false);
  });
});

describe("chat client: history and search", () => {
  it("loads older pages with before= the oldest id until the start", async () => {
    const { client, s, events } = await readyClient({ history: [msg(100), msg(101)], more: true });
    const p = client.loadOlder(1);
    assert.equal(client.loadOlder(1), p, "one request at a time");
    const f = s.last("msg.history");
    assert.equal(f.room, 1);
    assert.equal(f.before, 100);
    const page = [];
    for (let i = 50; i < 100; i++) page.push(msg(i));
    s.reply(f, { room: 1, messages: page.reverse(), more: true });
    assert.equal(await p, 50);
    assert.equal(ids(client)[0], 50);
    assert.equal(client.getRoom(1).complete, false);
    const older = events.filter(([e, , , info]) => e === "messages" && info.older);
    assert.equal(older.length, 1);
    const p2 = client.loadOlder(1);
    s.reply(s.last("msg.history"), { room: 1, messages: [msg(48), msg(49)], more: false });
    assert.equal(await p2, 2);
    assert.equal(client.getRoom(1).complete, true);
    assert.equal(await client.loadOlder(1), 0, "nothing more to ask for");
    assert.equal(client.getRoom(1).sinceId, 101, "older pages do not move since");
  });

  it("loadUntil pages back until a search result is loaded", async () => {
    const { client, s } = await readyClient({ history: [msg(100)], more: true });
    const p = client.loadUntil(1, 40);
    for (const from of [50, 40]) {
      await flush();
      const f = s.last("msg.history");
      const page = [];
      for (let i = from; i < f.before; i++) page.push(msg(i));
      s.reply(f, { room: 1, messages: page, more: true });
    }
    assert.equal(await p, true);
    assert.ok(client.getRoom(1).byId.has("40"));
  });

  it("search results are not mixed into the timeline", async () => {
    const { client, s } = await readyClient({ history: [msg(100)] });
    const p = client.search(1, "needle");
    s.reply(s.last("msg.search"), { messages: [msg(3, "bob", "a needle")] });
    const r = await p;
    assert.deepEqual(r.map((m) => [m.id, m.text]), [[3, "a needle"]]);
    assert.deepEqual(ids(client), [100]);
  });
});

describe("chat client: rooms", () => {
  it("creates a private room, invites, leaves", async () => {
    const { client, s, events } = await readyClient();
    const p = client.createRoom("secret", true);
    const f = s.last("room.create");
    assert.deepEqual({ name: f.name, private: f.private }, { name: "secret", private: true });
    s.reply(f, { room: { id: 9, name: "secret", private: true, owner: "alice" } });
    assert.equal(await p, "9");
    assert.equal(client.getRoom("secret").private, true);
    const inv = client.invite(9, "bob");
    assert.deepEqual({ room: s.last("room.invite").room, user: s.last("room.invite").user }, { room: 9, user: "bob" });
    s.reply(s.last("room.invite"));
    await inv;
    const lv = client.leaveRoom(9);
    s.reply(s.last("room.leave"));
    await lv;
    assert.equal(client.getRoom(9), null);
    assert.ok(events.some(([e, key, why]) => e === "removed" && key === "9" && why === "left"));
  });

  it("an invitation lists the room; joining brings its history; room.deleted removes it", async () => {
    const { client, s, events } = await readyClient();
    s.push({ ev: "invited", room: { id: 12, name: "book club", owner: "bob", private: true, joined: false }, by: "bob" });
    assert.ok(events.some(([e, key, by]) => e === "invited" && key === "12" && by === "bob"));
    assert.equal(client.roomList().some((r) => r.key === "12"), false, "not joined yet");
    assert.deepEqual(client.availableRooms().map((r) => [r.name, r.invited]), [["book club", true], ["open house", false]]);
    assert.equal(s.ops("room.join").length, 0, "joining is the player's choice");
    const p = client.joinRoom(12);
    const f = s.last("room.join");
    assert.equal(f.room, 12);
    s.reply(f, { room: { id: 12, name: "book club", owner: "bob", private: true, joined: true }, messages: [msg(30, "bob", "welcome")], joined: true });
    assert.equal(await p, "12");
    s.push({ ev: "message", room: 12, message: msg(31, "server", "alice joined", { kind: "notice" }) });
    assert.deepEqual(ids(client, 12), [30, 31]);
    assert.equal(client.getRoom(12).sinceId, 31);
    assert.equal(client.roomList().some((r) => r.key === "12"), true);
    s.push({ ev: "room.deleted", room: 12, by: "bob" });
    assert.equal(client.getRoom(12), null);
  });

  it("rooms.list adds new rooms and forgets deleted ones", async () => {
    const { client, s } = await readyClient();
    const p = client.listRooms();
    const rooms = helloReply().rooms.filter((r) => r.id !== 8).map(({ messages, more, ...r }) => r);
    rooms.push({ id: 20, name: "new one", owner: "eve", private: false, joined: false });
    s.reply(s.last("rooms.list"), { rooms });
    await p;
    assert.deepEqual(client.availableRooms().map((r) => r.name), ["new one"]);
    assert.deepEqual(client.roomList().map((r) => r.name), ["lobby", "team"]);
  });

  it("tracks members and presence; the public room is never dropped", async () => {
    const { client, s } = await readyClient();
    s.push({ ev: "room.member", room: 7, user: "bob", action: "join", online: true });
    s.push({ ev: "room.member", room: 7, user: "carol", action: "join", online: true });
    s.push({ ev: "presence", user: "bob", online: false });
    s.push({ ev: "room.member", room: 7, user: "carol", action: "leave", online: true });
    assert.deepEqual([...client.getRoom(7).members], [["bob", { online: false }]]);
    s.push({ ev: "room.deleted", room: 1 });
    assert.ok(client.getRoom(1), "the public room stays");
  });
});

describe("chat client: staying connected", () => {
  it("sends a keepalive (rooms.list) after 25 s without a frame", async () => {
    const { client, s, clock } = await readyClient();
    clock.advance(20000);
    const q = client.search(1, "x"); // any frame re-arms it
    s.reply(s.last("msg.search"), { room: 1, messages: [] });
    await q;
    clock.advance(24999);
    assert.equal(s.ops("rooms.list").length, 0);
    clock.advance(1);
    assert.equal(s.ops("rooms.list").length, 1);
    s.reply(s.last("rooms.list"), { rooms: helloReply().rooms });
    await flush();
    clock.advance(25000);
    assert.equal(s.ops("rooms.list").length, 2);
  });

  it("kicked (close 4001) it stops for good and shows the kick's text, not a newer login", async () => {
    const { client, s, clock, events, sockets } = await readyClient();
    s.drop(4001, "removed by the operator: spamming the gallery; banned for 10 min");
    assert.equal(client.state, "kicked");
    assert.ok(events.some(([e, err]) => e === "error" && err.code === "kicked"));
    assert.equal(client.error, "removed by the operator: spamming the gallery; banned for 10 min");
    assert.ok(!events.some(([e, err]) => e === "error" && err.code === "replaced"));
    clock.advance(600000); // the kick ended the token: no reconnect, even asked for
    assert.equal(sockets.length, 1);
    client.reconnect(0);
    clock.advance(1000);
    assert.equal(sockets.length, 1);
    assert.equal(client.state, "kicked");
  });

  it("kicked (close 4001) without a reason it still says it was removed", async () => {
    const { client, s } = await readyClient();
    s.drop(4001, "");
    assert.equal(client.state, "kicked");
    assert.equal(client.error, "removed by the server's operator");
  });

  it("closed for a newer login (4002) it stops for good and says why", async () => {
    const { client, s, clock, events, sockets } = await readyClient();
    s.drop(4002, "signed in elsewhere");
    assert.equal(client.state, "replaced");
    assert.ok(events.some(([e, err]) => e === "error" && err.code === "replaced"));
    assert.match(client.error, /signed in elsewhere/);
    clock.advance(600000);
    assert.equal(sockets.length, 1);
    client.reconnect(0);
    clock.advance(1000);
    assert.equal(sockets.length, 1);
    assert.equal(client.state, "replaced");
  });

  it("the test hook's reconnect(ms) drops the socket and comes back after ms", async () => {
    const { client, clock, sockets } = await readyClient();
    client.reconnect(3000);
    assert.equal(client.state, "reconnecting");
    clock.advance(2999);
    assert.equal(sockets.length, 1);
    clock.advance(1);
    assert.equal(sockets.length, 2);
  });
});

describe("chat client: message details", () => {
  it("leaves deleted messages out of history and uses the typing ttl of the event", async () => {
    const { client, s, clock } = await readyClient({ history: [msg(1), msg(2, "bob", "", { deleted: true }), msg(3)] });
    assert.deepEqual(ids(client), [1, 3]);
    s.push({ ev: "typing", room: 1, user: "bob", active: true, ttl: 2 });
    clock.advance(1999);
    assert.deepEqual(client.typingUsers(1), ["bob"]);
    clock.advance(1);
    assert.deepEqual(client.typingUsers(1), []);
  });

  it("keeps the fields a message travels with", async () => {
    const { client, s } = await readyClient();
    s.push({ ev: "message", room: 1, message: { id: 5, ts: 1763800000.5, author: "bob", kind: "image", image: "AbCdEfGhIjKlMnOpQrStUv", entity_id: 131073 } });
    s.push({ ev: "message", room: 1, message: { id: 6, ts: 1763800001, author: "bob", kind: "question", text: "why?", answered: false, entity_id: 131073 } });
    const [img, q] = client.getRoom(1).messages;
    assert.deepEqual([img.kind, img.image, img.text, img.entity_id], ["image", "AbCdEfGhIjKlMnOpQrStUv", "", 131073]);
    assert.deepEqual([q.kind, q.answered], ["question", false]);
    s.push({ ev: "message.answered", room: 1, message: 6, by: "mod" });
    assert.deepEqual([q.answered, q.answered_by], [true, "mod"]);
  });
});

describe("chat client: moderators", () => {
  it("presents the admin token in hello and drops a wrong one", async () => {
    const clock = new FakeClock();
    const sockets = [];
    const client = new ChatClient({
      url: "ws://test/ws/chat",
      token: "tok",
      adminToken: "not-it",
      openSocket: (url) => {
        const s = new FakeSocket(url);
        sockets.push(s);
        return s;
      },
      timers: { setTimeout: (fn, ms) => clock.setTimeout(fn, ms), clearTimeout: (id) => clock.clearTimeout(id) },
      now: () => clock.now(),
      random: () => 0.5,
    });
    client.start();
    sockets[0].open();
    const f = sockets[0].sent[0];
    assert.equal(f.admin_token, "not-it");
    sockets[0].fail(f, "forbidden", "wrong admin token");
    await flush();
    clock.advance(500);
    sockets[1].open();
    assert.equal("admin_token" in sockets[1].sent[0], false);
    sockets[1].reply(sockets[1].sent[0], helloReply());
    await flush();
    assert.equal(client.ready, true);
    assert.equal(client.moderator, false);
  });
});
