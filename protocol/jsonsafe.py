"""Checked JSON parsing, sans-IO: refuse input that is too large or nested too deeply *before*
``json.loads`` sees it.

Job: :func:`loads` is ``json.loads`` for untrusted input (HTTP bodies, chat frames, Hatongsu
events). It checks the size, then the bracket nesting depth with a cheap scan that skips
string literals (escapes included), and only then parses. Whatever goes wrong, it raises
:class:`JsonRefused` with a short machine reason (``too_large``, ``too_deep`` or ``invalid``)
and a one-line message for a human, never ``RecursionError`` and never a bare ``ValueError``.
:func:`nesting_depth` is the scan alone.

Why the scan is enough: ``json.loads`` recurses once per ``[`` or ``{`` it is inside of, and
stops at its first error. Up to that error the text is a valid JSON prefix, where the scan's
idea of "inside a string" is JSON's, so the deepest point it reaches is at most what the scan
measured for the whole text.

Must not: do I/O, keep state, log, or echo the input in its messages.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

__all__ = ["DEFAULT_MAX_DEPTH", "REASONS", "JsonRefused", "loads", "nesting_depth"]

#: Deep enough for every document this server reads (the deepest is 3), far below the
#: interpreter's recursion limit.
DEFAULT_MAX_DEPTH = 32

REASONS = ("too_large", "too_deep", "invalid")

# A string literal: the opening quote, then runs of plain characters or escape pairs, then the
# closing quote -- or the end of the text for an unterminated one. Possessive quantifiers: every
# character is looked at once, so the scan is linear whatever the input (no backtracking).
_STRING = re.compile(r'"(?:[^"\\]++|\\[\s\S])*+"?')
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 / -1 as int8


class JsonRefused(ValueError):
    """The input was not parsed: ``reason`` is one of :data:`REASONS`, ``message`` says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def nesting_depth(text: str) -> int:
    """The deepest ``[``/``{`` nesting of ``text`` outside string literals (closing brackets
    without an opener count down; the text is then invalid JSON anyway)."""
    return _scan(_outside_strings(text))


def _outside_strings(text: str) -> str:
    return _STRING.sub("", text) if '"' in text else text


def _too_deep(text: str, limit: int) -> bool:
    outside = _outside_strings(text)
    if outside.count("[") + outside.count("{") <= limit:  # the usual case: no scan at all
        return False
    return _scan(outside) > limit


def _scan(outside: str) -> int:
    """Deepest running nesting of a text without strings (numpy: one pass in C)."""
    brackets = _NOT_BRACKETS.sub("", outside)
    if not brackets:
        return 0
    steps = np.frombuffer(brackets.encode("ascii").translate(_STEPS), dtype=np.int8)
    return max(0, int(np.cumsum(steps, dtype=np.int32).max()))


def loads(
    data: str | bytes | bytearray | memoryview,
    *,
    max_bytes: int,
    max_depth: int = DEFAULT_MAX_DEPTH,
    **json_kwargs: Any,
) -> Any:
    """``json.loads(data, **json_kwargs)`` after the size and depth checks.

    ``data`` is text or bytes (UTF-8, -16 or -32, detected as ``json.loads`` does). Text is
    too large when it has more than ``max_bytes`` characters or UTF-8 bytes. Raises only
    :class:`JsonRefused`; an exception raised by one of the ``json_kwargs`` hooks (a
    ``ValueError`` or ``TypeError``) becomes ``JsonRefused("invalid", ...)`` with the hook's
    exception as its ``__cause__``.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        if len(raw) > max_bytes:
            raise JsonRefused("too_large", f"the JSON is larger than {max_bytes} bytes")
        try:
            text = raw.decode(json.detect_encoding(raw), "surrogatepass")
        except UnicodeDecodeError:
            raise JsonRefused("invalid", "the JSON is not valid UTF-8 (or UTF-16/32)") from None
    elif isinstance(data, str):
        text = data
        if len(text) > max_bytes or len(text.encode("utf-8", "surrogatepass")) > max_bytes:
            raise JsonRefused("too_large", f"the JSON is larger than {max_bytes} bytes")
    else:
        raise JsonRefused("invalid", f"JSON comes as text or bytes, not {type(data).__name__}")
    if _too_deep(text, max_depth):
        raise JsonRefused("too_deep", f"the JSON is nested deeper than {max_depth} levels")
    try:
        return json.loads(text, **json_kwargs)
    except json.JSONDecodeError as exc:
        raise JsonRefused("invalid", f"not valid JSON: {exc.msg}") from None
    except RecursionError:  # cannot happen after the scan; refused all the same
        raise JsonRefused("too_deep", "the JSON is nested too deeply") from None
    except (ValueError, TypeError) as exc:  # a hook's refusal, or an integer too long to convert
        raise JsonRefused("invalid", "not valid JSON: invalid value") from exc
