"""worldclient.aio_bridge: trio as a guest on asyncio, aio() calls, the Inbox, and signals.

The tests are plain functions that call ``aio_bridge.run`` (pytest-trio's trio_mode would
otherwise run async tests under ``trio.run``, without the asyncio host). Both loops run on real
time here, so the tests assert what happened (which side was cancelled, in which order the
sides ran) and wait on events with generous deadlines, never how long something took: a bridge
that waited out a timeout instead would hang and fail on the deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import sniffio
import trio

from worldclient import aio_bridge
from worldclient.aio_bridge import Inbox, aio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_run_returns_the_value_and_closes_the_loop():
    async def main(a, b):
        await trio.sleep(0)
        assert asyncio.get_running_loop() is not None  # the asyncio host is running
        return a + b

    assert aio_bridge.run(main, 2, 3) == 5
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
    # run() leaves no event loop behind: a second run starts a fresh one
    assert aio_bridge.run(main, 1, 1) == 2


def test_run_reraises_trio_exceptions():
    async def main():
        await trio.sleep(0)
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        aio_bridge.run(main)


def test_aio_round_trip_result_and_exception():
    async def add_later(a, b):
        await asyncio.sleep(0)
        assert sniffio.current_async_library() == "asyncio"
        return a + b

    async def fail_later():
        await asyncio.sleep(0)
        raise ValueError("from asyncio")

    async def main():
        assert sniffio.current_async_library() == "trio"
        assert await aio(add_later(40, 2)) == 42
        with pytest.raises(ValueError, match="from asyncio"):
            await aio(fail_later())
        future = asyncio.get_running_loop().create_future()
        future.set_result("ready")
        return await aio(future)

    assert aio_bridge.run(main) == "ready"


def test_aio_cancellation_cancels_and_waits_for_the_asyncio_task():
    seen = []

    async def slow(started):
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0)  # clean-up (a step of its own) that aio() must wait for
            seen.append("cancelled")
            raise
        seen.append("slept")  # only if nothing cancelled it

    async def main():
        started = asyncio.Event()
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(aio, slow(started))
                await aio(started.wait())
                scope.cancel()
        assert scope.cancelled_caught
        assert seen == ["cancelled"]  # the clean-up finished before aio() returned

    aio_bridge.run(main)


def test_leftover_asyncio_tasks_are_cancelled_when_trio_ends():
    seen = []

    async def forever(started):
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:  # cancelled, not just dropped with the loop
            seen.append("cancelled")
            raise

    async def main():
        started = asyncio.Event()
        asyncio.ensure_future(forever(started))
        await aio(started.wait())

    # run() must return once the cancelled task has ended, not wait out cleanup_timeout
    aio_bridge.run(main, cleanup_timeout=3600)
    assert seen == ["cancelled"]


def test_inbox_batches_in_order_and_runs_in_trio_context():
    async def main():
        inbox = Inbox()
        calls = []
        done = trio.Event()

        def record(i):
            calls.append((i, sniffio.current_async_library()))

        def broken():
            raise RuntimeError("one bad callback")

        def burst():  # an asyncio callback, as aiortc events are
            assert sniffio.thread_local.name is None  # not inside a trio step
            for i in range(50):
                inbox.submit(record, i)
                if i == 10:
                    inbox.submit(broken)
            inbox.submit(done.set)

        asyncio.get_running_loop().call_soon(burst)
        with trio.fail_after(2):
            await done.wait()
        assert [i for i, _ in calls] == list(range(50))
        assert {lib for _, lib in calls} == {"trio"}
        assert inbox.batches == 1
        assert inbox.calls == 52
        assert inbox.errors == 1

        # a second burst is a second batch
        second = trio.Event()
        asyncio.get_running_loop().call_soon(lambda: (inbox.submit(record, 99), inbox.submit(second.set)))
        with trio.fail_after(2):
            await second.wait()
        assert inbox.batches == 2 and calls[-1][0] == 99

    aio_bridge.run(main)


def test_trio_and_asyncio_tasks_interleave():
    """A ping-pong: each step of one side waits for the other side's step, so it can only
    finish if both loops run turn about in the one thread."""

    async def main():
        order = []
        inbox = Inbox()
        ping = asyncio.Event()
        pongs = [trio.Event() for _ in range(5)]

        async def asyncio_side():
            for pong in pongs:
                await ping.wait()
                ping.clear()
                order.append("a")
                inbox.submit(pong.set)  # asyncio to trio, as aiortc events go

        async def trio_side():
            for pong in pongs:
                order.append("t")
                ping.set()  # trio to asyncio: the same thread
                await pong.wait()

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(aio, asyncio_side())
                nursery.start_soon(trio_side)
        assert "".join(order) == "ta" * 5

    aio_bridge.run(main)


SIGNAL_SCRIPT = textwrap.dedent(
    """
    import signal, sys, trio, trio.testing
    from worldclient import aio_bridge

    async def main():
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async def announce():
                await trio.testing.wait_all_tasks_blocked()  # the loop is idle: then say so
                print("ready", flush=True)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(announce)
            with trio.fail_after(20):  # a signal that did not wake the idle loop fails here
                async for signum in signals:
                    return signum

    signum = aio_bridge.run(main)
    print("got", signum, flush=True)
    """
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_trio_signal_receiver_works_in_guest_mode(signum):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", SIGNAL_SCRIPT],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"  # and back to idle, in its selector
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out.strip() == f"got {int(signum)}"
    assert "Warning" not in err
