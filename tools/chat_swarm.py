"""Chat bot swarm: many chat users on the real ``/ws/chat`` WebSocket, and what they measure.

Job: each bot joins (``POST /api/join``), opens its own WebSocket to ``/ws/chat`` and says
``hello``; everyone is in the public room. Sending bots post ``chat_rate`` messages per second
each (at random phases) into the public room, with the run's tag, the sender, its message
number and the send time embedded in the message's ``client_id``; every bot that receives a
``message`` event records the delivery latency (receive time minus send time) and which
message it got, in a bitmap per sender. Losses are counted per message: every message
acknowledged to its sender must reach every other member (the bots ready when the window
opened) once; the report gives the deliveries missing and the duplicate deliveries
separately, the acknowledged messages that missed anyone, and deliveries of messages never
acknowledged. After the window the bots read for ``DRAIN_S`` seconds; acknowledgements and
refusals that arrive later are still waited for (at most ``ANSWER_WAIT`` seconds) and
reported as late, sends never answered as unanswered. The report also gives delivery latency
p50/p99/max, sends acknowledged or refused, sockets closed by the server (with their close
codes), the time to connect everybody, and CPU of the bots (and of the server when its pid is
known). A ``chat_rate`` above the server's per-user limit (``chat.rate``, which the ``hello``
reply names) is refused before anything starts (:class:`ChatRateAboveLimit`). ``run_chat_swarm(...)`` is the entry for tools and benchmarks
(``tools/bench/chat_delivery.py``); ``python -m worldtools.chat_swarm --http URL`` is the CLI;
``--udp HOST:PORT`` runs the movement swarm (``worldtools.swarm``) beside it for the same
duration and puts its report under ``movement``.

Efficiency: many connections per process and no task per bot: plain non-blocking sockets in
one ``select.epoll`` loop per worker process, a minimal WebSocket client (RFC 6455 handshake,
masked client frames, unmasked server frames) and no JSON decoding of events beyond finding
the ``client_id``. Latencies go into a fixed histogram (0.1 ms bins), so memory does not grow
with the run.

Must not: import server internals, connect anywhere but the given server, or run unbounded:
connection set-up, the measured window and the drain after it all have deadlines; worker
processes are killed if they do not finish in time.
"""

from __future__ import annotations

import base64
import http.client
import json
import multiprocessing
import multiprocessing.connection
import os
import random
import resource
import select
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

import numpy as np

__all__ = ["ChatRateAboveLimit", "format_report", "make_report", "probe_server", "run_chat_swarm",
           "run_with_movement"]

HIST_BIN_MS = 0.1
HIST_MAX_MS = 10_000.0
HIST_BINS = int(HIST_MAX_MS / HIST_BIN_MS) + 1  # the last bin holds everything slower
PING_INTERVAL = 20.0  # WebSocket pings keep idle sockets open (hypercorn's read timeout)
CONNECT_TIMEOUT = 30.0
DRAIN_S = 3.0  # seconds after the window for late deliveries
ANSWER_WAIT = 30.0  # seconds after the drain to wait for the answers to every send
MOVEMENT_READY_WAIT = 120.0  # seconds to wait for the movement swarm's set-up (run_with_movement)
MAX_BUFFER = 8 * 1024 * 1024
_CID_KEY = b'"client_id":"cs-'

# Connection states
TCP, UPGRADE, HELLO, READY, CLOSED = range(5)


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame (RFC 6455 section 5.2)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    if n:
        key = (mask * (n // 4 + 1))[:n]
        payload = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + mask + payload


class Bot:
    __slots__ = ("index", "name", "token", "sock", "state", "buf", "out", "sender", "next_send",
                 "seq", "received", "own_acked", "close_code", "pending_sends", "last_ping", "got")

    def __init__(self, index: int, name: str, token: str, sender: bool) -> None:
        self.index = index
        self.name = name
        self.token = token
        self.sock: socket.socket | None = None
        self.state = TCP
        self.buf = bytearray()
        self.out = bytearray()
        self.sender = sender
        self.next_send = 0.0
        self.seq = 0
        self.received = 0  # deliveries of messages sent inside the window
        self.own_acked = 0  # own messages acknowledged, sent inside the window
        self.close_code: int | None = None
        self.pending_sends: dict[int, float] = {}  # request id -> send time
        self.last_ping = 0.0
        # A member's (ready when the window opened) messages received: per sender slot a
        # bitmap over message numbers 1..max_seq (see ChatBots). None: not a member.
        self.got: bytearray | None = None


class ChatBots:
    """One process's bots: connect, hello, send, receive and measure (see the module doc).

    Message identity: a bot's messages are numbered 1, 2, ... (``seq``) and the ``client_id``
    says ``cs-<tag>-<sender>-<seq>-<send time>``. ``senders`` (the sending bots of the whole
    run, all processes) get slots in their sorted order; a member's ``got`` holds one bit per
    (slot, seq), ``nbytes`` bytes per slot, for ``seq`` up to ``max_seq`` (a sender sends no
    more than that).
    """

    def __init__(self, host: str, port: int, bots: list[Bot], rate: float, seed: int | None, *,
                 tag: str = "", senders=(), max_seq: int = 0) -> None:
        self.host, self.port = host, port
        self.bots = bots
        self.rate = rate
        self.tag = tag.encode()
        self.slot_of = {index: slot for slot, index in enumerate(sorted(senders))}
        self.max_seq = int(max_seq)
        self.nbytes = self.max_seq // 8 + 1
        self.duplicates = 0  # deliveries of a message the member had already received
        self.outside = 0  # deliveries of messages not sent in this run's window
        self.acked_ids: list[tuple[int, int]] = []  # (sender, seq) of every acknowledged send
        self.drained = False  # the drain after the window is over: answers now are late
        self.acked_late = 0
        self.refused_late: dict[str, int] = {}
        self.rng = random.Random(seed)
        self.epoll = select.epoll()
        self.by_fd: dict[int, Bot] = {}
        self.hist = np.zeros(HIST_BINS, dtype=np.int64)
        self.ack_hist = np.zeros(HIST_BINS, dtype=np.int64)
        self.window = (float("inf"), float("inf"))  # wall-clock send times that count
        self.sent = 0
        self.acked_in_window = 0
        self.refused: dict[str, int] = {}
        self.closes: dict[str, int] = {}
        self.frames = 0
        self.bytes_in = 0
        self.max_latency_ms = 0.0
        self.acked = 0  # every acknowledged send, in the window or not (progress reports)
        self.ack_max_ms = 0.0  # the slowest acknowledgement since the last progress report

    # -- sockets ---------------------------------------------------------------------------

    def start_connect(self, bot: Bot) -> None:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.connect((self.host, self.port))
        except BlockingIOError:
            pass
        bot.sock = sock
        bot.state = TCP
        self.by_fd[sock.fileno()] = bot
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /ws/chat HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        bot.out += request.encode()
        self.epoll.register(sock.fileno(), select.EPOLLIN | select.EPOLLOUT)

    def _close(self, bot: Bot, reason: str) -> None:
        if bot.state == CLOSED:
            return
        bot.state = CLOSED
        self.closes[reason] = self.closes.get(reason, 0) + 1
        if bot.sock is not None:
            fd = bot.sock.fileno()
            self.by_fd.pop(fd, None)
            try:
                self.epoll.unregister(fd)
            except (OSError, ValueError):
                pass
            bot.sock.close()

    def _queue(self, bot: Bot, data: bytes) -> None:
        if bot.state == CLOSED:
            return
        bot.out += data
        self._flush(bot)

    def _flush(self, bot: Bot) -> None:
        while bot.out:
            try:
                sent = bot.sock.send(bot.out)
            except BlockingIOError:
                break
            except OSError as exc:
                self._close(bot, f"send error {exc.errno}")
                return
            del bot.out[:sent]
        try:
            mask = select.EPOLLIN | (select.EPOLLOUT if bot.out else 0)
            self.epoll.modify(bot.sock.fileno(), mask)
        except (OSError, ValueError):
            pass

    def send_text(self, bot: Bot, obj: dict) -> None:
        self._queue(bot, client_frame(0x1, json.dumps(obj, separators=(",", ":")).encode()))

    # -- the loop --------------------------------------------------------------------------

    def poll(self, timeout: float) -> None:
        for fd, mask in self.epoll.poll(timeout, 4096):
            bot = self.by_fd.get(fd)
            if bot is None:
                continue
            if mask & select.EPOLLOUT:
                self._flush(bot)
            if mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                self._read(bot)

    def _read(self, bot: Bot) -> None:
        for _ in range(8):
            try:
                data = bot.sock.recv(262144)
            except BlockingIOError:
                return
            except OSError as exc:
                self._close(bot, f"recv error {exc.errno}")
                return
            if not data:
                self._close(bot, "eof" if bot.close_code is None else f"close {bot.close_code}")
                return
            self.bytes_in += len(data)
            bot.buf += data
            if len(bot.buf) > MAX_BUFFER:
                self._close(bot, "buffer overflow")
                return
            if bot.state == UPGRADE or bot.state == TCP:
                end = bot.buf.find(b"\r\n\r\n")
                if end < 0:
                    continue
                head = bytes(bot.buf[:end])
                del bot.buf[: end + 4]
                if b" 101 " not in head.split(b"\r\n", 1)[0]:
                    self._close(bot, "upgrade refused")
                    return
                bot.state = HELLO
                self.send_text(bot, {"id": 1, "op": "hello", "token": bot.token})
            self._frames(bot)
            if bot.state == CLOSED:
                return

    def _frames(self, bot: Bot) -> None:
        buf = bot.buf
        pos = 0
        size = len(buf)
        now = time.time()
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            head = 2
            if n == 126:
                if size - pos < 4:
                    break
                n = int.from_bytes(buf[pos + 2: pos + 4], "big")
                head = 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2: pos + 10], "big")
                head = 10
            if size - pos < head + n:
                break
            payload = bytes(buf[pos + head: pos + head + n])
            pos += head + n
            opcode = b0 & 0x0F
            if opcode == 0x1:
                self._text(bot, payload, now)
            elif opcode == 0x8:
                bot.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                reason = payload[2:].decode("utf-8", "replace")
                self._queue(bot, client_frame(0x8, payload[:2]))
                self._close(bot, f"close {bot.close_code} {reason}".strip())
                break
            elif opcode == 0x9:
                self._queue(bot, client_frame(0xA, payload))
        del buf[:pos]

    def _text(self, bot: Bot, payload: bytes, now: float) -> None:
        self.frames += 1
        if payload.startswith(b'{"ev":"message"'):
            at = payload.find(_CID_KEY)
            if at < 0:
                return
            start = at + len(_CID_KEY)
            end = payload.find(b'"', start)
            try:
                tag, sender, seq, stamp = payload[start:end].split(b"-")
                sender, seq, sent = int(sender), int(seq), float(stamp)
            except ValueError:
                return
            if tag != self.tag or not self.window[0] <= sent < self.window[1]:
                self.outside += 1
                return
            latency = (now - sent) * 1000.0
            self.hist[min(HIST_BINS - 1, max(0, int(latency / HIST_BIN_MS)))] += 1
            if latency > self.max_latency_ms:
                self.max_latency_ms = latency
            bot.received += 1
            slot = self.slot_of.get(sender)
            if bot.got is not None and slot is not None and 0 < seq <= self.max_seq:
                at, bit = slot * self.nbytes + (seq >> 3), 1 << (seq & 7)
                if bot.got[at] & bit:
                    self.duplicates += 1
                else:
                    bot.got[at] |= bit
            return
        if payload.startswith(b'{"re":'):
            reply = json.loads(payload)
            request_id = reply.get("re")
            if request_id == 1 and bot.state == HELLO:
                if reply.get("ok"):
                    bot.state = READY
                else:
                    self._close(bot, f"hello refused: {reply.get('error', {}).get('code')}")
                return
            sent = bot.pending_sends.pop(request_id, None)
            if sent is None:
                return
            if reply.get("ok"):
                if self.window[0] <= sent < self.window[1]:
                    self.acked_in_window += 1
                    bot.own_acked += 1
                    self.acked_ids.append((bot.index, request_id - 1))  # request id = seq + 1
                latency = (now - sent) * 1000.0
                self.acked += 1
                if self.drained:
                    self.acked_late += 1
                self.ack_max_ms = max(self.ack_max_ms, latency)
                self.ack_hist[min(HIST_BINS - 1, max(0, int(latency / HIST_BIN_MS)))] += 1
            else:
                code = str(reply.get("error", {}).get("code", "?"))
                self.refused[code] = self.refused.get(code, 0) + 1
                if self.drained:
                    self.refused_late[code] = self.refused_late.get(code, 0) + 1

    def send_due(self, now: float, public_room: int | None) -> None:
        for bot in self.bots:
            if bot.state != READY:
                continue
            if now - bot.last_ping >= PING_INTERVAL:
                bot.last_ping = now
                self._queue(bot, client_frame(0x9, b"p"))
            if not bot.sender or now < bot.next_send or public_room is None or bot.seq >= self.max_seq:
                continue
            bot.next_send = max(bot.next_send + 1.0 / self.rate, now - 1.0 / self.rate)
            bot.seq += 1
            request_id = bot.seq + 1
            stamp = time.time()
            bot.pending_sends[request_id] = stamp
            self.sent += 1
            self.send_text(bot, {
                "id": request_id, "op": "msg.send", "room": public_room, "kind": "text",
                "text": f"bot {bot.index} says hello #{bot.seq}",
                "client_id": f"cs-{self.tag.decode()}-{bot.index}-{bot.seq}-{stamp:.6f}",
            })

    def open_window(self, start_at: float, end_at: float) -> None:
        """The measured window: sends from ``start_at`` to ``end_at`` (wall clock); the bots
        ready now are its members (each gets its bitmap of messages received)."""
        self.window = (start_at, end_at)
        for bot in self.bots:
            if bot.state == READY:
                bot.got = bytearray(len(self.slot_of) * self.nbytes)

    def pending(self) -> int:
        """Sends not answered yet."""
        return sum(len(b.pending_sends) for b in self.bots)

    def counts(self) -> dict:
        states = [b.state for b in self.bots]
        return {"ready": states.count(READY), "closed": states.count(CLOSED), "bots": len(self.bots)}

    def progress_counts(self) -> dict:
        """Totals so far (sent, acknowledged, refused, delivered, sockets ready and closed)
        and the slowest acknowledgement since the previous call."""
        counts = dict(self.counts(), sent=self.sent, acked=self.acked, refused=sum(self.refused.values()),
                      received=sum(b.received for b in self.bots), ack_max_ms=round(self.ack_max_ms, 2))
        self.ack_max_ms = 0.0
        return counts


# ----------------------------------------------------------------------------- workers


def _join_all(base: str, names: list[str], timeout: float) -> list[str]:
    parts = urlsplit(base)
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(parts.hostname, parts.port, timeout=timeout)
    tokens = []
    try:
        for name in names:
            conn.request("POST", "/api/join", body=json.dumps({"name": name}),
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"join {name!r}: HTTP {response.status} {body[:200]!r}")
            tokens.append(json.loads(body)["token"])
    finally:
        conn.close()
    return tokens


PREJOIN_BATCH = 20


def _prejoin(host: str, port: int, bots: list[Bot]) -> None:
    """Make every bot a member first, a few at a time (hello, then close), so that the
    server's join notices reach only a handful of sockets each instead of everybody."""
    for start in range(0, len(bots), PREJOIN_BATCH):
        batch = [Bot(b.index, b.name, b.token, False) for b in bots[start: start + PREJOIN_BATCH]]
        engine = ChatBots(host, port, batch, 1.0, None)
        for bot in batch:
            engine.start_connect(bot)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            engine.poll(0.01)
            counts = engine.counts()
            if counts["ready"] + counts["closed"] == len(batch):
                break
        for bot in batch:
            if bot.state == READY:
                engine._queue(bot, client_frame(0x8, (1000).to_bytes(2, "big")))
            engine._close(bot, "prejoined")
        engine.epoll.close()


def _worker(index: int, http_url: str, bot_ids: list[int], senders: set[int], rate: float,
            tag: str, connect_rate: float, seed, pipe, prejoin: bool = False,
            progress_every: float = 0.0, max_seq: int = 0) -> None:
    """Worker process: join, connect, report ready, then measure the window it is given
    (and, with ``progress_every`` > 0, send ``("progress", counts)`` that often). When its
    drain is over it says ``("drained", sends not answered)``, then ``("answered",)`` once
    every send has its answer, and keeps reading until the parent says ``("stop",)``: only
    then does it send its result."""
    try:
        names = [f"cs{tag}-{i}" for i in bot_ids]
        tokens = _join_all(http_url, names, 10.0)
        parts = urlsplit(http_url)
        bots = [Bot(i, n, t, i in senders) for i, n, t in zip(bot_ids, names, tokens)]
        if prejoin:
            _prejoin(parts.hostname, parts.port or 80, bots)
        engine = ChatBots(parts.hostname, parts.port or 80, bots, rate, seed, tag=tag, senders=senders,
                          max_seq=max_seq)
        deadline = time.monotonic() + CONNECT_TIMEOUT + len(bots) / connect_rate
        started = 0
        t0 = time.monotonic()
        while time.monotonic() < deadline:
            due = int((time.monotonic() - t0) * connect_rate) + 1
            while started < min(due, len(bots)):
                engine.start_connect(bots[started])
                started += 1
            engine.poll(0.01)
            counts = engine.counts()
            if counts["ready"] + counts["closed"] == len(bots) and started == len(bots):
                break
        connect_s = time.monotonic() - t0
        pipe.send(("ready", engine.counts(), connect_s))
        public_room = None
        start_at = end_at = None
        while True:  # wait for the window (keep reading: events flow meanwhile)
            engine.poll(0.02)
            engine.send_due(time.time(), None)
            if pipe.poll():
                message = pipe.recv()
                if message[0] == "start":
                    _, public_room, start_at, end_at = message
                    break
                if message[0] == "stop":
                    return
        engine.open_window(start_at, end_at)
        cpu0 = _cpu()
        rng = random.Random(seed)
        for bot in bots:
            bot.next_send = start_at + rng.random() / rate if bot.sender else float("inf")
        next_report = start_at + progress_every if progress_every > 0 else float("inf")
        last_chance = end_at + DRAIN_S + ANSWER_WAIT + DRAIN_S + 30.0  # the parent stops us first
        answered = False
        while True:
            now = time.time()
            engine.send_due(now, public_room if now < end_at else None)
            engine.poll(0.005)
            if now >= next_report:
                next_report += progress_every
                pipe.send(("progress", engine.progress_counts()))
            if not engine.drained:
                if now >= end_at + DRAIN_S:
                    engine.drained = True  # answers from now on are late (and still counted)
                    answered = engine.pending() == 0
                    pipe.send(("drained", engine.pending()))
                continue
            if not answered and engine.pending() == 0:
                answered = True
                pipe.send(("answered",))
            if (pipe.poll() and pipe.recv()[0] == "stop") or now >= last_chance:
                break
        cpu = _cpu() - cpu0
        pipe.send(("result", {
            "hist": engine.hist.tolist(), "ack_hist": engine.ack_hist.tolist(),
            "sent": engine.sent, "acked": engine.acked_in_window, "acked_late": engine.acked_late,
            "acked_ids": engine.acked_ids, "refused": engine.refused, "refused_late": engine.refused_late,
            "unanswered": engine.pending(),
            "received": sum(b.received for b in bots),
            "members": {b.index: bytes(b.got) for b in bots if b.got is not None},
            "duplicates": engine.duplicates, "outside": engine.outside,
            "ready": engine.counts()["ready"], "closes": engine.closes,
            "frames": engine.frames, "bytes_in": engine.bytes_in, "cpu_s": cpu,
            "max_latency_ms": engine.max_latency_ms, "connect_s": connect_s,
        }))
    except Exception as exc:  # reported, never hangs the parent
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (Linux /proc), or None."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class ChatRateAboveLimit(ValueError):
    """The chat rate asked for is above the server's per-user limit (``chat.rate``)."""


def probe_server(http_url: str) -> dict:
    """What the chat says to a throwaway bot's ``hello``: ``public_room`` (its id) and the
    per-user limits ``rate`` (messages per second, ``chat.rate``) and ``burst``."""
    tag = os.urandom(3).hex()
    token = _join_all(http_url, [f"csprobe{tag}"], 10.0)[0]
    parts = urlsplit(http_url)
    bot = Bot(-1, "probe", token, False)
    engine = ChatBots(parts.hostname, parts.port or 80, [bot], 1.0, 0)
    engine.start_connect(bot)
    deadline = time.monotonic() + 10.0
    reply = None
    original = engine._text

    def capture(b, payload, now):
        nonlocal reply
        if payload.startswith(b'{"re":1'):
            reply = json.loads(payload)
        original(b, payload, now)

    engine._text = capture
    while reply is None and time.monotonic() < deadline:
        engine.poll(0.01)
    engine._close(bot, "done")
    engine.epoll.close()
    if reply is None or not reply.get("ok"):
        raise RuntimeError(f"cannot say hello to the chat: {reply}")
    limits = reply.get("limits") or {}
    return {"public_room": int(reply["public_room"]), "rate": limits.get("rate"), "burst": limits.get("burst")}


def check_chat_rate(chat_rate: float, server: dict) -> None:
    """Raise :class:`ChatRateAboveLimit` when ``chat_rate`` is above the server's per-user
    limit (``server`` as :func:`probe_server` gives it): every bot would be refused."""
    limit = server.get("rate")
    if limit is not None and chat_rate > float(limit):
        raise ChatRateAboveLimit(
            f"{chat_rate:g} messages per second per bot is above the server's chat limit of {float(limit):g}"
            f" per user (chat.rate; chat.burst = {server.get('burst')}): send less, or raise the server's"
            " chat.rate")


def run_chat_swarm(http_url: str, bots: int, chat_rate: float, duration: float, *,
                   senders: int | None = None, processes: int = 1, connect_rate: float = 200.0,
                   settle: float = 3.0, server_pid: int | None = None, seed: int | None = None,
                   prejoin: bool = False, progress=None, on_counts=None,
                   progress_every: float = 1.0, server: dict | None = None,
                   before_window=None, on_window=None) -> dict:
    """Run the swarm against ``http_url`` and return the report (see :func:`make_report`).

    ``senders`` bots (default: all) send ``chat_rate`` messages per second each; the others
    only read. ``settle`` seconds pass between everyone being connected and the window.
    ``prejoin`` makes the bots members of the public room a few at a time before they
    connect for the measurement (a world whose players joined earlier), so that the
    measurement does not start with a storm of join notices to everybody.
    ``on_counts(counts)``, if given, is called about every ``progress_every`` seconds during
    the window with the workers' summed totals (``sent``, ``acked``, ``refused``,
    ``received``, ``ready``, ``closed``) and ``ack_max_ms``, the slowest acknowledgement
    since the previous call (long runs watch these for stalls).
    ``server``: :func:`probe_server`'s answer, if the caller asked already. A ``chat_rate``
    above the server's limit raises :class:`ChatRateAboveLimit` before any bot joins.
    ``before_window()`` is called once every bot is connected, before settling (a companion
    swarm finishing its own set-up); ``on_window(start_at, end_at)`` with the window's wall
    clock times just before it opens.
    """
    t_begin = time.monotonic()
    server = probe_server(http_url) if server is None else server
    check_chat_rate(chat_rate, server)
    public_room = server["public_room"]
    senders = bots if senders is None else min(senders, bots)
    rng = random.Random(seed)
    sending = set(rng.sample(range(bots), senders))
    max_seq = int(chat_rate * duration) + 2  # what one sender sends at most in the window
    tag = os.urandom(4).hex()  # names are kept for good: fresh ones every run
    ctx = multiprocessing.get_context("spawn")
    shares = [list(range(bots))[p::processes] for p in range(processes)]
    pipes, procs = [], []
    for p, share in enumerate(shares):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(p, http_url, share, sending, chat_rate, tag,
                                                 connect_rate / processes, None if seed is None else seed + p, child,
                                                 prejoin, progress_every if on_counts else 0.0, max_seq),
                           daemon=True)
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    results, errors, ready, connect_s = [], [], 0, 0.0
    cpu0 = cpu1 = None
    setup_s = 0.0
    try:
        deadline = time.monotonic() + CONNECT_TIMEOUT + 120.0 + bots / connect_rate
        for pipe in pipes:
            if not pipe.poll(max(0.1, deadline - time.monotonic())):
                raise RuntimeError("a worker did not connect its bots in time")
            message = pipe.recv()
            if message[0] == "error":
                raise RuntimeError(message[1])
            ready += message[1]["ready"]
            connect_s = max(connect_s, message[2])
        if before_window is not None:
            before_window()
        if progress:
            progress(f"chat swarm: {ready}/{bots} bots ready in {connect_s:.1f} s; settling {settle:g} s")
        time.sleep(settle)
        start_at = time.time() + 0.5
        end_at = start_at + duration
        setup_s = time.monotonic() + 0.5 - t_begin
        if on_window is not None:
            on_window(start_at, end_at)
        cpu0 = proc_cpu_seconds(server_pid) if server_pid else None
        for pipe in pipes:
            pipe.send(("start", public_room, start_at, end_at))
        latest: dict[int, dict] = {}
        round_: set[int] = set()  # workers that reported since the last on_counts

        def take_progress(i: int, counts: dict) -> None:
            latest[i] = counts
            round_.add(i)
            if on_counts is not None and len(round_) == len(pipes):  # once a round, not per worker
                round_.clear()
                total = {k: sum(c[k] for c in latest.values()) for k in counts if k != "ack_max_ms"}
                total["ack_max_ms"] = max(c["ack_max_ms"] for c in latest.values())
                on_counts(total)
                for c in latest.values():
                    c["ack_max_ms"] = 0.0

        final: dict[int, tuple] = {}  # a worker's last message (its result, or an error)
        drained: dict[int, int] = {}  # worker -> its sends not answered when its drain ended
        answered: set[int] = set()  # workers whose every send has its answer

        def receive(i: int) -> None:
            try:
                message = pipes[i].recv()
            except EOFError:
                message = ("error", f"worker {i} exited without a result")
            if message[0] == "progress":
                take_progress(i, message[1])
            elif message[0] == "drained":
                drained[i] = message[1]
                if message[1] == 0:
                    answered.add(i)
            elif message[0] == "answered":
                answered.add(i)
            else:
                final[i] = message

        def pump(done, until: float) -> None:
            """Take the workers' messages until ``done()`` or the wall clock reaches ``until``."""
            while not done() and len(final) < len(pipes):
                remaining = until - time.time()
                if remaining <= 0:
                    return
                waiting = [p for i, p in enumerate(pipes) if i not in final]
                for pipe in multiprocessing.connection.wait(waiting, timeout=min(1.0, remaining)):
                    receive(pipes.index(pipe))

        every = range(len(pipes))
        pump(lambda: False, end_at)  # the window
        cpu1 = proc_cpu_seconds(server_pid) if server_pid else None
        pump(lambda: all(i in drained or i in final for i in every), end_at + DRAIN_S + 30.0)
        # Answers after the drain are waited for and reported as late, not dropped; when
        # some came late, their deliveries get one more drain.
        pump(lambda: all(i in answered or i in final for i in every), end_at + DRAIN_S + ANSWER_WAIT)
        if any(drained.values()):
            pump(lambda: False, time.time() + DRAIN_S)
        for i, pipe in enumerate(pipes):
            if i not in final:
                pipe.send(("stop",))
        pump(lambda: False, time.time() + 30.0)
        for i in every:
            message = final.get(i, ("error", f"worker {i} did not report"))
            if message[0] == "error":
                errors.append(message[1])
            else:
                results.append(message[1])
    finally:
        for proc in procs:
            proc.join(5.0)
            if proc.is_alive():
                proc.kill()
    server_cpu = None if cpu0 is None or cpu1 is None else (cpu1 - cpu0) / duration
    return make_report(results, errors, bots=bots, senders=sorted(sending), chat_rate=chat_rate,
                       duration=duration, processes=processes, ready=ready, connect_s=connect_s,
                       setup_s=setup_s, server_cpu=server_cpu, max_seq=max_seq)


def run_with_movement(movement_argv: list[str], http_url: str, bots: int, chat_rate: float,
                      duration: float, *, settle: float = 3.0, movement_progress: bool = False,
                      **chat) -> tuple[dict, dict]:
    """The movement swarm and the chat swarm side by side, measuring the same window:
    ``python -m worldtools.swarm`` with ``movement_argv`` (plus ``--duration``, ``--json`` and
    ``--wait-start``) in its own processes, while this process runs :func:`run_chat_swarm`.
    Each does its own set-up (joins, connections); the window opens once both are set up
    (the movement swarm says so on its stdout and gets the start on its stdin) and lasts
    ``duration`` seconds on both. ``movement_progress`` lets the movement swarm's progress
    lines through to this process's stderr. Returns (movement report, chat report); a
    movement swarm that fails or says nothing gives ``{"ok": False, "error": ...}``. The
    movement process is killed if it outlives its deadline."""
    import threading

    server = chat.pop("server", None) or probe_server(http_url)
    check_chat_rate(chat_rate, server)  # before anything starts
    argv = [sys.executable, "-m", "worldtools.swarm", *movement_argv, "--duration", f"{duration:g}",
            "--json", "--wait-start"]
    if movement_progress:
        argv.append("--progress")
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=None if movement_progress else subprocess.DEVNULL, text=True)
    ready = threading.Event()
    lines: list[str] = []

    def read_stdout() -> None:  # the set-up's end ({"ready": ...}), then the report
        for line in proc.stdout:
            lines.append(line)
            if line.startswith('{"ready"'):
                ready.set()
        ready.set()  # the process ended: nothing to wait for

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()

    def start_movement(start_at: float, end_at: float) -> None:
        start = time.monotonic() + (start_at - time.time())  # the same instant, on its clock
        try:
            proc.stdin.write(f"start {start:.6f}\n")
            proc.stdin.flush()
        except OSError:
            pass  # it ended: reported as no report

    try:
        report = run_chat_swarm(http_url, bots, chat_rate, duration, settle=settle, server=server,
                                before_window=lambda: ready.wait(MOVEMENT_READY_WAIT),
                                on_window=start_movement, **chat)
        reader.join(timeout=60.0)  # its window ended with the chat's: the report follows
    finally:
        if proc.poll() is None:  # failed, or overstayed: not waited for
            proc.kill()
        proc.wait(5)
        for pipe in (proc.stdin, proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass
    try:
        movement = json.loads([line for line in lines if not line.startswith('{"ready"')][-1])
    except (ValueError, IndexError):
        movement = {"ok": False, "error": f"no report from the movement swarm (exit {proc.returncode})"}
    return movement, report


def _hist_percentile(hist: np.ndarray, q: float) -> float | None:
    total = int(hist.sum())
    if total == 0:
        return None
    rank = q / 100.0 * (total - 1)
    index = int(np.searchsorted(np.cumsum(hist), rank, side="right"))
    return round((index + 0.5) * HIST_BIN_MS, 2)


def _popcount(bits: np.ndarray) -> int:
    return int(np.unpackbits(bits).sum()) if bits.size else 0


def deliveries_by_message(acked_ids, members: dict, senders: list[int], max_seq: int) -> dict:
    """Per-message delivery check: every acknowledged message (``acked_ids``: (sender, seq))
    must reach every member once, except its sender. ``members``: member index -> its
    bitmap of messages received (see :class:`ChatBots`). Returns ``expected``,
    ``delivered`` (distinct, of acknowledged messages), ``missing``, ``messages_incomplete``
    (acknowledged messages that missed a member) and ``unacknowledged`` (deliveries of
    messages whose sender never got an acknowledgement)."""
    slot_of = {index: slot for slot, index in enumerate(sorted(senders))}
    nbytes = int(max_seq) // 8 + 1
    acked = np.zeros((len(slot_of), nbytes), dtype=np.uint8)
    for sender, seq in acked_ids:
        slot = slot_of.get(sender)
        if slot is not None and 0 < seq <= max_seq:
            acked[slot, seq >> 3] |= 1 << (seq & 7)
    incomplete = np.zeros_like(acked)
    expected = delivered = missing = unacknowledged = 0
    for index, got in members.items():
        got = np.frombuffer(got, dtype=np.uint8).reshape(acked.shape)
        want = acked.copy()
        if index in slot_of:
            want[slot_of[index]] = 0  # a sender does not receive its own messages
        lost = want & ~got
        expected += _popcount(want)
        delivered += _popcount(want & got)
        missing += _popcount(lost)
        unacknowledged += _popcount(got & ~acked)
        incomplete |= lost
    return dict(expected=expected, delivered=delivered, missing=missing,
                messages_incomplete=_popcount(incomplete), unacknowledged=unacknowledged)


def make_report(results: list[dict], errors: list[str], **facts) -> dict:
    """Merge the workers' results into one report.

    Losses are counted per message (:func:`deliveries_by_message`): ``deliveries_missing``
    (acknowledged messages that did not reach a member) and ``deliveries_duplicate``
    (a member got a message again) are reported separately. ``acked`` counts every send
    acknowledged, ``acked_late`` those whose acknowledgement came after the drain;
    ``refused``/``refused_late`` likewise by error code; ``unanswered`` sends had no answer.
    """
    hist = np.zeros(HIST_BINS, dtype=np.int64)
    ack = np.zeros(HIST_BINS, dtype=np.int64)
    for r in results:
        hist += np.asarray(r["hist"], dtype=np.int64)
        ack += np.asarray(r["ack_hist"], dtype=np.int64)
    acked = sum(r["acked"] for r in results)
    ready = facts["ready"]
    members: dict = {}
    for r in results:
        members.update(r["members"])
    check = deliveries_by_message([tuple(x) for r in results for x in r["acked_ids"]], members,
                                  facts["senders"], facts["max_seq"])
    closes: dict[str, int] = {}
    refused: dict[str, int] = {}
    refused_late: dict[str, int] = {}
    for r in results:
        for into, got in ((closes, r["closes"]), (refused, r["refused"]), (refused_late, r["refused_late"])):
            for k, v in got.items():
                into[k] = into.get(k, 0) + v
    duration = facts["duration"]
    client_cpu = sum(r["cpu_s"] for r in results) / (duration + DRAIN_S) if results else 0.0
    expected, missing = check["expected"], check["missing"]
    duplicates = sum(r["duplicates"] for r in results)
    report = dict(
        bots=facts["bots"], ready=ready, members=len(members), senders=len(facts["senders"]),
        chat_rate=facts["chat_rate"],
        messages_per_s=round(acked / duration, 2) if duration else 0.0,
        duration_s=duration, setup_s=round(facts.get("setup_s", 0.0), 2), processes=facts["processes"],
        connect_s=round(facts["connect_s"], 2),
        sent=sum(r["sent"] for r in results), acked=acked,
        acked_late=sum(r["acked_late"] for r in results), refused=refused, refused_late=refused_late,
        unanswered=sum(r["unanswered"] for r in results),
        deliveries_expected=expected, deliveries=check["delivered"],
        deliveries_missing=missing, deliveries_duplicate=duplicates,
        messages_incomplete=check["messages_incomplete"],
        deliveries_unacknowledged=check["unacknowledged"],
        deliveries_outside=sum(r["outside"] for r in results),
        loss=round(missing / expected, 6) if expected else 0.0,
        delivery_ms_p50=_hist_percentile(hist, 50), delivery_ms_p99=_hist_percentile(hist, 99),
        delivery_ms_max=round(max((r["max_latency_ms"] for r in results), default=0.0), 2),
        ack_ms_p50=_hist_percentile(ack, 50), ack_ms_p99=_hist_percentile(ack, 99),
        deliveries_per_s=round(check["delivered"] / duration, 1) if duration else 0.0,
        closed=closes, errors=errors,
        client_cpu_percent=round(100.0 * client_cpu, 1),
        server_cpu_percent=None if facts.get("server_cpu") is None else round(100.0 * facts["server_cpu"], 1),
    )
    report["ok"] = (not errors and ready == facts["bots"] and not closes and missing == 0 and duplicates == 0
                    and not report["unanswered"])
    return report


def format_report(report: dict) -> str:
    def ms(v):
        return "-" if v is None else f"{v} ms"

    def counts(d):
        return ", ".join(f"{k}={v}" for k, v in sorted(d.items())) or "-"

    rows = [
        ("bots ready / requested", f"{report['ready']} / {report['bots']} (connected in {report['connect_s']} s)"),
        ("set-up / measured (s)", f"{report['setup_s']} / {report['duration_s']}"),
        ("senders x rate", f"{report['senders']} x {report['chat_rate']}/s = {report['messages_per_s']} msg/s acknowledged"),
        ("sent / acknowledged", f"{report['sent']} / {report['acked']} ({report['acked_late']} after the drain;"
                                f" {report['unanswered']} unanswered)"),
        ("refused", counts(report["refused"]) + (f" (after the drain: {counts(report['refused_late'])})"
                                                 if report["refused_late"] else "")),
        ("deliveries / expected", f"{report['deliveries']} / {report['deliveries_expected']} ({report['deliveries_per_s']}/s"
                                  f" to {report['members']} members)"),
        ("deliveries missing", f"{report['deliveries_missing']} ({100 * report['loss']:.4f} %; "
                               f"{report['messages_incomplete']} messages incomplete)"),
        ("deliveries duplicate", report["deliveries_duplicate"]),
        ("deliveries not acknowledged", report["deliveries_unacknowledged"]),
        ("delivery latency p50 / p99 / max", f"{ms(report['delivery_ms_p50'])} / {ms(report['delivery_ms_p99'])} / {ms(report['delivery_ms_max'])}"),
        ("send-to-ack p50 / p99", f"{ms(report['ack_ms_p50'])} / {ms(report['ack_ms_p99'])}"),
        ("sockets closed", counts(report["closed"])),
        ("server CPU (% of one core)", "-" if report["server_cpu_percent"] is None else report["server_cpu_percent"]),
        ("bots CPU (% of one core)", report["client_cpu_percent"]),
        ("errors", "; ".join(report["errors"]) or "-"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


class ProgressLine:
    """``on_counts`` for :func:`run_chat_swarm` that writes one line a second with ``say``:
    bots ready, sent, acknowledged, refused, delivered and the slowest acknowledgement."""

    def __init__(self, say, bots: int, every: float = 1.0) -> None:
        self.say, self.bots, self.every = say, bots, every
        self.calls = 0

    def __call__(self, counts: dict) -> None:
        self.calls += 1
        self.say(f"chat  t={self.calls * self.every:5.1f}s ready {counts['ready']}/{self.bots} "
                 f"sent {counts['sent']} acked {counts['acked']} refused {counts['refused']} "
                 f"delivered {counts['received']}  ack max {counts['ack_max_ms']:.0f} ms")


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m worldtools.chat_swarm",
                                     description="Chat bots on /ws/chat: delivery latency and losses.")
    parser.add_argument("--http", required=True, help="the server's HTTP base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--bots", type=int, default=100)
    parser.add_argument("--chat-rate", type=float, default=0.5,
                        help="messages per second per sending bot (at most the server's chat.rate)")
    parser.add_argument("--senders", type=int, default=None, help="how many bots send (default: all)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured (after the set-up)")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--connect-rate", type=float, default=200.0, help="new connections per second")
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--server-pid", type=int, default=None, help="measure this process's CPU")
    parser.add_argument("--prejoin", action="store_true", help="make the bots members a few at a time first")
    parser.add_argument("--udp", default=None, help="HOST:PORT: also run the movement swarm (same bot count)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    quiet = args.json or args.quiet
    say = None if quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    chat = dict(senders=args.senders, processes=max(1, args.processes), connect_rate=args.connect_rate,
                settle=args.settle, server_pid=args.server_pid, seed=args.seed, prejoin=args.prejoin,
                progress=say, on_counts=None if quiet else ProgressLine(say, args.bots))
    try:
        if args.udp:
            movement_argv = ["--server", args.udp, "--http", args.http, "--bots", str(args.bots),
                             "--processes", str(max(1, args.processes))]
            movement, report = run_with_movement(movement_argv, args.http, args.bots, args.chat_rate,
                                                 args.duration, movement_progress=not quiet, **chat)
            report["movement"] = movement
        else:
            report = run_chat_swarm(args.http, args.bots, args.chat_rate, args.duration, **chat)
    except ChatRateAboveLimit as exc:
        print(f"error: --chat-rate: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print(format_report(report))
        if args.udp:
            print("movement:", json.dumps(report["movement"], sort_keys=True))
    return 0 if report["ok"] else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
