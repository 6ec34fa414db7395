"""Chat images: validation of uploads, re-encoding without metadata, and the files on disk.

Job: :func:`process_image` takes the bytes of an upload and returns a clean image or raises
:class:`ImageRejected` with a code, a sentence for the user and an HTTP status. The type is
taken from the content, never from a file name: the magic bytes must say PNG, JPEG, WebP or
GIF, Pillow must agree and ``verify()`` the file, and the pixels must decode completely (a
truncated file is refused). The image is then re-encoded by Pillow from its pixels alone, in
the format the content had (a JPEG named ``.png`` stays a JPEG), so EXIF, XMP, ICC profiles,
comments and text chunks are gone; the EXIF orientation is applied to the pixels first so
the picture still looks the right way up. Animated GIF and WebP keep their frames and
durations, within the budget of :class:`ImageLimits`: before Pillow sees the bytes,
:func:`measure` walks the GIF blocks, the WebP (RIFF) chunks or the PNG header -- no pixel is
decoded, the walk is linear in the upload's size and stops at the first frame over the cap --
and the frames, one frame's canvas and frames x canvas must fit (each decoded frame costs a
whole canvas however small its own rectangle is, so a 154-byte GIF of five 1x1 frames on a
6324x6324 canvas asks for 200 million pixels and is refused here). The server runs all of
this in a worker process with memory and time limits (``worldserver.chat.image_workers``).
:class:`ImageFiles` keeps the results as ``<dir>/<id>.<ext>`` (written to a temporary file,
fsynced, renamed), with unguessable URL-safe ids, and finds them again by id.

Must not: trust a name, a declared content type or the size in a header; decode an image
whose declared dimensions or frames exceed the budget; leave a half-written file under a final
name; run on the trio thread (:func:`process_image` runs in a worker process; the
:class:`ImageFiles` methods in worker threads: everything here blocks).
"""

from __future__ import annotations

import io
import os
import re
import secrets
import warnings
from pathlib import Path

from typing import NamedTuple

import attrs
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

__all__ = [
    "FORMATS",
    "IMAGE_ID_RE",
    "MAX_FRAMES",
    "MAX_PIXELS",
    "MAX_TOTAL_PIXELS",
    "CleanImage",
    "ImageFiles",
    "ImageLimits",
    "ImageRejected",
    "Shape",
    "measure",
    "process_image",
    "sniff",
]

MAX_PIXELS = 40_000_000  # width * height of one frame's canvas
MAX_TOTAL_PIXELS = 50_000_000  # frames x canvas: every decoded frame is a whole canvas
MAX_FRAMES = 300
JPEG_QUALITY = 90
WEBP_QUALITY = 90
IMAGE_ID_RE = re.compile(r"[A-Za-z0-9_-]{22}")

# format name (Pillow's) -> (file extension, content type)
FORMATS = {
    "PNG": ("png", "image/png"),
    "JPEG": ("jpg", "image/jpeg"),
    "WEBP": ("webp", "image/webp"),
    "GIF": ("gif", "image/gif"),
}
_TYPE_BY_EXT = {ext: ctype for ext, ctype in FORMATS.values()}


class ImageRejected(ValueError):
    """An upload that is not an acceptable image; ``message`` can be shown to the user."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@attrs.frozen
class ImageLimits:
    """The budget of one upload (``chat.image_max_frames`` and ``chat.image_max_pixels``)."""

    max_pixels: int = MAX_PIXELS  # width x height of the canvas
    max_frames: int = MAX_FRAMES
    max_total_pixels: int = MAX_TOTAL_PIXELS  # frames x width x height


class Shape(NamedTuple):
    """What the structure of a file says, before any pixel is decoded."""

    width: int
    height: int
    frames: int


@attrs.frozen
class CleanImage:
    """A re-encoded image: its bytes, format and size."""

    data: bytes
    format: str  # "PNG", "JPEG", "WEBP" or "GIF"
    width: int
    height: int
    frames: int

    @property
    def ext(self) -> str:
        return FORMATS[self.format][0]

    @property
    def content_type(self) -> str:
        return FORMATS[self.format][1]


def sniff(data: bytes) -> str | None:
    """The format the magic bytes of ``data`` announce, or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def process_image(data: bytes, max_bytes: int, limits: ImageLimits = ImageLimits()) -> CleanImage:
    """Validate ``data`` and re-encode it without metadata; raises :class:`ImageRejected`.

    Blocks, and can take as much memory as ``limits`` allow: run it in a worker process."""
    if len(data) > max_bytes:
        raise ImageRejected("too_large", f"the image is larger than {max_bytes} bytes", 413)
    if not data:
        raise ImageRejected("empty", "the upload is empty")
    kind = sniff(data)
    if kind is None:
        raise ImageRejected(
            "unsupported_type", "the content is not a PNG, JPEG, WebP or GIF image", 415
        )
    name = FORMATS[kind][0].upper()
    shape = measure(data, kind, limits.max_frames)
    if shape is not None:  # None: the header is too damaged to say; Pillow will refuse it
        check_shape(shape, limits)
    with warnings.catch_warnings():
        # A DecompressionBombWarning would only be logged; our own budget refuses those.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            _verify(data, kind, limits)
            return _reencode(data, kind, limits)
        except ImageRejected:
            raise
        except Image.DecompressionBombError:
            raise ImageRejected("too_many_pixels", "the image has too many pixels", 413) from None
        except MemoryError:
            raise ImageRejected(
                "too_much_memory", "the image needs more memory to decode than the server allows", 413
            ) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
                IndexError, TypeError, KeyError, ZeroDivisionError):
            raise ImageRejected(
                "corrupt", f"the {name} data is damaged or truncated", 422
            ) from None


def check_shape(shape: Shape, limits: ImageLimits) -> None:
    """Raise :class:`ImageRejected` unless ``shape`` fits ``limits``."""
    width, height, frames = shape
    if width <= 0 or height <= 0:
        raise ImageRejected("corrupt", "the image has no pixels", 422)
    if frames > limits.max_frames:
        raise ImageRejected(
            "too_many_frames", f"the animation has more than {limits.max_frames} frames", 413
        )
    if width * height > limits.max_pixels:
        raise ImageRejected(
            "too_many_pixels",
            f"the image is {width}x{height}; at most {limits.max_pixels} pixels", 413,
        )
    if frames * width * height > limits.max_total_pixels:
        raise ImageRejected(
            "too_many_pixels",
            f"the animation is {frames} frames of {width}x{height}; at most"
            f" {limits.max_total_pixels} pixels in all", 413,
        )


# -- structure walks: sizes and frame counts without decoding -----------------------------------

_GIF_BLOCK = re.compile(rb"[!,;]")  # extension, image descriptor, trailer


def measure(data: bytes, kind: str, max_frames: int = MAX_FRAMES) -> Shape | None:
    """The canvas and frame count the structure of ``data`` announces, or None if unknown.

    Reads headers and block or chunk lengths only. Linear in ``len(data)`` and stops counting
    after ``max_frames + 1`` frames. The canvas is the largest that decoding can grow it to
    (Pillow widens a GIF's canvas to fit a frame that sticks out of it). JPEG: None (Pillow
    reads its size without allocating pixels; :func:`process_image` checks that size).
    """
    if kind == "GIF":
        return _gif_shape(data, max_frames)
    if kind == "WEBP":
        return _webp_shape(data, max_frames)
    if kind == "PNG":
        # Only the default image is decoded (an APNG's other frames are not), so one frame.
        if len(data) >= 24 and data[12:16] == b"IHDR":
            return Shape(int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"), 1)
    return None


def _skip_sub_blocks(data: bytes, i: int) -> int:
    """The index after the data sub-blocks starting at ``i`` (a 0 length ends them)."""
    n = len(data)
    while i < n:
        size = data[i]
        i += 1 + size
        if size == 0:
            break
    return i


def _gif_shape(data: bytes, max_frames: int) -> Shape | None:
    n = len(data)
    if n < 13:
        return None
    width = int.from_bytes(data[6:8], "little")
    height = int.from_bytes(data[8:10], "little")
    flags = data[10]
    i = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # global colour table
    frames = 0
    while i < n:
        block = data[i]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: a label, then sub-blocks
            i = _skip_sub_blocks(data, i + 2)
        elif block == 0x2C:  # image descriptor: one frame
            if i + 10 > n:
                break
            left = int.from_bytes(data[i + 1:i + 3], "little")
            top = int.from_bytes(data[i + 3:i + 5], "little")
            width = max(width, left + int.from_bytes(data[i + 5:i + 7], "little"))
            height = max(height, top + int.from_bytes(data[i + 7:i + 9], "little"))
            frames += 1
            if frames > max_frames:
                break
            flags = data[i + 9]
            i += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # local colour table
            i = _skip_sub_blocks(data, i + 1)  # after the LZW minimum code size
        else:  # Pillow skips a stray byte; so do we, to the next block
            found = _GIF_BLOCK.search(data, i + 1)
            if found is None:
                break
            i = found.start()
    return Shape(width, height, frames)


def _u24(data: bytes, i: int) -> int:
    return int.from_bytes(data[i:i + 3], "little")


def _webp_shape(data: bytes, max_frames: int) -> Shape | None:
    """Canvas from VP8X (libwebp allocates it, twice, when the file is opened), frames from
    the ANMF chunks, or the size in a simple file's VP8/VP8L bitstream header."""
    n = len(data)
    width = height = frames = 0
    i = 12
    while i + 8 <= n:
        fourcc = data[i:i + 4]
        size = int.from_bytes(data[i + 4:i + 8], "little")
        body = i + 8
        if fourcc == b"VP8X" and body + 10 <= n:
            width = max(width, _u24(data, body + 4) + 1)
            height = max(height, _u24(data, body + 7) + 1)
        elif fourcc == b"ANMF" and body + 12 <= n:
            frames += 1
            if frames > max_frames:
                break
            width = max(width, 2 * _u24(data, body) + _u24(data, body + 6) + 1)
            height = max(height, 2 * _u24(data, body + 3) + _u24(data, body + 9) + 1)
        elif fourcc == b"VP8 " and body + 10 <= n and data[body + 3:body + 6] == b"\x9d\x01\x2a":
            width = max(width, int.from_bytes(data[body + 6:body + 8], "little") & 0x3FFF)
            height = max(height, int.from_bytes(data[body + 8:body + 10], "little") & 0x3FFF)
        elif fourcc == b"VP8L" and body + 5 <= n and data[body] == 0x2F:
            bits = int.from_bytes(data[body + 1:body + 5], "little")
            width = max(width, (bits & 0x3FFF) + 1)
            height = max(height, ((bits >> 14) & 0x3FFF) + 1)
        i = body + size + (size & 1)
    if width == 0 and height == 0:
        return None
    return Shape(width, height, max(frames, 1))


# -- decoding and re-encoding (Pillow) ---------------------------------------------------------


def _verify(data: bytes, kind: str, limits: ImageLimits) -> None:
    """Pillow must read ``data`` as ``kind`` and its structure must check out."""
    with Image.open(io.BytesIO(data), formats=[kind]) as img:
        if img.format != kind:
            raise ImageRejected("corrupt", f"the {kind} data is damaged", 422)
        check_shape(Shape(*img.size, 1), limits)
        img.verify()


def _reencode(data: bytes, kind: str, limits: ImageLimits) -> CleanImage:
    with Image.open(io.BytesIO(data), formats=[kind]) as img:
        width, height = img.size
        check_shape(Shape(width, height, 1), limits)
        frames = getattr(img, "n_frames", 1) if kind in ("GIF", "WEBP") else 1
        check_shape(Shape(width, height, frames), limits)
        out = io.BytesIO()
        if frames > 1:
            _save_animation(img, kind, out, limits)
        else:
            img.load()  # decodes every pixel: a truncated file fails here
            ImageOps.exif_transpose(img, in_place=True)
            clean = _clean_frame(img, kind, copy=False)  # one canvas in memory, not three
            width, height = clean.size
            _save_still(clean, kind, out)
        return CleanImage(out.getvalue(), kind, width, height, frames)


def _clean_frame(frame: Image.Image, kind: str, copy: bool = True) -> Image.Image:
    """The pixels of ``frame`` in a mode ``kind`` can store, with no metadata attached
    (``frame`` itself when its mode will do and ``copy`` is false)."""
    mode = frame.mode
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in frame.info
    ) or (mode in ("L", "RGB", "1") and "transparency" in frame.info)
    if kind == "JPEG":
        target = "L" if mode in ("1", "L") else "RGB"
    elif kind == "PNG":
        if mode in ("RGBA", "LA", "I;16") or (mode in ("1", "L", "RGB") and not has_alpha):
            target = mode
        else:
            target = "RGBA" if has_alpha else "RGB"
    else:  # GIF and WebP: RGB(A); the GIF encoder makes its own palette
        target = "RGBA" if has_alpha else "RGB"
    if frame.mode != target:
        clean = frame.convert(target)
    else:
        clean = frame.copy() if copy else frame
    clean.info = {}
    if hasattr(clean, "encoderinfo"):
        clean.encoderinfo = {}
    return clean


def _save_still(clean: Image.Image, kind: str, out: io.BytesIO) -> None:
    if kind == "JPEG":
        clean.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
    elif kind == "PNG":
        clean.save(out, "PNG", optimize=False)
    elif kind == "WEBP":
        clean.save(out, "WEBP", quality=WEBP_QUALITY)
    else:
        clean.save(out, "GIF")


def _save_animation(img: Image.Image, kind: str, out: io.BytesIO, limits: ImageLimits) -> None:
    frames: list[Image.Image] = []
    durations: list[int] = []
    for frame in ImageSequence.Iterator(img):
        frame.load()
        check_shape(Shape(*frame.size, img.n_frames), limits)  # a GIF's canvas can grow
        durations.append(max(10, int(frame.info.get("duration", 100) or 100)))
        frames.append(_clean_frame(frame, kind))
    loop = int(img.info.get("loop", 0) or 0)
    first, rest = frames[0], frames[1:]
    if kind == "GIF":
        first.save(out, "GIF", save_all=True, append_images=rest, duration=durations,
                   loop=loop, disposal=2)
    else:
        first.save(out, "WEBP", save_all=True, append_images=rest, duration=durations,
                   loop=loop, quality=WEBP_QUALITY)


class ImageFiles:
    """Clean images on disk as ``<directory>/<id>.<ext>``; every method blocks."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def save(self, image: CleanImage, prefix: str = "") -> str:
        """Write ``image`` durably under a new id (``prefix`` + 22 random URL-safe characters);
        returns the id. The file is ``<directory>/<id>.<ext>``."""
        self.directory.mkdir(parents=True, exist_ok=True)
        image_id = prefix + secrets.token_urlsafe(16)
        final = self.directory / f"{image_id}.{image.ext}"
        temp = self.directory / f".{image_id}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(image.data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(temp, final)
        try:
            dir_fd = os.open(self.directory, os.O_RDONLY)
        except OSError:
            return image_id
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return image_id

    def find(self, image_id: str) -> tuple[Path, str] | None:
        """``(path, content type)`` of the image ``image_id``, or None."""
        if not isinstance(image_id, str) or not IMAGE_ID_RE.fullmatch(image_id):
            return None
        for ext, ctype in _TYPE_BY_EXT.items():
            path = self.directory / f"{image_id}.{ext}"
            if path.is_file():
                return path, ctype
        return None

    def exists(self, image_id: str) -> bool:
        return self.find(image_id) is not None
