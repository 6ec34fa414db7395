"""Janus as the SFU of proximity calls: our own Janus process, a Janus API client, the backend.

Job (docs/calls.md, "SFU (Janus VideoRoom)"):

* :class:`JanusProcess` runs the ``janus`` program (Debian's package) as a child of the server
  with a configuration it writes to ``<data_dir>/janus/``: ``janus.jcfg`` (no STUN, no
  event handlers, no loggers), ``janus.transport.websockets.jcfg`` (the Janus API on
  ``calls.janus_host:calls.janus_port``, plain ``ws``, no Admin API) and
  ``janus.plugin.videoroom.jcfg`` (the ``admin_key``, RTP forwarding locked, no static room),
  and folders ``plugins/`` and ``transports/`` that link only the VideoRoom plugin and the
  WebSockets transport, so nothing else loads. Janus's output goes to ``janus.log`` there
  (kept under :data:`LOG_MAX_BYTES`, one older ``janus.log.1``), never to our stdout. It
  waits, with a deadline, until the WebSocket API answers an ``info`` request listing the
  VideoRoom plugin. A first start that fails is a :class:`~worldserver.startup.StartupError`
  naming the setting (binary missing, port in use, Janus exited, no answer in time), which
  ``worldserver run`` prints as one line; a Janus that ends later is logged and started again
  after a back-off. It is stopped when its task is cancelled: a Janus that has answered gets
  SIGTERM (again after :data:`TERM_AGAIN`), then SIGKILL after :data:`STOP_TIMEOUT`; one still
  starting gets SIGKILL at once (Janus 1.1.2 misses a SIGTERM that comes during its start-up,
  and until it answers it holds nothing worth a clean exit); how each ended is counted in
  ``JanusProcess.stops``. It dies with the server (started by
  :func:`worldserver.children.spawn`: PR_SET_PDEATHSIG on Linux), and its pid is in
  ``janus.pid`` there: a start that finds one whose process is still a ``janus`` started
  with this configuration folder (read from ``/proc/<pid>/cmdline``) stops it first
  (SIGTERM, then SIGKILL; logged at INFO), and leaves any other process alone.
* :func:`open_janus` / :class:`JanusClient`: one Janus API session over the WebSocket
  transport (subprotocol ``janus-protocol``): requests matched to answers by transaction id,
  each with a deadline; a keepalive every 25 s; plugin handles; events not answering a
  request go to a bounded buffer (or nowhere). Frames are parsed with ``protocol.jsonsafe``
  (at most :data:`MAX_FRAME` bytes, nesting checked first): one that is not a JSON object is
  counted (``drop.janus_bad_frame``) and dropped. When the socket closes, a keepalive goes
  unanswered or Janus times the session out, every waiting request fails with
  :class:`JanusGone` and :attr:`JanusClient.lost` is set.
* :class:`JanusBackend` is the :class:`~worldserver.calls.sfu.SfuBackend` on the VideoRoom
  plugin: rooms with a number of ours, the ``admin_key``, a random ``secret``, an ACL of
  ``allowed`` tokens, ``require_pvtid`` (so a kick also ends the kicked member's
  subscriptions), locked recording, Opus and VP8 and a small video bitrate cap; a fresh token
  per member and room (:meth:`~JanusBackend.admit`); a revoke withdraws the token and kicks
  the participants shown under that member's display name, or under no admitted member's
  (one that fails is tried again in the background until done); closing destroys the room. It connects at start (a StartupError if it cannot, or the
  ``admin_key`` is refused), reconnects with a back-off when the connection goes, and then
  makes again, with the same number, secret and tokens, every room Janus no longer has (a
  restarted Janus), so a page that joins again with its ticket gets in. While it is down,
  every call fails at once with :class:`~worldserver.calls.sfu.SfuError` ``unreachable``.
  Rooms still open when it stops are destroyed.
* :func:`open_sfu` is what the server starts for ``calls.sfu``: nothing for ``"none"``; for
  ``"janus"`` our own JanusProcess (``calls.janus_url`` empty) or the Janus at
  ``calls.janus_url``, and the backend on it; :func:`serve_sfu` is the same as a task that
  hands the backend to ``nursery.start``. Tickets carry :func:`public_url`.

Must not: reach into Janus's internals (only its documented JSON API and configuration
files), write outside ``<data_dir>/janus``, let Janus write to our stdout, wait on Janus
without a deadline, signal a process that is not a Janus of ours, or raise anything but
SfuError from a backend method.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
from collections import Counter, deque
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any, AsyncIterator, Iterator
from urllib.parse import urlsplit

import attrs
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from protocol import jsonsafe
from worldserver.calls.sfu import SfuError, SfuTicket
from worldserver.children import Child, ProcessHandle, spawn
from worldserver.logs import get_logger
from worldserver.startup import StartupError

__all__ = [
    "JanusBackend", "JanusClient", "JanusError", "JanusGone", "JanusProcess", "JanusTimeout", "VIDEOROOM",
    "open_janus", "open_sfu", "public_url", "serve_sfu",
]

log = get_logger("worldserver.calls.janus")

VIDEOROOM = "janus.plugin.videoroom"
SUBPROTOCOL = "janus-protocol"
PLUGIN_FILE = "libjanus_videoroom.so"
TRANSPORT_FILE = "libjanus_websockets.so"
LOG_MAX_BYTES = 4 * 1024 * 1024  # janus.log is moved to janus.log.1 beyond this
LOG_TAIL_LINES = 40  # the last lines of Janus's output kept for error messages
PID_FILE = "janus.pid"  # in the folder: the pid of the Janus we run, for the next start
STOP_TIMEOUT = 5.0  # seconds after SIGTERM before SIGKILL, and after SIGKILL before giving up
TERM_AGAIN = 1.0  # seconds after a SIGTERM before a second one (a Janus just done starting may miss it)

# VideoRoom error codes (its documented macros) the backend tells apart.
NO_SUCH_ROOM = 426
ROOM_EXISTS = 427
NO_SUCH_USER = 428
UNAUTHORIZED = 433

# Rooms: every member publishes (a zone's call can be large); video is kept small.
ROOM_PUBLISHERS = 100
ROOM_BITRATE = 256_000  # bits per second per video publisher (REMB cap)
ROOM_FIR_FREQ = 10  # a keyframe request to publishers every this many seconds
MAX_ROOM_NUMBER = 2**53 - 1  # room numbers stay exact in JavaScript
MAX_FRAME = 1024 * 1024  # bytes of a Janus API frame (the sockets' max_message_size; parsed with jsonsafe)


class JanusError(Exception):
    """Janus refused a request (``code`` from Janus or its plugin, ``reason`` its text)."""

    def __init__(self, reason: str, code: int = 0) -> None:
        super().__init__(f"{reason} ({code})" if code else reason)
        self.code = code
        self.reason = reason


class JanusGone(JanusError):
    """No connection to Janus (never made, closed, or the session timed out)."""


class JanusTimeout(JanusError):
    """Janus did not answer a request within its deadline."""


# -- the client ---------------------------------------------------------------------------------


@attrs.define(eq=False)
class _Pending:
    until_event: bool  # an asynchronous plugin request: its "ack" is not the answer
    done: trio.Event = attrs.Factory(trio.Event)
    answer: Any = None


class JanusClient:
    """One Janus API session on one WebSocket; made by :func:`open_janus`."""

    def __init__(self, ws, url: str, *, request_timeout: float, keepalive: float, event_buffer: int,
                 stats=None) -> None:
        self.url = url
        self.request_timeout = request_timeout
        self.keepalive_interval = keepalive
        self.session_id: int | None = None
        self.lost = trio.Event()  # set once the connection is gone; see gone
        self.gone: str | None = None  # why the connection is gone
        self.keepalives = 0  # keepalives Janus acknowledged
        self.bad_frames = 0  # frames from Janus that were not a JSON object
        self.events_dropped = 0  # events beyond the buffer
        self._ws = ws
        self._stats = stats
        self._pending: dict[str, _Pending] = {}
        self._prefix = secrets.token_hex(4)
        self._next = 0
        if event_buffer > 0:
            self._events_in, self.events = trio.open_memory_channel(event_buffer)
        else:
            self._events_in, self.events = None, None

    # -- requests --

    async def info(self) -> dict:
        """The ``server_info`` answer (version, plugins, transports, ...)."""
        return await self._call({"janus": "info"}, session=False)

    async def attach(self, plugin: str = VIDEOROOM) -> int:
        """A new handle on ``plugin``; its id."""
        answer = await self._call({"janus": "attach", "plugin": plugin})
        return _int_in(answer.get("data"), "id")

    async def detach(self, handle: int) -> None:
        await self._call({"janus": "detach", "handle_id": handle})

    async def message(self, handle: int, body: dict) -> dict:
        """A synchronous plugin request (VideoRoom's create, allowed, kick, ...): the plugin's
        answer (``plugindata.data``). A plugin error raises JanusError with its code."""
        answer = await self._call({"janus": "message", "handle_id": handle, "body": body})
        return _plugin_data(answer)

    async def message_event(self, handle: int, body: dict, jsep: dict | None = None) -> tuple[dict, dict | None]:
        """An asynchronous plugin request (VideoRoom's join, publish, ...): the plugin's event
        answering it and its JSEP, if any."""
        request = {"janus": "message", "handle_id": handle, "body": body}
        if jsep is not None:
            request["jsep"] = jsep
        answer = await self._call(request, until_event=True)
        jsep_answer = answer.get("jsep")
        return _plugin_data(answer), jsep_answer if isinstance(jsep_answer, dict) else None

    async def _call(self, request: dict, *, session: bool = True, until_event: bool = False) -> dict:
        if self.gone is not None:
            raise JanusGone(f"no connection to Janus at {self.url}: {self.gone}")
        self._next += 1
        transaction = f"{self._prefix}-{self._next}"
        request["transaction"] = transaction
        if session and self.session_id is not None:
            request["session_id"] = self.session_id
        pending = self._pending[transaction] = _Pending(until_event)
        try:
            with trio.fail_after(self.request_timeout):
                try:
                    await self._ws.send_message(json.dumps(request))
                except ConnectionClosed:
                    self._lose("connection closed")
                else:
                    await pending.done.wait()
        except trio.TooSlowError:
            raise JanusTimeout(f"Janus at {self.url} did not answer {request['janus']!r} within"
                               f" {self.request_timeout:g} s") from None
        finally:
            self._pending.pop(transaction, None)
        answer = pending.answer
        if isinstance(answer, JanusError):
            raise answer
        if answer.get("janus") == "error":
            error = answer.get("error") if isinstance(answer.get("error"), dict) else {}
            raise JanusError(str(error.get("reason", "error")), _code(error.get("code")))
        return answer

    # -- the connection's tasks --

    async def _read_loop(self) -> None:
        try:
            while True:
                self._dispatch(await self._ws.get_message())
        except ConnectionClosed:
            pass
        self._lose("connection closed")

    def _dispatch(self, text) -> None:
        try:
            frame = jsonsafe.loads(text, max_bytes=MAX_FRAME)
        except jsonsafe.JsonRefused:
            frame = None
        if not isinstance(frame, dict):
            self.bad_frames += 1
            if self._stats is not None:
                self._stats.incr("drop.janus_bad_frame")
            return
        kind = frame.get("janus")
        transaction = frame.get("transaction")
        pending = self._pending.get(transaction) if isinstance(transaction, str) else None
        if pending is not None and not (kind == "ack" and pending.until_event):
            pending.answer = frame
            pending.done.set()
            return
        if kind == "timeout" and frame.get("session_id") == self.session_id:
            self._lose("Janus timed the session out")
            return
        if kind == "ack" or self._events_in is None or self.gone is not None:
            return  # a late ack, events nobody reads, or after the end
        try:
            self._events_in.send_nowait(frame)
        except trio.WouldBlock:
            self.events_dropped += 1

    async def _keepalive_loop(self) -> None:
        while self.gone is None:
            await trio.sleep(self.keepalive_interval)
            try:
                await self._call({"janus": "keepalive"})
            except JanusError as exc:
                self._lose(f"keepalive failed: {exc}")
            else:
                self.keepalives += 1
        with trio.move_on_after(1):
            await self._ws.aclose()

    def _lose(self, reason: str) -> None:
        if self.gone is not None:
            return
        self.gone = reason
        for pending in self._pending.values():
            pending.answer = JanusGone(f"connection to Janus at {self.url} lost: {reason}")
            pending.done.set()
        if self._events_in is not None:
            self._events_in.close()
        self.lost.set()


@asynccontextmanager
async def open_janus(url: str, *, request_timeout: float = 5.0, keepalive: float = 25.0,
                     connect_timeout: float = 5.0, event_buffer: int = 0, stats=None) -> AsyncIterator[JanusClient]:
    """A :class:`JanusClient` with a session on the Janus at ``url``; JanusGone when there is
    none (refused, not Janus, no answer within ``connect_timeout``). ``event_buffer`` > 0
    keeps that many unrequested events in ``client.events`` (the rest are dropped and counted
    in ``events_dropped``). Leaving the block ends the session and closes the socket."""
    async with AsyncExitStack() as stack:
        try:
            ws = await stack.enter_async_context(open_websocket_url(
                url, subprotocols=[SUBPROTOCOL], connect_timeout=connect_timeout, disconnect_timeout=1,
                message_queue_size=16, max_message_size=MAX_FRAME))
        except (HandshakeError, OSError, ValueError) as exc:
            cause = exc.__cause__ or exc.__context__ or exc
            raise JanusGone(f"cannot connect to Janus at {url}: {_describe(cause)}") from None
        client = JanusClient(ws, url, request_timeout=request_timeout, keepalive=keepalive,
                             event_buffer=event_buffer, stats=stats)
        with _single_errors():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client._read_loop)
                answer = await client._call({"janus": "create"})
                client.session_id = _int_in(answer.get("data"), "id")
                nursery.start_soon(client._keepalive_loop)
                try:
                    yield client
                finally:
                    if client.gone is None:
                        with trio.move_on_after(1) as scope:
                            scope.shield = True
                            try:  # ends the session now (else Janus does when the socket closes)
                                await ws.send_message(json.dumps({"janus": "destroy", "session_id": client.session_id,
                                                                  "transaction": "bye"}))
                            except ConnectionClosed:
                                pass
                    client._lose("closed by us")
                    nursery.cancel_scope.cancel()


@contextmanager
def _single_errors() -> Iterator[None]:
    """What leaves a nursery as a group of one exception leaves as that exception."""
    try:
        yield
    except BaseExceptionGroup as group:
        inner: BaseException = group
        while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
            inner = inner.exceptions[0]
        if inner is group:
            raise
        raise inner from None


async def janus_info(url: str, timeout: float = 1.0) -> dict:
    """Ask the Janus at ``url`` for its ``server_info`` without making a session; JanusGone
    or JanusTimeout when it does not answer within ``timeout``."""
    try:
        with trio.fail_after(timeout):
            async with open_websocket_url(url, subprotocols=[SUBPROTOCOL], connect_timeout=timeout,
                                          disconnect_timeout=0.2, max_message_size=MAX_FRAME) as ws:
                await ws.send_message(json.dumps({"janus": "info", "transaction": "info"}))
                while True:
                    try:
                        frame = jsonsafe.loads(await ws.get_message(), max_bytes=MAX_FRAME)
                    except jsonsafe.JsonRefused:
                        continue
                    if isinstance(frame, dict) and frame.get("transaction") == "info":
                        return frame
    except trio.TooSlowError:
        raise JanusTimeout(f"Janus at {url} did not answer within {timeout:g} s") from None
    except (HandshakeError, ConnectionClosed, OSError) as exc:
        cause = exc.__cause__ or exc.__context__ or exc
        raise JanusGone(f"cannot connect to Janus at {url}: {_describe(cause)}") from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _code(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _int_in(data: Any, key: str) -> int:
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, int) or isinstance(value, bool):
        raise JanusError(f"Janus answered without a numeric {key!r}")
    return value


def _plugin_data(answer: dict) -> dict:
    plugindata = answer.get("plugindata")
    data = plugindata.get("data") if isinstance(plugindata, dict) else None
    if not isinstance(data, dict):
        raise JanusError("Janus answered without plugin data")
    if "error_code" in data or "error" in data:
        raise JanusError(str(data.get("error", "plugin error")), _code(data.get("error_code")))
    return data


# -- our own Janus ------------------------------------------------------------------------------


class _StartFailed(Exception):
    def __init__(self, setting: str, value: object, message: str) -> None:
        super().__init__(message)
        self.error = StartupError(setting, value, message)


class JanusProcess:
    """Janus run as our child, configured in ``folder`` (``<data_dir>/janus``).

    ``url = await nursery.start(process.run)`` returns once its WebSocket API answers (the
    URL we reach it at); cancelling the task stops Janus. ``lib_dir``: Janus's library folder
    (its ``plugins/`` and ``transports/``); None finds it beside the binary."""

    def __init__(self, folder: str, *, admin_key: str, binary: str = "janus", host: str = "127.0.0.1",
                 port: int = 8188, lib_dir: str | None = None, start_timeout: float = 10.0,
                 restart_delay: float = 1.0, max_restart_delay: float = 30.0) -> None:
        self.folder = os.path.abspath(folder)
        self.admin_key = admin_key
        self.binary = binary
        self.host = host
        self.port = port
        self.lib_dir = lib_dir
        self.start_timeout = start_timeout
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self.log_path = os.path.join(self.folder, "janus.log")
        self.config_path = os.path.join(self.folder, "janus.jcfg")
        self.url = f"ws://{_connect_host(host)}:{port}"
        self.pid: int | None = None  # of the running Janus
        self.starts = 0  # Janus processes started
        self.exits = 0  # of those, how many ended while we wanted them running
        self.stops: Counter[str] = Counter()  # how each ended when we stopped it: see Child.stop
        self.last_exit: int | None = None  # the return code of the last one (-N: signal N)
        self._tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self._log_file = None

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        await self._stop_left_over()  # it would hold our port
        executable = self._prepare()
        delay = self.restart_delay
        first = True
        while True:
            began = trio.current_time()
            try:
                outcome = await self._run_once(executable, task_status if first else trio.TASK_STATUS_IGNORED)
            except _StartFailed as exc:
                if first:
                    raise exc.error from None
                log.warning("janus did not start again", error=str(exc), retry_in=delay)
            else:
                self.exits += 1
                log.warning("janus exited", outcome=outcome, last=self._last_error(), log=self.log_path,
                            restart_in=delay)
                if trio.current_time() - began > 60:
                    delay = self.restart_delay  # it had run a while: not a crash loop
            first = False
            await trio.sleep(delay)
            delay = min(max(delay, 0.05) * 2, self.max_restart_delay)

    # -- set-up (synchronous: before anything starts) --

    def _prepare(self) -> str:
        """Check the binary, the library folder, the address and port; write the
        configuration. Returns the executable's path; raises StartupError."""
        executable = shutil.which(self.binary)
        if executable is None:
            raise StartupError("calls.janus_binary", self.binary, "not found; install Debian's janus package"
                               " (as root: apt-get install janus, or bash scripts/setup.sh --janus), set"
                               " calls.janus_binary to its path, or set calls.janus_url to a running Janus")
        lib = self.lib_dir or _find_lib(executable)
        if lib is None or not _has_parts(lib):
            raise StartupError("calls.janus_binary", self.binary, f"no {PLUGIN_FILE} and {TRANSPORT_FILE} found"
                               f" {'in ' + lib if lib else 'beside ' + executable} (looked for lib/*/janus/plugins);"
                               " install Debian's janus package, which has both")
        try:
            address = ipaddress.ip_address(self.host)
        except ValueError:
            raise StartupError("calls.janus_host", self.host, "not an IP address; set 127.0.0.1 (this machine's"
                               " browsers only), 0.0.0.0 (all addresses) or one of this machine's addresses") from None
        self._check_port(address)
        try:
            self._write_config(lib, address)
        except OSError as exc:
            raise StartupError("server.data_dir", os.path.dirname(self.folder), f"cannot write Janus's"
                               f" configuration in {self.folder} ({exc.strerror or exc}); give the server's user"
                               " write access, or set another server.data_dir") from None
        return executable

    def _check_port(self, address) -> None:
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as libwebsockets binds
            sock.bind((str(address), self.port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError("calls.janus_port", self.port, f"TCP port already in use on {self.host} (another"
                                   " Janus running?); stop the program that holds it, set another calls.janus_port,"
                                   " or set calls.janus_url to use that Janus") from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise StartupError("calls.janus_host", self.host, "not an address of this machine; set 127.0.0.1,"
                                   " 0.0.0.0 or one of its addresses") from None
            raise StartupError("calls.janus_port", self.port, f"cannot listen on {self.host}:{self.port}"
                               f" ({exc.strerror or exc}); set another calls.janus_port (1024 or above)") from None
        finally:
            sock.close()

    def _write_config(self, lib: str, address) -> None:
        folder = self.folder
        os.makedirs(folder, mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)  # the videoroom file holds the admin_key
        for name, target in (("plugins", os.path.join(lib, "plugins", PLUGIN_FILE)),
                             ("transports", os.path.join(lib, "transports", TRANSPORT_FILE))):
            sub = os.path.join(folder, name)
            os.makedirs(sub, exist_ok=True)
            for old in os.listdir(sub):  # only the one we link loads
                os.unlink(os.path.join(sub, old))
            os.symlink(target, os.path.join(sub, os.path.basename(target)))
        empty = os.path.join(folder, "none")
        os.makedirs(empty, exist_ok=True)
        for old in os.listdir(empty):
            os.unlink(os.path.join(empty, old))
        unspecified = address.is_unspecified
        specific = not unspecified and not address.is_loopback
        ice = f"\tice_enforce_list = {_q(str(address))}\n" if specific else "\tice_ignore_list = \"vmnet\"\n"
        _write(os.path.join(folder, "janus.jcfg"), (
            "# Written by worldserver (worldserver/calls/janus.py) at each start: edits are lost.\n"
            "general: {\n"
            f"\tconfigs_folder = {_q(folder)}\n"
            f"\tplugins_folder = {_q(os.path.join(folder, 'plugins'))}\n"
            f"\ttransports_folder = {_q(os.path.join(folder, 'transports'))}\n"
            f"\tevents_folder = {_q(empty)}\n"
            f"\tloggers_folder = {_q(empty)}\n"
            "\tlog_to_stdout = true\n"  # into our pipe, then janus.log
            "\tdebug_level = 4\n"
            "\tdebug_timestamps = true\n"
            "\tdebug_colors = false\n"
            "\tserver_name = \"worldserver\"\n"
            "\tsession_timeout = 60\n"
            "\thide_dependencies = true\n"
            "}\n"
            "certificates: {\n}\n"
            "media: {\n}\n"
            "nat: {\n"
            "\tnice_debug = false\n"
            f"{ice}"
            "}\n"
            "plugins: {\n}\n"
            "transports: {\n}\n"
            "loggers: {\n}\n"
            "events: {\n\tbroadcast = false\n}\n"
        ))
        ws_ip = "" if unspecified else f"\tws_ip = {_q(str(address))}\n"
        _write(os.path.join(folder, "janus.transport.websockets.jcfg"), (
            "# Written by worldserver at each start: edits are lost.\n"
            "general: {\n"
            "\tjson = \"compact\"\n"
            "\tws = true\n"
            f"\tws_port = {int(self.port)}\n"
            f"{ws_ip}"
            "\twss = false\n"
            "}\n"
            "admin: {\n\tadmin_ws = false\n\tadmin_wss = false\n}\n"
        ))
        _write(os.path.join(folder, "janus.plugin.videoroom.jcfg"), (
            "# Written by worldserver at each start: edits are lost. Rooms are made through the API.\n"
            "general: {\n"
            f"\tadmin_key = {_q(self.admin_key)}\n"
            "\tlock_rtp_forward = true\n"
            "}\n"
        ))

    # -- a Janus left from an earlier run --

    @property
    def pid_path(self) -> str:
        return os.path.join(self.folder, PID_FILE)

    def _argv(self, executable: str) -> list[str]:
        return [executable, "--config", self.config_path, "--configs-folder", self.folder]

    def _is_ours(self, pid: int) -> bool:
        """Whether ``pid`` is a ``janus`` started with our configuration folder."""
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                argv = file.read(65536).split(b"\0")
        except OSError:
            return False
        argv = [os.fsdecode(arg) for arg in argv[:-1]] if argv and argv[-1] == b"" else []
        names = {"janus", os.path.basename(self.binary)}
        return (len(argv) == 5 and os.path.basename(argv[0]) in names
                and argv[1:] == self._argv(argv[0])[1:])

    async def _stop_left_over(self) -> None:
        """Stop the Janus named in janus.pid if it is still a Janus of ours (the server that
        started it was killed before it could; see the module docstring); then forget the file."""
        try:
            with open(self.pid_path, "rb") as file:
                text = file.read(64)
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("janus pid file unreadable", path=self.pid_path, error=str(exc))
            return
        try:
            pid = int(text.strip())
        except ValueError:
            pid = 0
        if pid > 0 and pid != os.getpid():
            with ProcessHandle.open(pid) as process:  # opened first: the checked process is the one signalled
                if process is not None and self._is_ours(pid):
                    how = await process.stop(STOP_TIMEOUT, again=TERM_AGAIN)
                    if how == "alive":
                        log.warning("janus from an earlier run did not stop", pid=pid)
                    elif how != "exited":
                        log.info("janus from an earlier run stopped", pid=pid, signal=how)
                elif process is not None:
                    log.info("janus pid file names a process that is not ours: left alone", pid=pid)
        with contextlib.suppress(OSError):
            os.unlink(self.pid_path)

    def _write_pid(self, pid: int) -> None:
        try:
            _write(self.pid_path + ".tmp", f"{pid}\n")
            os.replace(self.pid_path + ".tmp", self.pid_path)
        except OSError as exc:  # the next start cannot stop it if this server is killed
            log.warning("janus pid file not written", path=self.pid_path, error=str(exc))

    def _forget_pid(self, pid: int) -> None:
        try:
            with open(self.pid_path, "rb") as file:
                if file.read(64).strip() != str(pid).encode():
                    return
            os.unlink(self.pid_path)
        except OSError:
            pass

    # -- one Janus process --

    async def _run_once(self, executable: str, task_status) -> str:
        """Start Janus, report started when it answers, return why it ended; _StartFailed
        when it did not come up."""
        self._tail.clear()
        self._open_log()
        try:
            proc = _spawn(self._argv(executable))
        except OSError as exc:
            self._close_log()
            raise _StartFailed("calls.janus_binary", self.binary, f"cannot be started ({exc.strerror or exc});"
                               " set calls.janus_binary to the janus program") from None
        self.starts += 1
        self.pid = proc.pid
        self._write_pid(proc.pid)
        output_done = trio.Event()
        ready = False
        try:
            with _single_errors():
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, proc.stdout, output_done)
                    try:
                        await self._wait_ready(proc, output_done)
                        ready = True
                        log.info("janus started", pid=proc.pid, url=self.url, log=self.log_path)
                        task_status.started(self.url)
                        code = await proc.wait()
                        with trio.move_on_after(1):
                            await output_done.wait()
                        return f"exit code {code}" if code >= 0 else f"signal {-code}"
                    finally:
                        await self._stop(proc, ready)
                        self._forget_pid(proc.pid)
                        nursery.cancel_scope.cancel()
        finally:
            self.pid = None
            self._close_log()
            with trio.CancelScope(shield=True):
                await proc.stdout.aclose()

    async def _stop(self, proc: Child, ready: bool) -> None:
        """Stop it (shielded, bounded): SIGTERM once it has answered; before, SIGKILL at once
        (Janus 1.1.2 misses a SIGTERM that comes during its start-up, and then the stop
        would wait the whole STOP_TIMEOUT)."""
        how = await proc.stop(STOP_TIMEOUT, terminate=ready, again=TERM_AGAIN)
        self.stops[how] += 1
        self.last_exit = proc.returncode
        if how == "alive":
            log.warning("janus did not stop", pid=proc.pid, log=self.log_path)

    async def _wait_ready(self, proc, output_done: trio.Event) -> None:
        with trio.move_on_after(self.start_timeout):
            while True:
                if proc.poll() is not None:
                    with trio.move_on_after(1):
                        await output_done.wait()  # its last words
                    code = proc.returncode
                    how = f"with code {code}" if code >= 0 else f"on signal {-code}"
                    raise _StartFailed("calls.janus_binary", self.binary, f"Janus exited {how} as it started"
                                       f" ({self._last_error() or 'no output'}); see {self.log_path}")
                try:
                    info = await janus_info(self.url, timeout=1.0)
                except JanusError:
                    await trio.sleep(0.05)
                    continue
                plugins = info.get("plugins")
                if not isinstance(plugins, dict) or VIDEOROOM not in plugins:
                    raise _StartFailed("calls.janus_binary", self.binary, f"Janus started without its VideoRoom"
                                       f" plugin; see {self.log_path}")
                return
        raise _StartFailed("calls.janus_binary", self.binary, f"Janus did not answer on {self.url} within"
                           f" {self.start_timeout:g} s; see {self.log_path}")

    # -- its output --

    def _open_log(self) -> None:
        self._rotate_log()
        self._log_file = open(self.log_path, "ab", buffering=0)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _rotate_log(self) -> None:
        try:
            if os.path.getsize(self.log_path) > 0:
                os.replace(self.log_path, self.log_path + ".1")
        except OSError:
            pass

    async def _pump(self, stream, done: trio.Event) -> None:
        """Janus's output into janus.log (rotated at LOG_MAX_BYTES) and the tail kept here."""
        partial = b""
        written = 0
        try:
            while True:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                if self._log_file is not None:
                    if written + len(chunk) > LOG_MAX_BYTES:
                        self._close_log()
                        self._open_log()
                        written = 0
                    try:
                        self._log_file.write(chunk)
                        written += len(chunk)
                    except OSError:  # a full disk: Janus goes on, its output is lost
                        pass
                lines = (partial + chunk).split(b"\n")
                partial = lines.pop()[-4096:]
                self._tail.extend(line.decode("utf-8", "replace").strip() for line in lines[-LOG_TAIL_LINES:])
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        finally:
            if partial:
                self._tail.append(partial.decode("utf-8", "replace").strip())
            done.set()

    def _last_error(self) -> str:
        """The last FATAL or ERR line of Janus's output, without its timestamp; else ''."""
        for line in reversed(self._tail):
            if "[FATAL]" in line or "[ERR]" in line:
                return line[line.find("[", 1):] if line.startswith("[") else line
        return ""


def _spawn(argv: list[str]) -> Child:
    """Start Janus so that it dies with us (:func:`worldserver.children.spawn`): its output
    into a pipe, its own session (a Ctrl-C at our terminal is ours to pass on)."""
    return spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                 start_new_session=True)


def _find_lib(executable: str) -> str | None:
    """Janus's library folder beside its program: <prefix>/lib/<triplet>/janus (Debian),
    <prefix>/lib/janus or <prefix>/lib64/janus."""
    prefix = os.path.dirname(os.path.dirname(os.path.realpath(executable)))
    candidates = sorted(glob.glob(os.path.join(prefix, "lib", "*", "janus")))
    candidates += [os.path.join(prefix, "lib", "janus"), os.path.join(prefix, "lib64", "janus")]
    return next((c for c in candidates if _has_parts(c)), None)


def _has_parts(lib: str) -> bool:
    return (os.path.isfile(os.path.join(lib, "plugins", PLUGIN_FILE))
            and os.path.isfile(os.path.join(lib, "transports", TRANSPORT_FILE)))


def _connect_host(host: str) -> str:
    """Where we reach a Janus listening on ``host``."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.is_unspecified:
        return "127.0.0.1" if address.version == 4 else "[::1]"
    return f"[{address}]" if address.version == 6 else str(address)


def _q(text: str) -> str:
    """A jcfg (libconfig) string."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)


# -- the backend --------------------------------------------------------------------------------


@attrs.define(eq=False)
class _Room:
    group: str
    secret: str
    tokens: dict[str, str] = attrs.Factory(dict)  # token -> display, of the tickets still valid
    closing: bool = False  # close_room could not reach Janus: destroyed when it is back


class JanusBackend:
    """:class:`~worldserver.calls.sfu.SfuBackend` on a Janus VideoRoom at ``url``.

    ``await nursery.start(backend.run)`` connects (StartupError naming ``setting`` when it
    cannot, or Janus refuses the ``admin_key``), then keeps the connection. ``public_url``
    goes into every ticket (see :func:`public_url`). ``admin_key`` "" sends none."""

    def __init__(self, url: str, public_url: str, *, admin_key: str = "", setting: str = "calls.janus_url",
                 request_timeout: float = 5.0, keepalive: float = 25.0, reconnect_delay: float = 1.0,
                 max_reconnect_delay: float = 30.0, repair_delay: float = 1.0, publishers: int = ROOM_PUBLISHERS,
                 bitrate: int = ROOM_BITRATE, stats=None) -> None:
        self.url = url
        self.public_url = public_url
        self.admin_key = admin_key
        self.setting = setting
        self.request_timeout = request_timeout
        self.keepalive = keepalive
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.publishers = publishers
        self.bitrate = bitrate
        self.stats = stats
        self.repair_delay = repair_delay
        self.connects = 0  # connections made (1 + reconnections)
        self.rooms_restored = 0  # rooms made again on a Janus that had lost them
        self.repairs = 0  # rooms put right after a revoke that had failed
        self._rooms: dict[int, _Room] = {}
        self._repairing: set[int] = set()
        self._client: JanusClient | None = None
        self._handle = 0
        self._up = trio.Event()
        self._nursery: trio.Nursery | None = None

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.gone is None

    async def wait_connected(self) -> None:
        """Until the backend has a connection (at once if it has)."""
        while not self.connected:
            await self._up.wait()
            if not self.connected:
                await trio.sleep(0)

    @property
    def rooms(self) -> list[int]:
        """The rooms this backend has open."""
        return [room for room, state in self._rooms.items() if not state.closing]

    # -- SfuBackend --

    async def open_room(self, group: str) -> int:
        for _ in range(3):  # a number another user of this Janus has: draw again
            room = secrets.randbelow(MAX_ROOM_NUMBER) + 1
            state = _Room(group, secrets.token_urlsafe(24))
            self._rooms[room] = state
            try:
                await self._create(room, state)
            except _Refused as exc:
                self._rooms.pop(room, None)
                if exc.code == ROOM_EXISTS:
                    continue
                raise SfuError("refused", f"Janus refused to create a room: {exc}") from None
            except BaseException:  # unreachable, timed out or cancelled: it may exist now
                self._rooms.pop(room, None)
                self._later(self._destroy_quietly, room, state.secret)
                raise
            return room
        raise SfuError("refused", "Janus had every room number drawn")

    async def admit(self, room: int, display: str) -> SfuTicket:
        state = self._rooms.get(room)
        if state is None or state.closing:
            raise SfuError("no_room", f"no open room {room}")
        token = secrets.token_urlsafe(24)
        state.tokens[token] = display  # before asking: a restore brings it along
        try:
            await self._ask({"request": "allowed", "secret": state.secret, "action": "add", "room": room,
                             "allowed": [token]})
        except _Refused as exc:
            state.tokens.pop(token, None)
            if exc.code == NO_SUCH_ROOM:
                raise SfuError("no_room", f"Janus has no room {room}") from None
            raise SfuError("refused", f"Janus refused the token: {exc}") from None
        except BaseException:
            state.tokens.pop(token, None)
            self._later(self._remove_token_quietly, room, state.secret, token)
            raise
        return SfuTicket(url=self.public_url, room=room, token=token, display=display)

    async def revoke(self, room: int, ticket: SfuTicket) -> None:
        state = self._rooms.get(room)
        if state is None or state.closing:
            return  # closed already: everyone is out
        state.tokens.pop(ticket.token, None)
        try:
            await self._sync_room(room, state, withdraw=ticket.token)
        except SfuError:
            self._repair_later(room)  # until Janus has it right, or the room is closed
            raise

    async def _sync_room(self, room: int, state: _Room, withdraw: str = "") -> None:
        """Make Janus's room match ``state``: no token allowed but its tickets' (``withdraw``
        first), no participant shown under a display that none of its tickets has."""
        secret = state.secret
        try:
            data = await self._ask({"request": "allowed", "secret": secret, "action": "remove" if withdraw else "add",
                                    "room": room, "allowed": [withdraw] if withdraw else []})
            allowed = data.get("allowed")  # the whole list, after the change
            extra = [t for t in allowed if isinstance(t, str) and t not in state.tokens] if isinstance(allowed, list) else []
            if extra:
                await self._ask({"request": "allowed", "secret": secret, "action": "remove", "room": room,
                                 "allowed": extra})
            data = await self._ask({"request": "listparticipants", "room": room})
        except _Refused as exc:
            if exc.code == NO_SUCH_ROOM:
                return  # gone: nobody is in it
            raise SfuError("refused", f"Janus refused to update room {room}: {exc}") from None
        admitted = set(state.tokens.values())
        participants = data.get("participants")
        for participant in participants if isinstance(participants, list) else ():
            if not isinstance(participant, dict) or not isinstance(participant.get("id"), int):
                continue
            if participant.get("display") in admitted:
                continue  # a member still admitted (the revoked one's display, if another ticket has it)
            try:
                await self._ask({"request": "kick", "secret": secret, "room": room, "id": participant["id"]})
            except _Refused as exc:
                if exc.code == NO_SUCH_ROOM:
                    return
                if exc.code != NO_SUCH_USER:  # NO_SUCH_USER: it left meanwhile
                    raise SfuError("refused", f"Janus refused the kick: {exc}") from None

    def _repair_later(self, room: int) -> None:
        if room not in self._repairing and self._nursery is not None:
            self._repairing.add(room)
            self._nursery.start_soon(self._repair, room)

    async def _repair(self, room: int) -> None:
        """A revoke that failed: try again, with a back-off, until it is done or the room closed."""
        delay = self.repair_delay
        try:
            while True:
                await trio.sleep(delay)
                state = self._rooms.get(room)
                if state is None or state.closing:
                    return
                try:
                    await self._sync_room(room, state)
                except SfuError:
                    delay = min(delay * 2, self.max_reconnect_delay)
                else:
                    self.repairs += 1
                    return
        finally:
            self._repairing.discard(room)

    async def close_room(self, room: int) -> None:
        state = self._rooms.get(room)
        if state is None:
            return
        state.closing = True
        state.tokens.clear()
        try:
            await self._ask({"request": "destroy", "secret": state.secret, "room": room})
        except _Refused as exc:
            if exc.code != NO_SUCH_ROOM:
                raise SfuError("refused", f"Janus refused to destroy room {room}: {exc}") from None
        self._rooms.pop(room, None)  # on SfuError it stays, closing: destroyed when Janus is back

    # -- talking to Janus --

    async def _ask(self, body: dict) -> dict:
        """A VideoRoom request on our handle; SfuError when Janus cannot be asked, _Refused
        when it said no."""
        client = self._client
        if client is None or client.gone is not None:
            raise SfuError("unreachable", f"no connection to Janus at {self.url}")
        try:
            return await client.message(self._handle, body)
        except JanusTimeout as exc:
            raise SfuError("timeout", str(exc)) from None
        except JanusGone as exc:
            raise SfuError("unreachable", str(exc)) from None
        except JanusError as exc:
            raise _Refused(exc.reason, exc.code) from None

    async def _create(self, room: int, state: _Room) -> None:
        body = {
            "request": "create", "room": room, "permanent": False, "description": f"worldserver {state.group}"[:120],
            "secret": state.secret, "is_private": True, "allowed": sorted(state.tokens),
            "publishers": self.publishers, "bitrate": self.bitrate, "bitrate_cap": True,
            "fir_freq": ROOM_FIR_FREQ, "audiocodec": "opus", "videocodec": "vp8", "require_pvtid": True,
            "record": False, "lock_record": True, "notify_joining": False,
        }
        if self.admin_key:
            body["admin_key"] = self.admin_key
        await self._ask(body)

    def _later(self, job, *args) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(job, *args)

    async def _destroy_quietly(self, room: int, secret: str) -> None:
        with trio.move_on_after(self.request_timeout):
            try:
                await self._ask({"request": "destroy", "secret": secret, "room": room})
            except (SfuError, _Refused):
                pass

    async def _remove_token_quietly(self, room: int, secret: str, token: str) -> None:
        with trio.move_on_after(self.request_timeout):
            try:
                await self._ask({"request": "allowed", "secret": secret, "action": "remove", "room": room,
                                 "allowed": [token]})
            except (SfuError, _Refused):
                pass

    # -- the connection --

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            with _single_errors():
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    await self._keep_connected(task_status)
        finally:
            self._nursery = None
            self._client = None
            with trio.CancelScope(shield=True):
                await self._destroy_all()

    async def _keep_connected(self, task_status) -> None:
        delay = self.reconnect_delay
        first = True
        while True:
            try:
                async with open_janus(self.url, request_timeout=self.request_timeout, keepalive=self.keepalive,
                                      connect_timeout=self.request_timeout, stats=self.stats) as client:
                    handle = await client.attach(VIDEOROOM)
                    self._client, self._handle = client, handle
                    if first:
                        await self._check()
                    else:
                        await self._restore()
                    self.connects += 1
                    self._up.set()
                    if first:
                        log.info("janus connected", url=self.url)
                        task_status.started()
                        first = False
                    else:
                        log.info("janus reconnected", url=self.url, rooms=len(self._rooms))
                    delay = self.reconnect_delay
                    await client.lost.wait()
                    reason = client.gone
            except (JanusError, SfuError, _Refused) as exc:
                if first:
                    raise self._startup_error(exc) from None
                reason = str(exc)
            finally:
                self._client = None
                if self._up.is_set():
                    self._up = trio.Event()
            log.warning("janus unreachable", url=self.url, reason=reason, retry_in=delay)
            await trio.sleep(delay)
            delay = min(max(delay, 0.05) * 2, self.max_reconnect_delay)

    async def _check(self) -> None:
        """At start: Janus has the VideoRoom plugin and takes our admin_key (a room made and
        destroyed)."""
        info = await self._client.info()
        plugins = info.get("plugins")
        if not isinstance(plugins, dict) or VIDEOROOM not in plugins:
            raise StartupError(self.setting, self.url, f"that Janus has no VideoRoom plugin ({VIDEOROOM});"
                               " enable it there, or set calls.janus_url = \"\" to start our own Janus")
        room = secrets.randbelow(MAX_ROOM_NUMBER) + 1
        state = _Room("probe", secrets.token_urlsafe(24))
        try:
            await self._create(room, state)
        except _Refused as exc:
            if exc.code == UNAUTHORIZED:
                raise StartupError("calls.janus_admin_key", "(hidden)" if self.admin_key else "",
                                   f"the Janus at {self.url} refused it for creating rooms ({exc.reason}); set the"
                                   " admin_key of that Janus's janus.plugin.videoroom.jcfg") from None
            raise
        await self._destroy_quietly(room, state.secret)

    async def _restore(self) -> None:
        """After a reconnection: finish closings, put right the rooms Janus kept (revokes made
        meanwhile), and make again the rooms Janus lost."""
        for room, state in list(self._rooms.items()):
            if state.closing:
                await self._destroy_quietly(room, state.secret)
                self._rooms.pop(room, None)
                continue
            data = await self._ask({"request": "exists", "room": room})
            if data.get("exists") is True:
                await self._sync_room(room, state)
                continue
            await self._create(room, state)
            self.rooms_restored += 1
            log.info("janus room made again", room=room, group=state.group, tokens=len(state.tokens))

    async def _destroy_all(self) -> None:
        """On stop: destroy our rooms over a fresh connection (ours is being cancelled)."""
        rooms, self._rooms = self._rooms, {}
        if not rooms:
            return
        with trio.move_on_after(2):
            try:
                async with open_janus(self.url, request_timeout=1, connect_timeout=1) as client:
                    handle = await client.attach(VIDEOROOM)
                    for room, state in rooms.items():
                        try:
                            await client.message(handle, {"request": "destroy", "secret": state.secret, "room": room})
                        except JanusError:
                            pass
            except JanusError:
                pass  # gone with its rooms (our own Janus, stopping too)

    def _startup_error(self, exc: Exception) -> StartupError:
        if isinstance(exc, (JanusGone, JanusTimeout)):
            return StartupError(self.setting, self.url, f"no Janus answers there ({exc}); start it, correct the"
                                " URL, or set calls.janus_url = \"\" to let this server start its own")
        return StartupError(self.setting, self.url, f"the Janus there refused what calls need ({exc}); see its"
                            " log, or set calls.janus_url = \"\" to let this server start its own")


class _Refused(Exception):
    """Janus answered a backend request with an error (``code`` from the VideoRoom plugin)."""

    def __init__(self, reason: str, code: int) -> None:
        super().__init__(f"{reason} ({code})")
        self.reason = reason
        self.code = code


# -- the server's SFU ---------------------------------------------------------------------------


def public_url(calls) -> str:
    """The Janus URL tickets carry: ``calls.janus_public_url``; else ``calls.janus_url`` (an
    existing Janus); else our own Janus's: ``ws://<calls.janus_host>:<calls.janus_port>`` when
    it listens on one address (loopback by default: the browsers of this machine), and
    ``":<calls.janus_port>"`` when it listens on all (0.0.0.0 or ::), which the page completes
    as ``ws://<the host it was loaded from>:<port>`` (docs/calls.md)."""
    if calls.janus_public_url:
        return calls.janus_public_url
    if calls.janus_url:
        return calls.janus_url
    try:
        if ipaddress.ip_address(calls.janus_host).is_unspecified:
            return f":{calls.janus_port}"
    except ValueError:
        pass  # not an address: JanusProcess refuses it
    return f"ws://{_connect_host(calls.janus_host)}:{calls.janus_port}"


def _check_ws_url(setting: str, value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise StartupError(setting, value, "not a WebSocket URL; write it as ws://host:port or wss://host/path")


async def serve_sfu(config, stats=None, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """:func:`open_sfu` as a task: ``backend = await nursery.start(serve_sfu, config, stats)``
    (None when ``calls.sfu = "none"``); the SFU stops when the task is cancelled."""
    async with open_sfu(config, stats=stats) as backend:
        task_status.started(backend)
        await trio.sleep_forever()


@asynccontextmanager
async def open_sfu(config, *, stats=None) -> AsyncIterator[JanusBackend | None]:
    """The SFU ``config.calls.sfu`` asks for, running until the block ends: None for
    ``"none"``; for ``"janus"`` a connected :class:`JanusBackend`, on our own Janus
    (``<server.data_dir>/janus``) when ``calls.janus_url`` is empty. StartupError (one line
    naming the setting) when it cannot start."""
    calls = config.calls
    if calls.sfu != "janus":
        yield None
        return
    if calls.janus_url:
        _check_ws_url("calls.janus_url", calls.janus_url)
    if calls.janus_public_url:
        _check_ws_url("calls.janus_public_url", calls.janus_public_url)
    with _single_errors():
        async with trio.open_nursery() as nursery:
            if calls.janus_url:
                url, setting, admin_key = calls.janus_url, "calls.janus_url", calls.janus_admin_key
            else:
                admin_key = calls.janus_admin_key or secrets.token_urlsafe(24)
                process = JanusProcess(os.path.join(config.server.data_dir, "janus"), admin_key=admin_key,
                                       binary=calls.janus_binary, host=calls.janus_host, port=calls.janus_port)
                url = await nursery.start(process.run)
                setting = "calls.janus_binary"
            backend = JanusBackend(url, public_url(calls), admin_key=admin_key, setting=setting, stats=stats)
            await nursery.start(backend.run)
            try:
                yield backend
            finally:
                nursery.cancel_scope.cancel()
