"""The chat's HTTP side: the ``/ws/chat`` WebSocket and the image upload and download routes.

Job: :func:`chat_endpoint` runs one chat WebSocket: a reader that takes JSON text frames,
decodes them with ``protocol.chat`` and hands the requests, one at a time and in order, to the
:class:`~worldserver.chat.service.ChatService`. Outbound frames (at most
:data:`~worldserver.chat.peers.OUTBOX_LIMIT` unsent per socket) go through the shared
:class:`~worldserver.chat.fanout.Fanout` when the connection is plain HTTP/1.1 (one pump task,
non-blocking sends; the ASGI app puts hypercorn's ``send`` in the scope under
:data:`RAW_SEND_KEY` so that the connection can be found), otherwise through a writer task
per socket that drains a bounded memory channel into the ASGI ``send``. A bad frame is
answered with an error frame naming the problem and the connection stays usable; only abuse
closes it: a frame over 16 KiB (1009), more than :data:`BAD_FRAME_LIMIT` bad frames within
:data:`BAD_FRAME_WINDOW` seconds (1008), a client that does not read (1008 "too slow"). The
service closes sockets too (a moderator's kick: 4001), and a stopping server closes them
with 1001. On both paths a close sends the frames queued before it first (a kick's last
events), for at most ``CLOSE_TIMEOUT / 2``, then the close frame; a peer that has not taken
them ``CLOSE_TIMEOUT`` after the close began has its connection cut (hypercorn shields its
socket writes from cancellation, so a deadline alone would wait for a peer that does not
read; over HTTP/2 -- which ``http_guard`` no longer lets a client speak -- other streams
would share the connection, so it would not be cut and the task would wait for hypercorn's write). The frames left
then are counted (``drop.chat_close_unsent``), a cut too (``drop.chat_close_aborted``).
:func:`upload_image` (``POST /api/chat/images``, join token as ``Authorization: Bearer``) has
an image checked and re-encoded in a worker process with memory and time limits
(``worldserver.chat.image_pool``) and stores it; :func:`get_image` (``GET
/api/chat/images/{id}``) serves a stored one.

Must not: decide anything about rooms, users or permissions (the service does), block the
trio thread (Pillow works in worker processes, files in worker threads), wait without a deadline, or let a
network peer make it hold unbounded data: frames, bodies and queues all have limits, and every
drop is counted in ``stats`` (``drop.chat_*``).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import socket
from collections import deque

import trio
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.websockets import WebSocket

from protocol import chat as P
from worldserver.chat.fanout import Fanout, raw_connection
from worldserver.chat.peers import OUTBOX_LIMIT, Peer
from worldserver.http_common import BodyError, read_body
from worldserver.http_guard import accept_websocket, connection_of, refuse_websocket
from worldserver.logs import get_logger

__all__ = [
    "BAD_FRAME_LIMIT",
    "BAD_FRAME_WINDOW",
    "CHAT_IDLE_TIMEOUT",
    "CLOSE_TIMEOUT",
    "RAW_SEND_KEY",
    "chat_endpoint",
    "get_image",
    "read_upload",
    "upload_image",
]

log = get_logger("worldserver.chat.gateway")

BAD_FRAME_LIMIT = 20  # more bad frames than this within the window close the socket (1008)
BAD_FRAME_WINDOW = 10.0
# Seconds without a frame before the socket is closed (1001). hypercorn's own read timeout
# (http_server.READ_TIMEOUT, 60 s of silence) usually comes first: clients send something (a
# WebSocket ping is enough) at least every 30 s.
CHAT_IDLE_TIMEOUT = 120.0
CLOSE_TIMEOUT = 2.0  # seconds to wait for a send in progress before giving up on a close
BODY_TIMEOUT = 30.0  # seconds to receive an upload
DRAIN_CAP = 16 * 1024 * 1024  # a too-large upload up to this size is read and dropped first
RAW_SEND_KEY = "worldserver.asgi_send"  # scope["extensions"] key of the server's own ASGI send
_numbers = itertools.count(1)


class _ChatSocket:
    """One ``/ws/chat`` connection: its peer, reader, writer and close."""

    def __init__(self, websocket: WebSocket, chat, stats, idle_timeout: float,
                 fanout: Fanout | None = None) -> None:
        self.ws = websocket
        self.chat = chat
        self.stats = stats
        self.idle_timeout = idle_timeout
        self.lock = trio.Lock()  # one ASGI send at a time (data or close)
        self.ws_closed = False
        self.cut = False  # the connection was shut down (close_ws gave up on the peer)
        self.code = 1000
        self.reason = "bye"
        self.scope: trio.CancelScope | None = None
        self.bad_frames: deque[float] = deque(maxlen=BAD_FRAME_LIMIT + 1)
        client = websocket.client
        where = f"{client.host}:{client.port}" if client else "?"
        self.key = f"chat:{where}#{next(_numbers)}"
        raw = (websocket.scope.get("extensions") or {}).get(RAW_SEND_KEY)
        conn = raw_connection(raw) if fanout is not None and fanout.running and raw else None
        if conn is not None:
            self.out = fanout.open(*conn, OUTBOX_LIMIT, self._send_failed)
            self.receive_channel = None
            outbox = self.out
            stats.incr("chat.sockets_fanout")
        else:
            self.out = None
            outbox, self.receive_channel = trio.open_memory_channel(OUTBOX_LIMIT)
            stats.incr("chat.sockets_asgi")
        self.raw_send = raw
        # The ASGI writer's scope: after a close it sends what was queued until its deadline
        # (CLOSE_TIMEOUT / 2 after the close), as the fan-out path drains (close_ws).
        self.writer_scope = trio.CancelScope()
        self.writer_done = trio.Event()
        self.peer = Peer(self.key, outbox, self.request_close, stats)
        self.peer.address = client.host if client else None  # for the per-address chat limit

    def _send_failed(self) -> None:
        self.ws_closed = True
        self.peer.close(1006, "send failed")

    def request_close(self, code: int, reason: str) -> None:
        """Called by the peer (once): close with ``code`` as soon as possible; what was queued
        before goes out first (within the drain deadline)."""
        self.code, self.reason = code, reason
        self._stop_queueing()
        if self.scope is not None:
            self.scope.cancel()

    def _stop_queueing(self) -> None:
        """No new frames; the ASGI writer sends the queued ones until CLOSE_TIMEOUT / 2 from
        now (the first call sets the deadline)."""
        self.peer.outbox.close()
        if self.writer_scope.deadline == math.inf:
            self.writer_scope.deadline = trio.current_time() + CLOSE_TIMEOUT / 2

    async def close_ws(self) -> None:
        """The frames queued before the close, then the close frame; a peer that has not taken
        them CLOSE_TIMEOUT after this starts has its connection cut (hypercorn shields its
        socket writes from cancellation: a deadline alone would wait for a peer that does not
        read)."""
        self._stop_queueing()
        deadline = trio.current_time() + CLOSE_TIMEOUT
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._cut_at, deadline)
            with trio.move_on_at(deadline) as scope:
                await self._close_in_order()
            if scope.cancelled_caught:
                self._cut("close timed out")
            nursery.cancel_scope.cancel()

    async def _cut_at(self, deadline: float) -> None:
        await trio.sleep_until(deadline)
        self._cut("close timed out")

    async def _close_in_order(self) -> None:
        if self.out is None:
            await self.writer_done.wait()  # it sends what was queued (until its deadline)
        async with self.lock:
            if self.ws_closed:
                return
            self.ws_closed = True
            out = self.out
            if out is not None:  # the queued frames first, then hypercorn's close frame
                if not await out.drain(CLOSE_TIMEOUT / 2) and not out.dead:
                    self.stats.incr("drop.chat_close_unsent", out.unsent)
                half_written = out.mid_frame
                out.detach()
                if half_written:  # a close frame now would corrupt the stream: cut it
                    self._cut("close with a frame half written")
                    return
            try:
                await self.ws.close(code=self.code, reason=self.reason)
            except Exception as exc:  # the peer went away meanwhile
                log.debug("chat close failed", key=self.key, error=repr(exc))

    def _cut(self, why: str) -> None:
        """Shut the connection's socket down (once, counted ``drop.chat_close_aborted``): a
        write in progress fails and hypercorn ends the connection. Not over HTTP/2 (other
        streams share the connection, and it cannot be found from the ASGI ``send``)."""
        if self.cut:
            return
        if self.out is not None:
            sock = self.out.sock
        else:
            conn = connection_of(self.raw_send) if self.raw_send is not None else None
            stream = conn[0] if conn is not None else None
            if isinstance(stream, trio.SSLStream):
                stream = stream.transport_stream
            sock = stream.socket if isinstance(stream, trio.SocketStream) else None
        if sock is None:
            log.debug("chat close cannot be cut", key=self.key, why=why)
            return
        self.cut = self.ws_closed = True
        self.stats.incr("drop.chat_close_aborted")
        log.debug("chat connection cut", key=self.key, why=why)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    async def writer(self) -> None:
        """Send queued frames in order; everything already queued goes out in one turn
        (one wakeup, one lock), straight through the ASGI ``send``. After a close it sends
        what is left until its scope's deadline (CLOSE_TIMEOUT / 2); frames still queued then
        are counted (``drop.chat_close_unsent``)."""
        channel = self.receive_channel
        try:
            with self.writer_scope:
                await self._send_queued(channel)
        finally:
            left = channel.statistics().current_buffer_used
            channel.close()
            self.writer_done.set()
        if left and (self.writer_scope.cancelled_caught or self.cut):
            self.stats.incr("drop.chat_close_unsent", left)

    async def _send_queued(self, channel: trio.MemoryReceiveChannel) -> None:
        send = self.ws.send  # Starlette's public send (state checks, then the ASGI send)
        async for frame in channel:
            async with self.lock:
                while True:
                    if self.ws_closed:
                        return
                    try:
                        await send({"type": "websocket.send", "text": frame})
                    except Exception as exc:
                        log.debug("chat send failed", key=self.key, error=repr(exc))
                        if not self.cut:  # (a cut connection fails the send in progress)
                            self.stats.incr("drop.chat_send_failed")
                        self.ws_closed = True
                        self.peer.close(1006, "send failed")
                        return
                    self.stats.incr("chat.bytes_out", len(frame.encode("utf-8", "surrogatepass")))
                    try:
                        frame = channel.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break

    async def watch_shutdown(self, stopping: trio.Event) -> None:
        await stopping.wait()
        self.peer.close(1001, "server shutting down")

    def _bad_frame(self, now: float) -> bool:
        """Count a bad frame; True if that is too many (the socket is then being closed)."""
        self.stats.incr("drop.chat_bad_frame")
        frames = self.bad_frames
        frames.append(now)
        if len(frames) > BAD_FRAME_LIMIT and now - frames[0] <= BAD_FRAME_WINDOW:
            self.stats.incr("drop.chat_closed_bad_frames")
            self.peer.close(1008, f"too many bad frames (over {BAD_FRAME_LIMIT} in {BAD_FRAME_WINDOW:g} s)")
            return True
        return False

    async def reader(self) -> None:
        chat, peer = self.chat, self.peer
        while not peer.closed:
            message = None
            with trio.move_on_after(self.idle_timeout):
                message = await self.ws.receive()
            if message is None:
                peer.close(1001, "idle timeout")
                return
            if message["type"] == "websocket.disconnect":
                self.ws_closed = True
                peer.close(int(message.get("code") or 1005), "client closed")
                return
            self.stats.incr("chat.frames_in")
            now = trio.current_time()
            text = message.get("text")
            size = len(text.encode("utf-8", "surrogatepass")) if text is not None else len(message.get("bytes") or b"")
            self.stats.incr("chat.bytes_in", size)
            if text is None:
                peer.send(P.encode_error(None, "bad_frame", "binary frames are not supported; send JSON text frames"))
                if self._bad_frame(now):
                    return
                continue
            if size > P.MAX_FRAME_BYTES:
                self.stats.incr("drop.chat_frame_too_big")
                peer.close(1009, f"frame too big (max {P.MAX_FRAME_BYTES} bytes)")
                return
            try:
                request = P.decode_client_frame(text)
            except P.ChatProtocolError as exc:
                peer.send(P.error_for(exc))
                if self._bad_frame(now):
                    return
                continue
            await chat.handle(peer, request)


async def chat_endpoint(websocket: WebSocket) -> None:
    """``WS /ws/chat`` (see the module docstring)."""
    state = websocket.app.state
    chat = getattr(state, "chat", None)
    if chat is None:
        await refuse_websocket(websocket, state.stats)  # before accept: hypercorn answers 403
        return
    if not await accept_websocket(websocket, state.stats):
        return
    idle = getattr(state, "chat_idle_timeout", CHAT_IDLE_TIMEOUT)
    sock = _ChatSocket(websocket, chat, state.stats, idle, getattr(state, "chat_fanout", None))
    chat.add_peer(sock.peer)
    # The ASGI path's writer outlives the reader: after a close it still sends what was queued
    # before it (close_ws waits for that, with deadlines), as the fan-out path drains.
    async with trio.open_nursery() as writers:
        if sock.out is None:
            writers.start_soon(sock.writer)
        await _serve(sock, chat, state)


async def _serve(sock: _ChatSocket, chat, state) -> None:
    """Read until the socket closes, then close it (the module docstring)."""
    try:
        async with trio.open_nursery() as nursery:
            sock.scope = nursery.cancel_scope
            if sock.peer.closed:  # closed before the scope existed
                nursery.cancel_scope.cancel()
            nursery.start_soon(sock.watch_shutdown, state.stopping)
            await sock.reader()
            # The reader ended: a close was requested.
            nursery.cancel_scope.cancel()
    except Exception:
        log.exception("chat socket failed", key=sock.key)
        sock.peer.close(1011, "server error")
    finally:
        sock.peer.close(1001, "server shutting down")  # if nothing else closed it: cancelled
        with trio.CancelScope(shield=True):
            try:
                chat.remove_peer(sock.peer)
            except Exception:
                log.exception("chat remove_peer failed", key=sock.key)
            await sock.close_ws()
            if sock.out is not None:
                sock.out.detach()


# -- images ------------------------------------------------------------------------------------


def _json_error(status: int, code: str, message: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"error": message, "code": code, **extra}, status_code=status, headers=headers)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization") or ""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def read_upload(request: Request, limit: int, stats) -> bytes:
    """An image upload's body (at most ``limit`` bytes, within :data:`BODY_TIMEOUT`, a
    too-large one of up to :data:`DRAIN_CAP` bytes read and dropped first), read by
    :func:`worldserver.http_common.read_body`; refused as ``ImageRejected`` with the chat's
    codes: 413 ``too_large``, 408 ``timeout``, 400 ``bad_request`` (a bad length, or the
    client went away: ``drop.http_client_disconnect``). Chat images are read with it here,
    pictures hung through the admin API in ``worldserver.world_admin``."""
    from worldserver.chat.images import ImageRejected

    try:
        return await read_body(request, limit, stats, timeout=BODY_TIMEOUT, drain_limit=DRAIN_CAP)
    except BodyError as exc:
        message = {413: f"the image is larger than {limit} bytes", 408: "the upload took too long",
                   400: "bad Content-Length"}[exc.status]
        raise ImageRejected(exc.code, message, exc.status) from None


async def upload_image(request: Request) -> Response:
    """``POST /api/chat/images``: the raw image bytes as the body -> 201 ``{"id", ...}``."""
    from worldserver.chat.images import ImageRejected

    state = request.app.state
    chat = getattr(state, "chat", None)
    if chat is None or chat.images is None:
        return _json_error(503, "unavailable", "chat images are not enabled")
    token = _bearer(request)
    name = state.identities.name_for(token) if token else None
    if name is None:
        return _json_error(401, "not_authenticated", "send the join token as Authorization: Bearer <token>",
                           headers={"WWW-Authenticate": "Bearer"})
    wait = chat.upload_wait(name)
    if wait > 0:
        seconds = int(wait) + 1
        return _json_error(429, "rate_limited", "too many uploads", headers={"Retry-After": str(seconds)},
                           retry_after=round(wait, 3))
    workers = chat.image_workers
    try:
        workers.check_room()  # before the body: a queue of waiting uploads holds their bodies
    except ImageRejected as exc:
        chat.stats.incr("drop.chat_image_rejected")
        return _json_error(exc.status, exc.code, exc.message, headers={"Retry-After": "1"})
    try:
        body = await read_upload(request, chat.max_image_bytes, chat.stats)
        clean = await workers.process(body)
        del body
        image_id = await trio.to_thread.run_sync(chat.images.save, clean, limiter=chat.image_limiter)
    except ImageRejected as exc:
        chat.stats.incr("drop.chat_image_rejected")
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        return _json_error(exc.status, exc.code, exc.message, headers=headers)
    chat.stats.incr("chat.images")
    log.debug("chat image stored", id=image_id, user=name, type=clean.content_type, bytes=len(clean.data))
    return JSONResponse(
        {"id": image_id, "type": clean.content_type, "width": clean.width, "height": clean.height,
         "bytes": len(clean.data), "url": f"/api/chat/images/{image_id}"},
        status_code=201,
    )


async def get_image(request: Request) -> Response:
    """``GET /api/chat/images/{id}``: a stored image (ids are unguessable; no token needed,
    so that ``<img src>`` works)."""
    chat = getattr(request.app.state, "chat", None)
    if chat is None or chat.images is None:
        return _json_error(404, "not_found", "no such image")
    found = await trio.to_thread.run_sync(chat.images.find, request.path_params["id"])
    if found is None:
        return _json_error(404, "not_found", "no such image")
    path, content_type = found
    return FileResponse(
        path,
        media_type=content_type,
        headers={
            "Cache-Control": "public, max-age=31536000, immutable",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'",
        },
    )
