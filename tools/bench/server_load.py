"""Server load benchmark: the real server and the bot swarm side by side, for several sizes.

Job: for each swarm size N (default 100, 400, 1000), start ``python -m worldserver run`` as a
subprocess on 127.0.0.1 (a free UDP port, JSON logs, a stats line every second), run the
swarm against it in worker process(es) for ``--duration`` seconds, and report, over the window
after the ``--warmup`` seconds: the server's CPU (percent of one core, from /proc/<pid>/stat),
its tick duration and tick lateness p99 (from its stats lines: median and worst line), bytes
sent per client per second, and the swarm's figures (snapshots and bytes per bot per second,
move-to-observed latency p50/p99, packet loss, swarm CPU). Prints a table, or JSON with
``--json``, and records the machine it ran on.

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


class ServerProcess:
    """``worldserver run`` as a subprocess whose JSON log lines are read without blocking."""

    def __init__(self, extra_sets: list[str]) -> None:
        env = dict(os.environ)
        paths = [str(ROOT), str(ROOT / "clients" / "python")]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env = {k: v for k, v in env.items() if not k.startswith("WORLDSERVER_")}
        self._cwd = tempfile.TemporaryDirectory(prefix="server_load_")  # no stray worldserver.toml
        cmd = [
            sys.executable, "-m", "worldserver", "run",
            "--host", HOST, "--udp-port", "0", "--log-level", "INFO",
            "--set", "server.log_format=json", "--set", "server.stats_interval=1",
            "--set", f"server.data_dir={self._cwd.name}",
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

    def wait_listening(self, timeout: float) -> tuple[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.read()
            if self.address is not None:
                return self.address
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.read()
        tail = "\n".join(self.other_lines[-20:])
        raise RuntimeError(f"server did not start (exit code {self.proc.poll()}):\n{tail}")

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


def _summary(values: list[float]) -> dict:
    if not values:
        return dict(median=None, worst=None)
    return dict(median=round(statistics.median(values), 2), worst=round(max(values), 2))


# ----------------------------------------------------------------------------- one run


def run_one(swarm, bots: int, args) -> dict:
    server = ServerProcess(args.set or [])
    try:
        host, port = server.wait_listening(SERVER_START_TIMEOUT)
        # name -> (monotonic, wall, server cpu s, machine busy s)
        marks: dict[str, tuple[float, float, float, float]] = {}
        last_print = [0.0]

        def progress(elapsed: float, counts: dict) -> None:
            server.read()
            if server.proc.poll() is not None:
                return
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
            progress, warmup=args.warmup,
        )  # fmt: skip
        server.read()
        alive = server.proc.poll() is None
    finally:
        server.stop()

    row: dict = dict(bots=bots, server_alive=alive)
    if "start" in marks and "end" in marks and marks["end"][0] > marks["start"][0]:
        (m0, w0, c0, b0), (m1, w1, c1, b1) = marks["start"], marks["end"]
        row["window_s"] = round(m1 - m0, 2)
        row["server_cpu_percent"] = round(100.0 * (c1 - c0) / (m1 - m0), 1)
        # Everything else the machine did meanwhile (other users; the swarm is subtracted
        # below): a noisy neighbour explains slow ticks that the server's own CPU does not.
        row["machine_busy_percent"] = round(100.0 * (b1 - b0) / (m1 - m0), 1)
        # A stats line covers the second before its timestamp.
        lines = [s for s in server.stats_lines() if w0 + 0.9 <= _wall(s["ts"]) <= w1 + 0.5]
    else:
        row["window_s"] = 0.0
        row["server_cpu_percent"] = None
        lines = []
    row["stats_lines"] = len(lines)
    row["tick_ms_p99"] = _summary([float(s.get("tick_ms_p99", 0.0)) for s in lines])
    row["late_ms_p99"] = _summary([float(s.get("late_ms_p99", 0.0)) for s in lines])
    row["tick_ms_p50"] = _summary([float(s.get("tick_ms_p50", 0.0)) for s in lines])
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
        "'other' = the rest of the machine meanwhile",
        "",
    ]
    head = (
        "bots", "conn", "fail", "srv CPU%", "tick p99 med/max", "late p99 med/max",
        "out B/cl/s", "snap/bot/s", "in B/bot/s", "lat p50/p99 ms", "loss %", "swarm CPU%",
        "other CPU%",
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
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    swarm = _import_swarm()
    result = dict(
        machine=machine_info(),
        settings=dict(
            sizes=args.sizes, duration=args.duration, warmup=args.warmup,
            processes=args.processes, observers=args.observers, seed=args.seed,
            server_sets=args.set or [],
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
        result["runs"].append(row)
        time.sleep(1.0)  # let the sockets of the last run go
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(format_table(result))
    return status


if __name__ == "__main__":
    sys.exit(main())
