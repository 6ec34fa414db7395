"""Worlds changed while the server runs: opened, closed, reloaded, and pictures hung live.

Job: :class:`WorldAdmin` does what the admin API's ``/admin/api/worlds`` routes ask
(worldserver/admin_api.py hands them to :meth:`WorldAdmin.handle`; the ``worldserver worlds``
commands of worldserver/admin_cli.py call them):

- **list** them (``GET``: each world with its players, version, file and slots), with what a
  form needs to offer (the dashboard's, clients/web/src/admin/): ``builtin``, the names open
  takes besides a path, and ``max_image_bytes``, the largest picture a slot takes (0: this
  server decodes no images);
- **open** a world (a built-in id, ``open``, or the path of a world file on the server, as
  ``worlds.hosted`` names them): its own :class:`~worldserver.simulation.Simulation`, built in a
  worker thread, its chat room ``<chat.public_room>@<id>`` (made or found again), then
  :meth:`WorldHost.add <worldserver.hosting.WorldHost.add>` -- it ticks on its own deadlines;
- **close** one: a chat notice in its room, the world leaves the host (joins naming it get 404
  ``no such world``), and every session in it ends through its transport's ``session.end``
  with ``world_closed``: native clients get DISCONNECT ``world_closed`` with the reason as its
  text (SPEC section 3), and the page shows it. The default world (the first of
  ``worlds.hosted``, where clients that name none go) cannot be closed (409
  ``default_world``);
- **reload** one: its file is read again and applied at once (walls, obstacles, spawn areas,
  pictures, zones, title, style); the players stay, and an avatar that the new walls overlap
  or that is off the new floor moves to the nearest clear point
  (:meth:`Simulation.apply_spec <worldserver.simulation.Simulation.apply_spec>`). The floor may
  not grow beyond the world's bounds (clients' positions are quantized to them);
- **hang** a picture in a slot (``PUT .../pictures/{slot}``, the image as the body, its title
  in the query, ``?title=...``) or take it down (``DELETE``: an empty frame). The title is
  checked as the chat checks a name (:func:`protocol.chat.check_line`: one line, no control
  characters, NFC, stripped, at most :data:`MAX_TITLE` characters; "" or none: untitled; a bad
  one is a 400 ``bad_field`` saying why) before the body is read. The upload is read and
  checked exactly like a chat image
  (``chat.max_image_bytes``, :func:`worldserver.chat.gateway.read_upload`, the chat's
  :class:`~worldserver.chat.image_pool.ImageWorkers`; refusals carry the chat's codes) and
  stored in the server's data, ``<server.data_dir>/pictures`` (made mode 0755 when missing;
  never in ``http.images_dir``, which may be the read-only install folder) as
  ``hung-<world>-<slot>-<random>.<ext>``, served by ``GET /gallery/images/{name}`` like the
  gallery's pictures (and left out of the gallery's list; worldserver/http_static.py). GIFs,
  which the chat takes, are refused: the gallery serves PNG, JPEG and WebP. The slot's
  ``title`` is in the world's document (the pages' plaques and the dashboard show it; a
  picture of the world file has none, and clients title it from its file name);
- **retitle** a hung picture (``PATCH .../pictures/{slot}``, ``{"title": ...}``): the same
  title rule as a hang (a bad one: 400 ``bad_field``), the image stays; 409 ``not_hung`` for a
  slot that shows no picture hung through this API (an empty frame, or the world file's own
  picture, whose title belongs in the file). The same title again changes nothing (no new
  version).

Every change of a world's pictures or file gives its document (``GET /api/worlds/{id}``) a new
``version``; ``GET /api/players`` carries it as ``world_version``, which the page polls every
few seconds anyway, so every connected page fetches the document again and replaces the
pictures that changed, without a reload. Pictures hung or taken down, and their titles, are
kept per world in ``<server.data_dir>/worlds/<id>.pictures.json`` (written atomically) and applied over the
file's pictures whenever the world is built: at start (:meth:`WorldAdmin.restore`), on open
and on reload; so they survive restarts and reloads. A replaced hung picture's file is
deleted. Pictures an older version hung into ``http.images_dir`` are moved into
``<server.data_dir>/pictures`` at start (:meth:`WorldAdmin.restore`, one log line saying how
many); one that could not be copied stays there and is still served from there, and the
original of one copied out of a folder the server may not write in is left (logged). Open and
closed worlds last until the server stops (``worlds.hosted`` says what a
start hosts). One change at a time (a lock); image decoding waits outside it.

Must not: block the trio thread (files, world files and simulations are handled in worker
threads, images decoded in the chat's worker processes), decode an image itself, end a
session other than through its transport, remove the default world, delete a file it did
not store, or write into ``http.images_dir`` (it only moves its own ``hung-*`` files out).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Awaitable, Callable

import trio

from protocol import jsonsafe
from protocol.chat import ChatProtocolError, check_line
from worldserver.chat.gateway import read_upload
from worldserver.chat.images import ImageFiles, ImageRejected, sniff
from worldserver.chat.errors import ChatError
from worldserver.http_static import HUNG_PREFIX, pictures_dir
from worldserver.logs import get_logger
from worldserver.native import WORLD_CLOSED
from worldserver.simulation import Simulation
from worldserver.worldfile import (BUILTIN_DIR, ID_RE, MAX_ITEMS, MAX_PICTURE_TITLE, WorldFileError, load_named,
                                  load_world)

__all__ = ["HUNG_PREFIX", "MAX_TITLE", "MAX_WORLDS", "OVERLAY_DIR", "WorldAdmin", "WorldAdminError", "picture_title"]

log = get_logger("worldserver.world_admin")

OVERLAY_DIR = "worlds"  # in server.data_dir: <id>.pictures.json per world
MAX_WORLDS = 64  # as worlds.hosted allows
MAX_NAME = 1024  # characters of a world name or path to open
MAX_REASON = 200  # characters of a close's reason (a DISCONNECT carries 200 bytes)
MAX_TITLE = MAX_PICTURE_TITLE  # characters of a picture's title (the dashboard's MAX_TITLE mirrors it)
DEFAULT_REASON = "the world was closed by the operator"
NOTICE_TIMEOUT = 5.0  # seconds a close waits for its chat notice to be stored
_IMAGE_NAME = re.compile(r"[^/\\\x00]{1,200}")
_HUNG_NAME = re.compile(r"hung-[a-z0-9_-]+-[A-Za-z0-9_-]{22}\.(png|jpg|webp|gif)")
# bytes of a pictures file read back: far above what _write_overlay writes (MAX_ITEMS slots, each
# with an image name and a title escaped to at most ~4 KiB), so that no saved file is refused
_MAX_OVERLAY_BYTES = MAX_ITEMS * 8 * 1024


class WorldAdminError(Exception):
    """A request answered with an error: ``{"error": message, "code": code}`` and ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class WorldAdmin:
    """Opens, closes and reloads the worlds of one running server and hangs their pictures.

    ``running``: the :class:`worldserver.app.RunningServer` (its ``worlds`` host, ``chat``,
    and the transports whose DISCONNECTs a close sends at once). Make it in trio.
    """

    def __init__(self, config, running, stats) -> None:
        self.config = config
        self.running = running
        self.stats = stats
        self.lock = trio.Lock()
        self.folder = Path(config.server.data_dir) / OVERLAY_DIR
        self.pictures = Path(pictures_dir(config.server.data_dir))  # the hung pictures
        self.images = ImageFiles(self.pictures)
        self.overlays: dict[str, dict[str, str]] = {}  # world id -> slot -> image ("" empty)
        self.titles: dict[str, dict[str, str]] = {}  # world id -> slot -> its hung picture's title (none: "")
        self._builtin: list[str] | None = None  # what POST worlds takes besides a file's path

    @property
    def host(self):
        return self.running.worlds

    # -- routes ----------------------------------------------------------------------------------
    async def handle(self, method: str, parts: list[str], request,
                     read_json: Callable[[Any], Awaitable[dict]]) -> dict:
        """The answer to ``/admin/api/worlds/<parts...>``; raises WorldAdminError.
        ``read_json(request)``: the admin API's JSON body reader."""
        n = len(parts)
        if n == 0 and method == "GET":
            if self._builtin is None:  # the shipped world files do not change while the server runs
                self._builtin = await trio.to_thread.run_sync(_builtin_ids)
            chat = self.running.chat
            images = chat is not None and chat.image_workers is not None
            return {"default": self.host.default_id, "worlds": [self.describe(sim) for sim in self.host],
                    "builtin": self._builtin, "max_image_bytes": chat.max_image_bytes if images else 0}
        if n == 0 and method == "POST":
            return await self.open((await read_json(request)).get("world"))
        if n == 1 and method == "GET":
            sim = self._sim(parts[0])
            return {**self.describe(sim), "pictures": [
                {"id": p.id, "image": p.image, "title": p.title, "url": _url(p.image)} for p in sim.world_spec.pictures]}
        if n == 2 and parts[1] == "close" and method == "POST":
            return await self.close(parts[0], (await read_json(request)).get("reason"))
        if n == 2 and parts[1] == "reload" and method == "POST":
            return await self.reload(parts[0])
        if n == 3 and parts[1] == "pictures" and method == "PUT":
            return await self.hang(parts[0], parts[2], request)
        if n == 3 and parts[1] == "pictures" and method == "DELETE":
            return await self.take_down(parts[0], parts[2])
        if n == 3 and parts[1] == "pictures" and method == "PATCH":
            self._slot(self._sim(parts[0]), parts[2])  # 404 before the body is read
            return await self.retitle(parts[0], parts[2], await read_json(request))
        if n <= 1 or (n == 2 and parts[1] in ("close", "reload")) or (n == 3 and parts[1] == "pictures"):
            raise WorldAdminError(405, "method_not_allowed", f"{method} is not allowed here")
        raise WorldAdminError(404, "not_found", "no such admin route")

    def describe(self, sim: Simulation) -> dict:
        spec = sim.world_spec
        return {"id": spec.id, "title": spec.title, "default": spec.id == self.host.default_id,
                "players": len(sim.sessions), "version": spec.version, "file": spec.source,
                "slots": len(spec.pictures), "hung": len(self.overlays.get(spec.id, {}))}

    def _sim(self, world_id: str) -> Simulation:
        sim = self.host.sims.get(world_id)
        if sim is None:
            raise WorldAdminError(404, "not_found", "no such world")
        return sim

    @staticmethod
    def _slot(sim: Simulation, slot: str) -> str:
        """The image the slot shows now; 404 for no such slot."""
        for picture in sim.world_spec.pictures:
            if picture.id == slot:
                return picture.image
        raise WorldAdminError(404, "not_found", "no such picture slot")

    # -- open, close, reload ---------------------------------------------------------------------
    async def restore(self) -> None:
        """At start: the pictures an older version hung into ``http.images_dir`` moved into the
        pictures folder, then the pictures hung in each hosted world before, over its file's."""
        await trio.to_thread.run_sync(self._move_old_pictures)
        for sim in list(self.host):
            spec = sim.world_spec
            if not spec.source:  # the open world has no slots
                continue
            images, titles = await self._load_overlay(spec.id)
            if images:
                sim.world_spec = spec.with_images(images, titles)

    async def open(self, name: object) -> dict:
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME or "\x00" in name:
            raise WorldAdminError(400, "bad_field", "world: a built-in world id, open, or the path of a world file "
                                  "on the server")
        sim_settings = self.config.sim
        async with self.lock:
            try:
                spec = await trio.to_thread.run_sync(
                    load_named, name.strip(), sim_settings.half_extent,
                    (sim_settings.spawn_point[0], sim_settings.spawn_point[2]))
            except WorldFileError as exc:
                raise WorldAdminError(400, "bad_world", str(exc)) from None
            if spec.id in self.host.sims:
                raise WorldAdminError(409, "exists", f"the world {spec.id!r} is open already")
            if len(self.host.sims) >= MAX_WORLDS:
                raise WorldAdminError(409, "too_many", f"a server hosts at most {MAX_WORLDS} worlds")
            if spec.source:
                spec = spec.with_images(*await self._load_overlay(spec.id))
            sim = await trio.to_thread.run_sync(Simulation, self.config, self.stats, None, spec)
            chat = self.running.chat
            if chat is not None:  # the room first: a player's chat hello finds it
                try:
                    await chat.open_world_room(spec.id)
                except ChatError as exc:
                    raise WorldAdminError(503, "no_chat_room", f"the world's chat room: {exc.message}") from None
            self.host.add(sim, trio.current_time())
            self.stats.incr("worlds.opened")
            log.info("world opened", world=spec.id, file=spec.source or None)
            return self.describe(sim)

    async def close(self, world_id: str, reason: object = None) -> dict:
        reason = DEFAULT_REASON if reason is None else reason
        if not isinstance(reason, str) or not _one_line(reason) or len(reason) > MAX_REASON:
            raise WorldAdminError(400, "bad_field", f"reason: a text of 1 to {MAX_REASON} characters")
        reason = _one_line(reason)
        self._sim(world_id)
        if world_id == self.host.default_id:
            raise WorldAdminError(409, "default_world", "the default world cannot be closed: clients that name no "
                                  "world go there (the first of worlds.hosted)")
        async with self.lock:
            sim = self._sim(world_id)
            chat = self.running.chat
            room = chat.world_rooms.get(world_id) if chat is not None else None
            notice = False
            if room is not None:
                with trio.move_on_after(NOTICE_TIMEOUT):
                    try:
                        await chat.post_notice(f"This world is closed: {reason}", room)
                        notice = True
                    except ChatError as exc:  # the chat failing must not keep the world open
                        log.warning("world close notice not posted", world=world_id, error=exc.message)
            self.host.remove(world_id)  # from now on, joins naming it get 404
            sim.closed_reason = reason
            ended = 0
            for session in list(sim.sessions):
                end = getattr(session, "end", None)
                if end is not None:
                    end(WORLD_CLOSED)  # DISCONNECT world_closed with the reason, the avatar leaves
                if session in sim.sessions:  # a transport that could not end it: leave anyway
                    sim.leave(session)
                ended += 1
            for service in (self.running.udp, self.running.ws, self.running.rtc_stream):
                if service is not None:
                    service.flush()  # the DISCONNECTs now, not at the next poll
            self.stats.incr("worlds.closed")
            log.info("world closed", world=world_id, players=ended, reason=reason)
            return {"id": world_id, "players": ended, "reason": reason, "notice": notice}

    async def reload(self, world_id: str) -> dict:
        sim = self._sim(world_id)
        if not sim.world_spec.source:
            raise WorldAdminError(409, "no_file", "this world has no file to read again (the open world)")
        async with self.lock:
            sim = self._sim(world_id)
            try:
                spec = await trio.to_thread.run_sync(load_world, sim.world_spec.source)
            except WorldFileError as exc:
                raise WorldAdminError(400, "bad_world", str(exc)) from None
            if spec.id != world_id:
                raise WorldAdminError(409, "id_changed", f"the file now names the world {spec.id!r}, not "
                                      f"{world_id!r}: close this one and open the file")
            spec = spec.with_images(*await self._load_overlay(world_id))
            prepared = await trio.to_thread.run_sync(Simulation.prepare_spec, spec)
            try:
                moved = sim.apply_spec(spec, prepared)
            except ValueError as exc:
                raise WorldAdminError(409, "cannot_reload", str(exc)) from None
            self.stats.incr("worlds.reloaded")
            if len(moved):
                self.stats.incr("worlds.avatars_moved", len(moved))
            log.info("world reloaded", world=world_id, version=sim.world_spec.version, avatars_moved=len(moved))
            return {**self.describe(sim), "moved": len(moved)}

    # -- pictures --------------------------------------------------------------------------------
    async def hang(self, world_id: str, slot: str, request) -> dict:
        """Validates the request's title and body as a chat name and image would be, and hangs
        the picture in the slot under that title."""
        self._slot(self._sim(world_id), slot)
        titles = request.query_params.getlist("title")
        try:
            if len(titles) > 1:
                raise ChatProtocolError("bad_field", "title: given more than once", None, "title")
            title = picture_title(titles[0] if titles else "")
        except ChatProtocolError as exc:
            self.stats.incr("drop.world_picture_bad_title")
            raise WorldAdminError(400, "bad_field", exc.message) from None
        chat = self.running.chat
        workers = chat.image_workers if chat is not None else None
        if workers is None:
            raise WorldAdminError(503, "no_images", "this server does not decode images (its chat has no images)")
        try:
            workers.check_room()  # before the body: a queue of waiting uploads holds their bodies
            body = await read_upload(request, chat.max_image_bytes, self.stats)
            if sniff(body) == "GIF":  # GET /gallery/images/{name} serves PNG, JPEG and WebP (http_static)
                raise ImageRejected("unsupported_type", "a picture slot takes a PNG, JPEG or WebP image", 415)
            clean = await workers.process(body)
        except ImageRejected as exc:
            self.stats.incr("drop.world_picture_rejected")
            raise WorldAdminError(exc.status, exc.code, exc.message) from None
        del body
        async with self.lock:
            sim = self._sim(world_id)  # closed or reloaded meanwhile: say so, store nothing
            self._slot(sim, slot)
            try:
                await trio.to_thread.run_sync(self._make_folder)
                image_id = await trio.to_thread.run_sync(self.images.save, clean, f"{HUNG_PREFIX}{world_id}-{slot}-")
            except OSError as exc:
                raise WorldAdminError(503, "storage", f"the picture could not be stored: {exc.strerror or exc}") from None
            name = f"{image_id}.{clean.ext}"
            try:
                old = await self._set_picture(sim, slot, name, title)  # in the document once it returns
            except BaseException:  # not recorded (a disk error, cancelled): not kept either
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(self._delete, name)
                raise
            await self._forget(sim, old)
        self.stats.incr("worlds.pictures_hung")
        log.info("picture hung", world=world_id, slot=slot, image=name, bytes=len(clean.data))
        return {"world": world_id, "slot": slot, "image": name, "title": title, "url": _url(name),
                "version": sim.world_spec.version,
                "type": clean.content_type, "width": clean.width, "height": clean.height, "bytes": len(clean.data)}

    async def take_down(self, world_id: str, slot: str) -> dict:
        """Empties the slot (an empty frame, whatever the file says)."""
        async with self.lock:
            sim = self._sim(world_id)
            self._slot(sim, slot)
            await self._forget(sim, await self._set_picture(sim, slot, "", ""))
        self.stats.incr("worlds.pictures_taken_down")
        log.info("picture taken down", world=world_id, slot=slot)
        return {"world": world_id, "slot": slot, "image": "", "title": "", "url": "", "version": sim.world_spec.version}

    async def retitle(self, world_id: str, slot: str, body: dict) -> dict:
        """Gives the picture hung in the slot the ``title`` of ``body`` (checked as a hang's);
        the image stays. Same title: nothing changes (no new version)."""
        try:
            if "title" not in body:
                raise ChatProtocolError("bad_field", 'title: missing (a text; "" for none)', None, "title")
            title = picture_title(body["title"])
        except ChatProtocolError as exc:
            self.stats.incr("drop.world_picture_bad_title")
            raise WorldAdminError(400, "bad_field", exc.message) from None
        async with self.lock:
            sim = self._sim(world_id)
            image = self._slot(sim, slot)
            if world_id not in self.overlays:
                await self._load_overlay(world_id)
            if not image or self.overlays[world_id].get(slot) != image:
                self.stats.incr("drop.world_picture_not_hung")
                raise WorldAdminError(409, "not_hung", "this slot shows no picture hung through the admin API (an "
                                      "empty frame, or the world file's own picture): hang one to title it")
            changed = self.titles.get(world_id, {}).get(slot, "") != title
            if changed:
                await self._set_picture(sim, slot, image, title)
        if changed:
            self.stats.incr("worlds.pictures_retitled")
            log.info("picture retitled", world=world_id, slot=slot, image=image)
        return {"world": world_id, "slot": slot, "image": image, "title": title, "url": _url(image),
                "version": sim.world_spec.version, "changed": changed}

    async def _set_picture(self, sim: Simulation, slot: str, image: str, title: str) -> str:
        """Records ``image`` and its ``title`` for the slot on disk, then in the world's document
        (a new version); returns the image it replaced. Under the lock."""
        world_id = sim.world_id
        old = self._slot(sim, slot)
        if world_id not in self.overlays:
            await self._load_overlay(world_id)
        overlay = {**self.overlays[world_id], slot: image}
        titles = {key: text for key, text in self.titles.get(world_id, {}).items() if key != slot}
        if image and title:
            titles[slot] = title
        try:
            await trio.to_thread.run_sync(self._write_overlay, world_id, overlay, titles)
        except OSError as exc:
            raise WorldAdminError(503, "storage", f"the world's pictures could not be saved: "
                                  f"{exc.strerror or exc}") from None
        self.overlays[world_id], self.titles[world_id] = overlay, titles
        sim.world_spec = sim.world_spec.with_picture(slot, image, titles.get(slot, ""))
        return old

    async def _load_overlay(self, world_id: str) -> tuple[dict[str, str], dict[str, str]]:
        """Reads the world's hung pictures and their titles (kept as ``overlays`` and ``titles``)."""
        images, titles = await trio.to_thread.run_sync(self._read_overlay, world_id)
        self.overlays[world_id], self.titles[world_id] = images, titles
        return images, titles

    async def _forget(self, sim: Simulation, old: str) -> None:
        """Deletes a hung picture no slot of the world shows any more."""
        if _HUNG_NAME.fullmatch(old) and all(p.image != old for p in sim.world_spec.pictures):
            await trio.to_thread.run_sync(self._delete, old)

    # -- files (worker threads) ------------------------------------------------------------------
    def _overlay_path(self, world_id: str) -> Path:
        return self.folder / f"{world_id}.pictures.json"

    def _read_overlay(self, world_id: str) -> tuple[dict[str, str], dict[str, str]]:
        """The pictures hung in the world before (slot -> image) and their titles (slot ->
        title, for the slots that show a picture; a file written before titles has none); {}
        when none or unreadable (a damaged file, or the parts of it that are, is logged and left
        for the operator, never a crash: one too large or nested too deeply is refused by
        ``protocol.jsonsafe`` before it is parsed)."""
        path = self._overlay_path(world_id)
        try:
            with path.open("rb") as file:
                data = jsonsafe.loads(file.read(_MAX_OVERLAY_BYTES + 1), max_bytes=_MAX_OVERLAY_BYTES)
        except FileNotFoundError:
            return {}, {}
        except (OSError, ValueError) as exc:
            log.warning("world pictures not read", path=str(path), error=str(exc)[:200])
            return {}, {}
        pictures = data.get("pictures") if isinstance(data, dict) else None
        good = {slot: image for slot, image in (pictures or {}).items()
                if isinstance(slot, str) and ID_RE.fullmatch(slot) and isinstance(image, str)
                and (image == "" or (_IMAGE_NAME.fullmatch(image) and not image.startswith(".")))}
        titles = data.get("titles", {}) if isinstance(data, dict) else {}
        good_titles = {slot: title for slot, title in titles.items() if good.get(slot) and _clean_title(title)} \
            if isinstance(titles, dict) else {}
        if not isinstance(pictures, dict) or len(good) != len(pictures) or not isinstance(titles, dict) \
                or len(good_titles) != len(titles):
            log.warning("world pictures partly not read", path=str(path))
        return good, good_titles

    def _write_overlay(self, world_id: str, overlay: dict[str, str], titles: dict[str, str]) -> None:
        """Writes the overlay durably: a temporary file, fsynced, renamed over the old one."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._overlay_path(world_id)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        data = json.dumps({"world": world_id, "pictures": overlay, "titles": titles}, indent=1,
                          sort_keys=True).encode()
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
        _fsync_folder(self.folder)

    def _make_folder(self) -> None:
        """The pictures folder, made mode 0755 (less by the umask) when missing."""
        self.pictures.mkdir(mode=0o755, parents=True, exist_ok=True)

    def _delete(self, name: str) -> None:
        if not _HUNG_NAME.fullmatch(name):  # only what this module stored
            return
        try:
            (self.pictures / name).unlink(missing_ok=True)
            old = Path(self.config.http.images_dir) / name  # hung by an older version, not moved
            if old.is_file() and not old.is_symlink():
                old.unlink()
        except OSError as exc:
            log.warning("old picture not deleted", image=name, error=str(exc)[:200])

    def _move_old_pictures(self) -> None:
        """Moves the ``hung-*`` pictures an older version stored in ``http.images_dir`` into the
        pictures folder (a rename, or when that cannot be done -- another file system, a folder
        the server may not write -- a copy, fsynced, then the original removed). Logged once:
        how many were moved, and how many were not (a copy failed: still served from there;
        an original that could not be removed: left there, the copy is served)."""
        source = Path(self.config.http.images_dir)
        try:
            if source.resolve() == self.pictures.resolve() or (
                    self.pictures.exists() and os.path.samefile(source, self.pictures)):
                return  # http.images_dir is the pictures folder: nothing to move
            names = sorted(entry.name for entry in os.scandir(source)
                           if _HUNG_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False))
        except OSError:  # no images folder (the sample pictures are made later), or unreadable
            return
        if not names:
            return
        try:
            self._make_folder()
        except OSError as exc:
            log.warning("hung pictures not moved, served from http.images_dir", count=len(names),
                        source=str(source), folder=str(self.pictures), error=str(exc)[:200])
            return
        moved, kept, failed = 0, 0, []
        for name in names:
            old, new = source / name, self.pictures / name
            try:  # already there: copied by an earlier start that could not remove it (the names are random)
                if not new.exists() and not _rename(old, new):
                    self._copy(old, new)
            except OSError as exc:
                failed.append(f"{name}: {exc.strerror or exc}")
                continue
            try:
                old.unlink(missing_ok=True)  # gone when renamed
                moved += 1
            except OSError:
                kept += 1
        if moved or kept:
            try:
                _fsync_folder(self.pictures)
            except OSError as exc:
                log.warning("pictures folder not synced", folder=str(self.pictures), error=str(exc)[:200])
        if moved:
            log.info("hung pictures moved", count=moved, source=str(source), folder=str(self.pictures))
        if kept:
            log.warning("hung pictures copied, originals left", count=kept, source=str(source),
                        folder=str(self.pictures), hint="the server may not remove them from http.images_dir;"
                        " the copies are served: remove them yourself")
        if failed:
            log.warning("hung pictures not moved, served from http.images_dir", count=len(failed),
                        source=str(source), folder=str(self.pictures), error=failed[0][:200])

    @staticmethod
    def _copy(old: Path, new: Path) -> None:
        """``old`` copied to ``new`` durably: a temporary file, fsynced, renamed."""
        temporary = new.with_name(f".{new.name}.{os.getpid()}.tmp")
        try:
            with open(old, "rb") as src, open(temporary, "xb") as dst:
                shutil.copyfileobj(src, dst)
                dst.flush()
                os.fsync(dst.fileno())
            os.chmod(temporary, 0o644)
            os.replace(temporary, new)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise


def _rename(old: Path, new: Path) -> bool:
    """``old`` renamed to ``new``; False when it cannot be (another file system, a folder the
    server may not write: the caller copies)."""
    try:
        os.rename(old, new)
    except OSError:
        return False
    return True


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _builtin_ids() -> list[str]:
    """The names :func:`~worldserver.worldfile.load_named` takes that are not paths: ``open``
    and the worlds shipped in ``worldserver/worlds``, sorted (a worker thread: it lists a
    folder)."""
    return sorted(["open", *(p.stem for p in BUILTIN_DIR.glob("*.toml") if ID_RE.fullmatch(p.stem))])


def picture_title(text: object) -> str:
    """A hung picture's title as given (the ``title`` query parameter of a hang): checked as the
    chat checks a name (one line, no control characters, NFC, stripped, at most
    :data:`MAX_TITLE` characters); "" for none. Raises ChatProtocolError ``bad_field`` saying why."""
    return check_line(text, "title", MAX_TITLE)


def _clean_title(title: object) -> bool:
    """Whether ``title`` (read back from a pictures file) is one :func:`picture_title` keeps as it is."""
    try:
        return bool(title) and picture_title(title) == title
    except ChatProtocolError:
        return False


def _url(image: str) -> str:
    return f"/gallery/images/{image}" if image else ""


def _one_line(text: str) -> str:
    from worldserver.admin_api import _one_line as one_line  # the kick reason's rule (imported late: it imports us)

    return one_line(text)
