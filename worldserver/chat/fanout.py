"""Chat fan-out: one task writes every chat socket's queued frames with non-blocking sends.

Job: deliver chat frames to many plain-TCP ``/ws/chat`` connections at a cost close to one
``send`` system call per socket per burst. Through hypercorn's ASGI ``send`` every frame costs
about 53 µs (WSStream, wsproto, the h11 protocol, the connection's lock, trio's ``send_all``):
1,000 members and 50 messages a second would need 2.6 cores. Here instead:

- a frame is encoded once per broadcast (:meth:`Fanout.encode` keeps the bytes of the last
  text it saw, and a broadcast hands the same ``str`` to every peer): a server-to-client
  WebSocket text frame is unmasked, so its bytes are the same for every recipient;
- :class:`SocketOut` (one per connection, the peer's outbox) appends those bytes to its
  buffer and marks itself ready; nothing is awaited;
- :meth:`Fanout.run` (one task) wakes, and for every ready socket takes hypercorn's own
  per-connection ``send_lock`` *without waiting* (``acquire_nowait``), writes the whole
  buffer with one non-blocking ``send`` and releases the lock at a frame boundary. Frames
  therefore never interleave with what hypercorn itself writes on the connection (pongs,
  the close frame). A socket whose kernel buffer is full, or whose lock hypercorn holds, is
  retried every :data:`RETRY_INTERVAL`; the lock stays with the pump only while a frame is
  half written. Messages that arrive while a pass runs are sent together in the next one, so
  the number of system calls stays bounded by the number of sockets, not of deliveries.

:func:`raw_connection` finds the connection behind hypercorn's ASGI ``send`` (HTTP/1.1 on
plain TCP only; hypercorn's side is ``worldserver.http_guard.connection_of``) and the stdlib
socket inside trio's (``_sock``: this is the one module that reaches into trio's internals,
stated by :func:`check_upstream`, which :meth:`Fanout.run` runs at start). For TLS, HTTP/2 or
another server it returns None, and the gateway keeps the ASGI path (a writer task per
socket); tests check that hypercorn as installed takes this path.

Must not: await inside a pass over the sockets except the periodic checkpoints, hold a
connection's lock between passes other than in the middle of a frame, write to a socket the
gateway has detached, or hold more than ``limit`` unsent frames per socket (the peer is
closed as too slow instead, as with the ASGI path).
"""

from __future__ import annotations

import functools
import math
import socket
from collections import deque

import trio

from worldserver import http_guard
from worldserver.upstream import assigned_attributes, require, require_names

__all__ = ["RETRY_INTERVAL", "Fanout", "SocketOut", "check_upstream", "raw_connection", "text_frame"]

RETRY_INTERVAL = 0.01  # seconds between retries of sockets that could not take their bytes
PASS_CHECKPOINT = 256  # sockets written between two checkpoints (the tick must not wait long)


def text_frame(text: str) -> bytes:
    """One unfragmented, unmasked WebSocket text frame (RFC 6455 section 5.2)."""
    payload = text.encode("utf-8")
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


def raw_connection(asgi_send) -> tuple[socket.socket, trio.Lock] | None:
    """The plain TCP socket and hypercorn's per-connection send lock behind the ASGI ``send``
    of a WebSocket, or None when the connection is not hypercorn HTTP/1.1 on plain TCP."""
    conn = http_guard.connection_of(asgi_send)
    if conn is None:
        return None  # HTTP/2, or not hypercorn's send
    stream, lock = conn
    if not isinstance(stream, trio.SocketStream):
        return None  # an SSLStream: only the protocol may write
    sock = stream.socket._sock  # the stdlib socket inside trio's (see check_upstream)
    if sock.type != socket.SOCK_STREAM:
        return None
    return sock, lock


@functools.cache
def check_upstream() -> None:
    """Raise ``UpstreamChanged`` unless trio's socket still wraps the stdlib socket as
    ``_sock`` and ``SocketStream`` keeps it as ``socket`` (checked once, on a real socket)."""
    patch = "worldserver.chat.fanout.raw_connection"
    require_names(["socket"], assigned_attributes(trio.SocketStream.__init__), "trio",
                  "trio.SocketStream.__init__", patch, "assigns")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        wrapped = trio.socket.from_stdlib_socket(sock)
        require(vars(wrapped).get("_sock") is sock, "trio", "trio.socket.from_stdlib_socket(sock)._sock",
                patch, "is no longer the stdlib socket it wraps")


class SocketOut:
    """One connection's outbound frames on the fast path; the :class:`Peer`'s outbox.

    ``send_nowait(text)`` queues a frame (raises ``trio.WouldBlock`` when ``limit`` frames
    are already unsent, ``trio.ClosedResourceError`` after :meth:`close`); ``close()`` stops
    new frames but lets the queued ones drain; :meth:`detach` is the gateway's last word.
    """

    __slots__ = ("fanout", "sock", "lock", "limit", "buf", "lengths", "head_sent", "holding",
                 "closed", "dead", "on_dead")

    def __init__(self, fanout: Fanout, sock: socket.socket, lock: trio.Lock, limit: int, on_dead) -> None:
        self.fanout = fanout
        self.sock = sock
        self.lock = lock
        self.limit = limit
        self.buf = bytearray()
        self.lengths: deque[int] = deque()  # byte length of every queued frame, oldest first
        self.head_sent = 0  # bytes of the oldest queued frame already written
        self.holding = False  # the pump holds ``lock`` (a frame is half written)
        self.closed = False  # no new frames
        self.dead = False  # the socket failed or was detached: nothing more is written
        self.on_dead = on_dead  # called once when a write fails (the peer is closed)

    # -- the Peer's outbox interface ----------------------------------------------------------

    def send_nowait(self, text: str) -> None:
        if self.closed or self.dead:
            raise trio.ClosedResourceError
        if len(self.lengths) >= self.limit:
            raise trio.WouldBlock
        data = self.fanout.encode(text)
        self.buf += data
        self.lengths.append(len(data))
        self.fanout.mark(self)

    def close(self) -> None:
        self.closed = True

    # -- the gateway's side -------------------------------------------------------------------

    @property
    def unsent(self) -> int:
        """Frames queued and not completely written."""
        return len(self.lengths)

    @property
    def mid_frame(self) -> bool:
        """True while a frame is half written: nothing else may go on the connection."""
        return self.head_sent > 0

    async def drain(self, timeout: float) -> bool:
        """Wait (polling, at most ``timeout`` s) until every queued frame is written and the
        lock is back with hypercorn; True if so."""
        with trio.move_on_after(timeout):
            while (self.lengths or self.holding) and not self.dead:
                await trio.sleep(RETRY_INTERVAL)
            return not self.lengths and not self.holding
        return False

    def detach(self) -> None:
        """Stop writing to this socket for good (the pump drops it and releases the lock)."""
        self.closed = True
        self.dead = True
        self.fanout.mark(self)


class Fanout:
    """The pump task and its sets of sockets to write (see the module docstring)."""

    def __init__(self, stats) -> None:
        self.stats = stats
        self.ready: dict[SocketOut, None] = {}  # to write on the next pass (insertion order)
        self.waiting: dict[SocketOut, None] = {}  # kernel buffer full or lock busy: retry later
        self._wake = trio.Event()
        self._last_text: str | None = None
        self._last_bytes = b""
        self.running = False

    def encode(self, text: str) -> bytes:
        """The frame bytes of ``text``; a broadcast passes one ``str`` object to every peer,
        so it is encoded once."""
        if text is not self._last_text:
            self._last_bytes = text_frame(text)
            self._last_text = text
        return self._last_bytes

    def mark(self, out: SocketOut) -> None:
        if out not in self.waiting:
            self.ready[out] = None
            self._wake.set()

    def open(self, sock: socket.socket, lock: trio.Lock, limit: int, on_dead) -> SocketOut:
        return SocketOut(self, sock, lock, limit, on_dead)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Write ready sockets until cancelled; sockets still held are released on the way out.
        Raises ``UpstreamChanged`` at start if trio or hypercorn lack what this relies on."""
        check_upstream()
        http_guard.check_upstream()
        self.running = True
        task_status.started()
        try:
            while True:
                timeout = RETRY_INTERVAL if self.waiting else math.inf
                with trio.move_on_after(timeout):
                    await self._wake.wait()
                self._wake = trio.Event()
                if self.waiting:
                    self.ready.update(self.waiting)
                    self.waiting.clear()
                await self._pass()
        finally:
            self.running = False
            for out in list(self.ready) + list(self.waiting):
                self._release(out)
            self.ready.clear()
            self.waiting.clear()

    async def _pass(self) -> None:
        """Write every ready socket once (checkpoints every PASS_CHECKPOINT sockets)."""
        written = 0
        while self.ready:
            out = next(iter(self.ready))
            del self.ready[out]
            self._write(out)
            written += 1
            if written % PASS_CHECKPOINT == 0:
                await trio.lowlevel.checkpoint()
        if written:
            self.stats.incr("chat.fanout_writes", written)

    def _write(self, out: SocketOut) -> None:
        if out.dead:
            self._release(out)
            return
        if not out.buf:
            return
        if not out.holding:
            try:
                out.lock.acquire_nowait()
            except trio.WouldBlock:  # hypercorn is writing (a pong, a close): later
                self.waiting[out] = None
                self.stats.incr("chat.fanout_lock_busy")
                return
            out.holding = True
        try:
            n = out.sock.send(out.buf)
        except BlockingIOError:
            n = 0
        except OSError:
            out.dead = True
            self._release(out)
            self.stats.incr("drop.chat_send_failed")
            out.on_dead()
            return
        if n:
            self.stats.incr("chat.bytes_out", n)
            del out.buf[:n]
            n += out.head_sent
            lengths = out.lengths
            while lengths and n >= lengths[0]:
                n -= lengths.popleft()
            out.head_sent = n
        if out.head_sent == 0:
            self._release(out)  # at a frame boundary: hypercorn may write again
        if out.buf:
            self.waiting[out] = None  # the kernel buffer is full: retry after a while
            self.stats.incr("chat.fanout_stalls")

    @staticmethod
    def _release(out: SocketOut) -> None:
        if out.holding:
            out.holding = False
            out.lock.release()
