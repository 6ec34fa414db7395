"""The single error type raised for malformed or disallowed wire input.

Every decoder in ``protocol`` raises :class:`ProtocolError` (and nothing else) for input it
cannot accept: truncated or oversized data, wrong types, out-of-range values, bad msgpack.
This module must not import anything but the standard library.
"""


class ProtocolError(ValueError):
    """Input that does not follow protocol/SPEC.md.

    ``reason`` is a short stable identifier (for counters and logs), the message explains.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
