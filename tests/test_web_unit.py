"""The web client's own unit tests (clients/web/test/*.test.mjs, node's test runner) in the
suite: protocol decoders on the shared vectors, the walls against the server's collision
vectors, prediction, the chat client and the rest. A failing node test fails this test with
node's report.

Needs node and the web client's node modules: brought up to date with ``scripts/web.sh`` as
the browser tests do; a missing piece fails with the command that installs it, nothing is
skipped. Must not: change any file under clients/web.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "clients" / "web"
SETUP_HINT = "run `bash scripts/web.sh` to install node and the web client's node modules"


def test_web_client_unit_tests_pass() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node is not installed: {SETUP_HINT}")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "web.sh")], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"scripts/web.sh failed ({proc.stderr.strip()[-2000:]}): {SETUP_HINT}")
    files = sorted(str(p.relative_to(WEB)) for p in (WEB / "test").glob("*.test.mjs"))
    assert len(files) >= 8, files
    run = subprocess.run([node, "--test", *files], cwd=WEB, capture_output=True, text=True, timeout=600)
    report = run.stdout + run.stderr
    passed = re.search(r"^# pass (\d+)$", report, re.M)
    failed = re.search(r"^# fail (\d+)$", report, re.M)
    assert run.returncode == 0 and failed is not None and failed.group(1) == "0", (
        f"`cd clients/web && node --test test/*.test.mjs` failed:\n{report[-6000:]}"
    )
    assert passed is not None and int(passed.group(1)) >= 200, report[-2000:]
