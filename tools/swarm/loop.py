"""The swarm's one loop: set the bots up, then measure, over any transport.

Job: :func:`run` drives one process's :class:`~worldtools.swarm.bots.BotSet` over a
:class:`~worldtools.swarm.transport.Transport` inside trio: the send slots (every
``SEND_INTERVAL / PHASES`` seconds), the waits for the transport's data, the phases
(:class:`Phases`: set-up, waiting for ``begin``, measuring), the progress calls, the teardown,
and the raw result (``setup_s`` and the measured ``duration_s`` among it) turned into the
report (:func:`worldtools.swarm.report.make_report`). Set-up first: the bots join (UDP, if the
transport has a join URL), open their links and connect (connected bots already walk; nothing
is counted) until every bot is connected or has failed, bounded by the transport's
``setup_bound`` (:func:`setup_bound`); then ``duration`` seconds are measured.

Must not: know how packets travel (the transport does), count anything itself (the bot set
does), or run unbounded: the set-up has its bound, the measurement its ``duration``, the
wait for ``begin`` :data:`BEGIN_WAIT`, and the transport's ``close_all`` is bounded.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable

from worldtools.swarm.bots import CONNECT_BATCH, HANDSHAKE_TIMEOUT, PHASES, SEND_INTERVAL, BotSet
from worldtools.swarm.report import make_report
from worldtools.swarm.transport import Transport

__all__ = ["BEGIN_WAIT", "Phases", "raise_nofile_limit", "run", "setup_bound"]

PROGRESS_INTERVAL = 1.0
SETUP_SLACK = 5.0  # seconds beyond the expected set-up (connections, worker start) allowed
BEGIN_WAIT = 300.0  # seconds after the set-up to wait for ``begin`` before measuring anyway


def setup_bound(bots: int, connect_rate: float | None = None, open_timeout: float = 0.0) -> float:
    """Seconds the connections of ``bots`` bots may take before the measurement starts anyway:
    their handshakes start at ``connect_rate`` per second (UDP: :data:`CONNECT_BATCH` per
    sub-slot), each may take its opening (``open_timeout``) and handshake timeouts, plus
    :data:`SETUP_SLACK`. A bot still connecting then fails."""
    rate = connect_rate or CONNECT_BATCH * PHASES / SEND_INTERVAL
    return bots / rate + open_timeout + HANDSHAKE_TIMEOUT + SETUP_SLACK


class Phases:
    """The set-up and measurement phases of one swarm loop, on ``clock``.

    :meth:`update` is called on every pass of the loop with ``settled`` (every bot connected
    or failed): the set-up ends when it is true or ``setup_end`` has passed; then
    ``ready(setup_s)`` is called once, and the measurement starts when ``begin()`` returns a
    time (on ``clock``) that has come (None: not yet; no ``begin``: at once; at most
    :data:`BEGIN_WAIT` seconds later in any case) and lasts ``duration`` seconds.
    """

    def __init__(self, clock, t_begin: float, setup_end: float, duration: float, warmup: float,
                 ready=None, begin=None) -> None:
        self.clock = clock
        self.t_begin = t_begin
        self.setup_end = setup_end
        self.duration = max(0.0, float(duration))
        self.warmup = max(0.0, float(warmup))
        self.ready, self.begin = ready, begin
        self.set_up_at: float | None = None  # when the set-up ended
        self.t0 = math.inf  # the measurement's start
        self.end = math.inf

    @property
    def measuring(self) -> bool:
        return self.t0 != math.inf

    @property
    def name(self) -> str:
        """``"setup"``, ``"waiting"`` (set up, waiting for ``begin``) or ``"measure"``."""
        return "measure" if self.measuring else "setup" if self.set_up_at is None else "waiting"

    @property
    def setup_s(self) -> float:
        """Seconds from the start until the measurement began (or until now)."""
        return (self.t0 if self.measuring else self.clock()) - self.t_begin

    def update(self, now: float, settled: bool) -> bool:
        """True when the measurement started on this pass (``t0``, ``end`` are set)."""
        if self.measuring:
            return False
        if self.set_up_at is None:
            if not (settled or now >= self.setup_end):
                return False
            self.set_up_at = now
            if self.ready is not None:
                self.ready(now - self.t_begin)
        at = None if self.begin is None else self.begin()
        if self.begin is None or (at is not None and now >= at) or now >= self.set_up_at + BEGIN_WAIT:
            self.t0 = now
            self.end = now + self.duration
            return True
        return False

    def next_wake(self) -> float:
        """The latest time of the next pass (the measurement's start or end)."""
        return self.end if self.measuring else self.clock() + SEND_INTERVAL / PHASES


async def run(
    transport: Transport,
    bots: int,
    duration: float,
    observers: int = 16,
    seed: int | None = None,
    progress=None,
    *,
    warmup: float = 0.0,
    speed: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    tickets: list | None = None,
    ready: Callable[[float], None] | None = None,
    begin: Callable[[], float | None] | None = None,
    setup_timeout: float | None = None,
) -> dict:
    """Run ``bots`` bots (the first ``observers`` of them decoding) over ``transport``: set
    them up, then measure ``duration`` seconds; return the report.

    Runs inside trio and yields at every wait, so a server in the same trio run keeps
    ticking. Set-up: ``tickets`` (see :class:`~worldtools.swarm.bots.BotSet`), or what the
    transport's ``tickets`` gives (UDP: a join per bot over HTTP, in a worker thread); then
    the bots connect until all are connected or failed, at most ``setup_timeout`` seconds
    (default: the transport's ``setup_bound``). ``ready(setup_s)`` is called then, and the
    measurement starts when ``begin()`` says (see :class:`Phases`; default: at once).
    Counting starts ``warmup`` seconds into the measurement. ``progress(elapsed_s, counts)``
    is called about once a second with :meth:`BotSet.progress_counts`, the ``phase``
    (:attr:`Phases.name`; elapsed counts from the start, or from the measurement's start once
    measuring) and ``at``, the time of the counts on ``clock``; also when the set-up ends
    (how it ended), while measuring at whole seconds of it, and once more at its end
    (elapsed = ``duration``). ``speed``: the bots' walking speed in m/s (None: the server's
    ``max_speed``). ``clock``: where durations, rates and latencies are measured, in seconds
    above 0 (0.0 marks "not yet"); ``trio.current_time`` makes them follow trio's clock
    (tests run the swarm and an in-process server on a MockClock). The report's raw fields
    can be merged with other processes' results by
    :func:`~worldtools.swarm.report.merge_results`.
    """
    raise_nofile_limit(transport.files_per_bot * bots + 64)
    t_begin = clock()
    if tickets is None:
        tickets = await transport.tickets(bots)
    swarm = BotSet(transport, bots, observers, seed, speed=speed, clock=clock, tickets=tickets)
    swarm.measure_start = math.inf  # nothing is counted during the set-up
    bound = transport.setup_bound(bots) if setup_timeout is None else setup_timeout
    phases = Phases(clock, t_begin, clock() + bound, duration, warmup, ready, begin)
    cpu_mark = None
    next_send = clock()
    slot = SEND_INTERVAL / PHASES
    phase = 0
    next_progress = next_send + PROGRESS_INTERVAL
    now = next_send
    async with transport.running():
        try:
            while True:
                now = clock()
                was_set_up = phases.set_up_at is not None
                if phases.update(now, swarm.settled()):
                    swarm.measure_start = phases.t0 + phases.warmup
                    next_progress = phases.t0 + PROGRESS_INTERVAL
                if progress is not None and not was_set_up and phases.set_up_at is not None:  # how it ended
                    progress(phases.set_up_at - t_begin, dict(swarm.progress_counts(), phase="setup", at=now))
                if now >= phases.end:
                    if progress is not None:  # once more at the end: elapsed = duration
                        progress(phases.duration, dict(swarm.progress_counts(), phase=phases.name, at=now))
                    break
                if cpu_mark is None and now >= swarm.measure_start:
                    cpu_mark = (time.process_time(), now)
                if now >= next_send:
                    if now >= swarm.measure_start:
                        swarm.send_late.append((now - next_send) * 1000.0)
                    swarm.send_slot(now, phase)
                    phase = (phase + 1) % PHASES
                    next_send += slot
                    if next_send <= now:  # more than a whole slot behind: do not try to catch up
                        next_send = now + slot
                if progress is not None and now >= next_progress:
                    next_progress += PROGRESS_INTERVAL
                    counts = swarm.progress_counts()
                    counts["phase"], counts["at"] = phases.name, now
                    progress(now - (phases.t0 if phases.measuring else t_begin), counts)
                await transport.wait(min(next_send, phases.next_wake(), next_progress if progress else math.inf))
        finally:
            now = clock()
            swarm.teardown(now)
            await transport.close_all()
    if cpu_mark is None:
        cpu_mark = (time.process_time(), now)
    cpu_s = time.process_time() - cpu_mark[0]
    window = max(0.0, min(now, phases.end) - swarm.measure_start)
    raw = swarm.result(bots, phases.end, cpu_s, window)
    raw["duration_s"] = round(now - phases.t0, 3)
    raw["setup_s"] = round(phases.setup_s, 3)
    raw.update(transport.report())
    return make_report(raw)


def raise_nofile_limit(needed: int) -> None:
    """One socket per bot: lift the soft open-files limit toward the hard one if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))

