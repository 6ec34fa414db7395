"""The tools' one runner of a server under test: ``worldserver run`` (or another program that
logs one JSON object per line) as a subprocess on loopback, its log read without blocking.

Job: :class:`LoggedProcess` starts a command in a scratch working directory of its own (no
stray ``worldserver.toml`` is read there, no ``WORLDSERVER_*`` variable is passed on, this
checkout is on ``PYTHONPATH``) with its stderr going to a log file, so that the process never
blocks on a full pipe however long nobody reads it. :meth:`~LoggedProcess.read` takes the
complete lines written since the last call: JSON objects into ``lines``, anything else into
``other_lines``; the ``listening`` and ``http listening`` lines give ``address`` (UDP) and
``http`` (the base URL on 127.0.0.1). :meth:`~LoggedProcess.wait_listening` and
:meth:`~LoggedProcess.wait_http` wait for them, within a deadline; a process that does not
come up is a :class:`ServerStartError` whose one line ends with what the process itself said.
:meth:`~LoggedProcess.stop` sends SIGTERM, then SIGKILL after a bounded wait, and removes the
scratch directory. :class:`ServerProcess` is ``python -m worldserver run`` on 127.0.0.1 with
free UDP and HTTP ports and JSON logs, plus the caller's settings (by default the benchmarks'
own, :data:`BENCH_SETS`).

Used by the benchmarks (tools/bench), the soak (tools/soak.py) and the attack probes
(tools/attack); measuring the server (CPU, stats lines) is theirs (tools/bench/server_load.py).

Must not: start a server on anything but loopback, leave a process behind, wait without a
bound, or reach into the server other than through its command line and its log.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable

__all__ = [
    "BENCH_SETS", "HOST", "LoggedProcess", "START_TIMEOUT", "STOP_TIMEOUT", "ServerProcess",
    "ServerStartError", "checkout_env", "worldserver_command",
]  # fmt: skip

ROOT = pathlib.Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
START_TIMEOUT = 20.0  # seconds for a server to say where it listens
STOP_TIMEOUT = 8.0  # seconds after SIGTERM (and again after SIGKILL)
POLL = 0.05  # seconds between two looks at the log while waiting
# The benchmarks' server: a stats line a second, and the open square of sim.half_extent
# (220 x 220 m: "the default world"), whatever the server's default world; a later setting
# may name another.
BENCH_SETS = ("server.stats_interval=1", "worlds.hosted=open")


class ServerStartError(RuntimeError):
    """The server did not start; the message ends with what it said about it."""


def checkout_env() -> dict[str, str]:
    """This process's environment for a child that runs from this checkout: the repository
    and the Python client first on ``PYTHONPATH``, no ``WORLDSERVER_*`` setting."""
    env = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "clients" / "python")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return {k: v for k, v in env.items() if not k.startswith("WORLDSERVER_")}


def worldserver_command(sets: Iterable[str] = (), prefix: Iterable[str] = ()) -> list[str]:
    """``python -m worldserver run`` on 127.0.0.1, UDP and HTTP on free ports, JSON logs at
    INFO, then ``--set`` each of ``sets`` (a later one wins); ``prefix`` goes first (e.g.
    ``taskset -c 0``)."""
    cmd = [
        *prefix, sys.executable, "-m", "worldserver", "run",
        "--host", HOST, "--udp-port", "0", "--log-level", "INFO",
        # The HTTP port too: loopback and a free port (two runs at once must not collide).
        "--set", f"http.host={HOST}", "--set", "http.port=0", "--set", "server.log_format=json",
    ]  # fmt: skip
    for item in sets:
        cmd += ["--set", item]
    return cmd


def _port(text: str) -> int | None:
    """The port of ``host:port``, or None when there is none."""
    port = text.rpartition(":")[2]
    return int(port) if port.isdigit() else None


class LoggedProcess:
    """A subprocess that logs one JSON object per line on stderr, into a file read without
    blocking.

    ``name`` is how errors call it ("the server"); ``log_path``: a log file of the caller's to
    append to (read from its end at the start; e.g. one log across a restart), else one in the
    scratch directory; ``scratch``: the scratch directory's name prefix."""

    def __init__(self, cmd: list[str], *, name: str = "the server", log_path: str | os.PathLike | None = None,
                 stop_timeout: float = STOP_TIMEOUT, scratch: str = "worldtools_") -> None:
        self.name = name
        self.stop_timeout = stop_timeout
        self.workdir = tempfile.TemporaryDirectory(prefix=scratch)
        self.log_path = pathlib.Path(log_path) if log_path is not None else pathlib.Path(self.workdir.name) / "stderr.log"
        self.lines: list[dict] = []
        self.other_lines: list[str] = []
        self.address: tuple[str, int] | None = None  # UDP, from the "listening" line
        self.http: str | None = None  # the HTTP base URL, from the "http listening" line
        self._buf = b""
        try:
            with open(self.log_path, "ab") as sink:  # the child keeps its own descriptor
                self._log = open(self.log_path, "rb")
                self._log.seek(os.fstat(sink.fileno()).st_size)
                self.proc = subprocess.Popen(
                    cmd, cwd=self.workdir.name, env=checkout_env(), stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=sink,
                )  # fmt: skip
        except BaseException:
            if getattr(self, "_log", None) is not None:
                self._log.close()
            self.workdir.cleanup()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read(self) -> None:
        """Take whatever the process has written since the last call (complete lines)."""
        if self._log.closed:
            return
        chunk = self._log.read()
        if not chunk:
            return
        *complete, self._buf = (self._buf + chunk).split(b"\n")
        for raw in complete:
            self._take(raw)

    def _take(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            return
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            self.other_lines.append(text)
            return
        self.lines.append(obj)
        msg = obj.get("msg")
        if msg == "listening" and self.address is None:
            udp = str(obj.get("udp", ""))
            port = _port(udp)
            if port is not None:
                self.address = (udp.rpartition(":")[0] or HOST, port)
        elif msg == "http listening" and self.http is None:
            port = _port(str(obj.get("http", "")))
            if port is not None:
                self.http = f"http://{HOST}:{port}"

    def stats_lines(self) -> list[dict]:
        return [line for line in self.lines if line.get("msg") == "stats"]

    def wait_for(self, ready: Callable[[], bool], timeout: float) -> None:
        """Read the log until ``ready()``; else raises :class:`ServerStartError` with what
        the process said (it exited, or ``timeout`` seconds passed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.read()
            if ready():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(POLL)
        self.read()
        code = self.proc.poll()
        said = self.server_error() or "it said nothing on stderr"
        if code is None:
            raise ServerStartError(f"{self.name} did not listen within {timeout:g} s: {said}")
        raise ServerStartError(f"{self.name} did not start (exit code {code}): {said}")

    def wait_listening(self, timeout: float = START_TIMEOUT) -> tuple[str, int]:
        """The UDP address once the process listens on UDP and HTTP (``http`` is set too)."""
        self.wait_for(lambda: self.address is not None and self.http is not None, timeout)
        return self.address

    def wait_http(self, timeout: float = START_TIMEOUT) -> str:
        """The HTTP base URL once the process listens on HTTP."""
        self.wait_for(lambda: self.http is not None, timeout)
        return self.http

    def server_error(self) -> str:
        """What the process said about its failure, on one line: its ``error: ...`` lines (an
        operator's mistake, worldserver/startup.py), else its ERROR and CRITICAL log records,
        else the last line it wrote that was not a log record (a traceback's last line)."""
        said = [line for line in self.other_lines if line.startswith("error:")]
        if not said:
            for record in self.lines:
                if str(record.get("level", "")).upper() in ("ERROR", "CRITICAL"):
                    words = [str(record.get("msg", ""))]
                    words += [f"{k}={v}" for k, v in record.items()
                              if k not in ("ts", "level", "logger", "msg", "exc")]
                    exc = str(record.get("exc", "")).strip().splitlines()
                    said.append(" ".join(words) + (f" ({exc[-1]})" if exc else ""))
        if not said and self.other_lines:
            said = self.other_lines[-1:]
        return " | ".join(said[-3:])

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after a bounded wait; never leaves the process behind. Takes
        the rest of the log (a last line without its newline too) and returns the exit code."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=self.stop_timeout)
            self.read()
            if self._buf:
                self._take(self._buf)
                self._buf = b""
            return self.proc.returncode
        finally:
            self._log.close()
            self.workdir.cleanup()


class ServerProcess(LoggedProcess):
    """``python -m worldserver run`` (:func:`worldserver_command`) with ``defaults`` (the
    benchmarks' :data:`BENCH_SETS` unless given), then ``extra_sets``; ``prefix`` goes before
    the command (``taskset``). Its data directory is ``./data`` of the scratch directory
    unless a setting names one."""

    def __init__(self, extra_sets: Iterable[str] = (), prefix: Iterable[str] | None = None, *,
                 defaults: Iterable[str] = BENCH_SETS, **kwargs) -> None:
        kwargs.setdefault("scratch", "worldserver_")
        super().__init__(worldserver_command([*defaults, *extra_sets], prefix or ()), **kwargs)
