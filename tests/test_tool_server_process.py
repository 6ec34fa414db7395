"""The tools' one runner of a server under test (tools/server_process.py), with real processes.

A real ``worldserver run`` comes up on loopback with free ports under the runner, whatever
``WORLDSERVER_*`` variables this process has, logs stats lines and stops with exit code 0,
leaving no scratch directory. Small Python children stand in for other programs: a log far
larger than a pipe's buffer that nobody reads does not stop its writer; lines are split into
JSON records and other lines (a last line without its newline too); the listening lines give
the addresses; a child that exits before listening is a ServerStartError with its own words;
a log file of the caller's is appended to and read from where this start began. Every wait is
for a condition (a line, an exit) within a generous deadline; nothing depends on speed.
"""

from __future__ import annotations

import json
import os
import sys
import time

import httpx
import pytest

from worldtools.server_process import BENCH_SETS, LoggedProcess, ServerProcess, ServerStartError

DEADLINE = 60.0  # seconds for a condition that holds within a second on any machine


def _child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_real_server_comes_up_on_loopback_logs_and_stops_cleanly(monkeypatch):
    # Passed on, this would stop the server at start-up ("error: net.max_clients ...").
    monkeypatch.setenv("WORLDSERVER_NET_MAX_CLIENTS", "not a number")
    server = ServerProcess()
    workdir = server.workdir.name
    try:
        host, port = server.wait_listening()
        assert host == "127.0.0.1" and port > 0
        assert server.http.startswith("http://127.0.0.1:") and not server.http.endswith(":0")
        assert httpx.get(f"{server.http}/health", timeout=10).status_code == 200
        deadline = time.monotonic() + DEADLINE
        while not server.stats_lines():  # BENCH_SETS: a stats line a second
            assert time.monotonic() < deadline, server.lines[-5:]
            server.read()
            assert server.proc.poll() is None, server.server_error()
            time.sleep(0.05)
        assert "server.stats_interval=1" in BENCH_SETS
        assert server.address == (host, port)
    finally:
        code = server.stop()
    assert code == 0
    assert server.proc.poll() == 0
    assert any(line.get("msg") == "stopped" for line in server.lines)
    assert not any("Traceback" in line for line in server.other_lines)
    assert not os.path.exists(workdir)


def test_a_log_larger_than_a_pipe_never_stops_its_writer_and_is_read_whole():
    lines = 20_000  # about 1.2 MB: a pipe nobody read would have stopped the child at 64 KB
    code = (
        "import json, sys\n"
        f"for i in range({lines}):\n"
        "    sys.stderr.write(json.dumps({'msg': 'stats', 'i': i, 'pad': 'x' * 40}) + '\\n')\n"
        "sys.stderr.write('Traceback (most recent call last):\\n')\n"
        "sys.stderr.write('[1, 2]\\n\\n')\n"
        "sys.stderr.write('{\"msg\": \"last\"}')\n"  # no newline: the process ends mid-line
    )
    child = LoggedProcess(_child(code))
    try:
        assert child.proc.wait(timeout=DEADLINE) == 0
        child.read()
        assert [line["i"] for line in child.stats_lines()] == list(range(lines))
        assert child.other_lines == ["Traceback (most recent call last):", "[1, 2]"]
        assert child.lines[-1]["msg"] == "stats"  # the last line is not complete yet
    finally:
        assert child.stop() == 0
    assert child.lines[-1] == {"msg": "last"}  # stop takes the rest of the log
    assert len(child.lines) == lines + 1


def test_the_listening_lines_give_the_addresses_and_stop_ends_a_process_that_stays():
    code = (
        "import json, sys, threading\n"
        "print(json.dumps({'msg': 'listening', 'udp': '127.0.0.1:5555'}), file=sys.stderr, flush=True)\n"
        "print(json.dumps({'msg': 'http listening', 'http': '127.0.0.1:6666'}), file=sys.stderr, flush=True)\n"
        "threading.Event().wait()\n"  # until a signal ends it
    )
    child = LoggedProcess(_child(code), name="the floor", stop_timeout=DEADLINE)
    workdir = child.workdir.name
    try:
        assert child.wait_listening(DEADLINE) == ("127.0.0.1", 5555)
        assert child.wait_http(DEADLINE) == "http://127.0.0.1:6666"
        assert child.proc.poll() is None
    finally:
        code = child.stop()
    assert code == -15  # SIGTERM
    assert not os.path.exists(workdir)
    assert child.stop() == -15  # a second stop has nothing left to do


def _start_error(code: str, name: str = "the server") -> str:
    """The ServerStartError of a child running ``code`` that never listens."""
    child = LoggedProcess(_child(code), name=name)
    try:
        with pytest.raises(ServerStartError) as failed:
            child.wait_listening(DEADLINE)
    finally:
        child.stop()
    return str(failed.value)


def test_a_process_that_exits_before_listening_is_reported_with_its_own_words():
    code = "import sys\nprint('error: worlds.hosted: no world named nowhere', file=sys.stderr)\nsys.exit(2)"
    assert _start_error(code, "the floor") == (
        "the floor did not start (exit code 2): error: worlds.hosted: no world named nowhere")
    # Without an error: line, its ERROR records; else the last line it wrote (a traceback's).
    record = {"ts": "2026-01-01T00:00:00Z", "level": "ERROR", "logger": "worldserver", "msg": "bind failed",
              "port": 7, "exc": "Traceback (most recent call last):\nOSError: in use"}
    code = f"import json, sys\nprint(json.dumps({record!r}), file=sys.stderr)\nsys.exit(1)"
    assert _start_error(code) == "the server did not start (exit code 1): bind failed port=7 (OSError: in use)"
    assert _start_error("raise SystemExit('it went wrong')") == "the server did not start (exit code 1): it went wrong"


def test_a_log_of_the_callers_is_appended_to_and_read_from_where_this_start_began(tmp_path):
    log_path = tmp_path / "server.log"
    said = "import json, sys\nprint(json.dumps({'msg': sys.argv[1]}), file=sys.stderr)"
    for word in ("first", "second"):
        child = LoggedProcess([sys.executable, "-c", said, word], log_path=log_path)
        try:
            assert child.proc.wait(timeout=DEADLINE) == 0
        finally:
            child.stop()
        assert child.lines == [{"msg": word}]
    assert [json.loads(line)["msg"] for line in log_path.read_text().splitlines()] == ["first", "second"]
    assert log_path.exists()  # the caller's, not the scratch directory's
