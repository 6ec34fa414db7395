// The dashboard's worlds and pictures panels, their pure parts: the admin API client's world
// routes against a stand-in fetch (what each sends: JSON, an image as it is, nothing), and
// the helpers of src/admin/worlds.js (the world shown, the open box's suggestions, picture
// titles, the check before an upload, the answers' texts).
import { strict as assert } from "node:assert";
import { describe, it } from "node:test";

import { AdminClient, AdminError } from "../src/admin/api.js";
import {
  MAX_TITLE, chooseWorld, cleanTitle, closedText, count, fileName, fileTitle, hungText, isHung, openChoices, openedText,
  pictureTitle, reloadedText, retitleProblem, retitledText, slotTitle, slotsText, takenDownText, uploadProblem,
} from "../src/admin/worlds.js";

/** A fetch that records its calls and answers with `reply(url, init)`: {status, body}. */
function fakeFetch(reply) {
  const calls = [];
  const fn = async (url, init) => {
    calls.push({ url, init });
    const r = reply(url, init);
    return new Response(JSON.stringify(r.body), { status: r.status, headers: { "Content-Type": "application/json" } });
  };
  return { fn, calls };
}

const WORLD = { id: "halls", title: "The Halls", default: false, players: 2, version: 3, file: "/srv/halls.toml", slots: 34, hung: 0 };

describe("the admin API client's world routes", () => {
  it("sends each route's method, path and body", async () => {
    const { fn, calls } = fakeFetch(() => ({ status: 200, body: { ok: 1 } }));
    const client = new AdminClient("tok", { fetch: fn, base: "http://h:1" });
    await client.worlds();
    await client.world("a b");
    await client.openWorld("/srv/my world.toml");
    await client.closeWorld("halls", "closed tonight");
    await client.closeWorld("halls", "   ");
    await client.reloadWorld("halls");
    await client.takeDownPicture("gallery", "north/1");
    await client.retitlePicture("gallery", "north/1", "Caf\u00e9 at dusk");
    const got = calls.map((c) => [c.init.method, c.url.replace("http://h:1/admin/api/", ""), c.init.body]);
    assert.deepEqual(got, [
      ["GET", "worlds", undefined],
      ["GET", "worlds/a%20b", undefined],
      ["POST", "worlds", JSON.stringify({ world: "/srv/my world.toml" })],
      ["POST", "worlds/halls/close", JSON.stringify({ reason: "closed tonight" })],
      ["POST", "worlds/halls/close", "{}"], // a blank reason: the server's own
      ["POST", "worlds/halls/reload", "{}"],
      ["DELETE", "worlds/gallery/pictures/north%2F1", undefined],
      ["PATCH", "worlds/gallery/pictures/north%2F1", JSON.stringify({ title: "Caf\u00e9 at dusk" })],
    ]);
    for (const c of calls) assert.equal(c.init.headers.Authorization, "Bearer tok");
    assert.equal(calls[2].init.headers["Content-Type"], "application/json");
    assert.equal(calls[6].init.headers["Content-Type"], undefined);
    assert.equal(calls[7].init.headers["Content-Type"], "application/json");
  });

  it("sends an image as it is, with its type, and says the server's refusal", async () => {
    const { fn, calls } = fakeFetch((url, init) => (init.headers["Content-Type"] === "image/png"
      ? { status: 200, body: { slot: "north-1", image: "hung-gallery-north-1-x.png", width: 2, height: 1, bytes: 4 } }
      : { status: 415, body: { error: "the content is not a PNG, JPEG, WebP or GIF image", code: "unsupported_type" } }));
    const client = new AdminClient("tok", { fetch: fn });
    const png = new Blob([new Uint8Array([0x89, 0x50, 0x4e, 0x47])], { type: "image/png" });
    const answer = await client.hangPicture("gallery", "north-1", png);
    assert.equal(answer.image, "hung-gallery-north-1-x.png");
    assert.equal(calls[0].url, "/admin/api/worlds/gallery/pictures/north-1");
    assert.equal(calls[0].init.method, "PUT");
    assert.equal(calls[0].init.body, png); // the file itself, not JSON
    const untyped = new Blob(["just text"]);
    await assert.rejects(client.hangPicture("gallery", "north-1", untyped), (e) => {
      assert.ok(e instanceof AdminError);
      assert.deepEqual([e.kind, e.status, e.code, e.message],
        ["refused", 415, "unsupported_type", "the content is not a PNG, JPEG, WebP or GIF image"]);
      return true;
    });
    assert.equal(calls[1].init.headers["Content-Type"], "application/octet-stream");
    assert.equal(calls[1].init.body, untyped);
    // a title goes in the query, encoded; none: no query
    await client.hangPicture("gallery", "north-1", png, "Café & tea? 100%");
    assert.equal(calls[2].url, "/admin/api/worlds/gallery/pictures/north-1?title=Caf%C3%A9%20%26%20tea%3F%20100%25");
    await client.hangPicture("gallery", "north-1", png, "");
    assert.equal(calls[3].url, "/admin/api/worlds/gallery/pictures/north-1");
  });
});

describe("the worlds panel's helpers", () => {
  it("keeps the world shown while it is hosted, else the default one, else the first", () => {
    const worlds = [{ id: "halls", default: false }, { id: "gallery", default: true }];
    assert.equal(chooseWorld(worlds, "halls"), "halls");
    assert.equal(chooseWorld(worlds, "closed"), "gallery");
    assert.equal(chooseWorld(worlds, ""), "gallery");
    assert.equal(chooseWorld([{ id: "a", default: false }, { id: "b", default: false }], "x"), "a");
    assert.equal(chooseWorld([], "x"), "");
  });

  it("suggests the built-in names not hosted now, in the server's order", () => {
    const builtin = ["gallery", "halls", "open"];
    assert.deepEqual(openChoices(builtin, [{ id: "gallery" }, { id: "annex" }]), ["halls", "open"]);
    assert.deepEqual(openChoices(builtin, [{ id: "gallery" }, { id: "halls" }, { id: "open" }]), []);
    assert.deepEqual(openChoices([], [{ id: "gallery" }]), []);
  });

  it("titles a picture as the gallery does, a hung one and an empty frame apart", () => {
    // the titles of worldserver/http_static.py image_title for the same names
    assert.equal(pictureTitle("sunset_over-sea.png"), "Sunset over sea");
    assert.equal(pictureTitle("glowing-checkerboard.png"), "Glowing checkerboard");
    assert.equal(pictureTitle("a  b__c.jpeg"), "A b c");
    assert.equal(pictureTitle("x.y.webp"), "X.y");
    assert.equal(pictureTitle("hung-gallery-north-1-AbCdEfGhIjKlMnOpQrStUv.png"), "Hung picture");
    assert.equal(pictureTitle(""), "");
    assert.ok(isHung("hung-halls-east-2-xyz.jpg"));
    assert.ok(!isHung("hunger.png") && !isHung(""));
  });

  it("shows a slot's own title, else the one made from its image's name", () => {
    const hung = "hung-gallery-north-1-AbCdEfGhIjKlMnOpQrStUv.png";
    assert.equal(slotTitle({ image: hung, title: "Harbour at dawn" }), "Harbour at dawn");
    assert.equal(slotTitle({ image: hung, title: "" }), "Hung picture"); // hung without a title
    assert.equal(slotTitle({ image: "sunset_over-sea.png", title: "" }), "Sunset over sea"); // the world file's
    assert.equal(slotTitle({ image: "sunset_over-sea.png", title: "At sea" }), "At sea"); // a title in the file
    assert.equal(slotTitle({ image: "sunset_over-sea.png" }), "Sunset over sea"); // an older server: no field
    assert.equal(slotTitle({ image: "", title: "" }), "");
  });

  it("makes an upload's title from its file's name as the server takes it", () => {
    assert.equal(fileTitle("harbour_at-dawn.jpg"), "Harbour at dawn");
    assert.equal(fileTitle("IMG_2034.JPG"), "IMG 2034");
    assert.equal(fileTitle("  spaced   out .webp"), "Spaced out");
    assert.equal(fileTitle("no-extension"), "No extension");
    assert.equal(fileTitle(".png"), ""); // nothing left: sent untitled
    assert.equal(fileTitle("bell\u0007and\nline\u2028sep.png"), "Bell and line sep"); // what the server refuses: spaces
    assert.equal(fileTitle("Cafe\u0301 terrace.png"), "Caf\u00e9 terrace"); // NFC, as the server keeps it
    assert.equal(fileTitle("\u00df-street.png"), "SS street"); // capitalized (ß has no one-letter capital)
    const long = fileTitle(`${"\u{1F5BC}".repeat(150)}.png`); // astral characters: cut at code points, not halves
    assert.equal(Array.from(long).length, MAX_TITLE);
    assert.equal(long, "\u{1F5BC}".repeat(MAX_TITLE));
    assert.equal(fileTitle(`a${" ".repeat(98)}bc.png`), "A bc"); // runs of spaces are one
    assert.equal(fileTitle("lone\ud800half.png"), "Lone half"); // a lone surrogate
  });

  it("cleans a typed title as the server keeps it", () => {
    assert.equal(cleanTitle("  Harbour at dawn, 1888  "), "Harbour at dawn, 1888");
    assert.equal(cleanTitle("tab\there"), "tab here"); // kept as typed, not capitalized
    assert.equal(cleanTitle("   "), "");
    assert.equal(cleanTitle("x".repeat(MAX_TITLE + 5)).length, MAX_TITLE);
  });

  it("sends a file unless the server's limit refuses it already", () => {
    assert.equal(uploadProblem({ name: "a.png", size: 1000 }, 2_000_000), "");
    assert.equal(uploadProblem({ name: "a.png", size: 2_000_000 }, 2_000_000), ""); // at the limit: sent
    assert.equal(uploadProblem({ name: "big.png", size: 2_000_001 }, 2_000_000),
      "big.png is 2.0 MB (2000001 bytes); a picture may be at most 2000000 bytes (2.0 MB, chat.max_image_bytes).");
    assert.equal(uploadProblem({ name: "none.png", size: 0 }, 2_000_000), "none.png is empty.");
    assert.match(uploadProblem({ name: "a.png", size: 10 }, 0), /takes no pictures/);
  });

  it("writes the cells and the answers in words", () => {
    assert.equal(fileName("/srv/worlds/halls.toml"), "halls.toml");
    assert.equal(fileName("C:\\worlds\\annex.toml"), "annex.toml");
    assert.equal(fileName("annex.toml"), "annex.toml");
    assert.equal(slotsText(WORLD), "34 slots");
    assert.equal(slotsText({ ...WORLD, hung: 3 }), "3 of 34 hung");
    assert.equal(slotsText({ ...WORLD, slots: 1 }), "1 slot");
    assert.equal(slotsText({ ...WORLD, slots: 0 }), "none");
    assert.equal(count(1, "player"), "1 player");
    assert.equal(count(0, "player"), "0 players");
    assert.equal(openedText(WORLD), "Opened halls (The Halls): 34 picture slots.");
    assert.equal(closedText({ id: "halls", players: 1, reason: "closed tonight", notice: true }),
      'Closed halls: 1 player disconnected with "closed tonight"; the notice is in its chat room.');
    assert.equal(closedText({ id: "halls", players: 0, reason: "r", notice: false }), 'Closed halls: 0 players disconnected with "r".');
    assert.equal(reloadedText({ ...WORLD, version: 4, moved: 1 }),
      "Reloaded halls from its file: version 4, 1 avatar moved clear of the walls.");
    assert.equal(hungText("red.png", { slot: "north-1", title: "Red", width: 96, height: 64, bytes: 1234 }),
      'Hung red.png as "Red" in north-1: 96×64, 1.2 kB.');
    assert.equal(hungText(".png", { slot: "north-1", title: "", width: 96, height: 64, bytes: 1234 }),
      "Hung .png untitled in north-1: 96×64, 1.2 kB.");
    assert.equal(takenDownText({ slot: "north-1" }), "Took the picture of north-1 down: an empty frame.");
    assert.equal(retitledText({ slot: "north-1", title: "Dusk", changed: true }), 'Retitled the picture of north-1: "Dusk".');
    assert.equal(retitledText({ slot: "north-1", title: "", changed: true }), "The picture of north-1 is untitled now.");
    assert.equal(retitledText({ slot: "north-1", title: "Dusk", changed: false }), "The picture of north-1 has that title already.");
  });

  it("says when the title typed in a slot's row cannot be given to its picture", () => {
    const hung = { image: "hung-gallery-north-1-AbCdEfGhIjKlMnOpQrStUv.png", title: "Dawn" };
    assert.equal(retitleProblem(hung, " Dusk "), "");
    assert.equal(retitleProblem({ ...hung, title: "" }, "Dawn"), ""); // an untitled one takes a title
    assert.equal(retitleProblem(hung, " Dawn\n"), "the picture has this title already"); // as the server keeps it
    assert.equal(retitleProblem(hung, " \u0007 "), "type the picture's new title in the box first");
    assert.equal(retitleProblem({ image: "sunset.png", title: "" }, "Dusk"), "the world file's own picture is titled in the file");
    assert.equal(retitleProblem({ image: "", title: "" }, "Dusk"), "an empty frame has no title");
  });
});
