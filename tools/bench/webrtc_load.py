"""WebRTC load benchmark: worldserver against the aiortc floor, N WebRTC bots, one run.

Job: for N bots (default 400), in one invocation and on the same machine,

(a) start the floor (``tools/bench/aiortc_floor.py --serve``: pure asyncio + aiortc, one
    ~200-byte message per peer at 20 Hz, nothing else), run the WebRTC bot swarm
    (``worldtools.swarm.channels``, in ``--processes`` worker processes) against it and measure the
    floor process's CPU over the window after ``--warmup``;
(b) start the real ``python -m worldserver run`` (loopback, HTTP on a free port, ICE host
    candidate 127.0.0.1, a stats line a second), run the same swarm against it and measure its
    CPU, tick lateness p99 and tick duration (from its stats lines: median and worst line),
    and the snapshots skipped for WebRTC back-pressure (``drop.rtc.snapshot_backlog``);

then report worldserver CPU / floor CPU (target <= 1.3) and the lateness p99 (target < 10 ms),
with the bots' own figures (connected, failures, snapshots and bytes per bot per second,
move-to-observed latency, loss) and the machine. A table, or one JSON object with ``--json``.
``--only floor`` or ``--only server`` runs one half (``aiortc_floor.py`` without ``--serve``
is ``--only floor``).

Must not: send traffic anywhere but loopback, leave a process behind (every server is
stopped in ``finally`` with bounded waits, swarm workers are killed past their deadline), or
reach into the servers other than through their command lines, log lines and /proc.

Run: ``python tools/bench/webrtc_load.py [--bots 400] [--duration 50] [--warmup 20]
[--processes 2] [--json]``.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]

try:
    import worldtools  # noqa: F401  (installed)
except ImportError:  # run from a checkout: tools/bench is on sys.path
    import _checkout  # noqa: F401

from worldtools.bench.server_load import aligned  # noqa: E402
from worldtools.server_process import HOST, LoggedProcess, ServerProcess  # noqa: E402

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
CPU_TARGET_RATIO = 1.3
LATENESS_TARGET_MS = 10.0
SATURATED_CPU = 85.0  # percent of one core: the servers are single-threaded
SATURATED_RATE = 18.0  # snapshots per bot per second (of 20)


def _import_tools():
    """(worldtools.swarm, worldtools.bench.server_load), installed or from this checkout."""
    import worldtools.swarm.channels  # noqa: F401  (the WebRTC swarm: swarm.channels)
    from worldtools import swarm
    from worldtools.bench import server_load
    return swarm, server_load


# ----------------------------------------------------------------------------- processes


def floor_command(args) -> list[str]:
    return [
        sys.executable, str(ROOT / "tools" / "bench" / "aiortc_floor.py"), "--serve",
        "--host", HOST, "--port", "0", "--size", str(args.size),
        "--max-seconds", str(int(args.duration + 120)),
    ]  # fmt: skip


def start(kind: str, args) -> LoggedProcess:
    """The floor, or worldserver (its default world; a stats line a second, ICE host candidate
    127.0.0.1, the web client's build), under the tools' one runner."""
    if kind == "floor":
        return LoggedProcess(floor_command(args), name="the floor", stop_timeout=STOP_TIMEOUT,
                             scratch="webrtc_load_floor_")
    sets = [
        "webrtc.host_addresses=127.0.0.1", f"http.web_root={ROOT / 'clients' / 'web' / 'dist'}",
        *(args.set or []),
    ]  # fmt: skip
    return ServerProcess(sets, defaults=["server.stats_interval=1"], stop_timeout=STOP_TIMEOUT,
                         scratch="webrtc_load_server_")


# ----------------------------------------------------------------------------- one half


def _counter_delta(lines: list[dict], name: str) -> int:
    """Growth of a cumulative drop counter between the first and the last of ``lines``."""
    values = [int(line.get("drops", {}).get(name, 0)) for line in lines]
    return values[-1] - values[0] if len(values) > 1 else 0


def run_half(kind: str, args, swarm, server_load) -> dict:
    """Start the floor or worldserver, drive it with the WebRTC swarm, measure it."""
    proc = start(kind, args)
    try:
        url = proc.wait_http(START_TIMEOUT)
        window = server_load.Window(proc, args.warmup, args.duration, f"{kind}, {args.bots} bots", args.quiet)
        report = swarm.channels.run_processes(
            "webrtc", url, args.bots, args.duration, args.processes, args.observers, args.seed,
            window.progress, warmup=args.warmup, connect_rate=args.connect_rate, nice=args.swarm_nice,
        )  # fmt: skip
        proc.read()
        alive = proc.proc.poll() is None
    finally:
        exit_code = proc.stop()

    row: dict = dict(kind=kind, alive_at_end=alive, exit_code=exit_code)
    figures = window.figures()
    if figures is not None:
        row["window_s"] = figures["window_s"]
        row["cpu_percent"] = figures["cpu_percent"]
        row["machine_busy_percent"] = figures["machine_busy_percent"]
        lines = figures["lines"]
    else:
        row["window_s"] = 0.0
        row["cpu_percent"] = None
        lines = []
    row["stats_lines"] = len(lines)
    row.update(server_load.tick_summaries(lines))
    row["gc_pause_ms_max"] = max((float(s.get("gc_pause_ms_max", 0.0)) for s in lines), default=None)
    row["clients"] = server_load._summary([float(s.get("clients", 0)) for s in lines])
    skips = _counter_delta(lines, "drop.rtc.snapshot_backlog")
    row["snapshot_skips"] = skips
    window_s = row["window_s"]
    row["snapshot_skips_per_s"] = round(skips / window_s, 1) if window_s else None
    row["drops_at_end"] = lines[-1].get("drops", {}) if lines else {}
    shown = swarm.public_report(report)
    row["swarm"] = shown
    if row["cpu_percent"] is not None:
        row["other_cpu_percent"] = round(
            row["machine_busy_percent"] - row["cpu_percent"] - shown.get("cpu_percent", 0.0), 1
        )
        sent = shown.get("snapshots_per_bot_s", 0.0) * shown.get("connected", 0)
        row["cpu_ms_per_message"] = round(10.0 * row["cpu_percent"] / sent, 4) if sent else None
    # A single-threaded server near one core, or bots getting clearly fewer than 20 snapshots
    # a second, is saturated: its CPU is a ceiling, not the cost of the work asked of it.
    rate = shown.get("snapshots_per_bot_s", 0.0)
    row["saturated"] = bool(
        row["cpu_percent"] is None or row["cpu_percent"] >= SATURATED_CPU
        or rate < SATURATED_RATE or shown.get("failures", 0) > 0
    )
    return row


# ----------------------------------------------------------------------------- output


def verdict(result: dict) -> dict:
    halves = {r["kind"]: r for r in result["runs"] if "error" not in r}
    out: dict = {}
    floor, server = halves.get("floor"), halves.get("server")
    if floor and server and floor.get("cpu_percent") and server.get("cpu_percent") is not None:
        ratio = server["cpu_percent"] / floor["cpu_percent"]
        out["cpu_ratio"] = round(ratio, 2)
        # Only comparable when both did all the work: a saturated half's CPU is a ceiling.
        out["cpu_ratio_valid"] = not (floor["saturated"] or server["saturated"])
        out["cpu_ratio_target_met"] = out["cpu_ratio_valid"] and ratio <= CPU_TARGET_RATIO
        if floor.get("cpu_ms_per_message") and server.get("cpu_ms_per_message"):
            out["cpu_per_message_ratio"] = round(
                server["cpu_ms_per_message"] / floor["cpu_ms_per_message"], 2
            )
    if server and server["late_ms_p99"].get("median") is not None:
        out["late_ms_p99"] = server["late_ms_p99"]["median"]
        out["late_ms_p99_worst"] = server["late_ms_p99"]["worst"]
        out["lateness_target_met"] = server["late_ms_p99"]["median"] < LATENESS_TARGET_MS
    return out


def format_table(result: dict) -> str:
    m = result["machine"]
    s = result["settings"]
    out = [
        f"machine: {m['nproc']} CPUs, {m['cpu_model']}, Python {m['python']} "
        f"(load at start {m['loadavg_at_start']})",
        f"{s['bots']} WebRTC bots for {s['duration']} s, first {s['warmup']} s excluded; swarm in "
        f"{s['processes']} worker process(es) at nice {s['swarm_nice']}; CPU% = percent of one core",
        "",
    ]
    head = ("server", "sat", "conn", "fail", "CPU%", "ms/msg", "late p99 med/max", "tick p99 med/max",
            "skips/s", "snap/bot/s", "in B/bot/s", "lat p50/p99 ms", "loss %", "swarm CPU%",
            "other CPU%")  # fmt: skip
    rows = []
    for r in result["runs"]:
        if "error" in r:
            rows.append((r["kind"], "error: " + r["error"]) + ("",) * (len(head) - 2))
            continue
        sw = r["swarm"]

        def pair(d):
            return "-" if d.get("median") is None else f"{d['median']:.1f}/{d['worst']:.1f}"

        lat50, lat99 = sw.get("latency_ms_p50"), sw.get("latency_ms_p99")
        rows.append((
            r["kind"], "yes" if r["saturated"] else "no", str(sw.get("connected", "-")),
            str(sw.get("failures", "-")),
            "-" if r["cpu_percent"] is None else f"{r['cpu_percent']:.1f}",
            "-" if r.get("cpu_ms_per_message") is None else f"{r['cpu_ms_per_message']:.3f}",
            pair(r["late_ms_p99"]), pair(r["tick_ms_p99"]),
            "-" if r["snapshot_skips_per_s"] is None else f"{r['snapshot_skips_per_s']:.1f}",
            f"{sw.get('snapshots_per_bot_s', 0):.1f}", f"{sw.get('bytes_per_bot_s', 0):.0f}",
            "-" if lat50 is None else f"{lat50:.0f}/{lat99:.0f}",
            f"{100 * sw.get('packet_loss', 0):.2f}", f"{sw.get('cpu_percent', 0):.0f}",
            "-" if r.get("other_cpu_percent") is None else f"{r['other_cpu_percent']:.0f}",
        ))  # fmt: skip
    out += aligned(head, rows)
    v = result["verdict"]
    if "cpu_ratio" in v:
        met = "met" if v["cpu_ratio_target_met"] else "NOT met"
        if not v["cpu_ratio_valid"]:
            met = "not comparable: a server was saturated (CPU >= 85% or < 18 snapshots/bot/s)"
        out.append(f"\nworldserver CPU / floor CPU = {v['cpu_ratio']:.2f} "
                   f"(target <= {CPU_TARGET_RATIO}: {met})")
        if "cpu_per_message_ratio" in v:
            out.append(f"CPU per snapshot delivered, worldserver / floor = {v['cpu_per_message_ratio']:.2f}")
    if "late_ms_p99" in v:
        out.append(f"worldserver tick lateness p99 = {v['late_ms_p99']:.1f} ms, worst second "
                   f"{v['late_ms_p99_worst']:.1f} ms (target < {LATENESS_TARGET_MS:g} ms: "
                   f"{'met' if v['lateness_target_met'] else 'NOT met'})")
    return "\n".join(out)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="webrtc_load",
        description="worldserver vs the aiortc floor under the same WebRTC bot swarm.",
    )
    parser.add_argument("--bots", type=int, default=400, help="WebRTC bots (default 400)")
    parser.add_argument("--duration", type=float, default=50.0, help="seconds per half")
    parser.add_argument("--warmup", type=float, default=20.0,
                        help="seconds excluded at the start (the bots connect and spread)")
    parser.add_argument("--processes", type=int, default=2, help="swarm worker processes")
    parser.add_argument("--observers", type=int, default=16, help="latency-measuring bots")
    parser.add_argument("--connect-rate", type=float, default=40.0,
                        help="new WebRTC channels per second, whole swarm (default 40)")
    parser.add_argument("--swarm-nice", type=int, default=10,
                        help="nice value of the swarm workers (default 10: on a small machine "
                        "the server under test is served first; 0 = same priority)")
    parser.add_argument("--size", type=int, default=200, help="floor message bytes (default 200)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", choices=("floor", "server"), help="run one half only")
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                        help="extra worldserver setting (repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    if args.bots < 1 or args.processes < 1 or args.observers < 0 or args.connect_rate <= 0:
        parser.error("need --bots >= 1, --processes >= 1, --observers >= 0, --connect-rate > 0")
    if args.duration <= 0 or not 0 <= args.warmup < args.duration:
        parser.error("need --duration > 0 and 0 <= --warmup < --duration")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    swarm, server_load = _import_tools()
    result = dict(
        machine=server_load.machine_info(),
        settings=dict(
            bots=args.bots, duration=args.duration, warmup=args.warmup,
            processes=args.processes, observers=args.observers, seed=args.seed,
            connect_rate=args.connect_rate, floor_message_bytes=args.size,
            swarm_nice=args.swarm_nice,
            server_sets=args.set or [],
        ),  # fmt: skip
        runs=[],
    )
    status = 0
    kinds = [args.only] if args.only else ["floor", "server"]
    for kind in kinds:
        if not args.quiet:
            print(f"webrtc_load: {kind}, {args.bots} bots for {args.duration:g} s ...",
                  file=sys.stderr, flush=True)
        try:
            row = run_half(kind, args, swarm, server_load)
        except Exception as exc:  # one half failing must not hide the other
            row = dict(kind=kind, error=f"{type(exc).__name__}: {exc}")
            status = 1
        result["runs"].append(row)
        time.sleep(2.0)  # let the last half's sockets and processes go
    result["verdict"] = verdict(result)
    server_load.print_result(result, args.json, format_table)
    return status


if __name__ == "__main__":
    sys.exit(main())
