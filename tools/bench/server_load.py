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
server that does not start is a :class:`ServerStartError` whose one line ends with what the
server itself said (its ``error: ...`` line for a setting, else its error log records).
The swarm's set-up (joins, connections) comes before its measured ``--duration``.

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
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

ROOT = pathlib.Path(__file__).resolve().parents[2]

try:
    import worldtools  # noqa: F401  (installed)
except ImportError:  # run from a checkout: tools/bench is on sys.path
    import _checkout  # noqa: F401


def _import_swarm():
    """worldtools.swarm, installed or straight from this checkout."""
    from worldtools import swarm
    return swarm


HOST = "127.0.0.1"
SERVER_START_TIMEOUT = 20.0
SERVER_STOP_TIMEOUT = 8.0
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


class ServerStartError(RuntimeError):
    """The benchmark's server did not start; the message ends with the server's own error."""


class ServerProcess:
    """``worldserver run`` as a subprocess whose JSON log lines are read without blocking."""

    def __init__(self, extra_sets: list[str], prefix: list[str] | None = None) -> None:
        env = dict(os.environ)
        paths = [str(ROOT), str(ROOT / "clients" / "python")]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env = {k: v for k, v in env.items() if not k.startswith("WORLDSERVER_")}
        self._cwd = tempfile.TemporaryDirectory(prefix="server_load_")  # no stray worldserver.toml
        cmd = list(prefix or []) + [
            sys.executable, "-m", "worldserver", "run",
            "--host", HOST, "--udp-port", "0", "--log-level", "INFO",
            # The HTTP port too: loopback and a free port (two runs at once must not collide).
            "--set", "http.host=127.0.0.1", "--set", "http.port=0",
            "--set", "server.log_format=json", "--set", "server.stats_interval=1",
            "--set", f"server.data_dir={self._cwd.name}",
            # The open square of sim.half_extent (220 x 220 m: the benches' "default world"),
            # whatever the server's default world; a --set below may name another.
            "--set", "worlds.hosted=open",
        ]  # fmt: skip
        for item in extra_sets:
            cmd += ["--set", item]
        self.proc = subprocess.Popen(
            cmd, cwd=self._cwd.name, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        os.set_blocking(self.proc.stderr.fileno(), False)
        self._buf = b""
        self.lines: list[dict] = []
        self.other_lines: list[str] = []
        self.address: tuple[str, int] | None = None
        self.http: str | None = None  # the HTTP base URL, where the bots join

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read(self) -> None:
        """Take whatever the server has written so far."""
        fd = self.proc.stderr.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._buf += chunk
        *complete, self._buf = self._buf.split(b"\n")
        for raw in complete:
            text = raw.decode("utf-8", "replace").strip()
            if not text:
                continue
            try:
                obj = json.loads(text)
            except ValueError:
                self.other_lines.append(text)
                continue
            if not isinstance(obj, dict):
                continue
            self.lines.append(obj)
            if obj.get("msg") == "listening" and self.address is None:
                host, _, port = str(obj.get("udp", "")).rpartition(":")
                self.address = (host or HOST, int(port))
            elif obj.get("msg") == "http listening" and self.http is None:
                self.http = f"http://127.0.0.1:{str(obj.get('http', '')).rpartition(':')[2]}"

    def wait_listening(self, timeout: float) -> tuple[str, int]:
        """The UDP address once the server listens on UDP and HTTP; else raises
        :class:`ServerStartError` with the server's own error."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.read()
            if self.address is not None and self.http is not None:
                return self.address
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.read()
        code = self.proc.poll()
        said = self.server_error() or "it said nothing on stderr"
        if code is None:
            raise ServerStartError(f"the server did not listen within {timeout:g} s: {said}")
        raise ServerStartError(f"the server did not start (exit code {code}): {said}")

    def server_error(self) -> str:
        """What the server said about its failure, on one line: its ``error: ...`` lines (an
        operator's mistake, worldserver/startup.py), else its ERROR and CRITICAL log records,
        else the last line it wrote that was not a log record (a traceback's last line)."""
        said = [line for line in self.other_lines if line.startswith("error:")]
        if not said:
            for record in self.lines:
                if str(record.get("level", "")).upper() in ("ERROR", "CRITICAL"):
                    words = [str(record.get("msg", ""))]
                    words += [f"{k}={v}" for k, v in record.items()
                              if k not in ("ts", "level", "logger", "msg", "exc")]
                    exc = str(record.get("exc", "")).strip().splitlines()
                    said.append(" ".join(words) + (f" ({exc[-1]})" if exc else ""))
        if not said and self.other_lines:
            said = self.other_lines[-1:]
        return " | ".join(said[-3:])

    def stats_lines(self) -> list[dict]:
        return [line for line in self.lines if line.get("msg") == "stats"]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a bounded wait; never leaves the process behind."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=SERVER_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=SERVER_STOP_TIMEOUT)
            self.read()
        finally:
            self.proc.stderr.close()
            self._cwd.cleanup()


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


# ----------------------------------------------------------------------------- one run


def run_one(swarm, bots: int, args) -> dict:
    prefix, bot_cpus, pin_note = pin_plan(getattr(args, "pin", False))
    speed = getattr(args, "speed", None)
    server = ServerProcess(args.set or [], prefix)
    own_cpus = None
    try:
        if bot_cpus and hasattr(os, "sched_getaffinity"):  # this process reads /proc and logs
            own_cpus = os.sched_getaffinity(0)
            os.sched_setaffinity(0, bot_cpus)
        host, port = server.wait_listening(SERVER_START_TIMEOUT)
        # name -> (monotonic, wall, server cpu s, machine busy s)
        marks: dict[str, tuple[float, float, float, float]] = {}
        last_print = [0.0]

        def progress(elapsed: float, counts: dict) -> None:
            server.read()
            if server.proc.poll() is not None or counts.get("phase", "measure") != "measure":
                return  # the window is marked in the swarm's measurement, after its set-up
            sample = (
                time.monotonic(), time.time(), _proc_cpu_seconds(server.pid),
                _machine_busy_seconds(),
            )  # fmt: skip
            if elapsed >= args.warmup and "start" not in marks:
                marks["start"] = sample
            if elapsed <= args.duration:
                marks["end"] = sample
            if not args.quiet and elapsed - last_print[0] >= 5.0:
                last_print[0] = elapsed
                print(
                    f"  [{bots} bots] t={elapsed:4.0f}s connected {counts['connected']} "
                    f"failures {counts['failures']}",
                    file=sys.stderr, flush=True,
                )  # fmt: skip

        report = swarm.run_processes(
            host, port, bots, args.duration, args.processes, args.observers, args.seed,
            progress, warmup=args.warmup, speed=speed, cpus=bot_cpus,
            http=server.http,  # every bot joins first (connect tokens, tagged packets)
        )  # fmt: skip
        server.read()
        alive = server.proc.poll() is None
    finally:
        server.stop()
        if own_cpus is not None:
            os.sched_setaffinity(0, own_cpus)

    row: dict = dict(bots=bots, server_alive=alive, pinning=pin_note, speed=speed)
    if "start" in marks and "end" in marks and marks["end"][0] > marks["start"][0]:
        (m0, w0, c0, b0), (m1, w1, c1, b1) = marks["start"], marks["end"]
        row["window_s"] = round(m1 - m0, 2)
        row["server_cpu_percent"] = round(100.0 * (c1 - c0) / (m1 - m0), 1)
        # Everything else the machine did meanwhile (other users; the swarm is subtracted
        # below): a noisy neighbour explains slow ticks that the server's own CPU does not.
        row["machine_busy_percent"] = round(100.0 * (b1 - b0) / (m1 - m0), 1)
        # A stats line covers the second before its timestamp.
        every = server.stats_lines()
        lines = [s for s in every if w0 + 0.9 <= _wall(s["ts"]) <= w1 + 0.5]
        first = every.index(lines[0]) if lines else 0
        before = every[first - 1] if first > 0 else None
    else:
        row["window_s"] = 0.0
        row["server_cpu_percent"] = None
        lines, before = [], None
    row["stats_lines"] = len(lines)
    row["tick_ms_p99"] = _summary([float(s.get("tick_ms_p99", 0.0)) for s in lines])
    row["late_ms_p99"] = _summary([float(s.get("late_ms_p99", 0.0)) for s in lines])
    row["tick_ms_p50"] = _summary([float(s.get("tick_ms_p50", 0.0)) for s in lines])
    row["late_ms_p50"] = _summary([float(s.get("late_ms_p50", 0.0)) for s in lines])
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
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    out.append("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    for row in rows:
        out.append("  ".join(c.rjust(w) for c, w in zip(row, widths)))
    return "\n".join(out)


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
    try:
        args.sizes = [int(x) for x in args.bots.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--bots must be comma-separated integers, got {args.bots!r}")
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
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(format_table(result))
    return status


if __name__ == "__main__":
    sys.exit(main())
