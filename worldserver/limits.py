"""Admission and fairness: token buckets, per-address keys and counts, the ``[limits]`` section.

Job: the project's one token-bucket implementation (:class:`TokenBucket` for one thing, such as a
session's inputs, a Hatongsu client's messages or a swarm's connect rate; :class:`TokenBuckets`
for many keys, used by chat and by every per-address limit), the address key every limit is kept by (:func:`address_key`: an IPv4
address is one key, an IPv6 address counts by its /64, an IPv4-mapped IPv6 address as the IPv4
address), trusted networks (:class:`Networks`), counts of what each address holds
(:class:`AddressCounts`), and :class:`AddressLimits`, the ``[limits]`` settings applied: one
count of native-protocol connections per address for all transports together (UDP, WebRTC,
``/ws/movement``), a count of open HTTP connections per address and in all (the total capped
below the process's file-descriptor limit: :func:`http_connections_cap`), and buckets per
address for handshakes, HTTP joins and chat messages.
:class:`FailureGuard` keeps the wrong secrets (admin tokens) each address presented: the chat's
moderator hello and the admin API share one, so an address gets ``max_failures`` guesses in
all, compared in constant time, before it is locked out. :class:`Penalties` keeps the senders
whose traffic keeps being dropped (more than a threshold of drops a second) for a penalty
period, so a transport can drop their traffic before it spends anything on it.

The transports ask ("may this address do this now?"), refuse on their own terms (a REFUSE,
a 503 or 429, an error frame) and count the refusal under their own ``drop.limit_*`` name
(docs/architecture.md). Addresses in ``limits.trusted_networks`` (loopback by default, so
local swarms and benchmarks run unlimited) have no per-address limit; the totals
(``net.max_clients``, ``limits.pending_offers``) hold for everyone.

Must not: do I/O (reading the process's file-descriptor limit, :func:`open_files_limit`, is
the one system call), read a clock (callers pass ``now``), log, count in ``Stats``, or know any
transport or protocol. Memory stays bounded: buckets are forgotten once full again (and the
oldest are dropped beyond ``max_keys``), counts exist only while something is held.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import resource
import socket
from collections.abc import Iterable
from typing import Any

__all__ = [
    "UNKNOWN_ADDRESS",
    "AddressCounts",
    "AddressLimits",
    "FailureGuard",
    "Networks",
    "Penalties",
    "TokenBucket",
    "TokenBuckets",
    "address_key",
    "http_connections_cap",
    "open_files_limit",
    "parse_address",
]

MAX_BUCKET_KEYS = 100_000  # buckets kept per TokenBuckets before the oldest are dropped
MAX_PENALTIES = 10_000  # senders under penalty at once; beyond, no new one is added
_SWEEP_FLOOR = 1024  # a table smaller than this is never swept on the way
_V6_KEY = 1 << 64  # IPv6 /64 keys are this plus the prefix: never equal to an IPv4 key
_MAPPED = b"\0" * 10 + b"\xff\xff"  # ::ffff:a.b.c.d
UNKNOWN_ADDRESS = "unknown"  # the key of a peer whose address the server cannot tell
# File descriptors kept for everything but HTTP connections when their total cap is derived
# from the process's limit (limits.http_connections = 0): a quarter of the limit, at least 256
# (but never more than half): the UDP socket, SQLite's files (database, WAL, shared memory),
# Janus and image workers' pipes, WebRTC's ICE sockets, static files being sent, imports.
FD_RESERVE_SHARE = 4
FD_RESERVE_MIN = 256
_TRUSTED = None  # the key trusted addresses' HTTP connections are counted under (total only)


class TokenBucket:
    """One token bucket: ``rate`` tokens per second, at most ``burst``, full when made (or
    holding ``tokens``) at time ``now``.

    Every question passes ``now`` (seconds on any clock that does not go back; a ``now``
    earlier than the last one adds nothing). :meth:`take` is the hot path of every input a
    client sends, so the bucket is a slotted object with no lookups.
    """

    __slots__ = ("rate", "burst", "level", "time")

    def __init__(self, rate: float, burst: float, now: float, tokens: float | None = None) -> None:
        if not rate > 0 or not burst >= 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self.level = self.burst if tokens is None else min(self.burst, float(tokens))
        self.time = now

    def tokens(self, now: float) -> float:
        """The tokens held now (nothing taken)."""
        return min(self.burst, self.level + max(0.0, now - self.time) * self.rate)

    def full(self, now: float) -> bool:
        """Whether the bucket is full again (it then holds no information)."""
        return self.level + max(0.0, now - self.time) * self.rate >= self.burst

    def peek(self, now: float) -> float:
        """0.0 if there is a token now, else the seconds until there will be (nothing taken)."""
        tokens = self.tokens(now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def take(self, now: float) -> float:
        """Take one token: 0.0 if there was one, else the seconds until there will be."""
        tokens = self.level
        elapsed = now - self.time
        self.time = now
        if elapsed > 0.0:
            tokens += elapsed * self.rate
            if tokens > self.burst:
                tokens = self.burst
        if tokens >= 1.0:
            self.level = tokens - 1.0
            return 0.0
        self.level = tokens
        return (1.0 - tokens) / self.rate


class TokenBuckets:
    """A :class:`TokenBucket` per key (``rate`` per second, ``burst`` at most, each key full
    until it takes its first token).

    Memory stays bounded: buckets that have filled up again hold no information and are
    forgotten (by :meth:`sweep`, which also runs on its own whenever the table has doubled),
    and beyond ``max_keys`` the oldest buckets are dropped (their keys start full again).
    """

    def __init__(self, rate: float, burst: float, max_keys: int = MAX_BUCKET_KEYS) -> None:
        if not rate > 0 or not burst >= 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_keys = max(1, int(max_keys))
        self._buckets: dict[Any, TokenBucket] = {}
        self._sweep_at = min(self.max_keys, _SWEEP_FLOOR)

    def __len__(self) -> int:
        return len(self._buckets)

    def tokens(self, key: Any, now: float) -> float:
        """The tokens ``key`` holds now (``burst`` for a key never seen or forgotten)."""
        bucket = self._buckets.get(key)
        return self.burst if bucket is None else bucket.tokens(now)

    def peek(self, key: Any, now: float) -> float:
        """0.0 if ``key`` has a token now, else the seconds until it will (nothing taken)."""
        bucket = self._buckets.get(key)
        return 0.0 if bucket is None else bucket.peek(now)

    def take(self, key: Any, now: float) -> float:
        """Take one token: 0.0 if there was one, else the seconds until there will be."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._sweep_at:
                self._make_room(now)
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        return bucket.take(now)

    def sweep(self, now: float) -> None:
        """Forget the buckets that are full again."""
        full = [key for key, bucket in self._buckets.items() if bucket.full(now)]
        for key in full:
            del self._buckets[key]

    def _make_room(self, now: float) -> None:
        self.sweep(now)
        excess = len(self._buckets) - self.max_keys + 1
        if excess > 0:  # still too many: drop the oldest, and an eighth more to amortize
            for key in list(self._buckets)[: excess + self.max_keys // 8]:
                del self._buckets[key]
        self._sweep_at = min(self.max_keys, max(_SWEEP_FLOOR, 2 * len(self._buckets)))


class AddressCounts:
    """How many of something (connections, pending offers) each address key holds.

    A key exists only while its count is above zero, so the table is never larger than the
    number of things held. ``total`` is the sum over all keys.
    """

    def __init__(self) -> None:
        self._counts: dict[Any, int] = {}
        self.total = 0

    def __len__(self) -> int:
        return len(self._counts)

    def get(self, key: Any) -> int:
        return self._counts.get(key, 0)

    def add(self, key: Any) -> None:
        self._counts[key] = self._counts.get(key, 0) + 1
        self.total += 1

    def remove(self, key: Any) -> None:
        count = self._counts.get(key, 0)
        if count <= 0:
            raise KeyError(f"{key!r} holds nothing")  # a caller released twice: a bug
        if count == 1:
            del self._counts[key]
        else:
            self._counts[key] = count - 1
        self.total -= 1


def parse_address(host: Any) -> tuple[int, int] | None:
    """``(4, value)`` or ``(6, value)`` of an IP address text (an IPv6 zone, ``%eth0``, is
    ignored; an IPv4-mapped IPv6 address is IPv4), or None if ``host`` is not an address."""
    if not isinstance(host, str):
        return None
    try:
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, host), "big")
    except OSError:
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
    except OSError:
        return None
    if packed[:12] == _MAPPED:
        return 4, int.from_bytes(packed[12:], "big")
    return 6, int.from_bytes(packed, "big")


def address_key(host: Any) -> Any:
    """The key per-address limits are kept by: an int for an IPv4 address, an int for the /64
    of an IPv6 address (one end site usually holds a whole /64, so counting its addresses one
    by one would give it unlimited keys), and for anything that is no IP address, the text
    itself, or :data:`UNKNOWN_ADDRESS` for None."""
    return _key_of(parse_address(host), host)


def _key_of(parsed: tuple[int, int] | None, host: Any) -> Any:
    if parsed is None:
        return host if isinstance(host, str) and host else UNKNOWN_ADDRESS
    family, value = parsed
    return value if family == 4 else _V6_KEY + (value >> 64)


class Networks:
    """A list of networks (CIDR texts like ``127.0.0.0/8`` or ``::1``), tested by address."""

    def __init__(self, cidrs: Iterable[str] = ()) -> None:
        self._nets: list[tuple[int, int, int]] = []  # (family, network value, mask)
        for text in cidrs:
            net = ipaddress.ip_network(text.strip(), strict=False)  # ValueError for bad text
            family = 4 if net.version == 4 else 6
            self._nets.append((family, int(net.network_address), int(net.netmask)))

    def __bool__(self) -> bool:
        return bool(self._nets)

    def contains(self, parsed: tuple[int, int] | None) -> bool:
        """Whether the :func:`parse_address` result ``parsed`` lies in one of the networks."""
        if parsed is None:
            return False
        family, value = parsed
        return any(f == family and value & mask == net for f, net, mask in self._nets)


def raise_open_files_limit() -> tuple[int | None, int | None]:
    """Raises the process's soft limit on open file descriptors to its hard limit, as servers
    do (a soft limit of 1,024 is a shell's default, not a choice); returns (before, after), None
    meaning unlimited. A hard limit that is unlimited is left alone (the kernel would refuse),
    and so is a refusal: the limit then stays as it was, and :func:`http_connections_cap` is
    derived from what it is."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    after = open_files_limit()
    return (None if soft == resource.RLIM_INFINITY else int(soft)), after


def open_files_limit() -> int | None:
    """The process's soft limit on open file descriptors (``RLIMIT_NOFILE``); None when unlimited."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def http_connections_cap(configured: int, fd_limit: int | None) -> int:
    """The cap on open HTTP connections, all addresses together: ``configured`` when it is set
    (> 0), else derived from ``fd_limit`` (the process's file-descriptor limit) less a reserve
    for everything else (:data:`FD_RESERVE_SHARE`, :data:`FD_RESERVE_MIN`); 0 (no cap) when
    neither is known."""
    if configured > 0:
        return int(configured)
    if fd_limit is None:
        return 0
    reserve = max(fd_limit // FD_RESERVE_SHARE, min(FD_RESERVE_MIN, fd_limit // 2))
    return max(1, fd_limit - reserve)


class AddressLimits:
    """The ``[limits]`` section applied (see the module docstring and docs/reliability.md).

    ``key(host)`` gives the key to use with everything else, or None for a trusted address
    (no per-address limit). Connection counts are shared by every transport of the native
    protocol: a transport calls :meth:`connect` when it admits one (False: the address is at
    ``limits.connections_per_address``) and :meth:`disconnect` exactly once when it ends.
    HTTP connections (TCP, whatever they carry) are counted apart by :meth:`http_connect` and
    :meth:`http_disconnect`, per address and in all (trusted addresses too, in the total).
    ``fd_limit``: the file-descriptor limit the total HTTP cap is derived from when
    ``limits.http_connections`` is 0 (None: the process's own, :func:`open_files_limit`).
    """

    HTTP_TOTAL, HTTP_ADDRESS = "total", "address"  # why http_connect refused

    def __init__(self, settings, fd_limit: int | None = None) -> None:
        self.settings = settings
        self.trusted = Networks(settings.trusted_networks)
        self.max_connections = int(settings.connections_per_address)  # 0: no cap
        self.connections = AddressCounts()
        self.max_http_connections = int(settings.http_connections_per_address)  # 0: no cap
        self.max_http_total = http_connections_cap(
            int(settings.http_connections), fd_limit if fd_limit is not None else open_files_limit())  # 0: none
        self.http_connections = AddressCounts()  # by key; trusted ones under _TRUSTED
        self.handshakes = _buckets(settings.handshakes_per_second, settings.handshake_burst)
        self.joins = _buckets(settings.joins_per_second, settings.join_burst)
        self.chat = _buckets(settings.chat_messages_per_second, settings.chat_burst)

    def key(self, host: Any) -> Any | None:
        parsed = parse_address(host)
        if self.trusted and self.trusted.contains(parsed):
            return None
        return _key_of(parsed, host)

    # -- connections (all transports together) -------------------------------------------
    def may_connect(self, key: Any) -> bool:
        return key is None or not self.max_connections or self.connections.get(key) < self.max_connections

    def connect(self, key: Any) -> bool:
        """Count one more connection of ``key``; False (nothing counted) at the cap."""
        if key is None:
            return True
        if not self.may_connect(key):
            return False
        self.connections.add(key)
        return True

    def disconnect(self, key: Any) -> None:
        """One connection of ``key`` (admitted by :meth:`connect`) ended."""
        if key is not None:
            self.connections.remove(key)

    # -- HTTP connections (hypercorn's, counted by worldserver.http_guard) ----------------
    def http_connect(self, key: Any) -> str | None:
        """Count one more open HTTP connection of ``key`` (None: a trusted address, counted in
        the total only): None when admitted, else why not (nothing counted):
        :data:`HTTP_TOTAL` (``max_http_total`` open in all) or :data:`HTTP_ADDRESS` (the address
        holds ``limits.http_connections_per_address``)."""
        counts = self.http_connections
        if self.max_http_total and counts.total >= self.max_http_total:
            return self.HTTP_TOTAL
        if key is not _TRUSTED and self.max_http_connections and counts.get(key) >= self.max_http_connections:
            return self.HTTP_ADDRESS
        counts.add(key)
        return None

    def http_disconnect(self, key: Any) -> None:
        """One HTTP connection of ``key`` (admitted by :meth:`http_connect`) ended."""
        self.http_connections.remove(key)

    # -- rates ----------------------------------------------------------------------------
    def handshake(self, key: Any, now: float) -> bool:
        """Take a handshake token (a UDP HELLO or CONNECT, a WebRTC offer, a /ws/movement
        upgrade); False if the address has none left."""
        return key is None or self.handshakes is None or self.handshakes.take(key, now) == 0.0

    def join_wait(self, key: Any, now: float) -> float:
        """Take a join token (``POST /api/join``): 0.0, or the seconds to wait."""
        return 0.0 if key is None or self.joins is None else self.joins.take(key, now)

    def chat_peek(self, key: Any, now: float) -> float:
        """Seconds until the address may send a chat message (0.0: now); takes nothing."""
        return 0.0 if key is None or self.chat is None else self.chat.peek(key, now)

    def chat_take(self, key: Any, now: float) -> None:
        if key is not None and self.chat is not None:
            self.chat.take(key, now)


class FailureGuard:
    """Wrong secrets by address key: ``max_failures`` at once, then one forgiven every
    ``lockout / max_failures`` seconds; an address with none left is locked out (nothing it
    presents is compared). :meth:`check` compares in constant time and counts a failure before
    the caller holds its answer back for :meth:`delay` (so parallel attempts count at once).
    """

    OK, WRONG, LOCKED_OUT = "ok", "wrong", "locked_out"

    def __init__(self, max_failures: int, lockout: float, delay: float, doublings: int = 4) -> None:
        self.max_failures = int(max_failures)
        self.base_delay = float(delay)
        self.doublings = int(doublings)
        self._buckets = TokenBuckets(self.max_failures / float(lockout), self.max_failures)

    @classmethod
    def from_settings(cls, chat) -> FailureGuard:
        """The guard of the ``[chat]`` section's ``admin_max_failures``, ``admin_lockout`` and
        ``admin_failure_delay``."""
        return cls(chat.admin_max_failures, chat.admin_lockout, chat.admin_failure_delay)

    def __len__(self) -> int:
        """Addresses with failures not yet forgiven (at most, until :meth:`sweep`)."""
        return len(self._buckets)

    def check(self, key: Any, presented: str, expected: str, now: float) -> tuple[str, float]:
        """(:data:`OK`, 0), (:data:`WRONG`, 0) (counted) or (:data:`LOCKED_OUT`, seconds until
        the address may try again). An empty ``expected`` matches nothing."""
        locked = self._buckets.peek(key, now)
        if locked > 0:
            return self.LOCKED_OUT, locked
        if expected and hmac.compare_digest(presented.encode("utf-8", "surrogatepass"),
                                            expected.encode("utf-8", "surrogatepass")):
            return self.OK, 0.0
        self._buckets.take(key, now)
        return self.WRONG, 0.0

    def failures(self, key: Any, now: float) -> int:
        """Wrong secrets of ``key`` not yet forgiven."""
        return max(0, math.ceil(self.max_failures - self._buckets.tokens(key, now) - 1e-9))

    def delay(self, failures: int) -> float:
        """How long to hold back the answer to the ``failures``-th wrong secret (of a socket,
        or of an address): the base delay, doubling per failure up to ``2**doublings`` times."""
        return self.base_delay * 2 ** min(max(failures, 1) - 1, self.doublings)

    def sweep(self, now: float) -> None:
        """Forget the addresses whose failures are all forgiven."""
        self._buckets.sweep(now)


class Penalties:
    """Senders whose traffic keeps being dropped: more than ``threshold`` drops in about a
    second (a token bucket per counting key: ``threshold`` a second, ``threshold`` at most)
    put a penalty key in :attr:`until` for ``seconds``.

    Two keys per drop, so that the caller decides what is counted together and what is
    punished: e.g. drops counted by address key (:func:`address_key`, all ports of an address,
    an IPv6 /64) and the penalty put on the source text the caller can look up cheaply.
    :attr:`until` (penalty key -> end of its penalty, on the caller's clock) is meant to be
    read directly on a hot path (``until.get(key)``, then :meth:`end` when it is over);
    drops during a penalty are the caller's to count, not drops here, so once it ends the
    sender has its whole allowance again. Memory stays bounded: the buckets as
    :class:`TokenBuckets`, at most ``max_keys`` penalties (a drop beyond that penalizes no
    one new) and :meth:`expire` forgets the ended ones.
    """

    def __init__(self, threshold: float, seconds: float, max_keys: int = MAX_PENALTIES) -> None:
        if not threshold >= 1 or not seconds > 0:
            raise ValueError(f"penalties need threshold >= 1 and seconds > 0, got {threshold}, {seconds}")
        self.seconds = float(seconds)
        self.max_keys = max(1, int(max_keys))
        self.until: dict[Any, float] = {}
        self._drops = TokenBuckets(threshold, threshold)

    def __len__(self) -> int:
        return len(self.until)

    def dropped(self, count_key: Any, key: Any, now: float) -> bool:
        """Count one drop against ``count_key``; when it has none left, put ``key`` under
        penalty until ``now + seconds``. True when that started a penalty."""
        if self._drops.take(count_key, now) == 0.0:
            return False
        until = self.until
        if key in until and until[key] > now:
            return False
        if key not in until and len(until) >= self.max_keys:
            self.sweep(now)
            if len(until) >= self.max_keys:
                return False
        until[key] = now + self.seconds
        return True

    def active(self, key: Any, now: float) -> bool:
        """Whether ``key`` is under penalty at ``now`` (an ended penalty is forgotten)."""
        end = self.until.get(key)
        if end is None:
            return False
        if now < end:
            return True
        del self.until[key]
        return False

    def end(self, key: Any) -> None:
        """Forget ``key``'s penalty (its caller found it over)."""
        self.until.pop(key, None)

    def expire(self, now: float) -> None:
        """Forget the penalties that are over."""
        for key in [key for key, end in self.until.items() if end <= now]:
            del self.until[key]

    def sweep(self, now: float) -> None:
        """Forget the penalties that are over and the drop counts that are full again."""
        self.expire(now)
        self._drops.sweep(now)


def _buckets(rate: float, burst: int) -> TokenBuckets | None:
    """Buckets for a rate setting; None when the rate is 0 (that limit is off)."""
    return TokenBuckets(rate, burst) if rate > 0 else None
