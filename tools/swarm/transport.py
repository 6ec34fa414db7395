"""The transport interface of the bot swarm: how a bot's packets reach the server and back.

Job: say, as a typing Protocol, what the one bot set (:class:`worldtools.swarm.bots.BotSet`)
and the one loop (:func:`worldtools.swarm.loop.run`) need from a transport, so that the walk,
the handshake, the counting, the observers and the report are written once for every
transport. The implementations: :class:`worldtools.swarm.udp.UdpTransport` (a UDP socket per
bot, the server's native port), :class:`worldtools.swarm.webrtc.RtcTransport` (a geckos.io data
channel per bot) and :class:`worldtools.swarm.ws.WsTransport` (a WebSocket per bot to
``/ws/movement``); the last two share :class:`worldtools.swarm.channels.ChannelTransport`.

Contract: the bot set calls :meth:`Transport.open` when a bot starts its handshake and the
transport calls ``bots.hello(bot, now)`` once the bot's link is open (UDP at once, channels
when opened); whatever the server sends goes to ``bots.receive(bot, data, now)``; a link that
fails or ends goes to ``bots.fail(bot, reason, now)``. ``bot.link`` is the transport's own
handle for the bot (None when it has none).

Must not: hold code (this module is the interface only), or let a transport count what the
bot set counts (snapshots, bytes, losses): transports move bytes and report their own extras.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from worldtools.swarm.bots import Bot, BotSet


class Transport(Protocol):
    """One swarm's connections to the server over one kind of link."""

    name: str  # "udp", "webrtc" or "ws"
    files_per_bot: int  # open files a bot's link may hold (the open-files limit is raised for them)
    trusted: bool  # the link proves the peer: the handshake is HELLO -> ACCEPT (no tags, no token)

    def bind(self, bots: BotSet) -> None:
        """The bot set this transport serves (it calls back ``hello``, ``receive``, ``fail``)."""

    async def tickets(self, count: int) -> list | None:
        """Before any bot starts: one ticket per bot (``(connect token, key)``, or the reason
        its join failed), or None for bots that need none."""

    def setup_bound(self, count: int) -> float:
        """Seconds the connections of ``count`` bots may take before measuring starts anyway."""

    def admit(self, now: float, waiting: int) -> int:
        """At every send slot: how many of the ``waiting`` bots may start their handshakes
        now (the bot set starts at most :data:`~worldtools.swarm.bots.CONNECT_BATCH`)."""

    def open(self, bot: Bot, now: float) -> None:
        """Start the bot's link (its ``conn`` is made); ``bots.hello(bot, now)`` once open."""

    def send(self, bot: Bot, data: bytes) -> bool | str:
        """Send one packet: True if sent, False if the link is not open yet (nothing to
        count), or the name of the soft failure that lost it."""

    def close(self, bot: Bot) -> None:
        """Close the bot's link (no more callbacks for it); ``bot.link`` becomes None."""

    def running(self) -> contextlib.AbstractAsyncContextManager:
        """The transport's resources and tasks for the duration of one loop."""

    async def wait(self, deadline: float) -> None:
        """Wait until data arrives or ``deadline`` (on the bot set's clock), and deliver it."""

    async def close_all(self) -> None:
        """After the bot set's teardown: close what is left, in bounded time."""

    def counts(self) -> dict:
        """The transport's own progress counts (beside the bot set's)."""

    def report(self) -> dict:
        """The transport's own raw report fields (see :func:`worldtools.swarm.report.make_report`)."""
