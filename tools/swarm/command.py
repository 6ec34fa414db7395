"""The swarm's command: ``worldserver swarm`` and ``python -m worldtools.swarm``.

Job: :func:`run_swarm` reads the argparse options, picks the transport (``udp``: the bots
join over HTTP, then connect to ``--server``; ``webrtc``/``ws``: they connect at ``--http``),
runs the bots in this process or in ``--processes`` workers, and prints the report (a table,
or ``--json``: the keys of :func:`worldtools.swarm.report.public_report`); exit 0 when every
bot connected and nothing failed, 1 otherwise, 2 for a usage error. ``--chat-rate R`` runs
the chat swarm (:mod:`worldtools.chat_swarm`) beside the movement swarm over the same window.
A progress line a second goes to stderr (:class:`ProgressLine`) unless ``--quiet`` or
``--json``; ``--wait-start`` lets another process say when to start measuring
(:class:`StdinStart`). :func:`main` is ``python -m worldtools.swarm``.

Must not: hold swarm logic (the bot set, the loop, the transports and the report do), or
print a traceback for a usage error (one line on stderr, exit 2).
"""

from __future__ import annotations

import json
import sys
import time

from worldtools.swarm import channels, udp
from worldtools.swarm.report import format_report, percentile, public_report

__all__ = ["ProgressLine", "StdinStart", "main", "run_swarm", "shows_progress"]


class ProgressLine:
    """``progress`` that prints one line a second on stderr: during the set-up ``swarm
    set-up 2.0s: connected a/b failures f`` (``, waiting for the start`` once set up), then
    ``swarm t=..s connected a/b snapshots/s .. kB/s .. latency p99 .. ms loss ..% failures
    ..`` (rates since the previous line, by the counts' ``at``; latency p99 and packet loss
    over the measurement so far)."""

    def __init__(self, bots: int, stream=None) -> None:
        self.bots = bots
        self.stream = stream
        self.last: tuple[float, dict] | None = None
        self.latency: list[float] = []

    def __call__(self, elapsed: float, counts: dict) -> None:
        stream = self.stream or sys.stderr
        connected = f"connected {counts.get('connected', 0)}/{self.bots}"
        failures = f"failures {counts.get('failures', 0)}"
        at = counts.get("at", elapsed)
        last, self.last = self.last, (at, counts)
        if counts.get("phase", "measure") != "measure":
            extra = f" opening {counts['opening']}" if counts.get("opening") else ""
            waiting = ", waiting for the start" if counts.get("phase") == "waiting" else ""
            print(f"swarm set-up {elapsed:5.1f}s: {connected}{extra} {failures}{waiting}", file=stream, flush=True)
            return
        self.latency.extend(counts.get("latency_ms", ()))
        snaps_s = kb_s = 0.0
        if last is not None and at > last[0]:
            snaps_s = (counts["snapshots"] - last[1]["snapshots"]) / (at - last[0])
            kb_s = (counts["bytes"] - last[1]["bytes"]) / (at - last[0]) / 1000.0
        p99 = percentile(self.latency, 99)
        expected = counts.get("packets_expected", 0)
        loss = 100.0 * (expected - counts.get("packets_received", 0)) / expected if expected else 0.0
        print(
            f"swarm t={elapsed:5.1f}s {connected} snapshots/s {snaps_s:7.0f}  kB/s {kb_s:8.1f}  "
            f"latency p99 {'-' if p99 is None else f'{p99:.1f} ms'}  loss {loss:.3f} %  {failures}",
            file=stream, flush=True,
        )


def _parse_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def default_http_url(host: str) -> str:
    """Where UDP bots join when no ``--http`` is given: the server's default HTTP port."""
    return f"http://[{host}]:8080" if ":" in host else f"http://{host}:8080"


def shows_progress(args) -> bool:
    """The progress lines are shown unless ``--quiet`` or ``--json`` (``--progress``, for a
    swarm run by another tool that reads its JSON report, shows them anyway)."""
    if getattr(args, "progress", False):
        return True
    return not (getattr(args, "quiet", False) or getattr(args, "json", False))


class StdinStart:
    """``ready`` and ``begin`` for a swarm driven by another process (``--wait-start``): when
    the set-up is over it prints ``{"ready": setup_s}`` on stdout, and measuring starts at
    the ``time.monotonic()`` value of a ``start T`` line on stdin (at once when stdin ends).
    The reading thread starts at the first ``begin()`` (after any worker processes forked)."""

    def __init__(self, stdin=None, stdout=None) -> None:
        self.stdin, self.stdout = stdin, stdout
        self.at: float | None = None
        self._reader = None

    def ready(self, setup_s: float) -> None:
        print(json.dumps({"ready": round(setup_s, 3)}), file=self.stdout or sys.stdout, flush=True)

    def begin(self) -> float | None:
        if self._reader is None:
            import threading

            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()
        return self.at

    def _read(self) -> None:
        for line in self.stdin or sys.stdin:
            word, _, value = line.strip().partition(" ")
            if word == "start":
                try:
                    self.at = float(value)
                    return
                except ValueError:
                    continue
        self.at = time.monotonic()  # stdin ended: nobody will say when


def run_swarm(args) -> int:
    """``worldserver swarm``: run the swarm as the argparse ``args`` say; 0 if all went well.

    ``args.transport`` (default ``udp``) picks the transport: ``webrtc`` and ``ws`` connect
    at ``args.http`` (the HTTP base URL, required). UDP bots connect to ``args.server`` and
    join at ``args.http`` first (default ``http://HOST:8080``, the server's default HTTP
    port), or connect anonymously with ``args.anonymous``. ``args.duration`` seconds are
    measured after the set-up; progress lines go to stderr (:func:`shows_progress`);
    ``args.wait_start`` waits for the start on stdin (:class:`StdinStart`).
    """
    transport = getattr(args, "transport", None) or "udp"
    if float(getattr(args, "chat_rate", 0.0) or 0.0) > 0.0:
        return _run_with_chat(args, transport)
    if transport != "udp" and transport not in channels.TRANSPORTS:
        print(f"error: --transport must be udp, webrtc or ws, not {transport!r}", file=sys.stderr)
        return 2
    bots = int(args.bots)
    duration = float(args.duration)
    processes = max(1, int(getattr(args, "processes", 1) or 1))
    observers = int(getattr(args, "observers", 16))
    seed = getattr(args, "seed", None)
    speed = getattr(args, "speed", None)
    progress = ProgressLine(bots) if shows_progress(args) else None
    if transport == "udp":
        if not getattr(args, "server", None):
            print("error: --transport udp needs --server HOST:PORT", file=sys.stderr)
            return 2
        host, port = _parse_hostport(args.server)
        http = None if getattr(args, "anonymous", False) else (getattr(args, "http", None) or default_http_url(host))
        hooks = _start_hooks(args)
        if processes == 1:
            report = udp.run_bots_sync(host, port, bots, duration, observers=observers, seed=seed,
                                       progress=progress, speed=speed, http=http, **hooks)
        else:
            report = udp.run_processes(host, port, bots, duration, processes, observers, seed, progress,
                                       speed=speed, http=http, **hooks)
        reasons = report.get("failure_reasons", {})
        if "join_unreachable" in reasons:
            print(f"swarm: no answer from {http} to the joins: give the server's HTTP port with --http URL",
                  file=sys.stderr)
        if "refused_token_required" in reasons:
            print("swarm: the server requires connect tokens: let the bots join (--http URL), not --anonymous",
                  file=sys.stderr)
    else:
        http_url = getattr(args, "http", None)
        if not http_url:
            print(f"error: --transport {transport} needs --http URL (e.g. http://127.0.0.1:8080)",
                  file=sys.stderr)
            return 2
        try:
            channels.check_url(http_url)
        except ValueError as exc:
            print(f"error: --http: {exc}", file=sys.stderr)
            return 2
        hooks = _start_hooks(args)
        if processes == 1:
            report = channels.run_bots_sync(transport, http_url, bots, duration, observers=observers,
                                            seed=seed, progress=progress, speed=speed, **hooks)
        else:
            report = channels.run_processes(transport, http_url, bots, duration, processes, observers, seed,
                                            progress, speed=speed, **hooks)
    shown = public_report(report)
    if getattr(args, "json", False):
        print(json.dumps(shown, sort_keys=True))
    else:
        print(format_report(shown))
    return 0 if report["ok"] else 1


def _start_hooks(args) -> dict:
    """``ready`` and ``begin`` for ``--wait-start`` (:class:`StdinStart`), else none."""
    if not getattr(args, "wait_start", False):
        return {}
    driven = StdinStart()
    return dict(ready=driven.ready, begin=driven.begin)


def _run_with_chat(args, transport: str) -> int:
    """``--chat-rate R``: every bot also chats (its own ``/ws/chat`` connection, R messages a
    second) while the movement swarm runs in its own processes, both measuring the same
    ``--duration`` seconds after their set-ups; the report is the movement report with the
    chat report (delivery latency p50/p99, deliveries missing and duplicate) under ``chat``.
    A rate above the server's per-user chat limit is refused before anything starts."""
    from worldtools import chat_swarm

    http_url = getattr(args, "http", None)
    if not http_url:
        print("error: --chat-rate needs --http URL (the chat is on the HTTP port)", file=sys.stderr)
        return 2
    if transport == "udp" and not getattr(args, "server", None):
        print("error: --transport udp needs --server HOST:PORT", file=sys.stderr)
        return 2
    try:
        server = chat_swarm.probe_server(http_url)
        chat_swarm.check_chat_rate(float(args.chat_rate), server)
    except chat_swarm.ChatRateAboveLimit as exc:
        print(f"error: --chat-rate: {exc}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as exc:
        print(f"error: --http {http_url}: the chat does not answer ({exc})", file=sys.stderr)
        return 1
    processes = max(1, int(getattr(args, "processes", 1) or 1))
    movement_argv = ["--transport", transport, "--http", http_url, "--bots", str(args.bots),
                     "--processes", str(processes),
                     "--observers", str(int(getattr(args, "observers", 16)))]
    if getattr(args, "server", None):
        movement_argv += ["--server", args.server]
    seed = getattr(args, "seed", None)
    if seed is not None:
        movement_argv += ["--seed", str(seed)]
    as_json = bool(getattr(args, "json", False))
    show = shows_progress(args)
    say = (lambda line: print(line, file=sys.stderr, flush=True)) if show else None
    movement, chat = chat_swarm.run_with_movement(
        movement_argv, http_url, int(args.bots), float(args.chat_rate), float(args.duration),
        processes=processes, seed=seed, progress=say, server=server, movement_progress=show,
        on_counts=chat_swarm.ProgressLine(say, int(args.bots)) if show else None)
    report = dict(movement, chat=chat, ok=bool(movement.get("ok")) and bool(chat["ok"]))
    if as_json:
        print(json.dumps(report, sort_keys=True))
    else:
        if "error" in movement:
            print(f"movement: {movement['error']}")
        else:
            print(format_report(movement))
        print("chat:")
        print(chat_swarm.format_report(chat))
    return 0 if report["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m worldtools.swarm``: the options of ``worldserver swarm`` and a few for tools
    that drive a swarm (``--speed``, ``--progress``, ``--wait-start``)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m worldtools.swarm")
    parser.add_argument("--server", help="HOST:PORT of the UDP endpoint (udp)")
    parser.add_argument("--transport", choices=("udp", "webrtc", "ws"), default="udp")
    parser.add_argument("--http", help="the HTTP base URL, e.g. http://127.0.0.1:8080 (webrtc, ws;"
                        " udp: where the bots join, default http://HOST:8080)")
    parser.add_argument("--anonymous", action="store_true",
                        help="udp: connect without joining (servers with net.require_connect_token = false)")
    parser.add_argument("--bots", type=int, default=10)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured, after the set-up")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--observers", type=int, default=16)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--speed", type=float, default=None,
                        help="walking speed of the bots in m/s (default: the server's max speed)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--progress", action="store_true", help="progress lines even with --json")
    parser.add_argument("--wait-start", action="store_true",
                        help='after the set-up print {"ready": S} and wait for "start T" (T: time.monotonic())'
                        " on stdin")
    return run_swarm(parser.parse_args(argv))
