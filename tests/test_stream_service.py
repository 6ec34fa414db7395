"""The native protocol over message transports (WebRTC, WebSocket), without the transports."""

from protocol import PROTOCOL_VERSION, packets as P
from protocol.client import ClientConnection
from protocol.events import Connected, Received
from protocol.messages import Input, Welcome, encode_inputs
from worldclient.mirror import WorldMirror
from worldserver.config import load_config
from worldserver.simulation import Simulation
from worldserver.stats import Stats
from worldserver.stream_service import StreamService


class Pipe:
    def __init__(self):
        self.sent = []
        self.open = True

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def can_send(self) -> bool:
        return self.open


def setup():
    config = load_config(path=None, env={}, overrides={"worlds.hosted": "open"})
    stats = Stats()
    sim = Simulation(config, stats)
    return sim, stats, StreamService("rtc", config, sim, stats)


def connect(service, key, pipe, now=0.0):
    service.open_peer(key, pipe.send, pipe.can_send)
    client = ClientConnection(version=PROTOCOL_VERSION, nonce=hash(key) & 0xFFFF, trusted=True)
    service.on_message(key, client.connect(now), now)
    [event], _ = client.receive_datagram(pipe.sent.pop(0), now)
    assert isinstance(event, Connected)
    return client, Welcome.decode(event.welcome)


def test_hello_accept_inputs_and_snapshots():
    sim, stats, service = setup()
    pipe_a, pipe_b = Pipe(), Pipe()
    a, welcome_a = connect(service, "a", pipe_a)
    b, welcome_b = connect(service, "b", pipe_b)
    assert len(sim.sessions) == 2 and service.count == 2
    mirror = WorldMirror(welcome_b)
    service.on_message("a", a.packet(P.INPUT, encode_inputs([Input(1, 127, 0, 0, 1)]), 0.05), 0.05)
    for t in range(3):
        sim.run_tick(0.05 * (t + 1))
        for data in pipe_b.sent:
            [ev], _ = b.receive_datagram(data, 0.05 * (t + 1))
            if isinstance(ev, Received) and ev.ptype == P.SNAPSHOT:
                mirror.apply(ev.payload)
        pipe_b.sent.clear()
        service.on_message("b", b.packet(P.KEEPALIVE, b"", 0.05 * (t + 1)), 0.05 * (t + 1))  # acks
    pos = mirror.position_of(welcome_a.entity_id)
    assert pos is not None and pos[0] > 0.2  # a walked along +x and b saw it


def test_backpressure_skips_snapshot_and_counts():
    sim, stats, service = setup()
    pipe = Pipe()
    connect(service, "a", pipe)
    pipe.open = False
    sim.run_tick(0.05)
    assert pipe.sent == [] and stats.get("drop.rtc.snapshot_backlog") == 1
    pipe.open = True
    sim.run_tick(0.1)
    assert len(pipe.sent) == 1 and pipe.sent[0][0] == P.SNAPSHOT


def test_close_despawns_and_unknown_peer_is_counted():
    sim, stats, service = setup()
    pipe = Pipe()
    connect(service, "a", pipe)
    service.close_peer("a", "closed")
    assert sim.sessions == [] and sim.world.count == 0 and service.count == 0
    service.close_peer("a", "closed")  # twice is harmless
    service.on_message("zzz", b"\x01" * 128, 0.0)
    assert stats.get("drop.rtc.unknown_peer") == 1


def test_garbage_messages_do_not_break_the_peer():
    sim, stats, service = setup()
    pipe = Pipe()
    client, _ = connect(service, "a", pipe)
    for junk in (b"", b"\x10", b"\x11" + bytes(40), bytes(range(256)) * 8, P.encode_connect(PROTOCOL_VERSION, 1, 0, bytes(16))):
        service.on_message("a", junk, 0.1)
    service.on_message("a", client.packet(P.INPUT, encode_inputs([Input(1, 0, 127, 0, 1)]), 0.1), 0.1)
    assert sim.sessions[0].pending  # still served
    assert sum(service.endpoint.drops.values()) >= 4
