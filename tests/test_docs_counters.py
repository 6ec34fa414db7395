"""Every literal ``drop.*`` counter the server can count is explained in docs/architecture.md.

Must not: run anything; it reads the source and the document as text.
"""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "architecture.md").read_text()
LITERAL = re.compile(r"""incr\(\s*"(drop\.[a-z0-9_.]+)\"""")


def test_every_drop_counter_is_documented() -> None:
    found = set()
    for path in list((ROOT / "worldserver").rglob("*.py")) + list((ROOT / "protocol").rglob("*.py")):
        found.update(LITERAL.findall(path.read_text()))
    assert len(found) > 20  # the pattern still finds them
    missing = sorted(name for name in found if f"`{name}`" not in DOC)
    assert not missing, f"counters missing from docs/architecture.md: {missing}"
