"""Open HTTP connections capped per address and in all, with real sockets on loopback.

Issue 8's rule: an anonymous client must not deny service to others. hypercorn kept every TCP
connection it was offered until its read timeout (60 s), so one address could hold thousands
and run the server out of file descriptors. ``worldserver/http_guard.py`` now closes at once,
before reading anything, a connection over ``limits.http_connections_per_address`` (trusted
networks exempt) or over ``limits.http_connections`` (all addresses; by default derived from
the open-files limit), and trio's retried ``accept`` failures are counted and quiet.

On Linux all of 127.0.0.0/8 is loopback: clients bind 127.0.0.2 (the stranger) and 127.0.0.3
(someone else), and ``limits.trusted_networks`` is 127.0.0.1/32 (trusted clients bind that).
The last two tests run ``worldserver run`` as a process with a low ``ulimit -n``.

No wall-clock sleeps: every wait is for an answer, an end of file, a log line, or the server's
open-connection count (``http_guard.open_connections``), each under a deadline.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys

import h11
import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from worldserver.app import serve
from worldserver.config import load_config
from worldserver.http_guard import open_connections
from worldserver.limits import AddressLimits, http_connections_cap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRUSTED, STRANGER, OTHER = "127.0.0.1", "127.0.0.2", "127.0.0.3"
TIMEOUT = 10.0
PROCESS_TIMEOUT = 30.0  # a bound on waits for a server process, so a bug fails instead of hanging


def make_config(data_dir, **overrides):
    base = {"server.data_dir": str(data_dir), "udp.host": "127.0.0.1", "udp.port": "0",
            "http.host": "127.0.0.1", "http.port": "0", "server.stats_interval": "60",
            "gc.freeze_after_start": "false", "limits.trusted_networks": f"{TRUSTED}/32"}
    base.update({k.replace("__", "."): str(v) for k, v in overrides.items()})
    return load_config(path=None, env={}, overrides=base)


class Connection:
    """One raw TCP connection to the HTTP port from ``source``, speaking HTTP/1.1 through h11."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.http = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, source: str, port: int) -> Connection:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            await sock.bind((source, 0))
            await sock.connect(("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        return cls(trio.SocketStream(sock))

    async def get(self, path: str = "/health") -> int:
        """The status of a GET on this (kept-alive) connection."""
        await self.stream.send_all(self.http.send(h11.Request(method="GET", target=path, headers=[("Host", "x")]))
                                   + self.http.send(h11.EndOfMessage()))
        status = None
        while True:
            event = self.http.next_event()
            if event is h11.NEED_DATA:
                data = await self.stream.receive_some(65536)
                assert data, "the server closed the connection instead of answering"
                self.http.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage):
                self.http.start_next_cycle()
                return status

    async def closed_by_server(self) -> bool:
        """Whether the server ends this connection without a byte (the client sent nothing)."""
        try:
            return await self.stream.receive_some(65536) == b""
        except trio.BrokenResourceError:  # a reset is an end too
            return True

    async def aclose(self) -> None:
        await self.stream.aclose()


async def until(predicate) -> None:
    """Returns once ``predicate()`` holds (the server's side of a socket has no event to wait
    on here); the caller sets the deadline."""
    while not predicate():
        await trio.sleep(0.005)


async def open_admitted(source: str, port: int, stats, count: int) -> list[Connection]:
    """``count`` connections from ``source``, each admitted (counted open by the server) before
    the next is opened, so which ones are over a cap does not depend on the scheduler."""
    opened = []
    for _ in range(count):
        before = open_connections(stats)
        opened.append(await Connection.open(source, port))
        await until(lambda: open_connections(stats) == before + 1)
    return opened


def http_from(source: str, port: int) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=source)
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", transport=transport, timeout=TIMEOUT)


async def test_one_address_holds_at_most_its_cap_and_others_are_still_served(nursery, tmp_path) -> None:
    running = await nursery.start(serve, make_config(tmp_path, limits__http_connections_per_address=4))
    port, stats = running.http_port, running.stats
    with trio.fail_after(TIMEOUT):
        held = await open_admitted(STRANGER, port, stats, 4)
        over = await Connection.open(STRANGER, port)
        assert await over.closed_by_server()  # at once: nothing was sent, nothing read
        await over.aclose()
        assert stats.get("drop.http_address_connections") == 1
        assert open_connections(stats) == 4
        for connection in held:  # the four stayed open and are served
            assert await connection.get() == 200

        async with http_from(OTHER, port) as other:  # another address gets the page and the API
            assert (await other.get("/health")).status_code == 200
            assert (await other.get("/api/players")).status_code == 200
        await until(lambda: open_connections(stats) == 4)

        for connection in held[:2]:  # two places freed
            await connection.aclose()
        await until(lambda: open_connections(stats) == 2)
        held[:2] = await open_admitted(STRANGER, port, stats, 2)
        for connection in held:
            assert await connection.get() == 200
        over = await Connection.open(STRANGER, port)
        assert await over.closed_by_server()
        await over.aclose()
        assert stats.get("drop.http_address_connections") == 2

        trusted = await open_admitted(TRUSTED, port, stats, 6)  # a trusted address has no cap
        for connection in trusted:
            assert await connection.get() == 200
        assert stats.get("drop.http_address_connections") == 2
        for connection in held + trusted:
            await connection.aclose()
        await until(lambda: open_connections(stats) == 0)
    assert stats.get("drop.http_total_connections") == 0
    assert stats.get("drop.http_connection_error") == 0


async def test_the_total_cap_holds_for_every_address_trusted_ones_too(nursery, tmp_path) -> None:
    running = await nursery.start(serve, make_config(tmp_path, limits__http_connections=4))
    port, stats = running.http_port, running.stats
    with trio.fail_after(TIMEOUT):
        held = await open_admitted(TRUSTED, port, stats, 2) + await open_admitted(STRANGER, port, stats, 2)
        for source in (OTHER, TRUSTED):
            over = await Connection.open(source, port)
            assert await over.closed_by_server()
            await over.aclose()
        assert stats.get("drop.http_total_connections") == 2
        assert stats.get("drop.http_address_connections") == 0
        for connection in held:
            assert await connection.get() == 200
        await held.pop().aclose()
        await until(lambda: open_connections(stats) == 3)
        [newcomer] = await open_admitted(OTHER, port, stats, 1)
        assert await newcomer.get("/api/players") == 200
        for connection in held + [newcomer]:
            await connection.aclose()
        await until(lambda: open_connections(stats) == 0)


def limits_for(fd_limit: int | None, **overrides) -> AddressLimits:
    config = load_config(path=None, env={}, overrides={"limits.trusted_networks": "127.0.0.1/32",
                                                       **{f"limits.{k}": str(v) for k, v in overrides.items()}})
    return AddressLimits(config.limits, fd_limit=fd_limit)


def test_the_total_cap_is_derived_from_the_open_files_limit() -> None:
    assert http_connections_cap(0, 1024) == 768  # a quarter kept, at least 256
    assert http_connections_cap(0, 65536) == 49152
    assert http_connections_cap(0, 300) == 150  # never more than half kept
    assert http_connections_cap(0, 64) == 32
    assert http_connections_cap(0, None) == 0  # unlimited: no cap
    assert http_connections_cap(10, 1024) == 10  # a configured value wins
    assert http_connections_cap(5000, 1024) == 5000  # even above the limit (then trio's retries show)
    assert limits_for(2048).max_http_total == 1536
    assert limits_for(2048, http_connections=7).max_http_total == 7
    own = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert limits_for(None).max_http_total == http_connections_cap(0, None if own == resource.RLIM_INFINITY else own)


def test_http_counts_per_address_key_and_in_all() -> None:
    limits = limits_for(None, http_connections_per_address=2, http_connections=5)
    stranger, v6_a, v6_b = limits.key(STRANGER), limits.key("2001:db8::1"), limits.key("2001:db8::2")
    trusted = limits.key(TRUSTED)
    assert trusted is None and v6_a == v6_b  # an IPv6 /64 is one address
    assert [limits.http_connect(stranger) for _ in range(3)] == [None, None, limits.HTTP_ADDRESS]
    assert [limits.http_connect(v6_a), limits.http_connect(v6_b), limits.http_connect(v6_a)] == \
        [None, None, limits.HTTP_ADDRESS]
    assert limits.http_connect(trusted) is None  # 5 open: the total is reached, for everyone
    assert limits.http_connect(trusted) == limits.HTTP_TOTAL
    assert limits.http_connect(limits.key(OTHER)) == limits.HTTP_TOTAL
    limits.http_disconnect(trusted)
    limits.http_disconnect(stranger)
    assert limits.http_connect(stranger) is None and limits.http_connections.total == 4
    assert limits.http_connect(stranger) == limits.HTTP_ADDRESS
    for key in (stranger, stranger, v6_a, v6_b):
        limits.http_disconnect(key)
    assert limits.http_connections.total == 0 and len(limits.http_connections) == 0  # nothing kept
    with pytest.raises(KeyError):
        limits.http_disconnect(stranger)  # released twice: a bug, said loudly


# -- worldserver run with a low open-files limit ---------------------------------------------------

FD_LIMIT = 64  # the server holds about 20 files once it serves


class ServerProcess:
    """``worldserver run`` with ``ulimit -n`` at :data:`FD_LIMIT`, its JSON log read line by line."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.records: list[dict] = []
        self._buffer = b""

    @classmethod
    async def start(cls, data_dir, *settings: str) -> ServerProcess:
        def low_fd_limit() -> None:
            # soft and hard: the server raises its soft limit to the hard one at start
            resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))

        env = dict(os.environ, PYTHONPATH=ROOT)
        args = [sys.executable, "-m", "worldserver", "run", "--host", "127.0.0.1", "--udp-port", "0",
                "--set", "server.log_format=json", "--set", "http.host=127.0.0.1", "--set", "http.port=0",
                "--set", f"server.data_dir={data_dir}", "--set", "server.drain_grace=0"]
        for setting in settings:
            args += ["--set", setting]
        proc = await trio.lowlevel.open_process(args, cwd=ROOT, env=env, stderr=subprocess.PIPE,
                                                preexec_fn=low_fd_limit)
        server = cls(proc)
        listening = await server.wait_for(lambda r: r.get("msg") == "http listening")
        server.port = int(listening["http"].rsplit(":", 1)[1])
        return server

    async def wait_for(self, predicate) -> dict:
        """The next log record for which ``predicate`` holds (all are kept in ``records``)."""
        with trio.fail_after(PROCESS_TIMEOUT):
            while True:
                while b"\n" in self._buffer:
                    line, self._buffer = self._buffer.split(b"\n", 1)
                    record = self._parse(line)
                    if predicate(record):
                        return record
                data = await self.proc.stderr.receive_some(65536)
                assert data, f"the server ended first: {self.records[-5:]}"
                self._buffer += data

    def _parse(self, line: bytes) -> dict:
        text = line.decode(errors="replace")
        try:
            record = json.loads(text)
        except ValueError:
            record = {"level": "RAW", "msg": text}  # a traceback or stray print would land here
        self.records.append(record)
        return record

    async def metrics(self) -> dict[tuple[str, str], float]:
        """``GET /metrics`` as {(sample name, its one label's value): value}; tried again while
        the server still holds its cap of connections (a refused connection ends unanswered)."""
        with trio.fail_after(PROCESS_TIMEOUT):
            while True:
                try:
                    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
                        response = await client.get(f"http://127.0.0.1:{self.port}/metrics")
                    break
                except httpx.TransportError:
                    await trio.sleep(0.01)
        assert response.status_code == 200
        return {(s.name, next(iter(s.labels.values()), "")): s.value
                for family in text_string_to_metric_families(response.text) for s in family.samples}

    async def stop(self) -> None:
        """SIGTERM, then read the log to its end (the process exits 0)."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        with trio.fail_after(PROCESS_TIMEOUT):
            while data := await self.proc.stderr.receive_some(65536):
                self._buffer += data
            if self._buffer:
                for line in self._buffer.split(b"\n"):
                    if line:
                        self._parse(line)
                self._buffer = b""
            assert await self.proc.wait() == 0

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


@pytest.fixture
async def processes():
    started: list[ServerProcess] = []

    async def start(data_dir, *settings: str) -> ServerProcess:
        server = await ServerProcess.start(data_dir, *settings)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()
        with trio.move_on_after(PROCESS_TIMEOUT):
            await server.proc.wait()


def problems(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("level") in ("ERROR", "CRITICAL", "RAW")]


async def test_the_derived_cap_closes_connections_before_the_files_run_out(processes, tmp_path) -> None:
    """``ulimit -n 64``, every setting at its default (loopback trusted: no per-address cap):
    the server serves 32 connections (three quarters of 64 less the reserve) and closes the next
    ones at once instead of running out of files; ``accept`` never fails."""
    cap = http_connections_cap(0, FD_LIMIT)
    server = await processes(tmp_path)
    held = []
    try:
        with trio.fail_after(PROCESS_TIMEOUT):
            for _ in range(cap):
                held.append(await Connection.open(TRUSTED, server.port))
                assert await held[-1].get() == 200  # admitted (and in order: one at a time)
            for _ in range(5):
                over = await Connection.open(TRUSTED, server.port)
                assert await over.closed_by_server()
                await over.aclose()
            for connection in held:  # still open, still served
                assert await connection.get("/api/players") == 200
    finally:
        for connection in held:
            await connection.aclose()
    metrics = await server.metrics()
    assert metrics[("worldserver_drops_total", "http_total_connections")] == 5
    assert ("worldserver_events_total", "http.accept_retries") not in metrics
    await server.stop()
    assert not problems(server.records), problems(server.records)
    assert not [r for r in server.records if "accept failed" in r.get("msg", "")]


async def test_an_accept_that_runs_out_of_files_is_counted_and_quiet(processes, tmp_path) -> None:
    """With the total set above what ``ulimit -n 64`` allows, ``accept`` fails with EMFILE and
    trio retries it every 100 ms: each retry is counted, the log says it in one WARNING line
    (not trio's ERROR and traceback ten times a second), and once clients leave the server
    accepts and serves again."""
    server = await processes(tmp_path, "limits.http_connections=1000", "server.stats_interval=0.1")
    # Out of files, the server cannot import a module either, and numpy imports numpy.ma the
    # first time a percentile is taken (the stats line, the admin API's sampler): that task
    # would fail and end the server. Wait for a stats line over ticks first; keeping the server
    # from running out of files is what limits.http_connections is for.
    await server.wait_for(lambda r: r.get("msg") == "stats" and r.get("tick", 0) > 0)
    clients = []
    try:
        with trio.fail_after(PROCESS_TIMEOUT):
            for _ in range(FD_LIMIT):  # more than the server has files for; connect() succeeds anyway
                clients.append(await Connection.open(TRUSTED, server.port))
            warning = await server.wait_for(lambda r: "accept failed" in r.get("msg", ""))
    finally:
        for connection in clients:
            await connection.aclose()
    assert warning["level"] == "WARNING" and warning["error"] == "EMFILE"
    metrics = await server.metrics()  # served again once the clients have gone
    assert metrics[("worldserver_events_total", "http.accept_retries")] >= 1
    assert ("worldserver_drops_total", "http_total_connections") not in metrics
    await server.stop()
    assert not problems(server.records), problems(server.records)
    assert len([r for r in server.records if "accept failed" in r.get("msg", "")]) == 1  # a minute apart


def test_the_server_raises_its_soft_open_files_limit_to_the_hard_one():
    # A child with soft 64 and hard 256 (as a shell's `ulimit -Sn 64` leaves it): the server's
    # start-up call raises soft to 256, and the derived HTTP cap follows the raised limit.
    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 256))

    code = (
        "import json, resource\n"
        "from worldserver.limits import http_connections_cap, raise_open_files_limit\n"
        "before, after = raise_open_files_limit()\n"
        "print(json.dumps([before, after, list(resource.getrlimit(resource.RLIMIT_NOFILE)),"
        " http_connections_cap(0, after)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                         preexec_fn=low_soft_limit, capture_output=True, text=True, timeout=60, check=True)
    before, after, now, cap = json.loads(out.stdout)
    assert (before, after, now) == (64, 256, [256, 256])
    assert cap == http_connections_cap(0, 256) > http_connections_cap(0, 64)
