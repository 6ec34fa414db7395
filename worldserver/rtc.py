"""WebRTC data-channel peers (aiortc) behind geckos.io 3.x signaling, free of any web framework.

:class:`RtcService` does what a geckos.io 3.x server does for one connection (see
``../shared/reference/geckos-protocol.md``): it runs the authorization hook, creates an
aiortc ``RTCPeerConnection`` that offers one data channel ``geckos.io`` (unordered, no
retransmits), puts every ICE candidate into the offer (so ``additional-candidates`` is always
``[]``), takes the browser's answer, and keeps the peer until its connection ends. Its four
signaling methods are called from trio by the HTTP layer and return plain
``(status, body, headers)`` tuples; they never raise for bad input.

Events reach the application through a handler with synchronous methods, always called in
trio context (asyncio callbacks go through :class:`worldclient.aio_bridge.Inbox`):
``on_open(peer)``, ``on_binary(peer, data)``, ``on_text(peer, text)`` and
``on_close(peer, reason)``. ``on_close`` is called exactly once for every peer that got
``on_open``; a peer that never opened is dropped without calling the handler.

Admission (``[limits]``, :mod:`worldserver.limits`): every offer costs an RTCPeerConnection, a
DTLS key and ICE sockets, so ``create_connection`` refuses before making any of them: 429 when
the client's address has no handshake token left, 503 when the address already holds
``limits.pending_offers_per_address`` offers not yet open or ``limits.connections_per_address``
connections (counted with UDP and /ws/movement), or when ``limits.pending_offers`` offers of
all addresses together are not yet open, each refusal counted (``drop.limit_rtc_*``). An
offer that is not answered within ``limits.offer_timeout`` seconds is closed
(``rtc.closed.offer_timeout``), an answered one that does not open within ``open_timeout``
too, so the table of unopened peers, and the file descriptors it holds, stay bounded and one
address cannot hold more than its share of them.

ICE host addresses: aioice gathers host candidates on every interface address except
127.0.0.1. With ``webrtc.host_addresses`` set, the offers gather on exactly those addresses
(:func:`worldclient.ice.ice_host_addresses`, which the client's answers use too; nothing else
in the process is affected). :func:`check_upstream` (run by :meth:`RtcService.run` at start,
with ``worldserver.sctp_acks``' check for aiortc) raises ``UpstreamChanged`` if aioice no
longer looks the function up where that wrapper replaces it.

Must not: import asyncio (only ``worldclient.aio_bridge`` does), parse HTTP, set CORS headers
(the HTTP layer's job), know the native protocol or the simulation, or block.
"""

from __future__ import annotations

import functools
import inspect
import re
import secrets
import string
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import aioice.ice
import trio
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)

from worldclient.aio_bridge import Inbox, aio
from worldclient.ice import aioice_get_host_addresses, ice_host_addresses
from worldserver import sctp_acks
from worldserver.config import Config
from worldserver.limits import AddressCounts, AddressLimits
from worldserver.logs import get_logger
from worldserver.stats import Samples, Stats
from worldserver.upstream import globals_used, require, require_names

log = get_logger("worldserver.rtc")

LABEL = "geckos.io"
ID_LENGTH = 24
ID_ALPHABET = string.ascii_letters + string.digits
OPEN_TIMEOUT = 15.0  # seconds from the offer until the channel must be open
CLOSE_WAIT = 5.0  # longest wait for one aiortc peer connection to close
SHUTDOWN_GRACE = 0.25  # longest wait in aclose() for messages sent from on_close to leave
SIGNAL_WAIT = 10.0  # longest wait for aiortc to make an offer or take an answer
REAP_INTERVAL = 1.0

JSON = {"content-type": "application/json"}
TEXT = {"content-type": "text/plain"}
_STATUS_TEXT = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 402: "Payment Required",
    403: "Forbidden", 404: "Not Found", 500: "Internal Server Error",
}
_CLOSING_STATES = ("failed", "closed", "disconnected")


def status_text(code: int) -> str:
    """geckos' plain-text body for a status: ``"401: Unauthorized"``, or just ``"503"``."""
    text = _STATUS_TEXT.get(code)
    return f"{code}: {text}" if text else str(code)


def _status(code: int) -> tuple[int, str, dict]:
    return code, status_text(code), dict(TEXT)


class RtcHandler(Protocol):
    def on_open(self, peer: RtcPeer) -> None: ...
    def on_binary(self, peer: RtcPeer, data: bytes) -> None: ...
    def on_text(self, peer: RtcPeer, text: str) -> None: ...
    def on_close(self, peer: RtcPeer, reason: str) -> None: ...


# ------------------------------------------------------------------------------------------
# ICE host addresses (worldclient.ice): the upstream check.


@functools.cache
def check_upstream() -> None:
    """Raise ``UpstreamChanged`` unless ``aioice.ice.get_host_addresses(use_ipv4, use_ipv6)``
    exists and ``Connection.gather_candidates`` looks it up in its module (checked once)."""
    patch = "worldclient.ice.ice_host_addresses"
    func = aioice_get_host_addresses()  # aioice's own, also once the wrapper is installed
    require(callable(func), "aioice", "aioice.ice.get_host_addresses", patch, "no longer exists")
    params = tuple(inspect.signature(func).parameters)
    require(params == ("use_ipv4", "use_ipv6"), "aioice", "aioice.ice.get_host_addresses", patch,
            f"has the parameters ({', '.join(params)}), not (use_ipv4, use_ipv6)")
    require_names(["get_host_addresses"], globals_used(aioice.ice.Connection.gather_candidates), "aioice",
                  "aioice.ice.Connection.gather_candidates", patch, "looks up")


async def make_offer(pc: RTCPeerConnection, host_addresses: Sequence[str] = ()) -> RTCSessionDescription:
    """(asyncio) createOffer + setLocalDescription, gathering on ``host_addresses``; returns
    the local description, which then holds every candidate."""
    with ice_host_addresses(host_addresses):
        await pc.setLocalDescription(await pc.createOffer())
    return pc.localDescription


async def make_answer(
    pc: RTCPeerConnection, offer: RTCSessionDescription, host_addresses: Sequence[str] = ()
) -> RTCSessionDescription:
    """(asyncio) setRemoteDescription(offer) + createAnswer + setLocalDescription."""
    with ice_host_addresses(host_addresses):
        await pc.setRemoteDescription(offer)
        await pc.setLocalDescription(await pc.createAnswer())
    return pc.localDescription


# ------------------------------------------------------------------------------------------
# SDP edits.


def _candidate_fields(line: str) -> list[str] | None:
    text = line.strip()
    if not text.startswith("a=candidate:"):
        return None
    fields = text[len("a=candidate:"):].split()
    return fields if len(fields) >= 8 else None


def strip_mdns_candidates(sdp: str) -> tuple[str, int]:
    """Remove ``a=candidate`` lines whose address is an mDNS name (``*.local``); aiortc
    would try to resolve them and stall about a second. Returns (sdp, lines removed)."""
    kept, removed = [], 0
    for line in sdp.splitlines(keepends=True):
        fields = _candidate_fields(line)
        if fields is not None and fields[4].lower().rstrip(".").endswith(".local"):
            removed += 1
            continue
        kept.append(line)
    return "".join(kept), removed


def announce_address(sdp: str, address: str) -> str:
    """Write ``address`` into every host candidate of its family (IPv4 or IPv6) and into the
    ``c=`` lines: a server behind a 1:1 NAT announces its public address; the ports stay as
    gathered. With several host addresses, set ``webrtc.host_addresses`` to the NATed one."""
    v6 = ":" in address
    family = "IP6" if v6 else "IP4"
    out = []
    for line in sdp.splitlines(keepends=True):
        ending = line[len(line.rstrip("\r\n")):]
        fields = _candidate_fields(line)
        if (fields is not None and fields[6] == "typ" and fields[7] == "host"
                and (":" in fields[4]) == v6):
            fields[4] = address
            line = "a=candidate:" + " ".join(fields) + ending
        elif line.startswith("c=IN "):
            line = f"c=IN {family} {address}{ending}"
        out.append(line)
    return "".join(out)


def count_candidates(sdp: str) -> int:
    return sum(1 for line in sdp.splitlines() if _candidate_fields(line) is not None)


_ID_RE = re.compile(r"[A-Za-z0-9]{24}")


def is_connection_id(value: object) -> bool:
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


# ------------------------------------------------------------------------------------------


class RtcPeer:
    """One browser (or Python client) connected over a geckos.io data channel.

    ``session`` is free for the handler to attach its own state.
    """

    __slots__ = (
        "id", "user_data", "pc", "channel", "session", "created_at", "opened_at",
        "opened", "closing", "closed", "close_reason", "_service",
        "address", "remote", "answered", "pending", "holds_slot",
    )

    def __init__(self, service: RtcService, peer_id: str, pc: RTCPeerConnection,
                 channel: RTCDataChannel, user_data: dict, now: float, address=None, remote: str = "") -> None:
        self._service = service
        self.address = address  # the client's limits key (None: trusted, no per-address limit)
        self.remote = remote  # the IP address the offer came from ("": unknown), for the log
        self.answered = False  # an answer was taken (or is being applied)
        self.pending = True  # counted among the offers not yet open
        self.holds_slot = True  # counted among its address's connections
        self.id = peer_id
        self.pc = pc
        self.channel = channel
        self.user_data = user_data
        self.session: Any = None
        self.created_at = now
        self.opened_at: float | None = None
        self.opened = False
        self.closing = False  # set first when the peer starts closing (guards re-entry)
        self.closed = False  # set once on_close has returned: nothing more is sent
        self.close_reason: str | None = None

    def send(self, data: bytes | str) -> bool:
        """Send one message (bytes: binary, str: text) if the channel is open; otherwise drop
        it (counted). Returns whether it was handed to the channel."""
        if self.closed or self.channel.readyState != "open":
            self._service.stats.incr("drop.rtc_send_not_open")
            return False
        try:
            self.channel.send(data)
        except Exception as exc:  # closed underneath us, or a bad type
            self._service.stats.incr("drop.rtc_send_error")
            log.debug("send failed", peer=self.id, error=repr(exc))
            return False
        self._service.bytes_out += len(data.encode("utf-8", "surrogatepass")) if isinstance(data, str) else len(data)
        return True

    def buffered_amount(self) -> int:
        """Bytes queued on the channel and not yet sent; skip a snapshot while > 0."""
        return self.channel.bufferedAmount

    def close(self, reason: str = "server_close") -> None:
        """Close this peer; ``on_close`` runs at once (synchronously) if it had opened.
        Calling it again, or from ``on_close``, does nothing."""
        self._service._close_peer(self, reason)

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("open" if self.opened else "new")
        return f"<RtcPeer {self.id} {state}>"


class RtcService:
    """The geckos.io signaling logic and every live peer. Start :meth:`run` in a nursery
    before serving signaling requests (its nursery closes peers and reaps unopened ones)."""

    def __init__(
        self,
        *,
        config: Config,
        inbox: Inbox,
        handler: RtcHandler,
        authorize: Callable[[str | None], Any] | None = None,
        stats: Stats | None = None,
        open_timeout: float = OPEN_TIMEOUT,
        max_peers: int | None = None,
        limits: AddressLimits | None = None,
        offer_timeout: float | None = None,
    ) -> None:
        """``limits``: the server's shared per-address limits (None: this service's own, from
        ``config.limits``); ``offer_timeout``: seconds an offer waits for its answer (None:
        ``limits.offer_timeout``)."""
        self.config = config
        self.stats = stats if stats is not None else Stats()
        self.peers: dict[str, RtcPeer] = {}
        self.open_timeout = open_timeout
        self.max_peers = config.net.max_clients if max_peers is None else max_peers
        self._inbox = inbox
        self._handler = handler
        self._authorize = authorize
        self._ice_servers = tuple(config.webrtc.ice_servers)
        self._host_addresses = tuple(config.webrtc.host_addresses)
        self._announced = config.webrtc.announced_address
        self._delayed_acks = config.webrtc.delayed_acks
        self._nursery: trio.Nursery | None = None
        self._creating = 0
        self.limits = limits if limits is not None else AddressLimits(config.limits)
        self.offer_timeout = config.limits.offer_timeout if offer_timeout is None else offer_timeout
        self.max_pending = config.limits.pending_offers
        self.max_pending_per_address = config.limits.pending_offers_per_address
        self.pending = AddressCounts()  # offers being made or made and not yet open, by address
        self._closes_running = 0  # _close_pc calls in progress (see wait_closes)
        self._closes_done = trio.Event()
        self._closing = False
        # Message bytes of every channel (native and Hatongsu) and seconds from offer to open
        # channel, for /metrics and the stats line (worldserver/metrics.py).
        self.bytes_in = 0
        self.bytes_out = 0
        self.connect_seconds = Samples(256)

    # -- lifetime ---------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled, then close every peer (bounded). Raises ``UpstreamChanged``
        at start if aioice or aiortc lack what this module's patches rely on."""
        check_upstream()
        if self._delayed_acks:
            sctp_acks.check_upstream()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._closing = False
                try:
                    nursery.start_soon(self._reap_unopened)
                    task_status.started(self)
                    await trio.sleep_forever()
                finally:
                    with trio.CancelScope(shield=True):
                        await self.aclose()
        finally:
            self._nursery = None

    async def aclose(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Close all peers: ``on_close(peer, "server_shutdown")`` for the open ones (a goodbye
        sent from there still goes out), up to ``grace`` seconds for such messages to leave,
        then their aiortc connections (each bounded by CLOSE_WAIT). New connections are refused
        from the start."""
        self._closing = True
        peers = list(self.peers.values())
        for peer in peers:
            self._forget(peer, "server_shutdown")
        if peers:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(grace):
                    await trio.sleep(0.02)  # aiortc's send tasks run on the asyncio side
                    while any(p.channel.bufferedAmount for p in peers):
                        await trio.sleep(0.01)
                async with trio.open_nursery() as nursery:
                    for peer in peers:
                        nursery.start_soon(self._close_pc, peer.pc)

    async def _reap_unopened(self) -> None:
        while True:
            await trio.sleep(min(REAP_INTERVAL, self.open_timeout / 4, self.offer_timeout / 4))
            self.reap(trio.current_time())

    def reap(self, now: float) -> int:
        """Close the peers that did not open in time: an offer not answered within
        ``offer_timeout`` seconds (``offer_timeout``), any peer not open ``open_timeout``
        seconds after its offer (``open_timeout``). Returns how many were closed."""
        closed = 0
        for peer in list(self.peers.values()):
            if peer.opened:
                continue
            age = now - peer.created_at
            if age > self.open_timeout:
                self._close_peer(peer, "open_timeout")
            elif not peer.answered and age > self.offer_timeout:
                self._close_peer(peer, "offer_timeout")
            else:
                continue
            closed += 1
        return closed

    # -- signaling (called from trio by the HTTP layer) -------------------------------------

    async def create_connection(self, authorization: str | None, address: str | None = None
                                ) -> tuple[int, Any, dict]:
        """``POST /.wrtc/v2/connections`` from ``address`` (the client's IP address; None:
        unknown): 200 with ``{userData, id, localDescription}``, or a refusal made before any
        peer connection exists (see the module docstring)."""
        key = self.limits.key(address)
        if not self.limits.handshake(key, trio.current_time()):
            self.stats.incr("drop.limit_rtc_handshake_rate")
            return _status(429)
        status, user_data = await self._run_authorization(authorization)
        if status != 200:
            self.stats.incr(f"rtc.refused.{status}")
            return _status(status)
        if self._nursery is None or self._closing:
            if self._nursery is None and not self.stats.get("rtc.refused.not_running"):
                log.warning("refusing WebRTC connections: RtcService.run() is not running")
            self.stats.incr("rtc.refused.not_running")
            return _status(503)
        if len(self.peers) + self._creating >= self.max_peers:
            self.stats.incr("rtc.refused.full")
            return _status(503)
        if key is not None and self.pending.get(key) >= self.max_pending_per_address:
            self.stats.incr("drop.limit_rtc_pending_address")
            return _status(503)
        if not self.limits.may_connect(key):
            self.stats.incr("drop.limit_rtc_address_connections")
            return _status(503)
        if self.pending.total >= self.max_pending:
            self.stats.incr("drop.limit_rtc_pending_total")
            return _status(503)

        # Reserved before the first await, so concurrent offers see it; released by _release.
        self.pending.add(key)
        self.limits.connect(key)
        self._creating += 1
        try:
            try:
                pc = RTCPeerConnection(RTCConfiguration(
                    iceServers=[RTCIceServer(urls=url) for url in self._ice_servers]
                ))
                channel = pc.createDataChannel(LABEL, ordered=False, maxRetransmits=0)
                if self._delayed_acks:
                    sctp_acks.enable(pc.sctp)
            except Exception:
                log.exception("could not create a peer connection")
                self.stats.incr("rtc.refused.setup_error")
                self.pending.remove(key)
                self.limits.disconnect(key)
                return _status(500)
            peer = RtcPeer(self, self._new_id(), pc, channel, user_data, trio.current_time(), key, address or "")
            self._wire(peer)
            try:
                with trio.fail_after(SIGNAL_WAIT):
                    description = await aio(make_offer(pc, self._host_addresses))
            except BaseException as exc:
                peer.closing = peer.closed = True
                self._release(peer)
                with trio.CancelScope(shield=True):
                    await self._close_pc(pc)
                if not isinstance(exc, Exception):
                    raise
                log.warning("could not make an offer", error=repr(exc))
                self.stats.incr("rtc.refused.offer_error")
                return _status(500)
        finally:
            self._creating -= 1

        if self._closing and not peer.closing:
            peer.closing = peer.closed = True
            self._release(peer)
            self._nursery_close_pc(pc)
        if peer.closing:  # shutting down, or the connection failed while we made the offer
            self.stats.incr("rtc.refused.closed_early")
            return _status(503)
        sdp = description.sdp
        if self._announced:
            sdp = announce_address(sdp, self._announced)
        if count_candidates(sdp) == 0:
            self.stats.incr("rtc.offer_without_candidates")
            log.warning("offer without ICE candidates; check webrtc.host_addresses",
                        host_addresses=list(self._host_addresses))
        self.peers[peer.id] = peer
        self.stats.incr("rtc.offers")
        body = {"userData": user_data, "id": peer.id, "localDescription": {"sdp": sdp, "type": "offer"}}
        return 200, body, dict(JSON)

    async def remote_description(self, conn_id: str, body: Any) -> tuple[int, Any, dict]:
        """``POST .../{id}/remote-description``: the browser's answer; 200 ``"200: OK"``."""
        peer = self.peers.get(conn_id) if isinstance(conn_id, str) else None
        if peer is None:
            self.stats.incr("rtc.bad_request.unknown_id")
            return _status(404)
        if not (isinstance(body, dict) and isinstance(body.get("sdp"), str)
                and body.get("type") == "answer"):
            self.stats.incr("rtc.bad_request.malformed")
            return _status(400)
        sdp, removed = strip_mdns_candidates(body["sdp"])
        if removed:
            self.stats.incr("rtc.mdns_candidates_stripped", removed)
        answered, peer.answered = peer.answered, True  # not reaped as unanswered meanwhile
        try:
            with trio.fail_after(SIGNAL_WAIT):
                await aio(peer.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer")))
        except trio.TooSlowError:
            self.stats.incr("rtc.bad_request.answer_timeout")
            self._close_peer(peer, "answer_timeout")
            return _status(500)
        except Exception as exc:  # unparsable SDP, wrong signaling state, closed peer
            peer.answered = answered
            self.stats.incr("rtc.bad_request.bad_answer")
            log.info("answer refused", peer=peer.id, error=repr(exc))
            return _status(400)
        return _status(200)

    async def additional_candidates(self, conn_id: str) -> tuple[int, Any, dict]:
        """``GET .../{id}/additional-candidates``: always ``[]`` (all are in the offer)."""
        if not (isinstance(conn_id, str) and conn_id in self.peers):
            self.stats.incr("rtc.bad_request.unknown_id")
            return _status(404)
        return 200, [], dict(JSON)

    async def close(self, conn_id: str) -> tuple[int, Any, dict]:
        """``POST .../{id}/close``: close the peer; 200 even for an unknown id (as geckos)."""
        peer = self.peers.get(conn_id) if isinstance(conn_id, str) else None
        if peer is not None:
            self._close_peer(peer, "client_close")
        return _status(200)

    # -- internals --------------------------------------------------------------------------

    async def _run_authorization(self, authorization: str | None) -> tuple[int, dict]:
        if self._authorize is None:
            return 200, {}
        try:
            result = self._authorize(authorization)
            if inspect.isawaitable(result):
                result = await result
        except Exception:
            log.exception("authorization hook failed")
            return 500, {}
        if result is True:
            return 200, {}
        if result is False:
            return 401, {}
        if isinstance(result, int) and not isinstance(result, bool):
            return (result, {}) if 100 <= result <= 599 else (500, {})
        if isinstance(result, dict):
            return 200, result
        return 500, {}  # None, or a value that is no user data

    def _new_id(self) -> str:
        while True:
            peer_id = "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))
            if peer_id not in self.peers:
                return peer_id

    def _wire(self, peer: RtcPeer) -> None:
        """Route aiortc's (asyncio) events of this peer to trio through the inbox."""
        submit = self._inbox.submit
        pc, channel = peer.pc, peer.channel
        channel.on("open", lambda: submit(self._opened, peer))
        channel.on("message", lambda message: submit(self._received, peer, message))
        channel.on("close", lambda: submit(self._close_peer, peer, "channel_closed"))
        pc.on("connectionstatechange",
              lambda: submit(self._state_changed, peer, pc.connectionState))

    def _opened(self, peer: RtcPeer) -> None:
        if peer.closing or peer.opened:
            return
        peer.opened = True
        peer.opened_at = trio.current_time()
        if peer.pending:
            peer.pending = False
            self.pending.remove(peer.address)
        self.stats.incr("rtc.opened")
        self.connect_seconds.add(peer.opened_at - peer.created_at)
        log.debug("peer open", peer=peer.id, ms=round((peer.opened_at - peer.created_at) * 1000, 1))
        try:
            self._handler.on_open(peer)
        except Exception:
            log.exception("on_open failed", peer=peer.id)
            self._close_peer(peer, "handler_error")

    def _received(self, peer: RtcPeer, message: bytes | str) -> None:
        if peer.closing or not peer.opened:
            self.stats.incr("drop.rtc_message_not_open")
            return
        if isinstance(message, bytes):
            self.bytes_in += len(message)
            self._handler.on_binary(peer, message)
        else:
            self.bytes_in += len(message.encode("utf-8", "surrogatepass"))
            self._handler.on_text(peer, message)

    def _state_changed(self, peer: RtcPeer, state: str) -> None:
        if state in _CLOSING_STATES:
            self._close_peer(peer, state)

    def _close_peer(self, peer: RtcPeer, reason: str) -> None:
        if peer.closing:
            return
        self._forget(peer, reason)
        self._nursery_close_pc(peer.pc)

    def _forget(self, peer: RtcPeer, reason: str) -> None:
        """Remove the peer and tell the handler (once); the connection is closed by the caller."""
        if peer.closing:
            return
        peer.closing = True
        peer.close_reason = reason
        self._release(peer)
        if self.peers.get(peer.id) is peer:
            del self.peers[peer.id]
        self.stats.incr(f"rtc.closed.{reason}")
        if peer.opened:
            log.debug("peer closed", peer=peer.id, reason=reason)
            try:
                self._handler.on_close(peer, reason)  # the channel may still be open here
            except Exception:
                log.exception("on_close failed", peer=peer.id)
        else:
            self.stats.incr("rtc.dropped_unopened")
        peer.closed = True

    def _release(self, peer: RtcPeer) -> None:
        """Give back what the peer holds of the limits (once): its place among the offers
        not yet open, and its address's connection."""
        if peer.pending:
            peer.pending = False
            self.pending.remove(peer.address)
        if peer.holds_slot:
            peer.holds_slot = False
            self.limits.disconnect(peer.address)

    def _nursery_close_pc(self, pc: RTCPeerConnection) -> None:
        try:
            self._nursery.start_soon(self._close_pc, pc)
        except (AttributeError, RuntimeError):  # not running (any more): nothing can wait
            self.stats.incr("rtc.close_without_nursery")

    async def _close_pc(self, pc: RTCPeerConnection) -> None:
        self._closes_running += 1
        try:
            with trio.CancelScope(deadline=trio.current_time() + CLOSE_WAIT, shield=True) as scope:
                try:
                    await aio(pc.close())
                except Exception as exc:
                    log.debug("peer connection close failed", error=repr(exc))
            if scope.cancelled_caught:
                self.stats.incr("rtc.close_timeout")
        finally:
            self._closes_running -= 1
            if not self._closes_running:
                self._closes_done.set()
                self._closes_done = trio.Event()

    async def wait_closes(self) -> None:
        """Return once no peer connection is being closed (each close is bounded by
        CLOSE_WAIT): what closed peers held, sockets included, is then given back."""
        if self._closes_running:
            await self._closes_done.wait()
