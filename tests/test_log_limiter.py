"""Tests of worldserver.logs.LogLimiter: one line per key per interval, with a held-back count.

Must not: read a clock (every call passes ``now``) or write anywhere but a captured stream.
"""

from __future__ import annotations

import io
import json
import logging

from worldserver.logs import LogLimiter, StructuredFormatter, get_logger


def captured(name: str) -> tuple[io.StringIO, logging.Logger]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(StructuredFormatter("json"))
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return stream, logger


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_line_per_key_per_interval_then_the_count() -> None:
    stream, _ = captured("test.limiter.a")
    limiter = LogLimiter(get_logger("test.limiter.a"), interval=10.0)
    written = [limiter.log(logging.INFO, "too_deep", "refused", path="/api/join", now=100.0 + i * 0.001)
               for i in range(2000)]
    assert written[0] and not any(written[1:])
    assert limiter.log(logging.INFO, "invalid", "refused", now=100.5)  # another key: its own line
    assert not limiter.log(logging.INFO, "too_deep", "refused", now=109.99)
    assert limiter.log(logging.INFO, "too_deep", "refused", path="/x", now=110.0)
    assert limiter.log(logging.INFO, "too_deep", "refused", now=125.0)
    got = lines(stream)
    assert [(r["msg"], r.get("path"), r.get("suppressed")) for r in got] == [
        ("refused", "/api/join", None),
        ("refused", None, None),
        ("refused", "/x", 2000),  # 1999 in the first burst, one at 109.99
        ("refused", None, None),
    ]


def test_keys_are_bounded() -> None:
    stream, logger = captured("test.limiter.b")
    limiter = LogLimiter(logger, interval=60.0, max_keys=3)
    for key in range(10):
        assert limiter.log(logging.INFO, key, "line", now=1.0)
    assert len(limiter._keys) == 3
    assert not limiter.log(logging.INFO, 9, "line", now=2.0)
    assert limiter.log(logging.INFO, 0, "line", now=2.0)  # forgotten: written again
    assert len(lines(stream)) == 11
