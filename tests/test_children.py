"""worldserver/children.py: children that die with the server, and how they are stopped.

Real processes throughout. A server-like parent (a small Python script run as a subprocess)
starts a child through :func:`spawn` and is killed with SIGKILL: the child ends too, by
SIGKILL, and the test (a subreaper meanwhile) reaps it. The same for a chat image worker that
``ImageWorkers.process`` started in such a parent, busy with an upload (a stand-in worker
that reads the upload and then hangs: a real one would finish, or not, at the machine's
speed). The known race -- the parent gone before the child asked for the signal -- is played
by naming another parent: the child exits with ORPHANED_EXIT before it runs the program.
:meth:`Child.stop` ends a child that ignores SIGTERM with SIGKILL, one that does not with
SIGTERM, and reports one already gone. The behaviour checked is what happened to the
processes (their exit status), never how long it took.

Must not: depend on machine speed (waits are for events, under generous deadlines), or leave
a process running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import trio

from child_support import GENEROUS, killed_parent_takes_its_child, read_line
from worldserver import children
from worldserver.children import ORPHANED_EXIT, spawn

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="PR_SET_PDEATHSIG and PR_SET_CHILD_SUBREAPER are Linux's")

SPAWNING_PARENT = """
import sys
import trio
from worldserver.children import spawn

async def main():
    child = spawn(["sleep", "600"])
    print(child.pid, flush=True)
    await trio.sleep_forever()

trio.run(main)
"""

UPLOADING_PARENT = """
import sys
import trio
from worldserver.chat.image_pool import ImageWorkers

HANG = "import sys, time; sys.stdin.buffer.read(); time.sleep(3600)"

async def main():
    pool = ImageWorkers(max_bytes=10**6, cpu_seconds=600, command=[sys.executable, "-c", HANG])

    async def report():
        while not pool.running:
            await trio.sleep(0.01)
        print(*pool.running, flush=True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(report)
        await pool.process(b"an upload its worker never finishes")

trio.run(main)
"""


@linux_only
async def test_a_child_dies_with_its_parent_killed_by_sigkill():
    await killed_parent_takes_its_child(SPAWNING_PARENT)


@linux_only
async def test_an_image_worker_dies_with_a_server_killed_mid_upload():
    """Found by a helper: the chat image workers were started by trio.lowlevel.open_process,
    without the death signal, so a server killed mid-upload left its worker running until its
    CPU limit (or, for one waiting on a pipe, for good)."""
    await killed_parent_takes_its_child(UPLOADING_PARENT)


@linux_only
def test_a_child_whose_parent_is_gone_before_it_asks_exits_before_running(tmp_path):
    """The race: the parent dies between the fork and the child's prctl, and the child has
    been given to another parent (init, a subreaper) by then. Played by naming as its parent
    a process that is not (this process's own parent)."""
    mark = tmp_path / "ran"
    preexec = children.death_signal_preexec(parent=os.getppid())
    code = subprocess.run(["touch", str(mark)], preexec_fn=preexec, timeout=GENEROUS).returncode
    assert code == ORPHANED_EXIT and not mark.exists()
    preexec = children.death_signal_preexec()  # the real parent: the program runs
    assert subprocess.run(["touch", str(mark)], preexec_fn=preexec, timeout=GENEROUS).returncode == 0
    assert mark.exists()


def test_elsewhere_the_death_signal_is_a_clear_no_op(monkeypatch):
    assert children.DEATH_SIGNAL is sys.platform.startswith("linux")
    monkeypatch.setattr(children.sys, "platform", "darwin")
    children._prctl.cache_clear()
    try:
        assert children.death_signal_preexec() is None  # spawn starts plain children there
    finally:
        children._prctl.cache_clear()  # (looked up again on the real platform once it is back)


PY = sys.executable
ECHO = "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read()[::-1])"
DEAF = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('deaf', flush=True);"
        " time.sleep(600)")


async def test_a_child_talks_over_its_pipes_and_is_reaped():
    child = spawn([PY, "-c", ECHO], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        with trio.fail_after(GENEROUS):
            await child.stdin.send_all(b"hello")
            await child.stdin.aclose()
            answer = b""
            while chunk := await child.stdout.receive_some(1024):
                answer += chunk
            assert answer == b"olleh" and await child.wait() == 0
        assert child.poll() == 0 and not child.signal(signal.SIGTERM)  # reaped: nothing is sent
        assert await child.stop(GENEROUS) == "exited"
    finally:
        await child.stop(GENEROUS, terminate=False)
        await child.stdout.aclose()


async def test_stop_kills_a_child_that_ignores_sigterm_and_terminates_one_that_does_not():
    deaf = spawn([PY, "-c", DEAF], stdout=subprocess.PIPE)
    try:
        assert await read_line(deaf.stdout) == "deaf\n"  # its SIGTERM is ignored from now on
        assert await deaf.stop(0.2) == "SIGKILL"  # (0.2 s is not a race: it never exits on SIGTERM)
        assert deaf.returncode == -signal.SIGKILL
    finally:
        await deaf.stop(GENEROUS, terminate=False)
        await deaf.stdout.aclose()
    sleeper = spawn(["sleep", "600"])
    try:
        assert await sleeper.stop(GENEROUS) == "SIGTERM" and sleeper.returncode == -signal.SIGTERM
    finally:
        await sleeper.stop(GENEROUS, terminate=False)
    sleeper = spawn(["sleep", "600"])
    try:
        assert await sleeper.stop(GENEROUS, terminate=False) == "SIGKILL"
        assert sleeper.returncode == -signal.SIGKILL
    finally:
        await sleeper.stop(GENEROUS, terminate=False)


async def test_a_program_that_cannot_start_is_an_oserror_and_leaves_no_pipe_open():
    before = set(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    with pytest.raises(OSError):
        spawn(["/nonexistent/program"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    if before is not None:
        assert set(os.listdir("/proc/self/fd")) <= before
