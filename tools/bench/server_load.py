"""Server load benchmark: the real server and the bot swarm side by side, for several sizes.

Job: for each swarm size N (default 100, 400, 1000), start ``python -m worldserver run`` as a
subprocess on 127.0.0.1 (a free UDP port, JSON logs, a stats line every second), run the
swarm against it in worker process(es) for ``--duration`` seconds (every bot first joins over the
server's HTTP port, as the server requires connect tokens), and report, over the window
after the ``--warmup`` seconds: the server's CPU (percent of one core, from /proc/<pid>/stat),
its tick duration and tick lateness p50/p99 (from its stats lines: median and worst line),
bytes sent per client per second, the share of visible entities refreshed per snapshot (from
the server's ``snapshot.entities_refreshed`` / ``snapshot.entities_visible`` counters when
its stats lines carry them, else "n/a"), and the swarm's figures (snapshots per bot per second as
complete ticks, snapshot parts and bytes per bot per second, move-to-observed latency p50/p99,
packet loss, swarm CPU). Prints a table, or JSON with ``--json``, and records the machine it
ran on. ``--speed`` sets the bots' walking speed; ``--pin`` puts the server on CPU 0 and the
swarm on CPU 1 (``taskset`` and ``os.sched_setaffinity``, when the machine has 2+ CPUs). A
server that does not start is a ``ServerStartError`` (:mod:`worldtools.server_process`) whose
one line ends with what the server itself said (its ``error: ...`` line for a setting, else
its error log records).
The swarm's set-up (joins, connections) comes before its measured ``--duration``.

Shared with the other tools: the server runs under :mod:`worldtools.server_process` (the
tools' one runner); the measuring parts here (:func:`machine_info`, :class:`Window`: the
server's CPU and stats lines over the swarm's window, :func:`tick_summaries`, the /proc
readers, :func:`pin_plan`, :func:`aligned` tables, :func:`report_header` of the in-process
benchmarks) serve webrtc_load, crowd, the in-process benchmarks, the soak and the attack probes.

Must not: send traffic anywhere but loopback, leave a server or worker process behind (every
run is wrapped in try/finally with bounded waits), or reach into the server other than through
its command line, its log lines and /proc.

Run: ``python tools/bench/server_load.py [--bots 100,400] [--duration 20] [--json]``
(or ``python -m worldtools.bench.server_load`` once the project is installed).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shlex
import shutil
import statistics
import sys
import time
from datetime import datetime, timezone

try:
    import worldtools  # noqa: F401  (installed)
except ImportError:  # run from a checkout: tools/bench is on sys.path
    import _checkout  # noqa: F401

# The one runner of a server under test (the soak and the attack probes take it from here too).
from worldtools.server_process import START_TIMEOUT as SERVER_START_TIMEOUT, ServerProcess  # noqa: E402


def _import_swarm():
    """worldtools.swarm, installed or straight from this checkout."""
    from worldtools import swarm
    return swarm


CLK_TCK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- machine


def machine_info() -> dict:
    model = ""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return dict(
        nproc=os.cpu_count(),
        cpu_model=model or platform.processor() or "unknown",
        python=platform.python_version(),
        implementation=platform.python_implementation(),
        platform=platform.platform(),
        loadavg_at_start=[round(v, 2) for v in load],
    )


def report_header(benchmark: str, script: str, argv: list[str] | None, **machine) -> dict:
    """The head of an in-process benchmark's report: its name, the date (UTC), the command
    (``python <script>`` and the arguments: ``argv``, else this process's) and the machine
    with ``machine``'s facts added (e.g. numpy's version)."""
    used = sys.argv[1:] if argv is None else argv
    return {
        "benchmark": benchmark,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join([f"python {script}", shlex.join(used)]).strip(),
        "machine": dict(machine_info(), **machine),
    }


def header_lines(report: dict, command_note: str = "") -> list[str]:
    """The date, command and machine lines of a :func:`report_header` (with numpy)."""
    m = report["machine"]
    return [
        f"date {report['date']}",
        f"command {report['command']}{command_note}",
        f"machine {m['nproc']} x {m['cpu_model']}, {m['platform']}, "
        f"{m['implementation']} {m['python']}, numpy {m['numpy']}, load {m['loadavg_at_start']}",
    ]


# ----------------------------------------------------------------------------- the server


def _proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (fields 14 and 15 of /proc/<pid>/stat)."""
    text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # the name may contain spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle, iowait)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / CLK_TCK


def pin_plan(enabled: bool = True) -> tuple[list[str], set[int] | None, str]:
    """How to pin: (command prefix for the server, CPUs for the bots, note).

    The Colyseus harness's rule (``run_bench.sh``): server on CPU 0, bots on CPU 1, when
    ``taskset`` exists and the machine has at least 2 CPUs; otherwise nothing is pinned.
    """
    if not enabled:
        return [], None, "not pinned (not asked)"
    if (os.cpu_count() or 1) < 2:
        return [], None, "not pinned (fewer than 2 CPUs)"
    taskset = shutil.which("taskset")
    if taskset is None or not hasattr(os, "sched_setaffinity"):
        return [], None, "not pinned (no taskset)"
    return [taskset, "-c", "0"], {1}, "server on CPU 0, bots on CPU 1"


def _wall(ts: str) -> float:
    """A log line's ``ts`` ("2026-11-22T13:00:00.123Z") as a Unix time."""
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if "." in ts else "%Y-%m-%dT%H:%M:%SZ"
    return datetime.strptime(ts, fmt).replace(tzinfo=timezone.utc).timestamp()


ENTITIES_VISIBLE = "snapshot.entities_visible"
# Entities in view whose state a snapshot brought up to the tick (sent, or unchanged and
# current): the server names it snapshot.entities_refreshed; entities_sent is the older name.
ENTITIES_REFRESHED = ("snapshot.entities_refreshed", "snapshot.entities_sent")


def stats_counter(line: dict, name: str):
    """A counter of a stats line, or None: as a field ``name`` (or with ``_`` for ``.``), or
    inside a dict-valued field (e.g. ``counters``, or ``snapshot`` holding ``entities_sent``)."""
    head, _, tail = name.partition(".")
    for key in (name, name.replace(".", "_")):
        if isinstance(line.get(key), (int, float)):
            return line[key]
    for key, value in line.items():
        if isinstance(value, dict):
            if isinstance(value.get(name), (int, float)):
                return value[name]
            if key == head and isinstance(value.get(tail), (int, float)):
                return value[tail]
    return None


def _increasing(series: list) -> bool:
    return all(b >= a for a, b in zip(series, series[1:]))


def counters_over_window(lines: list[dict], before: dict | None, names) -> list[float] | None:
    """The amounts of counters ``names`` over the window's stats lines, or None if a line
    lacks one of them.

    The server's counters are totals since start (they never decrease): an amount is the
    last line's value minus the value just before the window (``before``, the stats line
    preceding the first one, else the first line's own). If any of the series decreases
    somewhere, all are taken as per-interval values and summed.
    """
    series = []
    for name in names:
        values = [stats_counter(line, name) for line in lines]
        if not values or any(v is None for v in values):
            return None
        base = stats_counter(before, name) if before is not None else None
        series.append(([base] if base is not None else []) + values)
    if all(_increasing(seq) for seq in series):
        return [float(seq[-1] - seq[0]) for seq in series]
    return [float(sum(seq[-len(lines):])) for seq in series]


def refreshed_share(lines: list[dict], before: dict | None) -> float | None:
    """``snapshot.entities_refreshed / snapshot.entities_visible`` over the window, or None
    when the stats lines do not carry them."""
    for refreshed in ENTITIES_REFRESHED:
        amounts = counters_over_window(lines, before, (refreshed, ENTITIES_VISIBLE))
        if amounts is not None:
            return round(amounts[0] / amounts[1], 4) if amounts[1] else None
    return None


def _summary(values: list[float]) -> dict:
    if not values:
        return dict(median=None, worst=None)
    return dict(median=round(statistics.median(values), 2), worst=round(max(values), 2))


def tick_summaries(lines: list[dict]) -> dict:
    """Tick duration and lateness p99 and p50 of the stats lines: median and worst line."""
    return {key: _summary([float(s.get(key, 0.0)) for s in lines])
            for key in ("tick_ms_p99", "late_ms_p99", "tick_ms_p50", "late_ms_p50")}


class Window:
    """The measured window of one run, marked from the swarm's progress calls.

    :meth:`progress` (the swarm's ``progress(elapsed, counts)``) reads the server's log and,
    in the swarm's measurement (after its set-up), samples (monotonic, wall, the server's CPU
    seconds, the machine's busy seconds): the window starts at the first call at or after
    ``warmup`` seconds and ends at the last call within ``duration``. A progress line
    ``[label]`` every 5 s on stderr unless ``quiet``.
    """

    def __init__(self, server, warmup: float, duration: float, label: str, quiet: bool) -> None:
        self.server = server
        self.warmup, self.duration = warmup, duration
        self.label, self.quiet = label, quiet
        self.marks: dict[str, tuple[float, float, float, float]] = {}
        self._last_print = 0.0

    def progress(self, elapsed: float, counts: dict) -> None:
        server = self.server
        server.read()
        if server.proc.poll() is not None or counts.get("phase", "measure") != "measure":
            return  # the window is marked in the swarm's measurement, after its set-up
        sample = (
            time.monotonic(), time.time(), _proc_cpu_seconds(server.pid), _machine_busy_seconds(),
        )  # fmt: skip
        if elapsed >= self.warmup and "start" not in self.marks:
            self.marks["start"] = sample
        if elapsed <= self.duration:
            self.marks["end"] = sample
        if not self.quiet and elapsed - self._last_print >= 5.0:
            self._last_print = elapsed
            print(
                f"  [{self.label}] t={elapsed:4.0f}s connected {counts['connected']} "
                f"failures {counts['failures']}",
                file=sys.stderr, flush=True,
            )  # fmt: skip

    def figures(self) -> dict | None:
        """The window's length (``window_s``), the server's CPU and the machine's busy share in
        it (percent of one core), its stats lines (``lines``) and the one before them
        (``before``, or None); None when no window was marked."""
        if "start" not in self.marks or "end" not in self.marks or self.marks["end"][0] <= self.marks["start"][0]:
            return None
        (m0, w0, c0, b0), (m1, w1, c1, b1) = self.marks["start"], self.marks["end"]
        # A stats line covers the second before its timestamp.
        every = self.server.stats_lines()
        lines = [s for s in every if w0 + 0.9 <= _wall(s["ts"]) <= w1 + 0.5]
        first = every.index(lines[0]) if lines else 0
        return dict(
            window_s=round(m1 - m0, 2),
            cpu_percent=round(100.0 * (c1 - c0) / (m1 - m0), 1),
            # Everything else the machine did meanwhile (other users; the swarm is subtracted
            # by the caller): a noisy neighbour explains slow ticks that the server's own CPU
            # does not.
            machine_busy_percent=round(100.0 * (b1 - b0) / (m1 - m0), 1),
            lines=lines,
            before=every[first - 1] if first > 0 else None,
        )


# ----------------------------------------------------------------------------- one run


def run_one(swarm, bots: int, args) -> dict:
    prefix, bot_cpus, pin_note = pin_plan(getattr(args, "pin", False))
    speed = getattr(args, "speed", None)
    server = ServerProcess(args.set or [], prefix, scratch="server_load_")
    own_cpus = None
    try:
        if bot_cpus and hasattr(os, "sched_getaffinity"):  # this process reads /proc and logs
            own_cpus = os.sched_getaffinity(0)
            os.sched_setaffinity(0, bot_cpus)
        host, port = server.wait_listening(SERVER_START_TIMEOUT)
        window = Window(server, args.warmup, args.duration, f"{bots} bots", args.quiet)
        report = swarm.run_processes(
            host, port, bots, args.duration, args.processes, args.observers, args.seed,
            window.progress, warmup=args.warmup, speed=speed, cpus=bot_cpus,
            http=server.http,  # every bot joins first (connect tokens, tagged packets)
        )  # fmt: skip
        server.read()
        alive = server.proc.poll() is None
    finally:
        server.stop()
        if own_cpus is not None:
            os.sched_setaffinity(0, own_cpus)

    row: dict = dict(bots=bots, server_alive=alive, pinning=pin_note, speed=speed)
    figures = window.figures()
    if figures is not None:
        row["window_s"] = figures["window_s"]
        row["server_cpu_percent"] = figures["cpu_percent"]
        row["machine_busy_percent"] = figures["machine_busy_percent"]
        lines, before = figures["lines"], figures["before"]
    else:
        row["window_s"] = 0.0
        row["server_cpu_percent"] = None
        lines, before = [], None
    row["stats_lines"] = len(lines)
    row.update(tick_summaries(lines))
    # Share of the entities in view whose state the server sent (or had current) per snapshot.
    row["refreshed_share"] = refreshed_share(lines, before)
    per_client = [s["bytes_out_s"] / s["clients"] for s in lines if s.get("clients")]
    row["bytes_out_per_client_s"] = round(statistics.median(per_client)) if per_client else None
    row["server_clients"] = _summary([float(s.get("clients", 0)) for s in lines])
    skipped = [int(s.get("ticks_skipped", 0)) for s in lines]
    row["ticks_skipped"] = (skipped[-1] - skipped[0]) if len(skipped) > 1 else 0
    row["server_drops"] = lines[-1].get("drops", {}) if lines else {}
    row["swarm"] = swarm.public_report(report)
    if "machine_busy_percent" in row:
        row["other_cpu_percent"] = round(
            row["machine_busy_percent"] - row["server_cpu_percent"] - report["cpu_percent"], 1
        )
    return row


# ----------------------------------------------------------------------------- output


def format_table(result: dict) -> str:
    m = result["machine"]
    out = [
        f"machine: {m['nproc']} CPUs, {m['cpu_model']}, Python {m['python']} "
        f"(load at start {m['loadavg_at_start']})",
        f"duration {result['settings']['duration']} s per size, first "
        f"{result['settings']['warmup']} s excluded; swarm in "
        f"{result['settings']['processes']} worker process(es); CPU% = percent of one core, "
        "'other' = the rest of the machine meanwhile; snap = complete ticks, parts = packets; "
        "refreshed = server's entities refreshed / visible",
        "",
    ]
    head = (
        "bots", "conn", "fail", "srv CPU%", "tick p99 med/max", "late p99 med/max",
        "out B/cl/s", "snap/bot/s", "parts/bot/s", "refreshed", "in B/bot/s", "lat p50/p99 ms",
        "loss %", "swarm CPU%", "other CPU%",
    )  # fmt: skip
    rows = []
    for r in result["runs"]:
        s = r.get("swarm", {})
        if "error" in r:
            rows.append((str(r["bots"]), "error: " + r["error"]) + ("",) * (len(head) - 2))
            continue

        def pair(d, fmt="{:.1f}"):
            if d.get("median") is None:
                return "-"
            return f"{fmt.format(d['median'])}/{fmt.format(d['worst'])}"

        lat50, lat99 = s.get("latency_ms_p50"), s.get("latency_ms_p99")
        rows.append((
            str(r["bots"]),
            str(s.get("connected", "-")),
            str(s.get("failures", "-")),
            "-" if r["server_cpu_percent"] is None else f"{r['server_cpu_percent']:.0f}",
            pair(r["tick_ms_p99"]),
            pair(r["late_ms_p99"]),
            "-" if r["bytes_out_per_client_s"] is None else str(r["bytes_out_per_client_s"]),
            f"{s.get('snapshots_per_bot_s', 0):.1f}",
            f"{s.get('parts_per_bot_s', 0):.1f}",
            "n/a" if r.get("refreshed_share") is None else f"{r['refreshed_share']:.2f}",
            f"{s.get('bytes_per_bot_s', 0):.0f}",
            "-" if lat50 is None else f"{lat50:.0f}/{lat99:.0f}",
            f"{100 * s.get('packet_loss', 0):.2f}",
            f"{s.get('cpu_percent', 0):.0f}",
            "-" if r.get("other_cpu_percent") is None else f"{r['other_cpu_percent']:.0f}",
        ))  # fmt: skip
    out += aligned(head, rows)
    return "\n".join(out)


def aligned(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """The header and the rows, every column right-aligned to its widest cell."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    return ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in (head, *rows)]


def print_result(result: dict, as_json: bool, format_table) -> None:
    """The result as one JSON object (keys sorted), or as ``format_table`` makes it."""
    print(json.dumps(result, sort_keys=True) if as_json else format_table(result))


def parse_sizes(parser: argparse.ArgumentParser, text: str) -> list[int]:
    """``--bots``: comma-separated sizes (an argparse error otherwise)."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--bots must be comma-separated integers, got {text!r}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="server_load", description="Run the server and the bot swarm side by side."
    )
    parser.add_argument("--bots", default="100,400,1000", help="comma-separated sizes")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per size")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds excluded at start")
    parser.add_argument("--processes", type=int, default=1, help="swarm worker processes")
    parser.add_argument("--observers", type=int, default=16, help="latency-measuring bots")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--speed", type=float, default=None,
                        help="bots' walking speed in m/s (default: the server's sim.max_speed)")
    parser.add_argument("--pin", action="store_true",
                        help="server on CPU 0, swarm on CPU 1 (needs taskset and 2+ CPUs)")
    parser.add_argument(
        "--set", action="append", metavar="SECTION.KEY=VALUE",
        help="extra server setting (repeatable), e.g. --set interest.radius=30",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    args.sizes = parse_sizes(parser, args.bots)
    if not args.sizes or min(args.sizes) < 1:
        parser.error("--bots needs at least one size >= 1")
    if args.duration <= 0 or not 0 <= args.warmup < args.duration:
        parser.error("need --duration > 0 and 0 <= --warmup < --duration")
    if args.processes < 1 or args.observers < 0:
        parser.error("--processes must be >= 1 and --observers >= 0")
    if args.speed is not None and not args.speed > 0:
        parser.error("--speed must be > 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    swarm = _import_swarm()
    result = dict(
        machine=machine_info(),
        settings=dict(
            sizes=args.sizes, duration=args.duration, warmup=args.warmup,
            processes=args.processes, observers=args.observers, seed=args.seed,
            server_sets=args.set or [], speed=args.speed, pin=args.pin,
        ),  # fmt: skip
        runs=[],
    )
    status = 0
    for n in args.sizes:
        if not args.quiet:
            print(f"server_load: {n} bots for {args.duration:g} s ...", file=sys.stderr, flush=True)
        try:
            row = run_one(swarm, n, args)
        except Exception as exc:  # one size failing must not hide the others
            row = dict(bots=n, error=f"{type(exc).__name__}: {exc}")
            status = 1
            print(f"server_load: {n} bots: {row['error']}", file=sys.stderr, flush=True)
        result["runs"].append(row)
        time.sleep(1.0)  # let the sockets of the last run go
    print_result(result, args.json, format_table)
    return status


if __name__ == "__main__":
    sys.exit(main())
