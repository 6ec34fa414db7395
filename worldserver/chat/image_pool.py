"""Chat image uploads decoded in worker processes with memory and time limits.

Job: :meth:`ImageWorkers.process` hands the bytes of one upload to a fresh worker process
(``python -m worldserver.chat.image_worker``: it limits its own address space and CPU time,
walks the file's structure, checks frames x canvas, and only then decodes and re-encodes) and
returns its :class:`~worldserver.chat.images.CleanImage`, or raises
:class:`~worldserver.chat.images.ImageRejected`. The trio side only writes the upload to the
worker's stdin and reads its answer (at most :data:`OUTPUT_FACTOR` x ``max_bytes``) under a
wall-clock deadline of twice the worker's CPU seconds plus one; so a decompression bomb costs
the server neither tick time nor memory: the worker's memory goes back to the system when it
exits, and it runs :data:`WORKER_NICE` nicer than the server so that the tick keeps the CPU.
At most ``workers`` run at once; an upload waits for one at most the worker's CPU seconds,
and at most :data:`WAITING_PER_WORKER` x ``workers`` uploads wait -- the rest are refused at
once (503 ``busy``). A worker that runs out of memory, is stopped by its CPU limit or the
deadline, dies otherwise or answers more than allowed (or a header line that is not a
JSON object of at most :data:`HEADER_LIMIT` bytes, checked by ``protocol.jsonsafe``) means a
refused upload with a code and a ``drop.chat_image_*`` counter. Workers are started by
:func:`worldserver.children.spawn`, so they die with the server even when it is killed
mid-upload (SIGKILL included), instead of running on to their CPU limit.

Must not: decode anything itself, block the trio thread (beyond the fork that starts a
worker), leave a worker running after :meth:`ImageWorkers.process` returns or is cancelled,
or the server ends, wait without a deadline, or hold more than one upload and one bounded
answer per running worker.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Sequence

import trio

from protocol import jsonsafe
from worldserver.chat.image_worker import MEMORY_EXIT, worker_arguments
from worldserver.chat.images import FORMATS, CleanImage, ImageLimits, ImageRejected
from worldserver.children import spawn
from worldserver.logs import get_logger
from worldserver.stats import Stats

__all__ = ["HEADER_LIMIT", "OUTPUT_FACTOR", "WAITING_PER_WORKER", "WORKER_NICE", "ImageWorkers"]

log = get_logger("worldserver.chat.image_pool")

WAITING_PER_WORKER = 4  # uploads that may wait for a busy worker, per worker
WORKER_NICE = 10  # workers run this much nicer than the server
OUTPUT_FACTOR = 8  # a clean image may be at most this many times the largest upload
HEADER_LIMIT = 4096  # bytes of the worker's JSON header line
_CODE_RE = re.compile(r"[a-z_]{1,40}")
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ImageWorkers:
    """A bounded set of image worker processes; see the module docstring."""

    def __init__(
        self,
        *,
        max_bytes: int,
        limits: ImageLimits = ImageLimits(),
        workers: int = 2,
        memory_mb: int = 512,
        cpu_seconds: float = 10.0,
        stats: Stats | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        """``command`` replaces the worker program (tests use stand-ins that hang or crash)."""
        self.max_bytes = max_bytes
        self.limits = limits
        self.workers = workers
        self.memory_mb = memory_mb
        self.cpu_seconds = cpu_seconds
        self.wait_seconds = cpu_seconds
        self.deadline_seconds = 2 * cpu_seconds + 1
        self.max_waiting = WAITING_PER_WORKER * workers
        self.output_limit = OUTPUT_FACTOR * max_bytes + HEADER_LIMIT
        self.stats = stats if stats is not None else Stats()
        self.command = list(command) if command is not None else [
            sys.executable, "-m", "worldserver.chat.image_worker",
            *worker_arguments(max_bytes, limits, memory_mb, cpu_seconds),
        ]
        path = os.environ.get("PYTHONPATH")
        self._env = dict(os.environ, PYTHONPATH=_ROOT + (os.pathsep + path if path else ""))
        self._limiter = trio.CapacityLimiter(workers)
        self.running: set[int] = set()  # pids of live workers

    @classmethod
    def from_config(cls, config, stats: Stats | None = None) -> ImageWorkers:
        chat = config.chat
        limits = ImageLimits(max_frames=chat.image_max_frames, max_total_pixels=chat.image_max_pixels)
        return cls(max_bytes=chat.max_image_bytes, limits=limits, workers=chat.image_workers,
                   memory_mb=chat.image_worker_memory_mb, cpu_seconds=chat.image_worker_seconds,
                   stats=stats)

    def check_room(self) -> None:
        """Raise ``busy`` (503) if a new upload could not even wait for a worker; the upload
        route asks before it reads a body."""
        if self._limiter.statistics().tasks_waiting >= self.max_waiting:
            raise self._busy()

    def _busy(self) -> ImageRejected:
        self.stats.incr("drop.chat_image_busy")
        return ImageRejected("busy", "the server is busy with other images; try again shortly", 503)

    async def process(self, data: bytes) -> CleanImage:
        """The clean image made from ``data`` by a worker; raises :class:`ImageRejected`."""
        self.check_room()
        acquired = False
        with trio.move_on_after(self.wait_seconds):
            await self._limiter.acquire()
            acquired = True
        if not acquired:
            raise self._busy()
        try:
            return await self._run(data)
        finally:
            self._limiter.release()

    async def _run(self, data: bytes) -> CleanImage:
        try:
            proc = spawn(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, env=self._env)
        except OSError as exc:  # no process to be had (fork or file limits)
            self.stats.incr("drop.chat_image_worker_failed")
            log.warning("image worker did not start", error=str(exc))
            raise ImageRejected("busy", "the server cannot decode images right now", 503) from None
        self.running.add(proc.pid)
        try:  # the tick comes first when the machine is short of CPU
            os.setpriority(os.PRIO_PROCESS, proc.pid, os.getpriority(os.PRIO_PROCESS, 0) + WORKER_NICE)
        except OSError:
            pass  # it has exited already, or the platform says no
        output: bytes | None = None
        try:
            with trio.move_on_after(self.deadline_seconds) as deadline:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_feed, proc.stdin, data)
                    output = await _collect(proc.stdout, self.output_limit)
                    if output is None:  # too much: stop the worker rather than drain it
                        nursery.cancel_scope.cancel()
                if output is not None:
                    await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
            with trio.CancelScope(shield=True):  # reap the (killed) worker, close the pipes
                await proc.wait()
                await proc.stdin.aclose()
                await proc.stdout.aclose()
            self.running.discard(proc.pid)
        if deadline.cancelled_caught:
            raise self._too_slow()
        if output is None:
            self.stats.incr("drop.chat_image_output_too_large")
            raise ImageRejected(
                "too_large", f"the re-encoded image would be larger than {self.output_limit} bytes", 413
            )
        return self._answer(output, proc.returncode)

    def _too_slow(self) -> ImageRejected:
        self.stats.incr("drop.chat_image_worker_timeout")
        return ImageRejected("too_slow", f"decoding the image took longer than {self.cpu_seconds:g} s", 422)

    def _too_much_memory(self) -> ImageRejected:
        self.stats.incr("drop.chat_image_worker_memory")
        return ImageRejected(
            "too_much_memory", "the image needs more memory to decode than the server allows", 413
        )

    def _answer(self, output: bytes, returncode: int) -> CleanImage:
        """The worker's answer as a clean image, or the refusal it (or its exit status) means."""
        line, newline, payload = output.partition(b"\n")
        header = None
        if newline:
            try:
                header = jsonsafe.loads(line, max_bytes=HEADER_LIMIT)
            except jsonsafe.JsonRefused:
                header = None
        if not isinstance(header, dict):
            header = {}
        if header.get("ok") is False:
            code, message, status = header.get("code"), header.get("message"), header.get("status")
            if code == "too_much_memory":
                raise self._too_much_memory()
            if isinstance(code, str) and _CODE_RE.fullmatch(code) and isinstance(message, str) \
                    and isinstance(status, int) and 400 <= status <= 599:
                raise ImageRejected(code, message[:300], status)
        elif header.get("ok") is True and returncode == 0:
            fmt, width, height, frames = (header.get(k) for k in ("format", "width", "height", "frames"))
            if fmt in FORMATS and all(isinstance(v, int) and v > 0 for v in (width, height, frames)) \
                    and header.get("bytes") == len(payload):
                return CleanImage(payload, fmt, width, height, frames)
        if returncode == MEMORY_EXIT:
            raise self._too_much_memory()
        if returncode == -signal.SIGXCPU:  # stopped by its CPU limit
            raise self._too_slow()
        self.stats.incr("drop.chat_image_worker_failed")
        log.debug("image worker failed", returncode=returncode, answered=len(output))
        raise ImageRejected("decode_failed", "the image could not be decoded", 422)


async def _feed(stdin: trio.abc.SendStream, data: bytes) -> None:
    try:
        await stdin.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the worker is gone; its exit status says why
    finally:
        with trio.CancelScope(shield=True):
            await stdin.aclose()


async def _collect(stdout: trio.abc.ReceiveStream, limit: int) -> bytes | None:
    """Everything the worker writes, or None once it is more than ``limit`` bytes."""
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = await stdout.receive_some(65536)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            return None
        chunks.append(chunk)
