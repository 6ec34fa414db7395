"""Server configuration: typed, validated, layered settings.

Job: define every setting of the server (one frozen attrs class per section, all held by
``Config``), and build a ``Config`` from, in increasing precedence, the built-in defaults,
a TOML file, ``WORLDSERVER_<SECTION>_<KEY>`` environment variables and explicit
``section.key`` overrides. Every problem -- unknown section or key, wrong type, value out of
range -- becomes a ``ConfigError`` whose message starts with the offending key (or the
environment variable's name), so the CLI can print one clear line.

Must not: open sockets, start the server, configure logging, or read anything other than the
one TOML file and the mapping of environment variables it is given. It only describes and
checks settings; the modules that use them decide what they mean at run time.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, NamedTuple

import attrs

__all__ = [
    "Config",
    "ConfigError",
    "GcSettings",
    "InterestSettings",
    "LimitsSettings",
    "WorldsSettings",
    "NetSettings",
    "ServerSettings",
    "Setting",
    "SimSettings",
    "UdpSettings",
    "DEFAULT_CONFIG_FILE",
    "ENV_PREFIX",
    "LOG_LEVELS",
    "LOG_FORMATS",
    "config_reference",
    "load_config",
]

DEFAULT_CONFIG_FILE = "worldserver.toml"
ENV_PREFIX = "WORLDSERVER_"
# Variables with the prefix that the project's own scripts read and that are not settings
# (scripts/web.sh and the browser tests: which chromium to use); the loader leaves them alone.
ENV_NOT_SETTINGS = frozenset({"WORLDSERVER_CHROMIUM"})
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")


class ConfigError(Exception):
    """A setting is unknown, of the wrong type or out of range.

    ``key`` is the dotted setting name (``"udp.port"``) or the environment variable's name
    when the problem is a variable that matches no setting; the message starts with it.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


# --------------------------------------------------------------------------------------------
# Kinds of value. Each setting has one; it decides how TOML values are checked and how
# strings from the environment or from overrides are parsed.

_KIND_NAMES = {
    "str": "string",
    "int": "integer",
    "float": "float",
    "bool": "boolean",
    "vec3": "list of 3 floats",
    "strs": "list of strings",
}

_TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
_FALSE_WORDS = frozenset({"false", "0", "no", "off"})
_INT_RE = re.compile(r"[+-]?[0-9]+")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _expected(kind: str) -> str:
    return {
        "str": "expected a string",
        "int": "expected an integer",
        "float": "expected a number",
        "bool": "expected a boolean (true/false, yes/no, 1/0)",
        "vec3": "expected a list of 3 numbers",
        "strs": "expected a list of strings",
    }[kind]


def _parse_string(kind: str, text: str, key: str) -> Any:
    """Turn the string form of a value (environment, ``--set``) into the kind's Python type."""
    stripped = text.strip()
    if kind == "str":
        return text
    if kind == "int":
        if _INT_RE.fullmatch(stripped):
            return int(stripped)
    elif kind == "float":
        try:
            return float(stripped)
        except ValueError:
            pass
    elif kind == "bool":
        word = stripped.lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    elif kind == "vec3":
        items: Any
        if stripped.startswith("["):
            try:
                items = json.loads(stripped)
            except (ValueError, RecursionError):  # RecursionError: nested thousands deep
                items = None
        else:
            items = []
            for part in stripped.split(","):
                try:
                    items.append(float(part))
                except ValueError:
                    items = None
                    break
        if isinstance(items, list) and len(items) == 3 and all(_is_number(v) for v in items):
            return [float(v) for v in items]
    elif kind == "strs":
        if stripped.startswith("["):
            try:
                items = json.loads(stripped)
            except (ValueError, RecursionError):  # RecursionError: nested thousands deep
                items = None
            if isinstance(items, list) and all(isinstance(v, str) for v in items):
                return items
        else:
            return [part.strip() for part in stripped.split(",") if part.strip()]
    raise ConfigError(f"{key}: {_expected(kind)}, got {text!r}", key=key)


# --------------------------------------------------------------------------------------------
# Field helpers. Converters only normalise values that are already of an acceptable type
# (int -> float, list -> tuple, log level case); validators then check type and range and
# raise ConfigError naming "section.key".


def _key(instance: object, attribute: attrs.Attribute) -> str:
    return f"{type(instance).SECTION}.{attribute.name}"


def _fail(instance: object, attribute: attrs.Attribute, detail: str) -> None:
    key = _key(instance, attribute)
    raise ConfigError(f"{key}: {detail}", key=key)


def _to_float(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _to_vec3(value: Any) -> Any:
    if isinstance(value, (list, tuple)) and all(_is_number(v) for v in value):
        return tuple(float(v) for v in value)
    return value


def _to_level(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


def _type_check(kind: str):
    def check(instance: object, attribute: attrs.Attribute, value: Any) -> None:
        ok: bool
        if kind == "str":
            ok = isinstance(value, str)
        elif kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind == "float":
            ok = isinstance(value, float)
            if ok and not math.isfinite(value):
                _fail(instance, attribute, f"must be a finite number, got {value!r}")
        elif kind == "bool":
            ok = isinstance(value, bool)
        elif kind == "vec3":
            ok = (
                isinstance(value, tuple)
                and len(value) == 3
                and all(isinstance(v, float) for v in value)
            )
            if ok and not all(math.isfinite(v) for v in value):
                _fail(instance, attribute, f"must hold finite numbers, got {list(value)!r}")
        elif kind == "strs":
            ok = isinstance(value, tuple) and all(isinstance(v, str) for v in value)
        else:  # pragma: no cover - programming error in this module
            raise AssertionError(kind)
        if not ok:
            shown = list(value) if isinstance(value, tuple) else value
            _fail(instance, attribute, f"{_expected(kind)}, got {shown!r}")

    return check


def _between(lo: float, hi: float):
    def check(instance: object, attribute: attrs.Attribute, value: Any) -> None:
        if not lo <= value <= hi:
            _fail(instance, attribute, f"must be between {lo} and {hi}, got {value!r}")

    return check


def _positive(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    if not value > 0:
        _fail(instance, attribute, f"must be greater than 0, got {value!r}")


def _non_negative(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    if not value >= 0:
        _fail(instance, attribute, f"must be 0 or more, got {value!r}")


def _at_least(lo: int):
    def check(instance: object, attribute: attrs.Attribute, value: Any) -> None:
        if not value >= lo:
            _fail(instance, attribute, f"must be {lo} or more, got {value!r}")

    return check


def _one_of(*choices: str):
    def check(instance: object, attribute: attrs.Attribute, value: Any) -> None:
        if value not in choices:
            _fail(instance, attribute, f"must be one of {', '.join(choices)}, got {value!r}")

    return check


def _not_empty(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    if not value.strip():
        _fail(instance, attribute, "must not be empty")


def _hex_secret(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    if value == "":
        return
    if len(value) % 2 or not re.fullmatch(r"[0-9a-fA-F]+", value):
        _fail(instance, attribute, "must be empty or an even number of hex digits")
    if len(value) < 32:
        _fail(instance, attribute, f"must be at least 32 hex digits (16 bytes), got {len(value)}")


def _admin_token(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    if value == "":
        return
    if len(value) < 16 or any(ch.isspace() or not ch.isprintable() for ch in value):
        _fail(instance, attribute, f"must be empty or 16 or more printable characters without spaces, got {len(value)} characters")


def _to_strs(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


_CONVERTERS = {"float": _to_float, "vec3": _to_vec3, "strs": _to_strs}


def _setting(default: Any, kind: str, help: str, *checks: Any, converter: Any = None) -> Any:
    """Declare one setting: its default, kind, one-line description and range checks."""
    return attrs.field(
        default=default,
        converter=converter or _CONVERTERS.get(kind),
        validator=[_type_check(kind), *checks],
        metadata={"kind": kind, "help": help},
    )


# --------------------------------------------------------------------------------------------
# The sections. Defaults here are the built-in defaults; worldserver.toml at the repo root
# must show exactly the same values (tests/test_config.py checks it).


@attrs.frozen
class ServerSettings:
    SECTION: ClassVar[str] = "server"
    HELP: ClassVar[str] = "Process-wide settings: logging, data, stats, secrets, shutdown."

    log_level: str = _setting(
        "INFO",
        "str",
        "Log verbosity: DEBUG, INFO, WARNING, ERROR or CRITICAL.",
        _one_of(*LOG_LEVELS),
        converter=_to_level,
    )
    log_format: str = _setting(
        "text", "str", 'Log line format: "text" (key=value) or "json" (one object per line).',
        _one_of(*LOG_FORMATS),
    )
    data_dir: str = _setting(
        "./data", "str", "Directory for files the server writes (relative to the working dir).",
        _not_empty,
    )
    stats_interval: float = _setting(
        10.0, "float", "Seconds between two stats log lines.", _positive
    )
    secret: str = _setting(
        "", "str", 'Hex key for handshake cookies and connect tokens (>= 32 hex digits); "" = random per start.',
        _hex_secret,
    )
    admin_token: str = _setting(
        "", "str", "Bearer token of the admin API (/admin/api/) and the admin commands (16+ characters, no spaces); "
        '"" = a random one per start, written to <data_dir>/admin.token (mode 0600).',
        _admin_token,
    )
    drain_grace: float = _setting(
        20.0, "float", "Seconds a SIGTERM drain waits for players to leave before the server exits 0 "
        "(0 = exit at once); a second SIGTERM exits at once.", _between(0.0, 86400.0),
    )
    metrics_public: bool = _setting(
        False, "bool", "Serve GET /metrics (Prometheus) to every address; false = to loopback only, others get 403."
    )

    @property
    def secret_bytes(self) -> bytes | None:
        """The cookie key as bytes, or None when a random one must be drawn at start."""
        return bytes.fromhex(self.secret) if self.secret else None


@attrs.frozen
class UdpSettings:
    SECTION: ClassVar[str] = "udp"
    HELP: ClassVar[str] = "The UDP endpoint of the native protocol."

    host: str = _setting("0.0.0.0", "str", "Address to bind the UDP socket to.", _not_empty)
    port: int = _setting(9300, "int", "UDP port to bind (0 = any free port).", _between(0, 65535))
    datagram_budget: int = _setting(
        1200, "int", "Maximum size in bytes of any datagram the server sends.",
        _between(300, 65000),
    )
    recv_batch: int = _setting(
        128, "int", "Maximum datagrams read per wakeup (about 1 ms of work: a due tick waits no longer).",
        _between(1, 65536)
    )
    recv_coalesce_ms: float = _setting(
        25.0, "float",
        "While datagrams keep coming, read them every this many ms instead of on each one"
        " (0 = on each one), aligned to the ticks: make it a divisor of the tick period so"
        " that drains share the tick's wakeups; the tick reads what waits right before it runs.",
        _between(0, 50),
    )


@attrs.frozen
class SimSettings:
    SECTION: ClassVar[str] = "sim"
    HELP: ClassVar[str] = "The authoritative simulation: tick, bounds, movement rules."

    tick_rate: int = _setting(20, "int", "Simulation ticks per second.", _between(1, 240))
    max_speed: float = _setting(
        5.0, "float", "Maximum horizontal speed of an entity in m/s.", _positive
    )
    half_extent: float = _setting(
        110.0, "float", "World bounds: |x| and |z| are kept <= this many metres.", _positive
    )
    y_min: float = _setting(-10.0, "float", "Lowest allowed height in metres.")
    y_max: float = _setting(50.0, "float", "Highest allowed height in metres.")
    position_step: float = _setting(
        0.01, "float", "Quantization step of positions in metres.", _positive
    )
    spawn_point: tuple[float, float, float] = _setting(
        (0.0, 0.0, 0.0), "vec3", "Where new entities appear: [x, y, z] in metres."
    )
    spawn_clearance: float = _setting(
        2.0, "float", "Radius in metres around the spawn point used to spread new entities.",
        _non_negative,
    )
    max_entities: int = _setting(
        4096, "int", "Maximum number of live entities.", _between(1, 1 << 20)
    )
    jump_speed: float = _setting(
        4.0, "float", "Upward speed in m/s given by a jump (0 = no jumping).", _non_negative
    )
    gravity: float = _setting(9.81, "float", "Downward acceleration in m/s^2.", _non_negative)
    input_rate_limit: float = _setting(
        40.0, "float", "Inputs per second accepted from one client (token bucket rate).",
        _positive,
    )
    input_burst: int = _setting(
        10, "int", "Inputs one client may send at once above the rate (bucket size).",
        _at_least(1),
    )

    def __attrs_post_init__(self) -> None:
        if not self.y_min < self.y_max:
            raise ConfigError(
                f"sim.y_max: must be greater than sim.y_min ({self.y_min}), got {self.y_max}",
                key="sim.y_max",
            )
        x, y, z = self.spawn_point
        if abs(x) > self.half_extent or abs(z) > self.half_extent:
            raise ConfigError(
                f"sim.spawn_point: x and z must be within +-sim.half_extent ({self.half_extent})"
                f", got {list(self.spawn_point)}",
                key="sim.spawn_point",
            )
        if not self.y_min <= y <= self.y_max:
            raise ConfigError(
                f"sim.spawn_point: y must be between sim.y_min ({self.y_min}) and sim.y_max"
                f" ({self.y_max}), got {y}",
                key="sim.spawn_point",
            )

    @property
    def dt(self) -> float:
        """Seconds per tick."""
        return 1.0 / self.tick_rate


@attrs.frozen
class InterestSettings:
    SECTION: ClassVar[str] = "interest"
    HELP: ClassVar[str] = "Interest management: which entities each client hears about."

    radius: float = _setting(
        50.0, "float", "An entity enters a client's view within this many metres.", _positive
    )
    leave_margin: float = _setting(
        5.0, "float", "It leaves the view beyond radius + leave_margin (hysteresis).",
        _non_negative,
    )
    cell_size: float = _setting(
        0.0, "float", "Interest grid cell size in metres; 0 = automatic (leave radius / 4).",
        _non_negative,
    )
    share_cell: float = _setting(
        8.0, "float",
        "Clients standing in one square of this many metres share one view (what one of them"
        " sees), so a crowd is encoded once per square; 0 = every client its own view.",
        _non_negative,
    )

    @property
    def leave_radius(self) -> float:
        return self.radius + self.leave_margin

    @property
    def effective_cell_size(self) -> float | None:
        """The cell size to use, or None to let the grid choose (leave radius / 4)."""
        return self.cell_size if self.cell_size > 0 else None


@attrs.frozen
class NetSettings:
    SECTION: ClassVar[str] = "net"
    HELP: ClassVar[str] = "Connections: timeouts, handshake, limits, snapshot history."

    timeout: float = _setting(
        5.0, "float", "Seconds of silence after which a client is dropped.", _positive
    )
    keepalive_interval: float = _setting(
        1.0, "float", "Seconds between keepalives on an otherwise idle connection.", _positive
    )
    cookie_lifetime: float = _setting(
        10.0, "float", "Seconds a handshake cookie stays valid.", _positive
    )
    require_connect_token: bool = _setting(
        True, "bool",
        "Refuse a UDP handshake without a connect token from the HTTP join (REFUSE token_required);"
        " false opens UDP to anonymous guests (test servers). WebRTC and /ws/movement are not affected.",
    )
    connect_token_lifetime: float = _setting(
        60.0, "float", "Seconds a connect token (from POST /api/join) may open its one UDP connection.",
        _positive,
    )
    max_clients: int = _setting(
        2000, "int", "Maximum number of connected clients.", _between(1, 1 << 20)
    )
    snapshot_ring: int = _setting(
        32, "int", "Snapshots kept per client as delta baselines (clients keep 64).", _between(2, 60)
    )
    client_rate_limit: int = _setting(
        98304,
        "int",
        "Bytes per second of snapshots one client may receive (at least one datagram a tick);"
        " over it, nearer and longer unsent entities go first.",
        _between(1024, 1 << 30),
    )

    def __attrs_post_init__(self) -> None:
        if not self.keepalive_interval < self.timeout:
            raise ConfigError(
                f"net.keepalive_interval: must be less than net.timeout ({self.timeout}),"
                f" got {self.keepalive_interval}",
                key="net.keepalive_interval",
            )


@attrs.frozen
class GcSettings:
    SECTION: ClassVar[str] = "gc"
    HELP: ClassVar[str] = "Python garbage collector tuning for steady tick times."

    freeze_after_start: bool = _setting(
        True, "bool", "gc.freeze() once start-up is done so old objects are never rescanned."
    )
    gen0_threshold: int = _setting(
        50000, "int", "Allocations before a generation-0 collection (0 = automatic gc off).",
        _non_negative,
    )
    gen1_threshold: int = _setting(
        50, "int", "Generation-0 collections before a generation-1 collection.", _non_negative
    )
    gen2_threshold: int = _setting(
        1000, "int", "Generation-1 collections before a generation-2 collection.", _non_negative
    )
    malloc_keep_mib: int = _setting(
        16, "int", "MiB of freed memory the C heap keeps for the next tick instead of giving it back"
        " to the kernel (0 = malloc's defaults).", _between(0, 4096),
    )




class Setting(NamedTuple):
    """One row of the configuration reference."""

    key: str  # "section.key"
    kind: str  # "str", "int", "float", "bool" or "vec3"
    default: Any
    help: str


def config_reference() -> Iterator[Setting]:
    """Every setting, in file order, with its kind, default and one-line description."""
    for section, cls in _SECTIONS.items():
        for field in attrs.fields(cls):
            default = field.default
            if isinstance(default, tuple):
                default = list(default)
            yield Setting(
                f"{section}.{field.name}", field.metadata["kind"], default, field.metadata["help"]
            )


def _kind_of(section: str, name: str) -> str | None:
    cls = _SECTIONS.get(section)
    if cls is None:
        return None
    field = attrs.fields_dict(cls).get(name)
    return None if field is None else field.metadata["kind"]


# --------------------------------------------------------------------------------------------
# TOML output.


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        # JSON string escapes are a subset of TOML basic-string escapes.
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


@attrs.frozen
class HttpSettings:
    SECTION: ClassVar[str] = "http"
    HELP: ClassVar[str] = "The HTTP port: web client, join, health, geckos signaling, WebSockets."

    host: str = _setting("0.0.0.0", "str", "Address the HTTP server binds to.", _not_empty)
    port: int = _setting(8080, "int", "TCP port of the HTTP server; 0 picks a free port.", _between(0, 65535))
    certfile: str = _setting("", "str", "TLS certificate (PEM); empty serves plain HTTP.")
    keyfile: str = _setting("", "str", "TLS private key (PEM) for certfile.")
    web_root: str = _setting(
        "./clients/web/dist", "str", "Directory of the built web client served at /."
    )
    images_dir: str = _setting(
        "./clients/web/images", "str", "Directory of the gallery's pictures (png, jpg, webp)."
    )
    cors_origin: str = _setting(
        "*", "str", "Access-Control-Allow-Origin of the geckos.io signaling routes."
    )
    require_token: bool = _setting(
        False, "bool", "Refuse WebRTC connections whose Authorization is not a join token."
    )
    datachannel_timeout: float = _setting(
        3.0, "float", "Seconds the web client waits for WebRTC before using the WebSocket.",
        _positive,
    )


@attrs.frozen
class WebrtcSettings:
    SECTION: ClassVar[str] = "webrtc"
    HELP: ClassVar[str] = "WebRTC data channels (aiortc), geckos.io compatible."

    enabled: bool = _setting(True, "bool", "Offer WebRTC data channels on the HTTP port.")
    ice_servers: tuple = _setting(
        (), "strs", 'STUN/TURN URLs, e.g. ["stun:stun.example.org:3478"]; none by default.'
    )
    host_addresses: tuple = _setting(
        (), "strs", "Local addresses for ICE host candidates; empty = all but loopback."
    )
    announced_address: str = _setting(
        "", "str", "Public address written into candidates (server behind 1:1 NAT); empty = as is."
    )
    hatongsu: bool = _setting(
        True, "bool", "Serve clients that speak Hatongsu's JSON events on the geckos channel."
    )
    delayed_acks: bool = _setting(
        True, "bool", "Delay SCTP acknowledgements and send them with the next snapshot (RFC 9260 6.2)."
    )


@attrs.frozen
class ChatSettings:
    SECTION: ClassVar[str] = "chat"
    HELP: ClassVar[str] = "Chat: rooms, history, search, limits and moderation (WebSocket /ws/chat)."

    db_path: str = _setting(
        "", "str", 'SQLite database file; "" = chat.sqlite3 in server.data_dir.'
    )
    db_cache_mib: int = _setting(
        4, "int",
        "SQLite page cache of the chat database, in MiB (heap memory that fills as the database grows).",
        _between(1, 65536),
    )
    db_mmap_mib: int = _setting(
        0, "int",
        "Bytes of the chat database SQLite reads through a memory map, in MiB (0 = none: reads go"
        " through the OS page cache, which is not the server's RSS).",
        _between(0, 1_048_576),
    )
    admin_token: str = _setting(
        "", "str", 'Token that gives moderator rights to a chat client (the chat only: not server.admin_token); "" = no moderators.'
    )
    public_room: str = _setting("lobby", "str", "Name of the room every player joins.", _not_empty)
    max_message_chars: int = _setting(
        2000, "int", "Longest text of one message, in characters.", _between(1, 100_000)
    )
    rate: float = _setting(2.0, "float", "Messages per second a user may send on average.", _positive)
    burst: int = _setting(10, "int", "Messages a user may send in a burst.", _at_least(1))
    history_on_join: int = _setting(
        50, "int", "Messages a client gets when it joins a room.", _between(0, 1000)
    )
    max_image_bytes: int = _setting(
        2_000_000, "int", "Largest image upload, in bytes.", _between(1024, 100_000_000)
    )
    image_max_frames: int = _setting(
        300, "int", "Most frames an uploaded animation may have.", _between(1, 100_000)
    )
    image_max_pixels: int = _setting(
        50_000_000, "int",
        "Most pixels an upload may decode to, frames x canvas (each frame is a whole canvas).",
        _between(1, 1_000_000_000),
    )
    image_workers: int = _setting(
        2, "int", "Uploads decoded at once, each in its own worker process; others wait or get 503.",
        _between(1, 64),
    )
    image_worker_memory_mb: int = _setting(
        512, "int", "Memory a decoding worker may take beyond its start, in MiB (RLIMIT_AS).",
        _between(16, 65536),
    )
    image_worker_seconds: float = _setting(
        10.0, "float",
        "CPU seconds a decoding worker may use (RLIMIT_CPU); its wall-clock deadline is twice that plus 1.",
        _between(0.5, 3600),
    )
    typing_ttl: float = _setting(
        5.0, "float", "Seconds a typing indicator lasts unless renewed.", _positive
    )
    admin_max_failures: int = _setting(
        5, "int", "Wrong admin tokens an address may present (chat hellos and admin API requests "
        "together) before it is locked out; a chat socket is closed (1008) at this many or when locked out.",
        _between(1, 1000),
    )
    admin_lockout: float = _setting(
        600.0, "float", "Seconds until an address's wrong admin tokens are all forgiven "
        "(one of them every admin_lockout / admin_max_failures seconds).", _positive
    )
    admin_failure_delay: float = _setting(
        0.5, "float", "Seconds the answer to a wrong admin token is held back (that chat socket or "
        "admin API request only), doubling with each failure of the socket (admin API: of the address) up to "
        "16 times this.",
        _between(0.0, 60.0),
    )


def _networks(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    for text in value:
        try:
            ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            _fail(instance, attribute, f"{text!r} is not a network (like 10.0.0.0/8 or ::1)")


@attrs.frozen
class LimitsSettings:
    SECTION: ClassVar[str] = "limits"
    HELP: ClassVar[str] = (
        "Admission and fairness per client address (IPv4: per address, IPv6: per /64); see"
        " docs/reliability.md."
    )

    trusted_networks: tuple = _setting(
        ("127.0.0.0/8", "::1/128"), "strs",
        "Networks with no per-address limit (the totals still hold); loopback by default so"
        " local swarms and benchmarks are not limited. Empty it to apply the limits to"
        " loopback (tests).",
        _networks,
    )
    connections_per_address: int = _setting(
        64, "int",
        "Native-protocol connections one address may hold, UDP, WebRTC and /ws/movement"
        " together (0 = no cap).",
        _non_negative,
    )
    http_connections_per_address: int = _setting(
        64, "int",
        "HTTP connections (page, API, WebSockets) one address may hold open; more are closed at"
        " once, unread. Players behind one NAT share it: a browser holds about 8 (0 = no cap).",
        _non_negative,
    )
    http_connections: int = _setting(
        0, "int",
        "HTTP connections open at once, all addresses together; more are closed at once, unread"
        " (0 = three quarters of the open-files limit, which the server raises from `ulimit -Sn` to"
        " the hard limit at start, keeping at least 256 of it, at most half, for the rest).",
        _between(0, 1 << 24),
    )
    handshakes_per_second: float = _setting(
        20.0, "float",
        "UDP handshake packets (HELLO, CONNECT), WebRTC offers and /ws/movement upgrades one"
        " address may send per second on average (0 = no limit).",
        _non_negative,
    )
    handshake_burst: int = _setting(
        40, "int", "Handshake packets and requests one address may send at once.", _at_least(1)
    )
    offer_timeout: float = _setting(
        5.0, "float", "Seconds a WebRTC offer waits for its answer before it is closed.",
        _positive,
    )
    pending_offers: int = _setting(
        64, "int",
        "WebRTC connections offered but not yet open, all addresses together (each holds"
        " sockets); more get 503.",
        _at_least(1),
    )
    pending_offers_per_address: int = _setting(
        8, "int", "WebRTC connections offered but not yet open, per address; more get 503.",
        _at_least(1),
    )
    joins_per_second: float = _setting(
        2.0, "float", "POST /api/join requests one address may make per second (0 = no limit).",
        _non_negative,
    )
    join_burst: int = _setting(
        10, "int", "POST /api/join requests one address may make at once.", _at_least(1)
    )
    names_per_hour: int = _setting(
        20, "int",
        "New names (identities) one address may create per hour, at most this many at once"
        " (0 = no limit); taking back a name with its secret is not counted.",
        _non_negative,
    )
    max_names: int = _setting(
        1_000_000, "int",
        "Names (identities) kept in the chat database, all addresses together; a new name"
        " beyond this gets 503 (names are kept for good).",
        _at_least(1),
    )
    chat_messages_per_second: float = _setting(
        5.0, "float",
        "Chat messages one address may send per second, all its names together (besides"
        " chat.rate per name; 0 = no limit).",
        _non_negative,
    )
    chat_burst: int = _setting(
        30, "int", "Chat messages one address may send at once.", _at_least(1)
    )
    udp_drops_per_second: int = _setting(
        500, "int",
        "UDP datagrams of one address dropped per second (invalid, or over a limit) beyond which"
        " its datagrams are dropped unread for udp_penalty seconds, except its proven connections'"
        " packets unless they themselves exceed it (0 = never).",
        _non_negative,
    )
    udp_penalty: float = _setting(
        5.0, "float", "Seconds an address (or connection) over udp_drops_per_second is ignored.",
        _between(0.001, 3600.0),
    )


@attrs.frozen
class WorldsSettings:
    SECTION: ClassVar[str] = "worlds"
    HELP: ClassVar[str] = "The worlds this server hosts (docs/worlds.md); each has its own simulation."

    hosted: tuple = _setting(
        ("gallery",), "strs",
        "Worlds to host: built-in ids (gallery, halls), paths of world files, or open (a square of"
        " sim.half_extent without walls); the first is where a client that names none goes.",
    )

    def __attrs_post_init__(self) -> None:
        if not self.hosted:
            raise ConfigError("worlds.hosted: must name at least one world", key="worlds.hosted")
        if len(self.hosted) > 64:
            raise ConfigError("worlds.hosted: at most 64 worlds", key="worlds.hosted")

    def specs(self, sim: "SimSettings") -> list:
        """The :class:`worldserver.worldfile.WorldSpec` of every hosted world, in order; a world
        that cannot be read or checked, or an id used twice, raises ConfigError naming the
        setting (one line)."""
        from worldserver.worldfile import WorldFileError, load_named

        specs, seen = [], set()
        for name in self.hosted:
            try:
                spec = load_named(name, sim.half_extent, (sim.spawn_point[0], sim.spawn_point[2]))
            except WorldFileError as exc:
                raise ConfigError(f"worlds.hosted: {exc}", key="worlds.hosted") from None
            if spec.id in seen:
                raise ConfigError(f"worlds.hosted: two worlds have the id {spec.id!r}", key="worlds.hosted")
            seen.add(spec.id)
            specs.append(spec)
        return specs


@attrs.frozen
class CallsSettings:
    SECTION: ClassVar[str] = "calls"
    HELP: ClassVar[str] = "Proximity calls (docs/calls.md): voice and video with the avatars near you."

    enabled: bool = _setting(True, "bool", "Form call groups and accept call.* requests on the chat socket.")
    radius: float = _setting(
        2.5, "float", "Metres: two avatars closer than this are in one call.", _between(0.5, 50.0))
    leave_radius: float = _setting(
        3.5, "float", "Metres: two linked avatars stay in one call until farther apart than this.",
        _between(0.5, 60.0))
    interval_ticks: int = _setting(
        2, "int", "Call groups are recomputed every this many ticks.", _between(1, 100))
    mesh_max: int = _setting(
        4, "int", "Largest group on a peer-to-peer mesh when an SFU is configured.", _between(2, 16))
    max_members: int = _setting(
        8, "int", "Largest call without an SFU; later members wait for a place.", _between(2, 32))
    sfu: str = _setting("none", "str", "Media server for large groups and zones: none or janus.",
                        _one_of("none", "janus"))
    janus_url: str = _setting(
        "", "str",
        "WebSocket API URL of an existing Janus (scheme ws or wss, Janus port 8188 by default); empty: start"
        " our own.")
    janus_public_url: str = _setting(
        "", "str", "Janus WebSocket URL given to browsers; empty: the started Janus on this host.")
    janus_port: int = _setting(
        8188, "int", "Port of the Janus this server starts (WebSocket API).", _between(1, 65535))
    janus_host: str = _setting(
        "127.0.0.1", "str", "Address the Janus this server starts listens on (0.0.0.0: browsers on other"
        " machines reach it).", _not_empty)
    janus_binary: str = _setting(
        "janus", "str", "The janus program this server starts (a name on PATH or a path).", _not_empty)
    janus_admin_key: str = _setting(
        "", "str", "Janus VideoRoom admin_key for creating rooms; empty: a random one per start.")
    signal_rate: float = _setting(
        20.0, "float", "Call signaling frames per second one player may send.", _positive)
    signal_burst: int = _setting(
        60, "int", "Call signaling frames one player may send at once.", _at_least(1))

    def __attrs_post_init__(self) -> None:
        if self.leave_radius < self.radius:
            raise ConfigError("calls.leave_radius: must be at least calls.radius", key="calls.leave_radius")


_SECTIONS: dict[str, type] = {
    cls.SECTION: cls
    for cls in (ServerSettings, UdpSettings, SimSettings, InterestSettings, NetSettings, GcSettings,
                HttpSettings, WebrtcSettings, ChatSettings, LimitsSettings, WorldsSettings,
                CallsSettings)
}


@attrs.frozen
class Config:
    """The whole configuration: ``config.server``, ``config.udp``, ``config.sim``, ..."""

    server: ServerSettings = attrs.field(factory=ServerSettings)
    udp: UdpSettings = attrs.field(factory=UdpSettings)
    sim: SimSettings = attrs.field(factory=SimSettings)
    interest: InterestSettings = attrs.field(factory=InterestSettings)
    net: NetSettings = attrs.field(factory=NetSettings)
    gc: GcSettings = attrs.field(factory=GcSettings)
    http: HttpSettings = attrs.field(factory=HttpSettings)
    webrtc: WebrtcSettings = attrs.field(factory=WebrtcSettings)
    chat: ChatSettings = attrs.field(factory=ChatSettings)
    limits: LimitsSettings = attrs.field(factory=LimitsSettings)
    worlds: WorldsSettings = attrs.field(factory=WorldsSettings)
    calls: CallsSettings = attrs.field(factory=CallsSettings)

    def __attrs_post_init__(self) -> None:
        self.worlds.specs(self.sim)  # every hosted world must load: one clear line if not
        if self.net.max_clients > self.sim.max_entities:
            raise ConfigError(
                f"net.max_clients: must not exceed sim.max_entities ({self.sim.max_entities}),"
                f" got {self.net.max_clients}",
                key="net.max_clients",
            )

    def get(self, key: str) -> Any:
        """The value of ``"section.key"``."""
        section, _, name = key.partition(".")
        if _kind_of(section, name) is None:
            raise ConfigError(f"{key}: unknown setting", key=key)
        return getattr(getattr(self, section), name)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain data (``{"udp": {"port": 9300, ...}, ...}``), lists for vectors."""
        out: dict[str, dict[str, Any]] = {}
        for section in _SECTIONS:
            values = attrs.asdict(getattr(self, section))
            out[section] = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        return out

    def with_overrides(self, overrides: Mapping[str, Any], source: str = "override") -> Config:
        """A copy with ``{"section.key": value}`` applied; strings are parsed by kind."""
        layered = self.as_dict()
        sources: dict[str, str] = {}
        for key, value in overrides.items():
            _apply(layered, sources, key, value, source, key_label=key)
        return _build(layered, sources)

    def to_toml(self, header: str | None = None) -> str:
        """The configuration as a TOML document, each key preceded by its description."""
        lines: list[str] = []
        if header:
            lines.extend(f"# {line}".rstrip() for line in header.splitlines())
            lines.append("")
        data = self.as_dict()
        for section, cls in _SECTIONS.items():
            lines.append(f"# {cls.HELP}")
            lines.append(f"[{section}]")
            for field in attrs.fields(cls):
                lines.append(f"# {field.metadata['help']}")
                lines.append(f"{field.name} = {_toml_value(data[section][field.name])}")
            lines.append("")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Loading.


def _apply(
    layered: dict[str, dict[str, Any]],
    sources: dict[str, str],
    key: str,
    value: Any,
    source: str,
    key_label: str,
) -> None:
    """Put one value (typed, or a string to parse) into the layered dict."""
    section, dot, name = key.partition(".")
    kind = _kind_of(section, name) if dot else None
    if kind is None:
        raise ConfigError(f"{key_label}: unknown setting", key=key_label)
    if isinstance(value, str) and kind != "str":
        try:
            value = _parse_string(kind, value, key)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (from {source})", key=key) from None
    layered[section][name] = value
    sources[key] = source


def _build(layered: Mapping[str, Mapping[str, Any]], sources: Mapping[str, str]) -> Config:
    """Construct and validate; a validation error names where the bad value came from."""
    try:
        sections = {name: cls(**layered.get(name, {})) for name, cls in _SECTIONS.items()}
        return Config(**sections)
    except ConfigError as exc:
        where = sources.get(exc.key or "")
        if where:
            raise ConfigError(f"{exc} (from {where})", key=exc.key) from None
        raise


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ConfigError(f"{path}: invalid TOML: nested too deeply") from None


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    override_source: str = "override",
) -> Config:
    """Build the effective configuration.

    Layers, later ones winning: the built-in defaults; the TOML file ``path`` (when None,
    ``./worldserver.toml`` if it exists); the ``WORLDSERVER_<SECTION>_<KEY>`` variables of
    ``env`` (``os.environ`` when None; pass ``{}`` to ignore the environment); ``overrides``
    as ``{"section.key": value}`` (strings are parsed by the setting's kind; error messages
    say they came ``from <override_source>``).
    Raises ConfigError for anything unknown, mistyped or out of range.
    """
    layered: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    sources: dict[str, str] = {}

    if path is None and os.path.isfile(DEFAULT_CONFIG_FILE):
        path = DEFAULT_CONFIG_FILE
    if path is not None:
        path = os.fspath(path)
        document = _read_toml(path)
        for section, table in document.items():
            if section not in _SECTIONS:
                raise ConfigError(f"{section}: unknown section (in {path})", key=section)
            if not isinstance(table, dict):
                raise ConfigError(f"{section}: expected a [{section}] table (in {path})", key=section)
            for name, value in table.items():
                key = f"{section}.{name}"
                if _kind_of(section, name) is None:
                    raise ConfigError(f"{key}: unknown setting (in {path})", key=key)
                layered[section][name] = value
                sources[key] = path

    environment = os.environ if env is None else env
    for var in sorted(environment):
        if not var.startswith(ENV_PREFIX) or var in ENV_NOT_SETTINGS:
            continue
        section, _, name = var[len(ENV_PREFIX):].lower().partition("_")
        if _kind_of(section, name) is None:
            raise ConfigError(
                f"{var}: unknown setting (environment variables must be named"
                f" {ENV_PREFIX}<SECTION>_<KEY>, e.g. {ENV_PREFIX}UDP_PORT)",
                key=var,
            )
        _apply(layered, sources, f"{section}.{name}", environment[var], var, key_label=var)

    for key, value in (overrides or {}).items():
        _apply(layered, sources, key, value, override_source, key_label=key)

    return _build(layered, sources)
