"""Writes the snapshot test vectors protocol/vectors/snapshot_*.json from fixed inputs.

Job: build each vector's inputs by hand (no randomness), run ``encode_snapshot`` and decode
its parts (in order and in reverse) with ``PartAssembler``, and store inputs plus expected bytes and view as self-contained
JSON for other implementations (the JavaScript decoder) and tests/test_snapshot_vectors.py.
Must not: be imported by the server, or change a vector's inputs without a reason (a changed
``expected_parts_hex`` means a wire format change: bump the protocol version).

Run from the repository root: ``python protocol/vectors/make_snapshot_vectors.py``
(``--check`` exits 1 if a file on disk differs from what would be written).
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from protocol.snapshot import (  # noqa: E402
    HEADER_SIZE,
    PART_HEADER,
    PartAssembler,
    View,
    encode_snapshot,
    state_size,
)

HERE = pathlib.Path(__file__).resolve().parent
FORMAT = "worldserver-snapshot-vector/2"

DOC = {
    "format": "this document's format name and version",
    "description": "what the vector exercises",
    "position_dtype": "'<u2' or '<u4': wire type of x, y, z in added records",
    "tick, input_ack, self_id": "encoder inputs (input_ack -1: none applied, sent as 0xFFFFFFFF)",
    "part_budget": "the largest part payload in bytes",
    "allowance": "null, or the bytes of packets the tick may take (parts x (part_budget + 13))",
    "baseline": "null (full snapshot) or the View the delta is against: "
    "{tick, ids: sorted uint32, q: rows [x, y, z, yaw, anim]}",
    "candidates": "entities the client should see: {ids: sorted uint32, q: rows}",
    "priority": "null or one number per candidate (higher is sent first when over the allowance)",
    "expected_parts_hex": "the part payloads in order, lowercase hex (SPEC 5.2)",
    "expected_fields": "per part: the header fields, then removed (ids), added (ids and state rows), "
    "upd (hex) and records (hex)",
    "expected_view": "what a decoder must produce from all parts: {tick, ids, q}",
    "expected_sent": "per candidate: was its state sent (added or updated)",
}


def _ids(values) -> np.ndarray:
    return np.array(values, dtype=np.uint32)


def _q(rows) -> np.ndarray:
    return np.array(rows, dtype=np.int32).reshape(-1, 5)


def _eid(slot: int, gen: int) -> int:
    return (slot << 16) | gen


def _view_json(v: View) -> dict:
    return {"tick": v.tick, "ids": v.ids.tolist(), "q": v.q.tolist()}


def _fields(part: bytes, position_dtype: str) -> dict:
    """A part's fields by name, parsed independently of the decoder (for other decoders)."""
    names = ["tick", "baseline_tick", "input_ack", "self_id", "part", "parts", "first_id",
             "last_id", "R", "A", "K"]  # fmt: skip
    head = dict(zip(names, PART_HEADER.unpack_from(part)))
    at = HEADER_SIZE
    r, a, k = head["R"], head["A"], head["K"]
    removed = np.frombuffer(part, "<u4", count=r, offset=at).tolist()
    at += 4 * r
    pdt = np.dtype(position_dtype)
    rec = np.frombuffer(part, [("id", "<u4"), ("p", pdt, (3,)), ("yaw", "<u2"), ("anim", "u1")], count=a, offset=at)
    at += a * (4 + state_size(pdt))
    added = {"ids": rec["id"].tolist(),
             "q": [[*map(int, p), int(y), int(n)] for p, y, n in zip(rec["p"], rec["yaw"], rec["anim"])]}  # fmt: skip
    upd = part[at : at + ((k + 7) >> 3)]
    at += len(upd)
    return {**head, "removed": removed, "added": added, "upd": upd.hex(), "records": part[at:].hex()}


def _vector(description, *, tick, baseline, ids, q, part_budget=1187, allowance=None, priority=None,
            input_ack=0, self_id=_eid(1, 0), position_dtype="<u2") -> dict:  # fmt: skip
    enc = encode_snapshot(
        tick=tick,
        baseline=baseline,
        cand_ids=ids,
        cand_q=q,
        priority=None if priority is None else np.array(priority, dtype=np.float64),
        part_budget=part_budget,
        allowance=allowance,
        input_ack=input_ack,
        self_id=self_id,
        layout=position_dtype,
        check=True,
    )
    for order in (enc.parts, enc.parts[::-1]):
        asm = PartAssembler(position_dtype)
        if baseline is not None:
            asm.views[baseline.tick] = baseline
        for part in order:
            asm.add(part)
        if asm.views.get(tick) != enc.view:
            raise AssertionError(f"{description}: decoded view differs from the encoder's")
    return {
        "format": FORMAT,
        "description": description,
        "position_dtype": position_dtype,
        "tick": tick,
        "input_ack": input_ack,
        "self_id": self_id,
        "part_budget": part_budget,
        "allowance": allowance,
        "baseline": None if baseline is None else _view_json(baseline),
        "candidates": {"ids": ids.tolist(), "q": q.tolist()},
        "priority": priority,
        "expected_parts_hex": [p.hex() for p in enc.parts],
        "expected_fields": [_fields(p, position_dtype) for p in enc.parts],
        "expected_view": _view_json(enc.view),
        "expected_sent": enc.sent.tolist(),
        "_doc": DOC,
    }


def build_vectors() -> dict[str, dict]:
    """File name -> vector."""
    out = {}

    ids1 = _ids([_eid(1, 0), _eid(2, 3), _eid(7, 0), _eid(300, 1), _eid(65535, 65535)])
    q1 = _q([
        [1000, 200, 1000, 0, 0],
        [0, 0, 0, 16384, 1],
        [65535, 65535, 65535, 65535, 255],
        [12345, 100, 54321, 40000, 2],
        [1, 2, 3, 4, 3],
    ])  # fmt: skip
    out["snapshot_full.json"] = _vector(
        "full snapshot (no baseline) of 5 entities, incl. extreme values",
        tick=100, baseline=None, ids=ids1, q=q1, input_ack=41, self_id=_eid(1, 0),
    )  # fmt: skip
    base1 = View(100, ids1, q1)

    q2 = q1.copy()
    q2[0, :3] += [25, 0, -13]  # walking
    q2[1, 0] += 1
    q2[1, 2] += 127  # zigzag 254: still one byte
    q2[3, 0] -= 64  # zigzag 127
    q2[3, 4] = 1  # anim change
    out["snapshot_delta_moves.json"] = _vector(
        "delta: 3 of 5 entities change by small amounts (one byte each), two unchanged",
        tick=101, baseline=base1, ids=ids1, q=q2, input_ack=42,
    )  # fmt: skip

    base2 = View(101, ids1, q2)
    ids3 = _ids([_eid(1, 0), _eid(2, 4), _eid(5, 0), _eid(7, 0), _eid(65535, 65535)])
    q3 = _q([
        [1030, 200, 980, 0, 1],   # moved
        [500, 10, 500, 0, 0],     # slot 2 respawned with a new generation
        [7, 8, 9, 10, 3],         # new slot
        [65535, 65535, 65535, 65535, 255],  # unchanged
        [1, 2, 3, 4, 3],          # unchanged
    ])  # fmt: skip
    out["snapshot_spawn_despawn.json"] = _vector(
        "delta: despawns (slot 2 gen 3, slot 300), spawns (slot 2 gen 4, slot 5), one move",
        tick=103, baseline=base2, ids=ids3, q=q3, input_ack=44,
    )  # fmt: skip

    q4 = q2.copy()
    q4[0, 0] += 20000  # wide position delta
    q4[1, 3] = 65535 - 100  # yaw 16384 -> 65435: delta -16485 (wide)
    q4[2, 3] = 5  # yaw 65535 -> 5 wraps forward: delta +6
    q4[2, 0] = 0  # x 65535 -> 0: delta -65535, zigzag 131069 (wide)
    q4[3, 3] = (q4[3, 3] + 32768) % 65536  # delta exactly half a turn: -32768
    q4[4, 3] = 65535  # yaw 4 -> 65535 wraps backward: delta -5
    q4[4, 4] = 200  # anim 3 -> 200: zigzag 394 (wide)
    out["snapshot_wide_yaw_wrap.json"] = _vector(
        "delta: wide (u32) deltas and yaw wrapping both ways",
        tick=102, baseline=base2, ids=ids1, q=q4, input_ack=42,
    )  # fmt: skip

    ids5 = _ids([_eid(s, 0) for s in range(10, 40)])
    q5 = _q([[100 * s, 0, 50 * s, 1000 * s, s % 4] for s in range(30)])
    base5 = View(200, ids5[:20], q5[:20])
    q5b = q5.copy()
    q5b[:, 0] += 300  # every entity changes: x by a wide delta
    prio = [float((7 * s) % 11) for s in range(30)]
    out["snapshot_budget_limited.json"] = _vector(
        "over the allowance (one part of 100 bytes): 20 wide updates and 10 additions, chosen by "
        "priority; "
        "unchosen updates keep baseline values, unchosen additions stay out",
        tick=205, baseline=base5, ids=ids5, q=q5b, part_budget=100, allowance=113, priority=prio,
    )  # fmt: skip

    ids6 = _ids([_eid(s, 1) for s in range(100, 140)])
    q6 = _q([[s, s, s, s, 0] for s in range(40)])
    out["snapshot_budget_removals.json"] = _vector(
        "over the allowance with only removals: as many as fit go, the rest stay in the view",
        tick=301, baseline=View(300, ids6, q6), ids=_ids([]), q=_q([]), part_budget=100, allowance=113,
    )  # fmt: skip

    ids7 = _ids([_eid(3, 0), _eid(4, 0)])
    q7 = _q([[70000, 10, 100000, 1, 1], [0, 0, 0, 0, 0]])
    base7 = View(10, ids7, q7)
    q7b = q7.copy()
    q7b[0, :3] += [-30, 0, 200000]
    out["snapshot_u4.json"] = _vector(
        "delta with '<u4' positions (a world wider than 65535 steps)",
        tick=12, baseline=base7, ids=ids7, q=q7b, position_dtype="<u4", input_ack=-1,
    )  # fmt: skip

    out["snapshot_unchanged.json"] = _vector(
        "delta where nothing changed: only the update bitmap (all zero), no records",
        tick=104, baseline=base2, ids=ids1, q=q2, input_ack=45,
    )  # fmt: skip

    ids8 = _ids([_eid(s, 2) for s in range(20, 60)])
    q8 = _q([[40 * s, 0, 3000 - 20 * s, 500 * s, 1] for s in range(40)])
    base8 = View(400, ids8[::2], q8[::2])
    q8b = q8.copy()
    q8b[:, 0] += 7
    q8b[:, 2] -= 3
    q8b[5, 0] += 1000  # one wide delta
    out["snapshot_parts.json"] = _vector(
        "a snapshot in 5 parts of at most 100 bytes: updates, additions, each part its own "
        "id range",
        tick=401, baseline=base8, ids=ids8, q=q8b, part_budget=100, input_ack=7,
    )  # fmt: skip
    out["snapshot_full_parts.json"] = _vector(
        "a full snapshot (no baseline) of 40 entities cut into parts",
        tick=402, baseline=None, ids=ids8, q=q8b, part_budget=100, input_ack=-1,
    )  # fmt: skip
    return out


def _dump(obj, indent=0) -> str:
    """JSON with lists of scalars kept on one line (rows of q stay readable)."""
    pad = "  " * (indent + 1)
    if isinstance(obj, dict):
        items = [f"{pad}{json.dumps(k)}: {_dump(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(obj, list) and any(isinstance(v, (list, dict)) for v in obj):
        rows = ",\n".join(pad + _dump(v, indent + 1) for v in obj)
        return "[\n" + rows + "\n" + "  " * indent + "]"
    return json.dumps(obj)


def render(vector: dict) -> str:
    return _dump(vector) + "\n"


def main(argv: list[str]) -> int:
    stale = []
    for name, vector in build_vectors().items():
        path = HERE / name
        text = render(vector)
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("stale vectors:", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
