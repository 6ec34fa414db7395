"""The aiortc floor: what serving N WebRTC data channels costs with nothing else to do.

Job: a pure-asyncio aiortc server (no worldserver, no trio) that accepts peers through a
minimal geckos.io 3.x signaling (``POST /.wrtc/v2/connections`` with the offer and every
candidate in it, ``POST .../{id}/remote-description``, ``GET .../{id}/additional-candidates``
answering ``[]``, ``POST .../{id}/close``) on a tiny HTTP/1.1 endpoint, answers the native
protocol's trusted HELLO with an ACCEPT, and then sends every peer one snapshot-sized message
at 20 Hz on drift-free deadlines, skipping a peer whose channel still buffers (as worldserver
does). The message is at most ``--size`` bytes (default 200; 188 in fact, as entities come in
13-byte steps): a 13-byte header and a valid full snapshot of static entities, so bots can
decode it. It reads the bots' inputs and does nothing with them. Whatever CPU
this process uses is the price of aiortc itself; worldserver's CPU over this floor is the
price of everything worldserver adds.

Two ways to run it:

* ``python tools/bench/aiortc_floor.py --serve [--port 0]``: the server alone. Logs one JSON
  line ``{"msg": "http listening", "http": "127.0.0.1:PORT"}`` on stderr, then a stats line a
  second (peers, messages sent, skips, tick lateness p50/p99, own CPU). Stops on SIGTERM or
  SIGINT, or after ``--max-seconds``. ``tools/bench/webrtc_load.py`` starts it this way.
* ``python tools/bench/aiortc_floor.py [--bots 400] [--duration 40] [--json]``: the floor
  measurement: that server plus the WebRTC bot swarm (``worldtools.swarm.channels``) against it;
  the same as ``webrtc_load.py --only floor``.

Must not: listen anywhere but loopback (ICE host candidates are 127.0.0.1 only), run
unbounded (``--max-seconds``), or import worldserver: it is the baseline worldserver is
compared against.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import pathlib
import secrets
import signal
import string
import sys
import time
from datetime import datetime, timezone

import aioice.ice
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

ROOT = pathlib.Path(__file__).resolve().parents[2]
for _extra in (str(ROOT), str(ROOT / "clients" / "python")):
    if _extra not in sys.path:
        sys.path.append(_extra)

from protocol import packets as P  # noqa: E402
from protocol.messages import Welcome  # noqa: E402
from protocol.quantize import Quantizer  # noqa: E402
from protocol.snapshot import encode_snapshot  # noqa: E402

PREFIX = "/.wrtc/v2"
LABEL = "geckos.io"
ID_ALPHABET = string.ascii_letters + string.digits
HOST = "127.0.0.1"
MAX_BODY = 64 * 1024
MAX_HEADER_LINES = 64
HTTP_IDLE = 30.0  # seconds a keep-alive connection may sit idle
OPEN_TIMEOUT = 20.0  # an offered peer whose channel is not open by then is closed
CLOSE_WAIT = 5.0
SIGNAL_WAIT = 10.0
MINS, MAXS, STEP = (-110.0, -10.0, -110.0), (110.0, 50.0, 110.0), 0.01
# gc as worldserver's defaults do it ([gc]: these thresholds, gc.freeze() after start-up), so
# that both run under the same collector.
GC_THRESHOLDS = (50000, 50, 1000)

_HEADER = P.HEADER
_CORS = (
    "Access-Control-Allow-Origin: *\r\n"
    "Access-Control-Request-Method: *\r\n"
    "Access-Control-Request-Headers: X-Requested-With, accept, content-type\r\n"
    "Access-Control-Allow-Methods: OPTIONS, GET, POST\r\n"
    "Access-Control-Allow-Headers: authorization, content-type\r\n"
)


def _log(msg: str, **fields) -> None:
    now = datetime.now(timezone.utc)
    ts = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    print(json.dumps({"ts": ts, "msg": msg, **fields}), file=sys.stderr, flush=True)


def _only_loopback_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """aioice leaves 127.0.0.1 out of its host candidates; the floor offers only it."""
    return [HOST] if use_ipv4 else []


FIRST_TICK = 2**31  # ticks of the floor's snapshots: always a 5-byte msgpack integer
_INT_CHOICES = (0,)  # the part header is fixed-width: the entity count alone sets the size


def snapshot_message(size: int) -> tuple[np.ndarray, np.ndarray, int, int, Quantizer]:
    """Static entities and a ``self_id`` whose full snapshot packet (header included) is as
    close to ``size`` bytes as possible without exceeding it (within a few bytes); returns
    (ids, q, input_ack, self_id, quantizer). The entity count sets the size in steps of 13
    bytes (one added record each); ``input_ack`` is 0."""
    quantizer = Quantizer(mins=MINS, maxs=MAXS, step=STEP)
    best = None
    for n in range(0, 200):
        ids = np.arange(1, n + 1, dtype=np.uint32)
        q = np.zeros((n, 5), dtype=np.int32)
        q[:, 0] = 11000 + 37 * np.arange(n)
        q[:, 2] = 11000 + 53 * np.arange(n)
        q[:, 3] = 4096 * np.arange(n) % 65536
        q[:, 4] = 1
        smallest = None
        for ack in (0,):
            for self_id in _INT_CHOICES:
                payload = encode_snapshot(
                    tick=FIRST_TICK, baseline=None, cand_ids=ids, cand_q=q, part_budget=60000,
                    input_ack=ack, self_id=self_id, layout=quantizer,
                ).parts[0]  # fmt: skip
                total = P.HEADER_SIZE + len(payload)
                smallest = total if smallest is None else min(smallest, total)
                if total <= size and (best is None or total > best[0]):
                    best = (total, ids, q, ack, self_id)
        if smallest > size:
            break
    if best is None:
        raise ValueError(f"no snapshot fits in {size} bytes")
    return best[1], best[2], best[3], best[4], quantizer


class Peer:
    __slots__ = ("id", "pc", "channel", "created", "opened", "closed", "salt", "seq",
                 "remote_seq", "accepted", "inputs", "entity_id")  # fmt: skip

    def __init__(self, peer_id: str, pc: RTCPeerConnection, channel, now: float, entity_id: int) -> None:
        self.id = peer_id
        self.pc = pc
        self.channel = channel
        self.created = now
        self.opened = False
        self.closed = False
        self.salt = 0
        self.seq = 0
        self.remote_seq = 0
        self.accepted = False
        self.inputs = 0
        self.entity_id = entity_id


class FloorServer:
    """The floor: signaling, peers, and a fixed-rate send of one message per peer."""

    def __init__(self, *, size: int = 200, rate: int = 20) -> None:
        self.rate = rate
        self.interval = 1.0 / rate
        self.ids, self.q, self.input_ack, self.self_id, self.quantizer = snapshot_message(size)
        self.entities = len(self.ids)
        self.peers: dict[str, Peer] = {}
        self.live: list[Peer] = []
        self.tick = FIRST_TICK
        self.next_entity = 1000
        self.counters: dict[str, int] = {}
        self.lateness: list[float] = []
        self.tick_ms: list[float] = []
        self.sent = 0
        self.bytes_out = 0
        self.bytes_in = 0
        self.server: asyncio.base_events.Server | None = None
        self.tasks: set[asyncio.Task] = set()
        self.message_size = 0

    def incr(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    # -- HTTP ---------------------------------------------------------------------------------
    async def start(self, host: str, port: int) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._http_conn, host, port)
        return self.server.sockets[0].getsockname()[:2]

    async def _http_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await asyncio.wait_for(reader.readline(), HTTP_IDLE)
                if not line:
                    break
                parts = line.decode("latin-1").split()
                if len(parts) != 3:
                    break
                method, path = parts[0].upper(), parts[1].split("?", 1)[0]
                headers: dict[str, str] = {}
                for _ in range(MAX_HEADER_LINES):
                    h = await asyncio.wait_for(reader.readline(), HTTP_IDLE)
                    if h in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = h.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                if length > MAX_BODY:
                    break
                body = await asyncio.wait_for(reader.readexactly(length), HTTP_IDLE) if length else b""
                status, payload = await self._route(method, path, body)
                if isinstance(payload, (dict, list)):
                    data, ctype = json.dumps(payload).encode(), "application/json"
                else:
                    data, ctype = str(payload).encode(), "text/plain"
                keep = headers.get("connection", "").lower() != "close"
                writer.write(
                    (f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
                     f"Content-Type: {ctype}\r\nContent-Length: {len(data)}\r\n{_CORS}"
                     f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n").encode() + data
                )  # fmt: skip
                await writer.drain()
                if not keep:
                    break
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def _route(self, method: str, path: str, body: bytes):
        if method == "OPTIONS":
            return 200, "200: OK"
        if not path.startswith(PREFIX):
            return 404, "404: Not Found"
        rest = path[len(PREFIX):].strip("/").split("/")
        if method == "POST" and rest == ["connections"]:
            return await self.create_connection()
        if len(rest) != 3 or rest[0] != "connections":
            return 404, "404: Not Found"
        peer = self.peers.get(rest[1])
        if method == "POST" and rest[2] == "close":
            if peer is not None:
                self.close_peer(peer, "client_close")
            return 200, "200: OK"
        if peer is None:
            return 404, "404: Not Found"
        if method == "GET" and rest[2] == "additional-candidates":
            return 200, []
        if method == "POST" and rest[2] == "remote-description":
            try:
                answer = json.loads(body)
                desc = RTCSessionDescription(sdp=answer["sdp"], type=answer["type"])
                await asyncio.wait_for(peer.pc.setRemoteDescription(desc), SIGNAL_WAIT)
            except Exception:
                self.incr("bad_answer")
                return 400, "400: Bad Request"
            return 200, "200: OK"
        return 404, "404: Not Found"

    # -- peers --------------------------------------------------------------------------------
    async def create_connection(self):
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        channel = pc.createDataChannel(LABEL, ordered=False, maxRetransmits=0)
        peer_id = "".join(secrets.choice(ID_ALPHABET) for _ in range(24))
        self.next_entity += 1
        peer = Peer(peer_id, pc, channel, time.monotonic(), self.next_entity)
        channel.on("open", lambda: self._opened(peer))
        channel.on("message", lambda m: self._message(peer, m))
        channel.on("close", lambda: self.close_peer(peer, "channel_closed"))

        @pc.on("connectionstatechange")
        def _state() -> None:
            if pc.connectionState in ("failed", "closed", "disconnected"):
                self.close_peer(peer, pc.connectionState)

        try:
            await asyncio.wait_for(pc.setLocalDescription(await pc.createOffer()), SIGNAL_WAIT)
        except Exception:
            self.incr("offer_error")
            self._spawn(self._close_pc(pc))
            return 500, "500: Internal Server Error"
        self.peers[peer_id] = peer
        self.incr("offers")
        desc = pc.localDescription
        return 200, {"userData": {}, "id": peer_id, "localDescription": {"sdp": desc.sdp, "type": "offer"}}

    def _opened(self, peer: Peer) -> None:
        if not peer.closed and not peer.opened:
            peer.opened = True
            self.incr("opened")

    def _message(self, peer: Peer, message) -> None:
        if not isinstance(message, bytes) or not message:
            self.incr("drop.text")
            return
        self.bytes_in += len(message)
        kind = message[0]
        if kind == P.HELLO:
            try:
                version, nonce, _token = P.decode_hello(message)
            except Exception:
                self.incr("drop.bad_hello")
                return
            if not peer.accepted:
                peer.accepted = True
                peer.salt = secrets.randbits(32) or 1
                self.live.append(peer)
            welcome = Welcome(
                entity_id=peer.entity_id, tick_rate=self.rate, tick=self.tick, mins=MINS,
                maxs=MAXS, position_step=STEP, max_speed=5.0, interest_radius=50.0,
            )  # fmt: skip
            self._send(peer, P.encode_accept(nonce, peer.salt, welcome.encode()))
            return
        if len(message) < P.HEADER_SIZE or not peer.accepted:
            self.incr("drop.unexpected")
            return
        ptype, salt, seq, _ack, _bits = _HEADER.unpack_from(message)
        if salt != peer.salt:
            self.incr("drop.bad_salt")
            return
        peer.remote_seq = seq
        if ptype == P.INPUT:
            peer.inputs += 1
        elif ptype == P.DISCONNECT:
            self.close_peer(peer, "client_left")

    def _send(self, peer: Peer, data: bytes) -> bool:
        try:
            peer.channel.send(data)
        except Exception:
            self.incr("drop.send_error")
            return False
        return True

    def close_peer(self, peer: Peer, reason: str) -> None:
        if peer.closed:
            return
        peer.closed = True
        self.incr(f"closed.{reason}")
        if self.peers.get(peer.id) is peer:
            del self.peers[peer.id]
        if peer.accepted:
            try:
                self.live.remove(peer)
            except ValueError:
                pass
        self._spawn(self._close_pc(peer.pc))

    async def _close_pc(self, pc: RTCPeerConnection) -> None:
        try:
            await asyncio.wait_for(pc.close(), CLOSE_WAIT)
        except Exception:
            self.incr("close_error")

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- the fixed-rate send ------------------------------------------------------------------
    async def tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.interval
        header = _HEADER.pack
        snapshot_type = P.SNAPSHOT
        while True:
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            now = loop.time()
            self.lateness.append(max(0.0, now - deadline))
            started = time.perf_counter()
            self.tick += 1
            payload = encode_snapshot(
                tick=self.tick, baseline=None, cand_ids=self.ids, cand_q=self.q, part_budget=60000,
                input_ack=self.input_ack, self_id=self.self_id, layout=self.quantizer,
            ).parts[0]  # fmt: skip
            skipped = 0
            for peer in self.live:
                channel = peer.channel
                if channel.bufferedAmount > 0:
                    skipped += 1
                    continue
                seq = peer.seq
                peer.seq = (seq + 1) & 0xFFFF
                data = header(snapshot_type, peer.salt, seq, peer.remote_seq, 0xFFFFFFFF) + payload
                try:
                    channel.send(data)
                except Exception:
                    self.incr("drop.send_error")
                    continue
                self.sent += 1
                self.bytes_out += len(data)
                self.message_size = len(data)
            if skipped:
                self.incr("drop.rtc.snapshot_backlog", skipped)
            self.tick_ms.append(time.perf_counter() - started)
            deadline += self.interval
            if deadline < loop.time() - self.interval:  # more than a tick behind: skip ahead
                self.incr("ticks_skipped")
                deadline = loop.time() + self.interval

    async def reap_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            limit = time.monotonic() - OPEN_TIMEOUT
            for peer in [p for p in self.peers.values() if not p.opened and p.created < limit]:
                self.close_peer(peer, "open_timeout")

    async def stats_loop(self, interval: float) -> None:
        last = (time.monotonic(), time.process_time(), 0, 0, 0)
        while True:
            await asyncio.sleep(interval)
            now, cpu = time.monotonic(), time.process_time()
            dt = max(1e-9, now - last[0])
            late = np.asarray(self.lateness or [0.0]) * 1000.0
            tick = np.asarray(self.tick_ms or [0.0]) * 1000.0
            _log(
                "stats", clients=len(self.live), peers=len(self.peers),
                cpu_percent=round(100.0 * (cpu - last[1]) / dt, 1),
                sent_s=round((self.sent - last[2]) / dt),
                bytes_out_s=round((self.bytes_out - last[3]) / dt),
                bytes_in_s=round((self.bytes_in - last[4]) / dt),
                late_ms_p50=round(float(np.percentile(late, 50)), 2),
                late_ms_p99=round(float(np.percentile(late, 99)), 2),
                tick_ms_p50=round(float(np.percentile(tick, 50)), 2),
                tick_ms_p99=round(float(np.percentile(tick, 99)), 2),
                message_bytes=self.message_size,
                drops={k: v for k, v in self.counters.items() if k.startswith("drop.")},
                counters={k: v for k, v in self.counters.items() if not k.startswith("drop.")},
            )  # fmt: skip
            last = (now, cpu, self.sent, self.bytes_out, self.bytes_in)
            self.lateness.clear()
            self.tick_ms.clear()

    async def aclose(self) -> None:
        if self.server is not None:
            self.server.close()
        peers = list(self.peers.values()) + [p for p in self.live if p.id not in self.peers]
        for peer in peers:
            self.close_peer(peer, "server_shutdown")
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=CLOSE_WAIT)


async def serve(args: argparse.Namespace) -> None:
    aioice.ice.get_host_addresses = _only_loopback_host_addresses
    floor = FloorServer(size=args.size, rate=args.rate)
    host, port = await floor.start(args.host, args.port)
    if not args.no_gc_tuning:  # as worldserver: raised thresholds, freeze after start-up
        gc.set_threshold(*GC_THRESHOLDS)
        gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    _log("http listening", http=f"{host}:{port}", message_entities=floor.entities, pid=os.getpid())
    tasks = [
        asyncio.ensure_future(floor.tick_loop()),
        asyncio.ensure_future(floor.reap_loop()),
        asyncio.ensure_future(floor.stats_loop(args.stats_interval)),
    ]
    try:
        await asyncio.wait_for(stop.wait(), args.max_seconds)
    except asyncio.TimeoutError:
        _log("max seconds reached", seconds=args.max_seconds)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await floor.aclose()
        _log("stopped", counters=floor.counters)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="aiortc_floor",
        description="The aiortc floor: a pure-asyncio WebRTC server sending 200 B at 20 Hz "
        "to every peer (--serve), or the floor measurement with the WebRTC swarm.",
    )
    parser.add_argument("--serve", action="store_true", help="run only the floor server")
    parser.add_argument("--host", default=HOST, help="HTTP address (loopback)")
    parser.add_argument("--port", type=int, default=0, help="HTTP port (0: any free port)")
    parser.add_argument("--size", type=int, default=200, help="bytes per message (default 200)")
    parser.add_argument("--rate", type=int, default=20, help="messages per peer per second")
    parser.add_argument("--stats-interval", type=float, default=1.0)
    parser.add_argument("--max-seconds", type=float, default=900.0,
                        help="the server stops by itself after this long (default 900)")
    parser.add_argument("--no-gc-tuning", action="store_true",
                        help="keep Python's gc defaults (default: worldserver's [gc] defaults)")
    args, rest = parser.parse_known_args(argv)
    args.rest = rest
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.serve:
        if args.rest:
            print(f"aiortc_floor: unknown arguments {args.rest}", file=sys.stderr)
            return 2
        if not args.host.startswith("127.") and args.host != "::1":
            print("aiortc_floor: --host must be a loopback address", file=sys.stderr)
            return 2
        asyncio.run(serve(args))
        return 0
    # The measurement: the same code as webrtc_load.py --only floor.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    try:
        from worldtools.bench import webrtc_load
    except ImportError:
        import webrtc_load  # type: ignore[no-redef]
    return webrtc_load.main(["--only", "floor", *args.rest])


if __name__ == "__main__":
    sys.exit(main())
