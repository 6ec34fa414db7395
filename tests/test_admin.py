"""The admin API and the ``worldserver`` admin commands against real servers with bots.

Servers run in process (``worldserver.app.serve`` on loopback, free ports) or, for the drain and
SIGTERM, as ``worldserver run`` processes; bots are real UDP clients (``worldclient.client``),
chat clients (``worldclient.chat_client``) and, for one refusal, a raw ``/ws/movement``
socket. Every admin command runs as the real ``python -m worldserver`` command. Nothing here
sleeps for a time: it waits for conditions, each under a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from protocol import PROTOCOL_VERSION
from protocol.client import ClientConnection
from protocol.events import Refused
from worldclient.chat_client import ChatRequestError, open_chat
from worldclient.client import ConnectFailed, open_client
from worldclient.join import JoinFailed, join
from worldserver.admin_api import token_path
from worldserver.app import serve
from worldserver.config import load_config
from worldserver.moderation import ban_length, kick_text

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 20.0
TOKEN = "admin-token-of-the-tests-0123456789"
CHAT_ADMIN = "chat-moderator-token"


def make_config(data_dir: Path, **overrides):
    base = {"udp.host": "127.0.0.1", "udp.port": "0", "http.host": "127.0.0.1", "http.port": "0",
            "server.stats_interval": "60", "gc.freeze_after_start": "false", "server.data_dir": str(data_dir),
            "http.images_dir": str(data_dir / "images"), "server.admin_token": TOKEN,
            "chat.admin_token": CHAT_ADMIN, "chat.admin_failure_delay": "0"}
    base.update({k: str(v) for k, v in overrides.items()})
    return load_config(path=None, env={}, overrides=base)


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORLDSERVER_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "clients" / "python")])
    env.update(extra)
    return env


async def cli(*args: str, url: str | None = None, token: str | None = TOKEN, env: dict | None = None,
              cwd: Path = ROOT) -> tuple[int, str, str]:
    """``python -m worldserver ARGS [--url URL] [--token TOKEN]``: (exit code, stdout, stderr)."""
    command = [sys.executable, "-m", "worldserver", *args]
    if url is not None:
        command += ["--url", url]
    if token is not None:
        command += ["--token", token]
    with trio.fail_after(DEADLINE):
        done = await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False,
                                      env=env or _env(), cwd=cwd)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def until(predicate, what: str, timeout: float = DEADLINE) -> None:
    """Wait until ``predicate()`` holds; fail naming ``what`` after ``timeout`` seconds."""
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.02)
        return
    raise AssertionError(f"timed out waiting for {what}")


def api(url: str, token: str | None = TOKEN) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.AsyncClient(base_url=url, headers=headers, timeout=DEADLINE)


async def players_of(url: str) -> list[dict]:
    rc, out, err = await cli("players", "--json", url=url)
    assert rc == 0, err
    return json.loads(out)


def is_notice(text_part: str):
    def check(event) -> bool:
        message = event.fields.get("message") or {}
        return (event.name == "message" and message.get("kind") == "notice" and message.get("author") == "server"
                and text_part in message.get("text", ""))
    return check


class Served:
    """An in-process server: its RunningServer, HTTP base URL, UDP port and counters."""

    def __init__(self, running) -> None:
        self.running = running
        self.url = f"http://127.0.0.1:{running.http_port}"
        self.udp = running.udp_address[1]
        self.stats = running.stats


@pytest.fixture
async def server(nursery, tmp_path):
    return Served(await nursery.start(serve, make_config(tmp_path, **{"worlds.hosted": '["gallery", "halls"]'})))


# -- authentication ----------------------------------------------------------------------------


async def test_a_server_without_a_token_writes_a_private_one_and_refuses_others(nursery, tmp_path):
    running = await nursery.start(serve, make_config(tmp_path, **{"server.admin_token": ""}))
    url = f"http://127.0.0.1:{running.http_port}"
    path = Path(token_path(running.admin.config))
    assert path == tmp_path / "admin.token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text().strip()
    assert len(token) >= 40 and token == running.admin.token

    async with api(url, token) as good, api(url, None) as anonymous, api(url, "not-the-token") as wrong:
        assert (await good.get("/admin/api/status")).status_code == 200
        answers = [await anonymous.get("/admin/api/status"), await wrong.get("/admin/api/status"),
                   await wrong.get("/admin/api/no-such-route"), await wrong.post("/admin/api/drain"),
                   await anonymous.post("/admin/api/players/1/kick", json={"ban": 60}),
                   await good.get("/admin/api/status", headers={"Authorization": f"Basic {token}"})]
        for answer in answers:  # the same bare 401 whatever the path, method or token
            assert answer.status_code == 401 and answer.json() == {"error": "unauthorized"}
            assert answer.headers["WWW-Authenticate"] == "Bearer"
        assert (await good.get("/admin/api/no-such-route")).status_code == 404
        assert (await good.get("/admin/api/drain")).status_code == 405
    assert running.moderation.draining is False  # the refused drain did nothing
    assert running.stats.get("drop.admin_api_no_token") == 3
    assert running.stats.get("drop.admin_api_token_wrong") == 3

    # the commands find the token in the file under --data-dir, in the environment, or --token
    rc, out, err = await cli("status", "--json", "--data-dir", str(tmp_path), url=url, token=None)
    assert rc == 0, err
    assert json.loads(out)["clients"]["total"] == 0
    rc, out, err = await cli("status", "--json", url=url, token=None,
                             env=_env(WORLDSERVER_SERVER_ADMIN_TOKEN=token))
    assert rc == 0, err
    rc, out, err = await cli("status", url=url, token="wrong-token-of-a-guess")
    assert rc == 1 and out == ""
    assert err.splitlines() == [f"error: the server at {url} refused the admin token (from --token)"]
    rc, out, err = await cli("status", "--data-dir", str(tmp_path / "elsewhere"), url=url, token=None)
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("error: no admin token:")


async def test_wrong_tokens_lock_the_address_out_of_the_admin_api_and_the_chat_together(nursery, tmp_path):
    running = await nursery.start(serve, make_config(tmp_path, **{"chat.admin_max_failures": 3}))
    url = f"http://127.0.0.1:{running.http_port}"
    async with api(url, "guess-number-one") as wrong, api(url) as good:
        for _ in range(3):
            assert (await wrong.get("/admin/api/status")).status_code == 401
        locked = await good.get("/admin/api/status")  # the right token, but nothing is compared now
        assert locked.status_code == 401 and locked.json() == {"error": "unauthorized"}
    assert running.stats.get("drop.admin_api_token_wrong") == 3
    assert running.stats.get("drop.admin_api_locked_out") == 1
    # the chat's moderator hello shares the guard: the address is locked out there too
    moderator = await join(url, "mia")
    with pytest.raises(ChatRequestError) as info:
        async with open_chat(url, moderator.token, admin_token=CHAT_ADMIN, reconnect=False):
            pass
    assert info.value.code == "forbidden" and "too many wrong admin tokens" in str(info.value)


# -- status, players, top ----------------------------------------------------------------------


async def test_status_and_players_with_bots_in_two_worlds(server):
    url, host, udp = server.url, "127.0.0.1", server.udp
    async with open_client(host, udp, http=url, name="ann", world="gallery") as ann, \
            open_client(host, udp, http=url, name="ben", world="gallery") as ben, \
            open_client(host, udp, http=url, name="hal", world="halls") as hal:
        for bot in (ann, ben, hal):
            await bot.send_input(1.0, 0.0)
        async with api(url) as http:
            async def status() -> dict:
                answer = await http.get("/admin/api/status")
                assert answer.status_code == 200
                return answer.json()

            with trio.fail_after(DEADLINE):  # rates are sampled every second
                while (s := await status())["bytes_per_second"]["udp"]["out"] <= 0:
                    await trio.sleep(0.05)
        assert s["clients"] == {"udp": 3, "webrtc": 0, "ws": 0, "hatongsu": 0, "total": 3}
        assert s["entities"] == 3 and s["tick_rate"] == 20 and s["version"]
        worlds = {w["id"]: w for w in s["worlds"]}
        assert worlds["gallery"]["players"] == 2 and worlds["gallery"]["clients"]["udp"] == 2
        assert worlds["halls"]["players"] == 1 and worlds["halls"]["entities"] == 1 and worlds["gallery"]["default"]
        assert s["tick"]["duration_ms"]["p99"] >= s["tick"]["duration_ms"]["p50"] > 0
        assert set(s["bytes_per_second"]) == {"udp", "webrtc", "ws", "chat"} and s["uptime"] > 0
        assert {"pause_ms_max", "pause_ms_p99", "collections"} <= set(s["gc"]) and isinstance(s["drops"], dict)
        assert s["chat"] == {"rooms": 0, "users": 0, "sockets": 0, "messages_per_second": 0.0}
        assert s["draining"] is None

        rc, out, err = await cli("status", url=url)
        assert rc == 0, err
        lines = out.splitlines()
        assert "clients   udp 3  webrtc 0  ws 0  hatongsu 0  total 3" in lines
        assert lines[lines.index("") + 1].split() == ["world", "players", "udp", "webrtc", "ws", "hatongsu",
                                                      "entities", "tick"]

        with trio.fail_after(DEADLINE):  # the server knows a round-trip time once a snapshot was acked
            players = await players_of(url)
            while any(p["rtt_ms"] is None for p in players):
                await trio.sleep(0.05)
                players = await players_of(url)
        assert sorted(p["name"] for p in players) == ["ann", "ben", "hal"]
        by_name = {p["name"]: p for p in players}
        for name, bot, world in (("ann", ann, "gallery"), ("ben", ben, "gallery"), ("hal", hal, "halls")):
            player = by_name[name]
            assert player["transport"] == "udp" and player["world"] == world
            assert player["entity_id"] == bot.entity_id
            assert player["address"] == f"127.0.0.1:{bot.sock.getsockname()[1]}"
            assert len(player["position"]) == 3 and all(isinstance(v, float) for v in player["position"])
            assert player["bytes_out"] > 0 and player["bytes_in"] > 0 and player["connected_for"] >= 0
        assert len({p["id"] for p in players}) == 3  # ids are unique across worlds (entity ids are not)
        rc, out, err = await cli("players", url=url)
        assert rc == 0, err
        table = out.splitlines()
        assert table[0].split() == ["id", "name", "world", "transport", "address", "position", "rtt", "ms",
                                    "connected", "in", "out"]
        assert sorted(row.split()[1] for row in table[1:]) == ["ann", "ben", "hal"]

        rc, out, err = await cli("top", "--count", "2", url=url)
        assert rc == 0, err
        assert out.count("clients   udp 3") == 2
        rc, out, err = await cli("top", "--json", "--count", "2", url=url)
        assert rc == 0, err
        frames = [json.loads(line) for line in out.splitlines()]
        assert len(frames) == 2 and all(f["clients"]["total"] == 3 for f in frames)


# -- kick, ban, mute, notice -------------------------------------------------------------------


async def test_kick_ends_the_avatar_for_everyone_and_the_chat_and_a_ban_refuses_a_rejoin(server):
    url, udp = server.url, server.udp
    async with open_client("127.0.0.1", udp, http=url, name="watcher", world="gallery") as watcher, \
            open_client("127.0.0.1", udp, http=url, name="rude", world="gallery") as rude:
        await until(lambda: rude.entity_id in watcher.mirror.entities(), "the watcher to see the rude bot")
        async with open_chat(url, rude.joined.token, reconnect=False) as rude_chat, \
                open_chat(url, watcher.joined.token) as watcher_chat:
            player = next(p for p in await players_of(url) if p["name"] == "rude")
            assert player["chat_sockets"] == 1
            rc, out, err = await cli("kick", str(player["id"]), "--reason", "spamming the gallery", "--ban", "600",
                                     url=url)
            assert rc == 0, err
            assert out.strip() == "kicked rude: 1 avatar(s), 1 chat socket(s); banned for 600 s"
            await until(lambda: rude.entity_id not in watcher.mirror.entities(), "the avatar to leave the view")
            await until(lambda: not rude.connected, "the kicked client to be disconnected")
            # DISCONNECT kicked (not replaced: no newer login) says who, why and how long; the
            # chat socket closes with the same words
            told = "removed by the operator: spamming the gallery; banned for 10 min"
            assert (rude.closed_reason, rude.closed_text) == ("kicked", told)
            await until(lambda: rude_chat.close_code is not None, "the chat socket to close")
            assert (rude_chat.close_code, rude_chat.close_reason) == (4001, told)
            assert watcher_chat.connected and watcher.connected
            assert [p["name"] for p in await players_of(url)] == ["watcher"]
    assert server.stats.get("clients.left.kicked") == 1
    # the ban: the name is refused, even with its secret, and says for how long
    with pytest.raises(JoinFailed) as info:
        await join(url, "rude", secret=rude.joined.secret)
    assert (info.value.status, info.value.code) == (403, "banned") and 599 <= info.value.retry_after <= 600
    assert server.stats.get("drop.banned_join") == 1
    # a kick without a ban: the player may come straight back with its secret
    async with open_client("127.0.0.1", udp, http=url, name="loud") as loud:
        rc, out, err = await cli("kick", "loud", "--json", url=url)  # by name this time
        assert rc == 0, err
        assert json.loads(out) == {"name": "loud", "sessions": 1, "chat_sockets": 0, "ban": 0.0,
                                   "addresses_banned": 0}
        await until(lambda: not loud.connected, "the second kick")
        assert (loud.closed_reason, loud.closed_text) == ("kicked", "removed by the operator")  # the default reason
    again = await join(url, "loud", secret=loud.joined.secret)
    assert again.name == "loud"
    rc, out, err = await cli("kick", "99999", url=url)
    assert (rc, out) == (1, "") and err.splitlines() == ["error: no such player: '99999' (404)"]


def test_a_kicked_player_is_told_who_why_and_for_how_long():
    assert kick_text("spamming the gallery", 600, "admin") == "removed by the operator: spamming the gallery; banned for 10 min"
    assert kick_text("kicked by the operator", 0, "admin") == "removed by the operator"  # the default says nothing more
    assert kick_text("kicked by a moderator", 60, "moddy") == "removed by a moderator; banned for 60 s"
    assert kick_text("  rude\n  words ", 0, "moddy") == "removed by a moderator: rude words"  # one line
    assert kick_text("why", 0) == "removed by the operator: why"  # the server's own code (no ``by``)
    assert [ban_length(s) for s in (0.2, 119, 120, 601, 7199, 7200, 172_799, 172_800, 365 * 86400)] == [
        "1 s", "119 s", "2 min", "11 min", "120 min", "2 h", "48 h", "2 days", "365 days"]


async def test_a_moderators_chat_kick_is_the_same_kick(server):
    url, udp = server.url, server.udp
    moderator = await join(url, "moddy")
    async with open_client("127.0.0.1", udp, http=url, name="watcher") as watcher, \
            open_client("127.0.0.1", udp, http=url, name="carol") as carol, \
            open_chat(url, moderator.token, admin_token=CHAT_ADMIN) as mod:
        await until(lambda: carol.entity_id in watcher.mirror.entities(), "the watcher to see carol")
        reply = await mod.request("mod.kick", user="Carol")
        assert reply["user"] == "carol" and reply["closed"] == 0
        await until(lambda: carol.entity_id not in watcher.mirror.entities(), "carol's avatar to leave")
        await until(lambda: not carol.connected, "carol's client to be disconnected")
        assert (carol.closed_reason, carol.closed_text) == ("kicked", "removed by a moderator; banned for 60 s")
    assert server.stats.get("clients.left.kicked") == 1 and server.stats.get("moderation.kicks") == 1
    with pytest.raises(JoinFailed) as info:  # a moderator's kick bans the name for a minute
        await join(url, "carol", secret=carol.joined.secret)
    assert info.value.code == "banned"


async def test_a_ban_refuses_the_udp_address_of_an_anonymous_player(nursery, tmp_path):
    config = make_config(tmp_path, **{"net.require_connect_token": "false", "limits.trusted_networks": "[]"})
    running = await nursery.start(serve, config)
    url, udp = f"http://127.0.0.1:{running.http_port}", running.udp_address[1]
    async with open_client("127.0.0.1", udp) as guest:
        player = (await players_of(url))[0]
        assert player["name"].startswith("guest-")
        rc, out, err = await cli("kick", str(player["id"]), "--ban", "300", "--json", url=url)
        assert rc == 0, err
        assert json.loads(out)["addresses_banned"] == 1
        await until(lambda: not guest.connected, "the guest to be kicked")
        # no token held the guest's avatar: the kick ended it directly, and told it the same way
        assert (guest.closed_reason, guest.closed_text) == ("kicked", "removed by the operator; banned for 5 min")
    with pytest.raises(ConnectFailed) as info:  # a new socket, so a new port: the address is banned
        async with open_client("127.0.0.1", udp):
            pass
    assert info.value.reason == "banned" and "banned for" in str(info.value)
    assert running.stats.get("drop.banned_udp") == 1


async def test_mute_unmute_and_notices_reach_chat_clients(server):
    url, udp = server.url, server.udp
    async with open_client("127.0.0.1", udp, http=url, name="talker") as talker, \
            open_chat(url, talker.joined.token) as talker_chat:
        listener = await join(url, "listener")
        async with open_chat(url, listener.token) as listener_chat:
            lobby = talker_chat.public_room
            rc, out, err = await cli("mute", "talker", "--seconds", "300", url=url)
            assert (rc, out.strip()) == (0, "muted talker for 300 s"), err
            with pytest.raises(ChatRequestError) as info:
                await talker_chat.send(lobby, "can anyone hear me?")
            assert info.value.code == "muted" and 299 <= info.value.retry_after <= 300
            muted = next(p for p in await players_of(url) if p["name"] == "talker")
            assert 299 <= muted["muted_for"] <= 300
            rc, out, err = await cli("unmute", str(muted["id"]), url=url)
            assert (rc, out.strip()) == (0, "unmuted talker"), err
            await talker_chat.send(lobby, "back again")
            rc, out, err = await cli("unmute", "talker", url=url)
            assert (rc, out.strip()) == (0, "talker was not muted"), err

            rc, out, err = await cli("notice", "The gallery closes in ten minutes", url=url)
            assert rc == 0, err
            for chat in (listener_chat, talker_chat):
                await chat.wait_for(is_notice("The gallery closes in ten minutes"), timeout=DEADLINE)
            rc, out, err = await cli("notice", "Only in the lobby", "--room", "lobby", "--json", url=url)
            assert rc == 0 and json.loads(out)["rooms"] == [lobby], err
            await listener_chat.wait_for(is_notice("Only in the lobby"), timeout=DEADLINE)
            rc, out, err = await cli("notice", "lost", "--room", "no-such-room", url=url)
            assert (rc, err.splitlines()) == (1, ["error: no such room (404)"])
            rc, out, err = await cli("notice", "bad \x07 bell", url=url)
            assert rc == 1 and "control character" in err
            rc, out, err = await cli("mute", "nobody-here", url=url)
            assert (rc, err.splitlines()) == (1, ["error: no such player: 'nobody-here' (404)"])


async def test_usage_errors_and_an_unreachable_server(server):
    for args in (["kick"], ["kick", "1", "--ban", "-5"], ["mute", "1", "--seconds", "abc"], ["drain", "--grace", "x"],
                 ["notice"], ["status", "--url", "ftp://example.org"]):
        rc, out, err = await cli(*args)
        assert rc == 2, (args, err)
    rc, out, err = await cli("players", url="http://127.0.0.1:9")
    assert rc == 1 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: cannot reach the server at http://127.0.0.1:9")


# -- drain -------------------------------------------------------------------------------------


class ServerProcess:
    """``worldserver run`` in ``workdir`` (JSON log to a file): ports, log records, exit code."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        self.workdir = workdir
        self.log_path = workdir / "server.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worldserver", "run", "--host", "127.0.0.1", "--udp-port", "0",
             "--set", "http.host=127.0.0.1", "--set", "http.port=0", "--set", "server.log_format=json",
             "--set", "webrtc.enabled=false", "--set", "server.stats_interval=3600",
             "--data-dir", str(workdir / "data"), "--set", f"http.images_dir={workdir / 'images'}", *extra],
            cwd=workdir, env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log,
        )  # fmt: skip
        self.udp = self.http = 0

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]

    async def started(self) -> None:
        def ports() -> bool:
            assert self.proc.poll() is None, self.log_path.read_text()
            for record in self.records():
                if record.get("msg") == "listening":
                    self.udp = int(record["udp"].rsplit(":", 1)[1])
                elif record.get("msg") == "http listening":
                    self.http = int(record["http"].rsplit(":", 1)[1])
            return bool(self.udp and self.http)

        await until(ports, "the server to listen", 30.0)
        self.url = f"http://127.0.0.1:{self.http}"

    async def exit_code(self) -> int:
        with trio.fail_after(DEADLINE):
            while self.proc.poll() is None:
                await trio.sleep(0.05)
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def server_process(tmp_path):
    processes = []

    def start(*extra: str) -> ServerProcess:
        processes.append(ServerProcess(tmp_path, *extra))
        return processes[-1]

    yield start
    for process in processes:
        process.close()


async def assert_refused_everywhere(process: ServerProcess, joined_before) -> None:
    """While draining: the HTTP join (503), a UDP connect with a connect token from before the
    drain and a /ws/movement HELLO (REFUSE shutting_down) are all refused."""
    with pytest.raises(JoinFailed) as info:
        await join(process.url, "latecomer")
    assert (info.value.status, info.value.code) == (503, "shutting_down")
    with pytest.raises(ConnectFailed) as refused:
        async with open_client("127.0.0.1", process.udp, joined=joined_before):
            pass
    assert refused.value.reason == "shutting_down"
    async with open_websocket_url(f"ws://127.0.0.1:{process.http}/ws/movement") as ws:
        conn = ClientConnection(version=PROTOCOL_VERSION, nonce=11, token=joined_before.token.encode(), trusted=True)
        await ws.send_message(conn.connect(trio.current_time()))
        with trio.fail_after(DEADLINE):
            events, _ = conn.receive_datagram(bytes(await ws.get_message()), trio.current_time())
    assert [(type(e), e.reason) for e in events] == [(Refused, "shutting_down")]


async def test_drain_refuses_newcomers_tells_the_players_and_exits_zero_once_they_left(server_process):
    process = server_process()
    await process.started()
    url = process.url
    late = await join(url, "late")  # its connect token will be tried during the drain
    async with open_client("127.0.0.1", process.udp, http=url, name="first") as first, \
            open_client("127.0.0.1", process.udp, http=url, name="second") as second, \
            open_chat(url, first.joined.token) as chat:
        # no --token: the command reads <data_dir>/admin.token, as an operator on the machine would
        rc, out, err = await cli("drain", "--grace", "120", "--data-dir", str(process.workdir / "data"),
                                 url=url, token=None)
        assert rc == 0, err
        assert out.strip() == ("draining: 2 player(s) connected; the server stops when they have left, "
                               "in 120 s at the latest")
        await chat.wait_for(is_notice("shutting down in 120 s"), timeout=DEADLINE)
        await assert_refused_everywhere(process, late)
        rc, out, err = await cli("status", "--json", "--data-dir", str(process.workdir / "data"), url=url,
                                 token=None)
        assert rc == 0 and 0 < json.loads(out)["draining"]["stops_in"] <= 120, err
        assert process.proc.poll() is None and first.connected and second.connected  # waiting for them
    assert await process.exit_code() == 0  # they left, well before the 120 s
    records = process.records()
    assert any(r.get("msg") == "draining" and r.get("players") == 2 for r in records)
    assert any(r.get("msg") == "drained" and r.get("players_left") == 0 for r in records)
    assert "Traceback" not in process.log_path.read_text()


async def test_sigterm_drains_and_a_second_sigterm_stops_at_once(server_process):
    process = server_process("--set", "server.drain_grace=300")
    await process.started()
    late = await join(process.url, "late")
    async with open_client("127.0.0.1", process.udp, http=process.url, name="stayer") as stayer:
        process.proc.send_signal(signal.SIGTERM)
        with pytest.raises(JoinFailed):  # wait until the drain is on
            with trio.fail_after(DEADLINE):
                while True:
                    await join(process.url, f"probe-{os.urandom(3).hex()}")
        await assert_refused_everywhere(process, late)
        assert stayer.connected and process.proc.poll() is None
        process.proc.send_signal(signal.SIGTERM)
        await until(lambda: not stayer.connected, "the second SIGTERM to end the session")
        assert stayer.closed_reason == "server_shutdown"
    assert await process.exit_code() == 0
    messages = [r.get("msg") for r in process.records()]
    assert "draining" in messages and "shutting down" in messages and "stopped" in messages
