"""Crowd benchmark (issue 7): everyone in view of everyone, worldserver against Colyseus.

Job: for each crowd size N, run the Colyseus 0.18 peer harness (``../shared/peers/colyseus``:
one room, N bots on WebSockets, 20 moves a second each, a 20 Hz patch to every client) and then
worldserver on the same scenario: a 100 x 100 m world (``sim.half_extent=50``) in which every
bot sees every other (``interest.radius=150``), 20 inputs a second per bot, every bot walking
at the same speed on both sides (``--speed``, 1.5 m/s as in the harness), the server pinned
to CPU 0 and the bots to CPU 1 (as the harness pins, when ``taskset`` exists and the machine
has 2+ CPUs). Prints one table (or ``--json``): server CPU and the ratio worldserver /
Colyseus, bytes per client per second and the ratio, snapshots per client per second
(worldserver: complete ticks, every part arrived; Colyseus: patch frames), the share of the
visible entities refreshed per snapshot, move-to-observed p50/p99 on both sides, and
worldserver's tick lateness p50/p99.

How: the harness directory is read-only, so it is copied into a scratch directory under the
system temp dir (kept between runs, so that its ``npm ci`` runs once), and the copy's
``run_bench.sh`` is patched to pass ``--speed "${BOT_SPEED:-1.5}"`` on to ``bots.mjs`` (the
original does not pass it through); it then runs there as ``run_bench.sh N DURATION`` with
``WARMUP_S`` and ``OBSERVERS`` set, and its one JSON line is parsed. Without ``node`` or
without the harness, Colyseus is skipped and the output says why. worldserver runs through
``server_load.run_one`` (the real ``worldserver run`` process and the UDP swarm).

``--duration`` is the measured window on both sides and ``--warmup`` the seconds before it
(Colyseus: after all N joined; worldserver: from the swarm's start, joins take about 1 s).

Must not: send traffic anywhere but loopback (both servers bind 127.0.0.1), run unbounded
(each Colyseus run has a deadline, then its whole session is stopped: TERM, then KILL;
the worldserver run has server_load's bounded waits), or leave anything behind: every process
it starts is stopped in ``finally`` blocks, on SIGTERM and SIGINT too.

Run: ``python tools/bench/crowd.py --bots 200,400,1000 [--duration 30 --warmup 20] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

ROOT = pathlib.Path(__file__).resolve().parents[2]

try:
    import worldtools  # noqa: F401  (installed)
except ImportError:  # run from a checkout: tools/bench is on sys.path
    import _checkout  # noqa: F401

DEFAULT_HARNESS = ROOT.parent / "shared" / "peers" / "colyseus"
DEFAULT_SCRATCH = pathlib.Path(tempfile.gettempdir()) / f"worldserver-crowd-colyseus-{os.getuid()}"
CROWD_SETS = ("worlds.hosted=open", "sim.half_extent=50", "interest.radius=150")  # 100 x 100 m, everyone in view
DEFAULT_SPEED = 1.5  # m/s, the harness's walking speed
SPEED_ENV = "BOT_SPEED"  # the patched run_bench.sh passes it as bots.mjs --speed
BOTS_CMD = "node bots.mjs "
COPY_SKIP = {"node_modules", "results", "scratch"}  # not copied (results/tmp is the copy's own)
INSTALL_ALLOWANCE = 600.0  # seconds for the first npm ci of the copy
STOP_GRACE = 5.0  # seconds between TERM and KILL of the harness's processes
BUSY_GENERATOR = 90.0  # % of a core: bots this busy may be what limits a run (noted)
NOISY = 5.0  # % of a core used by other processes during a window (noted)
QUIET_MAX_BUSY = 10.0  # % of the whole machine: below this it counts as quiet (as the harness)
QUIET_HOLD = 2.0  # seconds over which the machine's busy share is measured


class HarnessError(RuntimeError):
    """The Colyseus harness could not be prepared, run or read."""


def _import_server_load():
    """worldtools.bench.server_load, installed or from this checkout."""
    from worldtools.bench import server_load

    return server_load


def _import_swarm():
    """worldtools.swarm (the UDP bots; imported only when worldserver runs)."""
    from worldtools import swarm

    return swarm


# ----------------------------------------------------------------------------- the machine


def machine_busy_percent(hold: float) -> float:
    """Whole-machine busy share (all CPUs: 100 = every core busy) over ``hold`` seconds."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + v[4]
        return sum(v[:8]) - idle, sum(v[:8])

    b0, t0 = sample()
    time.sleep(hold)
    b1, t1 = sample()
    return round(100.0 * (b1 - b0) / max(1, t1 - t0), 1)


def wait_for_quiet(max_wait: float, max_busy: float = QUIET_MAX_BUSY, hold: float = QUIET_HOLD,
                   say=lambda text: None) -> float:
    """Wait (at most ``max_wait`` s) until the machine is less than ``max_busy`` % busy over
    ``hold`` s, as the harness's QUIET_WAIT_S does; returns the last busy share measured."""
    deadline = time.monotonic() + max_wait
    busy = machine_busy_percent(hold)
    while busy >= max_busy and time.monotonic() < deadline:
        say(f"crowd: machine {busy:.0f}% busy, waiting for quiet")
        busy = machine_busy_percent(hold)
    return busy


# ----------------------------------------------------------------------------- Colyseus


def colyseus_skip_reason(harness: pathlib.Path, node: str | None) -> str | None:
    """Why the Colyseus side cannot run here, or None if it can."""
    if node is None:
        return "node not found on PATH"
    if not harness.is_dir():
        return f"harness not found at {harness}"
    for name in ("run_bench.sh", "bots.mjs", "server.mjs", "package-lock.json"):
        if not (harness / name).is_file():
            return f"harness at {harness} has no {name}"
    return None


def patch_run_bench(text: str, env_var: str = SPEED_ENV, default: float = DEFAULT_SPEED) -> str:
    """``run_bench.sh`` with ``--speed "${ENV_VAR:-default}"`` passed on to ``bots.mjs``.

    Refuses (HarnessError) a script that already passes ``--speed`` (its own value would
    override or be overridden: which one wins is not ours to guess) or that does not start
    ``node bots.mjs`` exactly once.
    """
    if "--speed" in text:
        raise HarnessError("run_bench.sh already passes --speed: check crowd.py's patch")
    if text.count(BOTS_CMD) != 1:
        raise HarnessError(f"run_bench.sh: expected one {BOTS_CMD.strip()!r}, "
                           f"found {text.count(BOTS_CMD)}")
    return text.replace(BOTS_CMD, f'{BOTS_CMD}--speed "${{{env_var}:-{default:g}}}" ')


def prepare_harness(src: pathlib.Path, scratch: pathlib.Path) -> pathlib.Path:
    """Copy the harness into ``scratch`` (its ``node_modules`` survive) with the patched
    ``run_bench.sh``; return the copy's directory."""
    patched = patch_run_bench((src / "run_bench.sh").read_text())
    scratch.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        if entry.name in COPY_SKIP or entry.name == "run_bench.sh":
            continue
        dest = scratch / entry.name
        if entry.is_dir():
            if dest.exists():
                shutil.rmtree(dest)
            shutil.copytree(entry, dest, copy_function=shutil.copyfile)
            for path in [dest, *dest.rglob("*")]:
                path.chmod(0o755 if path.is_dir() else 0o644)
        else:
            if dest.exists():
                dest.chmod(0o644)
            shutil.copyfile(entry, dest)
            dest.chmod(0o755 if os.access(entry, os.X_OK) else 0o644)
    script = scratch / "run_bench.sh"
    if script.exists():
        script.chmod(0o755)
    script.write_text(patched)
    script.chmod(0o755)
    return scratch


def parse_colyseus(text: str) -> dict:
    """The figures of the harness's JSON line (the last ``{"framework":"colyseus",...}`` line
    of ``text``), in this benchmark's names; HarnessError if there is none."""
    raw = None
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("framework") == "colyseus":
            raw = obj
    if raw is None:
        raise HarnessError("no Colyseus JSON line in the harness output")
    lat = raw.get("latency_move_to_observe_ms") or {}
    server = raw.get("server") or {}
    interval = server.get("patch_interval_ms") or {}
    return dict(
        bots=raw.get("n"),
        connected=raw.get("connected"),
        failures=(raw.get("join_failures") or 0) + (raw.get("drops") or 0),
        window_s=server.get("window_s", raw.get("seconds")),
        server_cpu_percent=raw.get("server_cpu_pct"),
        bytes_per_client_s=raw.get("rx_bytes_per_bot_per_s"),
        snapshots_per_client_s=raw.get("rx_frames_per_bot_per_s"),
        # Every patch carries every changed field of every player: no interest management,
        # no rate limit, so each snapshot refreshes every moving entity.
        refreshed_share=1.0,
        refreshed_share_source="by design (every patch carries every change)",
        latency_ms_p50=lat.get("p50"),
        latency_ms_p99=lat.get("p99"),
        latency_samples=lat.get("n"),
        late_ms_p50=None,
        late_ms_p99=None,
        patch_interval_ms_mean=interval.get("mean"),
        patch_interval_ms_p99=interval.get("p99"),
        moves_per_bot_s=raw.get("moves_sent_per_bot_per_s"),
        moves_received_ratio=raw.get("moves_received_ratio"),
        bots_cpu_percent=raw.get("bots_total_cpu_pct"),
        foreign_cpu_percent=raw.get("foreign_cpu_pct"),
        server_cpus=raw.get("server_cpus_allowed"),
        bot_cpus=raw.get("bot_cpus_allowed"),
        server_keeps_up=raw.get("server_keeps_up"),
        generator_ok=raw.get("generator_ok"),
        node=raw.get("node"),
    )


def session_members(sid: int) -> list[int]:
    """Pids of the live processes of session ``sid`` (field 6 of /proc/<pid>/stat)."""
    pids = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # state ppid pgrp session ...
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(entry.name))
    return pids


def stop_session(proc: subprocess.Popen, grace: float = STOP_GRACE) -> None:
    """Stop everything in the session ``proc`` leads (started with ``start_new_session``):
    TERM, then KILL after ``grace`` s. A session, not a process group: ``timeout`` in the
    harness puts the bots in a process group of their own."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        members = session_members(proc.pid)
        if not members:
            break
        for pid in members:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader
            if not session_members(proc.pid):
                break
            time.sleep(0.05)
    proc.poll()


def run_colyseus(copy: pathlib.Path, bots: int, seconds: float, *, warmup: float,
                 speed: float, observers: int, timeout: float | None = None) -> dict:
    """``run_bench.sh bots seconds`` in the harness copy, bounded in time; its summary.

    The script runs in its own session; whatever is left in it (its server, its bots) is
    stopped when the script ends, fails or overstays ``timeout``.
    """
    if timeout is None:
        installed = (copy / "node_modules" / ".bench-lock-sum").is_file()
        timeout = warmup + seconds + 120.0 + bots / 5.0 + (0.0 if installed else INSTALL_ALLOWANCE)
    env = dict(os.environ, WARMUP_S=f"{warmup:g}", OBSERVERS=str(observers),
               **{SPEED_ENV: f"{speed:g}"})
    log_path = copy / "crowd-run_bench.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["bash", str(copy / "run_bench.sh"), str(bots), f"{seconds:g}"],
            cwd=copy, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
            start_new_session=True,
        )  # fmt: skip
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_session(proc)
            proc.communicate()
            raise HarnessError(f"run_bench.sh {bots} did not finish within {timeout:.0f} s")
        finally:
            stop_session(proc)  # whatever the script left behind, and the script if still there
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        raise HarnessError(f"run_bench.sh exited with {proc.returncode}: {' | '.join(tail)}")
    summary = parse_colyseus(out.decode("utf-8", "replace"))
    summary["speed"] = speed
    return summary


# ----------------------------------------------------------------------------- worldserver


def worldserver_summary(row: dict) -> dict:
    """The figures of a ``server_load.run_one`` row, in this benchmark's names."""
    if "error" in row:
        return dict(bots=row.get("bots"), error=row["error"])
    s = row.get("swarm", {})
    late50, late99 = row.get("late_ms_p50") or {}, row.get("late_ms_p99") or {}
    return dict(
        bots=row.get("bots"),
        connected=s.get("connected"),
        failures=s.get("failures"),
        window_s=row.get("window_s"),
        server_cpu_percent=row.get("server_cpu_percent"),
        bytes_per_client_s=s.get("bytes_per_bot_s"),
        server_bytes_out_per_client_s=row.get("bytes_out_per_client_s"),
        snapshots_per_client_s=s.get("snapshots_per_bot_s"),
        parts_per_client_s=s.get("parts_per_bot_s"),
        refreshed_share=row.get("refreshed_share"),
        refreshed_share_source="server counters" if row.get("refreshed_share") is not None else None,
        observed_refreshed_share=s.get("observed_refreshed_share"),
        latency_ms_p50=s.get("latency_ms_p50"),
        latency_ms_p99=s.get("latency_ms_p99"),
        latency_samples=s.get("latency_samples"),
        late_ms_p50=late50.get("median"),
        late_ms_p99=late99.get("median"),
        late_ms_p99_worst=late99.get("worst"),
        moves_per_bot_s=s.get("inputs_per_bot_s"),
        packet_loss=s.get("packet_loss"),
        observed_entities_mean=s.get("observed_entities_mean"),
        bots_cpu_percent=s.get("cpu_percent"),
        other_cpu_percent=row.get("other_cpu_percent"),
        pinning=row.get("pinning"),
        speed=row.get("speed"),
        server_alive=row.get("server_alive"),
    )


def run_worldserver(bots: int, args) -> dict:
    swarm, server_load = _import_swarm(), _import_server_load()
    opts = SimpleNamespace(
        duration=args.warmup + args.duration, warmup=args.warmup, processes=1,
        observers=args.observers, seed=args.seed, set=list(CROWD_SETS) + list(args.set or []),
        speed=args.speed, pin=not args.no_pin, quiet=args.quiet,
    )  # fmt: skip
    try:
        row = server_load.run_one(swarm, bots, opts)
    except Exception as exc:  # one size failing must not hide the others
        row = dict(bots=bots, error=f"{type(exc).__name__}: {exc}")
    return worldserver_summary(row)


# ----------------------------------------------------------------------------- the table


def ratio(ours, theirs) -> float | None:
    if ours is None or theirs is None or not theirs:
        return None
    return round(ours / theirs, 2)


def _num(value, fmt: str = "{:.1f}") -> str:
    return "n/a" if value is None else fmt.format(value)


def _pair(a, b, fmt: str = "{:.0f}") -> str:
    if a is None and b is None:
        return "n/a"
    return f"{_num(a, fmt)}/{_num(b, fmt)}"


HEAD = (
    "N", "system", "server CPU%", "ratio", "B/client/s", "ratio", "snap/client/s",
    "parts/client/s", "refreshed", "move->obs p50/p99 ms", "late p50/p99 ms", "moves/bot/s",
    "connected",
)  # fmt: skip


def table_rows(entry: dict) -> list[tuple[str, ...]]:
    """Two rows (Colyseus, worldserver) for one crowd size; ratios on the worldserver row."""
    n = str(entry["bots"])
    col, ws = entry.get("colyseus") or {}, entry.get("worldserver") or {}
    rows = []
    if "skipped" in col or "error" in col:
        note = f"skipped: {col['skipped']}" if "skipped" in col else f"error: {col['error']}"
        rows.append((n, "colyseus", note) + ("",) * (len(HEAD) - 3))
        col = {}
    elif col:
        rows.append((
            n, "colyseus", _num(col.get("server_cpu_percent")), "",
            _num(col.get("bytes_per_client_s"), "{:,.0f}"), "",
            _num(col.get("snapshots_per_client_s")), "",
            "1.00 (all)" if col.get("refreshed_share") == 1.0 else _num(col.get("refreshed_share"), "{:.2f}"),
            _pair(col.get("latency_ms_p50"), col.get("latency_ms_p99")), "n/a",
            _num(col.get("moves_per_bot_s")), f"{col.get('connected')}/{col.get('bots')}",
        ))  # fmt: skip
    if "error" in ws:
        rows.append((n, "worldserver", f"error: {ws['error']}") + ("",) * (len(HEAD) - 3))
    elif ws:
        rows.append((
            n, "worldserver", _num(ws.get("server_cpu_percent")),
            _num(ratio(ws.get("server_cpu_percent"), col.get("server_cpu_percent")), "{:.2f}"),
            _num(ws.get("bytes_per_client_s"), "{:,.0f}"),
            _num(ratio(ws.get("bytes_per_client_s"), col.get("bytes_per_client_s")), "{:.2f}"),
            _num(ws.get("snapshots_per_client_s")), _num(ws.get("parts_per_client_s")),
            _num(ws.get("refreshed_share"), "{:.2f}"),
            _pair(ws.get("latency_ms_p50"), ws.get("latency_ms_p99")),
            _pair(ws.get("late_ms_p50"), ws.get("late_ms_p99"), "{:.1f}"),
            _num(ws.get("moves_per_bot_s")), f"{ws.get('connected')}/{ws.get('bots')}",
        ))  # fmt: skip
    return rows


def format_table(result: dict) -> str:
    m, st = result["machine"], result["settings"]
    out = [
        f"machine: {m['nproc']} CPUs, {m['cpu_model']}, Python {m['python']} "
        f"(load at start {m['loadavg_at_start']})",
        f"all in view: 100 x 100 m, worldserver {' '.join('--set ' + s for s in st['server_sets'])}; "
        f"walking speed {st['speed']:g} m/s on both sides; warm-up {st['warmup']:g} s, "
        f"window {st['duration']:g} s; {st['observers']} observers per side; {st['pinning']}",
        "CPU% = percent of one core (server process); B/client/s = payload bytes received per "
        "client (Colyseus: WebSocket, worldserver: UDP); snap = Colyseus patch frames, "
        "worldserver complete ticks (parts = packets); refreshed = share of visible entities "
        "refreshed per snapshot (worldserver: server counters, n/a without them); "
        "ratio = worldserver / Colyseus",
        "",
    ]
    rows = [row for entry in result["runs"] for row in table_rows(entry)]
    blank = ("",) * (len(HEAD) - 3)
    figures = [r for r in rows if r[3:] != blank]  # the others hold a note in column 2
    widths = [max([len(h)] + [len(r[i]) for r in (figures if i >= 2 else rows)])
              for i, h in enumerate(HEAD)]
    out.append("  ".join(h.rjust(w) for h, w in zip(HEAD, widths)))
    for row in rows:
        if row[3:] == blank:  # a note spans the rest of the line
            out.append("  ".join(c.rjust(w) for c, w in zip(row[:2], widths)) + "  " + row[2])
        else:
            out.append("  ".join(c.rjust(w) for c, w in zip(row, widths)))
    notes = []
    for entry in result["runs"]:
        ws = entry.get("worldserver") or {}
        if ws.get("observed_refreshed_share") is not None:
            notes.append(f"N={entry['bots']}: observers saw {ws['observed_refreshed_share']:.2f} of the "
                         "moving entities in view change per complete snapshot (a lower bound of "
                         "the refreshed share: an entity that stood still for a tick counts as "
                         "not refreshed)")
        if (ws.get("bots_cpu_percent") or 0) >= BUSY_GENERATOR:
            notes.append(f"N={entry['bots']}: worldserver's bots used {ws['bots_cpu_percent']:.0f}% "
                         "of their core: the load generator may limit the figures")
        if (ws.get("other_cpu_percent") or 0) >= NOISY:
            notes.append(f"N={entry['bots']}: other processes used {ws['other_cpu_percent']:.0f}% "
                         "of a core during worldserver's window")
        col = entry.get("colyseus") or {}
        if col.get("generator_ok") is False or col.get("server_keeps_up") is False:
            notes.append(f"N={entry['bots']}: Colyseus harness says server_keeps_up="
                         f"{col.get('server_keeps_up')}, generator_ok={col.get('generator_ok')}")
        if (col.get("foreign_cpu_percent") or 0) >= NOISY:
            notes.append(f"N={entry['bots']}: other processes used {col['foreign_cpu_percent']:.0f}% "
                         "of a core during Colyseus's window")
        for side in ("colyseus", "worldserver"):
            busy = (entry.get(side) or {}).get("machine_busy_before_percent")
            if busy is not None and busy >= QUIET_MAX_BUSY:
                notes.append(f"N={entry['bots']}: the machine was {busy:.0f}% busy just before "
                             f"the {side} run")
    if notes:
        out += [""] + notes
    return "\n".join(out)


# ----------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="crowd", description="Everyone in view: worldserver against Colyseus (issue 7)."
    )
    parser.add_argument("--bots", default="200,400,1000", help="comma-separated crowd sizes")
    parser.add_argument("--duration", type=float, default=30.0, help="measured window, seconds")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds before the window")
    parser.add_argument("--speed", type=float, default=DEFAULT_SPEED,
                        help="walking speed of every bot on both sides, m/s (default 1.5)")
    parser.add_argument("--observers", type=int, default=8,
                        help="decoding (latency-measuring) bots on each side (harness default 8)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                        help="extra worldserver setting (repeatable)")
    parser.add_argument("--colyseus-dir", type=pathlib.Path, default=DEFAULT_HARNESS,
                        help=f"the Colyseus harness (default {DEFAULT_HARNESS})")
    parser.add_argument("--scratch", type=pathlib.Path, default=DEFAULT_SCRATCH,
                        help=f"where the harness is copied and run (default {DEFAULT_SCRATCH})")
    parser.add_argument("--only", choices=("colyseus", "worldserver"), help="run one side only")
    parser.add_argument("--no-pin", action="store_true", help="do not pin worldserver's run")
    parser.add_argument("--quiet-wait", type=float, default=0.0, metavar="SECONDS",
                        help="before each run, wait up to this long for the machine to be "
                             f"< {QUIET_MAX_BUSY:g}%% busy (0: measure it, do not wait)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    args.sizes = _import_server_load().parse_sizes(parser, args.bots)
    if not args.sizes or min(args.sizes) < 2:
        parser.error("--bots needs sizes >= 2")
    if args.duration <= 0 or args.warmup < 0:
        parser.error("need --duration > 0 and --warmup >= 0")
    if not args.speed > 0:
        parser.error("--speed must be > 0")
    if args.observers < 1:
        parser.error("--observers must be >= 1")
    if args.quiet_wait < 0:
        parser.error("--quiet-wait must be >= 0")
    return args


def _colyseus_side(n: int, args, state: dict) -> dict:
    """One Colyseus run, or an error note; the harness copy is prepared once."""
    try:
        if "copy" not in state:
            state["copy"] = prepare_harness(args.colyseus_dir, args.scratch)
        return run_colyseus(state["copy"], n, args.duration, warmup=args.warmup,
                            speed=args.speed, observers=args.observers)
    except HarnessError as exc:
        return dict(error=str(exc))


def _on_sigterm(signum, frame):  # finally blocks stop what was started
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    args = parse_args(argv)
    server_load = _import_server_load()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    say = (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    state: dict = {}
    if args.only != "worldserver":
        reason = colyseus_skip_reason(args.colyseus_dir, shutil.which("node"))
        if reason is not None:
            state["skip"] = reason
            say(f"crowd: Colyseus skipped: {reason}")
    else:
        state["skip"] = "not asked (--only worldserver)"
    pinning = server_load.pin_plan(not args.no_pin)[2]
    result = dict(
        machine=server_load.machine_info(),
        settings=dict(
            sizes=args.sizes, duration=args.duration, warmup=args.warmup, speed=args.speed,
            observers=args.observers, seed=args.seed,
            server_sets=list(CROWD_SETS) + list(args.set or []), pinning=pinning,
            colyseus_dir=str(args.colyseus_dir), scratch=str(args.scratch),
        ),  # fmt: skip
        runs=[],
    )
    status = 0
    try:
        for n in args.sizes:
            entry: dict = dict(bots=n)
            if "skip" not in state:
                busy = wait_for_quiet(args.quiet_wait, say=say)
                say(f"crowd: {n} bots, Colyseus (machine {busy:.0f}% busy before) ...")
                entry["colyseus"] = _colyseus_side(n, args, state)
                entry["colyseus"]["machine_busy_before_percent"] = busy
                if "error" in entry["colyseus"]:
                    status = 1
                    say(f"crowd: Colyseus {n}: {entry['colyseus']['error']}")
            else:
                entry["colyseus"] = dict(skipped=state["skip"])
            if args.only != "colyseus":
                busy = wait_for_quiet(args.quiet_wait, say=say)
                say(f"crowd: {n} bots, worldserver (machine {busy:.0f}% busy before) ...")
                entry["worldserver"] = run_worldserver(n, args)
                entry["worldserver"]["machine_busy_before_percent"] = busy
                if "error" in entry["worldserver"]:
                    status = 1  # said even with --quiet: an error is no progress line
                    print(f"crowd: worldserver {n}: {entry['worldserver']['error']}", file=sys.stderr, flush=True)
            result["runs"].append(entry)
            ran = "worldserver" in entry or not ({"skipped", "error"} & entry["colyseus"].keys())
            if ran and n != args.sizes[-1]:
                time.sleep(1.0)  # let the sockets of the last run go
    finally:
        signal.signal(signal.SIGTERM, previous)
    for entry in result["runs"]:
        col, ws = entry.get("colyseus") or {}, entry.get("worldserver") or {}
        entry["ratios"] = dict(
            server_cpu=ratio(ws.get("server_cpu_percent"), col.get("server_cpu_percent")),
            bytes_per_client_s=ratio(ws.get("bytes_per_client_s"), col.get("bytes_per_client_s")),
        )
    server_load.print_result(result, args.json, format_table)
    return status


if __name__ == "__main__":
    sys.exit(main())
