"""Shared pytest set-up for the worldserver test suite.

Job: make the ``worldtools`` package (which lives in ``tools/``) importable when the tests
run without an install (``python -m pytest`` from the repo root); ``scripts/test.sh`` installs
the project, and then this does nothing. Must not: start servers, change global state beyond
that import alias, or hold fixtures that only one test module needs.
"""

import importlib.util
import pathlib
import sys

_ROOT = pathlib.Path(__file__).resolve().parent.parent

if importlib.util.find_spec("worldtools") is None:  # not installed: alias tools/ as worldtools
    _spec = importlib.util.spec_from_file_location(
        "worldtools",
        _ROOT / "tools" / "__init__.py",
        submodule_search_locations=[str(_ROOT / "tools")],
    )
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["worldtools"] = _module
    _spec.loader.exec_module(_module)
