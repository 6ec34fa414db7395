"""Checks protocol/vectors/snapshot_*.json (SPEC 5.5): encoding reproduces the bytes, decoding the view.

The vectors are shared with other implementations (the JavaScript decoder), so this test
pins the wire format. Must not regenerate or edit the files; it only reads them (and checks
that the generator script would write them unchanged). The parse of each part that is compared
with ``expected_fields`` is written here from SPEC 5.2, independently of protocol/snapshot.py
and of the generator.
"""

from __future__ import annotations

import json
import pathlib
import struct
import subprocess
import sys

import numpy as np
import pytest

from protocol.snapshot import PartAssembler, View, build_records, encode_snapshot, zigzag

ROOT = pathlib.Path(__file__).resolve().parent.parent
VECTORS = ROOT / "protocol" / "vectors"
FILES = sorted(VECTORS.glob("snapshot_*.json"))
KEYS = {"format", "description", "position_dtype", "tick", "input_ack", "self_id", "part_budget",
        "allowance", "baseline", "candidates", "priority", "expected_parts_hex", "expected_fields",
        "expected_view", "expected_sent", "_doc"}  # fmt: skip
HEADER_NAMES = ["tick", "baseline_tick", "input_ack", "self_id", "part", "parts", "first_id",
                "last_id", "R", "A", "K"]  # fmt: skip


def load(path: pathlib.Path) -> dict:
    return json.loads(path.read_text())


def view_of(obj: dict) -> View:
    return View(
        obj["tick"],
        np.array(obj["ids"], dtype=np.uint32),
        np.array(obj["q"], dtype=np.int32).reshape(-1, 5),
    )


def encode_vector(v: dict):
    cand = v["candidates"]
    return encode_snapshot(
        tick=v["tick"],
        baseline=None if v["baseline"] is None else view_of(v["baseline"]),
        cand_ids=np.array(cand["ids"], dtype=np.uint32),
        cand_q=np.array(cand["q"], dtype=np.int32).reshape(-1, 5),
        priority=None if v["priority"] is None else np.array(v["priority"], dtype=np.float64),
        part_budget=v["part_budget"],
        allowance=v["allowance"],
        input_ack=v["input_ack"],
        self_id=v["self_id"],
        layout=v["position_dtype"],
        check=True,
    )


def parse_part(part: bytes, position_dtype: str) -> dict:
    """SPEC 5.2 read with plain struct calls: the header, removed, added, upd and records."""
    p = 2 if position_dtype == "<u2" else 4
    head = dict(zip(HEADER_NAMES, struct.unpack_from("<IIIIBBIIHHH", part, 0)))
    at = 32
    removed = [struct.unpack_from("<I", part, at + 4 * i)[0] for i in range(head["R"])]
    at += 4 * head["R"]
    pos = "<" + ("H" if p == 2 else "I") * 3
    added_ids, added_q = [], []
    for _ in range(head["A"]):
        (eid,) = struct.unpack_from("<I", part, at)
        xyz = struct.unpack_from(pos, part, at + 4)
        yaw, anim = struct.unpack_from("<HB", part, at + 4 + 3 * p)
        added_ids.append(eid)
        added_q.append([*xyz, yaw, anim])
        at += 4 + 3 * p + 3
    nupd = (head["K"] + 7) // 8
    upd = part[at : at + nupd]
    return {**head, "removed": removed, "added": {"ids": added_ids, "q": added_q},
            "upd": upd.hex(), "records": part[at + nupd :].hex()}  # fmt: skip


def assembled(v: dict, parts: list[bytes]) -> PartAssembler:
    asm = PartAssembler(v["position_dtype"])
    if v["baseline"] is not None:
        asm.views[v["baseline"]["tick"]] = view_of(v["baseline"])
    done = []
    for part in parts:
        done.append(asm.add(part)[1])
    assert done == [False] * (len(parts) - 1) + [True]  # the tick completes with its last part
    return asm


def test_there_are_vectors():
    names = {f.name for f in FILES}
    for expected in ["snapshot_full.json", "snapshot_delta_moves.json", "snapshot_spawn_despawn.json",
                     "snapshot_wide_yaw_wrap.json", "snapshot_budget_limited.json",
                     "snapshot_budget_removals.json", "snapshot_u4.json", "snapshot_unchanged.json",
                     "snapshot_parts.json", "snapshot_full_parts.json"]:  # fmt: skip
        assert expected in names
    # Between them they cover several parts, a limited allowance, both layouts, no baseline.
    vs = [load(f) for f in FILES]
    assert any(len(v["expected_parts_hex"]) >= 5 for v in vs)
    assert any(v["allowance"] is not None and not all(v["expected_sent"]) for v in vs)
    assert {v["position_dtype"] for v in vs} == {"<u2", "<u4"}
    assert any(v["baseline"] is None for v in vs) and any(v["priority"] is not None for v in vs)


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_vector_keys(path):
    v = load(path)
    assert set(v) == KEYS
    assert v["format"] == "worldserver-snapshot-vector/2"
    assert len(v["expected_fields"]) == len(v["expected_parts_hex"]) >= 1
    assert len(v["expected_sent"]) == len(v["candidates"]["ids"])
    assert all(h == h.lower() for h in v["expected_parts_hex"])


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_encode_reproduces_bytes(path):
    v = load(path)
    enc = encode_vector(v)
    assert [p.hex() for p in enc.parts] == v["expected_parts_hex"]
    assert all(len(p) <= v["part_budget"] for p in enc.parts)
    assert enc.view == view_of(v["expected_view"])
    assert enc.sent.tolist() == v["expected_sent"]
    cand = view_of({"tick": v["tick"], **v["candidates"]})
    assert enc.complete == (enc.view == cand)


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
@pytest.mark.parametrize("order", ["forward", "reverse"])
def test_decode_gives_view(path, order):
    v = load(path)
    parts = [bytes.fromhex(h) for h in v["expected_parts_hex"]]
    asm = assembled(v, parts if order == "forward" else parts[::-1])
    expected = view_of(v["expected_view"])
    assert asm.views[v["tick"]] == expected
    assert asm.view == expected  # the newest complete tick is the mirror
    assert asm.header.tick == v["tick"] and asm.header.parts == len(parts)
    assert asm.header.baseline_tick == (None if v["baseline"] is None else v["baseline"]["tick"])
    assert asm.header.input_ack == v["input_ack"] and asm.header.self_id == v["self_id"]


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_expected_fields_match_an_independent_parse(path):
    v = load(path)
    parts = [bytes.fromhex(h) for h in v["expected_parts_hex"]]
    assert [parse_part(p, v["position_dtype"]) for p in parts] == v["expected_fields"]
    # The fields are the SPEC's: header values as on the wire, parts partition the id space.
    n = len(parts)
    for i, f in enumerate(v["expected_fields"]):
        assert f["tick"] == v["tick"] and f["part"] == i and f["parts"] == n
        assert f["baseline_tick"] == (0xFFFFFFFF if v["baseline"] is None else v["baseline"]["tick"])
        assert f["input_ack"] == v["input_ack"] & 0xFFFFFFFF and f["self_id"] == v["self_id"]
        assert f["first_id"] == (0 if i == 0 else v["expected_fields"][i - 1]["last_id"] + 1)
        assert f["first_id"] <= f["last_id"]
    assert v["expected_fields"][-1]["last_id"] == 0xFFFFFFFF
    # Removed, added and kept add up to the view: the view's ids are kept + added over parts.
    base_ids = set() if v["baseline"] is None else set(v["baseline"]["ids"])
    removed = {i for f in v["expected_fields"] for i in f["removed"]}
    added = [i for f in v["expected_fields"] for i in f["added"]["ids"]]
    assert removed <= base_ids and not base_ids & set(added)
    assert sorted((base_ids - removed) | set(added)) == v["expected_view"]["ids"]
    assert sum(f["K"] for f in v["expected_fields"]) == len(base_ids - removed)


def test_generator_check_reports_nothing_stale():
    script = VECTORS / "make_snapshot_vectors.py"
    run = subprocess.run([sys.executable, str(script), "--check"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "stale" not in run.stdout


def test_spec_examples_come_out_of_build_records():
    # SPEC 5.2: 5 kept entities, 0, 1 and 3 updated (upd 0x0b), with these records.
    old = np.zeros((5, 5), dtype=np.int32)
    old[:, :3] = 1000
    new = old.copy()
    new[0, 0] += 25
    new[0, 2] -= 13
    new[1, 0] += 1
    new[1, 2] += 127
    new[3, 0] -= 64
    new[3, 4] = 0
    old[3, 4] = 1
    buf, length = build_records(zigzag(new, old.copy()))
    assert length.tolist() == [3, 3, 0, 3, 0]
    assert buf.tobytes().hex() == "053219" + "0502fe" + "117f01"
    assert np.packbits(length > 0, bitorder="little").tobytes() == b"\x0b"
    # The wide record: x +200 (zigzag 400 does not fit a byte), yaw -3.
    old1 = np.array([[500, 0, 0, 1, 0]], dtype=np.int32)
    new1 = np.array([[700, 0, 0, 65534, 0]], dtype=np.int32)
    buf, length = build_records(zigzag(new1, old1))
    assert buf.tobytes().hex() == "29019001000005" and length.tolist() == [7]


def test_spec_example_is_the_delta_moves_vector():
    v = load(VECTORS / "snapshot_delta_moves.json")
    (f,) = v["expected_fields"]
    assert (f["K"], f["upd"], f["records"]) == (5, "0b", "053219" "0502fe" "117f01")
