"""Probes of the private upstream names the server patches: loud failure, never a silent fallback.

Job: a few modules reach into private internals of a dependency, each package from one place
only: hypercorn from ``worldserver.http_guard`` (its trio worker's connection class, the ASGI
wrapper, and the connection behind a WebSocket's ``send``), trio from
``worldserver.chat.fanout`` (the stdlib socket inside trio's socket), aioice from
``worldserver.rtc`` (``get_host_addresses``) and aiortc from ``worldserver.sctp_acks`` (the
SCTP transport's acknowledgement internals). Each of those modules has a ``check_upstream()``
that states what its patch relies on with the helpers here: the name exists, has the
parameters the patch calls it with, a constructor still assigns the attributes the patch reads,
a function still looks up the name the patch replaces. A mismatch raises
:class:`UpstreamChanged`, one line naming the patch and the upstream name. The patching module
calls its check where it installs the patch (the server's start); :func:`check_all` runs them
all (``worldserver run`` before serving, and tests/test_upstream_probes.py). The versions they
were checked against are pinned in constraints.txt (docs/architecture.md, "Pinned
dependencies").

Must not: patch anything, run a check at import time, or hold a patched name itself (the
patching modules do; this module knows no upstream package).
"""

from __future__ import annotations

import dis
import importlib
import inspect
import types
from collections.abc import Callable, Iterable
from importlib import metadata

__all__ = [
    "PROBED_MODULES",
    "UpstreamChanged",
    "assigned_attributes",
    "attributes_used",
    "check_all",
    "globals_used",
    "require",
    "require_coroutine",
    "require_names",
]

# The modules that reach into a dependency, with the package each reaches into (one module per
# package). "webrtc" modules import aiortc: checked only when WebRTC runs.
PROBED_MODULES: tuple[tuple[str, str, bool], ...] = (
    ("worldserver.http_guard", "hypercorn", False),
    ("worldserver.chat.fanout", "trio", False),
    ("worldserver.rtc", "aioice", True),
    ("worldserver.sctp_acks", "aiortc", True),
)


class UpstreamChanged(RuntimeError):
    """An upstream private name no longer has the shape a patch of ours relies on."""

    def __init__(self, package: str, name: str, patch: str, problem: str) -> None:
        self.package, self.name, self.patch = package, name, patch
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            version = "?"
        super().__init__(
            f"{package} {version}: {name} {problem}; the patch {patch} relies on it "
            f"(install the versions in constraints.txt, or review the patch: docs/architecture.md, "
            f"'Pinned dependencies')"
        )


def require(ok: bool, package: str, name: str, patch: str, problem: str) -> None:
    """Raise :class:`UpstreamChanged` unless ``ok``."""
    if not ok:
        raise UpstreamChanged(package, name, patch, problem)


def _code_objects(code: types.CodeType) -> Iterable[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _instructions(func: Callable, opnames: frozenset[str]) -> set[str]:
    code = inspect.unwrap(func).__code__
    return {ins.argval for c in _code_objects(code) for ins in dis.get_instructions(c)
            if ins.opname in opnames and isinstance(ins.argval, str)}


_STORE = frozenset({"STORE_ATTR"})
_LOAD_ATTR = frozenset({"LOAD_ATTR", "LOAD_METHOD", "STORE_ATTR", "DELETE_ATTR"})
_LOAD_GLOBAL = frozenset({"LOAD_GLOBAL", "LOAD_NAME"})


def assigned_attributes(func: Callable) -> set[str]:
    """Attribute names ``func`` (nested functions included) assigns (``x.name = ...``)."""
    return _instructions(func, _STORE)


def attributes_used(func: Callable) -> set[str]:
    """Attribute names ``func`` reads, calls or assigns (``x.name``)."""
    return _instructions(func, _LOAD_ATTR)


def globals_used(func: Callable) -> set[str]:
    """Module-level names ``func`` looks up when it runs (so a patched module attribute is seen)."""
    return _instructions(func, _LOAD_GLOBAL)


def require_names(names: Iterable[str], found: set[str], package: str, where: str, patch: str,
                  what: str) -> None:
    """Every one of ``names`` is in ``found`` (what ``where`` assigns, uses, ...)."""
    missing = sorted(set(names) - found)
    require(not missing, package, where, patch, f"no longer {what} {', '.join(missing)}")


def require_coroutine(owner, attr: str, params: tuple[str, ...], package: str, patch: str) -> None:
    """``owner.attr`` is a coroutine function whose parameters are exactly ``params``."""
    if isinstance(owner, types.ModuleType):
        qualname = f"{owner.__name__}.{attr}"
    else:
        qualname = f"{owner.__module__}.{owner.__qualname__}.{attr}"
    require(hasattr(owner, attr), package, qualname, patch, "no longer exists")
    func = getattr(owner, attr)
    require(inspect.iscoroutinefunction(func), package, qualname, patch, "is no longer a coroutine function")
    found = tuple(inspect.signature(func).parameters)
    require(found == params, package, qualname, patch,
            f"has the parameters ({', '.join(found)}), not ({', '.join(params)})")


def check_all(*, webrtc: bool = True) -> None:
    """Run every patching module's ``check_upstream()``; ``webrtc=False`` leaves out the
    aiortc/aioice ones (importing aiortc costs about 0.25 s, and nothing patches it then)."""
    for module_name, _package, needs_webrtc in PROBED_MODULES:
        if needs_webrtc and not webrtc:
            continue
        importlib.import_module(module_name).check_upstream()
