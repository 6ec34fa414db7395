"""The bot swarm (worldtools.swarm) against a real server started in-process on loopback.

Checks that bots complete the real handshake, receive snapshots at about the tick rate, send
inputs at 20 Hz, say goodbye, that observers measure move-to-observed latency, that the report
carries every field, that worker processes merge, and that failures are reported as failures.
"""

from __future__ import annotations

import importlib.util
import math
import pathlib
import sys

import trio

if importlib.util.find_spec("worldclient") is None:  # not installed, and not on pythonpath
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "clients" / "python"))

from worldserver.app import serve  # noqa: E402
from worldserver.config import load_config  # noqa: E402
from worldtools import swarm  # noqa: E402

REPORT_FIELDS = {
    "bots_requested", "connected", "failures", "failure_reasons", "decode_errors",
    "snapshots_per_bot_s", "bytes_per_bot_s", "inputs_per_bot_s", "latency_ms_p50",
    "latency_ms_p99", "latency_samples", "packet_loss", "duration_s", "processes", "ok",
    "cpu_percent", "observed_entities_mean", "input_backlog_p50", "input_backlog_p99",
}  # fmt: skip


def _config():
    return load_config(None, env={}, overrides={"udp.port": "0", "udp.host": "127.0.0.1", "http.port": "0", "http.host": "127.0.0.1"})


async def test_swarm_against_in_process_server():
    async with trio.open_nursery() as nursery:
        running = await nursery.start(serve, _config())
        host, port = running.udp_address[:2]
        report = await swarm.run_bots(host, port, bots=6, duration=3.0, observers=3, seed=7)
        # The bots said goodbye: the server forgets them without waiting for a timeout.
        with trio.move_on_after(2.0):
            while running.sim.sessions:
                await trio.sleep(0.02)
        sessions_left = len(running.sim.sessions)
        nursery.cancel_scope.cancel()

    assert REPORT_FIELDS <= report.keys()
    assert report["bots_requested"] == 6
    assert report["connected"] == 6
    assert report["failures"] == 0, report["failure_reasons"]
    assert report["ok"] is True
    assert report["snapshots_per_bot_s"] > 10.0  # 20 Hz tick; generous for a noisy machine
    assert 15.0 < report["inputs_per_bot_s"] <= 21.0
    assert report["bytes_per_bot_s"] > 0
    assert report["packet_loss"] < 0.05
    assert report["latency_samples"] >= 1
    assert 0.0 < report["latency_ms_p50"] <= report["latency_ms_p99"] < 1000.0
    assert report["observed_entities_mean"] >= 3  # observers see the others near spawn
    assert 2.9 <= report["duration_s"] < 4.0
    assert sessions_left == 0


async def test_worker_processes_are_merged():
    async with trio.open_nursery() as nursery:
        running = await nursery.start(serve, _config())
        host, port = running.udp_address[:2]
        ticks = []
        report = await trio.to_thread.run_sync(
            lambda: swarm.run_processes(
                host, port, bots=5, duration=2.5, processes=2, observers=2, seed=3,
                progress=lambda elapsed, counts: ticks.append(counts),
            )
        )  # fmt: skip
        nursery.cancel_scope.cancel()

    assert report["processes"] == 2
    assert report["bots_requested"] == 5 and report["connected"] == 5
    assert report["failures"] == 0, report
    assert report["snapshots_per_bot_s"] > 10.0
    assert ticks and ticks[-1]["connected"] == 5


async def test_no_server_is_a_failure():
    # A bound socket that never answers: the handshakes cannot finish.
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    with sock:
        report = await swarm.run_bots("127.0.0.1", port, bots=3, duration=0.6, observers=1)
    assert report["connected"] == 0
    assert report["failures"] == 3
    assert report["failure_reasons"] == {"handshake_unfinished": 3}
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


def test_walk_faces_its_direction_and_turns_far_enough():
    s = swarm._Swarm("127.0.0.1", 9, bots=1, observers=1, seed=1)
    bot = s.bots[0]
    try:
        for k in range(50):
            old = bot.angle
            s._set_direction(bot, old + s.rng.uniform(swarm.MIN_TURN, 2 * math.pi - swarm.MIN_TURN), k)
            assert swarm._angle_diff(bot.angle, old) >= swarm.MIN_TURN - 1e-9
            assert 120 <= math.hypot(bot.move_x, bot.move_z) <= 128
            facing = bot.yaw * 2 * math.pi / 65536  # yaw 0 faces +z, growing toward +x
            assert abs(math.sin(facing) * 127 - bot.move_x) < 2
            assert abs(math.cos(facing) * 127 - bot.move_z) < 2
    finally:
        s.ep.close()
