"""`worldserver run` on a machine that cannot run its configuration: one line, exit 2.

Each operator mistake of issue 9 (a port in use, TLS files missing or wrong, a data folder or
a pictures folder that is a file, a chat database another server holds or that is not one)
runs ``python -m worldserver run`` as a real process and checks the exact line on stderr,
the exit code, that nothing else was written (no traceback, no log line: nothing started) and,
for the first checks, that nothing was made on disk. Ports are taken by real sockets and by a
real second server. In-process: ``serve`` raises the same StartupError, a port taken after the
pre-flight check (the race it cannot close) still ends as that error, and the database lock is
held until the server stops.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from worldserver.app import serve
from worldserver.chat.sqlite_store import SCHEMA_VERSION
from worldserver.config import Config
from worldserver.startup import StartupError, StartupHold, preflight, startup_error_in

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60


def run_server(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``worldserver run`` in ``tmp_path`` on loopback (free ports unless ``args`` say
    otherwise), data and pictures under ``tmp_path``; returns when it exits."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORLDSERVER_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "clients" / "python")])
    return subprocess.run(
        [sys.executable, "-m", "worldserver", "run", "--host", "127.0.0.1", "--udp-port", "0",
         "--set", "http.host=127.0.0.1", "--set", "http.port=0", "--set", "webrtc.enabled=false",
         "--data-dir", str(tmp_path / "data"), "--set", f"http.images_dir={tmp_path / 'images'}", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip


def assert_refused(result: subprocess.CompletedProcess, line: str) -> None:
    assert (result.returncode, result.stderr, result.stdout) == (2, f"error: {line}\n", "")


def config(tmp_path: Path, **values) -> Config:
    return Config().with_overrides({
        "udp.host": "127.0.0.1", "udp.port": 0, "http.host": "127.0.0.1", "http.port": 0,
        "webrtc.enabled": False, "server.data_dir": str(tmp_path / "data"),
        "http.images_dir": str(tmp_path / "images"), "gc.freeze_after_start": False, **values,
    })  # fmt: skip


def make_tls(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate and its key as PEM files ``<name>.crt`` and ``<name>.key``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


# -- ports ----------------------------------------------------------------------------------------


def test_http_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_server(tmp_path, "--set", f"http.port={port}")
    assert_refused(result, f"http.port: {port}: TCP port already in use on 127.0.0.1 (another worldserver"
                           " running?); stop the program that holds it or set another http.port")
    assert not (tmp_path / "data").exists() and not (tmp_path / "images").exists()  # nothing made


def test_udp_port_in_use(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = run_server(tmp_path, "--udp-port", str(port))
    assert_refused(result, f"udp.port: {port}: UDP port already in use on 127.0.0.1 (another worldserver"
                           " running?); stop the program that holds it or set another udp.port")
    assert not (tmp_path / "data").exists()


def test_host_that_is_not_this_machines(tmp_path):
    result = run_server(tmp_path, "--host", "192.0.2.1", "--udp-port", "9399")  # TEST-NET-1
    assert_refused(result, "udp.host: 192.0.2.1: not an address of this machine; set udp.host to one of its"
                           " addresses, or 0.0.0.0 for all")


async def test_a_second_server_on_the_same_ports_or_database(tmp_path):
    """A real server runs; a second one given its HTTP port, its UDP port or its data folder
    is refused with the setting named, and the first one keeps running."""
    first = tmp_path / "first"
    first.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORLDSERVER_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "clients" / "python")])
    proc = subprocess.Popen(
        [sys.executable, "-m", "worldserver", "run", "--host", "127.0.0.1", "--udp-port", "0",
         "--set", "http.host=127.0.0.1", "--set", "http.port=0", "--set", "webrtc.enabled=false",
         "--set", "server.log_format=json", "--data-dir", str(first / "data"),
         "--set", f"http.images_dir={first / 'images'}"],
        cwd=first, env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        udp = http = None
        with trio.fail_after(TIMEOUT):
            while udp is None or http is None:
                line = await trio.to_thread.run_sync(proc.stderr.readline)
                assert line, "the first server exited"
                record = json.loads(line)
                if record.get("msg") == "listening":
                    udp = int(record["udp"].rsplit(":", 1)[1])
                elif record.get("msg") == "http listening":
                    http = int(record["http"].rsplit(":", 1)[1])
        second = tmp_path / "second"
        second.mkdir()
        assert_refused(await trio.to_thread.run_sync(lambda: run_server(second, "--set", f"http.port={http}")),
                       f"http.port: {http}: TCP port already in use on 127.0.0.1 (another worldserver running?);"
                       " stop the program that holds it or set another http.port")
        assert_refused(await trio.to_thread.run_sync(lambda: run_server(second, "--udp-port", str(udp))),
                       f"udp.port: {udp}: UDP port already in use on 127.0.0.1 (another worldserver running?);"
                       " stop the program that holds it or set another udp.port")
        data = first / "data"
        assert_refused(await trio.to_thread.run_sync(lambda: run_server(second, "--data-dir", str(data))),
                       f"server.data_dir: {data}: another worldserver is using the chat database"
                       f" {data / 'chat.sqlite3'}; stop that server, or give this one its own server.data_dir")
        db = data / "chat.sqlite3"
        assert_refused(await trio.to_thread.run_sync(lambda: run_server(second, "--set", f"chat.db_path={db}")),
                       f"chat.db_path: {db}: another worldserver is using the chat database {db}; stop that"
                       " server, or give this one its own chat.db_path")
        assert proc.poll() is None  # the first server is unharmed
    finally:
        proc.terminate()
        rc = await trio.to_thread.run_sync(proc.wait, TIMEOUT)
    assert rc == 0


# -- TLS ------------------------------------------------------------------------------------------


def test_tls_file_missing(tmp_path):
    cert, key = tmp_path / "nope.crt", tmp_path / "nope.key"
    result = run_server(tmp_path, "--set", f"http.certfile={cert}", "--set", f"http.keyfile={key}")
    assert_refused(result, f"http.certfile: {cert}: no such file; set the path of the PEM file, or set"
                           ' http.certfile and http.keyfile to "" for plain HTTP')
    assert not (tmp_path / "data").exists()


def test_tls_key_without_certificate(tmp_path):
    _, key = make_tls(tmp_path, "server")
    result = run_server(tmp_path, "--set", f"http.keyfile={key}")
    assert_refused(result, 'http.certfile: "": must be set together with http.keyfile; set it to the PEM'
                           ' certificate, or set both to "" for plain HTTP')


def test_tls_file_unreadable(tmp_path):
    _, key = make_tls(tmp_path, "server")
    result = run_server(tmp_path, "--set", f"http.certfile={tmp_path}", "--set", f"http.keyfile={key}")
    assert_refused(result, f"http.certfile: {tmp_path}: cannot be read (Is a directory); let the server's user"
                           " read it, or set another path")


def test_tls_certificate_not_pem(tmp_path):
    _, key = make_tls(tmp_path, "server")
    cert = tmp_path / "junk.crt"
    cert.write_text("not a certificate\n")
    result = run_server(tmp_path, "--set", f"http.certfile={cert}", "--set", f"http.keyfile={key}")
    assert_refused(result, f"http.certfile: {cert}: not a PEM certificate (NO_CERTIFICATE_OR_CRL_FOUND); set"
                           " the path of the server's PEM certificate")


def test_tls_key_of_another_certificate(tmp_path):
    cert, _ = make_tls(tmp_path, "server")
    _, other_key = make_tls(tmp_path, "other")
    result = run_server(tmp_path, "--set", f"http.certfile={cert}", "--set", f"http.keyfile={other_key}")
    assert_refused(result, f"http.keyfile: {other_key}: not an unencrypted PEM private key of http.certfile"
                           " (KEY_VALUES_MISMATCH); set the key that goes with the certificate")


def test_tls_pair_that_goes_together_passes(tmp_path):
    cert, key = make_tls(tmp_path, "server")
    with preflight(config(tmp_path, **{"http.certfile": str(cert), "http.keyfile": str(key)})):
        assert (tmp_path / "data").is_dir()


# -- folders --------------------------------------------------------------------------------------


def test_data_dir_is_a_file(tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("a file")
    result = run_server(tmp_path, "--data-dir", str(data))
    assert_refused(result, f"server.data_dir: {data}: a file, not a folder; set server.data_dir to a folder"
                           " the server may write")


def test_data_dir_under_a_file(tmp_path):
    (tmp_path / "file").write_text("a file")
    data = tmp_path / "file" / "data"
    result = run_server(tmp_path, "--data-dir", str(data))
    assert_refused(result, f"server.data_dir: {data}: cannot be made: {tmp_path / 'file'} is a file, not a"
                           " folder; set server.data_dir to a folder the server may write")


def test_chat_pictures_folder_is_a_file(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "chat-images").write_text("a file")
    result = run_server(tmp_path)
    assert_refused(result, f"server.data_dir: {data}: {data / 'chat-images'} is a file, not a folder; set"
                           " server.data_dir to a folder the server may write")


def test_hung_pictures_folder_is_a_file(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "pictures").write_text("a file")
    result = run_server(tmp_path)
    assert_refused(result, f"server.data_dir: {data}: {data / 'pictures'} (the pictures hung in worlds' slots) is a"
                           " file, not a folder; move it away, or set another server.data_dir")
    assert sorted(p.name for p in data.iterdir()) == ["pictures"]  # nothing made


def test_images_dir_is_a_file(tmp_path):
    images = tmp_path / "pictures.png"
    images.write_bytes(b"a file")
    result = run_server(tmp_path, "--set", f"http.images_dir={images}")
    assert_refused(result, f"http.images_dir: {images}: a file, not a folder; set http.images_dir to the folder"
                           " of the gallery's pictures")
    assert not (tmp_path / "data").exists()


def test_images_dir_under_a_file(tmp_path):
    (tmp_path / "file").write_text("a file")
    images = tmp_path / "file" / "images"
    result = run_server(tmp_path, "--set", f"http.images_dir={images}")
    assert_refused(result, f"http.images_dir: {images}: cannot be made: {tmp_path / 'file'} is a file, not a"
                           " folder; set http.images_dir to a folder the server may write")


# -- the chat database ------------------------------------------------------------------------------


def test_chat_database_that_is_not_one(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "chat.sqlite3").write_bytes(b"certainly not SQLite" * 10)
    result = run_server(tmp_path)
    assert_refused(result, f"server.data_dir: {data}: the chat database {data / 'chat.sqlite3'} cannot be read"
                           " as an SQLite database (file is not a database); move it away, or set another"
                           " server.data_dir")


def test_chat_database_of_a_newer_server(tmp_path):
    db = tmp_path / "newer.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    result = run_server(tmp_path, "--set", f"chat.db_path={db}")
    assert_refused(result, f"chat.db_path: {db}: the chat database {db} has schema {SCHEMA_VERSION + 1}, newer"
                           f" than this server's ({SCHEMA_VERSION}); run a newer worldserver, or set another"
                           " chat.db_path")


def test_chat_database_that_is_a_folder(tmp_path):
    db = tmp_path / "chat.sqlite3"
    db.mkdir()
    result = run_server(tmp_path, "--set", f"chat.db_path={db}")
    assert_refused(result, f"chat.db_path: {db}: the chat database {db} is not a file; move it away, or set"
                           " another chat.db_path")


def test_database_lock_is_held_until_released(tmp_path):
    cfg = config(tmp_path)
    hold = preflight(cfg)
    with pytest.raises(StartupError) as refused:
        preflight(cfg)
    assert refused.value.setting == "server.data_dir" and "another worldserver" in refused.value.message
    hold.release()
    hold.release()  # twice is harmless
    with preflight(cfg):
        pass


# -- in-process ------------------------------------------------------------------------------------


async def test_serve_raises_the_startup_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError) as refused:
            await serve(config(tmp_path, **{"http.port": port}))
    assert (refused.value.setting, refused.value.value) == ("http.port", port)


async def test_serve_stops_the_database_hold_with_the_server(tmp_path):
    cfg = config(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(serve, cfg)
        with pytest.raises(StartupError, match="another worldserver"):
            preflight(cfg)
        nursery.cancel_scope.cancel()
    with preflight(cfg):  # the lock went with the server
        pass


@pytest.mark.parametrize("section", ["http", "udp"])
async def test_port_taken_after_the_check_is_the_same_error(tmp_path, section):
    """The race preflight cannot close: the real bind fails. The error comes out of the
    server's nursery, and startup_error_in finds it there; the parts that had started stop."""
    kind = socket.SOCK_STREAM if section == "http" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as taken:
        taken.bind(("127.0.0.1", 0))
        if section == "http":
            taken.listen()
        port = taken.getsockname()[1]
        cfg = config(tmp_path, **{f"{section}.port": port})
        with preflight(config(tmp_path)) as hold:  # as if the check had passed
            with pytest.raises(BaseException) as raised:
                await serve(cfg, hold=hold)
    error = startup_error_in(raised.value)
    assert error is not None and (error.setting, error.value) == (f"{section}.port", port)
    assert str(error).startswith(f"{section}.port: {port}: ")


def test_startup_error_in_keeps_bugs():
    found = StartupError("udp.port", 1, "x")
    assert startup_error_in(ExceptionGroup("g", [ExceptionGroup("h", [found])])) is found
    assert startup_error_in(ExceptionGroup("g", [found, ValueError("a bug")])) is None
    assert startup_error_in(ValueError("a bug")) is None
    assert StartupHold().release() is None
