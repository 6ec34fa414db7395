"""The web client's JavaScript type-checked by TypeScript from its JSDoc (issue 10).

Runs ``tsc`` (clients/web's pinned devDependency ``typescript``) on the two configurations of
clients/web: ``tsconfig.json`` (all of src/, every strict check but noImplicitAny) and
``tsconfig.strict.json`` (src/protocol, src/world and src/net, fully strict). A type error
fails the test with tsc's output. The configurations are also held to their job: they must
cover those files, and the strict one must still report an error planted in a scratch file,
so the check cannot go quiet through a configuration change.

Needs node and the web client's node modules: the test brings them up to date with
``scripts/web.sh`` (quick when current, as the browser tests do) and a missing piece fails with
the command that installs it; nothing is skipped. Must not: change any file under clients/web.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "clients" / "web"
TSC = WEB / "node_modules" / ".bin" / "tsc"
CONFIGS = ("tsconfig.json", "tsconfig.strict.json")
STRICT_DIRS = ("protocol", "world", "net")
SETUP_HINT = (
    "run `bash scripts/web.sh` to install the web client's node dependencies (typescript is a "
    "devDependency in clients/web/package.json; `cd clients/web && npm ci` if node_modules was changed by hand)"
)


@pytest.fixture(scope="module")
def tsc() -> Path:
    if shutil.which("node") is None:
        pytest.fail(f"node is not installed: {SETUP_HINT}")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "web.sh")], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"scripts/web.sh failed ({proc.stderr.strip()[-2000:]}): {SETUP_HINT}")
    if not TSC.exists():
        pytest.fail(f"{TSC.relative_to(ROOT)} not found: {SETUP_HINT}")
    return TSC


def _tsc(tsc: Path, *args: str, cwd: Path = WEB) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tsc), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("config", CONFIGS)
def test_web_client_type_checks(tsc: Path, config: str) -> None:
    proc = _tsc(tsc, "-p", str(WEB / config), "--noEmit")
    assert proc.returncode == 0, (
        f"`clients/web/node_modules/.bin/tsc -p clients/web/{config} --noEmit` found type errors:\n"
        f"{proc.stdout}{proc.stderr}"
    )


def test_configurations_cover_the_sources(tsc: Path) -> None:
    listed = {}
    for config in CONFIGS:
        proc = _tsc(tsc, "-p", str(WEB / config), "--listFilesOnly")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        listed[config] = {Path(line.strip()).resolve() for line in proc.stdout.splitlines() if line.strip()}
    sources = {p.resolve() for p in (WEB / "src").rglob("*.js")}
    strict = {p for p in sources if p.relative_to((WEB / "src").resolve()).parts[0] in STRICT_DIRS}
    assert len(strict) >= 10  # the protocol, world and net modules are there to check
    assert sorted(str(p) for p in sources - listed["tsconfig.json"]) == []
    assert sorted(str(p) for p in strict - listed["tsconfig.strict.json"]) == []


def test_the_strict_configuration_reports_errors(tsc: Path, tmp_path: Path) -> None:
    packets = os.path.relpath(WEB / "src" / "protocol" / "packets.js", tmp_path)
    (tmp_path / "bad.js").write_text(
        f'import {{ encodeHello }} from "{packets}";\n'
        'export const hello = encodeHello("2", 1n); // the version is a number\n'
        "export function untyped(x) { return x; } // no JSDoc: an implicit any\n"
    )
    (tmp_path / "tsconfig.json").write_text(
        json.dumps({"extends": str(WEB / "tsconfig.strict.json"), "include": ["bad.js"]})
    )
    proc = _tsc(tsc, "-p", str(tmp_path), cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    errors = [line for line in out.splitlines() if "error TS" in line]
    assert any(line.startswith("bad.js(2,") and "TS2345" in line for line in errors), out
    assert any(line.startswith("bad.js(3,") and "TS7006" in line for line in errors), out
    assert all(line.startswith("bad.js(") for line in errors), out  # the imported modules are clean
