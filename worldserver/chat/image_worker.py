"""The image worker: one process that checks and re-encodes one chat image upload, then exits.

Job: ``python -m worldserver.chat.image_worker --max-bytes N ...`` limits itself first -- no
core files, at most ``--memory-mb`` MiB of address space beyond what the interpreter and
Pillow's plugins take at start (RLIMIT_AS), at most ``--cpu-seconds`` of CPU
(RLIMIT_CPU; the kernel ends it with SIGXCPU) -- then reads the upload from stdin, runs
:func:`worldserver.chat.images.process_image` on it and writes one answer to stdout: a JSON
header line, ``{"ok": true, "format", "width", "height", "frames", "bytes"}`` followed by
exactly ``bytes`` bytes of the clean image, or ``{"ok": false, "code", "message", "status"}``.
A MemoryError is answered as ``too_much_memory``; if even that answer cannot be written the
process exits with :data:`MEMORY_EXIT`. :class:`worldserver.chat.image_pool.ImageWorkers`
starts it, enforces the wall-clock deadline and reads the answer.

Must not: import trio or any module of the server but ``worldserver.chat.images`` (and the
light ``worldserver.chat`` package it sits in); open any file or socket; read more than
``--max-bytes`` + 1 bytes of stdin; write anything but the one answer to stdout; decode
anything before its limits are set.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys

from PIL import Image

from worldserver.chat.images import ImageLimits, ImageRejected, process_image

__all__ = ["MEMORY_EXIT", "main", "worker_arguments"]

MEMORY_EXIT = 75  # out of memory before an answer could be written


def worker_arguments(max_bytes: int, limits: ImageLimits, memory_mb: int, cpu_seconds: float) -> list[str]:
    """The command-line arguments that give a worker these limits."""
    return [
        "--max-bytes", str(max_bytes),
        "--max-pixels", str(limits.max_pixels),
        "--max-frames", str(limits.max_frames),
        "--max-total-pixels", str(limits.max_total_pixels),
        "--memory-mb", str(memory_mb),
        "--cpu-seconds", repr(float(cpu_seconds)),
    ]


def _address_space() -> int | None:
    """Bytes of virtual memory this process has mapped now (Linux), or None."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def limit_self(memory_mb: int, cpu_seconds: float) -> None:
    """Apply the worker's resource limits to this process (they cannot be raised again)."""
    Image.init()  # load every plugin (and libwebp) first: the budget is for decoding
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    base = _address_space() or 0
    memory = base + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cpu = max(1, math.ceil(cpu_seconds))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))


def _answer(data: bytes, max_bytes: int, limits: ImageLimits) -> tuple[dict, bytes]:
    try:
        clean = process_image(data, max_bytes, limits)
    except ImageRejected as exc:
        return {"ok": False, "code": exc.code, "message": exc.message, "status": exc.status}, b""
    except MemoryError:
        return {"ok": False, "code": "too_much_memory", "status": 413,
                "message": "the image needs more memory to decode than the server allows"}, b""
    except Exception as exc:  # a decoder failing in a way process_image does not name
        return {"ok": False, "code": "corrupt", "status": 422, "error": type(exc).__name__,
                "message": "the image data is damaged"}, b""
    header = {"ok": True, "format": clean.format, "width": clean.width, "height": clean.height,
              "frames": clean.frames, "bytes": len(clean.data)}
    return header, clean.data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worldserver.chat.image_worker")
    parser.add_argument("--max-bytes", type=int, required=True)
    parser.add_argument("--max-pixels", type=int, required=True)
    parser.add_argument("--max-frames", type=int, required=True)
    parser.add_argument("--max-total-pixels", type=int, required=True)
    parser.add_argument("--memory-mb", type=int, required=True)
    parser.add_argument("--cpu-seconds", type=float, required=True)
    args = parser.parse_args(argv)
    limit_self(args.memory_mb, args.cpu_seconds)
    limits = ImageLimits(args.max_pixels, args.max_frames, args.max_total_pixels)
    try:
        data = sys.stdin.buffer.read(args.max_bytes + 1)
        header, payload = _answer(data, args.max_bytes, limits)
        del data
        out = sys.stdout.buffer
        out.write(json.dumps(header).encode() + b"\n")
        out.write(payload)
        out.flush()
    except MemoryError:
        os._exit(MEMORY_EXIT)
    except BrokenPipeError:  # the server stopped waiting
        os._exit(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
