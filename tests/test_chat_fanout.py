"""The chat fan-out pump (worldserver.chat.fanout) on real socket pairs.

Frames are checked with wsproto's own frame parser (an independent implementation of RFC
6455): they arrive whole and in order, also when the kernel buffer fills and a frame is half
written; the connection's lock is held only while a frame is half written, so that another
writer (hypercorn's pong or close) never lands inside one; a full outbox refuses, a broken
socket is reported once and counted. The pump's tests run on trio's autojump MockClock (its
retries and the tests' polling follow virtual time; a socket pair delivers at once), so they
do not depend on the machine's speed. Must not: use anything but local socket pairs, or wait
without a deadline.
"""

from __future__ import annotations

import socket

import pytest
import trio
from wsproto.frame_protocol import FrameProtocol, Opcode

from worldserver.chat.fanout import Fanout, raw_connection, text_frame
from worldserver.stats import Stats

TIMEOUT = 10.0


def parse_frames(data: bytes) -> list[str]:
    """Server frames -> their texts, with wsproto as the client; every frame whole (FIN)."""
    proto = FrameProtocol(client=True, extensions=[])
    proto.receive_bytes(data)
    texts = []
    for frame in proto.received_frames():
        assert frame.opcode is Opcode.TEXT and frame.frame_finished and frame.message_finished
        texts.append(frame.payload)
    return texts


def read_all(sock: socket.socket) -> bytes:
    """Everything already in ``sock``'s receive buffer (a socket pair delivers at once)."""
    sock.setblocking(False)
    chunks = []
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
async def pump(nursery):
    fanout = Fanout(Stats())
    await nursery.start(fanout.run)
    return fanout


def pair(sndbuf: int | None = None) -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    if sndbuf:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sndbuf)
    a.setblocking(False)
    return a, b


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_text_frame_lengths_parse_with_wsproto(size) -> None:
    text = ("가" * (size // 3)) + ("x" * (size % 3))  # multi-byte UTF-8 included
    assert len(text.encode()) == size
    assert parse_frames(text_frame(text)) == [text]


def test_raw_connection_refuses_what_is_not_hypercorn_h11() -> None:
    async def plain_send(message):  # pragma: no cover - never called
        pass

    assert raw_connection(plain_send) is None
    assert raw_connection(None) is None


async def test_broadcast_is_encoded_once_and_arrives_in_order(pump, autojump_clock) -> None:
    pairs = [pair() for _ in range(5)]
    dead = []
    outs = [pump.open(a, trio.Lock(), 100, lambda: dead.append(1)) for a, _ in pairs]
    texts = [f'{{"ev":"message","n":{i}}}' for i in range(20)]
    for text in texts:
        for out in outs:
            out.send_nowait(text)
        assert pump.encode(text) is pump.encode(text)  # the same bytes object: one encoding
    with trio.fail_after(TIMEOUT):
        while any(out.unsent for out in outs):
            await trio.sleep(0.005)
    for _, b in pairs:
        assert parse_frames(read_all(b)) == texts
    assert not dead and not any(out.holding for out in outs)
    assert all(not out.lock.locked() for out in outs)


async def test_full_kernel_buffer_keeps_frames_whole_and_the_lock_until_a_boundary(pump, autojump_clock) -> None:
    a, b = pair(sndbuf=4096)
    lock = trio.Lock()
    out = pump.open(a, lock, 1000, lambda: None)
    big = "y" * 50_000
    texts = [f"{i}:{big}" for i in range(6)]
    for text in texts:
        out.send_nowait(text)
    with trio.fail_after(TIMEOUT):  # the reader does not read: the pump stalls mid-frame
        while not (out.mid_frame and pump.waiting):
            await trio.sleep(0.005)
    assert out.holding and lock.locked()
    assert pump.stats.get("chat.fanout_stalls") > 0
    other_wrote = trio.Event()

    async def other_writer() -> None:  # as hypercorn writes a pong: whole, under the lock
        async with lock:
            a.sendall(text_frame("PONG"))  # a non-blocking socket: the reader is reading now
        other_wrote.set()

    received = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_writer)
        b.setblocking(False)
        with trio.fail_after(TIMEOUT):
            while not other_wrote.is_set() or out.unsent:
                try:
                    received += b.recv(1 << 16)
                except BlockingIOError:
                    await trio.sleep(0.002)
    received += read_all(b)
    frames = parse_frames(bytes(received))
    assert sorted(frames, key=len) == sorted(texts + ["PONG"], key=len)  # all whole
    assert frames.index("PONG") >= 1  # it waited for a boundary, after a whole frame
    assert [f for f in frames if f != "PONG"] == texts  # ours in order
    assert not out.holding and not lock.locked()


async def test_busy_lock_waits_for_the_other_writer(pump, autojump_clock) -> None:
    a, b = pair()
    lock = trio.Lock()
    out = pump.open(a, lock, 10, lambda: None)
    await lock.acquire()
    out.send_nowait("after the other")
    await trio.sleep(0.05)
    assert out.unsent == 1 and pump.stats.get("chat.fanout_lock_busy") >= 1
    a.sendall(text_frame("first"))
    lock.release()
    with trio.fail_after(TIMEOUT):
        while out.unsent:
            await trio.sleep(0.005)
    assert parse_frames(read_all(b)) == ["first", "after the other"]


async def test_limit_close_and_broken_socket(pump, autojump_clock) -> None:
    a, b = pair(sndbuf=4096)
    failed = []
    out = pump.open(a, trio.Lock(), 3, lambda: failed.append(True))
    big = "z" * 40_000
    for _ in range(3):
        out.send_nowait(big)
    with pytest.raises(trio.WouldBlock):  # the reader does not read: 3 frames stay unsent
        for _ in range(100):
            out.send_nowait(big)
            await trio.sleep(0.01)
    b.close()  # the client is gone
    with trio.fail_after(TIMEOUT):
        while not failed:
            await trio.sleep(0.01)
    assert failed == [True] and out.dead and not out.holding
    assert pump.stats.get("drop.chat_send_failed") == 1
    with pytest.raises(trio.ClosedResourceError):
        out.send_nowait("late")
    closed = pump.open(pair()[0], trio.Lock(), 3, lambda: None)
    closed.close()
    with pytest.raises(trio.ClosedResourceError):
        closed.send_nowait("after close")


async def test_detach_releases_the_lock_and_writes_nothing_more(pump, autojump_clock) -> None:
    a, b = pair(sndbuf=4096)
    lock = trio.Lock()
    out = pump.open(a, lock, 100, lambda: None)
    out.send_nowait("w" * 60_000)
    with trio.fail_after(TIMEOUT):
        while not out.holding:
            await trio.sleep(0.005)
    assert out.mid_frame
    out.detach()
    with trio.fail_after(TIMEOUT):
        while lock.locked():
            await trio.sleep(0.005)
    before = len(read_all(b))
    assert 0 < before < 60_000
    await trio.sleep(0.05)
    assert read_all(b) == b""  # nothing more after the detach
