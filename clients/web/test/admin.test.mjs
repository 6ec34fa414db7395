// The dashboard's pure parts: the admin API client against a stand-in fetch (what it sends,
// how each failure is classified), the ring of status samples, the map's placement and hit
// test, and the charts' axis and formatting helpers.
import { strict as assert } from "node:assert";
import { describe, it } from "node:test";

import { AdminClient, AdminError, TOKEN_KEY, UNAUTHORIZED_TEXT, storeToken, storedToken } from "../src/admin/api.js";
import { formatBytes, formatDuration, niceMax } from "../src/admin/charts.js";
import { dotsNear, drawMap, fitFloor, floorOf, mapHeight, transportColor, TRANSPORT_COLORS } from "../src/admin/map.js";
import { SampleRing, sampleOf } from "../src/admin/samples.js";

/** A fetch that records its calls and answers with `reply(url, init)`: {status, body} or throws. */
function fakeFetch(reply) {
  const calls = [];
  const fn = async (url, init) => {
    calls.push({ url, init });
    const r = reply(url, init);
    const text = typeof r.body === "string" ? r.body : JSON.stringify(r.body);
    return new Response(text, { status: r.status, headers: { "Content-Type": "application/json" } });
  };
  return { fn, calls };
}

/** A status answer with the given figures (the rest as the server would give for an idle one). */
function status({ uptime, p50 = 1, p99 = 2, late = 0.5, total = 0, udp = 0, out = 0, inb = 0, drops = {}, dps = 0 }) {
  return {
    uptime,
    tick: { duration_ms: { p50, p99 }, lateness_ms: { p50: late, p99: late * 2 }, skipped: 0 },
    clients: { udp, webrtc: 0, ws: 0, hatongsu: 0, total },
    bytes_per_second: { udp: { in: inb, out }, webrtc: { in: 0, out: 0 }, ws: { in: 0, out: 0 }, chat: { in: 1, out: 2 } },
    drops,
    drops_per_second: dps,
  };
}

describe("the admin API client", () => {
  it("sends the bearer token and JSON bodies to /admin/api/", async () => {
    const { fn, calls } = fakeFetch(() => ({ status: 200, body: { name: "ann", sessions: 1 } }));
    const client = new AdminClient("s3cret-token", { fetch: fn, base: "http://h:1" });
    const answer = await client.kick(7, "  ", 60);
    assert.deepEqual(answer, { name: "ann", sessions: 1 });
    assert.equal(calls[0].url, "http://h:1/admin/api/players/7/kick");
    assert.equal(calls[0].init.method, "POST");
    assert.equal(calls[0].init.headers.Authorization, "Bearer s3cret-token");
    assert.deepEqual(JSON.parse(calls[0].init.body), { ban: 60 }); // a blank reason is the server's default
    await client.kick("a b/c", "spam", 0);
    assert.equal(calls[1].url, "http://h:1/admin/api/players/a%20b%2Fc/kick");
    assert.deepEqual(JSON.parse(calls[1].init.body), { reason: "spam", ban: 0 });
    await client.notice("hello", null);
    await client.notice("hello", 3);
    assert.deepEqual(JSON.parse(calls[2].init.body), { text: "hello" });
    assert.deepEqual(JSON.parse(calls[3].init.body), { text: "hello", room: 3 });
    await client.status();
    assert.equal(calls[4].init.method, "GET");
    assert.equal(calls[4].init.body, undefined);
  });

  it("says a 401 is the token, a refusal is the server's words, no answer is unreachable", async () => {
    const cases = [
      [() => ({ status: 401, body: { error: "unauthorized" } }), "unauthorized", UNAUTHORIZED_TEXT, 401, "unauthorized"],
      [() => ({ status: 404, body: { error: "no such player: '9'", code: "not_found" } }), "refused", "no such player: '9'", 404, "not_found"],
      [() => ({ status: 502, body: "<html>bad gateway</html>" }), "refused", "HTTP 502", 502, ""],
      [() => ({ status: 200, body: "[1, 2]" }), "refused", "the server answered status with no JSON object", 200, "bad_answer"],
      [() => { throw new TypeError("Failed to fetch"); }, "unreachable", "cannot reach the server (Failed to fetch)", 0, ""],
    ];
    for (const [reply, kind, message, statusCode, code] of cases) {
      const client = new AdminClient("t", { fetch: fakeFetch(reply).fn });
      await assert.rejects(client.status(), (e) => {
        assert.ok(e instanceof AdminError);
        assert.deepEqual([e.kind, e.message, e.status, e.code], [kind, message, statusCode, code]);
        return true;
      });
    }
  });

  it("keeps the token in the storage it is given, and forgets it", () => {
    const map = new Map();
    const storage = { getItem: (k) => (map.has(k) ? map.get(k) : null), setItem: (k, v) => map.set(k, v), removeItem: (k) => map.delete(k) };
    assert.equal(storedToken(storage), "");
    storeToken(storage, "tok");
    assert.equal(map.get(TOKEN_KEY), "tok");
    assert.equal(storedToken(storage), "tok");
    storeToken(storage, "");
    assert.equal(map.has(TOKEN_KEY), false);
    const broken = { getItem() { throw new Error("denied"); }, setItem() { throw new Error("quota"); }, removeItem() {} };
    assert.equal(storedToken(broken), "");
    storeToken(broken, "tok"); // no throw
  });
});

describe("the ring of status samples", () => {
  it("reads the figures of a status answer, bytes summed over every transport", () => {
    const s = sampleOf(status({ uptime: 12.5, p50: 1.5, p99: 4, total: 3, udp: 3, out: 1000, inb: 10, drops: { "drop.x": 2 }, dps: 0.5 }));
    assert.deepEqual(s, {
      t: 12.5, tickP50: 1.5, tickP99: 4, lateP50: 0.5, lateP99: 1, clients: { udp: 3, webrtc: 0, ws: 0, hatongsu: 0, total: 3 },
      bytesIn: 11, bytesOut: 1002, drops: 0.5, dropCounts: { "drop.x": 2 },
    });
    const empty = sampleOf({});
    assert.equal(empty.t, 0);
    assert.equal(empty.bytesOut, 0);
    assert.deepEqual(empty.clients, {});
  });

  it("keeps the window's seconds, replaces a second polled twice, starts over after a restart", () => {
    const ring = new SampleRing(10);
    for (let t = 0; t <= 20; t++) ring.push(sampleOf(status({ uptime: t, total: t })));
    assert.equal(ring.length, 11); // 10..20
    assert.deepEqual(ring.series((s) => s.clients.total).map(([t]) => t), [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
    ring.push(sampleOf(status({ uptime: 20, total: 99 })));
    assert.equal(ring.length, 11);
    assert.equal(ring.last.clients.total, 99);
    ring.push(sampleOf(status({ uptime: 3, total: 1 }))); // the server started again
    assert.equal(ring.length, 1);
    assert.equal(ring.last.t, 3);
  });

  it("lists the drops that grew in the last minute first, zero counters left out", () => {
    const ring = new SampleRing();
    ring.push(sampleOf(status({ uptime: 0, drops: { "drop.a": 5, "drop.b": 1, "drop.z": 0 } })));
    ring.push(sampleOf(status({ uptime: 50, drops: { "drop.a": 5, "drop.b": 1, "drop.z": 0 } })));
    ring.push(sampleOf(status({ uptime: 100, drops: { "drop.a": 6, "drop.b": 4, "drop.c": 2, "drop.z": 0 } })));
    // the window of 60 s reaches back to the sample at 50 s
    assert.deepEqual(ring.drops(60), [
      { reason: "drop.b", total: 4, recent: 3 },
      { reason: "drop.c", total: 2, recent: 2 },
      { reason: "drop.a", total: 6, recent: 1 },
    ]);
    assert.deepEqual(new SampleRing().drops(), []);
  });
});

describe("the map", () => {
  it("fits a floor into the canvas at one scale, centred, and back", () => {
    const fit = fitFloor({ min: [-10, -20], max: [10, 20] }, 400, 212, 6);
    assert.equal(fit.scale, 5); // (212 - 12) / 40
    assert.deepEqual(fit.toPx(-10, -20), [150, 6]);
    assert.deepEqual(fit.toPx(10, 20), [250, 206]);
    assert.deepEqual(fit.toPx(0, 0), [200, 106]);
    assert.deepEqual(fit.toWorld(200, 106), [0, 0]);
    assert.deepEqual(fit.toWorld(250, 206), [10, 20]);
    assert.equal(mapHeight({ min: [-10, -10], max: [10, 10] }, 424), 424);
    assert.equal(mapHeight({ min: [-100, -1], max: [100, 1] }, 400), 200); // at least 200 px
  });

  it("finds the dots under the mouse, nearest first", () => {
    const dots = [
      { id: 1, name: "a", px: 10, py: 10 },
      { id: 2, name: "b", px: 14, py: 10 },
      { id: 3, name: "c", px: 40, py: 40 },
    ];
    assert.deepEqual(dotsNear(dots, 13, 10).map((d) => d.id), [2, 1]);
    assert.deepEqual(dotsNear(dots, 40, 48).map((d) => d.id), [3]);
    assert.deepEqual(dotsNear(dots, 100, 100), []);
  });

  it("uses the document's floor, or a square around the players without one", () => {
    assert.deepEqual(floorOf({ floor: { min: [-1, -2], max: [3, 4] } }, []), { min: [-1, -2], max: [3, 4] });
    assert.deepEqual(floorOf(null, []), { min: [-10, -10], max: [10, 10] });
    assert.deepEqual(floorOf(null, [{ position: [30, 0, -5] }]), { min: [-32, -32], max: [32, 32] });
  });

  it("draws a dot per player in its transport's colour, the walls, and the selected one's interest radius", () => {
    const ops = [];
    const g = new Proxy({}, {
      get: (target, key) => (key in target ? target[key] : (...args) => ops.push([key, ...args])),
      set: (target, key, value) => {
        ops.push([`=${String(key)}`, value]);
        return true;
      },
    });
    const doc = { floor: { min: [-10, -10], max: [10, 10] }, walls: [{ points: [[-10, 0], [10, 0]], thickness: 0.4 }], obstacles: [] };
    const players = [
      { id: 4, name: "u", transport: "udp", position: [0, 0, 0] },
      { id: 5, name: "w", transport: "webrtc", position: [5, 0, -5] },
      { id: 6, name: "h", transport: "hatongsu", position: [-5, 0, 5] },
    ];
    const out = drawMap(g, { width: 424, height: 424, doc, players, selected: 5, radius: 3 });
    assert.equal(out.scale, 20);
    assert.deepEqual(out.dots.map((d) => [d.id, d.px, d.py, d.color]), [
      [4, 212, 212, TRANSPORT_COLORS.udp], [5, 312, 112, TRANSPORT_COLORS.webrtc], [6, 112, 312, TRANSPORT_COLORS.hatongsu],
    ]);
    assert.deepEqual(out.interest, { px: 312, py: 112, r: 60 });
    const arcs = ops.filter((o) => o[0] === "arc");
    assert.deepEqual(arcs.map((a) => a.slice(1, 4)), [[312, 112, 60], [212, 212, 5], [312, 112, 5], [112, 312, 5]]);
    const fills = ops.filter((o) => o[0] === "=fillStyle").map((o) => o[1]);
    for (const c of [TRANSPORT_COLORS.udp, TRANSPORT_COLORS.webrtc, TRANSPORT_COLORS.hatongsu]) assert.ok(fills.includes(c), c);
    assert.ok(ops.some((o) => o[0] === "=lineWidth" && o[1] === 8)); // the wall: 0.4 m at 20 px/m
    assert.ok(ops.some((o) => o[0] === "moveTo" && o[1] === 12 && o[2] === 212));
    assert.equal(transportColor("carrier-pigeon"), TRANSPORT_COLORS.other);
    const none = drawMap(g, { width: 424, height: 424, doc, players, selected: 99, radius: 3 });
    assert.equal(none.interest, null); // a selected player not in this world draws no ring
  });
});

describe("the charts' helpers", () => {
  it("round the axis up to 1, 2 or 5 times a power of ten", () => {
    const cases = [[0, 1], [-3, 1], [NaN, 1], [0.7, 1], [1, 1], [1.01, 2], [2, 2], [3, 5], [5, 5], [7, 10], [10, 10], [0.031, 0.05], [1234, 2000]];
    for (const [v, want] of cases) assert.ok(Math.abs(niceMax(v) - want) < 1e-12, `${v} -> ${niceMax(v)}`);
  });

  it("write bytes and durations for people", () => {
    assert.equal(formatBytes(950), "950 B");
    assert.equal(formatBytes(1234), "1.2 kB");
    assert.equal(formatBytes(123456), "123 kB");
    assert.equal(formatBytes(4.1e6), "4.1 MB");
    assert.equal(formatBytes(2.5e9), "2.5 GB");
    assert.equal(formatDuration(42.9), "42 s");
    assert.equal(formatDuration(185), "3 min 05 s");
    assert.equal(formatDuration(7620), "2 h 07 min");
    assert.equal(formatDuration(273600), "3 d 4 h");
    assert.equal(formatDuration(-5), "0 s");
  });
});
