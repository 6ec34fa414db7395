"""Chat delivery benchmark: 1,000 members in one room, 50 messages per second, delivery p99.

Job: start ``python -m worldserver run`` as a subprocess on 127.0.0.1 (fresh data directory,
WebRTC off), then run the chat swarm (:mod:`worldtools.chat_swarm`) against it: ``--members``
bots (default 1,000) join, each over its own real ``/ws/chat`` WebSocket (many connections per
worker process), all in the public room; ``--senders`` of them (default 50) send
``--rate / --senders`` messages per second each (default 50 msg/s in total) for
``--duration`` seconds. Reports the delivery latency p50/p99/max (receive time minus the
send time embedded in each message's client_id, over every member), deliveries lost, sockets
closed, send-to-acknowledgement latency, the server's CPU (percent of one core over the
window, from /proc/<pid>/stat) and the bots' CPU, plus the machine it ran on. Prints a table,
or JSON with ``--json``. ``--http URL [--server-pid PID]`` measures a server already running.

Must not: send traffic anywhere but loopback (or the given server), leave a server or worker
process behind (try/finally with bounded waits), or reach into the server other than through
its command line, its HTTP port, its log and /proc.

Run: ``python tools/bench/chat_delivery.py [--members 1000] [--rate 50] [--duration 20]``
(or ``python -m worldtools.bench.chat_delivery`` once the project is installed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

try:
    import worldtools  # noqa: F401  (installed)
except ImportError:  # run from a checkout: tools/bench is on sys.path
    import _checkout  # noqa: F401

from worldtools.server_process import ServerProcess  # noqa: E402

SERVER_START_TIMEOUT = 30.0


def _import_tools():
    """(worldtools.chat_swarm, worldtools.bench.server_load), installed or from this checkout."""
    from worldtools import chat_swarm
    from worldtools.bench import server_load
    return chat_swarm, server_load


def start_server(data_dir: str, extra: list[str]) -> ServerProcess:
    """The server (WebRTC off, its data and pictures under ``data_dir``, ``extra`` settings)
    once it listens; ServerStartError with its own error otherwise."""
    server = ServerProcess(
        ["webrtc.enabled=false", f"server.data_dir={data_dir}",
         f"http.images_dir={os.path.join(data_dir, 'images')}", *extra],
        defaults=(), stop_timeout=10.0, scratch="chat_delivery_",
    )  # fmt: skip
    try:
        server.wait_listening(SERVER_START_TIMEOUT)
    except BaseException:
        server.stop()
        raise
    return server


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="chat_delivery", description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0, help="messages per second in total")
    parser.add_argument("--senders", type=int, default=50)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--processes", type=int, default=2, help="bot worker processes")
    parser.add_argument("--connect-rate", type=float, default=250.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--no-prejoin", action="store_true",
                        help="do not make the members join a few at a time before connecting them all")
    parser.add_argument("--http", default=None, help="use this running server instead of starting one")
    parser.add_argument("--server-pid", type=int, default=None)
    parser.add_argument("--set", action="append", default=[], help="extra --set for the server")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    chat_swarm, server_load = _import_tools()
    facts = server_load.machine_info()
    server = None
    tmp = tempfile.TemporaryDirectory(prefix="chat-bench-")
    try:
        if args.http:
            url, pid = args.http, args.server_pid
        else:
            server = start_server(os.path.join(tmp.name, "data"), args.set)
            url, pid = server.http, server.pid
        say = None if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
        senders = min(args.senders, args.members)
        report = chat_swarm.run_chat_swarm(
            url, args.members, args.rate / senders, args.duration, senders=senders,
            processes=args.processes, connect_rate=args.connect_rate, settle=args.settle,
            server_pid=pid, prejoin=not args.no_prejoin, progress=say,
        )
    except chat_swarm.ChatRateAboveLimit as exc:
        print(f"chat_delivery: --rate / --senders: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # the server did not start (its own error is in the message)
        print(f"chat_delivery: {exc}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.stop()
        tmp.cleanup()
    report["machine"] = facts
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print(chat_swarm.format_report(report))
        print(f"machine: {facts['cpu_model']} x{facts['nproc']}, python {facts['python']}, "
              f"load before {facts['loadavg_at_start']}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
