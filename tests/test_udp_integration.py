"""The whole path over real UDP sockets on loopback: handshake, inputs, snapshots, authority.

Every client joins over HTTP first (``open_client(..., http=...)``): the server's default
configuration lets only clients with a connect token in over UDP (SPEC 2), and their packets
are tagged (SPEC 3)."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import trio

from protocol import PROTOCOL_VERSION, packets as P
from protocol.client import ClientConnection
from protocol.events import Disconnected
from worldclient.client import ConnectFailed, open_client
from worldclient.join import join
from worldserver.app import serve
from worldserver.config import load_config
from worldserver.sessions import CATCH_UP_SLACK


def make_config(data_dir, **overrides):
    base = {"udp.host": "127.0.0.1", "udp.port": "0", "http.host": "127.0.0.1", "http.port": "0", "worlds.hosted": "open",
            "server.stats_interval": "60", "gc.freeze_after_start": "false", "server.data_dir": str(data_dir)}
    base.update({k: str(v) for k, v in overrides.items()})
    return load_config(path=None, env={}, overrides=base)


@pytest.fixture
async def server(nursery, tmp_path):
    return await nursery.start(serve, make_config(tmp_path))


def player(running, **kw):
    """A client of ``running`` that joins over its HTTP port first."""
    host, port = running.udp_address[:2]
    return open_client(host, port, http=f"http://127.0.0.1:{running.http_port}", **kw)


def moved(client, entity_id, origin, dist=0.2):
    pos = client.mirror.position_of(entity_id)
    return pos is not None and float(np.linalg.norm(pos[[0, 2]] - origin[[0, 2]])) > dist


async def test_two_clients_see_each_other_move_within_3_ticks(server):
    async with player(server) as a, player(server) as b:
        assert a.entity_id != b.entity_id
        assert await b.wait_until(lambda c: c.mirror.position_of(a.entity_id) is not None, 2.0)
        assert await a.wait_until(lambda c: c.mirror.position_of(b.entity_id) is not None, 2.0)
        origin = b.mirror.position_of(a.entity_id)
        sent_at_tick = server.sim.tick
        await a.send_input(1.0, 0.0)
        assert await b.wait_until(lambda c: moved(c, a.entity_id, origin, 0.05), 2.0)
        assert b.mirror.tick - sent_at_tick <= 3
        # the server acknowledged the applied input to its sender
        assert await a.wait_until(lambda c: c.mirror.header.input_ack >= 1, 2.0)
        assert a.mirror.header.self_id == a.entity_id


async def test_speed_and_bounds_enforced_against_cheater(server):
    sim = server.sim
    async with player(server) as cheat:
        slot = cheat.entity_id >> 16
        start = sim.world.pos[slot].copy()
        start_tick = sim.tick
        # 10x too many inputs, each at full intent and with a forged huge facing
        for _ in range(200):
            await cheat.send_input(1.0, 0.0)
            await trio.sleep(0.005)
        travelled = float(np.linalg.norm(sim.world.pos[slot][[0, 2]] - start[[0, 2]]))
        ticks = sim.tick - start_tick + 1 + CATCH_UP_SLACK  # late inputs may be caught up
        assert travelled <= sim.world.max_speed * ticks / sim.tick_rate + 1e-6
        assert server.stats.get("drop.input_rate") + server.stats.get("drop.input_overflow") > 0
        # push against the boundary for a long time (the world is shrunk by moving the avatar)
        sim.world.pos[slot, 0] = sim.world.half_extent - 0.5
        for _ in range(20):
            await cheat.send_input(1.0, 0.0)
            await trio.sleep(1 / sim.tick_rate)
        assert sim.world.pos[slot, 0] <= sim.world.half_extent
        assert await cheat.wait_until(
            lambda c: c.mirror.position_of(c.entity_id)[0] >= sim.world.half_extent - 0.011, 2.0
        )


async def test_silent_client_times_out_and_others_see_despawn(nursery, tmp_path):
    running = await nursery.start(serve, make_config(tmp_path, **{"net.timeout": 1.0, "net.keepalive_interval": 0.3}))
    host, port = running.udp_address[:2]
    # a raw client that joins, completes the handshake, then goes silent
    joined = await join(f"http://127.0.0.1:{running.http_port}", "silent")
    raw = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await raw.connect((host, port))
    conn = ClientConnection(version=PROTOCOL_VERSION, nonce=99, token=joined.connect_token, key=joined.connect_key)
    await raw.send(conn.connect(trio.current_time()))
    _, [connect] = conn.receive_datagram(await raw.recv(2048), trio.current_time())
    await raw.send(connect)
    [accepted], _ = conn.receive_datagram(await raw.recv(2048), trio.current_time())
    from protocol.messages import Welcome

    silent_id = Welcome.decode(accepted.welcome).entity_id
    async with player(running) as watcher:
        assert await watcher.wait_until(lambda c: c.mirror.position_of(silent_id) is not None, 2.0)
        # Keep the watcher alive while the silent one times out (net.timeout 1 s; a generous
        # deadline: the machine's speed changes how long this takes, not the verdict).
        with trio.fail_after(30):
            while watcher.mirror.position_of(silent_id) is not None:
                await watcher.send_input(0.0, 0.0)
                await trio.sleep(0.05)
        assert running.stats.get("clients.left.timeout") == 1
    # the server told the silent client why: keep-alives, then one DISCONNECT "timeout"
    # (sent before the despawn the watcher saw, so it is already in the socket's buffer)
    ends = []
    for _ in range(100):
        with trio.move_on_after(1.0):
            evs, _ = conn.receive_datagram(await raw.recv(2048), trio.current_time())
            ends += [ev.reason for ev in evs if isinstance(ev, Disconnected)]
        if ends:
            break
    assert ends == ["timeout"]
    assert conn.close_reason == "timeout"
    raw.close()


async def test_garbage_flood_does_not_stop_updates(server):
    host, port = server.udp_address[:2]
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flood.setblocking(False)
    rng = np.random.default_rng(1)
    async with player(server) as a, player(server) as b:
        assert await b.wait_until(lambda c: c.mirror.position_of(a.entity_id) is not None, 2.0)
        start_a = b.snapshots
        origin = b.mirror.position_of(a.entity_id)
        sent = 0

        def updated() -> bool:  # b got 10 snapshots and saw a walk a metre, all during the flood
            return b.snapshots - start_a >= 10 and moved(b, a.entity_id, origin, 1.0)

        # Flood until the updates have come through it (at least 3,000 datagrams first), within
        # a generous deadline: the machine's speed changes how long that takes, not the verdict.
        with trio.fail_after(30):
            while sent < 3000 or not updated():
                await _flood_burst(flood, rng, host, port, a)
                sent += 200
        assert sum(server.udp.endpoint.drops.values()) > 1000
        assert server.stats.get("clients.joined") == 2
    flood.close()


async def _flood_burst(flood, rng, host, port, a) -> None:
    """200 garbage datagrams (random bytes, fake SNAPSHOTs, CONNECTs with a bad token) at the
    server, then one INPUT of player ``a`` (walking) and a 10 ms pause."""
    for _ in range(200):
        n = int(rng.integers(1, 1300))
        kind = int(rng.integers(0, 4))
        data = bytearray(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
        if kind == 1:
            data[0] = P.SNAPSHOT
        elif kind == 2:
            data = bytearray(P.encode_connect(PROTOCOL_VERSION, 5, 0, bytes(16)))
        try:
            flood.sendto(bytes(data), (host, port))
        except BlockingIOError:
            break
    await a.send_input(0.0, 1.0)
    await trio.sleep(0.01)


async def test_refused_when_world_full(nursery, tmp_path):
    running = await nursery.start(serve, make_config(tmp_path, **{"net.max_clients": 1}))
    async with player(running):
        with pytest.raises(ConnectFailed) as info:
            async with player(running):
                pass
        assert info.value.reason == "server_full"
