"""The chat panel in a real browser against a real server process.

Starts ``python -m worldserver run`` (helpers shared with tests/test_browser.py) and runs
``tests/browser/chat.mjs`` in headless Debian chromium: player A types a message into the
chat input (real key presses, then Enter); player B must get it in its panel and see it as a
speech bubble over A's avatar (``window.worldserverTest.chat``). While A types, B shows
"... is typing" and A's avatar stays where it is although the text has w, a, s and d in it
(and while "d" is held down in the input).
A message that looks like HTML shows as text (no element made, no handler run). B's chat
connection then drops for a few seconds while A sends; reconnected, B has every message
exactly once and in order. An image A uploads is a thumbnail in B's panel, B's search box
finds a message and highlights it, and a private room A creates and invites B to is joined
from B's room bar and carries its messages only there.

Needs node, the web client's node modules and ``/usr/bin/chromium`` (``bash scripts/web.sh
--browser``); a missing piece fails with that hint. Must not reach anything but the server
it starts.
"""

from __future__ import annotations

import json
import math

import pytest

from test_browser import _check_result, run_script, server  # noqa: F401 (server: the fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]



def test_chat_message_reaches_the_other_panel_and_bubble(server):
    result = run_script("chat.mjs", "--url", server.http, timeout=180.0)
    _check_result(result, server)
    name_a, name_b = result["names"]
    text = result["text"]

    # B's hook and panel have A's message, by A; A has its own message too.
    assert result["got"]["author"] == name_a, result["got"]
    assert result["got"]["kind"] == "text"
    assert result["own_a"]["id"] == result["got"]["id"]
    assert result["panel_b"]["author"] == name_a
    assert result["panel_b"]["text"] == text
    assert result["input_after"] == "", "the input is emptied by Enter"

    # A speech bubble with the text over A's avatar in B's view.
    assert result["bubble"]["entityId"] == result["self_a"]
    assert result["bubble"]["text"] == text
    assert result["bubble"]["attached"] is True
    assert result["bubble_dom"] >= 1, result["bubble_tags"]

    # Typing: B showed A typing, and cleared it once the message came.
    assert result["typing_seen"] and name_a in result["typing_seen"], result["typing_seen"]
    assert "typing" in result["typing_seen"]
    assert result["typing_cleared"] is True

    # Typing w, a, s, d into the chat did not walk A's avatar.
    before, after = result["pos_before"], result["pos_after"]
    assert before is not None and after is not None
    assert math.hypot(after["x"] - before["x"], after["z"] - before["z"]) < 0.3, (before, after)
    # Nor did holding "d" for 0.8 s in the input (that would be about 4 m at 5 m/s).
    before, after = result["hold_before"], result["hold_after"]
    assert result["held_text"] == "d", result["held_text"]
    assert math.hypot(after["x"] - before["x"], after["z"] - before["z"]) < 0.3, (before, after)

    # The HTML-looking message is text everywhere.
    evil = result["evil"]
    assert result["evil_panel"]["text"] == evil
    assert result["evil_panel"]["body_elements"] == ["span"], result["evil_panel"]
    assert result["evil_bubble"]["text"] == evil
    dom = result["evil_dom"]
    assert dom == {
        "pwned_b": False,
        "pwned_a": False,
        "imgs_in_messages": 0,
        "bold_in_messages": 0,
        "elements_in_bubbles": 0,
    }, dom

    # After B's chat connection dropped for 3 s: everything once, in order, in hook and panel.
    gap = result["after_gap"]
    assert gap["count"] == gap["unique"], gap
    assert gap["sorted"] is True, gap
    assert gap["dom_count"] == gap["dom_unique"] == gap["count"], gap
    assert gap["stats"]["reconnects"] >= 1, gap

    # An uploaded image is a thumbnail in B's panel.
    image = result["image"]
    assert "error" not in image, image
    assert image["thumb"]["width"] > 0
    assert image["thumb"]["src"].startswith("/api/chat/images/"), image

    # Search finds the message and jumping highlights it.
    search = result["search"]
    assert "error" not in search, search
    texts = [r["text"] for r in search["results"]]
    assert search["wanted"] in texts and "gap 1" in search["wanted"], search
    assert search["highlighted"] == search["wanted"], search

    # A private room made in A's panel, B invited and joining from the room bar.
    rooms = result["rooms"]
    assert "error" not in rooms, rooms
    assert any(r["name"] == rooms["name"] and r["private"] for r in rooms["a"]), rooms
    assert any(r["name"] == rooms["name"] and r["private"] for r in rooms["b"]), rooms
    assert rooms["message"]["author"] == name_a
    assert rooms["in_lobby"] is False

    print("chat browser test:", json.dumps({"seconds": result["_seconds"], "chat_b": result["chat_b"]}))
