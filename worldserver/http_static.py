"""The HTTP port's files: the built web client (``http.web_root``) and the gallery pictures
(``http.images_dir``, and the pictures hung in worlds' slots, ``<server.data_dir>/pictures``).

Job: :class:`WebRoot` answers whatever no route of ``worldserver.http_app`` matched with the
static files of the web root (index.html for a directory; ``/w/{id}`` is the page showing that
world, ``/admin`` the dashboard, admin.html), or, while the client is not built, a page that
says how to build it (other paths 404, other methods 405; an unknown WebSocket path is closed).
:func:`gallery_list` (``GET /gallery/images``) lists the pictures directly inside the images
directory (hidden files and the ``hung-*`` pictures of a world's slots left out) with a title
each (:func:`image_title`), and :func:`gallery_image` (``GET /gallery/images/{name}``) sends
one. A ``hung-*`` name is looked for first in the hung pictures' folder
(:func:`pictures_dir`, where worldserver/world_admin.py stores them), then in the images
directory (where an older version stored them, until the admin API moves them at start).

Must not: serve a file outside the web root, the images directory or the hung pictures'
folder (a picture's name is one file name with a picture's suffix, resolved and checked to lie
directly inside the folder; only ``hung-*`` names are looked for in the hung pictures' folder),
block the trio loop (the folder is listed and checked in a worker thread), or let a missing or
unreadable folder be anything but an empty list or a 404.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from urllib.parse import quote

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles

from worldserver.http_common import status_text
from worldserver.sample_images import IMAGE_SUFFIXES

__all__ = ["HUNG_PREFIX", "PICTURES_DIR", "WebRoot", "gallery_image", "gallery_list", "image_title", "pictures_dir"]

HUNG_PREFIX = "hung-"  # file names of the pictures hung in worlds' slots (worldserver/world_admin.py)
PICTURES_DIR = "pictures"  # in server.data_dir: the pictures hung in worlds' slots

_IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
}
_TITLE_SEPARATORS = re.compile(r"[-_\s]+")

_NOT_BUILT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>worldserver</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>The web client is not built</h1>
<p>worldserver is running, but there is no built web client in <code>{root}</code>.</p>
<p>Build it with <code>bash scripts/setup.sh</code> (it runs npm and esbuild in
<code>clients/web</code>), or set <code>http.web_root</code> to a directory holding a built
client, then reload this page.</p>
<p>The server itself is fine: see <a href="/health">/health</a>.</p>
</body></html>
"""


_WORLD_PAGE = re.compile(r"/w/[a-z0-9][a-z0-9_-]{0,31}/?")
_ADMIN_PAGE = re.compile(r"/admin/?")  # the dashboard (admin.html); its API is /admin/api/


class WebRoot:
    """Static files of ``http.web_root`` with index.html; a help page while it is missing."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._static: StaticFiles | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1000})  # unknown WebSocket path
            return
        if _WORLD_PAGE.fullmatch(scope["path"]):  # /w/{id}: the page, showing that world
            scope = dict(scope, path="/index.html", raw_path=b"/index.html")
        elif _ADMIN_PAGE.fullmatch(scope["path"]):  # /admin: the dashboard page
            scope = dict(scope, path="/admin.html", raw_path=b"/admin.html")
        if os.path.isdir(self.root):
            if self._static is None:
                self._static = StaticFiles(directory=self.root, html=True, check_dir=False)
            await self._static(scope, receive, send)
            return
        path = scope["path"]
        if scope["method"] not in ("GET", "HEAD"):
            response: Response = status_text(405, headers={"Allow": "GET, HEAD"})
        elif path in ("/", "/index.html", "/admin.html"):
            page = _NOT_BUILT_PAGE.format(root=html.escape(os.path.abspath(self.root)))
            response = HTMLResponse(page, status_code=200)
        else:
            response = status_text(404)
        await response(scope, receive, send)


def pictures_dir(data_dir: str) -> str:
    """The folder of the pictures hung in worlds' slots: ``<data_dir>/pictures``."""
    return os.path.join(data_dir, PICTURES_DIR)


def image_title(filename: str) -> str:
    """A picture's title from its file name: ``sunset_over-sea.png`` -> ``Sunset over sea``."""
    stem = _TITLE_SEPARATORS.sub(" ", Path(filename).stem).strip()
    return (stem[:1].upper() + stem[1:]) if stem else filename


def _list_images(folder: str) -> list[dict]:
    path = Path(folder)
    try:
        entries = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    except OSError:
        return []
    names = sorted(  # pictures hung in a world's slot (hung-*, world_admin.py) are that world's
        (p.name for p in entries if not p.name.startswith((".", HUNG_PREFIX)) and p.is_file()),
        key=lambda n: (n.casefold(), n),
    )
    return [
        {"url": f"/gallery/images/{quote(n)}", "title": image_title(n), "file": n} for n in names
    ]


def _image_path(folder: str, name: str) -> Path | None:
    """The file for ``name`` if it is a picture directly inside ``folder``; else None."""
    if not name or name.startswith(".") or any(c in name for c in "/\\\x00"):
        return None
    if Path(name).suffix.lower() not in _IMAGE_TYPES:
        return None
    try:
        base = Path(folder).resolve()
        target = (base / name).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    if target.parent != base or not target.is_file():
        return None
    return target


def _find_image(images_dir: str, pictures: str, name: str) -> Path | None:
    """The file for ``name``: a ``hung-*`` picture in the hung pictures' folder, else a picture
    of the images directory (the gallery's, or one hung by an older version); else None."""
    if name.startswith(HUNG_PREFIX):
        found = _image_path(pictures, name)
        if found is not None:
            return found
    return _image_path(images_dir, name)


async def gallery_list(request: Request) -> Response:
    folder = request.app.state.config.http.images_dir
    images = await anyio.to_thread.run_sync(_list_images, folder)
    return JSONResponse({"images": images})


async def gallery_image(request: Request) -> Response:
    config = request.app.state.config
    name = request.path_params["name"]
    path = await anyio.to_thread.run_sync(_find_image, config.http.images_dir, pictures_dir(config.server.data_dir),
                                          name)
    if path is None:
        return status_text(404)
    return FileResponse(
        path,
        media_type=_IMAGE_TYPES[path.suffix.lower()],
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )
