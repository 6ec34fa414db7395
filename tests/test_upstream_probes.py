"""Probes of every upstream private name the server patches (worldserver.upstream).

Each patching module's ``check_upstream()`` passes on the installed (pinned) versions and fails
loudly, naming the patch and the upstream name, when the name it relies on is gone or has
another shape (simulated here by changing the installed module for one test with
monkeypatch). Behavioural probes show that each patch takes effect on the real libraries:
hypercorn serves with the contained connection class and hands the chat its raw socket, aioice
gathers only on the addresses given, and a patched aiortc SCTP transport sends its waiting
SACK in the same packet as the next DATA chunk, which aiortc's own parser accepts. And
constraints.txt pins every installed dependency at the version installed.

Must not: reach any address but 127.0.0.1, wait without a deadline, or leave a patch changed
for other tests (monkeypatch undoes every change).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import pathlib
import re

import aioice.ice
import pytest
import trio
from aiortc import RTCCertificate, RTCDtlsTransport, RTCIceGatherer, RTCIceTransport
from aiortc import rtcsctptransport as sctp
from hypercorn.protocol.h11 import H2CProtocolRequiredError, H11Protocol
from hypercorn.trio import run as hypercorn_trio_run
from hypercorn.trio.tcp_server import TCPServer
from trio_websocket import open_websocket_url

from chat_support import TIMEOUT, start_chat_server
from worldclient import ice
from worldserver import http_guard, rtc, sctp_acks, upstream
from worldserver.chat import fanout
from worldserver.upstream import UpstreamChanged


def fresh_check(module) -> None:
    """The module's check, run again (the cached result is skipped)."""
    module.check_upstream.__wrapped__()


def expect_changed(module, *names: str) -> str:
    with pytest.raises(UpstreamChanged) as info:
        fresh_check(module)
    message = str(info.value)
    for name in names:
        assert name in message, message
    assert "constraints.txt" in message
    return message


# -- the checks pass on what is installed ----------------------------------------------------

@pytest.mark.parametrize("module_name", [m for m, _, _ in upstream.PROBED_MODULES])
def test_each_patch_finds_what_it_relies_on(module_name) -> None:
    fresh_check(importlib.import_module(module_name))


def test_check_all_runs_every_probe_and_each_package_is_reached_from_one_module() -> None:
    upstream.check_all()
    upstream.check_all(webrtc=False)
    packages = [package for _, package, _ in upstream.PROBED_MODULES]
    assert len(packages) == len(set(packages))


def test_the_message_names_the_package_version_name_and_patch() -> None:
    exc = UpstreamChanged("hypercorn", "hypercorn.x.Y", "worldserver.http_guard.install", "no longer exists")
    assert re.match(r"hypercorn \d+\.\d+\S*: hypercorn\.x\.Y no longer exists; the patch "
                    r"worldserver\.http_guard\.install relies on it", str(exc)), str(exc)


# -- they fail loudly when the shape changes ---------------------------------------------------

def test_hypercorn_worker_without_its_tcpserver_name(monkeypatch) -> None:
    monkeypatch.delattr(hypercorn_trio_run, "TCPServer")
    expect_changed(http_guard, "hypercorn", "hypercorn.trio.run.TCPServer", "worldserver.http_guard.install")


def test_hypercorn_worker_that_no_longer_looks_the_class_up(monkeypatch) -> None:
    async def worker_serve(app, config, *, sockets=None, shutdown_trigger=None, task_status=None):
        return None  # builds its connections some other way

    monkeypatch.setattr(hypercorn_trio_run, "worker_serve", worker_serve)
    expect_changed(http_guard, "hypercorn.trio.run.worker_serve", "TCPServer")


def test_hypercorn_websocket_that_no_longer_closes_too_big_messages_itself(monkeypatch) -> None:
    from hypercorn.protocol.ws_stream import WSStream

    async def _handle_events(self) -> None:
        return None  # handles oversized messages some other way

    monkeypatch.setattr(WSStream, "_handle_events", _handle_events)
    expect_changed(http_guard, "WSStream._handle_events", "ContainedWSStream")


def test_hypercorn_protocol_wrapper_without_its_http11_name(monkeypatch) -> None:
    import hypercorn.protocol

    monkeypatch.delattr(hypercorn.protocol, "H11Protocol")
    expect_changed(http_guard, "hypercorn.protocol.H11Protocol",
                   "worldserver.http_guard.install (ContainedH11Protocol)")


def test_hypercorn_http11_that_no_longer_checks_for_a_protocol_switch_there(monkeypatch) -> None:
    async def _handle_events(self) -> None:
        return None  # switches (or not) some other way

    monkeypatch.setattr(H11Protocol, "_handle_events", _handle_events)
    expect_changed(http_guard, "H11Protocol._handle_events", "_check_protocol", "ContainedH11Protocol")


def test_hypercorn_http11_that_switches_to_http2_elsewhere(monkeypatch) -> None:
    async def _maybe_recycle(self) -> None:  # an upgrade the guard would not see
        raise H2CProtocolRequiredError(b"", self.request)

    monkeypatch.setattr(H11Protocol, "_maybe_recycle", _maybe_recycle)
    expect_changed(http_guard, "H11Protocol._maybe_recycle", "switches to HTTP/2 outside _check_protocol")


def test_hypercorn_connection_that_no_longer_ends_on_its_protocols_word(monkeypatch) -> None:
    async def protocol_send(self, event) -> None:  # writes, but ignores Closed and Updated
        async with self.send_lock:
            await self.stream.send_all(event.data)

    monkeypatch.setattr(TCPServer, "protocol_send", protocol_send)
    expect_changed(http_guard, "TCPServer.protocol_send", "Closed, Updated", "ContainedH11Protocol")


def test_hypercorn_connection_without_its_send_lock(monkeypatch) -> None:
    def __init__(self, app, config, context, state, stream):
        self.app, self.stream = app, stream

    monkeypatch.setattr(TCPServer, "__init__", __init__)
    expect_changed(http_guard, "TCPServer.__init__", "send_lock")


def test_hypercorn_protocol_send_with_another_signature(monkeypatch) -> None:
    async def protocol_send(self, event, extra):
        pass

    monkeypatch.setattr(TCPServer, "protocol_send", protocol_send)
    expect_changed(http_guard, "TCPServer.protocol_send", "worldserver.http_guard.connection_of")


def test_trio_socket_that_no_longer_wraps_as_sock(monkeypatch) -> None:
    class Renamed:
        def __init__(self, sock):
            self._stdlib = sock

    monkeypatch.setattr(trio.socket, "from_stdlib_socket", Renamed)
    expect_changed(fanout, "trio", "_sock", "worldserver.chat.fanout.raw_connection")


def test_aioice_without_get_host_addresses(monkeypatch) -> None:
    monkeypatch.setattr(ice, "_original_get_host_addresses", None)
    monkeypatch.delattr(aioice.ice, "get_host_addresses")
    expect_changed(rtc, "aioice", "aioice.ice.get_host_addresses", "worldclient.ice.ice_host_addresses")


def test_aioice_gathering_that_no_longer_looks_it_up(monkeypatch) -> None:
    async def gather_candidates(self):
        return None

    monkeypatch.setattr(aioice.ice.Connection, "gather_candidates", gather_candidates)
    expect_changed(rtc, "aioice.ice.Connection.gather_candidates", "get_host_addresses")


def test_aiortc_sack_that_reads_another_field(monkeypatch) -> None:
    async def _send_sack(self):
        sack = sctp.SackChunk()
        sack.cumulative_tsn = self._last_received_tsn
        sack.advertised_rwnd = self._advertised_rwnd
        sack.gaps = list(self._sack_gap_blocks)  # a field the bundled SACK would not copy
        await self._send_chunk(sack)
        self._sack_needed = False

    monkeypatch.setattr(sctp.RTCSctpTransport, "_send_sack", _send_sack)
    expect_changed(sctp_acks, "aiortc", "RTCSctpTransport._send_sack", "_sack_gap_blocks",
                   "worldserver.sctp_acks.enable")


def test_aiortc_constructor_without_an_attribute(monkeypatch) -> None:
    original = sctp.RTCSctpTransport.__init__

    def __init__(self, transport, port=5000):  # a stand-in that assigns nothing
        original(self, transport, port)

    monkeypatch.setattr(sctp.RTCSctpTransport, "__init__", __init__)
    expect_changed(sctp_acks, "RTCSctpTransport.__init__", "_sack_needed")


# -- the patches take effect -------------------------------------------------------------------

async def test_hypercorn_serves_contained_connections_and_the_chat_gets_the_raw_socket(nursery, tmp_path) -> None:
    server = await start_chat_server(nursery, tmp_path, fanout=True)
    assert hypercorn_trio_run.TCPServer is http_guard.ContainedTCPServer
    import hypercorn.protocol

    assert hypercorn.protocol.H11Protocol is http_guard.ContainedH11Protocol
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(server.ws_url, connect_timeout=TIMEOUT, disconnect_timeout=TIMEOUT) as ws:
            await ws.send_message("not json")  # answered with an error frame: over the raw socket
            reply = json.loads(await ws.get_message())
    assert reply["ok"] is False and reply["error"]["code"] == "bad_frame", reply
    assert server.stats.get("chat.sockets_fanout") == 1  # connection_of found hypercorn's socket
    assert server.stats.get("chat.sockets_asgi") == 0


def gather_hosts(addresses: tuple[str, ...]) -> list[str]:
    """The host candidates aioice gathers, inside ``ice.ice_host_addresses(addresses)``."""

    async def main() -> list[str]:
        connection = aioice.ice.Connection(ice_controlling=True)
        try:
            with ice.ice_host_addresses(addresses):
                await asyncio.wait_for(connection.gather_candidates(), TIMEOUT)
            return [c.host for c in connection.local_candidates if c.type == "host"]
        finally:
            await connection.close()

    return asyncio.run(main())


def test_aioice_gathers_only_on_the_given_addresses() -> None:
    assert sorted(set(gather_hosts(("127.0.0.1",)))) == ["127.0.0.1"]
    assert "127.0.0.1" not in gather_hosts(())  # aioice's own choice leaves loopback out


def test_a_patched_sctp_transport_bundles_its_sack_with_the_next_data() -> None:
    async def main() -> list:
        gatherer = RTCIceGatherer()
        dtls = RTCDtlsTransport(RTCIceTransport(gatherer), [RTCCertificate.generateCertificate()])
        transport = sctp.RTCSctpTransport(dtls)
        sent: list[bytes] = []

        async def capture(data: bytes) -> None:  # the DTLS boundary: what would be encrypted
            sent.append(data)

        dtls._send_data = capture
        sctp_acks.enable(transport)
        transport._association_state = sctp.RTCSctpTransport.State.ESTABLISHED  # as after INIT/COOKIE
        transport._remote_port, transport._remote_verification_tag = 5000, 0x1234ABCD
        transport._last_received_tsn = 41
        transport._sack_needed = True
        await transport._send_sack()  # one DATA packet unacknowledged: the SACK waits
        waited = list(sent)
        chunk = sctp.DataChunk()
        chunk.tsn, chunk.stream_id, chunk.protocol, chunk.user_data = 7, 0, 53, b"snapshot"
        await transport._send_chunk(chunk)
        transport._sack_needed = False
        await gatherer._connection.close()
        return [waited, sent]

    waited, sent = asyncio.run(main())
    assert waited == []
    assert len(sent) == 1
    _, _, tag, chunks = sctp.parse_packet(sent[0])  # aiortc's parser: checksum and layout
    assert tag == 0x1234ABCD
    assert [type(c) for c in chunks] == [sctp.SackChunk, sctp.DataChunk]
    assert chunks[0].cumulative_tsn == 41 and chunks[1].user_data == b"snapshot"


def test_enable_refuses_a_transport_without_the_attributes() -> None:
    class Bare:
        pass

    bare = Bare()
    with pytest.raises(UpstreamChanged, match="worldserver.sctp_acks.enable"):
        sctp_acks.enable(bare)
    assert vars(bare) == {}


def test_worldserver_run_refuses_to_start_with_one_line_naming_the_patch(monkeypatch, capsys, tmp_path) -> None:
    from worldserver import cli

    monkeypatch.setattr(http_guard, "check_upstream", http_guard.check_upstream.__wrapped__)  # not cached
    monkeypatch.delattr(hypercorn_trio_run, "TCPServer")
    code = cli.main(["run", "--udp-port", "0", "--data-dir", str(tmp_path), "--set", "http.port=0",
                     "--set", "webrtc.enabled=false"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: hypercorn ") and "\n" not in err, err
    assert "hypercorn.trio.run.TCPServer" in err and "worldserver.http_guard.install" in err


def _dependency_closure() -> dict[str, str]:
    """Installed version of every package ``worldserver[test]`` needs, directly or not."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, str] = {}
    todo = [("worldserver", ("test",))]
    while todo:
        name, extras = todo.pop()
        for text in metadata.distribution(name).requires or []:
            req = Requirement(text)
            if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in extras or ("",)):
                continue
            key = canonicalize_name(req.name)
            if key not in found:
                found[key] = metadata.version(req.name)
                todo.append((req.name, tuple(req.extras)))
    return found


def test_constraints_pin_every_installed_dependency_at_its_installed_version() -> None:
    """constraints.txt is the lock: a dependency added without a pin, or a venv that drifted
    from it, fails here (regenerate or bump as docs/architecture.md says)."""
    from packaging.utils import canonicalize_name

    pins = {}
    with open(pathlib.Path(__file__).resolve().parent.parent / "constraints.txt", encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                name, _, version = line.partition("==")
                pins[canonicalize_name(name)] = version
    installed = _dependency_closure()
    assert {k: v for k, v in installed.items() if pins.get(k) != v} == {}
    for package in ("hypercorn", "aioice", "aiortc", "trio"):  # the patched ones
        assert package in pins
