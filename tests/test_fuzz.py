"""Fuzzing every decoder that reads network input, bounded: random inputs under hypothesis,
mutations of valid inputs from a seeded generator.

The decoders and what each may raise are the targets of ``tools/fuzz.py`` (``worldtools.fuzz``,
shared with the long fuzz run): every decoder of ``protocol/``, the Hatongsu event parsing and
the geckos signaling body. Each is fed random bytes (and random text for JSON decoders) and
mutations of valid inputs (byte-level, and structural for JSON); it must return or raise its
documented error, and the invariants its runner checks after a decode must hold. A test also
fails when a decoder appears in ``protocol/`` that no target covers.

The per-decoder tests that check *what* a decoder answers live with their modules
(test_messages, test_snapshot, test_chat_protocol, test_jsonsafe, test_handshake,
test_hatongsu, test_http); this file only checks that nothing unexpected escapes.
"""

from __future__ import annotations

import copy
import zlib

import importlib
import inspect
import json
import pkgutil
import random
import re

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import protocol
from protocol import ProtocolError
from worldtools import fuzz

NAMES = sorted(fuzz.TARGETS)
EXAMPLES = 100
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Names that look like decoders of network input (checked against the registry).
DECODER_NAME = re.compile(r"^(decode|read|unpack|parse|loads|verify|check|open|receive|validate|add$|new_inputs$|"
                          r"packet_type$|nesting_depth$)")
NOT_DECODERS = {
    # checks the server's own arrays before encoding (raises ValueError), never sees the network
    "protocol.snapshot.check_state",
}


def _protocol_decoders() -> set[str]:
    found = set()
    for info in pkgutil.iter_modules(protocol.__path__):
        module = importlib.import_module(f"protocol.{info.name}")
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj) and DECODER_NAME.match(name):
                found.add(f"{module.__name__}.{name}")
            elif inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if not attr.startswith("_") and callable(getattr(member, "__func__", member)) and DECODER_NAME.match(attr):
                        found.add(f"{module.__name__}.{name}.{attr}")
    return found


def _resolve(qualified: str) -> object:
    parts = qualified.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(qualified)


def test_every_decoder_of_protocol_is_fuzzed():
    covered = {name for t in fuzz.TARGETS.values() for name in t.covers}
    for name in covered:
        assert callable(_resolve(name)), name  # the registry names real functions
    decoders = _protocol_decoders()
    assert len(decoders) >= 20
    missing = decoders - covered - NOT_DECODERS
    assert not missing, f"decoders without a fuzz target in tools/fuzz.py: {sorted(missing)}"
    for name in ("worldserver.hatongsu.parse_event", "worldserver.hatongsu.HatongsuService.on_text",
                 "worldserver.http_common.load_json"):
        assert name in covered


@pytest.mark.parametrize("name", NAMES)
def test_seeds_are_accepted(name):
    """The mutations start from inputs the decoder accepts (so they reach past the first check)."""
    target = fuzz.TARGETS[name]
    run = target.make()
    seeds = target.seeds()
    assert seeds
    for seed in seeds:
        assert fuzz.check(target, run, seed), seed[:80]


def _feed(name: str, data: bytes) -> None:
    target = fuzz.TARGETS[name]
    fuzz.check(target, target.make(), data)  # raises fuzz.Unexpected for anything not allowed


def _random_input(name: str):
    target = fuzz.TARGETS[name]
    raw = st.binary(max_size=min(target.max_size, 3000))
    if target.text:
        text = st.text(max_size=300).map(lambda s: s.encode("utf-8", "surrogatepass"))
        return st.one_of(raw, text)
    return raw


@pytest.mark.parametrize("name", NAMES)
@FUZZ_SETTINGS
@given(data=st.data())
def test_random_input_raises_only_the_documented_error(name, data):
    _feed(name, data.draw(_random_input(name)))


_SEEDS: dict[str, list] = {}


def _seeds(name: str) -> list:
    """A target's valid inputs, made once per test run: some are built with fresh ids or
    tokens, and hypothesis must see the same seeds when it replays an example (otherwise it
    fails the test as a flaky strategy); each example works on its own copy."""
    if name not in _SEEDS:
        _SEEDS[name] = list(fuzz.TARGETS[name].seeds())
    return _SEEDS[name]


@pytest.mark.parametrize("name", NAMES)
def test_mutated_valid_input_raises_only_the_documented_error(name):
    """Mutations of each target's valid inputs, from a seeded generator (the same inputs in
    every run; tools/fuzz.py runs millions more). Not through hypothesis: its replays failed
    as "flaky strategies" on some targets, while a seeded loop is exactly reproducible."""
    target = fuzz.TARGETS[name]
    rng = random.Random(zlib.crc32(name.encode()))
    for _ in range(EXAMPLES):
        seeds = copy.deepcopy(_seeds(name))  # a mutation must not change the next one's seeds
        base = rng.choice(seeds)
        if target.text and rng.random() < 0.5:
            data = fuzz.mutate_json(rng, base, target.max_size)
        else:
            data = fuzz.mutate(rng, base, seeds, max_size=target.max_size)
        _feed(name, data)


def test_mutations_stay_bounded_and_vary():
    rng = random.Random(5)
    seed = b'{"id": 1, "op": "hello", "token": "t"}'
    outs = {fuzz.mutate_json(rng, seed, 100) for _ in range(200)} | {fuzz.mutate(rng, seed, [seed], max_size=50) for _ in range(200)}
    assert len(outs) > 300
    assert all(len(o) <= 100 for o in outs)


def _broken_target() -> fuzz.Target:
    """A decoder that lets a KeyError escape for inputs starting with a zero byte."""

    def run(data: bytes):
        if data[:1] == b"\x00":
            raise KeyError("escaped")
        raise ProtocolError("refused")

    return fuzz.Target("broken", lambda: run, (ProtocolError,), lambda: [b"\x01abc"], ("x.broken",))


def test_fuzz_run_counts_unexpected_exceptions_and_saves_them(tmp_path):
    summary = fuzz.run_fuzz(400, 3, targets={"broken": _broken_target()}, save=tmp_path)
    [result] = summary["results"]
    assert summary["inputs"] == 400 and result["refused"] + result["unexpected"] == 400
    assert 0 < summary["unexpected"] == result["unexpected"] < 400
    [key] = result["findings"]
    assert key.startswith("KeyError at test_fuzz.py:")
    [saved] = tmp_path.iterdir()
    assert saved.read_bytes()[:1] == b"\x00"


def test_fuzz_tool_summary(capsys):
    assert fuzz.main(["--per-decoder", "30", "--seed", "9", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["targets"] == len(fuzz.TARGETS) and summary["inputs"] == 30 * len(fuzz.TARGETS)
    assert summary["unexpected"] == 0
    assert {r["target"] for r in summary["results"]} == set(fuzz.TARGETS)
    # seeded: the same run feeds the same inputs
    again = fuzz.run_fuzz(30, 9, ["packets.decode_hello", "chat.decode_client_frame"])
    first = {r["target"]: r for r in summary["results"]}
    for r in again["results"]:
        assert (r["accepted"], r["refused"]) == (first[r["target"]]["accepted"], first[r["target"]]["refused"])
