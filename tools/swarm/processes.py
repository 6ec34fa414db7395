"""The swarm's one process runner: bots spread over worker processes, one measurement, one report.

Job: :func:`run_workers` starts worker processes that each run one transport's share of the
bots (a module-level ``run`` function: :func:`worldtools.swarm.udp.run_bots_sync` or
:func:`worldtools.swarm.channels.run_bots_sync`) and post ``progress``, ``ready``, ``result``
or ``error`` messages on a queue; :func:`supervise` is the parent's side: it waits until every
worker is set up, sets the one instant at which all start measuring, sums their progress, and
kills workers that outlive the measurement. The results are merged into one report
(:func:`worldtools.swarm.report.merge_results`); a worker that failed or was lost counts its
bots as failed (``worker_error``, ``worker_lost``).

Must not: run bots itself (the workers do), leave a worker process behind (each is joined,
then killed after its deadline), or block without a bound (every wait has a timeout).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import time
from collections.abc import Callable

from worldtools.swarm.loop import PROGRESS_INTERVAL, Phases
from worldtools.swarm.report import make_report, merge_results

__all__ = ["TEARDOWN_CAP", "run_workers", "supervise"]

TEARDOWN_CAP = 10.0  # seconds beyond the duration after which workers are killed


def _split(bots: int, processes: int) -> list[int]:
    base, extra = divmod(bots, processes)
    return [base + (1 if i < extra else 0) for i in range(processes)]


def _worker(index, run, kwargs, start, out, cpus=None, nice=0) -> None:
    """Worker process body: ``run(**kwargs)`` with ``progress``, ``ready`` and ``begin`` that
    post on ``out`` (and read the start), then post the final result; the measurement starts
    at ``start.value`` (``time.monotonic()``), which the parent sets once every worker is
    ready. ``cpus``: pin the process to these CPUs; ``nice`` > 0: lower its priority."""
    if nice:
        os.nice(nice)

    def progress(elapsed: float, counts: dict) -> None:
        out.put(("progress", index, counts))

    try:
        if cpus:
            os.sched_setaffinity(0, set(cpus))
        result = run(
            progress=progress, ready=lambda setup_s: out.put(("ready", index, setup_s)),
            begin=lambda: start.value or None, **kwargs,
        )  # fmt: skip
        out.put(("result", index, result))
    except BaseException as exc:  # report, never hang the parent
        out.put(("error", index, f"{type(exc).__name__}: {exc}"))


def supervise(workers: list, out, start, *, duration: float, setup_wait: float, t_begin: float,
              progress=None, ready=None, begin=None, teardown: float = TEARDOWN_CAP) -> tuple[dict, dict, float]:
    """The parent's side of worker processes that run the swarm's loop
    (:func:`worldtools.swarm.loop.run`, over any transport) and post ``progress``,
    ``ready``, ``result`` or ``error`` messages on ``out``. Once every worker is ready (or
    ``setup_wait`` seconds have passed), it calls ``ready(setup_s)`` and, when ``begin()``
    gives a time (``time.monotonic()``; no ``begin``: at once; at most
    :data:`~worldtools.swarm.loop.BEGIN_WAIT` later), sets the shared ``start`` value at
    which every worker starts measuring. ``progress(elapsed_s, counts)`` is called about
    once a second with the workers' sums (``phase`` and the seconds as in
    :func:`worldtools.swarm.loop.run`, the last call, elapsed = ``duration``, once every
    worker has reported; ``latency_ms``: the samples new since the last call; ``at``: the
    oldest of the workers' counts). Workers that outlive the measurement by ``teardown``
    seconds are killed. Returns (results, errors, setup_s) by worker index."""
    n = len(workers)
    results: dict[int, dict] = {}
    errors: dict[int, str] = {}
    latest: dict[int, dict] = {}
    readies: set[int] = set()
    fresh: list[float] = []  # latency samples not yet given to progress
    phases = Phases(time.monotonic, t_begin, time.monotonic() + setup_wait, duration, 0.0, ready, begin)
    next_progress = time.monotonic() + PROGRESS_INTERVAL

    def report_progress(now: float, final: bool = False) -> None:
        nonlocal fresh
        counts = _sum_counts(latest.values())
        counts["latency_ms"], fresh = fresh, []
        # the counts are as of the workers' last reports (their clock is this one)
        at = min((c.get("at", now) for c in latest.values()), default=now)
        counts["phase"], counts["at"] = phases.name, at
        progress(phases.duration if final else max(0.0, at - (phases.t0 if phases.measuring else t_begin)), counts)

    try:
        while len(results) + len(errors) < n:
            now = time.monotonic()
            settled = all(i in readies or i in results or i in errors for i in range(n))
            if not phases.measuring and phases.update(now, settled):
                start.value = phases.t0
                next_progress = phases.t0 + PROGRESS_INTERVAL + 0.1  # just after the workers report
            if now >= phases.end + teardown:
                break
            if now >= next_progress:
                next_progress += PROGRESS_INTERVAL
                if progress is not None and now < phases.end:
                    report_progress(now)
            try:
                kind, index, payload = out.get(timeout=max(0.01, min(0.2, next_progress - now)))
            except queue.Empty:
                if all(not p.is_alive() for p in workers) and out.empty():
                    break
                continue
            if kind == "progress":
                fresh.extend(payload.pop("latency_ms", ()))
                latest[index] = payload
            elif kind == "ready":
                readies.add(index)
            elif kind == "result":
                results[index] = payload
            else:
                errors[index] = payload
        if progress is not None and phases.measuring:  # once more, with every worker's last counts
            report_progress(time.monotonic(), final=True)
    finally:
        stop_by = min(phases.end + teardown, time.monotonic() + 2.0 * len(workers) + 2.0)
        for p in workers:
            p.join(timeout=max(0.0, min(2.0, stop_by - time.monotonic())))
            if p.is_alive():
                p.kill()
                p.join(timeout=2.0)
    return results, errors, phases.setup_s



def run_workers(
    run: Callable[..., dict],
    bots: int,
    duration: float,
    processes: int,
    observers: int,
    seed: int | None,
    progress=None,
    *,
    share: Callable[[int, int, int], dict],
    setup_bound: Callable[[int], float],
    fields: dict | None = None,
    teardown: float = TEARDOWN_CAP,
    cpus=None,
    nice: int = 0,
    ready=None,
    begin=None,
    t_begin: float | None = None,
) -> dict:
    """Spread ``bots`` bots over ``processes`` worker processes (at least one, at most one a
    bot), each running ``run(bots=n, duration=..., observers=..., seed=..., **share(index,
    first, n))`` for its ``n`` bots from bot number ``first``; return the merged report.

    All observers run in the first worker, so that the turns they make and the turns they
    see share one process. The workers set up their bots, then all measure ``duration``
    seconds from one instant (:func:`supervise`, which also takes ``ready`` and ``begin``
    and calls ``progress``; it waits at most ``setup_bound(largest share)`` plus half a
    second a process for the set-up). The report's ``setup_s`` counts from ``t_begin``
    (default: now). Workers that outlive the measurement by ``teardown`` seconds are killed
    and count as failed. ``fields``: the transport's own report fields (see
    :func:`~worldtools.swarm.report.merge_results`). ``cpus``: CPU numbers the workers are
    pinned to (``os.sched_setaffinity``), None for no pinning; ``nice`` > 0 lowers their
    scheduling priority (the server under test should not wait for the load generator).
    """
    t_begin = time.monotonic() if t_begin is None else t_begin
    processes = max(1, min(int(processes), int(bots)))
    counts = _split(int(bots), processes)
    observers = min(int(observers), counts[0])
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    out = ctx.Queue()
    start = ctx.Value("d", 0.0, lock=False)  # the measurement's start; 0.0 until set
    workers = []
    first = 0
    for i, n in enumerate(counts):
        kwargs = dict(bots=n, duration=duration, observers=observers if i == 0 else 0,
                      seed=None if seed is None else seed * 1000 + i, **share(i, first, n))
        first += n
        p = ctx.Process(target=_worker, args=(i, run, kwargs, start, out, cpus, nice), daemon=True)
        p.start()
        workers.append(p)
    results, errors, setup_s = supervise(
        workers, out, start, duration=duration, setup_wait=setup_bound(max(counts)) + 0.5 * processes,
        t_begin=t_begin, progress=progress, ready=ready, begin=begin, teardown=teardown,
    )  # fmt: skip
    report = merge_results(list(results.values()), fields)
    for i, n in enumerate(counts):
        if i not in results:
            reason = "worker_error" if i in errors else "worker_lost"
            report["failure_reasons"][reason] = report["failure_reasons"].get(reason, 0) + n
            report["bots_requested"] += n
    if errors:
        report["worker_errors"] = errors
    report["setup_s"] = round(setup_s, 3)
    return make_report(report)


def _sum_counts(items) -> dict:
    """Progress counts of several workers: numbers summed, lists joined (``at`` and ``phase``
    are not counts: left out)."""
    total: dict = dict(connected=0, snapshots=0, bytes=0, failures=0, packets_expected=0, packets_received=0)
    for c in items:
        for k, v in c.items():
            if k in ("at", "phase"):
                continue
            if isinstance(v, list):
                total.setdefault(k, []).extend(v)
            elif isinstance(v, (int, float)):
                total[k] = total.get(k, 0) + v
    return total

