"""Which service a WebRTC channel is handed to: native, Hatongsu by message, Hatongsu by silence."""

import trio

from worldserver import rtc_dispatch
from worldserver.rtc_dispatch import RtcDispatcher
from worldserver.stats import Stats


class Peer:
    def __init__(self, pid):
        self.id = pid
        self.remote = "127.0.0.1"  # where the offer came from (RtcPeer.remote)

    def send(self, data):
        pass

    def buffered_amount(self):
        return 0


class Recorder:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, args[0].id if hasattr(args[0], "id") else args[0]))

    def accepts(self, text):
        return text.startswith('{"client')


async def test_modes():
    stream, hat, stats = Recorder(), Recorder(), Stats()
    d = RtcDispatcher(stream, hat, stats)
    native, talker, silent = Peer("n"), Peer("t"), Peer("s")
    for p in (native, talker, silent):
        d.on_open(p)
    d.on_binary(native, b"\x01")
    d.on_text(talker, '{"clientAnimationUpdate":{"state":1}}')
    d.on_text(native, '{"clientPlayerUpdate":{}}')  # wrong kind for a native channel
    assert ("on_message", "n") in stream.calls and ("open", "t") in hat.calls
    assert stats.get("drop.rtc.text_in_native_mode") == 1
    now = trio.current_time()
    d.poll(now)  # too early: still undecided
    assert ("open", "s") not in hat.calls
    d.poll(now + rtc_dispatch.HATONGSU_AFTER + 0.1)
    assert ("open", "s") in hat.calls and ("close_peer", "s") in stream.calls
    # the silent one was a slow native client after all
    d.on_binary(silent, b"\x01")
    assert ("close", "s") in hat.calls and ("on_message", "s") in stream.calls
    d.on_close(talker, "closed")
    d.on_close(silent, "closed")
    assert ("close", "t") in hat.calls and d.modes == {"n": "native"}


async def test_no_hatongsu_when_disabled():
    stream, stats = Recorder(), Stats()
    d = RtcDispatcher(stream, None, stats)
    p = Peer("x")
    d.on_open(p)
    d.poll(trio.current_time() + 10)
    d.on_text(p, '{"clientPlayerUpdate":{}}')
    assert stats.get("drop.rtc.text_in_native_mode") == 1 and d.modes["x"] == "undecided"
