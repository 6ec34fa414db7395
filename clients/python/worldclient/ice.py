"""ICE host addresses: make aioice gather host candidates on chosen addresses only.

aioice gathers host candidates on every interface address except 127.0.0.1, so a peer on
loopback (tests, a swarm beside its server) cannot connect unless told otherwise. Inside
``with ice_host_addresses(addresses):`` aioice gathers on exactly ``addresses``: the first use
wraps ``aioice.ice.get_host_addresses`` once (the wrapper consults a context variable and
otherwise calls aioice's own function), and the block sets that variable only in the current
context, so only the asyncio tasks started inside it (aiortc's gathering, started by
``setLocalDescription``) are affected; nothing else in the process is.

Both sides use it: the server's offers (``webrtc.host_addresses``, :mod:`worldserver.rtc`,
whose ``check_upstream`` verifies at start, through :func:`aioice_get_host_addresses`, that
aioice still looks the function up where the wrapper replaces it) and the client's answers
(:func:`worldclient.rtc_client.open_geckos`'s ``host_addresses``). It lives in the client
library because a client must not import the server.

Must not: import ``worldserver`` or asyncio, or change anything outside the block.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence

import aioice.ice

__all__ = ["aioice_get_host_addresses", "ice_host_addresses"]

_HOST_ADDRESSES: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "worldclient_ice_host_addresses", default=None
)
_original_get_host_addresses: Callable[[bool, bool], list[str]] | None = None


def _install_hook() -> None:
    """Wrap ``aioice.ice.get_host_addresses`` once; the wrapper defers to the original
    unless :data:`_HOST_ADDRESSES` is set in the current context. aioice 0.13 looks the
    function up in its module at gathering time (``Connection.gather_candidates``)."""
    global _original_get_host_addresses
    if _original_get_host_addresses is not None:
        return
    original = aioice.ice.get_host_addresses

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        chosen = _HOST_ADDRESSES.get()
        if chosen is None:
            return original(use_ipv4, use_ipv6)
        return [a for a in chosen if (use_ipv6 if ":" in a else use_ipv4)]

    _original_get_host_addresses = original
    aioice.ice.get_host_addresses = get_host_addresses


def aioice_get_host_addresses() -> Callable[[bool, bool], list[str]] | None:
    """aioice's own ``get_host_addresses`` (not the wrapper), or None if aioice has none."""
    if _original_get_host_addresses is not None:
        return _original_get_host_addresses
    return vars(aioice.ice).get("get_host_addresses")


@contextlib.contextmanager
def ice_host_addresses(addresses: Sequence[str]) -> Iterator[None]:
    """Inside this block, aioice gathers host candidates only on ``addresses`` (empty: no
    change). Use it inside the asyncio coroutine that calls ``setLocalDescription``: the
    gathering tasks aiortc starts there inherit the context."""
    if not addresses:
        yield
        return
    _install_hook()
    token = _HOST_ADDRESSES.set(tuple(addresses))
    try:
        yield
    finally:
        _HOST_ADDRESSES.reset(token)
