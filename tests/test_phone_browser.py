"""The page on a phone (issue 10): touch controls, the folded chat and the status toggle.

Starts ``python -m worldserver run`` (helpers shared with tests/test_browser.py) and runs
``tests/browser/phone.mjs``: headless chromium emulating a Pixel 7 (412 x 839, touch,
mobile). A finger on the touch stick walks the avatar (the server's position moves, forward
where the camera looks, and stops when the finger lifts); a drag across the view turns it;
another player's chat message shows as an unread count on the folded chat's button, and a tap
opens the chat with the message in it, the own avatar still in view above it; the status panel is hidden without ``?debug`` and shown
with it (and by its toggle); the panels leave the view clear.

Needs node, the web client's node modules and ``/usr/bin/chromium`` (``bash scripts/web.sh
--browser``); a missing piece fails with that hint.
"""

from __future__ import annotations

import math

import pytest

from test_browser import _check_result, run_script, server  # noqa: F401 (server: the fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]



def test_a_phone_walks_with_the_stick_and_keeps_the_view_clear(server, tmp_path):
    result = run_script("phone.mjs", "--url", server.http)
    _check_result(result, server)
    assert result["device"]["isMobile"] and result["device"]["hasTouch"]
    assert result["touch"]["coarse"] or result["touch"]["maxTouchPoints"] > 0, result["touch"]

    # Joined without ?debug: chat folded to its button, status hidden, the stick shown.
    joined = result["joined"]
    hook = joined["hook"]
    assert hook["small"] and hook["folded"] and not hook["status"] and hook["chat_button"] and hook["stick"], hook
    boxes = joined["boxes"]
    assert boxes["status"] is None and boxes["chat"] is None and boxes["overlay"] is None, boxes
    assert boxes["chat-button"] is not None and boxes["stick"] is not None and boxes["status-toggle"] is not None
    assert result["covered_joined"] < 0.08, result["covered_joined"]  # the view is clear

    # The stick walked the avatar forward (where the camera looks, turned first the way with
    # the most room in the default world, the closed gallery room), on the server.
    assert result["world"] == "gallery", result["world"]
    start, moved = result["start"], result["moved"]
    dx, dz = moved["x"] - start["x"], moved["z"] - start["z"]
    dist = math.hypot(dx, dz)
    assert dist > 3.0
    yaw = result["yaw0"]
    assert (dx * math.sin(yaw) + dz * math.cos(yaw)) / dist > 0.9, (dx, dz, yaw)
    assert result["stopped"] is not None
    # A drag across the view turned it (about 165 px at 0.005 rad per pixel).
    assert result["yaw1"] - result["yaw0"] > 0.3, (result["yaw0"], result["yaw1"])

    # B's message (not B's join notice) counted on the folded chat's button.
    assert result["unread"]["unread"] == 1, result["unread"]
    assert result["before_open"]["badge"] == "1", result["before_open"]
    # A tap opened the chat over the lower part of the view, above the button, count cleared.
    opened = result["opened"]
    assert not opened["hook"]["folded"] and opened["hook"]["unread"] == 0 and opened["badge"] == ""
    chat, button, vh = opened["boxes"]["chat"], opened["boxes"]["chat-button"], opened["viewport"]["height"]
    assert chat is not None and button is not None
    assert chat["bottom"] <= button["top"] and chat["bottom"] - chat["top"] <= 0.5 * vh, (chat, button, vh)
    assert result["shown_text"] is True
    # ...and the own avatar stays in view above it (the picture moved up); the stick hides.
    mine = opened["self_tag"]
    assert mine is not None and mine["displayed"] and mine["rect"]["bottom"] <= chat["top"], (mine, chat)
    assert opened["boxes"]["stick"] is None
    folded = result["folded"]
    assert folded["hook"]["folded"] and folded["boxes"]["chat"] is None and folded["boxes"]["stick"] is not None

    # The status panel: the toggle shows it; ?debug shows it from the start.
    assert result["toggled"]["hook"]["status"] and result["toggled"]["boxes"]["status"] is not None
    debug = result["debug"]
    assert debug["hook"]["debug"] and debug["hook"]["status"] and debug["boxes"]["status"] is not None
