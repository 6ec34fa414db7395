"""Helpers of the tests that kill a parent process and look for its children.

Job: run a small server-like parent script (:func:`start_parent`), read the line it prints,
adopt the orphans it leaves (:func:`adopting_orphans`: PR_SET_CHILD_SUBREAPER, so the test
can reap them instead of init, which may leave zombies), and wait for a process to end with
a deadline (:func:`exited`: on its pidfd, no polling). Used by tests/test_children.py and
tests/test_janus.py. Must not: wait without a deadline, or leave a process it started
running.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys

import trio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PR_SET_CHILD_SUBREAPER = 36  # prctl(2)
GENEROUS = 20  # seconds: a bound on waits that take well under one, so a bug fails instead of hanging


async def exited(pid: int, within: float = GENEROUS) -> bool:
    """Whether the process ``pid`` (a child of ours or not) ends within ``within`` seconds:
    waits on its pidfd (readable when it ends), no polling."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        with trio.move_on_after(within):
            await trio.lowlevel.wait_readable(fd)
            return True
        return False
    finally:
        trio.lowlevel.notify_closing(fd)
        os.close(fd)


def kill_if_running(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def reap_killed(pid: int) -> bool:
    """Reap ``pid``, an adopted process that has ended; whether SIGKILL ended it."""
    reaped, status = os.waitpid(pid, os.WNOHANG)
    return reaped == pid and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def reap_quietly(pid: int) -> None:
    """Kill and reap an adopted process a failed test left behind."""
    kill_if_running(pid)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


async def read_line(stream) -> str:
    data = b""
    with trio.fail_after(GENEROUS):
        while not data.endswith(b"\n"):
            chunk = await stream.receive_some(1)
            assert chunk, f"the process ended before a line ({data!r})"
            data += chunk
    return data.decode()


@contextlib.contextmanager
def adopting_orphans():
    """Meanwhile this process adopts its orphaned descendants (PR_SET_CHILD_SUBREAPER), so
    that it can reap a child whose parent died (else init would, or would leave a zombie)."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    assert prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0, os.strerror(ctypes.get_errno())
    try:
        yield
    finally:
        prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


async def start_parent(script: str, *args: str) -> trio.Process:
    """``python -c script args...`` with the repository importable, its stdout a pipe."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    return await trio.lowlevel.open_process([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, env=env)


async def killed_parent_takes_its_child(script: str, *args: str, what: str = "the child") -> None:
    """Run the parent ``script`` with ``args`` (it prints its child's pid), SIGKILL it, and
    check that the child ended by SIGKILL too; reaped, nothing left running either way."""
    with adopting_orphans():
        parent = await start_parent(script, *args)
        child_pid = None
        try:
            child_pid = int(await read_line(parent.stdout))
            parent.kill()
            assert await parent.wait() == -signal.SIGKILL
            assert await exited(child_pid), f"{what} outlived the parent that started it"
            assert reap_killed(child_pid)  # ours now that it has ended: by SIGKILL
            child_pid = None
        finally:
            kill_if_running(parent.pid)
            await parent.wait()
            await parent.stdout.aclose()
            if child_pid is not None:
                reap_quietly(child_pid)
