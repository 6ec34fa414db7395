// The fetch-JSON helper (src/net/http.js) against a real HTTP server on loopback (node's http
// module) and node's own fetch: a JSON answer, a bad body (malformed, empty, cut short), an
// answer that is not JSON, HTTP error statuses, and a server that is not there.
import { strict as assert } from "node:assert";
import { createServer } from "node:http";
import { after, before, describe, it } from "node:test";

import { fetchJson, getJson, jsonBody } from "../src/net/http.js";

/** What the server answers on each path: [status, content type, body]. */
const ROUTES = {
  "/ok": [200, "application/json", '{"token":"t1","n":[1,2]}'],
  "/malformed": [200, "application/json", '{"token": "t1",'],
  "/empty": [200, "application/json", ""],
  "/html": [200, "text/html", "<!doctype html><p>not the API</p>"],
  "/null": [200, "application/json", "null"],
  "/refused": [429, "application/json", '{"error":"slow down","code":"rate_limited","retry_after":3}'],
  "/broken": [500, "text/plain", "Internal Server Error"],
};

let server;
let base = "";
/** The requests the server saw: method, url, headers, body. */
const seen = [];

before(async () => {
  server = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      seen.push({ method: req.method, url: req.url, headers: req.headers, body: Buffer.concat(chunks).toString() });
      if (req.url === "/cut") {
        // Promises 100 bytes, sends a whole JSON object of 8 and hangs up: what came parses,
        // but the body breaks off mid-read.
        res.writeHead(200, { "Content-Type": "application/json", "Content-Length": "100" });
        res.write('{"a": 1}', () => req.socket.destroy()); // once it went out
        return;
      }
      const route = ROUTES[req.url];
      if (!route) {
        res.writeHead(404, { "Content-Type": "text/plain" }).end("no such path");
        return;
      }
      const [status, type, body] = route;
      res.writeHead(status, { "Content-Type": type }).end(body);
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${server.address().port}`;
});

after(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

describe("fetchJson", () => {
  it("gives the parsed body of a JSON answer and sends the request as given", async () => {
    const answer = await fetchJson(`${base}/ok`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ name: "ann" }),
    });
    assert.equal(answer.ok, true);
    assert.equal(answer.status, 200);
    assert.deepEqual(answer.body, { token: "t1", n: [1, 2] });
    assert.equal(answer.res.status, 200);
    const req = seen.at(-1);
    assert.equal(req.method, "POST");
    assert.equal(req.headers.accept, "application/json");
    assert.deepEqual(JSON.parse(req.body), { name: "ann" });
  });

  it("gives null for a bad body: malformed JSON, an empty body, a body cut short", async () => {
    // The cut body is a read error, not a parse error (what came of it is JSON).
    await assert.rejects((await fetch(`${base}/cut`)).text(), TypeError);
    for (const path of ["/malformed", "/empty", "/cut"]) {
      const answer = await fetchJson(`${base}${path}`);
      assert.equal(answer.status, 200, path);
      assert.equal(answer.ok, true, path);
      assert.equal(answer.body, null, path);
    }
  });

  it("gives null for an answer that is not JSON", async () => {
    const answer = await fetchJson(`${base}/html`);
    assert.deepEqual([answer.ok, answer.status, answer.body], [true, 200, null]);
  });

  it("resolves an HTTP error status with the status and whatever JSON body came", async () => {
    const refused = await fetchJson(`${base}/refused`);
    assert.deepEqual([refused.ok, refused.status], [false, 429]);
    assert.deepEqual(refused.body, { error: "slow down", code: "rate_limited", retry_after: 3 });
    const broken = await fetchJson(`${base}/broken`);
    assert.deepEqual([broken.ok, broken.status, broken.body], [false, 500, null]);
    const missing = await fetchJson(`${base}/nowhere`);
    assert.deepEqual([missing.ok, missing.status, missing.body], [false, 404, null]);
  });

  it("rejects with the fetch's error when no answer came", async () => {
    // A port that was just listening and is now closed: the connection is refused.
    const gone = createServer();
    await new Promise((resolve) => gone.listen(0, "127.0.0.1", resolve));
    const port = gone.address().port;
    await new Promise((resolve) => gone.close(resolve));
    await assert.rejects(fetchJson(`http://127.0.0.1:${port}/ok`), TypeError);
  });

  it("uses the fetch it is given", async () => {
    const urls = [];
    /** @param {string} url */
    const stand = async (url) => {
      urls.push(url);
      return new Response('{"a":1}', { status: 201 });
    };
    const answer = await fetchJson("http://nowhere.invalid/x", {}, stand);
    assert.deepEqual(urls, ["http://nowhere.invalid/x"]);
    assert.deepEqual([answer.ok, answer.status, answer.body], [true, 201, { a: 1 }]);
  });
});

describe("jsonBody", () => {
  it("reads a Response's JSON or gives null", async () => {
    assert.deepEqual(await jsonBody(new Response("[1]")), [1]);
    assert.equal(await jsonBody(new Response("nope")), null);
    assert.equal(await jsonBody(new Response(null, { status: 204 })), null);
  });
});

describe("getJson", () => {
  it("asks for JSON and resolves with the body", async () => {
    assert.deepEqual(await getJson(`${base}/ok`), { token: "t1", n: [1, 2] });
    const req = seen.at(-1);
    assert.equal(req.method, "GET");
    assert.equal(req.headers.accept, "application/json");
  });

  it("rejects an HTTP error status with the URL and the status", async () => {
    await assert.rejects(getJson(`${base}/refused`), { message: `${base}/refused: HTTP 429` });
    await assert.rejects(getJson(`${base}/broken`), { message: `${base}/broken: HTTP 500` });
  });

  it("rejects an answer that is not JSON, a bad body and a JSON null", async () => {
    for (const path of ["/html", "/malformed", "/empty", "/cut", "/null"]) {
      await assert.rejects(getJson(`${base}${path}`), { message: `${base}${path}: the answer is not JSON` }, path);
    }
  });
});
