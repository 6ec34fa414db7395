"""Proximity calls: time from stepping into range to the first remote video frame (issue 11).

Job: start ``python -m worldserver run`` on loopback (the open square, WebRTC host candidates on
127.0.0.1, the server's own defaults for ``[calls]``: a mesh, ``calls.radius`` 2.5 m), then
run ``tests/browser/calls.mjs --scenario first_frame`` in headless Chromium with fake media
devices (a 160x120 camera at 10 fps and a microphone): page A stands, page B walks up to it
from 6 m at full speed, ``--rounds`` times. Each page times, with its own clock, from the first
snapshot it decodes that shows the two avatars within ``calls.radius`` (the server groups on
those positions) to the first remote video frame its tile presents
(``requestVideoFrameCallback``), and from that snapshot to ``call.joined``. Between rounds B
walks back out and both leave the call. Prints a table, or JSON with ``--json``, with the
machine it ran on.

Target (docs/calls.md, docs/benchmarks.md): under 1.5 s on loopback.

Must not: send traffic anywhere but loopback, leave the server or the browser behind (the
server is stopped in a finally; the node script closes its browser and has its own deadline).

Run: ``python tools/bench/calls_first_frame.py [--rounds 5] [--json]`` (needs node, the web
client's build and node modules and Debian's chromium: ``bash scripts/web.sh --browser``).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import statistics
import subprocess
import sys
import time

try:
    import worldtools  # noqa: F401  (installed)
except ImportError:  # run from a checkout: tools/bench is on sys.path
    import _checkout  # noqa: F401

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "browser" / "calls.mjs"
SETUP_HINT = "run `bash scripts/web.sh --browser` (node, the web client's build, chromium)"


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return {"n": len(ordered), "median": statistics.median(ordered), "p90": p90, "max": ordered[-1], "min": ordered[0]}


def run(rounds: int, timeout: float) -> dict:
    from worldtools.bench import server_load
    from worldtools.server_process import ServerProcess

    if shutil.which("node") is None:
        raise SystemExit(f"node is not installed: {SETUP_HINT}")
    subprocess.run(["bash", str(ROOT / "scripts" / "web.sh")], check=True, timeout=900)
    # the server runs in a scratch folder: the built client and the pictures by path
    server = ServerProcess([
        "webrtc.host_addresses=127.0.0.1",
        f"http.web_root={ROOT / 'clients' / 'web' / 'dist'}",
    ])
    try:
        server.wait_listening(30.0)
        started = time.monotonic()
        proc = subprocess.run(
            ["node", str(SCRIPT), "--url", server.http, "--scenario", "first_frame", "--rounds", str(rounds),
             "--timeout", str(int(timeout))],
            cwd=ROOT, capture_output=True, text=True, timeout=timeout + 30,
        )  # fmt: skip
        seconds = time.monotonic() - started
    finally:
        server.stop()
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"calls.mjs printed no result (exit {proc.returncode}): {proc.stderr[-2000:]}")
    result = json.loads(lines[-1])
    if not result.get("ok"):
        raise SystemExit(f"calls.mjs failed: {result.get('error')}\npage logs: {result.get('logs')}")
    per_round = result["rounds"]
    frames = [r["a_ms"] for r in per_round] + [r["b_ms"] for r in per_round]
    joins = [r["a_joined_ms"] for r in per_round] + [r["b_joined_ms"] for r in per_round]
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": server_load.machine_info(),
        "rounds": per_round,
        "first_frame_ms": summary(frames),
        "joined_ms": summary(joins),
        "seconds": round(seconds, 1),
    }


def format_table(r: dict) -> str:
    m = r["machine"]
    out = [
        f"calls: stepping into range -> first remote video frame ({r['date']}, {m['nproc']} cores, {m['cpu_model']},"
        f" load at start {m['loadavg_at_start']})",
        "round  A: joined  A: frame  B: joined  B: frame   (ms)",
    ]
    for i, x in enumerate(r["rounds"], 1):
        out.append(f"{i:5d}  {x['a_joined_ms']:9d}  {x['a_ms']:8d}  {x['b_joined_ms']:9d}  {x['b_ms']:8d}")
    f, j = r["first_frame_ms"], r["joined_ms"]
    out.append(f"first frame: median {f['median']:.0f} ms, p90 {f['p90']:.0f} ms, max {f['max']:.0f} ms over {f['n']} frames")
    out.append(f"call.joined: median {j['median']:.0f} ms, max {j['max']:.0f} ms")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="walks into range (default 5)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds for the whole browser run")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    result = run(args.rounds, args.timeout)
    print(json.dumps(result, indent=1) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
