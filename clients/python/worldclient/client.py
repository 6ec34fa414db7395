"""A trio client for worldserver's UDP protocol: connect, send inputs, mirror the world.

``async with open_client(host, port, http=URL, name=NAME) as client:`` joins over HTTP
(``worldclient.join``: the connect token and key the UDP handshake needs; ``client.joined``),
performs the handshake (with resends and a deadline; every packet tagged with the key), then
runs a receive task and a keep-alive/timeout task in the context's nursery
until the block ends, when it says goodbye. Snapshots are decoded into ``client.mirror``;
``client.send_input`` sends the newest inputs (the last few repeated, so one lost datagram
loses nothing); ``client.wait_until`` waits, with a deadline, for a condition on the mirror.

Must not: simulate the world (the server is the authority; prediction is an optional helper)
or run anything outside its nursery.
"""

from __future__ import annotations

import math
import os
import socket
from collections import deque
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable

import trio

from protocol import PROTOCOL_VERSION
from protocol import packets as P
from protocol.client import CONNECTED, ClientConnection
from protocol.events import Connected, Disconnected, Received, Refused
from protocol.messages import FLAG_JUMP, Input, Welcome, encode_inputs
from worldclient.join import Joined, join
from worldclient.mirror import WorldMirror

REDUNDANT_INPUTS = 4


class ConnectFailed(Exception):
    """The handshake did not complete: refused (``reason``) or timed out."""

    def __init__(self, reason: str, text: str = "") -> None:
        super().__init__(f"{reason}: {text}" if text else reason)
        self.reason = reason


class WorldClient:
    def __init__(self, sock: trio.socket.SocketType, conn: ClientConnection) -> None:
        self.sock = sock
        self.conn = conn
        self.welcome: Welcome | None = None
        self.mirror: WorldMirror | None = None
        self.input_seq = 0
        self.recent: deque[Input] = deque(maxlen=REDUNDANT_INPUTS)
        self.closed_reason = ""
        self.closed_text = ""  # what the server's DISCONNECT said (world_closed: why)
        self.snapshots = 0
        self.bytes_received = 0
        self.joined: Joined | None = None  # the HTTP join the connection came from, if any
        self._changed = trio.Event()

    @property
    def entity_id(self) -> int:
        return self.welcome.entity_id

    @property
    def connected(self) -> bool:
        return self.conn.state == CONNECTED

    async def _send(self, data: bytes) -> None:
        if data:
            try:
                await self.sock.send(data)
            except OSError:
                pass  # ICMP-reported errors: the timeout logic decides when the link is dead

    async def _handshake(self, deadline: float) -> None:
        await self._send(self.conn.connect(trio.current_time()))
        while True:
            with trio.move_on_at(min(deadline, trio.current_time() + self.conn.resend_interval)):
                try:
                    data = await self.sock.recv(2048)
                except OSError:
                    data = b""
                if data:
                    events, out = self.conn.receive_datagram(data, trio.current_time())
                    for d in out:
                        await self._send(d)
                    for ev in events:
                        if isinstance(ev, Connected):
                            self.welcome = Welcome.decode(ev.welcome)
                            # The server's keep-alive interval and timeout (SPEC 4.1).
                            self.conn.keepalive_interval = self.welcome.keepalive_interval
                            self.conn.timeout = self.welcome.timeout
                            self.mirror = WorldMirror(self.welcome)
                            return
                        if isinstance(ev, Refused):
                            raise ConnectFailed(ev.reason, ev.text)
            now = trio.current_time()
            if now >= deadline:
                raise ConnectFailed("handshake_timeout")
            events, out = self.conn.poll(now)
            for d in out:
                await self._send(d)

    async def _receive_loop(self) -> None:
        while self.conn.state == CONNECTED:
            try:
                data = await self.sock.recv(2048)
            except OSError:
                continue
            self.bytes_received += len(data)
            events, _ = self.conn.receive_datagram(data, trio.current_time())
            for ev in events:
                if type(ev) is Received and ev.ptype == P.SNAPSHOT:
                    if self.mirror.apply(ev.payload) is not None:
                        self.snapshots += 1
                        self._notify()
                elif isinstance(ev, Disconnected):
                    self.closed_reason, self.closed_text = ev.reason, ev.text
                    self._notify()

    async def _poll_loop(self) -> None:
        while self.conn.state == CONNECTED:
            await trio.sleep(0.1)
            events, out = self.conn.poll(trio.current_time())
            for d in out:
                await self._send(d)
            for ev in events:
                if isinstance(ev, Disconnected):
                    self.closed_reason = ev.reason
                    self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def send_input(self, move_x: float, move_z: float, yaw: float | None = None, anim: int = 1, jump: bool = False) -> Input:
        """Sends one tick of intent: move axes in [-1, 1], facing in radians (default: along the move)."""
        if yaw is None:
            yaw = math.atan2(move_x, move_z) if (move_x or move_z) else 0.0
        self.input_seq += 1
        inp = Input(
            seq=self.input_seq,
            move_x=int(round(max(-1.0, min(1.0, move_x)) * 127)),
            move_z=int(round(max(-1.0, min(1.0, move_z)) * 127)),
            yaw=int(round((yaw % (2 * math.pi)) / (2 * math.pi) * 65536)) % 65536,
            anim=anim,
            flags=FLAG_JUMP if jump else 0,
        )
        self.recent.append(inp)
        if self.connected:
            await self._send(self.conn.packet(P.INPUT, encode_inputs(list(self.recent)), trio.current_time()))
        return inp

    async def wait_until(self, predicate: Callable[["WorldClient"], bool], timeout: float) -> bool:
        """Waits until ``predicate(self)`` holds after a snapshot; False on timeout or disconnect."""
        with trio.move_on_after(timeout):
            while not predicate(self):
                if not self.connected:
                    return False
                await self._changed.wait()
            return True
        return False

    async def close(self) -> None:
        if self.connected:
            data = self.conn.disconnect(trio.current_time())
            await self._send(data)
            await self._send(data)


@asynccontextmanager
async def open_client(host: str, port: int, *, http: str | None = None, name: str | None = None,
                      secret: str | None = None, joined: Joined | None = None, world: str | None = None,
                      connect_timeout: float = 5.0, timeout: float = 5.0) -> AsyncIterator[WorldClient]:
    """Connects to the UDP endpoint ``host:port``.

    ``http`` (the server's ``http://host:port``) and ``name`` (default: a random ``py-...``)
    join first, with ``secret`` to take back a name joined before, into the world ``world``
    (None: the server's default); ``joined`` is a join made
    already (its connect token must be unused: ``worldclient.join.refresh`` gives a new one).
    Without either the client is anonymous, which only a server with
    ``net.require_connect_token = false`` accepts. Raises :class:`ConnectFailed` (``reason``:
    a REFUSE reason such as ``token_required``, or ``handshake_timeout``) and
    ``worldclient.join.JoinFailed``.
    """
    if joined is None and http is not None:
        joined = await join(http, name or f"py-{os.urandom(4).hex()}", secret=secret,
                            timeout=connect_timeout, world=world)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_DGRAM)
    with sock:
        await sock.connect((host, port))
        conn = ClientConnection(
            version=PROTOCOL_VERSION, nonce=int.from_bytes(os.urandom(8), "little"), timeout=timeout,
            token=joined.connect_token if joined else b"", key=joined.connect_key if joined else b"",
        )
        client = WorldClient(sock, conn)
        client.joined = joined
        await client._handshake(trio.current_time() + connect_timeout)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client._receive_loop)
            nursery.start_soon(client._poll_loop)
            try:
                yield client
            finally:
                with trio.CancelScope(shield=True):
                    await client.close()
                nursery.cancel_scope.cancel()
