"""Start-up checks: the operator's mistakes about the machine, found before anything starts.

Job: :func:`preflight` checks what the configuration asks of the machine, before the server
opens anything: that the UDP and HTTP ports are free (a trial bind, released at once; a port
of 0 is not checked), that the TLS certificate and key can be read and go together, that the
gallery's pictures folder (``http.images_dir``) is a folder the server can read (and write
its sample pictures into when it has none), that the data folder (``server.data_dir``), the
chat's pictures folder in it and the chat database's folder exist or can be made and can be
written, that the folder of the pictures hung in worlds' slots (``<server.data_dir>/pictures``,
worldserver/world_admin.py), when it exists, is a folder the server can write in, and that the
chat database is an SQLite file of a schema this server reads. Only then
does it make the data folder when it is missing and take an exclusive lock (``flock``) on the
chat database, which the returned :class:`StartupHold` keeps until the server stops: a second
server given the same database is refused instead of sharing it (SQLite would let both write).
Each failure is a :class:`StartupError` naming the setting, its value and what to change;
``worldserver run`` prints it as one line, ``error: <setting>: <value>: <what to do>``, and
exits with 2.

A port can still be taken between the trial bind and the real one. The transports turn that
bind error into the same StartupError with :func:`bind_error`; it then comes out of the
server's nursery, so :func:`startup_error_in` finds it in an exception group, and the parts
that had started are stopped as on any shutdown.

Must not: start anything, keep a socket, write anything but the data folder (made when
missing), a probe file it removes at once and the chat database file it locks (created empty
when missing, as SQLite would), or raise anything but :class:`StartupError` for a problem of
the machine. Bugs keep their tracebacks: only ``OSError`` and the checks here become
StartupErrors.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import sqlite3
import ssl

import trio

__all__ = ["StartupError", "StartupHold", "bind_error", "chat_db_path", "preflight", "startup_error_in"]


class StartupError(Exception):
    """A setting the machine cannot honour: ``setting``, its ``value``, and what to change."""

    def __init__(self, setting: str, value: object, message: str) -> None:
        super().__init__(setting, value, message)
        self.setting = setting
        self.value = value
        self.message = message

    def __str__(self) -> str:
        return f"{self.setting}: {_shown(self.value)}: {self.message}"


def _shown(value: object) -> str:
    text = str(value)
    return text if text else '""'


class StartupHold:
    """What a successful :func:`preflight` keeps until the server stops: the chat database's
    lock. ``release()`` (or leaving its ``with`` block) lets another server have it."""

    def __init__(self, lock_fd: int | None = None) -> None:
        self._lock_fd = lock_fd

    def release(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the file releases the flock

    def __enter__(self) -> StartupHold:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def startup_error_in(exc: BaseException) -> StartupError | None:
    """The StartupError that ``exc`` is, or that an exception group holds with nothing but
    StartupErrors and cancellations beside it; else None (a bug: keep its traceback)."""
    if isinstance(exc, StartupError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found = None
        for inner in exc.exceptions:
            error = startup_error_in(inner)
            if error is not None:
                found = found or error
            elif not isinstance(inner, trio.Cancelled):
                return None
        return found
    return None


# -- ports ---------------------------------------------------------------------------------------


def bind_error(section: str, host: str, port: int, exc: OSError) -> StartupError:
    """The StartupError for a failed bind of ``section`` (``"udp"`` or ``"http"``)."""
    kind = "UDP" if section == "udp" else "TCP"
    if isinstance(exc, socket.gaierror):
        return StartupError(f"{section}.host", host, f"neither an address nor a name that resolves ({exc.strerror});"
                            f" set {section}.host to one of this machine's addresses, or 0.0.0.0 for all")
    if exc.errno == errno.EADDRINUSE:
        return StartupError(f"{section}.port", port, f"{kind} port already in use on {host} (another worldserver"
                            f" running?); stop the program that holds it or set another {section}.port")
    if exc.errno == errno.EACCES:
        return StartupError(f"{section}.port", port, f"not allowed to bind this {kind} port (ports below 1024 need"
                            f" privileges); set {section}.port to 1024 or above")
    if exc.errno == errno.EADDRNOTAVAIL:
        return StartupError(f"{section}.host", host, f"not an address of this machine; set {section}.host to one"
                            " of its addresses, or 0.0.0.0 for all")
    return StartupError(f"{section}.port", port, f"cannot bind {kind} {host}:{port} ({exc.strerror or exc});"
                        f" check {section}.host and {section}.port")


def _try_bind(section: str, host: str, port: int, kind: int) -> None:
    if port == 0:  # any free port: nothing to check
        return
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind)
    except OSError as exc:
        raise bind_error(section, host, port, exc) from None
    try:
        if kind == socket.SOCK_STREAM:  # as hypercorn binds: a port in TIME_WAIT is free
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        raise bind_error(section, host, port, exc) from None
    finally:
        sock.close()


# -- TLS -----------------------------------------------------------------------------------------


def _no_password() -> bytes:
    return b""  # an encrypted key fails to load instead of prompting on the terminal


def _check_tls(certfile: str, keyfile: str) -> None:
    if not certfile and not keyfile:
        return
    if not keyfile:
        raise StartupError("http.keyfile", keyfile, "must be set together with http.certfile;"
                           " set it to the certificate's PEM private key, or set both to \"\" for plain HTTP")
    if not certfile:
        raise StartupError("http.certfile", certfile, "must be set together with http.keyfile;"
                           " set it to the PEM certificate, or set both to \"\" for plain HTTP")
    for setting, path in (("http.certfile", certfile), ("http.keyfile", keyfile)):
        try:
            with open(path, "rb") as file:
                file.read(1)
        except FileNotFoundError:
            raise StartupError(setting, path, "no such file; set the path of the PEM file,"
                               " or set http.certfile and http.keyfile to \"\" for plain HTTP") from None
        except OSError as exc:
            raise StartupError(setting, path, f"cannot be read ({exc.strerror or exc}); let the server's user"
                               " read it, or set another path") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=certfile)  # parses the certificates alone
    except ssl.SSLError as exc:
        raise StartupError("http.certfile", certfile, f"not a PEM certificate ({exc.reason or exc});"
                           " set the path of the server's PEM certificate") from None
    try:
        context.load_cert_chain(certfile, keyfile, password=_no_password)
    except ssl.SSLError as exc:
        raise StartupError("http.keyfile", keyfile, f"not an unencrypted PEM private key of http.certfile"
                           f" ({exc.reason or exc}); set the key that goes with the certificate") from None


# -- folders ---------------------------------------------------------------------------------------


def _nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _check_creatable(setting: str, value: str, folder: str) -> None:
    """``folder`` is missing: its nearest existing ancestor must be a folder we may write in."""
    ancestor = _nearest_existing(folder)
    if not os.path.isdir(ancestor):
        raise StartupError(setting, value, f"cannot be made: {ancestor} is a file, not a folder;"
                           f" set {setting} to a folder the server may write")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise StartupError(setting, value, f"cannot be made: no permission to write in {ancestor};"
                           f" make it yourself for the server's user, or set another {setting}")


def _check_writable_folder(setting: str, value: str, folder: str, what: str = "") -> None:
    """``folder`` must be a folder the server can write in, or a missing one it can make.
    ``what``: what the folder (one in the setting's) holds, said in the error."""
    if not os.path.exists(folder):
        _check_creatable(setting, value, folder)
        return
    itself = folder == value  # else a folder in it (the chat's pictures, the hung pictures)
    named = f"{folder} ({what})" if what else folder
    if not os.path.isdir(folder):
        if what:
            raise StartupError(setting, value, f"{named} is a file, not a folder; move it away, or set another {setting}")
        where = "a file" if itself else f"{folder} is a file"
        raise StartupError(setting, value, f"{where}, not a folder; set {setting} to a folder the server may write")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StartupError(setting, value, f"no permission to write in {'it' if itself else named};"
                           f" give the server's user write access, or set another {setting}")


def _probe_write(setting: str, value: str, folder: str) -> None:
    """Make ``folder`` when missing and write (and remove) a file in it: the real test."""
    probe = os.path.join(folder, f".write-test-{os.getpid()}")
    try:
        os.makedirs(folder, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise StartupError(setting, value, f"cannot write in {folder} ({exc.strerror or exc});"
                           f" give the server's user write access, or set another {setting}") from None


def _check_images_dir(folder: str) -> None:
    from worldserver.sample_images import has_images

    setting = "http.images_dir"
    if not os.path.exists(folder):
        _check_creatable(setting, folder, folder)  # the sample pictures go there
        return
    if not os.path.isdir(folder):
        raise StartupError(setting, folder, "a file, not a folder; set http.images_dir to the folder"
                           " of the gallery's pictures")
    try:
        os.listdir(folder)
    except OSError as exc:
        raise StartupError(setting, folder, f"cannot be read ({exc.strerror or exc}); let the server's user"
                           " read it, or set another http.images_dir") from None
    if not has_images(folder) and not os.access(folder, os.W_OK | os.X_OK):
        raise StartupError(setting, folder, "has no pictures and the server may not write its sample pictures"
                           " into it; put pictures there or give the server's user write access")


# -- the chat database -------------------------------------------------------------------------


def chat_db_path(config) -> str:
    """The chat database file: ``chat.db_path``, or ``chat.sqlite3`` in ``server.data_dir``."""
    return config.chat.db_path or os.path.join(config.server.data_dir, "chat.sqlite3")


def _db_setting(config) -> tuple[str, str]:
    """The setting that chose the chat database, and its value."""
    if config.chat.db_path:
        return "chat.db_path", config.chat.db_path
    return "server.data_dir", config.server.data_dir


def _check_db_file(config, path: str) -> None:
    setting, value = _db_setting(config)
    if not os.path.exists(path):
        return
    if not os.path.isfile(path):
        raise StartupError(setting, value, f"the chat database {path} is not a file; move it away, or set"
                           " another chat.db_path")
    if not os.access(path, os.R_OK | os.W_OK):
        raise StartupError(setting, value, f"no permission to read and write the chat database {path};"
                           " give the server's user access to it, or set another chat.db_path")


def _lock_db(config, path: str) -> int:
    setting, value = _db_setting(config)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StartupError(setting, value, f"cannot open the chat database {path} ({exc.strerror or exc});"
                           f" give the server's user access to it, or set another {setting}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise StartupError(setting, value, f"cannot lock the chat database {path} ({exc.strerror or exc});"
                               f" put it on a local disk, or set another {setting}") from None
        raise StartupError(setting, value, f"another worldserver is using the chat database {path}; stop that"
                           f" server, or give this one its own {setting}") from None
    return fd


def _check_db_schema(config, path: str) -> None:
    from worldserver.chat.sqlite_store import SCHEMA_VERSION

    setting, value = _db_setting(config)
    try:
        db = sqlite3.connect(path)  # reads only (the file is ours: locked above)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise StartupError(setting, value, f"the chat database {path} cannot be read as an SQLite database ({exc});"
                           f" move it away, or set another {setting}") from None
    if version > SCHEMA_VERSION:
        raise StartupError(setting, value, f"the chat database {path} has schema {version}, newer than this"
                           f" server's ({SCHEMA_VERSION}); run a newer worldserver, or set another {setting}")


# -- all of it -----------------------------------------------------------------------------------


def preflight(config) -> StartupHold:
    """Check everything above in order; the first problem raises :class:`StartupError`
    and leaves nothing behind. On success the data folder exists and the returned hold
    keeps the chat database locked until released."""
    from worldserver.http_static import pictures_dir

    _try_bind("udp", config.udp.host, config.udp.port, socket.SOCK_DGRAM)
    _try_bind("http", config.http.host, config.http.port, socket.SOCK_STREAM)
    _check_tls(config.http.certfile, config.http.keyfile)
    _check_images_dir(config.http.images_dir)
    data_dir = config.server.data_dir
    _check_writable_folder("server.data_dir", data_dir, data_dir)
    chat_images = os.path.join(data_dir, "chat-images")
    if os.path.exists(chat_images):
        _check_writable_folder("server.data_dir", data_dir, chat_images)
    pictures = pictures_dir(data_dir)  # made at the first hang (or move of old ones)
    if os.path.exists(pictures):
        _check_writable_folder("server.data_dir", data_dir, pictures, "the pictures hung in worlds' slots")
    db = chat_db_path(config)
    db_setting, db_value = _db_setting(config)
    db_folder = os.path.dirname(os.path.abspath(db))
    if db_setting == "chat.db_path":
        _check_writable_folder(db_setting, db_value, db_folder)
    _check_db_file(config, db)
    # Nothing failed: make the folders and take the database.
    _probe_write("server.data_dir", data_dir, data_dir)
    if db_setting == "chat.db_path":
        _probe_write(db_setting, db_value, db_folder)
    fd = _lock_db(config, db)
    try:
        _check_db_schema(config, db)
    except BaseException:
        os.close(fd)
        raise
    return StartupHold(fd)
