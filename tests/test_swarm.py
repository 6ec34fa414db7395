"""The bot swarm (worldtools.swarm) against a real server started in-process on loopback.

Checks that bots complete the real handshake, receive snapshots at about the tick rate, send
inputs at 20 Hz, say goodbye, that observers measure move-to-observed latency, that the report
carries every field, that worker processes merge, and that failures are reported as failures.
The set-up (joins, connections) comes before the measured ``duration`` and the report says
how long it took; the measurement may wait for ``begin``; the progress line shows the set-up,
then connected bots, snapshots per second, latency p99 and loss. Without a server: a tick
counts as a snapshot once all its parts arrived (once), observers' refreshed share, the
walking speed option, the progress line's figures and the start read from stdin.

The in-process runs use trio's autojump MockClock, and the swarm measures on trio's clock
(``clock=trio.current_time``): the server ticks and the bots send on virtual time, real
datagrams cross loopback in between, so rates and durations do not depend on the machine's
speed. The worker-process run needs the real clock (other processes): it asserts what the
merge produced, not rates.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import pathlib
import struct
import sys
import time

import numpy as np
import pytest
import trio

if importlib.util.find_spec("worldclient") is None:  # not installed, and not on pythonpath
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "clients" / "python"))

from worldserver.app import serve  # noqa: E402
from worldserver.config import load_config  # noqa: E402
from udp_support import mint_tickets  # noqa: E402
from worldtools import swarm  # noqa: E402
from worldtools.swarm import bots as swarm_bots  # noqa: E402
from worldtools.swarm.command import ProgressLine, StdinStart  # noqa: E402
from worldtools.swarm.processes import _sum_counts  # noqa: E402
from worldtools.swarm.udp import UdpTransport  # noqa: E402

REPORT_FIELDS = {
    "bots_requested", "connected", "failures", "failure_reasons", "decode_errors",
    "snapshots_per_bot_s", "bytes_per_bot_s", "inputs_per_bot_s", "latency_ms_p50",
    "latency_ms_p99", "latency_samples", "packet_loss", "duration_s", "processes", "ok",
    "cpu_percent", "observed_entities_mean", "input_backlog_p50", "input_backlog_p99",
    "parts_per_bot_s", "observed_refreshed_share", "setup_s",
}  # fmt: skip


def _config():
    # An open world: in the gallery a latency probe (a turn) can run into a wall and slide
    # along it, and the turn is then "seen" late; that is the walls' doing, not the network's.
    return load_config(None, env={}, overrides={"udp.port": "0", "udp.host": "127.0.0.1", "http.port": "0",
                                                "http.host": "127.0.0.1", "worlds.hosted": "open"})


async def test_swarm_against_in_process_server(autojump_clock):
    autojump_clock.jump(1.0)  # the swarm's times must be above 0 (a MockClock starts at 0)
    async with trio.open_nursery() as nursery:
        running = await nursery.start(serve, _config())
        host, port = running.udp_address[:2]
        tick_rate = running.sim.tick_rate
        report = await swarm.run_bots(host, port, bots=6, duration=3.0, observers=3, seed=7,
                                      clock=trio.current_time, tickets=mint_tickets(running, 6))
        # The bots said goodbye: the server forgets them at its next poll, long before the
        # connection timeout would.
        said_goodbye = trio.current_time()
        with trio.fail_after(1.0):
            while running.sim.sessions:
                await trio.sleep(0.02)
        forgotten_after = trio.current_time() - said_goodbye
        nursery.cancel_scope.cancel()

    assert REPORT_FIELDS <= report.keys()
    assert report["bots_requested"] == 6
    assert report["connected"] == 6
    assert report["failures"] == 0, report["failure_reasons"]
    assert report["ok"] is True
    # Virtual time: one snapshot per tick, one input per 50 ms send slot, nothing lost.
    assert report["snapshots_per_bot_s"] == pytest.approx(tick_rate, rel=0.1)
    assert report["snapshots_per_bot_s"] <= report["parts_per_bot_s"] <= 2 * report["snapshots_per_bot_s"]
    assert 0.5 < report["observed_refreshed_share"] <= 1.0  # a few walking bots: all refreshed
    assert report["inputs_per_bot_s"] == pytest.approx(1 / swarm_bots.SEND_INTERVAL, rel=0.1)
    assert report["bytes_per_bot_s"] > 0
    assert report["packet_loss"] == 0.0
    assert report["latency_samples"] >= 1
    # a turn is seen within a few ticks: the input waits for the next tick, its snapshot comes
    assert 0.0 < report["latency_ms_p50"] <= report["latency_ms_p99"] <= 4 * 1000 / tick_rate
    assert report["observed_entities_mean"] >= 3  # observers see the others near spawn
    assert report["duration_s"] == pytest.approx(3.0, abs=0.05)  # measured, after the set-up
    assert 0.0 <= report["setup_s"] < 1.0  # six handshakes on loopback (virtual time may not move)
    assert report["connected_seconds"] == pytest.approx(6 * 3.0, abs=0.1)  # all connected all along
    assert forgotten_after <= 0.5


async def test_measurement_waits_for_begin_and_progress_shows_both_phases(autojump_clock):
    autojump_clock.jump(1.0)
    lines = io.StringIO()
    said_ready = []
    async with trio.open_nursery() as nursery:
        running = await nursery.start(serve, _config())
        host, port = running.udp_address[:2]
        tick_rate = running.sim.tick_rate

        def begin():  # the measurement starts 2.5 s after the set-up ended
            return said_ready[0] + 2.5 if said_ready else None

        report = await swarm.run_bots(
            host, port, bots=4, duration=2.0, observers=2, seed=5, clock=trio.current_time,
            tickets=mint_tickets(running, 4), progress=ProgressLine(4, stream=lines),
            ready=lambda setup_s: said_ready.append(trio.current_time()), begin=begin,
        )  # fmt: skip
        nursery.cancel_scope.cancel()

    assert len(said_ready) == 1
    assert report["connected"] == 4 and report["ok"]
    assert report["setup_s"] >= 2.5  # connecting, then waiting for begin: nothing counted
    assert report["duration_s"] == pytest.approx(2.0, abs=0.05)
    assert report["connected_seconds"] == pytest.approx(4 * 2.0, abs=0.1)
    assert report["snapshots_per_bot_s"] == pytest.approx(tick_rate, rel=0.1)
    text = lines.getvalue().splitlines()
    setup = [line for line in text if line.startswith("swarm set-up")]
    measure = [line for line in text if line.startswith("swarm t=")]
    assert setup and setup[-1].endswith("connected 4/4 failures 0, waiting for the start")
    # one a second while measuring, and one at its end
    assert [line[len("swarm "):].split("s ")[0] for line in measure] == ["t=  1.0", "t=  2.0"]
    assert all("connected 4/4" in line and "loss 0.000 %" in line for line in measure)
    assert text.index(setup[-1]) < text.index(measure[0])


async def test_worker_processes_are_merged():
    async with trio.open_nursery() as nursery:
        running = await nursery.start(serve, _config())
        host, port = running.udp_address[:2]
        ticks = []
        report = await trio.to_thread.run_sync(
            lambda: swarm.run_processes(
                host, port, bots=5, duration=2.5, processes=2, observers=2, seed=3,
                progress=lambda elapsed, counts: ticks.append(counts),
                http=f"http://127.0.0.1:{running.http_port}",  # every bot joins first
            )
        )  # fmt: skip
        nursery.cancel_scope.cancel()

    # Real clock (worker processes): what the merge made of the two workers' results, no rates.
    assert report["processes"] == 2
    assert report["bots_requested"] == 5 and report["connected"] == 5
    assert report["failures"] == 0, report
    assert report["snapshots_per_bot_s"] > 0 and report["inputs_per_bot_s"] > 0
    assert report["latency_samples"] >= 1  # both observers are in the first worker
    assert ticks and ticks[-1]["connected"] == 5
    # every worker measured from the start the parent set once both were set up
    assert report["setup_s"] > 0 and report["duration_s"] >= 2.5
    phases = [t["phase"] for t in ticks]
    assert phases[-1] == "measure" and phases == sorted(phases, key=lambda p: p == "measure")
    assert sum(len(t["latency_ms"]) for t in ticks) <= report["latency_samples"]


async def test_no_server_is_a_failure(autojump_clock):
    autojump_clock.jump(1.0)
    # A bound socket that never answers: the handshakes cannot finish.
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    with sock:
        report = await swarm.run_bots("127.0.0.1", port, bots=3, duration=0.6, observers=1,
                                      clock=trio.current_time)
    assert report["connected"] == 0
    assert report["failures"] == 3
    # the set-up waits for every handshake to end; then the 0.6 s are measured (without bots)
    assert report["failure_reasons"] == {"handshake_timeout": 3}
    assert report["setup_s"] >= swarm_bots.HANDSHAKE_TIMEOUT
    assert report["duration_s"] == pytest.approx(0.6, abs=0.05)
    assert report["ok"] is False
    assert report["latency_ms_p50"] is None


def test_merge_sums_counts_and_concatenates_samples():
    base = dict(
        bots_requested=2, observers=1, connected=2, snapshots=40, packets=40, bytes=4000,
        inputs=40, connected_seconds=2.0, packets_expected=41, packets_received=40,
        observed_entities_sum=10, observed_views=5, cpu_s=0.1, window_s=1.0, duration_s=1.0,
        failure_reasons={}, decode_errors={}, socket_errors={}, latency_samples_ms=[40.0],
        send_late_ms=[1.0], processes=1,
    )  # fmt: skip
    other = dict(base, failure_reasons={"handshake_timeout": 1}, latency_samples_ms=[60.0, 80.0])
    merged = swarm.merge_results([swarm.make_report(base), swarm.make_report(other)])
    assert merged["bots_requested"] == 4 and merged["connected"] == 4
    assert merged["snapshots_per_bot_s"] == 20.0
    assert merged["bytes_per_bot_s"] == 2000.0
    assert merged["latency_samples"] == 3 and merged["latency_ms_p50"] == 60.0
    assert merged["failures"] == 1 and merged["ok"] is False
    assert math.isclose(merged["packet_loss"], 2 / 82, abs_tol=1e-5)
    assert merged["processes"] == 2


def _part(tick: int, part: int, parts: int, body: bytes = b"\x00" * 14) -> bytes:
    """A snapshot part's header fields (SPEC.md 5.2) and some body; only the header is read."""
    return struct.pack("<IIIIBB", tick, 0xFFFFFFFF, 0xFFFFFFFF, 7, part, parts) + body


def test_a_tick_counts_once_when_all_its_parts_arrived():
    bot = swarm_bots.Bot(0, observer=False, nonce=1, phase=0)
    done = swarm_bots.tick_completed
    assert done(bot, _part(10, 0, 1)) is True
    assert done(bot, _part(10, 0, 1)) is False  # a duplicate
    assert [done(bot, _part(11, k, 3)) for k in (2, 0, 0)] == [False, False, False]
    assert done(bot, _part(12, 0, 2)) is False  # parts of two ticks interleave
    assert done(bot, _part(11, 1, 3)) is True  # in any order
    assert done(bot, _part(11, 1, 3)) is False
    assert done(bot, _part(12, 1, 2)) is True
    assert done(bot, _part(13, 2, 2)) is False  # part >= parts: impossible
    assert done(bot, _part(13, 0, 0)) is False
    assert done(bot, _part(14, 0, 1)[:17]) is False  # too short for the header
    assert done(bot, _part(2**32 - 1, 0, 1)) is True  # tick is a u32
    for tick in range(100, 100 + 3 * swarm_bots.TICKS_TRACKED):  # bounded memory
        done(bot, _part(tick, 0, 2))
    assert len(bot.tick_parts) == swarm_bots.TICKS_TRACKED


def _view(ids, xs):
    ids = np.asarray(ids, dtype=np.uint32)
    q = np.zeros((len(ids), 5), dtype=np.int32)
    q[:, 0] = xs
    return ids, q


def test_refreshed_share_counts_changed_over_moving_entities():
    bot = swarm_bots.Bot(0, observer=True, nonce=1, phase=0)
    track = swarm_bots.track_refresh
    track(bot, 10, *_view([1, 2, 3, 9], [0, 0, 0, 0]), True)  # the first view: nothing to compare
    assert (bot.refresh_changed, bot.refresh_moving) == (0, 0)
    track(bot, 11, *_view([1, 2, 3, 9], [5, 5, 5, 0]), True)  # 1-3 moved; 9 never moves
    assert (bot.refresh_changed, bot.refresh_moving) == (3, 3)
    track(bot, 12, *_view([1, 2, 3, 4, 9], [10, 5, 5, 0, 0]), True)  # 2, 3 skipped; 4 new
    assert (bot.refresh_changed, bot.refresh_moving) == (4, 6)
    track(bot, 14, *_view([1, 2, 3, 4, 9], [20, 10, 5, 0, 0]), True)  # a tick missing: no count
    assert (bot.refresh_changed, bot.refresh_moving) == (4, 6)
    track(bot, 15, *_view([1, 2, 4, 9], [25, 10, 0, 0]), False)  # outside the window: no count
    assert (bot.refresh_changed, bot.refresh_moving) == (4, 6)
    # 3 left the view; 3 moving ones (1 and 2 changed lately, 4 never did) of which 1 changed:
    track(bot, 16, *_view([1, 2, 4, 9], [30, 10, 0, 0]), True)
    assert (bot.refresh_changed, bot.refresh_moving) == (5, 8)
    late = 16 + swarm_bots.MOVING_WINDOW + 1  # 2 last changed at 14: no longer counted as moving
    track(bot, late - 1, *_view([1, 2], [35, 10]), False)
    track(bot, late, *_view([1, 2], [40, 10]), True)
    assert (bot.refresh_changed, bot.refresh_moving) == (6, 9)
    report = swarm.make_report(dict(
        bots_requested=1, observers=1, connected=1, snapshots=1, packets=1, bytes=1, inputs=1,
        connected_seconds=1.0, packets_expected=1, packets_received=1, observed_entities_sum=1,
        observed_views=1, cpu_s=0.0, window_s=1.0, failure_reasons={}, decode_errors={},
        socket_errors={}, refresh_changed=bot.refresh_changed, refresh_moving=bot.refresh_moving,
    ))  # fmt: skip
    assert report["observed_refreshed_share"] == round(6 / 9, 4)


def _bot_set(**kwargs) -> swarm_bots.BotSet:
    """Bots over a UDP transport that never runs (nothing is opened)."""
    return swarm_bots.BotSet(UdpTransport("127.0.0.1", 9), **kwargs)


def test_speed_scales_the_intent_and_the_dead_reckoning():
    s = _bot_set(bots=2, observers=1, seed=1, speed=1.5)
    bot = s.bots[0]
    s._set_speed(bot, 5.0)
    assert bot.speed == 1.5 and math.isclose(bot.intent, 127 * 0.3)
    bot.cx = bot.cz = bot.x = bot.z = 0.0
    bot.radius = 100.0
    s._set_direction(bot, 0.7, 0.0, record=False)
    assert 37 <= math.hypot(bot.move_x, bot.move_z) <= 39  # the server: 5 m/s x intent/127
    bot.last_step = 0.0
    bot.turn_at = 10.0
    s._steer(bot, 0.1)
    assert math.isclose(math.hypot(bot.x, bot.z), 0.15, rel_tol=0.02)  # 1.5 m/s for 0.1 s
    s._set_speed(bot, 1.0)  # never faster than the server allows
    assert bot.speed == 1.0 and bot.intent == 127.0
    default = _bot_set(bots=1, observers=0, seed=1)
    default._set_speed(default.bots[0], 5.0)
    assert default.bots[0].speed == 5.0 and default.bots[0].intent == 127.0
    with pytest.raises(ValueError):
        _bot_set(bots=1, observers=0, seed=1, speed=0.0)


def test_walk_faces_its_direction_and_turns_far_enough():
    s = _bot_set(bots=1, observers=1, seed=1)
    bot = s.bots[0]
    for k in range(50):
        old = bot.angle
        s._set_direction(bot, old + s.rng.uniform(swarm_bots.MIN_TURN, 2 * math.pi - swarm_bots.MIN_TURN), k)
        assert swarm_bots._angle_diff(bot.angle, old) >= swarm_bots.MIN_TURN - 1e-9
        assert 120 <= math.hypot(bot.move_x, bot.move_z) <= 128
        facing = bot.yaw * 2 * math.pi / 65536  # yaw 0 faces +z, growing toward +x
        assert abs(math.sin(facing) * 127 - bot.move_x) < 2
        assert abs(math.cos(facing) * 127 - bot.move_z) < 2


def test_progress_line_figures_and_summed_counts():
    out = io.StringIO()
    line = ProgressLine(10, stream=out)
    line(1.5, dict(phase="setup", connected=3, failures=0, opening=2))
    worker = [dict(connected=5, snapshots=100, bytes=5000, failures=0, packets_expected=1000,
                   packets_received=990, latency_ms=[10.0, 20.0]),
              dict(connected=5, snapshots=100, bytes=5000, failures=1, packets_expected=1000,
                   packets_received=1000, latency_ms=[])]
    total = _sum_counts(worker)
    assert total["connected"] == 10 and total["latency_ms"] == [10.0, 20.0]
    line(1.0, dict(total, phase="measure"))
    line(2.0, dict(total, snapshots=600, bytes=30000, latency_ms=[30.0] * 98, phase="measure"))
    first, second, third = out.getvalue().splitlines()
    assert first == "swarm set-up   1.5s: connected 3/10 opening 2 failures 0"
    assert "connected 10/10" in second and "latency p99 19.9 ms" in second and "loss 0.500 %" in second
    # the next second: 400 snapshots and 20 kB more; p99 over every sample so far (100)
    assert "snapshots/s     400" in third and "kB/s     20.0" in third and "latency p99 30.0 ms" in third
    assert "failures 1" in third


def test_stdin_start_says_ready_and_reads_the_start():
    said = io.StringIO()
    told = StdinStart(stdin=io.StringIO("hello\nstart x\nstart 123.25\n"), stdout=said)
    told.ready(1.23456)
    assert json.loads(said.getvalue()) == {"ready": 1.235}
    told.begin()
    told._reader.join(5.0)
    assert told.begin() == 123.25
    ended = StdinStart(stdin=io.StringIO(""), stdout=said)  # nobody will say: start now
    before = time.monotonic()
    ended.begin()
    ended._reader.join(5.0)
    assert ended.begin() >= before
