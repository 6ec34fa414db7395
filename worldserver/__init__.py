"""worldserver: an authoritative, tick-based real-time world server.

The package holds the trio server (``worldserver.app`` and the modules it drives), its
configuration (``worldserver.config``), logging set-up (``worldserver.logs``) and the command
line (``worldserver.cli``). This file only names the version: it must not import trio, numpy
or any submodule, so that ``--version``, ``--help`` and configuration checks stay cheap.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
