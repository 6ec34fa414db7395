"""Attack probe: one address floods the UDP port while normal bots play; are they hurt?

Job: start ``python -m worldserver run`` on loopback (``ServerProcess`` of
``tools/server_process.py``: free ports, a temporary data directory, JSON logs, a stats
line every second) with ``limits.trusted_networks = 127.0.0.1/32``: the normal bots, all on
127.0.0.1, stand for players on their own addresses, and the flooder sends from 127.0.0.2, an
ordinary stranger under every per-address limit. Then three phases of ``--seconds`` each (after
``--warmup`` seconds of connecting): a **baseline**, then ``--rounds`` times a **flood** and a
**baseline** again (alternating, so that the machine's own drift shows). In each,
``--bots`` bots of ``worldtools.swarm`` play (a fresh swarm per phase, ``--observers`` of them
measuring move-to-observed latency). During the flood phase one process sends ``--rate``
datagrams a second from 127.0.0.2 (at most ``--count``): random garbage (random type byte and
length), connected packets with a wrong salt, HELLOs, and INPUT packets of its own session
(joined like a player when the server hands out connect tokens) as fast as the rest.

Reports per phase: move-to-observed latency p50/p99 and samples, snapshots per bot per second,
packet loss, failures, server CPU, the worst tick lateness p99 of the stats lines, the
server's drop counters over the phase (by reason) and the kernel's receive-buffer drops of the
server's UDP socket (``/proc/net/udp``), the largest snapshot stride of the stats lines (the
server sheds load by serving every stride-th client a tick), how busy the whole machine was
(cores, from ``/proc/stat``: a shared machine's other work shows there); for the flood, the datagrams sent
by kind and the flooder's CPU; and the verdict: the median p99 of the flood phases against the
median p99 of the baselines (target: at most 20% more). Prints a table, or JSON with
``--json``.

Run: ``nice -n 19 .venv/bin/python tools/attack/flood.py`` (about 4 minutes with the
defaults); ``--pin`` keeps the bots and the flooder (which on loopback shares the server's
machine, as a real attacker would not) off the server's CPU.

Must not: send to anything but the server it started on loopback, send more than ``--count``
datagrams, leave a process behind (the flooder has a deadline and is killed if it overstays;
the server is stopped in ``finally``), or wait without a deadline.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import socket
import statistics
import sys
import time
from datetime import datetime, timezone

import httpx

from protocol import PROTOCOL_VERSION
from protocol import packets as P
from protocol.client import ClientConnection
from protocol.events import Connected
from protocol.messages import Input, encode_inputs
from worldclient.join import join_sync
from worldtools import swarm
from worldtools.bench.crowd import wait_for_quiet
from worldtools.bench.server_load import _machine_busy_seconds, _proc_cpu_seconds, machine_info, pin_plan
from worldtools.server_process import START_TIMEOUT, ServerProcess

__all__ = ["flood", "main", "run_probe"]

FLOOD_HOST = "127.0.0.2"  # the stranger's address (loopback, not trusted by the server here)
TRUSTED = "limits.trusted_networks=127.0.0.1/32"
HANDSHAKE_TIMEOUT = 5.0
BATCH_INTERVAL = 0.01  # the flooder sends a batch every 10 ms
KINDS = ("garbage", "wrong_salt", "hello", "input")
WEIGHTS = (0.4, 0.2, 0.2, 0.2)


# ----------------------------------------------------------------------------- the flooder


def _join(http_url: str) -> tuple[bytes, bytes]:
    """Join from the flood address like a player: (connect token, key)."""
    transport = httpx.HTTPTransport(local_address=FLOOD_HOST)
    with httpx.Client(transport=transport, timeout=10.0) as client:
        joined = join_sync(http_url, f"flood{os.urandom(3).hex()}", http=client)
    return joined.connect_token, joined.connect_key


def _connect(sock: socket.socket, server: tuple, token: bytes, key: bytes) -> ClientConnection | None:
    """The flooder's own session: a real handshake from its socket; None if refused."""
    extra = dict(token=token, key=key) if key else {}
    conn = ClientConnection(version=PROTOCOL_VERSION, nonce=random.getrandbits(64), **extra)
    sock.settimeout(0.1)
    sock.sendto(conn.connect(time.monotonic()), server)
    deadline = time.monotonic() + HANDSHAKE_TIMEOUT
    try:
        while time.monotonic() < deadline and conn.state not in ("connected", "closed"):
            try:
                data, _ = sock.recvfrom(2048)
            except socket.timeout:
                data = None
            now = time.monotonic()
            events, out = conn.receive_datagram(data, now) if data else conn.poll(now)
            for d in out:
                sock.sendto(d, server)
            if any(isinstance(e, Connected) for e in events):
                break
    finally:
        sock.setblocking(False)
    return conn if conn.state == "connected" else None


def flood(host: str, port: int, http_url: str | None, rate: int, count: int, seconds: float, seed: int, out,
          cpus=None) -> None:
    """Process body: send up to ``count`` datagrams at ``rate`` a second for ``seconds``;
    put the counts by kind (and the flooder's CPU seconds) on ``out``. ``cpus``: pin to these."""
    try:
        if cpus:
            os.sched_setaffinity(0, set(cpus))
        rng = random.Random(seed)
        server = (host, port)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((FLOOD_HOST, 0))
        token = key = b""
        if http_url:
            token, key = _join(http_url)
        conn = _connect(sock, server, token, key)
        kinds = KINDS if conn is not None else KINDS[:3]
        weights = WEIGHTS if conn is not None else WEIGHTS[:3]
        sent = dict.fromkeys(KINDS, 0)
        blocked = replies = 0
        seq = 0
        per_batch = max(1, int(rate * BATCH_INTERVAL))
        cpu0 = time.process_time()
        t0 = time.monotonic()
        next_batch = t0
        total = 0
        while total < count and time.monotonic() - t0 < seconds:
            for kind in rng.choices(kinds, weights, k=min(per_batch, count - total)):
                if kind == "garbage":
                    data = rng.randbytes(rng.randrange(1, P.MAX_DATAGRAM + 1))
                elif kind == "wrong_salt":
                    data = P.encode_header(rng.choice((P.INPUT, P.KEEPALIVE, P.DISCONNECT)), rng.getrandbits(32),
                                           rng.getrandbits(16), 0, 0) + rng.randbytes(rng.randrange(0, 90))
                elif kind == "hello":
                    data = P.encode_hello(PROTOCOL_VERSION, rng.getrandbits(64))
                else:
                    seq += 1
                    data = conn.packet(P.INPUT, encode_inputs([Input(seq, 127, 0, 0, 1)]), time.monotonic())
                try:
                    sock.sendto(data, server)
                    sent[kind] += 1
                except (BlockingIOError, InterruptedError):
                    blocked += 1
                total += 1
            while True:  # what the server answers (challenges, refusals, snapshots): read, ignored
                try:
                    sock.recv(2048)
                    replies += 1
                except (BlockingIOError, InterruptedError):
                    break
            next_batch += BATCH_INTERVAL
            delay = next_batch - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.5:
                next_batch = time.monotonic()  # behind: do not try to catch up
        out.put(dict(sent=sent, total=sum(sent.values()), blocked=blocked, replies=replies,
                     session=conn is not None, keyed=bool(key), seconds=round(time.monotonic() - t0, 2),
                     cpu_s=round(time.process_time() - cpu0, 2)))
    except BaseException as exc:  # reported, never hangs the parent
        out.put(dict(error=f"{type(exc).__name__}: {exc}"))


# ----------------------------------------------------------------------------- the server's view


def kernel_drops(port: int) -> int | None:
    """Datagrams the kernel dropped for the UDP socket bound to ``port`` (``/proc/net/udp``)."""
    want = f":{port:04X}"
    try:
        with open("/proc/net/udp") as fh:
            next(fh)
            for line in fh:
                fields = line.split()
                if fields[1].endswith(want):
                    return int(fields[-1])
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return None


def _drops(line: dict | None) -> dict:
    return dict(line.get("drops", {})) if line else {}


def _delta(after: dict, before: dict) -> dict:
    out = {k: v - before.get(k, 0) for k, v in after.items() if isinstance(v, (int, float))}
    return {k: v for k, v in sorted(out.items()) if v}


# ----------------------------------------------------------------------------- the probe


def run_phase(name: str, server: ServerProcess, host: str, port: int, url: str, args, index: int,
              cpus=None) -> dict:
    server.read()
    before_line = (server.stats_lines() or [None])[-1]
    n_lines = len(server.stats_lines())
    kdrops0 = kernel_drops(port)
    cpu0, busy0, t0 = _proc_cpu_seconds(server.pid), _machine_busy_seconds(), time.monotonic()
    flooder = queue = None
    if name.startswith("flood"):
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        flooder = ctx.Process(target=flood, args=(host, port, url, args.rate, args.count,
                                                  args.warmup + args.seconds + 2.0, args.seed, queue, cpus),
                              daemon=True)
        flooder.start()
        time.sleep(1.0)  # the flood is on before the players connect
    report = swarm.run_processes(host, port, args.bots, args.warmup + args.seconds, 1, args.observers,
                                 args.seed * 10 + index, lambda elapsed, counts: server.read(),
                                 warmup=args.warmup, http=url, cpus=cpus)
    flood_result = None
    if flooder is not None:
        try:
            flood_result = queue.get(timeout=args.warmup + args.seconds + 30.0)
        except Exception:
            flood_result = dict(error="the flooder did not report")
        flooder.join(5.0)
        if flooder.is_alive():
            flooder.kill()
            flooder.join(5.0)
    elapsed = max(1e-9, time.monotonic() - t0)
    cpu = (_proc_cpu_seconds(server.pid) - cpu0) / elapsed
    busy = (_machine_busy_seconds() - busy0) / elapsed
    time.sleep(1.5)  # one more stats line covers the end of the phase
    server.read()
    lines = server.stats_lines()
    window = lines[n_lines:]
    kdrops1 = kernel_drops(port)
    result = dict(
        phase=name,
        latency_ms_p50=report["latency_ms_p50"], latency_ms_p99=report["latency_ms_p99"],
        latency_samples=report["latency_samples"], snapshots_per_bot_s=report["snapshots_per_bot_s"],
        packet_loss=report["packet_loss"], connected=report["connected"], bots=report["bots_requested"],
        failures=report["failures"], failure_reasons=report["failure_reasons"],
        server_cpu_percent=round(100.0 * cpu, 1),
        machine_busy_cores=round(busy, 2),  # every process, this probe's included
        loadavg_1min=round(os.getloadavg()[0], 2),
        late_ms_p99_worst=max((float(line.get("late_ms_p99", 0.0)) for line in window), default=None),
        late_ms_p99_median=round(statistics.median(float(line.get("late_ms_p99", 0.0)) for line in window), 2)
        if window else None,
        stride_max=max((int(line.get("stride", 1)) for line in window), default=None),
        server_drops=_delta(_drops(lines[-1] if lines else None), _drops(before_line)),
        kernel_drops=None if kdrops0 is None or kdrops1 is None else kdrops1 - kdrops0,
    )
    if flood_result is not None:
        result["flood"] = flood_result
    return result


def run_probe(args) -> dict:
    sets = ["server.stats_interval=1", TRUSTED]
    started = datetime.now(timezone.utc)
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    prefix, cpus, pin_note = pin_plan(args.pin)
    server = ServerProcess(sets, prefix)
    if cpus:  # this process (the bots' joins, the flooder's fork) goes with the bots
        os.sched_setaffinity(0, cpus)
    phases = []
    try:
        host, port = server.wait_listening(START_TIMEOUT)
        url = server.http
        names = ["baseline 1"] + [f"{kind} {r + 1 + (kind == 'baseline')}" for r in range(args.rounds)
                                  for kind in ("flood", "baseline")]
        for index, name in enumerate(names):
            if args.quiet_wait > 0:  # every phase starts on a machine as quiet as it gets
                wait_for_quiet(args.quiet_wait, say=(lambda text: None) if args.quiet else
                               (lambda text: print(f"flood probe: {text.removeprefix('crowd: ')}",
                                                   file=sys.stderr, flush=True)))
            if not args.quiet:
                print(f"flood probe: {name} ({args.bots} bots, {args.seconds:g} s after {args.warmup:g} s)",
                      file=sys.stderr, flush=True)
            phases.append(run_phase(name, server, host, port, url, args, index, cpus))
    finally:
        server.stop()
    base = [p["latency_ms_p99"] for p in phases if p["phase"].startswith("baseline") and p["latency_ms_p99"] is not None]
    floods = [p["latency_ms_p99"] for p in phases if p["phase"].startswith("flood") and p["latency_ms_p99"] is not None]
    median_base = statistics.median(base) if base else None
    median_flood = statistics.median(floods) if floods else None
    ratio = round(median_flood / median_base, 3) if median_flood is not None and median_base else None
    return dict(
        date=started.strftime("%Y-%m-%d %H:%M UTC"),
        settings=dict(bots=args.bots, observers=args.observers, seconds=args.seconds, warmup=args.warmup,
                      rate=args.rate, count=args.count, rounds=args.rounds, seed=args.seed, server_sets=sets,
                      quiet_wait=args.quiet_wait, pinned=pin_note),
        machine=machine_info(),
        phases=phases,
        baseline_p99_ms_median=None if median_base is None else round(median_base, 2),
        flood_p99_ms_median=None if median_flood is None else round(median_flood, 2),
        p99_ratio=ratio,
        ok=ratio is not None and ratio <= 1.2,
    )


def format_report(r: dict) -> str:
    rows = [("phase", "p50 / p99 ms (samples)", "snap/bot/s", "loss", "failures", "server CPU", "machine busy",
             "late p99 med/worst", "stride", "kernel drops", "server drops")]
    for p in r["phases"]:
        drops = ", ".join(f"{k.removeprefix('drop.')}={v}" for k, v in p["server_drops"].items()) or "-"
        rows.append((p["phase"], f"{p['latency_ms_p50']} / {p['latency_ms_p99']} ({p['latency_samples']})",
                     str(p["snapshots_per_bot_s"]), f"{100 * p['packet_loss']:.3f}%", str(p["failures"]),
                     f"{p['server_cpu_percent']}%", f"{p['machine_busy_cores']} cores",
                     f"{p['late_ms_p99_median']} / {p['late_ms_p99_worst']}",
                     str(p["stride_max"]), str(p["kernel_drops"]), drops))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1] for row in rows]
    for p in r["phases"]:
        f = p.get("flood")
        if f is None:
            continue
        if "error" in f:
            lines.append(f"{p['phase']}: flooder error: {f['error']}")
        else:
            lines.append(f"{p['phase']}: {f['total']:,} datagrams in {f['seconds']} s from {FLOOD_HOST} "
                         f"({', '.join(f'{k} {v:,}' for k, v in f['sent'].items())}; own session: {f['session']}, "
                         f"keyed: {f['keyed']}; flooder CPU {f['cpu_s']} s)")
    lines.append(f"move-to-observed p99 (median of the phases): baselines {r['baseline_p99_ms_median']} ms, "
                 f"floods {r['flood_p99_ms_median']} ms, ratio {r['p99_ratio']} (target <= 1.2): "
                 f"{'ok' if r['ok'] else 'NOT ok'}")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tools/attack/flood.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bots", type=int, default=100, help="normal bots per phase")
    parser.add_argument("--observers", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per phase")
    parser.add_argument("--rounds", type=int, default=2, help="flood phases, each followed by a baseline")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of each phase before measuring")
    parser.add_argument("--rate", type=int, default=20_000, help="flood datagrams per second")
    parser.add_argument("--count", type=int, default=2_000_000, help="at most this many flood datagrams")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quiet-wait", type=float, default=0.0, metavar="SECONDS",
                        help="before each phase, wait up to this long for the machine to be under 10%% busy")
    parser.add_argument("--pin", action="store_true",
                        help="server on CPU 0, bots and flooder on CPU 1 (taskset), as tools/bench/server_load.py")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    report = run_probe(args)
    print(json.dumps(report) if args.json else format_report(report), flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
