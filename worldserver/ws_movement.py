"""The ``/ws/movement`` WebSocket: native protocol packets over a WebSocket, for the stream
service.

Job: :func:`movement_endpoint` (routed by ``worldserver.http_app``) admits an upgrade against
the client address's limits (``[limits]``, :mod:`worldserver.limits`: beyond its handshake
tokens or connections it is refused before accept, ``drop.limit_ws_*``), then carries one
binary message each way per packet between the socket and the stream service
(``worldserver.stream_service``, ``open_peer`` / ``on_message`` / ``close_peer``): a text
message is closed with 1003, one over :data:`MAX_WS_MESSAGE` bytes with 1009, a silent socket
after ``ws_idle_timeout``, a DISCONNECT from the server with 1000, and everything with 1001 when
the server stops. Packets to the client wait in a :class:`WsOutbox`, where only the newest
tick's SNAPSHOT parts wait (older ones replaced, ``drop.ws_snapshot_replaced``) and a client
that does not read is closed (1008, ``drop.ws_send_queue_full``).

Must not: know the native protocol beyond a packet's type byte and a snapshot part's tick (the
stream service and ``native`` do the rest), wait on a send (``send`` only queues), or wait
without a deadline (closing waits at most :data:`WS_CLOSE_TIMEOUT` for a send in progress).
"""

from __future__ import annotations

import itertools
from collections import deque

import trio
from starlette.websockets import WebSocket

from protocol import packets as P
from worldserver.http_common import client_host
from worldserver.http_guard import accept_websocket, refuse_websocket
from worldserver.limits import AddressLimits
from worldserver.logs import get_logger
from worldserver.stats import Stats

__all__ = ["MAX_WS_MESSAGE", "WS_FIFO_LIMIT", "WsOutbox", "movement_endpoint"]

log = get_logger("worldserver.http")

MAX_WS_MESSAGE = 2048  # largest WebSocket message of /ws/movement (close 1009 beyond)
WS_FIFO_LIMIT = 16  # unsent non-snapshot packets per socket before it is closed (1008)
WS_CLOSE_TIMEOUT = 2.0  # seconds to wait for a send in progress before closing a socket
SNAPSHOT_TYPE = P.SNAPSHOT
PACKET_HEADER = P.HEADER_SIZE  # SPEC 3: connected-packet header; a SNAPSHOT part's u32 tick follows it
DISCONNECT_TYPE = P.DISCONNECT


class WsOutbox:
    """Packets waiting to go out on one WebSocket; ``put`` never blocks.

    Only the newest tick's SNAPSHOT parts wait: parts of a newer tick make the unsent parts of
    an older one go (each counted in ``replaced``), the newer parts keeping their own places.
    Other packets are never dropped; more than ``limit`` of them waiting means the client does
    not read, and the outbox reports ``overflow`` so the socket is closed. Order of sending is
    the order of ``put``.
    """

    def __init__(self, limit: int = WS_FIFO_LIMIT) -> None:
        self.limit = limit
        self.replaced = 0
        self.overflow = False
        self.closed = False
        self._queue: deque[list] = deque()  # cells [bytes or None (replaced)]
        self._snapshot_tick: bytes | None = None  # the waiting snapshot parts' tick field
        self._snapshots: list[list] = []  # their cells in _queue
        self._others = 0
        self._wakeup = trio.Event()

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, data: bytes) -> bool:
        """Queue one packet; False if it was not queued (outbox closed or overflowing)."""
        if self.closed:
            return False
        data = bytes(data)
        if data[:1] == bytes((SNAPSHOT_TYPE,)):
            tick = data[PACKET_HEADER : PACKET_HEADER + 4]  # SPEC 5.2: a part starts with its tick
            if self._snapshots and tick != self._snapshot_tick:
                for cell in self._snapshots:
                    cell[0] = None
                    self.replaced += 1
                self._snapshots = []
            self._snapshot_tick = tick
            cell = [data]
            self._snapshots.append(cell)
            self._queue.append(cell)
        else:
            if self._others >= self.limit:
                self.overflow = True
                self.closed = True
                self._wakeup.set()
                return False
            self._others += 1
            self._queue.append([data, True])
        self._wakeup.set()
        return True

    def close(self) -> None:
        self.closed = True
        self._wakeup.set()

    async def get(self) -> bytes | None:
        """The next packet to send; None once the outbox is closed or overflowed."""
        while True:
            while not self._queue:
                if self.closed:
                    return None
                self._wakeup = trio.Event()
                await self._wakeup.wait()
            if self.overflow:
                return None
            cell = self._queue.popleft()
            if len(cell) == 2:
                self._others -= 1
                return cell[0]
            if self._snapshots and self._snapshots[0] is cell:
                self._snapshots.pop(0)
            if cell[0] is not None:
                return cell[0]


class _MovementSocket:
    """One ``/ws/movement`` connection: the reader loop and its writer task."""

    _numbers = itertools.count(1)

    def __init__(self, websocket: WebSocket, service, stats: Stats, idle_timeout: float) -> None:
        self.ws = websocket
        self.service = service
        self.stats = stats
        self.idle_timeout = idle_timeout
        self.outbox = WsOutbox()
        self.lock = trio.Lock()  # one ASGI send at a time (data or close)
        self.ws_closed = False
        self.reason: str | None = None  # why the socket ended, for close_peer
        client = websocket.client
        self.where = f"{client.host}:{client.port}" if client else "?"
        self.key = f"ws:{self.where}#{next(self._numbers)}"

    def end(self, reason: str) -> None:
        """Record why the socket ends; the first reason given is the one reported."""
        if self.reason is None:
            self.reason = reason

    def send(self, data: bytes) -> None:
        """Given to the stream service: queue a packet, never blocks."""
        replaced = self.outbox.replaced
        self.outbox.put(data)
        if self.outbox.replaced != replaced:
            self.stats.incr("drop.ws_snapshot_replaced")

    async def close(self, code: int, reason: str) -> None:
        """Close the socket (once) with ``code``; waits at most WS_CLOSE_TIMEOUT for a send."""
        self.outbox.close()
        with trio.move_on_after(WS_CLOSE_TIMEOUT):
            async with self.lock:
                if self.ws_closed:
                    return
                self.ws_closed = True
                try:
                    await self.ws.close(code=code, reason=reason)
                except Exception as exc:  # the peer went away meanwhile
                    log.debug("websocket close failed", key=self.key, error=repr(exc))

    async def writer(self, cancel_scope: trio.CancelScope) -> None:
        while True:
            data = await self.outbox.get()
            if data is None:
                if self.outbox.overflow:
                    self.end("send queue full")
                    self.stats.incr("drop.ws_send_queue_full")
                    await self.close(1008, "send queue full")
                    cancel_scope.cancel()
                return
            async with self.lock:
                if self.ws_closed:
                    return
                try:
                    await self.ws.send_bytes(data)
                except Exception as exc:
                    log.debug("websocket send failed", key=self.key, error=repr(exc))
                    self.end("send failed")
                    cancel_scope.cancel()
                    return
            if data[:1] == bytes((DISCONNECT_TYPE,)):  # the server ended the connection: close
                self.end("server disconnect")
                await self.close(1000, "disconnect")
                cancel_scope.cancel()
                return

    async def watch_shutdown(self, stopping: trio.Event, cancel_scope: trio.CancelScope) -> None:
        """When the server stops, close the socket with 1001 (going away)."""
        await stopping.wait()
        self.end("server shutdown")
        await self.close(1001, "server shutting down")
        cancel_scope.cancel()

    async def reader(self) -> None:
        """Feed binary messages to the service until the socket ends; sets ``reason``."""
        while True:
            message = None
            with trio.move_on_after(self.idle_timeout):
                message = await self.ws.receive()
            if message is None:
                self.end("idle timeout")
                await self.close(1001, "idle timeout")
                return
            if message["type"] == "websocket.disconnect":
                self.ws_closed = True
                self.outbox.close()
                self.end(f"client closed ({message.get('code', 1005)})")
                return
            data = message.get("bytes")
            if data is None:
                self.end("text message")
                await self.close(1003, "binary messages only")
                return
            if len(data) > MAX_WS_MESSAGE:
                self.end("message too big")
                await self.close(1009, f"message too big (max {MAX_WS_MESSAGE} bytes)")
                return
            self.service.on_message(self.key, data, trio.current_time())


async def movement_endpoint(websocket: WebSocket) -> None:
    state = websocket.app.state
    service = state.ws_movement
    if service is None:
        await refuse_websocket(websocket, state.stats)  # before accept: hypercorn answers 403
        return
    limits: AddressLimits = state.limits
    key = limits.key(client_host(websocket))
    if not limits.handshake(key, trio.current_time()):
        state.stats.incr("drop.limit_ws_handshake_rate")
        await refuse_websocket(websocket, state.stats)
        return
    if not limits.connect(key):
        state.stats.incr("drop.limit_ws_address_connections")
        await refuse_websocket(websocket, state.stats)
        return
    try:
        await _movement_socket(websocket, state, service)
    finally:
        limits.disconnect(key)


async def _movement_socket(websocket: WebSocket, state, service) -> None:
    """One admitted ``/ws/movement`` socket, from accept to close."""
    if not await accept_websocket(websocket, state.stats):
        return
    sock = _MovementSocket(websocket, service, state.stats, state.ws_idle_timeout)
    try:
        service.open_peer(sock.key, sock.send, address=sock.where)
    except Exception:
        log.exception("ws_movement.open_peer failed", key=sock.key)
        await sock.close(1011, "server error")
        return
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sock.writer, nursery.cancel_scope)
            nursery.start_soon(sock.watch_shutdown, state.stopping, nursery.cancel_scope)
            await sock.reader()
            nursery.cancel_scope.cancel()
    except Exception:
        log.exception("ws_movement socket failed", key=sock.key)
        sock.end("server error")
        with trio.CancelScope(shield=True):
            await sock.close(1011, "server error")
    finally:
        sock.end("server shutdown")  # if nothing else ended it: cancelled from outside
        if not sock.ws_closed:
            with trio.CancelScope(shield=True):
                await sock.close(1001, "server shutting down")
        try:
            service.close_peer(sock.key, sock.reason)
        except Exception:
            log.exception("ws_movement.close_peer failed", key=sock.key)

