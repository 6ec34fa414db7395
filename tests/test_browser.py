"""The web client in a real browser against a real server process.

Starts ``python -m worldserver run`` (HTTP and UDP on free ports, WebRTC host candidates on
127.0.0.1), then drives headless Debian chromium through playwright-core with the node
scripts in ``tests/browser/`` (their helper ``launch.mjs`` is shared with the other browser
tests). Each script prints one JSON object that the assertions here read.

Needs node, the web client's node modules and build, and ``/usr/bin/chromium``: a missing
piece fails the test with the command that installs it (``bash scripts/web.sh --browser``);
nothing is skipped.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BROWSER_DIR = ROOT / "tests" / "browser"
WEB = ROOT / "clients" / "web"
CHROMIUM = Path(os.environ.get("WORLDSERVER_CHROMIUM", "/usr/bin/chromium"))
SETUP_HINT = "run `bash scripts/web.sh --browser` to install node dependencies, build the web client and install chromium"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _require_tools() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node is not installed: {SETUP_HINT}")
    if not CHROMIUM.exists():
        pytest.fail(f"chromium not found at {CHROMIUM}: {SETUP_HINT}")
    # Bring the build up to date (quick when it is): the test must run the current sources.
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "web.sh")], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"scripts/web.sh failed ({proc.stderr.strip()[-2000:]}): {SETUP_HINT}")
    if not (WEB / "node_modules" / "playwright-core").exists() or not (WEB / "dist" / "app.js").exists():
        pytest.fail(f"web client not built or playwright-core missing: {SETUP_HINT}")
    return node


class ServerProcess:
    """``worldserver run`` in a subprocess; stderr (JSON log lines) drained by a thread."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "clients" / "python")]))
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "worldserver", "run",
                "--host", "127.0.0.1", "--udp-port", "0",
                "--set", "http.port=0", "--set", "http.host=127.0.0.1",
                "--set", "webrtc.host_addresses=127.0.0.1",
                "--set", "server.log_format=json",
                "--data-dir", str(data_dir),
                *extra,
            ],
            cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self.http: str | None = None
        self._found = threading.Event()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if self.http is None and line.startswith("{"):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("msg") == "http listening":
                    if record.get("http"):
                        self.http = f"http://{record['http']}"
                    elif str(record.get("url", "")).startswith("http"):
                        self.http = str(record["url"]).rstrip("/")
                    if self.http:
                        self._found.set()
        self._found.set()  # exited

    def wait_listening(self, timeout: float = 30.0) -> str:
        self._found.wait(timeout)
        if self.http is None:
            self.stop()
            pytest.fail("server did not log its http listening address; log:\n" + self.log_tail())
        return self.http

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.lines[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)


@contextlib.contextmanager
def running_server(data_dir: Path, *extra: str):
    """A listening ``worldserver run`` (tools checked first), stopped at the end."""
    _require_tools()
    srv = ServerProcess(data_dir, *extra)
    try:
        srv.wait_listening()
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def server(tmp_path):
    """The server of the browser tests; the other browser test modules import this fixture."""
    with running_server(tmp_path / "data") as srv:
        yield srv


def run_script(name: str, *args: str, timeout: float = 150.0) -> dict:
    """Runs a node script of tests/browser; returns its JSON result (fails on a bad one)."""
    started = time.monotonic()
    proc = subprocess.run(
        ["node", str(BROWSER_DIR / name), *args, "--timeout", str(int(timeout - 10))],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if not lines:
        pytest.fail(f"{name} printed no result (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1])
    result["_seconds"] = round(time.monotonic() - started, 1)
    return result


def _check_result(result: dict, server: ServerProcess) -> None:
    if not result.get("ok"):
        pytest.fail(
            f"browser script failed: {result.get('error')}\n"
            f"page logs: {json.dumps(result.get('logs', []), indent=1)}\n"
            f"server log tail:\n{server.log_tail()}"
        )


def _check_movement(result: dict) -> None:
    assert result["self_a"] != result["self_b"]
    # The default world is the closed gallery room; A walked the way with the most room in it.
    assert result["world"] == "gallery", result["world"]
    # B saw A's avatar move more than 3 m the way A walked, and A's view turned that way.
    assert result["seen_moved"] > 3.0 and result["moved"] > 3.0, result
    turn = (result["walk_yaw"] - result["way"]["yaw"]) % (2 * math.pi)
    assert min(turn, 2 * math.pi - turn) < 1e-6, (result["walk_yaw"], result["way"])
    # once A stopped, B's view of A settled within 0.5 m of A's own position.
    a_self, seen = result["self_a_after"], result["seen_settled"]
    assert a_self is not None
    assert math.hypot(a_self["x"] - seen["x"], a_self["z"] - seen["z"]) < 0.5, result
    # A turned round and walked back with the W key (where the view looks), and B saw it stop.
    assert result["keyboard_moved"] > 2.0, result
    stop, seen = result["keyboard_stop"], result["keyboard_seen"]
    assert math.hypot(stop["x"] - seen["x"], stop["z"] - seen["z"]) < 0.5, result
    for key in ("stats_a", "stats_b"):
        st = result[key]
        assert st["state"] == "connected", st
        assert st["snapshots_per_s"] > 0, st  # rates and round trips depend on the machine
        assert st["entities"] >= 2, st
        assert st["rtt_ms"] is not None and st["rtt_ms"] > 0, st


def _check_join_errors(result: dict) -> None:
    taken, markup = result["join_errors"]
    assert "belongs to someone else" in taken["text"], taken
    assert "<" in markup["text"] and markup["elements"] == 0, markup  # shown as text, not HTML
    assert taken["overlay"] and markup["overlay"]


def _check_png(path: Path, result: dict) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "screenshot is not a PNG"
    assert len(data) > 10_000, f"screenshot suspiciously small ({len(data)} bytes)"
    image = result["image"]
    assert image["width"] >= 640 and image["height"] >= 400, image
    # A rendered room has many colours and some contrast; a blank page has one colour.
    assert image["distinct_colors"] > 200, image
    assert image["luminance_std"] > 8, image


def test_two_players_see_each_other_move_over_webrtc(server, tmp_path):
    shot = tmp_path / "gallery.png"
    result = run_script("two_players.mjs", "--url", server.http, "--screenshot", str(shot))
    _check_result(result, server)
    assert result["webrtc_present"] is True
    for key in ("a", "b"):
        st = result[f"stats_{key}"]
        assert result[f"transport_{key}"] == "webrtc", (
            f"page {key.upper()} is on {result[f'transport_{key}']}: webrtc_error={st.get('webrtc_error')!r}, "
            f"last_close_reason={st.get('last_close_reason')!r}; page logs: {result.get('logs')}"
        )
    _check_movement(result)
    # The data channel opened (within the configured timeout: the page did not fall back).
    assert result["stats_a"]["offer_to_open_ms"] > 0 and result["stats_b"]["offer_to_open_ms"] > 0
    # B knows A's nickname from /api/players and, looking at A, shows it over A's avatar.
    assert result["name_seen"] == result["names"][0]
    assert result["label_a"] is not None, result["tags_b"]
    assert result["names"][0] in result["labels"], result["tags_b"]
    _check_join_errors(result)
    _check_png(shot, result)


def test_a_name_comes_back_with_its_secret_and_a_new_window_replaces_the_old(tmp_path):
    """The page keeps its name's secret in localStorage: a second window of the same browser
    joining as the same name takes it back, and the first window's avatar and chat end with
    "signed in elsewhere" instead of reconnecting; a reload gets the name again; another
    browser (no secret) is refused. Then the operator kicks that window: it says who removed it,
    why and for how long -- not "signed in elsewhere" -- and does not reconnect."""
    token = "names-browser-admin-token-0123456789"
    with running_server(tmp_path / "data", "--set", f"server.admin_token={token}") as server:
        result = run_script("names.mjs", "--url", server.http, "--token", token)
        _check_result(result, server)
    assert result["secret_length"] == 43
    assert result["first"]["session"] == "replaced" and "signed in elsewhere" in result["first"]["error"]
    assert result["first"]["chat"] == "replaced"
    assert result["second"]["session"] == "connected" and result["second"]["chat"] == "ready"
    assert result["second"]["self_id"] != result["first"]["self_id"]
    assert result["avatars_named"] == 1, result  # one avatar of the name in the world
    assert "belongs to someone else" in result["stranger_error"]
    assert result["reloaded"]["session"] == "connected" and result["reloaded"]["name"] == result["name"]
    assert result["prefilled"] == result["name"]
    assert result["first"]["notice"] == result["first"]["error"]  # a newer login shows why, too
    # the kick: DISCONNECT kicked with the server's text, in the status and the notice; the
    # chat socket closed with the same text; neither reconnects (a ban would refuse it)
    told = "removed by the operator: testing the kick; banned for 2 min"
    kicked = result["kicked"]
    assert (kicked["session"], kicked["error"], kicked["notice"]) == ("kicked", told, told), kicked
    assert (kicked["chat"], kicked["chat_error"]) == ("kicked", told), kicked
    assert kicked["reconnects"] == result["reloaded"]["reconnects"]
    assert result["avatars_named_after_kick"] == 0


def test_websocket_fallback_when_webrtc_is_blocked(server, tmp_path):
    shot = tmp_path / "gallery-ws.png"
    result = run_script("two_players.mjs", "--url", server.http, "--screenshot", str(shot), "--block-webrtc")
    _check_result(result, server)
    assert result["webrtc_present"] is False
    assert result["transport_a"] == "websocket", result["stats_a"]
    assert result["transport_b"] == "websocket", result["stats_b"]
    _check_movement(result)
    _check_join_errors(result)
    assert result["stats_a"]["offer_to_open_ms"] is None
    _check_png(shot, result)


def test_the_page_builds_a_world_file_and_its_avatar_stops_at_the_walls(tmp_path):
    """Issue 10: with the server on the gallery world file, the page builds the room from
    the world document (12 picture slots), the own avatar walks into the north wall and slides
    along it, the server stops it at the wall (its circle touching the wall's face), and the
    prediction, which uses the same walls, is never corrected by more than 5 cm."""
    with running_server(tmp_path / "data", "--set", "worlds.hosted=gallery") as srv:
        result = run_script("walls.mjs", "--url", srv.http)
        _check_result(result, srv)
    assert result["world"] == {"id": "gallery", "pictures": 12, "walls": True}, result["world"]
    face = 10.0 - 0.15 - 0.35  # the north wall's inner face minus the avatar's radius
    assert abs(result["end"]["z"] - face) < 0.02, result["end"]
    assert result["end"]["x"] > result["start"]["x"] + 1.0, result  # it slid along the wall
    assert result["stats"]["max_correction_m"] < 0.05, result["stats"]
