"""Attack probe: one address tries to take the server's player slots, its WebRTC offer table
and its chat (issue 8, findings 1, 4 and 8), with the per-address limits off and on.

Job: for each scenario, start ``python -m worldserver run`` on loopback twice (``ServerProcess``
of ``tools/server_process.py``: free ports, a temporary data directory, JSON logs, a stats
line every second): once with every ``[limits]`` setting off (the server as the attack found
it) and once with the defaults; both with ``limits.trusted_networks`` empty, so that the
attacker on 127.0.0.1 is an ordinary stranger, and the victims on 127.0.0.2 another address.

* ``udp``: ``--fakes`` (2,000) real cookie handshakes from 127.0.0.1 on as many source ports,
  started within about 1.6 s, each resending as the protocol says and, once in, keeping its
  slot with keep-alives; then a player from 127.0.0.2 connects. Reports how many fakes got in
  and how the others were refused, whether and how fast the player got in, and the server's
  tick time (stats lines) while the fakes sit idle. ``net.max_clients`` is ``--fakes``.
* ``rtc``: ``--offers`` (2,000) ``POST /.wrtc/v2/connections`` from 127.0.0.1, never answered,
  ``--concurrency`` at a time; during the flood a real WebRTC client (worldclient.rtc_client,
  aiortc) from 127.0.0.2 opens a data channel. Reports the answers by status, the server's
  open files (``/proc/<pid>/fd``) at the peak and afterwards, whether the real client's channel
  opened, and how long the flooding address then waits for an offer of its own.
* ``chat``: ``--identities`` (200) names, joined from addresses of their own, all chatting from
  127.0.0.1, each sending its burst of ``--burst`` (10) messages as fast as it can, while ten
  bystanders on addresses of their own send two messages a second each (their own rate): their
  acknowledgement times before and during the flood, and how many of the flood's messages
  were accepted.

Prints a table, or JSON with ``--json``; docs/reliability.md quotes the figures. Run from the
repository root: ``nice -n 19 .venv/bin/python tools/attack/admission.py`` (about 3 minutes).

Must not: reach any address but loopback, leave a process behind (each server is stopped in
``finally``), or wait without a deadline (every phase has one).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import socket
import statistics
import sys
import time

import httpx
import trio
from trio_websocket import wrap_client_stream

from protocol import PROTOCOL_VERSION
from protocol.client import ClientConnection
from protocol.events import Connected, Disconnected, Refused
from worldclient import aio_bridge
from worldserver.config import config_reference
from worldtools.bench.server_load import _proc_cpu_seconds, machine_info, pin_plan
from worldtools.server_process import START_TIMEOUT, ServerProcess

__all__ = ["main", "run_chat", "run_rtc", "run_udp"]

ATTACKER, VICTIM = "127.0.0.1", "127.0.0.2"
PHASE_DEADLINE = 120.0  # seconds any one scenario may take
START_SPREAD = 1.6  # seconds over which the fake handshakes start (the attack's figure)
LIMITS_OFF = [
    "limits.connections_per_address=0", "limits.handshakes_per_second=0",
    "limits.pending_offers=1000000", "limits.pending_offers_per_address=1000000",
    "limits.offer_timeout=15", "limits.joins_per_second=0", "limits.chat_messages_per_second=0",
    "limits.http_connections_per_address=0", "limits.http_connections=1000000",
]
VARIANTS = {"limits off": LIMITS_OFF, "defaults": []}
SERVER_PREFIX: list[str] = []  # taskset for the server with --pin (pin_plan)


def base_sets() -> list[str]:
    sets = ["limits.trusted_networks="]
    if any(s.key == "net.require_connect_token" for s in config_reference()):
        sets.append("net.require_connect_token=false")  # the anonymous attack of the issue
    return sets


def open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    at = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"n": len(values), "p50_ms": round(at(0.5) * 1000, 1), "p99_ms": round(at(0.99) * 1000, 1),
            "max_ms": round(ordered[-1] * 1000, 1)}


def each_variant(extra: list[str], probe, run) -> dict:
    """``probe(server)`` (a coroutine, under ``run``: trio.run or aio_bridge.run, within
    PHASE_DEADLINE) against a server of its own per variant (limits off, defaults), with
    ``extra`` settings; the server's limit drops at the end go with each result."""
    out = {}
    for name, sets in VARIANTS.items():
        server = ServerProcess(base_sets() + sets + extra, prefix=SERVER_PREFIX)
        try:
            server.wait_listening(START_TIMEOUT)
            out[name] = run(_deadline, probe(server))
            out[name]["drops"] = last_drops(server)
        finally:
            server.stop()
    return out


async def _deadline(coro):
    with trio.fail_after(PHASE_DEADLINE):
        return await coro


def last_drops(server: ServerProcess) -> dict:
    server.read()
    lines = server.stats_lines()
    drops = lines[-1].get("drops", {}) if lines else {}
    return {k: v for k, v in drops.items() if "limit" in k or "full" in k or "rtc" in k}


# ------------------------------------------------------------------------------ UDP slots


class Fake:
    """One fake player: a socket on its own port of ``source``, the real handshake, then
    keep-alives (the client connection's ``poll``) for as long as the probe runs."""

    def __init__(self, source: str, server: tuple) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((source, 0))
        self.sock.setblocking(False)
        self.server = server
        self.conn = ClientConnection(version=PROTOCOL_VERSION, nonce=random.getrandbits(64))
        self.outcome = "no answer"
        self.connected_after: float | None = None

    def send(self, packets) -> None:
        for data in packets:
            try:
                self.sock.sendto(data, self.server)
            except OSError:
                pass

    async def run(self, until: float) -> None:
        started = time.monotonic()
        self.send([self.conn.connect(started)])
        try:
            while time.monotonic() < until:
                with trio.move_on_after(0.25):  # the handshake's resend interval
                    await trio.lowlevel.wait_readable(self.sock)
                now = time.monotonic()
                while True:
                    try:
                        data = self.sock.recv(2048)
                    except BlockingIOError:
                        break
                    events, out = self.conn.receive_datagram(data, now)
                    self.send(out)
                    for event in events:
                        if isinstance(event, Connected):
                            self.outcome, self.connected_after = "connected", now - started
                        elif isinstance(event, Refused):
                            self.outcome = f"refused {event.reason}"
                        elif isinstance(event, Disconnected):
                            self.outcome = f"disconnected {event.reason}"
                if self.conn.state == "closed":
                    return
                events, out = self.conn.poll(now)  # handshake resends, keep-alives, timeouts
                self.send(out)
                for event in events:
                    if isinstance(event, Disconnected) and self.outcome != "connected":
                        self.outcome = f"gave up ({event.reason})"
        finally:
            if self.conn.state == "connected":
                self.send([self.conn.disconnect(time.monotonic())])
            self.sock.close()


async def _udp_probe(server: ServerProcess, fakes: int, hold: float) -> dict:
    addr = server.address
    end = time.monotonic() + START_SPREAD + 8.0 + hold
    crowd = [Fake(ATTACKER, addr) for _ in range(fakes)]
    result: dict = {}
    async with trio.open_nursery() as nursery:
        for i, fake in enumerate(crowd):  # evenly over START_SPREAD seconds
            nursery.start_soon(fake.run, end)
            if i % 50 == 49:
                await trio.sleep(START_SPREAD * 50 / fakes)
        await trio.sleep(8.0)  # handshakes done or given up (5 s) by now
        player = Fake(VICTIM, addr)
        nursery.start_soon(player.run, time.monotonic() + 6.0)
        with trio.move_on_after(6.0):
            while player.outcome == "no answer":
                await trio.sleep(0.02)
        result["player"] = player.outcome
        result["player_connect_ms"] = (None if player.connected_after is None
                                       else round(player.connected_after * 1000, 1))
        server.read()
        hold_from = len(server.stats_lines())
        await trio.sleep(max(0.0, end - time.monotonic() - 0.5))
        server.read()
        idle = server.stats_lines()[hold_from + 1:] or server.stats_lines()[-1:]
        result["tick_ms_p50"] = round(statistics.median(line.get("tick_ms_p50", 0) for line in idle), 2)
        result["tick_ms_p99"] = round(statistics.median(line.get("tick_ms_p99", 0) for line in idle), 2)
        result["clients"] = idle[-1].get("clients") if idle else None
    outcomes: dict = {}
    for fake in crowd:
        key = "connected" if fake.connected_after is not None else fake.outcome
        outcomes[key] = outcomes.get(key, 0) + 1
    result["fakes"] = dict(sorted(outcomes.items()))
    return result


def run_udp(fakes: int, hold: float) -> dict:
    return each_variant([f"net.max_clients={fakes}", f"sim.max_entities={max(4096, fakes + 8)}"],
                        lambda server: _udp_probe(server, fakes, hold), trio.run)


# ------------------------------------------------------------------------------ WebRTC offers


def http_from(source: str, base: str, timeout: float = 15.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, timeout=timeout,
                             transport=httpx.AsyncHTTPTransport(local_address=source))


async def _rtc_probe(server: ServerProcess, offers: int, concurrency: int) -> dict:
    from worldclient.rtc_client import open_geckos  # aiortc: only inside aio_bridge.run

    base, pid = server.http, server.pid
    statuses: dict = {}
    peak = [open_files(pid)]
    result: dict = {"open_files_before": peak[0]}
    sent = itertools.count()
    flood_done = trio.Event()

    async def flooder(http) -> None:
        while next(sent) < offers:
            try:
                status = (await http.post("/.wrtc/v2/connections")).status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            statuses[status] = statuses.get(status, 0) + 1

    async def sample() -> None:
        while not flood_done.is_set():
            peak.append(open_files(pid))
            await trio.sleep(0.1)

    async def real_client() -> None:
        await trio.sleep(1.0)  # in the middle of the flood
        started = time.monotonic()
        async with http_from(VICTIM, base) as http:
            try:
                channel = await open_geckos(base, host_addresses=["127.0.0.1"], timeout=10, http=http)
                result["real_client"] = "open"
                result["real_client_open_ms"] = round((time.monotonic() - started) * 1000, 1)
                await channel.close()
            except Exception as exc:  # noqa: BLE001 - the probe reports how it failed
                result["real_client"] = f"failed: {type(exc).__name__}: {str(exc)[:80]}"

    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        nursery.start_soon(real_client)
        async with http_from(ATTACKER, base) as http:
            async with trio.open_nursery() as flood:
                for _ in range(concurrency):
                    flood.start_soon(flooder, http)
        result["flood_seconds"] = round(time.monotonic() - started, 2)
        flood_done.set()
    result["answers"] = {str(k): v for k, v in sorted(statuses.items(), key=str)}
    result["open_files_peak"] = max(peak)
    result["open_files_after_flood"] = open_files(pid)
    # How long until the flooding address gets an offer again (before: ~15 s of 503s).
    waited = time.monotonic()
    async with http_from(ATTACKER, base) as http:
        while time.monotonic() - waited < 30.0:
            if (await http.post("/.wrtc/v2/connections")).status_code == 200:
                break
            await trio.sleep(0.25)
    result["attacker_next_offer_after_s"] = round(time.monotonic() - waited, 2)
    await trio.sleep(16.0)  # every unanswered offer is gone by now, in both variants
    result["open_files_later"] = open_files(pid)
    return result


def run_rtc(offers: int, concurrency: int) -> dict:
    return each_variant(["webrtc.host_addresses=127.0.0.1"],
                        lambda server: _rtc_probe(server, offers, concurrency), aio_bridge.run)


# ------------------------------------------------------------------------------ chat


class RawChat:
    """A chat socket from one source address (SPEC section 7 frames)."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def request(self, op: str, **fields) -> dict:
        rid = next(self.ids)
        await self.ws.send_message(json.dumps({"id": rid, "op": op, **fields}))
        while True:
            frame = json.loads(await self.ws.get_message())
            if frame.get("re") == rid:
                return frame


async def _open_ws(nursery, source: str, port: int):
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    return await wrap_client_stream(nursery, trio.SocketStream(sock), "127.0.0.1", "/ws/chat",
                                    max_message_size=4 * 1024 * 1024)


BYSTANDERS = 10  # victims, each on an address of its own, each sending 2 messages a second


async def _bystanders(port: int, victims: list, ready, stop, out) -> None:
    """In a process of its own (the flood's client work must not slow the measurement down):
    each victim sends a message every 0.5 s until ``stop``; puts (sent at, seconds to the
    acknowledgement, ok) samples on ``out``."""
    samples = []

    async def one(source: str, token: str, offset: float) -> None:
        async with trio.open_nursery() as nursery:
            chat = RawChat(await _open_ws(nursery, source, port))
            room = (await chat.request("hello", token=token))["public_room"]
            ready.release()
            await trio.sleep(offset)
            n = 0
            while not stop.is_set():
                n += 1
                t0 = time.monotonic()
                reply = await chat.request("msg.send", room=room, kind="text", text=f"hello {n}")
                samples.append((t0, time.monotonic() - t0, bool(reply.get("ok"))))
                await trio.sleep(0.5)
            nursery.cancel_scope.cancel()

    with trio.fail_after(PHASE_DEADLINE):
        async with trio.open_nursery() as nursery:
            for i, (source, token) in enumerate(victims):
                nursery.start_soon(one, source, token, i * 0.5 / len(victims))
    out.put(samples)


def _bystander_process(port: int, victims: list, ready, stop, out) -> None:
    trio.run(_bystanders, port, victims, ready, stop, out)


async def _chat_probe(server: ServerProcess, identities: int, burst: int) -> dict:
    import multiprocessing

    base = server.http
    port = int(base.rsplit(":", 1)[1])

    async def join(source: str, name: str) -> str:
        async with http_from(source, base) as http:
            answer = await http.post("/api/join", json={"name": name})
            answer.raise_for_status()
            return answer.json()["token"]

    tag = os.getpid() % 1000
    # The attacker's names, each joined from an address of its own (joins are limited too).
    tokens = [await join(f"127.0.{1 + i // 250}.{1 + i % 250}", f"n{tag}x{i}") for i in range(identities)]
    victims = [(f"127.0.200.{1 + i}", await join(f"127.0.200.{1 + i}", f"v{tag}x{i}")) for i in range(BYSTANDERS)]
    counts = {"accepted": 0, "refused": 0}
    ctx = multiprocessing.get_context("spawn")  # not fork: this process is inside trio.run
    ready, stop, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    helper = ctx.Process(target=_bystander_process, args=(port, victims, ready, stop, out), daemon=True)
    helper.start()
    try:
        async with trio.open_nursery() as nursery:
            flood_socks = []
            for token in tokens:
                chat = RawChat(await _open_ws(nursery, ATTACKER, port))
                hello = await chat.request("hello", token=token)
                assert hello["ok"], hello
                flood_socks.append(chat)
            room = hello["public_room"]
            for _ in victims:
                await trio.to_thread.run_sync(ready.acquire, True, PHASE_DEADLINE)
            await trio.sleep(3.0)  # the bystanders' baseline

            async def flood(chat: RawChat) -> None:
                for k in range(burst):
                    reply = await chat.request("msg.send", room=room, kind="text", text=f"spam {k}")
                    counts["accepted" if reply.get("ok") else "refused"] += 1

            cpu0 = _proc_cpu_seconds(server.pid)
            started = time.monotonic()
            async with trio.open_nursery() as floods:
                for chat in flood_socks:
                    floods.start_soon(flood, chat)
            ended = time.monotonic()
            cpu = _proc_cpu_seconds(server.pid) - cpu0
            await trio.sleep(1.0)
            stop.set()
            samples = await trio.to_thread.run_sync(out.get, True, PHASE_DEADLINE)
            nursery.cancel_scope.cancel()
    finally:
        stop.set()
        helper.join(10)
        if helper.is_alive():
            helper.kill()
    before = [lat for t0, lat, _ in samples if t0 < started]
    during = [lat for t0, lat, _ in samples if started <= t0 < ended]
    return {"flood_messages": counts, "flood_seconds": round(ended - started, 2),
            "server_cpu_during_flood_s": round(cpu, 2),
            "bystander_refused": sum(1 for *_, ok in samples if not ok),
            "bystander_ack_before": percentiles(before), "bystander_ack_during": percentiles(during)}


def run_chat(identities: int, burst: int) -> dict:
    return each_variant([f"chat.burst={burst}"], lambda server: _chat_probe(server, identities, burst), trio.run)


# ------------------------------------------------------------------------------ main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tools/attack/admission.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="udp,rtc,chat", help="scenarios, comma-separated")
    parser.add_argument("--fakes", type=int, default=2000, help="UDP handshakes from one address")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds the fakes sit idle, measured")
    parser.add_argument("--offers", type=int, default=2000, help="WebRTC offers from one address")
    parser.add_argument("--concurrency", type=int, default=32, help="offers in flight at once")
    parser.add_argument("--identities", type=int, default=200, help="chat names on one address")
    parser.add_argument("--burst", type=int, default=10, help="messages each name sends (chat.burst)")
    parser.add_argument("--pin", action="store_true",
                        help="server on CPU 0, the probe (attacker and victims) on CPU 1")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    prefix, probe_cpus, pin_note = pin_plan(args.pin)
    SERVER_PREFIX[:] = prefix
    if probe_cpus:
        os.sched_setaffinity(0, probe_cpus)  # the bystander process inherits it
    report: dict = {"machine": machine_info(), "pinning": pin_note, "defaults": {
        s.key: s.default for s in config_reference() if s.key.startswith("limits.")}}
    if "udp" in only:
        report["udp"] = run_udp(args.fakes, args.hold)
    if "rtc" in only:
        report["rtc"] = run_rtc(args.offers, args.concurrency)
    if "chat" in only:
        report["chat"] = run_chat(args.identities, args.burst)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for scenario in ("udp", "rtc", "chat"):
            for variant, figures in report.get(scenario, {}).items():
                print(f"{scenario:5} {variant:10} {json.dumps(figures)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
