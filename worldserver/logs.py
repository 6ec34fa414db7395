"""Structured logging for the server and the tools.

Job: ``setup_logging(level, fmt)`` installs one handler on the root logger that writes to
stderr either text lines (``2026-11-22T13:00:00Z INFO worldserver.tick msg key=value ...``)
or JSON (one object per line); ``get_logger(name)`` returns a logger whose calls take
structured fields as keyword arguments (``log.info("client connected", addr=addr, entity=7)``),
and ``log_event(logger, level, msg, **fields)`` does the same for a plain ``logging.Logger``.
:class:`LogLimiter` lets through at most one line per key (a reason) every so many seconds,
and the next line it lets through says how many it held back: lines about input from the
network go through one, so that a flood of bad requests cannot flood the log.

Must not: decide what gets logged or how often -- callers keep INFO quiet (start, stop,
connect/disconnect, periodic stats) and put per-tick or per-packet detail at DEBUG --,
read configuration files, or write anywhere but the stream it is given (stderr by default).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

__all__ = [
    "FieldLogger",
    "LogLimiter",
    "StructuredFormatter",
    "get_logger",
    "log_event",
    "setup_logging",
]

# Keyword arguments that logging itself understands; everything else is a field.
_LOGGING_KWARGS = frozenset({"exc_info", "stack_info", "stacklevel", "extra"})
# Names a JSON line uses for itself; a field with one of these names gets a "field_" prefix.
_RESERVED = frozenset({"ts", "level", "logger", "msg", "exc"})
_FIELDS_ATTR = "fields"
_HANDLER_MARK = "_worldserver_handler"
_CHATTY_LIBRARIES = ("aioice", "aiortc", "httpx", "httpcore", "hypercorn.access")


def _plain(value: Any) -> Any:
    """A JSON-friendly form of a field value."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if (
        isinstance(value, tuple)
        and len(value) in (2, 4)
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    ):
        # A socket address: (host, port) or IPv6 (host, port, flowinfo, scope_id).
        host = f"[{value[0]}]" if ":" in value[0] else value[0]
        return f"{host}:{value[1]}"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():
        return item()  # numpy scalar
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    return str(value)


def _text(value: Any) -> str:
    value = _plain(value)
    if isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, (list, dict)):
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    else:
        text = str(value)
    if text == "" or any(c in text for c in ' ="\\\n\r\t'):
        text = json.dumps(text, ensure_ascii=False)
    return text


class StructuredFormatter(logging.Formatter):
    """Formats records as ``text`` (key=value) or ``json`` lines, with their fields."""

    def __init__(self, fmt: str = "text") -> None:
        if fmt not in ("text", "json"):
            raise ValueError(f"log format must be 'text' or 'json', got {fmt!r}")
        super().__init__()
        self.mode = fmt

    @staticmethod
    def _timestamp(record: logging.LogRecord, millis: bool) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        if millis:
            stamp += f".{int(record.msecs):03d}"
        return stamp + "Z"

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        fields: Mapping[str, Any] = getattr(record, _FIELDS_ATTR, None) or {}
        exc_text = None
        if record.exc_info:
            exc_text = self.formatException(record.exc_info)
        elif record.exc_text:
            exc_text = record.exc_text
        if record.stack_info:
            exc_text = (exc_text + "\n" if exc_text else "") + self.formatStack(record.stack_info)

        if self.mode == "json":
            obj: dict[str, Any] = {
                "ts": self._timestamp(record, millis=True),
                "level": record.levelname,
                "logger": record.name,
                "msg": message,
            }
            for key, value in fields.items():
                obj[f"field_{key}" if key in _RESERVED else key] = _plain(value)
            if exc_text:
                obj["exc"] = exc_text
            return json.dumps(obj, ensure_ascii=False, default=str)

        parts = [self._timestamp(record, millis=False), record.levelname, record.name, message]
        parts.extend(f"{key}={_text(value)}" for key, value in fields.items())
        line = " ".join(parts)
        if exc_text:
            line += "\n" + exc_text
        return line


class FieldLogger(logging.LoggerAdapter):
    """A logger whose calls take structured fields as keyword arguments.

    ``log.info("client connected", addr=addr, entity=7)``; ``log.bind(peer=addr)`` returns a
    logger that adds ``peer=...`` to every line. ``msg % args`` formatting still works, and
    ``exc_info``, ``stack_info``, ``stacklevel`` and ``extra`` keep their logging meaning;
    every other keyword (even ``msg`` or ``level``) is a field.
    """

    def __init__(self, logger: logging.Logger, fields: Mapping[str, Any] | None = None) -> None:
        super().__init__(logger, dict(fields or {}))

    def bind(self, **fields: Any) -> FieldLogger:
        return FieldLogger(self.logger, {**self.extra, **fields})

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        fields = dict(self.extra)
        for key in [k for k in kwargs if k not in _LOGGING_KWARGS]:
            fields[key] = kwargs.pop(key)
        if fields:
            extra = dict(kwargs.get("extra") or {})
            extra[_FIELDS_ATTR] = {**extra.get(_FIELDS_ATTR, {}), **fields}
            kwargs["extra"] = extra
        return msg, kwargs

    def _emit(self, level: int, msg: Any, args: tuple, kwargs: dict, depth: int) -> None:
        # depth = frames of this module between the caller and here (this one included).
        if not self.logger.isEnabledFor(level):
            return
        msg, kwargs = self.process(msg, kwargs)
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + depth
        self.logger.log(level, msg, *args, **kwargs)

    # Positional-only parameters so that any field name can be passed as a keyword.
    def log(self, level: int, msg: Any, /, *args: Any, **kwargs: Any) -> None:
        self._emit(level, msg, args, kwargs, 2)

    def debug(self, msg: Any, /, *args: Any, **kwargs: Any) -> None:
        self._emit(logging.DEBUG, msg, args, kwargs, 2)

    def info(self, msg: Any, /, *args: Any, **kwargs: Any) -> None:
        self._emit(logging.INFO, msg, args, kwargs, 2)

    def warning(self, msg: Any, /, *args: Any, **kwargs: Any) -> None:
        self._emit(logging.WARNING, msg, args, kwargs, 2)

    def error(self, msg: Any, /, *args: Any, **kwargs: Any) -> None:
        self._emit(logging.ERROR, msg, args, kwargs, 2)

    def exception(self, msg: Any, /, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("exc_info", True)
        self._emit(logging.ERROR, msg, args, kwargs, 2)

    def critical(self, msg: Any, /, *args: Any, **kwargs: Any) -> None:
        self._emit(logging.CRITICAL, msg, args, kwargs, 2)


def get_logger(name: str, **fields: Any) -> FieldLogger:
    """``logging.getLogger(name)`` wrapped so that keyword arguments become fields."""
    return FieldLogger(logging.getLogger(name), fields)


def log_event(logger: logging.Logger | FieldLogger, level: int | str, msg: str, **fields: Any) -> None:
    """Log ``msg`` at ``level`` (a number or a name such as ``"INFO"``) with fields."""
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
        if not isinstance(level, int):
            raise ValueError(f"unknown log level {level!r}")
    if isinstance(logger, FieldLogger):
        logger._emit(level, msg, (), fields, 2)
    elif logger.isEnabledFor(level):
        logger.log(level, msg, extra={_FIELDS_ATTR: fields}, stacklevel=2)


class LogLimiter:
    """At most one line per key every ``interval`` seconds; the rest are counted, not written.

    ``limiter.log(logging.INFO, "too_deep", "request refused", path=...)`` writes the line if
    no line of that key was written in the last ``interval`` seconds, adding
    ``suppressed=N`` when N lines of that key were held back since the last one, and returns
    whether it wrote. Keys are few (reasons, not addresses); beyond ``max_keys`` the oldest
    key is forgotten. ``now`` (seconds, any monotonic clock) defaults to ``clock()``.
    """

    def __init__(self, logger: logging.Logger | FieldLogger, interval: float = 60.0,
                 max_keys: int = 256, clock: Any = time.monotonic) -> None:
        self.logger = logger
        self.interval = float(interval)
        self.max_keys = max_keys
        self.clock = clock
        self._keys: dict[Any, list] = {}  # key -> [time of the last line written, held back]

    def log(self, level: int, key: Any, msg: str, /, *, now: float | None = None, **fields: Any) -> bool:
        now = self.clock() if now is None else now
        entry = self._keys.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return False
        suppressed = entry[1] if entry is not None else 0
        if entry is None and len(self._keys) >= self.max_keys:
            del self._keys[next(iter(self._keys))]
        self._keys[key] = [now, 0]
        if suppressed:
            fields["suppressed"] = suppressed
        log_event(self.logger, level, msg, **fields)
        return True


def setup_logging(level: str = "INFO", fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Send all logging to ``stream`` (stderr) at ``level`` in format ``fmt``.

    Calling it again replaces the handler it installed before, so it is safe in tests and
    in processes that re-configure (for instance swarm workers).
    """
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(StructuredFormatter(fmt))
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _HANDLER_MARK, False):
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    # Libraries that log every ICE check or HTTP request at INFO: quiet unless debugging.
    for name in _CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING))
