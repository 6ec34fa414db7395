"""Makes ``worldtools`` importable when a benchmark runs from a checkout without an install.

Job: ``python tools/bench/NAME.py`` puts ``tools/bench`` first on ``sys.path``; importing this
module then adds the repository's roots to ``sys.path`` and registers ``tools/`` as the package
``worldtools`` (as ``tests/conftest.py`` does for the tests). With the project installed
(``bash scripts/setup.sh``) the benchmarks import ``worldtools`` directly and never this.

Must not: do anything but that, or be imported by code that runs in the server.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]

if "worldtools" not in sys.modules:
    for extra in (str(ROOT / "clients" / "python"), str(ROOT)):
        if extra not in sys.path:
            sys.path.insert(0, extra)
    _spec = importlib.util.spec_from_file_location(
        "worldtools", ROOT / "tools" / "__init__.py", submodule_search_locations=[str(ROOT / "tools")]
    )
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["worldtools"] = _module
    _spec.loader.exec_module(_module)
