"""Child processes of the server that die with it; handles that stop a process.

Job: :func:`spawn` starts a program as a child of the server, its pipes as trio streams, so
that the kernel kills it (SIGKILL) when the server ends, however it ends -- SIGKILL and
crashes included, when nothing of ours runs to stop it. Every program the server starts goes
through it (Janus, ``worldserver/calls/janus.py``; the chat image workers,
``worldserver/chat/image_pool.py``). On Linux the child asks for the signal itself, between
fork and exec (:func:`death_signal_preexec`: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` through
ctypes); elsewhere there is no such call, :data:`DEATH_SIGNAL` is False and ``spawn`` is a
plain start. Two things make the signal reliable:

* the race: a server that dies between the fork and the ``prctl`` leaves a child that asked
  too late (its parent is init, or a subreaper, by then). So after the call the child
  compares ``getppid()`` with the pid of the process that forked it and exits at once with
  :data:`ORPHANED_EXIT`, before ``exec``, when they differ.
* the thread: the kernel sends the signal when the *thread* that forked ends, not the
  process. ``trio.lowlevel.open_process`` forks in one of trio's worker threads, which end
  after 10 s idle and would take the child with them; so ``spawn`` forks in the thread that
  calls it -- the trio thread, which lives as long as the server -- and blocks it for the
  fork (a few milliseconds: 2-3 ms for a 300 MB process on the 2-core machine).

:class:`Child` is the handle of a spawned process (``pid``, ``stdin``/``stdout``, ``poll``,
``wait``, signals); :class:`ProcessHandle` names any process, ours or not, by a pidfd where
the kernel has them (so a reused pid is never signalled). Both have ``stop``: SIGTERM (sent
again after a while if asked), SIGKILL after a grace, every wait bounded.

Must not: run anything in the child between fork and exec but ``prctl``, ``getppid`` and
``_exit`` (all looked up before the fork); fork in a thread that may end before its
children; signal a child once it has been reaped (its pid may be another process's now);
wait in ``stop`` without a deadline; log or import anything of the server.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import trio

__all__ = ["DEATH_SIGNAL", "ORPHANED_EXIT", "Child", "ProcessHandle", "death_signal_preexec", "spawn"]

PR_SET_PDEATHSIG = 1  # prctl(2) option: the signal a child gets when the thread that forked it ends
ORPHANED_EXIT = 71  # the child's exit status when its parent was gone before it asked for the signal
_KILL = int(signal.SIGKILL)


@functools.cache
def _prctl() -> Callable | None:
    """libc's ``prctl`` (Linux), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


DEATH_SIGNAL: bool = _prctl() is not None  # whether children here die with the server


def _die_with_parent(prctl: Callable, parent: int) -> None:
    """In the child, between fork and exec: SIGKILL when the forking thread ends; and if the
    parent ended before that was asked (the child has been given to another), end now."""
    prctl(PR_SET_PDEATHSIG, _KILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(ORPHANED_EXIT)


def death_signal_preexec(parent: int | None = None) -> Callable[[], None] | None:
    """The ``preexec_fn`` that makes a child die with ``parent`` (this process by default;
    another pid only in tests, which play the parent gone); None where there is no such call
    (not Linux, no libc)."""
    prctl = _prctl()
    if prctl is None:
        return None
    return functools.partial(_die_with_parent, prctl, os.getpid() if parent is None else parent)


def spawn(argv: Sequence[str], *, stdin: int | None = subprocess.DEVNULL, stdout: int | None = subprocess.DEVNULL,
          stderr: int | None = subprocess.DEVNULL, env: dict[str, str] | None = None,
          start_new_session: bool = False) -> Child:
    """Start ``argv`` as a child that dies with this process (see the module docstring).
    ``stdin`` and ``stdout``: ``subprocess.PIPE`` (a trio stream on the :class:`Child`),
    ``subprocess.DEVNULL`` or a file descriptor; ``stderr`` also ``subprocess.STDOUT``. Call
    it in the trio thread: it forks there. OSError when no process can be had."""
    ours: list[int] = []  # our ends of the pipes: closed here if the start fails
    theirs: list[int] = []  # the child's ends: closed here once it has them
    try:
        child_stdin = child_stdout = None
        if stdin == subprocess.PIPE:
            read_end, child_stdin = os.pipe()
            theirs.append(read_end)
            ours.append(child_stdin)
            stdin = read_end
        if stdout == subprocess.PIPE:
            child_stdout, write_end = os.pipe()
            ours.append(child_stdout)
            theirs.append(write_end)
            stdout = write_end
        popen = subprocess.Popen(list(argv), stdin=stdin, stdout=stdout, stderr=stderr, env=env,
                                 start_new_session=start_new_session, preexec_fn=death_signal_preexec())
    except BaseException:
        for fd in ours:
            os.close(fd)
        raise
    finally:
        for fd in theirs:
            os.close(fd)
    return Child(popen,
                 stdin=trio.lowlevel.FdStream(child_stdin) if child_stdin is not None else None,
                 stdout=trio.lowlevel.FdStream(child_stdout) if child_stdout is not None else None)


async def _stop(process: Child | ProcessHandle, grace: float, terminate: bool, again: float | None) -> str:
    """The one stop sequence of :meth:`Child.stop` and :meth:`ProcessHandle.stop`."""
    with trio.CancelScope(shield=True):
        if terminate:
            if not process.signal(signal.SIGTERM):
                return "exited"
            first = min(again, grace) if again is not None and again > 0 else grace
            if await process.ended_within(first):
                return "SIGTERM"
            if first < grace:
                if not process.signal(signal.SIGTERM) or await process.ended_within(grace - first):
                    return "SIGTERM"
            if not process.signal(signal.SIGKILL):
                return "SIGTERM"
        elif not process.signal(signal.SIGKILL):
            return "exited"
        return "SIGKILL" if await process.ended_within(grace) else "alive"


class ProcessHandle:
    """A process by a pidfd where the kernel has them (so a reused pid is never signalled,
    and its end is an event, also for a process that is not our child), else by pid."""

    def __init__(self, pid: int, fd: int | None) -> None:
        self.pid = pid
        self.fd = fd

    @classmethod
    @contextmanager
    def open(cls, pid: int) -> Iterator[ProcessHandle | None]:
        """The handle, or None when there is no such process."""
        fd = None
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            yield None
            return
        except (AttributeError, OSError):  # no pidfd here: by pid
            if not os.path.exists(f"/proc/{pid}"):
                yield None
                return
        handle = cls(pid, fd)
        try:
            yield handle
        finally:
            handle.close()

    def close(self) -> None:
        if self.fd is not None:
            trio.lowlevel.notify_closing(self.fd)
            os.close(self.fd)
            self.fd = None

    def signal(self, number: int) -> bool:
        """Send ``number``; False if the process is gone."""
        try:
            if self.fd is not None:
                signal.pidfd_send_signal(self.fd, number)
            else:
                os.kill(self.pid, number)
        except ProcessLookupError:
            return False
        return True

    def _ended_by_proc(self) -> bool:
        """Without a pidfd: whether /proc shows the process gone or a zombie."""
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as file:
                return file.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
        except (OSError, IndexError):
            return True

    async def ended_within(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the process to end; True if it did."""
        with trio.move_on_after(timeout):
            if self.fd is not None:
                await trio.lowlevel.wait_readable(self.fd)  # readable once the process has ended
                return True
            while not self._ended_by_proc():  # (not our child: nothing to wait on but /proc)
                await trio.sleep(0.05)
            return True
        return False

    async def stop(self, grace: float, *, again: float | None = None) -> str:
        """SIGTERM (again after ``again`` seconds), SIGKILL after ``grace``; shielded from
        cancellation, at most 2 x ``grace`` seconds. How it ended: ``"exited"`` (before our
        first signal), ``"SIGTERM"``, ``"SIGKILL"``, or ``"alive"`` when even SIGKILL had not
        ended it within ``grace`` (a process stuck in the kernel)."""
        return await _stop(self, grace, True, again)


class Child:
    """A process started by :func:`spawn`: what a ``trio.Process`` offers (``pid``,
    ``stdin``, ``stdout``, ``returncode``, ``poll``, ``terminate``, ``kill``, ``wait``) and
    :meth:`stop`. Signals go through ``Popen.send_signal``, which sends nothing once the
    child has been reaped."""

    def __init__(self, popen: subprocess.Popen, *, stdin: trio.lowlevel.FdStream | None = None,
                 stdout: trio.lowlevel.FdStream | None = None) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.stdin = stdin
        self.stdout = stdout
        try:
            fd = os.pidfd_open(popen.pid)
        except (AttributeError, OSError):
            fd = None
        self._handle = ProcessHandle(popen.pid, fd)

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    def poll(self) -> int | None:
        code = self._popen.poll()
        if code is not None:
            self._handle.close()
        return code

    def signal(self, number: int) -> bool:
        """Send ``number``; False if the child has ended (it is reaped then)."""
        if self.poll() is not None:
            return False
        self._popen.send_signal(number)
        return True

    def terminate(self) -> None:
        self.signal(signal.SIGTERM)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    async def wait(self) -> int:
        """Until the child ends; its return code (-N: ended by signal N)."""
        while self.poll() is None:
            if self._handle.fd is not None:
                with contextlib.suppress(trio.ClosedResourceError):
                    await trio.lowlevel.wait_readable(self._handle.fd)
            else:  # no pidfd: a worker thread waits without reaping (as trio does)
                await trio.to_thread.run_sync(os.waitid, os.P_PID, self.pid, os.WEXITED | os.WNOWAIT,
                                              abandon_on_cancel=True)
        return self._popen.returncode

    async def ended_within(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the child to end (and reap it); True if it did."""
        with trio.move_on_after(timeout):
            await self.wait()
            return True
        return False

    async def stop(self, grace: float, *, terminate: bool = True, again: float | None = None) -> str:
        """End the child and reap it, shielded from cancellation, in at most 2 x ``grace``
        seconds: SIGTERM (again after ``again`` seconds), SIGKILL if it has not ended within
        ``grace``; with ``terminate=False`` SIGKILL at once. How it ended: ``"exited"`` (before
        our first signal), ``"SIGTERM"``, ``"SIGKILL"``, or ``"alive"`` when even SIGKILL had
        not ended it within ``grace`` (it is reaped later, by ``subprocess``)."""
        return await _stop(self, grace, terminate, again)
