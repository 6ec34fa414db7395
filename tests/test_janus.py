"""The Janus SFU backend (worldserver/calls/janus.py) against the real Janus.

Each test starts Debian's ``janus`` (``/usr/bin/janus``; skipped with the reason where it is
missing) in ``tmp_path`` on a free loopback port through :class:`JanusProcess`, and drives it
with :class:`JanusBackend`. A second plain :class:`JanusClient` plays the browser: it joins
the VideoRoom as a publisher without media with a ticket's token, and reads the events Janus
sends it (kicked, destroyed). What is checked: only the VideoRoom plugin and the WebSockets
transport load; a ticket lets its holder into its room only; a revoke kicks the holder (and
anyone in the room under a display no ticket has) and its token stops working; closing a room
ends it; a frozen Janus makes calls fail at their deadline (a revoke that failed so is done
once Janus answers again), a killed one is reported and
calls fail at once, and a restarted one gets the rooms and tokens again; operator mistakes
give one-line StartupErrors naming the setting; open_sfu starts what ``[calls]`` asks for; and
the whole server (``worldserver.app.serve``) puts a group over ``calls.mesh_max`` in a Janus
room whose tickets let pages in, and kicks the one who walks away.

Stopping our Janus: one that has answered gets SIGTERM and exits cleanly; one stopped while it
starts gets SIGKILL at once (Janus 1.1.2 misses a SIGTERM then, which made the stop wait the
whole grace): checked by the signal used and the exit status, not by the time taken.

Janus dies with the server: a server-like parent process (a small Python script that runs
JanusProcess) killed with SIGKILL leaves no Janus behind (PR_SET_PDEATHSIG, through
worldserver/children.py; tests/child_support.py has the process helpers), a Janus left from
an earlier run (its pid in ``janus.pid``, and still a ``janus`` with our configuration folder)
is stopped at the next start, and a pid file naming anything else (the test's own ``sleep``,
a Janus of another folder, a pid nobody has, garbage) leaves that process alone.

Must not: depend on machine speed (waits are for events, bounded by generous deadlines; the
one short deadline is the frozen Janus's, which never answers), or leave a Janus running
(every one is a child of the test's nursery, or killed by the test that made it elsewhere).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import stat
import subprocess

import pytest
import trio
from trio_websocket import serve_websocket

from child_support import GENEROUS, kill_if_running, killed_parent_takes_its_child
from worldserver.calls import janus as janus_module
from worldserver.calls.janus import (
    JanusBackend, JanusError, JanusGone, JanusProcess, JanusTimeout, VIDEOROOM, janus_info, open_janus, open_sfu,
    public_url, serve_sfu,
)
from worldclient.chat_client import open_chat
from worldclient.client import open_client
from worldserver.app import serve
from worldserver.calls.sfu import SfuError, SfuTicket
from worldserver.config import Config, load_config
from worldserver.startup import StartupError, startup_error_in
from worldserver.stats import Stats

JANUS = "/usr/bin/janus"
HAVE_JANUS = os.access(JANUS, os.X_OK)
needs_janus = pytest.mark.skipif(not HAVE_JANUS, reason="Janus is not installed (/usr/bin/janus: Debian's"
                                 " janus package; bash scripts/setup.sh --janus installs it)")
LIB = "/usr/lib/x86_64-linux-gnu/janus"
KEY = "test-admin-key"
PUBLIC = "ws://gallery.example:8188"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def start_janus(nursery, tmp_path, **options) -> JanusProcess:
    options = {"port": free_port(), **options}
    process = JanusProcess(str(tmp_path / "janus"), admin_key=KEY, binary=JANUS, **options)
    with trio.fail_after(GENEROUS):
        await nursery.start(process.run)
    return process


async def start_backend(nursery, process: JanusProcess, **options) -> JanusBackend:
    backend = JanusBackend(process.url, PUBLIC, admin_key=KEY, setting="calls.janus_binary", **options)
    with trio.fail_after(GENEROUS):
        await nursery.start(backend.run)
    return backend


@pytest.fixture
async def janus(nursery, tmp_path):
    return await start_janus(nursery, tmp_path)


@pytest.fixture
async def backend(nursery, janus):
    return await start_backend(nursery, janus)


async def join(client, room: int, token: str | None, display: str) -> dict:
    """Join ``room`` as a publisher without media on a new handle, as a page does."""
    handle = await client.attach(VIDEOROOM)
    body = {"request": "join", "ptype": "publisher", "room": room, "display": display}
    if token is not None:
        body["token"] = token
    data, _ = await client.message_event(handle, body)
    return data


async def join_ticket(client, ticket: SfuTicket) -> dict:
    return await join(client, ticket.room, ticket.token, ticket.display)


async def refused(client, room: int, token: str | None, display: str = "someone") -> int:
    with pytest.raises(JanusError) as caught:
        await join(client, room, token, display)
    return caught.value.code


async def next_plugin_event(client) -> dict:
    """The next event from Janus's VideoRoom to this participant (other events skipped)."""
    with trio.fail_after(GENEROUS):
        async for event in client.events:
            data = (event.get("plugindata") or {}).get("data")
            if event.get("janus") == "event" and isinstance(data, dict):
                return data
    raise AssertionError("the participant's connection ended without the event")


async def participants(backend: JanusBackend, room: int) -> list[str]:
    data = await backend._ask({"request": "listparticipants", "room": room})
    return sorted(p["display"] for p in data["participants"])


# -- the process --------------------------------------------------------------------------------


@needs_janus
async def test_our_janus_loads_only_videoroom_and_websockets_on_loopback(janus, tmp_path):
    folder = tmp_path / "janus"
    async with open_janus(janus.url) as client:
        info = await client.info()
    assert set(info["plugins"]) == {VIDEOROOM}
    assert set(info["transports"]) == {"janus.transport.websockets"}
    assert info["events"] == {} and info["loggers"] == {}
    assert janus.url.startswith("ws://127.0.0.1:")
    websockets = (folder / "janus.transport.websockets.jcfg").read_text()
    assert 'ws_ip = "127.0.0.1"' in websockets and "admin_ws = false" in websockets
    assert "stun_server" not in (folder / "janus.jcfg").read_text()
    videoroom = folder / "janus.plugin.videoroom.jcfg"
    assert f'admin_key = "{KEY}"' in videoroom.read_text() and "room-" not in videoroom.read_text()
    assert stat.S_IMODE(videoroom.stat().st_mode) == 0o600
    assert "Websockets server started" in (folder / "janus.log").read_text()  # its output: the log, not ours
    assert janus.starts == 1 and janus.exits == 0


# -- tickets ------------------------------------------------------------------------------------


@needs_janus
async def test_a_ticket_lets_its_holder_into_its_room_only(backend, janus):
    room = await backend.open_room("zone:stage")
    other = await backend.open_room("p7")
    assert room != other and sorted(backend.rooms) == sorted([room, other])
    ticket = await backend.admit(room, "ada")
    other_ticket = await backend.admit(other, "bob")
    assert ticket == SfuTicket(url=PUBLIC, room=room, token=ticket.token, display="ada")
    assert ticket.token != other_ticket.token and len(ticket.token) >= 24
    async with open_janus(janus.url) as page:
        assert await refused(page, room, "not-a-ticket") == 433
        assert await refused(page, room, None) == 433
        assert await refused(page, room, other_ticket.token) == 433  # another room's ticket
        joined = await join_ticket(page, ticket)
        assert joined["videoroom"] == "joined" and joined["room"] == room
        assert isinstance(joined["private_id"], int)  # subscriptions must name it (require_pvtid)
    async with open_janus(janus.url) as page:
        assert (await join_ticket(page, other_ticket))["room"] == other


@needs_janus
async def test_admit_to_a_room_that_is_not_open_is_refused(backend):
    with pytest.raises(SfuError) as caught:
        await backend.admit(12345, "ada")
    assert caught.value.reason == "no_room"


# -- revoke and close ---------------------------------------------------------------------------


@needs_janus
async def test_revoke_kicks_the_holder_and_its_token_stops_working(backend, janus):
    room = await backend.open_room("p1")
    ada, bob = await backend.admit(room, "ada"), await backend.admit(room, "bob")
    async with open_janus(janus.url, event_buffer=16) as ada_page, open_janus(janus.url, event_buffer=16) as bob_page:
        await join_ticket(ada_page, ada)
        await join_ticket(bob_page, bob)
        assert await participants(backend, room) == ["ada", "bob"]
        await backend.revoke(room, ada)
        event = await next_plugin_event(ada_page)
        assert event["leaving"] == "ok" and event["reason"] == "kicked"
        assert await participants(backend, room) == ["bob"]  # the others stay
        assert await refused(ada_page, room, ada.token, "ada") == 433  # a new handle, the old ticket
        await backend.revoke(room, ada)  # twice: nothing left to do


@needs_janus
async def test_revoke_also_kicks_whoever_joined_under_a_display_no_ticket_has(backend, janus):
    room = await backend.open_room("p2")
    ada, bob = await backend.admit(room, "ada"), await backend.admit(room, "bob")
    async with open_janus(janus.url, event_buffer=16) as sneaky:
        await join(sneaky, room, bob.token, "not-bob")  # a valid token, another name
        async with open_janus(janus.url) as bob_page:
            await join_ticket(bob_page, bob)
            await backend.revoke(room, ada)  # ada never came; the sweep finds "not-bob"
            event = await next_plugin_event(sneaky)
            assert event["reason"] == "kicked"
            assert await participants(backend, room) == ["bob"]


@needs_janus
async def test_closing_a_room_ends_it(backend, janus):
    room = await backend.open_room("zone:corner")
    ticket = await backend.admit(room, "ada")
    async with open_janus(janus.url, event_buffer=16) as page:
        await join_ticket(page, ticket)
        await backend.close_room(room)
        assert (await next_plugin_event(page))["videoroom"] == "destroyed"
        assert await refused(page, room, ticket.token) == 426  # no such room
    assert backend.rooms == []
    with pytest.raises(SfuError) as caught:
        await backend.admit(room, "bob")
    assert caught.value.reason == "no_room"
    await backend.close_room(room)  # gone already: not an error
    await backend.revoke(room, ticket)


@needs_janus
async def test_rooms_left_open_are_destroyed_when_the_backend_stops(janus, nursery):
    async with trio.open_nursery() as inner:
        backend = await start_backend(inner, janus)
        room = await backend.open_room("p3")
        inner.cancel_scope.cancel()
    async with open_janus(janus.url) as client:
        handle = await client.attach(VIDEOROOM)
        assert (await client.message(handle, {"request": "exists", "room": room}))["exists"] is False


# -- Janus frozen, killed, restarted ------------------------------------------------------------


def all_threads_stopped(pid: int) -> bool:
    tasks = f"/proc/{pid}/task"
    states = []
    for task in os.listdir(tasks):
        with open(f"{tasks}/{task}/stat") as file:
            states.append(file.read().rsplit(")", 1)[1].split()[0])
    return all(state in "tT" for state in states)


@needs_janus
async def test_a_frozen_janus_fails_calls_at_their_deadline(janus, nursery):
    backend = await start_backend(nursery, janus, request_timeout=0.5)
    os.kill(janus.pid, signal.SIGSTOP)
    try:
        with trio.fail_after(GENEROUS):
            while not all_threads_stopped(janus.pid):  # the signal reaches Janus's threads one by one
                await trio.sleep(0.01)
        with trio.fail_after(GENEROUS), pytest.raises(SfuError) as caught:
            await backend.open_room("p4")
        assert caught.value.reason == "timeout"
    finally:
        os.kill(janus.pid, signal.SIGCONT)


@needs_janus
async def test_a_revoke_that_failed_is_done_when_janus_answers_again(janus, nursery):
    backend = await start_backend(nursery, janus, request_timeout=0.5, repair_delay=0.05)
    room = await backend.open_room("p8")
    ada, bob = await backend.admit(room, "ada"), await backend.admit(room, "bob")
    async with open_janus(janus.url, event_buffer=16) as ada_page, open_janus(janus.url) as bob_page:
        await join_ticket(ada_page, ada)
        await join_ticket(bob_page, bob)
        os.kill(janus.pid, signal.SIGSTOP)
        try:
            with trio.fail_after(GENEROUS):
                while not all_threads_stopped(janus.pid):
                    await trio.sleep(0.01)
            with trio.fail_after(GENEROUS), pytest.raises(SfuError) as caught:
                await backend.revoke(room, ada)
            assert caught.value.reason == "timeout"
        finally:
            os.kill(janus.pid, signal.SIGCONT)
        assert (await next_plugin_event(ada_page))["reason"] == "kicked"  # the repair's kick
        with trio.fail_after(GENEROUS):
            while backend.repairs < 1:
                await trio.sleep(0.01)
        assert await refused(ada_page, room, ada.token, "ada") == 433
        assert await participants(backend, room) == ["bob"]


@needs_janus
async def test_a_killed_janus_is_reported_and_calls_fail_at_once(nursery, tmp_path, caplog):
    janus = await start_janus(nursery, tmp_path, restart_delay=3600)  # it stays down for this test
    backend = await start_backend(nursery, janus)
    room = await backend.open_room("p5")
    caplog.set_level(logging.WARNING, logger="worldserver.calls.janus")
    os.kill(janus.pid, signal.SIGKILL)
    with trio.fail_after(GENEROUS):  # both report it: the process's task and the backend
        while not {"janus exited", "janus unreachable"} <= {record.getMessage() for record in caplog.records}:
            await trio.sleep(0.01)
    assert janus.exits == 1 and not backend.connected
    for call in (backend.open_room("p6"), backend.admit(room, "ada")):
        with trio.fail_after(GENEROUS), pytest.raises(SfuError) as caught:
            await call
        assert caught.value.reason == "unreachable"


@needs_janus
async def test_a_restarted_janus_gets_the_rooms_and_tokens_again(nursery, tmp_path):
    janus = await start_janus(nursery, tmp_path, restart_delay=0.05)
    backend = await start_backend(nursery, janus, reconnect_delay=0.05)
    room = await backend.open_room("zone:stage")
    ticket = await backend.admit(room, "ada")
    revoked = await backend.admit(room, "bob")
    await backend.revoke(room, revoked)
    os.kill(janus.pid, signal.SIGKILL)
    with trio.fail_after(GENEROUS):
        while backend.connects < 2:
            await trio.sleep(0.01)
    assert janus.starts == 2 and backend.rooms_restored == 1
    async with open_janus(janus.url) as page:
        assert (await join_ticket(page, ticket))["room"] == room
        assert await refused(page, room, revoked.token) == 433
    assert (await backend.admit(room, "cyd")).room == room


# -- stopping our Janus -------------------------------------------------------------------------


@needs_janus
async def test_a_janus_stopped_while_it_starts_gets_sigkill_at_once(tmp_path):
    """Found by a helper: Janus 1.1.2 misses a SIGTERM that comes during its start-up, so a
    server stopped then (or a start given up) waited the whole STOP_TIMEOUT before SIGKILL.
    Until it answers it holds nothing worth a clean exit: it gets SIGKILL, and no SIGTERM."""
    process = JanusProcess(str(tmp_path / "janus"), admin_key=KEY, binary=JANUS, port=free_port())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(process.run)
        with trio.fail_after(GENEROUS):
            while process.pid is None:  # spawned; answering takes it many more of our turns
                await trio.sleep(0)
        nursery.cancel_scope.cancel()
    assert process.starts == 1 and process.stops == {"SIGKILL": 1}
    assert process.last_exit == -signal.SIGKILL
    assert not (tmp_path / "janus" / "janus.pid").exists()


@needs_janus
async def test_a_janus_that_has_answered_is_stopped_with_sigterm(tmp_path, monkeypatch):
    monkeypatch.setattr(janus_module, "STOP_TIMEOUT", GENEROUS)  # a slow clean exit is not cut short
    async with trio.open_nursery() as nursery:
        process = await start_janus(nursery, tmp_path)
        nursery.cancel_scope.cancel()
    assert process.stops == {"SIGTERM": 1} and process.last_exit == 0  # 0: Janus's own clean exit


# -- Janus dies with the server; one left from an earlier run is stopped ------------------------

SERVER_LIKE = """
import sys
import trio
from worldserver.calls.janus import JanusProcess

async def main():
    folder, binary, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    process = JanusProcess(folder, admin_key="k", binary=binary, port=port)
    async with trio.open_nursery() as nursery:
        await nursery.start(process.run)
        print(process.pid, flush=True)
        await trio.sleep_forever()

trio.run(main)
"""


@needs_janus
async def test_a_killed_server_leaves_no_janus_behind(tmp_path):
    """Found by a helper: the server killed with SIGKILL left its Janus running, holding its
    port, so the next start failed with "port in use". Now Janus gets SIGKILL when the server
    dies (PR_SET_PDEATHSIG)."""
    folder, port = tmp_path / "janus", free_port()
    await killed_parent_takes_its_child(SERVER_LIKE, str(folder), JANUS, str(port), what="Janus")
    assert (folder / "janus.pid").is_file()  # written at the start (the next start reads it)
    # and the next start finds its port free (and the pid file naming a process gone)
    async with trio.open_nursery() as nursery:
        janus = await start_janus(nursery, tmp_path, port=port)
        assert (folder / "janus.pid").read_text().strip() == str(janus.pid)
        nursery.cancel_scope.cancel()


async def stale_janus(nursery, folder, pid_file: bool = True):
    """A Janus on ``folder``'s configuration as an earlier run started it, its pid in
    janus.pid; returned once it listens (its output says so; the rest of its output is read
    and dropped in ``nursery``, so that it never blocks on a full pipe)."""
    proc = await trio.lowlevel.open_process(
        [JANUS, "--config", str(folder / "janus.jcfg"), "--configs-folder", str(folder)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = b""
    with trio.fail_after(GENEROUS):
        while b"Websockets server started" not in output:
            chunk = await proc.stdout.receive_some(65536)
            assert chunk, output.decode(errors="replace")
            output += chunk

    async def drain() -> None:
        async with proc.stdout:
            while await proc.stdout.receive_some(65536):
                pass

    nursery.start_soon(drain)
    if pid_file:
        (folder / "janus.pid").write_text(f"{proc.pid}\n")
    return proc


async def configured(nursery, folder, port: int) -> None:
    """Start and stop our Janus once, so that ``folder`` holds its configuration."""
    async with trio.open_nursery() as inner:
        janus = JanusProcess(str(folder), admin_key=KEY, binary=JANUS, port=port)
        with trio.fail_after(GENEROUS):
            await inner.start(janus.run)
        inner.cancel_scope.cancel()


@needs_janus
@pytest.mark.parametrize("frozen", [False, True])
async def test_a_janus_left_from_an_earlier_run_is_stopped_at_the_next_start(nursery, tmp_path, caplog, monkeypatch,
                                                                            frozen):
    """It holds our port: before, the start failed with "port in use". A frozen one (SIGSTOP:
    it cannot act on SIGTERM) gets SIGKILL at the deadline. (Janus 1.1.2 also misses a
    SIGTERM that comes while it is still starting, and then gets SIGKILL too: a running one
    may be stopped either way.)"""
    monkeypatch.setattr(janus_module, "STOP_TIMEOUT", 1.0)
    folder, port = tmp_path / "janus", free_port()
    await configured(nursery, folder, port)
    assert not (folder / "janus.pid").exists()  # removed when our Janus stopped
    stale = await stale_janus(nursery, folder)
    try:
        if frozen:
            os.kill(stale.pid, signal.SIGSTOP)
        caplog.set_level(logging.INFO, logger="worldserver.calls.janus")
        janus = await start_janus(nursery, tmp_path, port=port)  # the stale one's port
        with trio.fail_after(GENEROUS):
            code = await stale.wait()
        assert janus.pid != stale.pid
        assert (folder / "janus.pid").read_text().strip() == str(janus.pid)
        stopped = [r for r in caplog.records if r.getMessage() == "janus from an earlier run stopped"]
        assert len(stopped) == 1 and stopped[0].levelno == logging.INFO
        how = stopped[0].fields
        assert how["pid"] == stale.pid and how["signal"] in (("SIGKILL",) if frozen else ("SIGTERM", "SIGKILL"))
        assert code in ((0, -signal.SIGTERM) if how["signal"] == "SIGTERM" else (-signal.SIGKILL,))  # 0: Janus's own
    finally:
        kill_if_running(stale.pid)
        await stale.wait()


@needs_janus
async def test_a_pid_file_naming_a_process_that_is_not_ours_leaves_it_alone(nursery, tmp_path):
    folder = tmp_path / "janus"
    folder.mkdir()
    sleeper = await trio.lowlevel.open_process(["sleep", "600"])
    other_folder, other_port = tmp_path / "other", free_port()
    await configured(nursery, other_folder, other_port)
    other = await stale_janus(nursery, other_folder, pid_file=False)  # a janus, but of another folder
    gone = await trio.lowlevel.open_process(["true"])
    await gone.wait()  # a pid nobody has now
    try:
        for content in (f"{sleeper.pid}\n", f"{other.pid}\n", f"{gone.pid}\n", "not a pid\n", ""):
            (folder / "janus.pid").write_text(content)
            async with trio.open_nursery() as inner:
                janus = await start_janus(inner, tmp_path)
                assert (folder / "janus.pid").read_text().strip() == str(janus.pid)
                inner.cancel_scope.cancel()
            assert sleeper.poll() is None and other.poll() is None, content
    finally:
        for proc in (sleeper, other):
            proc.kill()
            await proc.wait()


# -- a client on a server that is not quite Janus -----------------------------------------------


DEEP = "[" * 100_000 + "]" * 100_000  # nested far deeper than json.loads can recurse


async def mute_janus(nursery) -> str:
    """A loopback WebSocket server that answers ``create`` and ``info`` after junk (a frame
    nested thousands deep among it), and answers nothing else; its URL."""

    async def handler(request):
        ws = await request.accept()
        while True:
            frame = json.loads(await ws.get_message())
            if frame["janus"] == "create":
                await ws.send_message("not json")
                await ws.send_message("[1, 2]")
                await ws.send_message(DEEP)
                await ws.send_message(json.dumps({"janus": "success", "transaction": frame["transaction"],
                                                  "data": {"id": 99}}))
            elif frame["janus"] == "info":
                await ws.send_message(DEEP)
                await ws.send_message(json.dumps({"janus": "server_info", "transaction": "info", "name": "mute"}))

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    return f"ws://127.0.0.1:{server.port}"


async def test_client_counts_bad_frames_and_times_out_unanswered_requests(nursery):
    """The junk (one frame nested thousands deep among it) is counted, a request fails at its
    deadline, the session goes on."""
    url = await mute_janus(nursery)
    stats = Stats()
    async with open_janus(url, request_timeout=0.2, stats=stats) as client:
        assert client.session_id == 99
        assert client.bad_frames == 3 and stats.get("drop.janus_bad_frame") == 3
        with trio.fail_after(GENEROUS), pytest.raises(JanusTimeout):
            await client.attach(VIDEOROOM)
        assert client.gone is None


async def test_info_skips_a_frame_nested_thousands_deep(nursery):
    url = await mute_janus(nursery)
    with trio.fail_after(GENEROUS):
        assert (await janus_info(url, timeout=GENEROUS))["name"] == "mute"


async def test_an_unanswered_keepalive_ends_the_session(nursery):
    url = await mute_janus(nursery)
    async with open_janus(url, request_timeout=0.2, keepalive=0.01) as client:
        with trio.fail_after(GENEROUS):
            await client.lost.wait()
        assert client.gone.startswith("keepalive failed") and client.keepalives == 0
        with pytest.raises(JanusGone):
            await client.attach(VIDEOROOM)


@needs_janus
async def test_janus_acknowledges_keepalives(janus):
    async with open_janus(janus.url, keepalive=0.01) as client:
        with trio.fail_after(GENEROUS):
            while client.keepalives < 3:
                await trio.sleep(0.01)
        assert client.gone is None
        await client.attach(VIDEOROOM)


async def test_client_on_nothing_says_so():
    with trio.fail_after(GENEROUS), pytest.raises(JanusGone) as caught:
        async with open_janus(f"ws://127.0.0.1:{free_port()}", connect_timeout=2):
            pass
    assert "cannot connect to Janus" in str(caught.value)


# -- operator mistakes ----------------------------------------------------------------------------


def one_line(error: StartupError, setting: str) -> str:
    text = str(error)
    assert "\n" not in text and text.startswith(f"{setting}: ")
    return text


async def start_error(run) -> StartupError:
    """The StartupError that ``nursery.start(run)`` fails with (as the server finds it)."""
    with trio.fail_after(GENEROUS), pytest.raises(BaseException) as caught:
        async with trio.open_nursery() as nursery:
            await nursery.start(run)
    error = startup_error_in(caught.value)
    assert error is not None, caught.value
    return error


async def start_fails(tmp_path, **options) -> StartupError:
    options.setdefault("binary", JANUS)
    process = JanusProcess(str(tmp_path / "janus"), admin_key=KEY, **{"port": free_port(), **options})
    return await start_error(process.run)


async def test_missing_binary_is_one_line(tmp_path):
    text = one_line(await start_fails(tmp_path, binary=str(tmp_path / "no-janus")), "calls.janus_binary")
    assert "not found" in text and "apt-get install janus" in text


@needs_janus
async def test_port_in_use_is_one_line(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        text = one_line(await start_fails(tmp_path, port=port), "calls.janus_port")
    assert text.startswith(f"calls.janus_port: {port}: TCP port already in use on 127.0.0.1")


@needs_janus
async def test_host_that_is_not_an_address_is_one_line(tmp_path):
    assert "not an IP address" in one_line(await start_fails(tmp_path, host="localhost"), "calls.janus_host")


def fake_janus(tmp_path, body: str) -> str:
    path = tmp_path / "fake-janus"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


@needs_janus
async def test_janus_that_exits_at_start_is_one_line_with_its_last_error(tmp_path):
    binary = fake_janus(tmp_path, 'echo "[Mon Jan  1 00:00:00 2024] [FATAL] [janus.c:main] broken on purpose"; exit 3')
    text = one_line(await start_fails(tmp_path, binary=binary, lib_dir=LIB), "calls.janus_binary")
    assert "Janus exited with code 3 as it started ([FATAL] [janus.c:main] broken on purpose)" in text
    assert "broken on purpose" in (tmp_path / "janus" / "janus.log").read_text()


@needs_janus
async def test_janus_that_never_answers_is_one_line_and_stopped(tmp_path):
    pid_file = tmp_path / "pid"
    binary = fake_janus(tmp_path, f"echo $$ > {pid_file}; exec sleep 600")
    text = one_line(await start_fails(tmp_path, binary=binary, lib_dir=LIB, start_timeout=0.3), "calls.janus_binary")
    assert "did not answer on ws://127.0.0.1:" in text and "within 0.3 s" in text
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # stopped and reaped


@needs_janus
async def test_wrong_admin_key_and_no_janus_at_the_url_are_one_line(janus):
    error = await start_error(JanusBackend(janus.url, PUBLIC, admin_key="not-the-key").run)
    assert "refused it for creating rooms" in one_line(error, "calls.janus_admin_key")
    assert KEY not in str(error) and "not-the-key" not in str(error)
    nowhere = f"ws://127.0.0.1:{free_port()}"
    error = await start_error(JanusBackend(nowhere, PUBLIC).run)
    assert one_line(error, "calls.janus_url").startswith(f"calls.janus_url: {nowhere}: no Janus answers there")


# -- open_sfu: what [calls] asks for ------------------------------------------------------------


def calls_config(tmp_path, **calls) -> Config:
    overrides = {"server.data_dir": str(tmp_path / "data"), "calls.janus_binary": JANUS}
    overrides.update({f"calls.{key}": value for key, value in calls.items()})
    return Config().with_overrides(overrides)


async def test_no_sfu_configured_starts_nothing(tmp_path):
    async with open_sfu(calls_config(tmp_path)) as sfu:
        assert sfu is None
    assert not (tmp_path / "data").exists()


@needs_janus
async def test_open_sfu_starts_our_janus_and_tickets_name_it(tmp_path):
    port = free_port()
    config = calls_config(tmp_path, sfu="janus", janus_port=port)
    with trio.fail_after(GENEROUS):
        async with open_sfu(config) as sfu:
            room = await sfu.open_room("zone:stage")
            ticket = await sfu.admit(room, "ada")
            assert ticket.url == f"ws://127.0.0.1:{port}"  # loopback: this machine's browsers
            async with open_janus(ticket.url) as page:
                assert (await join_ticket(page, ticket))["room"] == room
    assert (tmp_path / "data" / "janus" / "janus.jcfg").is_file()
    with pytest.raises(JanusGone):  # stopped with the block
        async with open_janus(f"ws://127.0.0.1:{port}", connect_timeout=2):
            pass


def test_public_url_of_a_janus_on_every_address_is_the_port_the_page_completes(tmp_path):
    assert public_url(calls_config(tmp_path, janus_host="0.0.0.0", janus_port=9188).calls) == ":9188"
    assert public_url(calls_config(tmp_path, janus_host="::", janus_port=9188).calls) == ":9188"
    assert public_url(calls_config(tmp_path, janus_host="192.0.2.7").calls) == "ws://192.0.2.7:8188"
    assert public_url(calls_config(tmp_path, janus_host="0.0.0.0", janus_public_url="wss://m.example/j").calls) \
        == "wss://m.example/j"


@needs_janus
async def test_serve_sfu_hands_the_backend_to_the_nursery(tmp_path, nursery):
    port = free_port()
    with trio.fail_after(GENEROUS):
        backend = await nursery.start(serve_sfu, calls_config(tmp_path, sfu="janus", janus_port=port))
        assert isinstance(backend, JanusBackend) and backend.connected
        assert await nursery.start(serve_sfu, calls_config(tmp_path)) is None


@needs_janus
async def test_open_sfu_uses_an_existing_janus_at_janus_url(janus, tmp_path):
    config = calls_config(tmp_path, sfu="janus", janus_url=janus.url, janus_admin_key=KEY,
                          janus_public_url="wss://media.example/janus")
    with trio.fail_after(GENEROUS):
        async with open_sfu(config) as sfu:
            room = await sfu.open_room("p1")
            assert (await sfu.admit(room, "ada")).url == "wss://media.example/janus"
    assert not (tmp_path / "data" / "janus").exists()  # nothing of ours was started
    assert public_url(calls_config(tmp_path, janus_url=janus.url).calls) == janus.url


async def test_open_sfu_refuses_a_url_that_is_not_a_websocket(tmp_path):
    with pytest.raises(StartupError) as caught:
        async with open_sfu(calls_config(tmp_path, sfu="janus", janus_url="http://media.example:8088/janus")):
            pass
    assert "not a WebSocket URL" in one_line(caught.value, "calls.janus_url")
    with pytest.raises(StartupError) as caught:
        async with open_sfu(calls_config(tmp_path, sfu="janus", janus_public_url="media.example:8188")):
            pass
    assert "not a WebSocket URL" in one_line(caught.value, "calls.janus_public_url")


# -- the whole server -----------------------------------------------------------------------------


@needs_janus
async def test_the_server_puts_a_large_group_in_a_janus_room_and_a_leaver_is_kicked(nursery, tmp_path):
    """``worldserver.app.serve`` with ``calls.sfu = "janus"``: its own Janus, the call service
    moving a group over ``calls.mesh_max`` to a room, the ticket letting a page in, walking
    away kicking it. Real time: the server ticks on its own; every wait has a deadline."""
    config = load_config(path=None, env={}, overrides={
        "udp.host": "127.0.0.1", "udp.port": "0", "http.host": "127.0.0.1", "http.port": "0",
        "server.stats_interval": "60", "gc.freeze_after_start": "false", "server.data_dir": str(tmp_path / "data"),
        "http.images_dir": str(tmp_path / "images"), "worlds.hosted": '["open"]', "webrtc.enabled": "false",
        "calls.sfu": "janus", "calls.mesh_max": "2", "calls.janus_port": str(free_port()),
        "calls.janus_binary": JANUS})
    with trio.fail_after(GENEROUS):
        running = await nursery.start(serve, config)
    assert isinstance(running.calls.backend, JanusBackend) and running.calls.backend.connected
    url, udp = f"http://127.0.0.1:{running.http_port}", running.udp_address[1]
    world = running.worlds.default.world
    names = ("amy", "ben", "cat")
    async with open_client("127.0.0.1", udp, http=url, name="amy") as amy, \
            open_client("127.0.0.1", udp, http=url, name="ben") as ben, \
            open_client("127.0.0.1", udp, http=url, name="cat") as cat, \
            open_chat(url, amy.joined.token) as amy_chat, open_chat(url, ben.joined.token) as ben_chat, \
            open_chat(url, cat.joined.token) as cat_chat:
        chats = dict(zip(names, (amy_chat, ben_chat, cat_chat)))
        slots = {name: world.slot_of(client.entity_id) for name, client in zip(names, (amy, ben, cat))}
        for name, x in zip(names, (20.0, 60.0, 100.0)):
            world.pos[slots[name], 0], world.pos[slots[name], 2] = x, 20.0
        for chat in chats.values():
            await chat.request("call.enable", on=True)
        for name, x in zip(names, (20.0, 21.0, 22.0)):  # they walk together: three, over mesh_max
            world.pos[slots[name], 0] = x
        tickets = {}
        for name, chat in chats.items():
            event = await chat.wait_for(lambda e: e.name == "call.joined" and e.fields["mode"] == "sfu",
                                        timeout=GENEROUS)
            tickets[name] = event.fields["sfu"]
        assert {t["display"] for t in tickets.values()} == set(names)
        assert len({t["room"] for t in tickets.values()}) == 1 and len({t["token"] for t in tickets.values()}) == 3
        assert tickets["ben"]["url"] == f"ws://127.0.0.1:{config.calls.janus_port}"
        async with open_janus(tickets["ben"]["url"], event_buffer=16) as ben_page, \
                open_janus(tickets["amy"]["url"]) as amy_page:
            for page, name in ((ben_page, "ben"), (amy_page, "amy")):
                ticket = tickets[name]
                assert (await join(page, ticket["room"], ticket["token"], name))["videoroom"] == "joined"
            world.pos[slots["ben"], 0] = 60.0  # ben walks away
            left = await ben_chat.wait_for(lambda e: e.name == "call.left", timeout=GENEROUS)
            assert left.fields["reason"] == "moved_away"
            assert (await next_plugin_event(ben_page))["reason"] == "kicked"
            assert await refused(ben_page, tickets["ben"]["room"], tickets["ben"]["token"], "ben") == 433
