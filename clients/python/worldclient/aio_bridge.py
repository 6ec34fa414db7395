"""Runs trio as a guest on an asyncio event loop, and passes work between the two.

aiortc only runs on asyncio, and worldserver and worldclient are trio. :func:`run` creates
an asyncio loop (the host) and starts trio on it in guest mode
(:func:`trio.lowlevel.start_guest_run`); both run on the main thread. The server
(``worldserver run``) and the client's WebRTC channels (:mod:`worldclient.rtc_client`) both run
here: it is part of the client library, which must run without the server, and the server
imports it from here (a client must never import the server; the other way is allowed). Two ways cross between them:

* trio to asyncio: ``await aio(coro)`` runs an asyncio coroutine as a task on the host loop and
  resumes the trio task when it is done. Cancelling the trio side cancels the asyncio task.
* asyncio to trio: asyncio callbacks (aiortc events) call :meth:`Inbox.submit`. This queues a
  plain function and one ``TrioToken.run_sync_soon`` per batch runs everything queued, in order,
  in trio context.

Signals: the asyncio loop made here never calls ``loop.add_signal_handler``, so it never
touches ``signal.set_wakeup_fd``. trio therefore keeps the wakeup fd
(``host_uses_signal_set_wakeup_fd=False``), and ``trio.open_signal_receiver`` and trio's
KeyboardInterrupt handling work inside the guest run as they do under ``trio.run``. Code that
runs on this loop must not install asyncio signal handlers.

Must not: hold transport or simulation logic, import ``worldserver``, or call trio APIs from
asyncio callbacks (only ``TrioToken.run_sync_soon``, which is thread-safe). This is the only
module of ``worldserver`` and ``worldclient`` that imports asyncio. It logs through the
standard ``logging`` module (``worldclient.aio_bridge``), which the server's log set-up
formats like its own lines.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import trio

log = logging.getLogger("worldclient.aio_bridge")

T = TypeVar("T")

#: Longest wait, in seconds, for asyncio work to end after it was cancelled (by :func:`aio`,
#: or when :func:`run` closes the loop).
CANCEL_WAIT = 5.0


def run(trio_main: Callable[..., Awaitable[T]], *args: Any, cleanup_timeout: float = CANCEL_WAIT,
        clock: trio.abc.Clock | None = None) -> T:
    """Run ``trio_main(*args)`` as a trio guest on a new asyncio loop; return its result.

    Blocks until ``trio_main`` returns, then cancels the asyncio tasks left on the loop (for
    example aioice/aiortc internals), waiting at most ``cleanup_timeout`` seconds for them,
    and closes the loop. Raises whatever ``trio_main`` raised. Must be called from a thread
    with no running event loop and no trio run (the main thread, for signal handling).
    ``clock``: trio's clock for the guest run (tests pass a ``trio.testing.MockClock``; the
    asyncio side keeps its own).
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    outcomes: list = []

    def done(trio_outcome) -> None:
        outcomes.append(trio_outcome)
        loop.stop()

    try:
        trio.lowlevel.start_guest_run(
            trio_main,
            *args,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            run_sync_soon_not_threadsafe=loop.call_soon,
            done_callback=done,
            host_uses_signal_set_wakeup_fd=False,
            clock=clock,
        )
        # run_forever returns when done() stops the loop. Anything that stops the loop early
        # (nothing here does) would leave trio unfinished: keep running until done.
        while not outcomes:
            loop.run_forever()
    finally:
        _close_loop(loop, cleanup_timeout)
    return outcomes[0].unwrap()


def _close_loop(loop: asyncio.AbstractEventLoop, timeout: float) -> None:
    try:
        deadline = loop.time() + timeout
        # Cancelled tasks may start new ones while they end (aiortc closing its transports):
        # repeat until none is left or the time is up.
        while (leftovers := [t for t in asyncio.all_tasks(loop) if not t.done()]):
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.warning("asyncio tasks did not end after cancel: %d left", len(leftovers))
                break
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.wait(leftovers, timeout=remaining))
        loop.run_until_complete(asyncio.wait_for(loop.shutdown_asyncgens(), timeout))
        loop.run_until_complete(asyncio.wait_for(loop.shutdown_default_executor(), timeout))
    except (asyncio.TimeoutError, RuntimeError) as exc:  # never hide trio's own outcome
        log.warning("asyncio loop clean-up incomplete: %r", exc)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


async def aio(coro: Coroutine[Any, Any, T] | Awaitable[T], *, cancel_wait: float = CANCEL_WAIT) -> T:
    """From trio, await an asyncio coroutine (or future) on the host loop; return its result.

    Its exception, if any, is raised here. If the calling trio task is cancelled, the asyncio
    task is cancelled too and waited for (at most ``cancel_wait`` seconds, shielded) before the
    cancellation goes on. Only valid inside :func:`run`.
    """
    future = asyncio.ensure_future(coro)
    if not future.done():
        token = trio.lowlevel.current_trio_token()
        finished = trio.Event()

        def wake(_future: asyncio.Future) -> None:
            try:
                token.run_sync_soon(finished.set)
            except trio.RunFinishedError:  # trio ended while asyncio still worked
                pass

        future.add_done_callback(wake)
        try:
            await finished.wait()
        except BaseException:
            future.cancel()
            with trio.CancelScope(deadline=trio.current_time() + cancel_wait, shield=True):
                await finished.wait()
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: asyncio must not log it as never retrieved
            raise
    return future.result()


class Inbox:
    """Hands work from asyncio callbacks to trio, in order and in batches.

    ``submit(fn, *args)`` appends to a list; only when the list was empty does it schedule one
    ``run_sync_soon(drain)``, so a burst of events costs one trio wake-up. ``drain`` calls every
    queued function in trio context (as a synchronous callback: functions must not block; they
    may start tasks in a nursery, send on memory channels or set events). An exception from one
    function is logged and counted in ``errors`` and does not stop the others.

    Create it inside trio (or pass the trio token). ``submit`` must be called from the thread
    that runs the loops (asyncio callbacks, or trio code itself); it is not for other threads.
    """

    __slots__ = ("_token", "_pending", "batches", "calls", "errors", "lost")

    def __init__(self, token: trio.lowlevel.TrioToken | None = None) -> None:
        self._token = token if token is not None else trio.lowlevel.current_trio_token()
        self._pending: list[tuple[Callable[..., object], tuple]] = []
        self.batches = 0  # number of drains run
        self.calls = 0  # functions called
        self.errors = 0  # functions that raised
        self.lost = 0  # functions submitted after trio finished (never called)

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        pending = self._pending
        pending.append((fn, args))
        if len(pending) == 1:
            try:
                self._token.run_sync_soon(self._drain)
            except trio.RunFinishedError:
                self.lost += len(pending)
                pending.clear()

    def _drain(self) -> None:
        batch, self._pending = self._pending, []
        self.batches += 1
        self.calls += len(batch)
        for fn, args in batch:
            try:
                fn(*args)
            except Exception:
                self.errors += 1
                log.exception("inbox callback failed: %s", getattr(fn, "__qualname__", repr(fn)))

    def __len__(self) -> int:
        return len(self._pending)


def in_guest_run() -> bool:
    """True when called from trio code running as a guest of :func:`run` (asyncio loop alive)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return trio.lowlevel.in_trio_run()
