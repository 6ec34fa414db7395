"""Sample gallery pictures, drawn with numpy and written as PNG with zlib (no imaging library).

Job: :func:`ensure_sample_images` fills an images folder that has no pictures yet with a few
generated paintings (gradients, rings, stripes, a checkerboard), so a fresh checkout shows a
gallery; :func:`encode_png` turns an RGB array into PNG bytes for it (and for tests).

Must not: touch a folder that already holds any picture, overwrite or delete files, read
anything from the network, or be needed at run time by anything but start-up and tests.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_SUFFIXES", "SAMPLES", "encode_png", "ensure_sample_images", "has_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
WIDTH, HEIGHT = 320, 240
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an ``(height, width, 3)`` uint8 array (8-bit truecolour, no filtering)."""
    image = np.ascontiguousarray(rgb, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"expected an (h, w, 3) array, got shape {image.shape}")
    height, width = image.shape[:2]
    rows = np.zeros((height, 1 + 3 * width), dtype=np.uint8)  # filter byte 0 = None per row
    rows[:, 1:] = image.reshape(height, 3 * width)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"".join(
        (
            _PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(rows.tobytes(), 9)),
            _chunk(b"IEND", b""),
        )
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


# -- the paintings ------------------------------------------------------------------------------


def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalized coordinates u (0..1 left to right) and v (0..1 top to bottom)."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    return u / max(width - 1, 1), v / max(height - 1, 1)


def _to_rgb(r: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    stacked = np.stack([r, g, b], axis=-1)
    return (np.clip(stacked, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _sunset(width: int, height: int) -> np.ndarray:
    u, v = _grid(width, height)
    sky = 1.0 - v
    sun = np.exp(-(((u - 0.62) * 4.0) ** 2 + ((v - 0.58) * 5.0) ** 2))
    sea = v > 0.66
    r = 0.95 * sky + 0.35 * (1 - sky) + 0.4 * sun
    g = 0.45 * sky + 0.15 * (1 - sky) + 0.35 * sun
    b = 0.35 + 0.35 * v
    ripple = 0.08 * np.sin(v * 180.0 + np.sin(u * 25.0) * 2.0)
    r = np.where(sea, 0.15 + 0.5 * sun + ripple, r)
    g = np.where(sea, 0.2 + 0.3 * sun + ripple, g)
    b = np.where(sea, 0.45 + ripple, b)
    return _to_rgb(r, g, b)


def _rings(width: int, height: int) -> np.ndarray:
    u, v = _grid(width, height)
    d = np.hypot((u - 0.5) * width / height, v - 0.5)
    wave = 0.5 + 0.5 * np.cos(d * 60.0)
    return _to_rgb(0.2 + 0.7 * wave, 0.3 + 0.4 * (1 - d), 0.6 + 0.4 * (1 - wave) * (1 - d))


def _stripes(width: int, height: int) -> np.ndarray:
    u, v = _grid(width, height)
    band = np.floor((u + 0.35 * v) * 9.0) % 3
    palette = np.array([[0.91, 0.30, 0.24], [0.98, 0.80, 0.26], [0.16, 0.50, 0.73]])
    colour = palette[band.astype(np.int64)]
    shade = 0.75 + 0.25 * np.cos(v * np.pi)[..., None]
    return _to_rgb(*(colour * shade).transpose(2, 0, 1))


def _checkers(width: int, height: int) -> np.ndarray:
    u, v = _grid(width, height)
    cells = (np.floor(u * 8) + np.floor(v * 6)) % 2
    glow = np.exp(-((u - 0.3) ** 2 + (v - 0.35) ** 2) * 6.0)
    base = 0.15 + 0.7 * cells
    return _to_rgb(base * (0.6 + 0.4 * glow), base * 0.85, 0.25 + 0.5 * cells * (1 - glow))


SAMPLES: dict[str, Callable[[int, int], np.ndarray]] = {
    "sunset-over-the-sea.png": _sunset,
    "concentric-rings.png": _rings,
    "diagonal-stripes.png": _stripes,
    "glowing-checkerboard.png": _checkers,
}


def has_images(folder: str | os.PathLike) -> bool:
    """True if ``folder`` exists and holds at least one png/jpg/jpeg/webp file."""
    path = Path(folder)
    if not path.is_dir():
        return False
    return any(p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for p in path.iterdir())


def ensure_sample_images(
    folder: str | os.PathLike, *, width: int = WIDTH, height: int = HEIGHT
) -> list[Path]:
    """Write the sample pictures into ``folder`` (created if missing) unless it has pictures.

    Returns the paths written; an empty list when the folder already had pictures. Each file
    is written to a temporary name and renamed, so a reader never sees half a picture.
    """
    path = Path(folder)
    if has_images(path):
        return []
    path.mkdir(parents=True, exist_ok=True)
    written = []
    for name, paint in SAMPLES.items():
        target = path / name
        if target.exists():
            continue
        temporary = path / f".{name}.tmp"
        temporary.write_bytes(encode_png(paint(width, height)))
        os.replace(temporary, target)
        written.append(target)
    return written
