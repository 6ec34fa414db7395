"""A Python client for geckos.io 3.x servers (worldserver's WebRTC transport), for tests and bots.

It does on the wire what ``@geckos.io/client`` does: ``POST <base>/.wrtc/v2/connections``
(with ``Authorization`` if given), takes the server's offer, answers it with aiortc, ``POST``s
the answer to ``.../remote-description``, polls ``.../additional-candidates`` on geckos'
schedule (50, 90, 162, ... ms) until the data channel is open, and on close ``POST``s
``.../close``. The server creates the only data channel; this client receives it.

Arrangement: aiortc is asyncio-only, so this is a **trio** API that must run as a trio guest
on the asyncio loop, i.e. inside :func:`worldclient.aio_bridge.run`::

    from worldclient import aio_bridge
    from worldclient.rtc_client import open_geckos

    async def main():
        async with await open_geckos("http://127.0.0.1:8080") as channel:
            channel.send_binary(b"...")
            print(await channel.receive(timeout=2))

    aio_bridge.run(main)

HTTP goes through httpx (its trio backend). ``host_addresses`` makes aioice gather on those
addresses only (:mod:`worldclient.ice`; loopback tests: aioice leaves out 127.0.0.1 otherwise).

Must not: import ``worldserver`` (a client library runs without the server), know the native
protocol or the world (it carries messages, bytes or text, as they are), use any ICE server
unless given one, or leave a peer connection open after ``close()``.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import trio
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.sdp import candidate_from_sdp

from worldclient.aio_bridge import Inbox, aio
from worldclient.ice import ice_host_addresses

PREFIX = "/.wrtc/v2"
LABEL = "geckos.io"
CLOSE_WAIT = 5.0


class GeckosError(Exception):
    """Signaling failed; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class GeckosClosed(Exception):
    """The channel is closed and every received message has been read."""


def poll_delays(rng: random.Random | None = None) -> list[float]:
    """geckos' additional-candidates schedule in seconds: int(50 * 1.8**i) + jitter 0-19 ms."""
    rng = rng or random.Random()
    return [(int(50 * 1.8**i) + int(rng.random() * 20)) / 1000 for i in range(10)]


async def _answer(pc: RTCPeerConnection, offer: RTCSessionDescription,
                  host_addresses: Sequence[str]) -> RTCSessionDescription:
    """(asyncio) setRemoteDescription(offer), createAnswer, setLocalDescription."""
    with ice_host_addresses(host_addresses):  # empty: aioice's own choice
        await pc.setRemoteDescription(offer)
        await pc.setLocalDescription(await pc.createAnswer())
    return pc.localDescription


class GeckosChannel:
    """An open geckos.io data channel: send bytes or text, receive what the server sends."""

    def __init__(self, *, http: httpx.AsyncClient, owns_http: bool, conn_id: str, user_data: Any,
                 pc: RTCPeerConnection, max_queue: int) -> None:
        self.id = conn_id
        self.user_data = user_data
        self.pc = pc
        self.channel: RTCDataChannel | None = None
        self.closed = False
        self.close_reason: str | None = None
        self.dropped = 0  # messages lost because the receive queue was full
        self.opened = trio.Event()
        self._http = http
        self._owns_http = owns_http
        self._send, self._recv = trio.open_memory_channel[bytes | str](max_queue)

    # -- channel properties as the client sees them ------------------------------------------

    @property
    def label(self) -> str | None:
        return self.channel.label if self.channel else None

    @property
    def ordered(self) -> bool | None:
        return self.channel.ordered if self.channel else None

    @property
    def max_retransmits(self) -> int | None:
        return self.channel.maxRetransmits if self.channel else None

    def buffered_amount(self) -> int:
        return self.channel.bufferedAmount if self.channel else 0

    # -- sending and receiving ----------------------------------------------------------------

    def send_binary(self, data: bytes) -> bool:
        """Send one binary message (a geckos raw message); False if the channel is not open."""
        return self._send_raw(bytes(data))

    def send_text(self, text: str) -> bool:
        """Send one text message as it is; False if the channel is not open."""
        return self._send_raw(str(text))

    def emit(self, event: str, data: Any = None) -> bool:
        """Send a geckos event: the text ``{"<event>": data}``."""
        return self._send_raw(json.dumps({event: data}))

    def _send_raw(self, data: bytes | str) -> bool:
        channel = self.channel
        if self.closed or channel is None or channel.readyState != "open":
            return False
        channel.send(data)
        return True

    async def receive(self, timeout: float | None = None) -> bytes | str:
        """The next message (bytes for binary, str for text). Raises GeckosClosed once the
        channel is closed and drained, trio.TooSlowError after ``timeout`` seconds."""
        with trio.fail_after(math.inf if timeout is None else timeout):
            try:
                return await self._recv.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                raise GeckosClosed(self.close_reason or "closed") from None

    def receive_nowait(self) -> bytes | str | None:
        """A message already received, or None."""
        try:
            return self._recv.receive_nowait()
        except trio.WouldBlock:
            return None
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise GeckosClosed(self.close_reason or "closed") from None

    def __aiter__(self) -> GeckosChannel:
        return self

    async def __anext__(self) -> bytes | str:
        try:
            return await self.receive()
        except GeckosClosed:
            raise StopAsyncIteration from None

    # -- closing ------------------------------------------------------------------------------

    async def close(self) -> None:
        """POST /close (best effort), then close the peer connection; bounded."""
        self._mark_closed("client_close")
        with trio.CancelScope(deadline=trio.current_time() + CLOSE_WAIT, shield=True):
            if self._http is not None:
                try:
                    await self._http.post(f"{PREFIX}/connections/{self.id}/close",
                                          headers={"content-type": "application/json"})
                except httpx.HTTPError:
                    pass
            try:
                await aio(self.pc.close())
            except Exception:
                pass
            if self._owns_http and self._http is not None:
                await self._http.aclose()
            self._http = None

    async def __aenter__(self) -> GeckosChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- events (called in trio context through the Inbox) -----------------------------------

    def _attach(self, channel: RTCDataChannel) -> None:
        self.channel = channel
        if channel.readyState == "open":
            self.opened.set()

    def _message(self, message: bytes | str) -> None:
        if self.closed:
            return
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            self.dropped += 1

    def _mark_closed(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = reason
            self._send.close()
        self.opened.set()  # wake anyone waiting for the open


async def open_geckos(
    base_url: str,
    *,
    authorization: str | None = None,
    timeout: float = 10,
    label: str = LABEL,
    ice_servers: Sequence[str] = (),
    host_addresses: Sequence[str] = (),
    answer_filter: Callable[[str], str] | None = None,
    poll_candidates: bool = True,
    max_queue: int = 4096,
    http: httpx.AsyncClient | None = None,
) -> GeckosChannel:
    """Connect to the geckos.io server at ``base_url`` (``http://host:port``, optionally with a
    path prefix) and return the open channel. Must run inside ``aio_bridge.run``.

    ``authorization`` is sent as the ``Authorization`` header, as it is. ``host_addresses``
    restricts this side's ICE host candidates (``["127.0.0.1"]`` on loopback). ``answer_filter``
    may rewrite the answer SDP before it is posted (tests). Raises GeckosError for a refused or
    malformed signaling exchange (``status`` set for an HTTP error) or a channel that closes
    before opening, trio.TooSlowError when the channel is not open after ``timeout`` seconds.
    """
    owns_http = http is None
    if http is None:
        http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout)
    pc: RTCPeerConnection | None = None
    try:
        with trio.fail_after(timeout):
            headers = {"content-type": "application/json"}
            if authorization is not None:
                headers["authorization"] = authorization
            response = await http.post(f"{PREFIX}/connections", headers=headers)
            if response.status_code >= 300:
                raise GeckosError(
                    f"Connection failed with status code {response.status_code}.", response.status_code
                )
            try:
                offer = response.json()
                conn_id = offer["id"]
                user_data = offer["userData"]
                description = offer["localDescription"]
                remote = RTCSessionDescription(sdp=description["sdp"], type=description["type"])
            except (ValueError, KeyError, TypeError) as exc:
                raise GeckosError(f"malformed connection response: {exc!r}") from None
            if user_data is None or user_data is False or user_data in (0, ""):  # JS falsy
                raise GeckosError('Something went wrong in "await connectionsManager.connect()"')

            pc = RTCPeerConnection(RTCConfiguration(iceServers=[RTCIceServer(urls=u) for u in ice_servers]))
            geckos = GeckosChannel(http=http, owns_http=owns_http, conn_id=conn_id,
                                   user_data=user_data, pc=pc, max_queue=max_queue)
            _wire(geckos, pc, label, Inbox())

            answer = await aio(_answer(pc, remote, tuple(host_addresses)))
            sdp = answer_filter(answer.sdp) if answer_filter else answer.sdp
            response = await http.post(f"{PREFIX}/connections/{conn_id}/remote-description",
                                       headers={"content-type": "application/json"},
                                       content=json.dumps({"type": answer.type, "sdp": sdp}))
            if response.status_code >= 300:  # the browser client ignores this; a test wants it
                raise GeckosError(f"remote-description refused: {response.status_code}",
                                  response.status_code)

            delays = poll_delays() if poll_candidates else []
            started = trio.current_time()
            for delay in delays:
                with trio.move_on_at(started + delay):
                    await geckos.opened.wait()
                if geckos.opened.is_set():
                    break
                await _poll_candidates(geckos, pc)
            await geckos.opened.wait()
            if geckos.closed:
                raise GeckosError(f"channel closed before opening ({geckos.close_reason})")
            return geckos
    except BaseException:
        with trio.CancelScope(deadline=trio.current_time() + CLOSE_WAIT, shield=True):
            if pc is not None:
                try:
                    await aio(pc.close())
                except Exception:
                    pass
            if owns_http:
                await http.aclose()
        raise


async def _poll_candidates(geckos: GeckosChannel, pc: RTCPeerConnection) -> None:
    if geckos.channel is not None and geckos.channel.readyState == "closed":
        return
    response = await geckos._http.get(f"{PREFIX}/connections/{geckos.id}/additional-candidates",
                                      headers={"content-type": "application/json"})
    if response.status_code != 200:
        return
    for item in response.json():
        try:
            text = item["candidate"]
            candidate = candidate_from_sdp(text.split(":", 1)[1] if text.startswith("candidate:") else text)
            candidate.sdpMid = item.get("sdpMid")
            await aio(pc.addIceCandidate(candidate))
        except Exception:  # as the browser: errors from addIceCandidate are ignored
            pass


def _wire(geckos: GeckosChannel, pc: RTCPeerConnection, label: str, inbox: Inbox) -> None:
    """Route aiortc's (asyncio) events to the GeckosChannel, in trio, through the inbox."""
    submit = inbox.submit

    def on_datachannel(channel: RTCDataChannel) -> None:
        if channel.label != label:
            return
        channel.on("open", lambda: submit(geckos.opened.set))
        channel.on("message", lambda message: submit(geckos._message, message))
        channel.on("close", lambda: submit(geckos._mark_closed, "channel_closed"))
        submit(geckos._attach, channel)

    def on_state() -> None:
        state = pc.connectionState
        if state in ("failed", "closed"):
            submit(geckos._mark_closed, state)

    pc.on("datachannel", on_datachannel)
    pc.on("connectionstatechange", on_state)
