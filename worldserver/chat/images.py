"""Chat images: validation of uploads, re-encoding without metadata, and the files on disk.

Job: :func:`process_image` takes the bytes of an upload and returns a clean image or raises
:class:`ImageRejected` with a code, a sentence for the user and an HTTP status. The type is
taken from the content, never from a file name: the magic bytes must say PNG, JPEG, WebP or
GIF, Pillow must agree and ``verify()`` the file, and the pixels must decode completely (a
truncated file is refused). The image is then re-encoded by Pillow from its pixels alone, in
the format the content had (a JPEG named ``.png`` stays a JPEG), so EXIF, XMP, ICC profiles,
comments and text chunks are gone; the EXIF orientation is applied to the pixels first so
the picture still looks the right way up. Animated GIF and WebP keep their frames and
durations, within a frame and pixel budget (decompression bombs are refused before decoding).
:class:`ImageFiles` keeps the results as ``<dir>/<id>.<ext>`` (written to a temporary file,
fsynced, renamed), with unguessable URL-safe ids, and finds them again by id.

Must not: trust a name, a declared content type or the size in a header; decode an image
whose declared dimensions exceed the pixel budget; leave a half-written file under a final
name; run on the trio thread (callers use worker threads: everything here blocks).
"""

from __future__ import annotations

import io
import os
import re
import secrets
import warnings
from pathlib import Path

import attrs
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

__all__ = [
    "FORMATS",
    "IMAGE_ID_RE",
    "MAX_FRAMES",
    "MAX_PIXELS",
    "CleanImage",
    "ImageFiles",
    "ImageRejected",
    "process_image",
    "sniff",
]

MAX_PIXELS = 40_000_000  # width * height of one frame
MAX_TOTAL_PIXELS = 200_000_000  # summed over the frames of an animation
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


def process_image(data: bytes, max_bytes: int) -> CleanImage:
    """Validate ``data`` and re-encode it without metadata; raises :class:`ImageRejected`."""
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
    with warnings.catch_warnings():
        # A DecompressionBombWarning would only be logged; our own budget refuses those.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            _verify(data, kind)
            return _reencode(data, kind)
        except ImageRejected:
            raise
        except Image.DecompressionBombError:
            raise ImageRejected("too_many_pixels", "the image has too many pixels", 413) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
                IndexError, TypeError, KeyError, MemoryError, ZeroDivisionError):
            raise ImageRejected(
                "corrupt", f"the {name} data is damaged or truncated", 422
            ) from None


def _check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageRejected("corrupt", "the image has no pixels", 422)
    if width * height > MAX_PIXELS:
        raise ImageRejected(
            "too_many_pixels", f"the image is {width}x{height}; at most {MAX_PIXELS} pixels", 413
        )


def _verify(data: bytes, kind: str) -> None:
    """Pillow must read ``data`` as ``kind`` and its structure must check out."""
    with Image.open(io.BytesIO(data), formats=[kind]) as img:
        if img.format != kind:
            raise ImageRejected("corrupt", f"the {kind} data is damaged", 422)
        _check_size(*img.size)
        img.verify()


def _reencode(data: bytes, kind: str) -> CleanImage:
    with Image.open(io.BytesIO(data), formats=[kind]) as img:
        width, height = img.size
        _check_size(width, height)
        frames = getattr(img, "n_frames", 1) if kind in ("GIF", "WEBP") else 1
        if frames > MAX_FRAMES:
            raise ImageRejected("too_many_frames", f"the animation has more than {MAX_FRAMES} frames", 413)
        if frames * width * height > MAX_TOTAL_PIXELS:
            raise ImageRejected("too_many_pixels", "the animation has too many pixels", 413)
        out = io.BytesIO()
        if frames > 1:
            _save_animation(img, kind, out)
        else:
            img.load()  # decodes every pixel: a truncated file fails here
            clean = _clean_frame(ImageOps.exif_transpose(img), kind)
            width, height = clean.size
            _save_still(clean, kind, out)
        return CleanImage(out.getvalue(), kind, width, height, frames)


def _clean_frame(frame: Image.Image, kind: str) -> Image.Image:
    """The pixels of ``frame`` in a mode ``kind`` can store, with no metadata attached."""
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
    clean = frame.convert(target) if frame.mode != target else frame.copy()
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


def _save_animation(img: Image.Image, kind: str, out: io.BytesIO) -> None:
    frames: list[Image.Image] = []
    durations: list[int] = []
    for frame in ImageSequence.Iterator(img):
        frame.load()
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

    def save(self, image: CleanImage) -> str:
        """Write ``image`` durably under a new id; returns the id."""
        self.directory.mkdir(parents=True, exist_ok=True)
        image_id = secrets.token_urlsafe(16)
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
