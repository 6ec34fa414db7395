"""Soak: one real server under UDP bots and chat bots for a long time; leaks, lateness, stalls.

Job: start ``worldserver run`` as a subprocess (``ServerProcess`` of
``tools/server_process.py``: loopback, free ports, JSON logs, a temporary data directory),
run the movement swarm (``worldtools.swarm.run_processes``: ``--bots`` UDP bots in worker
processes) and the chat swarm (``worldtools.chat_swarm.run_chat_swarm``: ``--chat-bots`` bots
on ``/ws/chat``, each sending ``--chat-rate`` messages a second) against it for ``--minutes``,
and every ``--sample-every`` seconds record the server's RSS (``VmRSS`` of
``/proc/<pid>/status``), open files and CPU, whether ``/health`` answers, and what the bots
got in the interval. The report gives:

- **RSS growth after the warm-up** (``--warmup-minutes``): the median of the last three
  samples against the median of the first three after the warm-up (target < 5%), and the
  slope of a line fitted to every sample after it (MB per hour);
- **tick lateness p99 per minute**: the worst ``late_ms_p99`` of the server's stats lines
  (one every ``--stats-interval`` seconds) in each minute, and ``tick_ms_p99`` likewise;
- **machine**: how busy the whole machine was (cores, ``/proc/stat``) per sample, since on a
  shared machine other work moves lateness as much as the server does;
- **stalls**: any task that stopped making progress during an interval: the server process
  exited; its stats line stopped; its tick stopped advancing (stats line or ``/health``);
  ``/health`` did not answer; the UDP bots got no snapshot, or lost their connections; the
  chat got no acknowledgement while bots sent, no delivery while messages were acknowledged,
  or sockets were closed; a swarm stopped reporting.

How the UDP bots connect: like players, each joins over HTTP first (``run_processes(...,
http=)``) and connects with its connect token, on the server's default configuration.

Run: ``nice -n 19 .venv/bin/python tools/soak.py --minutes 60`` (prints progress lines on
stderr and the report; ``--json`` for JSON, ``--out FILE`` to keep it).

Must not: reach anything but loopback, leave a server, swarm or worker process behind (every
part has a deadline and the server is stopped in ``finally``), or keep samples beyond one per
interval (a 60-minute run holds a few hundred).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timezone

import numpy as np

from worldtools import chat_swarm, swarm
from worldtools.bench.server_load import _machine_busy_seconds, _proc_cpu_seconds, _wall, machine_info
from worldtools.server_process import START_TIMEOUT, ServerProcess

__all__ = ["main", "parse_args", "run_soak"]

HEALTH_TIMEOUT = 5.0
SILENT_AFTER = 5.0  # seconds without a swarm progress report before it counts as silent
THREAD_GRACE = 60.0  # seconds a swarm may take after the soak's end before it is abandoned
FIRST_PROGRESS_TIMEOUT = 180.0  # seconds for the bots' joins and the first progress report


def read_rss_kb(pid: int) -> int | None:
    """VmRSS of process ``pid`` in kB, or None when it is gone."""
    return read_status_kb(pid).get("VmRSS")


def read_status_kb(pid: int) -> dict[str, int]:
    """The memory lines of ``/proc/<pid>/status`` in kB: VmRSS and its parts RssAnon (heap),
    RssFile (mapped files: SQLite maps its database) and RssShmem; empty when it is gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return {}
    return out


def dir_size_kb(path: str) -> int:
    """Bytes of the files under ``path`` (the server's data directory), in kB."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total // 1024


def count_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def health(url: str) -> dict | None:
    """``GET /health`` as JSON, or None when it does not answer within HEALTH_TIMEOUT."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=HEALTH_TIMEOUT) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


class _Latest:
    """The newest progress counts a swarm reported, and when (``time.monotonic()``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.at: float | None = None
        self.counts: dict | None = None
        self.ack_max_ms = 0.0  # chat: slowest acknowledgement since the last sample
        self.event = threading.Event()

    def put(self, counts: dict) -> None:
        with self.lock:
            self.at = time.monotonic()
            self.counts = dict(counts)
            self.ack_max_ms = max(self.ack_max_ms, float(counts.get("ack_max_ms", 0.0)))
        self.event.set()

    def take(self) -> tuple[float | None, dict | None, float]:
        with self.lock:
            ack, self.ack_max_ms = self.ack_max_ms, 0.0
            return self.at, self.counts, ack


class _Thread(threading.Thread):
    """Runs ``fn()`` and keeps its result or its exception."""

    def __init__(self, name: str, fn) -> None:
        super().__init__(name=name, daemon=True)
        self.fn = fn
        self.result = None
        self.error: str | None = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # reported in the soak's report
            self.error = f"{type(exc).__name__}: {exc}"


class Soak:
    """One soak run: the server, the two swarms, the samples and the stalls."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.duration = max(1.0, float(args.minutes) * 60.0)
        warmup = args.warmup_minutes if args.warmup_minutes is not None else min(5.0, 0.2 * args.minutes)
        self.warmup = max(0.0, float(warmup) * 60.0)
        self.samples: list[dict] = []
        self.stalls: list[dict] = []
        self.udp = _Latest()
        self.chat = _Latest()
        self.events: list[str] = []

    def say(self, text: str) -> None:
        if not self.args.quiet:
            print(text, file=sys.stderr, flush=True)

    def stall(self, t: float, kind: str, detail: str = "") -> None:
        self.stalls.append(dict(t_s=round(t, 1), kind=kind, detail=detail))
        self.say(f"soak t={t:6.0f}s STALL {kind} {detail}")

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> dict:
        args = self.args
        data = tempfile.TemporaryDirectory(prefix="soak_data_")
        self.data_dir = data.name
        sets = [f"server.stats_interval={args.stats_interval:g}", f"server.data_dir={self.data_dir}",
                *(args.set or [])]
        started = datetime.now(timezone.utc)
        server = ServerProcess(sets)
        udp_thread = chat_thread = None
        server_exit = None
        try:
            host, port = server.wait_listening(START_TIMEOUT)
            url = server.http
            self.say(f"soak: server pid {server.pid} udp {host}:{port} http {url}; "
                     f"{args.bots} UDP bots, {args.chat_bots} chat bots, {args.minutes:g} min")
            udp_thread = _Thread("udp-swarm", lambda: swarm.run_processes(
                host, port, args.bots, self.duration + 3.0, args.processes, args.observers, args.seed,
                lambda elapsed, counts: self.udp.put(counts), http=url))
            udp_thread.start()
            # the bots join, then the workers are forked (before another thread starts)
            deadline = time.monotonic() + FIRST_PROGRESS_TIMEOUT
            while not self.udp.event.wait(0.5) and time.monotonic() < deadline and udp_thread.is_alive():
                server.read()
            t0 = time.monotonic()
            wall0 = time.time()
            if args.chat_bots > 0:
                chat_s = max(3.0, self.duration - 10.0)
                chat_thread = _Thread("chat-swarm", lambda: chat_swarm.run_chat_swarm(
                    url, args.chat_bots, args.chat_rate, chat_s, settle=2.0, server_pid=server.pid,
                    seed=args.seed, on_counts=self.chat.put, progress_every=1.0))
                chat_thread.start()
            server_exit = self._sample_loop(server, url, t0)
            for thread in (udp_thread, chat_thread):
                if thread is not None:
                    thread.join(max(0.0, t0 + self.duration + THREAD_GRACE - time.monotonic()))
            server.read()
            if server_exit is None:
                server_exit = server.proc.poll()
        finally:
            server.stop()
            data.cleanup()
        return self.report(server, wall0, started, server_exit, udp_thread, chat_thread)

    def _sample_loop(self, server: ServerProcess, url: str, t0: float) -> int | None:
        args = self.args
        every = float(args.sample_every)
        next_sample = t0 + every
        end = t0 + self.duration
        grace = max(2.0 * every, 15.0)  # connecting, joining and the first stats lines
        prev: dict = {}
        stats_seen = 0
        last_stats_at = t0
        last_tick = None
        while True:
            now = time.monotonic()
            server.read()
            lines = server.stats_lines()
            if len(lines) > stats_seen:
                for line in lines[stats_seen:]:
                    tick = line.get("tick")
                    if last_tick is not None and isinstance(tick, int) and tick <= last_tick:
                        self.stall(now - t0, "tick_stopped", f"stats line tick {tick} after {last_tick}")
                    last_tick = tick if isinstance(tick, int) else last_tick
                stats_seen = len(lines)
                last_stats_at = now
            code = server.proc.poll()
            if code is not None:
                self.stall(now - t0, "server_exited", f"exit code {code}")
                return code
            if now >= end:
                return None
            if now < next_sample:
                time.sleep(min(0.5, next_sample - now))
                continue
            next_sample += every
            t = now - t0
            mem = read_status_kb(server.pid)
            sample = dict(t_s=round(t, 1), rss_kb=mem.get("VmRSS"), rss_anon_kb=mem.get("RssAnon"),
                          rss_file_kb=mem.get("RssFile"), data_kb=dir_size_kb(self.data_dir),
                          fds=count_fds(server.pid))
            try:
                sample["cpu_s"] = round(_proc_cpu_seconds(server.pid), 2)
            except (OSError, ValueError):
                sample["cpu_s"] = None
            busy = _machine_busy_seconds()  # every process on the machine (shared machines)
            if "busy" in prev and t > prev.get("t", 0.0):
                sample["machine_busy_cores"] = round((busy - prev["busy"]) / (t - prev["t"]), 2)
            prev["busy"] = busy
            h = health(url)
            sample["health_tick"] = None if h is None else h.get("tick")
            dt = t - prev.get("t", 0.0)
            checking = t >= grace
            if h is None and checking:
                self.stall(t, "http_unresponsive", f"/health gave no answer in {HEALTH_TIMEOUT:g} s")
            elif h is not None and prev.get("health_tick") is not None and checking and h["tick"] <= prev["health_tick"]:
                self.stall(t, "tick_stopped", f"/health tick {h['tick']} after {prev['health_tick']}")
            if checking and now - last_stats_at > 2.5 * args.stats_interval + 1.0:
                self.stall(t, "stats_line_stopped", f"no stats line for {now - last_stats_at:.0f} s")
            # UDP bots
            at, counts, _ = self.udp.take()
            if counts is not None:
                connected = counts["connected"]
                snaps = counts["snapshots"] - prev.get("snapshots", 0)
                sample.update(udp_connected=connected, udp_snapshots_per_bot_s=round(snaps / connected / dt, 2)
                              if connected and dt > 0 else 0.0, udp_failures=counts["failures"])
                if checking:
                    if connected and snaps == 0:
                        self.stall(t, "udp_snapshots_stopped", f"{connected} bots got no snapshot in {dt:.0f} s")
                    if connected < prev.get("connected", 0):
                        self.stall(t, "udp_bots_lost", f"{connected} connected, {prev['connected']} before")
                    if now - at > SILENT_AFTER:
                        self.stall(t, "udp_swarm_silent", f"no progress for {now - at:.0f} s")
                prev["snapshots"], prev["connected"] = counts["snapshots"], connected
            # chat bots
            at, counts, ack_max = self.chat.take()
            if counts is not None:
                before = prev.get("chat", {})
                d = {k: counts[k] - before.get(k, 0) for k in ("sent", "acked", "received", "refused", "closed")}
                # sends neither acknowledged nor refused when the interval began
                outstanding = before.get("sent", 0) - before.get("acked", 0) - before.get("refused", 0)
                sample.update(chat_ready=counts["ready"], chat_sent=d["sent"], chat_acked=d["acked"],
                              chat_delivered=d["received"], chat_refused=d["refused"],
                              chat_ack_max_ms=round(ack_max, 1))
                if before:
                    if outstanding > 0 and not d["acked"] and not d["refused"]:
                        self.stall(t, "chat_acks_stopped", f"{outstanding} sends waiting, none answered in {dt:.0f} s")
                    if d["acked"] and not d["received"]:
                        self.stall(t, "chat_deliveries_stopped", f"{d['acked']} acknowledged, none delivered")
                    if d["closed"]:
                        self.stall(t, "chat_sockets_closed", f"{d['closed']} chat sockets closed")
                    if now - at > SILENT_AFTER and now < end - SILENT_AFTER:
                        self.stall(t, "chat_swarm_silent", f"no progress for {now - at:.0f} s")
                prev["chat"] = counts
            prev["t"], prev["health_tick"] = t, sample["health_tick"]
            self.samples.append(sample)
            self.say(self._sample_line(sample))

    @staticmethod
    def _sample_line(s: dict) -> str:
        rss = f"{s['rss_kb'] / 1024:.1f} MB" if s.get("rss_kb") else "-"
        return (f"soak t={s['t_s']:6.0f}s rss {rss} fds {s.get('fds')} tick {s.get('health_tick')} "
                f"udp {s.get('udp_connected', '-')} bots {s.get('udp_snapshots_per_bot_s', '-')} snap/s "
                f"chat sent {s.get('chat_sent', '-')} acked {s.get('chat_acked', '-')} "
                f"delivered {s.get('chat_delivered', '-')}")

    # -- the report ----------------------------------------------------------------------------
    def report(self, server, wall0, started, server_exit, udp_thread, chat_thread) -> dict:
        args = self.args
        lines = server.stats_lines()
        minutes: dict[int, dict] = {}
        for line in lines:
            try:
                minute = int((_wall(line["ts"]) - wall0) // 60)
            except (KeyError, ValueError):
                continue
            m = minutes.setdefault(minute, dict(minute=minute + 1, late_ms_p99=0.0, tick_ms_p99=0.0, lines=0))
            m["late_ms_p99"] = max(m["late_ms_p99"], float(line.get("late_ms_p99", 0.0)))
            m["tick_ms_p99"] = max(m["tick_ms_p99"], float(line.get("tick_ms_p99", 0.0)))
            m["lines"] += 1
        per_minute = [minutes[k] for k in sorted(minutes) if k >= 0]
        rss = self._rss_growth()
        udp = udp_thread.result if udp_thread is not None else None
        chat = chat_thread.result if chat_thread is not None else None
        late = [m["late_ms_p99"] for m in per_minute]
        report = dict(
            date=started.strftime("%Y-%m-%d %H:%M UTC"),
            command=" ".join(["tools/soak.py", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("soak.py") else None,
            settings=dict(minutes=args.minutes, bots=args.bots, chat_bots=args.chat_bots, chat_rate=args.chat_rate,
                          sample_every=args.sample_every, stats_interval=args.stats_interval,
                          warmup_minutes=round(self.warmup / 60.0, 2), processes=args.processes, seed=args.seed,
                          server_sets=list(args.set or [])),
            machine=machine_info(),
            server_alive=server_exit is None,
            server_exit=server_exit,
            stats_lines=len(lines),
            rss=rss,
            lateness_p99_ms_per_minute=per_minute,
            lateness_p99_ms_worst_minute=max(late) if late else None,
            lateness_p99_ms_median_minute=round(statistics.median(late), 2) if late else None,
            machine_busy_cores_median=round(statistics.median(busy), 2) if (busy := [
                s["machine_busy_cores"] for s in self.samples if "machine_busy_cores" in s]) else None,
            stalls=self.stalls,
            stalled=bool(self.stalls),
            samples=self.samples,
            udp=None if udp is None else swarm.public_report(udp),
            udp_error=None if udp_thread is None else udp_thread.error,
            chat=chat,
            chat_error=None if chat_thread is None else chat_thread.error,
        )
        report["ok"] = bool(report["server_alive"] and not self.stalls and rss.get("growth_ok") is not False
                            and not report["udp_error"] and not report["chat_error"])
        return report

    def _rss_growth(self) -> dict:
        pts = [(s["t_s"], s["rss_kb"]) for s in self.samples if s.get("rss_kb")]
        after = [(t, kb) for t, kb in pts if t >= self.warmup]
        out: dict = dict(samples=len(pts), first_mb=round(pts[0][1] / 1024, 1) if pts else None,
                         max_mb=round(max(kb for _, kb in pts) / 1024, 1) if pts else None)
        if len(after) < 4:
            out.update(growth_pct=None, growth_ok=None, note="too few samples after the warm-up")
            return out
        start = statistics.median(kb for _, kb in after[:3])
        end = statistics.median(kb for _, kb in after[-3:])
        slope = np.polyfit([t for t, _ in after], [kb for _, kb in after], 1)[0]  # kB per second
        growth = 100.0 * (end - start) / start
        out.update(
            after_warmup_mb=round(start / 1024, 1), end_mb=round(end / 1024, 1),
            growth_pct=round(growth, 2), growth_ok=growth < 5.0,
            slope_mb_per_hour=round(float(slope) * 3600 / 1024, 2),
        )
        # Where it went: the heap (RssAnon), mapped files (RssFile: SQLite maps the chat
        # database) and the data directory's files, same windows.
        for key, name in (("rss_anon_kb", "anon"), ("rss_file_kb", "file"), ("data_kb", "data")):
            vals = [s[key] for s in self.samples if s["t_s"] >= self.warmup and s.get(key) is not None]
            if len(vals) >= 4:
                out[f"{name}_after_warmup_mb"] = round(statistics.median(vals[:3]) / 1024, 1)
                out[f"{name}_end_mb"] = round(statistics.median(vals[-3:]) / 1024, 1)
        return out


def format_report(r: dict) -> str:
    rss = r["rss"]
    rows = [
        ("date", r["date"]),
        ("server stayed up", "yes" if r["server_alive"] else f"no (exit {r['server_exit']})"),
        ("RSS first / after warm-up / end / max", f"{rss.get('first_mb')} / {rss.get('after_warmup_mb')} / "
                                                  f"{rss.get('end_mb')} / {rss.get('max_mb')} MB"),
        ("RSS growth after warm-up", f"{rss.get('growth_pct')} % (slope {rss.get('slope_mb_per_hour')} MB/h; "
                                     f"target < 5 %)"),
        ("  heap / mapped files / data dir", f"{rss.get('anon_after_warmup_mb')} -> {rss.get('anon_end_mb')} / "
                                             f"{rss.get('file_after_warmup_mb')} -> {rss.get('file_end_mb')} / "
                                             f"{rss.get('data_after_warmup_mb')} -> {rss.get('data_end_mb')} MB"),
        ("lateness p99 per minute (ms)", ", ".join(f"{m['late_ms_p99']:g}" for m in r["lateness_p99_ms_per_minute"]) or "-"),
        ("tick p99 per minute (ms)", ", ".join(f"{m['tick_ms_p99']:g}" for m in r["lateness_p99_ms_per_minute"]) or "-"),
        ("machine busy (median, cores)", r["machine_busy_cores_median"]),
        ("stalls", "; ".join(f"{s['kind']} at {s['t_s']} s ({s['detail']})" for s in r["stalls"]) or "none"),
    ]
    if r["udp"]:
        u = r["udp"]
        rows.append(("UDP bots", f"{u['connected']}/{u['bots_requested']} connected, {u['failures']} failures, "
                                 f"{u['snapshots_per_bot_s']} snapshots/bot/s, move-to-observed p99 "
                                 f"{u['latency_ms_p99']} ms, loss {100 * u['packet_loss']:.3f} %"))
    if r["udp_error"]:
        rows.append(("UDP swarm error", r["udp_error"]))
    if r["chat"]:
        c = r["chat"]
        rows.append(("chat bots", f"{c['ready']}/{c['bots']} ready, {c['acked']} acknowledged, {c['deliveries']}/"
                                  f"{c['deliveries_expected']} delivered ({c['deliveries_missing']} missing, "
                                  f"{c['deliveries_duplicate']} duplicate), ack p99 "
                                  f"{c['ack_ms_p99']} ms, delivery p99 {c['delivery_ms_p99']} ms, closed {c['closed'] or 0}"))
    if r["chat_error"]:
        rows.append(("chat swarm error", r["chat_error"]))
    rows.append(("verdict", "ok" if r["ok"] else "NOT ok"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tools/soak.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--bots", type=int, default=500, help="UDP bots (worldtools.swarm)")
    parser.add_argument("--chat-bots", type=int, default=100, help="chat bots (worldtools.chat_swarm)")
    parser.add_argument("--chat-rate", type=float, default=0.1, help="messages per second per chat bot")
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--stats-interval", type=float, default=10.0, help="the server's server.stats_interval")
    parser.add_argument("--warmup-minutes", type=float, default=None,
                        help="RSS growth is measured after this (default: 20%% of the run, at most 5)")
    parser.add_argument("--processes", type=int, default=1, help="worker processes of the UDP swarm")
    parser.add_argument("--observers", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], help="extra server setting SECTION.KEY=VALUE")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--out", default=None, help="also write the JSON report to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def run_soak(args: argparse.Namespace) -> dict:
    return Soak(args).run()


def main(argv=None) -> int:
    args = parse_args(argv)
    report = run_soak(args)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=1)
    print(json.dumps(report) if args.json else format_report(report), flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
