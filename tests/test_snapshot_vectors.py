"""Checks protocol/vectors/snapshot_*.json: encoding reproduces the bytes, decoding the view.

The vectors are shared with other implementations (the JavaScript decoder), so this test
pins the wire format. Must not regenerate or edit the files; it only reads them (and checks
that the generator script would write them unchanged).
"""

from __future__ import annotations

import importlib.util
import json
import pathlib

import msgpack
import numpy as np
import pytest

from protocol.snapshot import SnapshotHeader, View, decode_snapshot, encode_snapshot

VECTORS = pathlib.Path(__file__).resolve().parent.parent / "protocol" / "vectors"
FILES = sorted(VECTORS.glob("snapshot_*.json"))
PART_NAMES = ["tick", "baseline_tick", "input_ack", "self_id", "removed", "added_ids",
              "added_state", "upd_mask", "field_mask", "small", "wide"]  # fmt: skip


def view_of(obj: dict) -> View:
    return View(
        obj["tick"],
        np.array(obj["ids"], dtype=np.uint32),
        np.array(obj["q"], dtype=np.int32).reshape(-1, 5),
    )


def test_there_are_vectors():
    names = {f.name for f in FILES}
    for expected in ["snapshot_full.json", "snapshot_delta_moves.json",
                     "snapshot_spawn_despawn.json", "snapshot_wide_yaw_wrap.json",
                     "snapshot_budget_limited.json"]:  # fmt: skip
        assert expected in names


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_encode_reproduces_bytes(path):
    v = json.loads(path.read_text())
    assert v["format"] == "worldserver-snapshot-vector/1"
    cand = v["candidates"]
    payload, view, sent = encode_snapshot(
        tick=v["tick"],
        baseline=None if v["baseline"] is None else view_of(v["baseline"]),
        cand_ids=np.array(cand["ids"], dtype=np.uint32),
        cand_q=np.array(cand["q"], dtype=np.int32).reshape(-1, 5),
        priority=None if v["priority"] is None else np.array(v["priority"], dtype=np.float64),
        budget=v["budget"],
        input_ack=v["input_ack"],
        self_id=v["self_id"],
        layout=v["position_dtype"],
    )
    assert payload.hex() == v["expected_hex"]
    assert len(payload) <= v["budget"]
    assert view == view_of(v["expected_view"])
    assert sent.tolist() == v["expected_sent"]


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_decode_gives_view(path):
    v = json.loads(path.read_text())
    payload = bytes.fromhex(v["expected_hex"])
    stored = {} if v["baseline"] is None else {v["baseline"]["tick"]: view_of(v["baseline"])}
    header, view = decode_snapshot(payload, stored, v["position_dtype"])
    assert view == view_of(v["expected_view"])
    assert header == SnapshotHeader(
        v["tick"],
        None if v["baseline"] is None else v["baseline"]["tick"],
        v["input_ack"],
        v["self_id"],
    )
    parts = msgpack.unpackb(payload)
    expected = v["expected_parts"]
    assert list(expected) == PART_NAMES
    for name, part in zip(PART_NAMES, parts):
        assert (part.hex() if isinstance(part, bytes) else part) == expected[name], name


def test_vectors_are_up_to_date():
    spec = importlib.util.spec_from_file_location(
        "make_snapshot_vectors", VECTORS / "make_snapshot_vectors.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built = module.build_vectors()
    assert sorted(built) == [f.name for f in FILES]
    for path in FILES:
        assert module.render(built[path.name]) == path.read_text(), path.name
