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

from protocol import PROTOCOL_VERSION  # noqa: E402
from protocol import packets as P  # noqa: E402
from protocol.events import ConnectRequest, Received  # noqa: E402
from protocol.messages import Welcome, decode_inputs  # noqa: E402
from protocol.quantize import Quantizer  # noqa: E402
from protocol.server import ServerEndpoint  # noqa: E402
from protocol.snapshot import encode_snapshot  # noqa: E402
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
    "parts_per_bot_s", "observed_refreshed_share", "setup_s", "probes_blocked",
}  # fmt: skip


def _config(world: str = "open"):
    # An open world by default: there the walk's turns are carried out as sent; the gallery's
    # walls void some (test_turns_into_walls_are_void_probes_in_the_gallery).
    return load_config(None, env={}, overrides={"udp.port": "0", "udp.host": "127.0.0.1", "http.port": "0",
                                                "http.host": "127.0.0.1", "worlds.hosted": world})


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
    assert report["probes_blocked"] == 0  # no walls: every turn is carried out as sent
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


async def test_turns_into_walls_are_void_probes_in_the_gallery(autojump_clock):
    # The gallery's benches stand where the observers wander: a turn into one makes the bot
    # stop or slide, and the others would see the turn only when it leaves the bench (a
    # sample of 400 to 1000 ms, not of the network). Such probes are void and counted.
    # Which turns meet a bench depends on the trajectories, which real datagrams on loopback
    # can vary (the clock jumps while they cross): rounds run, each with fresh bots, until
    # one has counted a void probe (one round in about ten has none); every round's latency
    # must be within a few ticks.
    autojump_clock.jump(1.0)
    blocked = []
    async with trio.open_nursery() as nursery:
        running = await nursery.start(serve, _config("gallery"))
        assert running.sim.world_id == "gallery" and running.sim.world.walls is not None
        host, port = running.udp_address[:2]
        tick_rate = running.sim.tick_rate
        for seed in range(1, 6):
            report = await swarm.run_bots(host, port, bots=16, duration=15.0, observers=16, seed=seed,
                                          clock=trio.current_time, tickets=mint_tickets(running, 16))
            assert report["connected"] == 16 and report["failures"] == 0, report["failure_reasons"]
            assert report["latency_samples"] >= 100
            # every turn carried out is seen within a few ticks, and no void one is seen late
            assert report["latency_ms_p99"] <= 4 * 1000 / tick_rate
            assert max(report["latency_samples_ms"]) <= 4 * 1000 / tick_rate
            blocked.append(report["probes_blocked"])
            if report["probes_blocked"]:
                break
        nursery.cancel_scope.cancel()
    assert blocked[-1] > 0, blocked
    assert "latency probes voided (blocked)" in swarm.format_report(report)


_WELCOME = dict(tick_rate=20, tick=0, mins=(-10.0, -1.0, -10.0), maxs=(10.0, 4.0, 10.0), position_step=0.01,
                max_speed=5.0, interest_radius=30.0)  # fmt: skip
_STEP_Q = 25  # quantized units an input moves a bot at max_speed (5 m/s / 20 Hz / 1 cm)
_Y_Q = 100  # y = 0


class _MemoryWire:
    """A transport for a bot set that carries its packets to a real sans-IO server endpoint
    in memory (a trusted one: HELLO, then ACCEPT), records the inputs each bot sent, and
    delivers the snapshots a test makes by hand. ``now`` is the time of both sides."""

    name = "memory"
    files_per_bot = 0
    trusted = True

    def __init__(self, entity_ids: list[int]) -> None:
        self.server = ServerEndpoint(secret=b"s" * 32, version=PROTOCOL_VERSION, trusted=True)
        self.entity_ids = entity_ids  # per bot index
        self.conns: dict = {}
        self.inputs: dict[int, list] = {}  # bot index -> every input it sent, by seq, once
        self.now = 0.0
        self.bots = None

    def bind(self, bots) -> None:
        self.bots = bots

    def admit(self, now, waiting):
        return waiting

    def open(self, bot, now) -> None:
        bot.link = ("bot", bot.index)
        self.bots.hello(bot, now)

    def send(self, bot, data):
        for ev in self.server.receive_datagram(data, bot.link, self.now):
            if isinstance(ev, ConnectRequest):
                welcome = Welcome(entity_id=self.entity_ids[bot.index], **_WELCOME)
                self.conns[bot.index] = self.server.accept(ev, welcome.encode(), self.now)
            elif isinstance(ev, Received) and ev.ptype == P.INPUT:
                sent = self.inputs.setdefault(bot.index, [])
                sent += [i for i in decode_inputs(ev.payload) if not sent or i.seq > sent[-1].seq]
        return True

    def close(self, bot) -> None:
        bot.link = None

    def deliver_replies(self) -> None:
        out, self.server.outbox = self.server.outbox, []
        for data, addr in out:
            self.bots.receive(self.bots.bots[addr[1]], data, self.now)

    def snapshot(self, bot, payload: bytes) -> None:
        self.bots.receive(bot, self.server.packet(self.conns[bot.index], P.SNAPSHOT, payload, self.now), self.now)


def test_a_probe_the_server_did_not_carry_out_is_void():
    """The void rule on hand-made snapshots (bots.BotSet._check_probe): observer A turns,
    observer B watches it; A's own snapshots (input_ack, its position) decide."""
    clock = [1.0]
    wire = _MemoryWire([5, 9])
    s = swarm_bots.BotSet(wire, bots=2, observers=2, seed=3, clock=lambda: clock[0])
    a, b = s.bots
    quantizer = Quantizer(mins=_WELCOME["mins"], maxs=_WELCOME["maxs"], step=_WELCOME["position_step"])
    held = {}  # (bot index, tick) -> the view that bot holds

    def at(t: float) -> None:
        clock[0] = wire.now = t

    def send(t: float) -> int:
        """One send slot of every phase at ``t``: returns A's newest input seq."""
        at(t)
        for phase in range(swarm_bots.PHASES):
            s.send_slot(t, phase)
        return a.seq

    def tick(t: float, n: int, ack_a: int, pos_a: tuple[int, int], base: int | None = None) -> None:
        """The server's tick ``n`` at ``t`` (A at ``pos_a``, B standing at the centre) to A
        (``ack_a``, a delta against A's tick ``base``) and to B (full)."""
        at(t)
        ids = np.array([5, 9], dtype=np.uint32)
        q = np.array([[pos_a[0], _Y_Q, pos_a[1], 0, 1], [1000, _Y_Q, 1000, 0, 1]], dtype=np.int32)
        for bot, ack, baseline in ((a, ack_a, base), (b, b.seq, None)):
            enc = encode_snapshot(tick=n, baseline=None if baseline is None else held[bot.index, baseline],
                                  cand_ids=ids, cand_q=q, part_budget=1187, input_ack=ack,
                                  self_id=bot.entity_id, layout=quantizer)  # fmt: skip
            held[bot.index, n] = enc.view
            for part in enc.parts:
                wire.snapshot(bot, part)

    send(1.0)  # the handshakes
    wire.deliver_replies()
    assert [bot.state for bot in s.bots] == [swarm_bots.LIVE, swarm_bots.LIVE]
    assert (a.entity_id, b.entity_id, a.step_q) == (5, 9, _STEP_Q)

    # 1. A walks east; it turns north into a wall it stands against: it does not move.
    s._set_direction(a, 0.0, 1.0, record=False)
    seq = send(1.02)
    tick(1.03, 10, seq, (1000, 1000))
    s._set_direction(a, math.pi / 2, 1.04)
    turn = send(1.05)
    assert a.turn_seq == turn and a.turn_time == 1.05  # the input that carried the turn
    assert [(i.move_x, i.move_z) for i in wire.inputs[0][-2:]] == [(127, 0), (0, 127)]
    tick(1.06, 11, turn - 1, (1025, 1000))  # the older input applied: nothing decided yet
    assert a.turn_seq == turn and s.probes_blocked == 0
    tick(1.11, 12, turn, (1025, 1000))  # the turn applied, and the bot stayed where it was
    assert (a.turn_seq, a.turn_time, s.probes_blocked) == (0, math.inf, 1)
    turn_id = a.turn_id
    send(1.12)
    tick(1.16, 13, turn + 1, (1025, 1025))  # it moves north (it left the wall): B would see
    tick(1.21, 14, turn + 1, (1025, 1050))  # the turn 110 ms late, but the probe is void
    assert s.latency_ms == [] and a.turn_id == turn_id

    # 2. A turns west and walks west: the probe stands and B sees it in the same tick.
    send(1.22)
    tick(1.24, 15, a.seq, (1025, 1075))
    s._set_direction(a, math.pi, 1.25)
    turn = send(1.25)
    tick(1.26, 16, turn, (1000, 1075))
    assert (a.turn_seq, s.probes_blocked) == (0, 1) and a.turn_time == 1.25
    assert s.latency_ms == [pytest.approx(10.0)]  # the 1.26 s tick's snapshot, 10 ms after the turn left

    # 3. A turns south while an input from before the turn is still unapplied: the next tick
    # applies both (a late input caught up), a mixed motion that decides nothing; a tick
    # without an input neither; then a slide along a wall at 45 degrees voids the probe.
    tick(1.31, 17, turn, (975, 1075))
    send(1.32)
    s._set_direction(a, -math.pi / 2, 1.36)
    turn = send(1.37)
    tick(1.38, 18, turn - 2, (950, 1075))
    tick(1.43, 19, turn, (925, 1050))  # west, then south
    tick(1.48, 20, turn, (925, 1050))  # no input applied
    assert a.turn_seq == turn and s.probes_blocked == 1
    send(1.5)
    tick(1.53, 21, turn + 1, (907, 1032))
    assert (a.turn_seq, a.turn_time, s.probes_blocked) == (0, math.inf, 2)
    tick(1.58, 22, turn + 1, (907, 1007))
    assert len(s.latency_ms) == 1

    # 4. A turns east; its own position in the next snapshot is its baseline's (the server
    # held it back, or it did not move): no evidence, the probe waits; then it walks 10
    # degrees off east (a shallow slide, seen as the turn by the others too): it stands.
    s._set_direction(a, 0.0, 1.6)
    turn = send(1.6)
    tick(1.63, 23, turn, (907, 1007), base=22)
    assert a.turn_seq == turn
    send(1.65)
    tick(1.68, 24, turn + 1, (931, 1011), base=23)
    assert (a.turn_seq, s.probes_blocked) == (0, 2) and a.turn_time == 1.6
    assert len(s.latency_ms) == 2 and s.latency_ms[-1] == pytest.approx(80.0)

    # 5. A turns north and barely moves (a wall a few centimetres ahead): void.
    s._set_direction(a, math.pi / 2, 1.7)
    turn = send(1.7)
    tick(1.73, 25, turn, (931, 1016))  # 5 units of the 25 an input moves
    assert (a.turn_time, s.probes_blocked) == (math.inf, 3)

    # 6. Outside the measurement window a void probe is not counted (east, into a bench:
    # no motion at all).
    s.measure_start = 10.0
    s._set_direction(a, 0.0, 1.75)
    turn = send(1.75)
    tick(1.78, 26, turn, (931, 1016))
    assert (a.turn_time, s.probes_blocked) == (math.inf, 3)
    assert len(s.latency_ms) == 2
    assert s.result(2, 2.0, 0.0, 1.0)["probes_blocked"] == 3
    one = swarm.make_report(dict(s.result(2, 2.0, 0.0, 1.0), duration_s=1.0))
    assert swarm.merge_results([one, one])["probes_blocked"] == 6


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
