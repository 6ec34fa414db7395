"""A picture hung through the admin API appears in a connected browser (issue 10).

Starts ``python -m worldserver run`` hosting the default open world and the gallery world
(helpers shared with tests/test_browser.py) and runs ``tests/browser/pictures.mjs``: headless
chromium joins ``/w/gallery``; the script hangs a PNG made here with Pillow in slot
``north-1`` through ``PUT /admin/api/worlds/gallery/pictures/north-1?title=...``, and the page,
which is not touched, replaces the slot's texture with the new image and its plaque's text with
the title (its test hook reports the image name, the plaque's text, the texture's address and
width; before, the file's picture has the plaque made from its file name); a ``DELETE``
empties the slot (no plaque); closing the world shows the reason on the page, which does not
reconnect.

Needs node, the web client's node modules and ``/usr/bin/chromium`` (``bash scripts/web.sh
--browser``); a missing piece fails with that hint.
"""

from __future__ import annotations

import pytest
from PIL import Image

from test_browser import ServerProcess, _check_result, _require_tools, run_script

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TOKEN = "admin-token-of-the-picture-test-0123"
TITLE = "Rouge, \u00e9tude n\u00b0 3"  # not ASCII: the query carries UTF-8


def test_a_picture_hung_through_the_admin_api_appears_in_a_connected_page(tmp_path):
    _require_tools()
    image = tmp_path / "red.png"
    Image.new("RGB", (96, 64), (210, 30, 30)).save(image)  # a width no picture of the samples has
    srv = ServerProcess(tmp_path / "data", "--set", 'worlds.hosted=["open", "gallery"]',
                        "--set", f"server.admin_token={TOKEN}")
    try:
        srv.wait_listening()
        result = run_script("pictures.mjs", "--url", srv.http, "--token", TOKEN, "--image", str(image),
                            "--slot", "north-1", "--title", TITLE)
        _check_result(result, srv)
    finally:
        srv.stop()
    assert result["world"]["id"] == "gallery" and result["world"]["pictures"] == 12, result["world"]
    before, hung, after = result["before"], result["hung"], result["after"]
    assert before["version"] == 1 and before["slot"]["image"] == "glowing-checkerboard.png" and before["slot"]["loaded"]
    assert before["slot"]["title"] == "glowing checkerboard"  # the world file's picture: from its file name
    assert hung["image"].startswith("hung-gallery-north-1-") and hung["version"] == 2 and hung["width"] == 96
    assert hung["title"] == TITLE
    # the page fetched the new document by itself and loaded the new picture's texture
    assert after["version"] == 2 and after["updates"] == 1, after
    assert after["slot"]["image"] == hung["image"] and after["slot"]["url"] == hung["url"]
    assert after["slot"]["src"].endswith(hung["url"]) and after["slot"]["width"] == 96, after
    assert after["slot"]["title"] == TITLE  # the plaque says the title, not the stored file's name
    # taken down: an empty frame
    assert result["removed"]["status"] == 200 and result["removed"]["body"]["version"] == 3
    assert result["emptied"]["version"] == 3 and result["emptied"]["slot"]["image"] == ""
    assert result["emptied"]["slot"]["title"] == ""  # an empty frame has no plaque
    # closed: the page says why, where it shows, and stays closed
    assert result["closed"] == {"status": 200, "body": {"id": "gallery", "players": 1, "notice": True,
                                                         "reason": "the gallery is closed for the night"}}
    assert result["notice"] == "this world was closed: the gallery is closed for the night"
    assert result["notice_box"]["width"] > 100 and result["notice_box"]["top"] >= 0
    assert result["state"] == "closed"
