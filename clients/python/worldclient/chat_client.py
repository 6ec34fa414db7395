"""A trio client for worldserver's chat (``/ws/chat``): requests, events, reconnects.

``async with open_chat(url, token) as chat:`` connects (``url`` is ``ws://host:port/ws/chat``
or just the server's ``http://host:port``), says ``hello`` with the join token from
``POST /api/join`` and keeps the connection: requests are matched to their replies by id, each
with a deadline (:meth:`ChatClient.request`, and helpers such as ``send``, ``history``,
``since``, ``search``, ``join``), server events arrive on a bounded stream
(:meth:`ChatClient.next_event`, :meth:`ChatClient.events`) or go to an ``on_event`` callback.
A lost connection is re-opened with backoff, and the ``hello`` then carries ``since`` -- the
newest message id seen in each room -- so the missed messages come back exactly once, as
``message`` events marked ``replayed`` (live messages already seen are dropped by id); but a
socket closed with 4001 (a kick) or 4002 (the player logged in again elsewhere) is not
re-opened: either way the token is dead. A WebSocket ping every ``ping_interval`` seconds keeps an idle connection open.

Must not: import the server package (a client knows only the wire, ``protocol.chat``), keep
unbounded state (the event buffer is bounded; overflow is counted in ``events_dropped``), or
wait without a deadline.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from protocol import chat as P

__all__ = ["ChatClient", "ChatDisconnected", "ChatEvent", "ChatRequestError", "chat_url", "open_chat"]

BACKOFF_MIN = 0.2
BACKOFF_MAX = 5.0
CLOSE_KICKED = 4001  # the server's operator or a moderator kicked the player (the reason says why)
CLOSE_REPLACED = 4002  # the server closed the socket because this player logged in again
SINCE_PAGE = 500  # msg.since page size when catching up after a reconnect
CLOSE_WAIT = 3.0  # seconds aclose waits for the close handshake


class ChatRequestError(Exception):
    """The server answered a request with an error (``code`` as in protocol.chat)."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after


class ChatDisconnected(Exception):
    """The connection ended (or could not be made) before the reply came."""


class ChatEvent:
    """A server event: ``name`` (``message``, ``typing``, ...) and its ``fields``;
    ``replayed`` is True for messages that were missed while disconnected."""

    __slots__ = ("name", "fields", "replayed", "received")

    def __init__(self, name: str, fields: dict, replayed: bool = False, received: float = 0.0) -> None:
        self.name = name
        self.fields = fields
        self.replayed = replayed
        self.received = received

    def __repr__(self) -> str:
        return f"ChatEvent({self.name!r}, {self.fields!r}, replayed={self.replayed})"


def chat_url(url: str) -> str:
    """``http(s)://host:port[/...]`` or ``ws(s)://...`` -> the ``ws(s)://host:port/ws/chat`` URL."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"not an http(s) or ws(s) URL: {url!r}")
    path = parts.path if parts.path.endswith("/ws/chat") else "/ws/chat"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


class _Pending:
    __slots__ = ("done", "reply", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.reply: dict | None = None
        self.error: Exception | None = None


class ChatClient:
    """One chat user's connection; made by :func:`open_chat` (see the module docstring)."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        admin_token: str | None = None,
        reconnect: bool = True,
        timeout: float = 10.0,
        event_buffer: int = 1024,
        on_event: Callable[[ChatEvent], None] | None = None,
        ping_interval: float = 20.0,
    ) -> None:
        self.url = chat_url(url)
        self.token = token
        self.admin_token = admin_token
        self.reconnect = reconnect
        self.timeout = timeout
        self.on_event = on_event
        self.ping_interval = ping_interval
        self.hello: dict = {}  # the fields of the newest hello reply
        self.user: str | None = None
        self.moderator = False
        self.public_room: int | None = None
        self.last_ids: dict[int, int] = {}  # room -> newest message id seen (sent on reconnect)
        self.connects = 0
        self.disconnects = 0
        self.close_code: int | None = None  # of the last connection that ended
        self.close_reason: str | None = None
        self.last_error: Exception | None = None
        self.duplicates = 0  # live messages dropped because they were already seen
        self.events_dropped = 0  # events not queued because the buffer was full
        self.replayed = 0  # missed messages delivered after a reconnect
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._ws = None
        self._ready = trio.Event()  # set while connected and past hello
        self._first = trio.Event()  # set once the first connection succeeded or failed
        self._first_error: Exception | None = None
        self._closing = False
        self._session_scope: trio.CancelScope | None = None
        self._run_scope: trio.CancelScope | None = None
        self._run_done = trio.Event()
        self._event_send, self._event_receive = trio.open_memory_channel(max(0, event_buffer))
        self._buffer = event_buffer

    # ------------------------------------------------------------------ requests

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    async def request(self, op: str, *, timeout: float | None = None, **fields: Any) -> dict:
        """Send one request and return its reply's fields; raises ChatRequestError for an
        error reply, ChatDisconnected if the connection ended first, trio.TooSlowError after
        ``timeout`` (default: the client's)."""
        with trio.fail_after(self.timeout if timeout is None else timeout):
            await self._ready.wait()
            return await self._request_now(op, fields)

    async def _request_now(self, op: str, fields: dict) -> dict:
        ws = self._ws
        if ws is None:
            raise ChatDisconnected("not connected")
        request_id = next(self._ids)
        frame = {"id": request_id, "op": op}
        frame.update({k: v for k, v in fields.items() if v is not None})
        pending = self._pending[request_id] = _Pending()
        try:
            try:
                await ws.send_message(json.dumps(frame, ensure_ascii=False, separators=(",", ":")))
            except ConnectionClosed:
                raise ChatDisconnected("connection closed") from None
            await pending.done.wait()
        finally:
            self._pending.pop(request_id, None)
        if pending.error is not None:
            raise pending.error
        return pending.reply

    async def send(self, room: int, text: str | None = None, *, kind: str = "text",
                   image: str | None = None, client_id: str | None = None,
                   timeout: float | None = None) -> dict:
        """Send a message; returns the stored message (acknowledged = committed)."""
        reply = await self.request("msg.send", room=room, kind=kind, text=text, image=image,
                                   client_id=client_id, timeout=timeout)
        message = reply["message"]
        self._seen(room, message["id"])
        return message

    async def history(self, room: int, before: int | None = None, limit: int = 50) -> tuple[list, bool]:
        reply = await self.request("msg.history", room=room, before=before, limit=limit)
        return reply["messages"], bool(reply.get("more"))

    async def since(self, room: int, after: int, limit: int = 100) -> tuple[list, bool]:
        reply = await self.request("msg.since", room=room, after=after, limit=limit)
        return reply["messages"], bool(reply.get("more"))

    async def search(self, room: int, query: str, limit: int = 20) -> list:
        return (await self.request("msg.search", room=room, query=query, limit=limit))["messages"]

    async def rooms(self) -> list:
        return (await self.request("rooms.list"))["rooms"]

    async def create_room(self, name: str, private: bool = False) -> dict:
        room = (await self.request("room.create", name=name, private=private))["room"]
        self.last_ids.setdefault(room["id"], 0)
        return room

    async def join(self, room: int) -> dict:
        reply = await self.request("room.join", room=room)
        newest = max((m["id"] for m in reply.get("messages", ())), default=0)
        self._seen(room, newest)
        return reply

    async def leave(self, room: int) -> dict:
        reply = await self.request("room.leave", room=room)
        self.last_ids.pop(room, None)
        return reply

    async def members(self, room: int) -> list:
        return (await self.request("room.members", room=room))["members"]

    async def invite(self, room: int, user: str) -> dict:
        return await self.request("room.invite", room=room, user=user)

    async def typing(self, room: int, active: bool = True) -> dict:
        return await self.request("typing", room=room, active=active)

    # ------------------------------------------------------------------ events

    async def next_event(self, timeout: float | None = None) -> ChatEvent:
        """The next event (trio.TooSlowError after ``timeout``, default: the client's)."""
        with trio.fail_after(self.timeout if timeout is None else timeout):
            return await self._event_receive.receive()

    async def wait_for(self, predicate: Callable[[ChatEvent], bool], timeout: float | None = None) -> ChatEvent:
        """The next event for which ``predicate`` is true (others are consumed)."""
        with trio.fail_after(self.timeout if timeout is None else timeout):
            while True:
                event = await self._event_receive.receive()
                if predicate(event):
                    return event

    async def events(self) -> AsyncIterator[ChatEvent]:
        async for event in self._event_receive:
            yield event

    def pending_events(self) -> list[ChatEvent]:
        """Every event queued now, without waiting."""
        out = []
        while True:
            try:
                out.append(self._event_receive.receive_nowait())
            except trio.WouldBlock:
                return out

    def _emit(self, event: ChatEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)
        if self._buffer <= 0:
            return
        try:
            self._event_send.send_nowait(event)
        except trio.WouldBlock:
            self.events_dropped += 1

    def _seen(self, room: int, message_id: int) -> None:
        self.last_ids[room] = max(message_id, self.last_ids.get(room, 0))

    def _message(self, room: int, message: dict, replayed: bool, received: float) -> None:
        """Deliver a message event unless it was seen already (ids grow within a room)."""
        message_id = message.get("id", 0)
        if message_id <= self.last_ids.get(room, 0):
            self.duplicates += 1
            return
        self.last_ids[room] = message_id
        if replayed:
            self.replayed += 1
        self._emit(ChatEvent("message", {"room": room, "message": message}, replayed, received))

    # ------------------------------------------------------------------ connection

    async def _run(self) -> None:
        try:
            with trio.CancelScope() as self._run_scope:
                await self._connect_loop()
        finally:
            self._run_done.set()

    async def _connect_loop(self) -> None:
        backoff = BACKOFF_MIN
        while not self._closing:
            try:
                async with open_websocket_url(
                    self.url, connect_timeout=self.timeout, disconnect_timeout=2.0,
                    max_message_size=4 * 1024 * 1024,
                ) as ws:
                    await self._session(ws)
                    backoff = BACKOFF_MIN
            except (HandshakeError, ConnectionClosed, OSError, trio.TooSlowError,
                    ChatDisconnected, ChatRequestError, trio.BrokenResourceError) as exc:
                self.last_error = exc
                if isinstance(exc, ConnectionClosed) and exc.reason is not None:
                    self.close_code, self.close_reason = exc.reason.code, exc.reason.reason
                if not self._first.is_set():
                    self._first_error = exc
                    self._first.set()
            finally:
                self._lost()
            if not self.reconnect or self._closing or self.close_code in (CLOSE_KICKED, CLOSE_REPLACED):
                break  # (a kick or a newer login of this player closed us: its token is dead)
            await trio.sleep(backoff)
            backoff = min(BACKOFF_MAX, backoff * 2)
        if not self._first.is_set():
            self._first_error = self._first_error or ChatDisconnected("closed")
            self._first.set()

    def _lost(self) -> None:
        if self._ws is not None:
            self.disconnects += 1
        self._ws = None
        self._ready = trio.Event()
        for pending in self._pending.values():
            if not pending.done.is_set():
                pending.error = ChatDisconnected("connection lost")
                pending.done.set()

    async def _session(self, ws) -> None:
        self._ws = ws
        failed: Exception | None = None
        async with trio.open_nursery() as nursery:
            self._session_scope = nursery.cancel_scope
            nursery.start_soon(self._reader, ws, nursery.cancel_scope)
            since = dict(self.last_ids)
            fields: dict[str, Any] = {"token": self.token}
            if self.admin_token is not None:
                fields["admin_token"] = self.admin_token
            if since:
                fields["since"] = {str(k): v for k, v in since.items()}
            try:
                with trio.fail_after(self.timeout):
                    reply = await self._request_now("hello", fields)
                    await self._on_hello(reply, since)
            except (ChatRequestError, ChatDisconnected, trio.TooSlowError) as exc:
                failed = exc  # raised below, outside the nursery (no exception group)
                nursery.cancel_scope.cancel()
            else:
                self.connects += 1
                self._ready.set()
                if not self._first.is_set():
                    self._first.set()
                nursery.start_soon(self._pinger, ws)
        if failed is not None:
            raise failed
        # the reader ended (connection closed): raise so that _run records why
        if ws.closed is not None:
            raise ConnectionClosed(ws.closed)

    async def _on_hello(self, reply: dict, since: dict[int, int]) -> None:
        self.hello = reply
        self.user = reply.get("user")
        self.moderator = bool(reply.get("moderator"))
        self.public_room = reply.get("public_room")
        now = trio.current_time()
        pages = []
        for room in reply.get("rooms", ()):
            if not room.get("joined"):
                continue
            room_id = room["id"]
            messages = room.get("messages", [])
            if room_id in since:
                for message in messages:
                    self._message(room_id, message, True, now)
                if room.get("more"):
                    pages.append(room_id)
            else:
                newest = max((m["id"] for m in messages), default=0)
                self.last_ids[room_id] = max(newest, self.last_ids.get(room_id, 0))
        for room_id in pages:  # more was missed than the hello reply held: page on
            while True:
                with trio.fail_after(self.timeout):
                    page = await self._request_now(
                        "msg.since", {"room": room_id, "after": self.last_ids.get(room_id, 0),
                                      "limit": SINCE_PAGE})
                for message in page.get("messages", ()):
                    self._message(room_id, message, True, trio.current_time())
                if not page.get("more") or not page.get("messages"):
                    break

    async def _pinger(self, ws) -> None:
        while True:
            await trio.sleep(self.ping_interval)
            with trio.move_on_after(self.timeout):
                try:
                    await ws.ping()
                except (ConnectionClosed, trio.BrokenResourceError):
                    return

    async def _reader(self, ws, scope: trio.CancelScope) -> None:
        try:
            while True:
                text = await ws.get_message()
                received = trio.current_time()
                try:
                    frame = P.decode_server_frame(text)
                except P.ChatProtocolError:
                    continue
                if isinstance(frame, P.Event):
                    self._on_event(frame, received)
                    continue
                pending = self._pending.get(frame.re) if frame.re is not None else None
                if pending is None:
                    continue
                if isinstance(frame, P.ErrorReply):
                    pending.error = ChatRequestError(frame.code, frame.message, frame.retry_after)
                else:
                    pending.reply = frame.fields
                pending.done.set()
        except ConnectionClosed as exc:
            if exc.reason is not None:
                self.close_code, self.close_reason = exc.reason.code, exc.reason.reason
        finally:
            self._lost()
            scope.cancel()

    def _on_event(self, frame: P.Event, received: float) -> None:
        fields = frame.fields
        if frame.ev == "message" and isinstance(fields.get("message"), dict):
            self._message(fields.get("room"), fields["message"], False, received)
            return
        if frame.ev == "room.deleted":
            self.last_ids.pop(fields.get("room"), None)
        elif frame.ev == "room.member" and fields.get("user") == self.user:
            if fields.get("action") == "left":
                self.last_ids.pop(fields.get("room"), None)
            else:
                self.last_ids.setdefault(fields.get("room"), 0)
        self._emit(ChatEvent(frame.ev, fields, False, received))

    async def aclose(self) -> None:
        """Stop reconnecting and close the connection (a normal 1000 close, waited for at
        most ``CLOSE_WAIT`` seconds)."""
        self._closing = True
        if self._session_scope is not None:
            # Leaving open_websocket_url's block closes the socket with the handshake, while
            # trio_websocket's own reader still runs to see the answer.
            self._session_scope.cancel()
        if self._run_scope is not None and self._ws is None:
            self._run_scope.cancel()  # between connections: nothing to close
        with trio.move_on_after(CLOSE_WAIT):
            await self._run_done.wait()


@asynccontextmanager
async def open_chat(
    url: str,
    token: str,
    *,
    admin_token: str | None = None,
    reconnect: bool = True,
    timeout: float = 10.0,
    event_buffer: int = 1024,
    on_event: Callable[[ChatEvent], None] | None = None,
    ping_interval: float = 20.0,
) -> AsyncIterator[ChatClient]:
    """Connect and say hello (raises ChatRequestError / ChatDisconnected / trio.TooSlowError
    if the first connection fails); reconnects until the block ends."""
    client = ChatClient(url, token, admin_token=admin_token, reconnect=reconnect, timeout=timeout,
                        event_buffer=event_buffer, on_event=on_event, ping_interval=ping_interval)
    failed: BaseException | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client._run)
        with trio.move_on_after(timeout + 1.0) as waited:
            await client._first.wait()
        if waited.cancelled_caught:
            failed = trio.TooSlowError("chat connection timed out")
        elif client._first_error is not None and not client._ready.is_set():
            failed = client._first_error
        if failed is not None:
            client._closing = True
            nursery.cancel_scope.cancel()
        else:
            try:
                yield client
            except BaseException as exc:  # re-raised below as it is, not in an exception group
                failed = exc
            finally:
                client._closing = True
                await client.aclose()
                nursery.cancel_scope.cancel()
    if failed is not None:
        raise failed


def retry_after_seconds(error: ChatRequestError) -> float:
    """How long to wait after a rate_limited or muted error (0 if it says nothing)."""
    return 0.0 if error.retry_after is None else max(0.0, math.ceil(error.retry_after * 1000) / 1000)
