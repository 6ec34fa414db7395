"""The dashboard's worlds and pictures panels (``/admin``, issue 10) in a real browser.

Starts ``python -m worldserver run`` hosting the gallery and the halls with a known admin token
(helpers shared with tests/test_browser.py), connects a native UDP bot to the halls
(``worldclient.client.open_client``), then runs ``tests/browser/admin_worlds.mjs``: a gallery
page is open beside the dashboard, and everything is done from the dashboard's panels. From
what the page showed, what the admin API answered the script after each step, what the
gallery page showed and what the bot was told, this test checks:

- the worlds table lists both worlds with their players, the default one marked and its Close
  button off; the pictures panel lists the gallery's slots with the file's picture (title,
  loaded thumbnail);
- a file that is no image gets the server's refusal in the slot's row, a file larger than
  ``chat.max_image_bytes`` is refused by the page without being sent (no new drop);
- an image dropped on a slot's row is hung under the title made from its file's name: the row
  shows it (thumbnail at the image's width, the title), the API lists it in that slot with
  that title, the world's row counts it, the gallery page (not touched) shows it with the title
  on its plaque; chosen again with a title typed in the row, it hangs under that title (row,
  API, plaque; the box is emptied); another title typed in the box and Save title (off while
  the box holds the title it has) retitle it without an upload: the same image, the new title
  in the row, the API and on the gallery page's plaque; Remove leaves an empty frame, in the
  API and the gallery page too;
- opening a world that is open is refused in words; Close asks first (nothing is closed
  before the confirmation; the reason typed across polls keeps its focus and text) and then
  closes the halls: the bot is disconnected with
  ``world_closed`` and the reason typed; the halls open again by their id, a world file by its
  path, and Reload reads the gallery's file again;
- at 1280 and 760 pixels wide neither the page nor the worlds table or the slots list scrolls
  sideways, and the panels' buttons are inside their panels.

Needs node, the web client's node modules and ``/usr/bin/chromium`` (``bash scripts/web.sh
--browser``); a missing piece fails with that hint. Must not reach anything but the server it
starts.
"""

from __future__ import annotations

import json
import os

import pytest
import trio
from PIL import Image

from test_admin_browser import _result
from test_browser import BROWSER_DIR, ROOT, ServerProcess, _require_tools
from test_hatongsu_browser import _udp_port
from test_world_admin import annex_file
from worldclient.client import open_client

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TOKEN = "dashboard-worlds-token-0123456789"
SLOT = "north-1"
REASON = "the halls close for the night"
TITLE = "Crimson study, 1915 \u2014 \u00e9tat II"  # typed in the slot's row
RETITLE = "Crimson study, 1916"  # typed in the row, then Save title
REFUSED_STATUS = ("415", "409")  # the junk upload and the second open: the console says them


async def test_the_dashboard_hangs_and_removes_a_picture_and_closes_opens_and_reloads_worlds(tmp_path):
    _require_tools()
    image = tmp_path / "red-square.png"
    Image.new("RGB", (96, 64), (210, 30, 30)).save(image)  # a width no picture of the gallery has
    junk = tmp_path / "notes.png"
    junk.write_text("these are notes, not a picture\n")
    world_file = annex_file(tmp_path)
    srv = ServerProcess(tmp_path / "data", "--set", f"server.admin_token={TOKEN}",
                        "--set", 'worlds.hosted=["gallery", "halls"]')  # fmt: skip
    try:
        srv.wait_listening()
        port = await _udp_port(srv)
        async with open_client("127.0.0.1", port, http=srv.http, name=f"bot{os.urandom(2).hex()}", world="halls") as bot:
            shots = tmp_path / "worlds"
            proc = await trio.run_process(
                ["node", str(BROWSER_DIR / "admin_worlds.mjs"), "--url", srv.http, "--token", TOKEN,
                 "--worlds", "gallery,halls", "--slot", SLOT, "--image", str(image), "--junk", str(junk),
                 "--reason", REASON, "--file", str(world_file), "--file-id", "annex", "--title", TITLE, "--retitle", RETITLE,
                 "--screenshot", str(shots), "--timeout", "150"],
                cwd=ROOT, capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
            result = _result(proc)
            if result.get("ok"):
                with trio.fail_after(30):
                    while bot.connected:
                        await trio.sleep(0.05)
        if not result.get("ok"):
            pytest.fail(f"browser script failed: {result.get('error')}\n"
                        f"page logs: {json.dumps(result.get('logs', []), indent=1)}\n"
                        f"server log tail:\n{srv.log_tail()}")
    finally:
        srv.stop()
    logs = [line for line in result["logs"] if line.startswith("admin ")]  # the dashboard's (not WebGL's)
    refused = [line for line in logs if any(f"status of {s}" in line for s in REFUSED_STATUS)]
    assert len(refused) == 2 and len(logs) == 2, logs  # the junk upload and the second open, nothing else

    # the worlds with their players, the default marked; the gallery's slots with its pictures
    first = result["first"]
    worlds = {w["id"]: w for w in first["worlds"]}
    assert set(worlds) == {"gallery", "halls"} and first["defaultWorld"] == "gallery"
    assert worlds["gallery"]["default"] and not worlds["halls"]["default"]
    assert worlds["gallery"]["players"] == 1 and worlds["halls"]["players"] == 1  # the page's visitor, the bot
    assert result["closeDisabled"] and first["maxBytes"] == 2_000_000
    assert first["openChoices"] == ["open"] and set(first["builtin"]) >= {"gallery", "halls", "open"}
    rows = {r["id"]: r["text"] for r in first["worldRows"]}
    assert "default" in rows["gallery"] and "default" not in rows["halls"]
    assert first["pictures"]["world"] == "gallery" and len(first["slots"]) == worlds["gallery"]["slots"] == 12
    before = next(s for s in first["slots"] if s["id"] == SLOT)
    assert before["image"] == result["apiBefore"]["image"] == "glowing-checkerboard.png"
    assert before["title"] == "Glowing checkerboard" and before["thumb"]["width"] > 0 and before["canRemove"]

    # refusals: the server's words for junk; the page's own for a file over the limit
    junk_row = result["junk"]
    assert junk_row["error"] and junk_row["image"] == before["image"]
    assert junk_row["result"] == "Refused: the content is not a PNG, JPEG, WebP or GIF image", junk_row
    huge = result["huge"]
    assert huge["error"] and huge["result"] == ("huge.png is 2.0 MB (2000001 bytes); a picture may be at most 2000000 bytes "
                                           "(2.0 MB, chat.max_image_bytes)."), huge
    assert result["dropsAfterBad"].get("drop.world_picture_rejected") == 1  # the junk only: huge.png was not sent

    # hung: the row, the API, the world's row, the gallery page
    hung, api = result["hungSlot"], result["apiHung"]
    assert result["dropMarked"]  # the row showed it takes the file dragged over it
    assert result["hung"]["result"] == ('Hung red-square.png as "Red square" in north-1: 96×64, '
                                        + result["hung"]["result"].split(", ")[-1])
    assert api["image"] == hung["image"] and api["image"].startswith("hung-gallery-north-1-")
    assert api["title"] == "Red square"  # the file's name, without its extension, cleaned
    assert hung["title"] == "Red square" and hung["thumb"]["width"] == 96 and hung["thumb"]["src"].endswith(api["url"])
    assert result["apiWorldsHung"]["hung"] == 1 and "1 of 12 hung" in result["hungRow"]
    assert result["galleryHung"]["width"] == 96 and result["galleryHung"]["image"] == api["image"]
    assert result["galleryHung"]["title"] == "Red square"  # the plaque, not "hung gallery north 1 ..."
    # the same file with a title typed in the row: hung under that title, the box emptied
    titled, api_titled = result["titledSlot"], result["apiTitled"]
    assert result["titled"]["result"].startswith(f'Hung red-square.png as "{TITLE}" in north-1: 96×64, ')
    assert api_titled["title"] == TITLE and api_titled["image"] != api["image"] and titled["image"] == api_titled["image"]
    assert titled["title"] == TITLE and titled["titleInput"] == ""
    assert result["galleryTitled"]["title"] == TITLE and result["galleryTitled"]["image"] == api_titled["image"]
    # retitled from the row: the same image, the new title everywhere, no upload
    assert result["retitleSameTitle"] is False and result["retitleTyped"] is True
    assert result["retitled"]["result"] == f'Retitled the picture of north-1: "{RETITLE}".', result["retitled"]
    assert result["retitledSlot"]["image"] == api_titled["image"] and result["retitledSlot"]["titleInput"] == ""
    assert result["apiRetitled"] == {**api_titled, "title": RETITLE}
    assert result["galleryRetitled"]["image"] == api_titled["image"] and result["galleryRetitled"]["title"] == RETITLE

    # removed: an empty frame everywhere
    assert result["removed"]["result"] == "Took the picture of north-1 down: an empty frame."
    assert result["emptied"]["title"] == "Empty frame" and result["apiRemoved"]["image"] == ""
    assert result["galleryEmptied"]["image"] == ""

    # open twice: refused in words; close: asked first, then the bot was told why
    assert result["openTwice"] == "Refused: the world 'gallery' is open already" and result["openTwiceError"]
    asking = result["asking"]
    assert asking["confirming"] == "halls" and any(r["confirm"] and "Close halls" in r["text"] for r in asking["worldRows"])
    assert sorted(result["stillThere"]) == ["gallery", "halls"]
    assert result["typed"] == {"focused": "close-reason", "value": REASON}  # typed across two polls
    assert result["closed"] == f'Closed halls: 1 player disconnected with "{REASON}"; the notice is in its chat room.'
    assert result["apiAfterClose"] == ["gallery"] and result["afterClose"]["openChoices"] == ["halls", "open"]
    assert (bot.closed_reason, bot.closed_text) == ("world_closed", REASON)

    # opened again by id, a file by its path, shown; reloaded
    assert result["reopened"].startswith("Opened halls (The Halls): 34 picture slots")
    assert result["openedFile"] == "Opened annex (The Annex): 1 picture slot."
    opened = {w["id"]: w for w in result["apiAfterOpen"]}
    assert set(opened) == {"gallery", "halls", "annex"} and opened["annex"]["file"] == str(world_file)
    shown = result["fileShown"]
    assert [(s["id"], s["image"], s["title"]) for s in shown["slots"]] == [("north", "", "Empty frame")]
    assert result["reloaded"].startswith("Reloaded gallery from its file: version ") and "0 avatars moved" in result["reloaded"]

    # the layout: nothing wider than the window, the buttons inside their panels
    for shape in (result["wide"], result["narrow"]):
        assert shape["scrollWidth"] <= shape["width"], shape
        assert all(t["scrollWidth"] <= t["clientWidth"] for t in shape["tables"]), shape  # no sideways scrolling inside
        assert shape["worlds"]["left"] <= shape["close"]["left"] and shape["close"]["right"] <= shape["worlds"]["right"], shape
        for button, panel in (("upload", "pictures"), ("remove", "pictures"), ("open", "worlds")):
            assert shape[panel]["left"] <= shape[button]["left"] and shape[button]["right"] <= shape[panel]["right"], (button, shape)
    wide, narrow = result["wide"], result["narrow"]
    assert wide["pictures"]["left"] > wide["worlds"]["right"]  # side by side when wide
    assert narrow["pictures"]["width"] == pytest.approx(narrow["worlds"]["width"], abs=1)  # one column when narrow
    for width in (1280, 760):
        assert (tmp_path / f"worlds-{width}.png").stat().st_size > 20_000
