"""The documentation links nowhere outside the repository (issue 9), and its links inside it
lead to files that exist.

Every Markdown file that git tracks (README.md, docs/, protocol/SPEC.md, the clients' and
tools' READMEs) is read: a URL may only name this machine or a placeholder host (localhost,
127.0.0.1, 0.0.0.0, [::1], HOST: addresses of the server being documented), and a relative
link's target must exist.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
URL = re.compile(r"\b[a-z][a-z0-9+.-]*://(\[[^\]]*\]|[^/\s)`\"'<>:\[]+)")
LINK = re.compile(r"\]\(([^)\s]+)\)")
LOCAL_HOSTS = {"localhost", "127.0.0.1", "0.0.0.0", "[::1]", "HOST"}


def markdown_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True)
    files = [ROOT / name for name in listed.stdout.split() if "node_modules" not in name]
    assert ROOT / "README.md" in files and ROOT / "docs" / "architecture.md" in files
    return files


def test_no_link_leaves_the_repository():
    outside = []
    for path in markdown_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            outside += [f"{path.relative_to(ROOT)}:{number}: {m.group(0)}" for m in URL.finditer(line)
                        if m.group(1) not in LOCAL_HOSTS]
    assert outside == []


def test_links_inside_the_repository_exist():
    broken = []
    for path in markdown_files():
        for target in LINK.findall(path.read_text()):
            if "://" in target or target.startswith(("#", "mailto:")):
                continue  # URLs: the test above; anchors: same page
            if not (path.parent / target.split("#", 1)[0]).exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert broken == []


def test_the_url_pattern_finds_what_it_must():
    assert [m.group(1) for m in URL.finditer("see https://msgpack.org and ws://[::1]:8080/x")] == ["msgpack.org", "[::1]"]
    assert [m.group(1) for m in URL.finditer("wss://example.org/game/ws/movement")] == ["example.org"]
