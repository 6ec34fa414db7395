"""worldclient: the Python client of worldserver's UDP protocol and the bot swarm engine.

It speaks the protocol through the sans-IO ``protocol`` package and owns its own sockets and
clock. It must not import anything from the ``worldserver`` server package: a client only
knows what the wire tells it, and it installs and runs without the server. What both need
lives here and the server imports it from here (``aio_bridge``: trio as a guest on asyncio, for
aiortc; ``ice``: aioice's host addresses). This file imports no submodule.
"""

__version__ = "0.1.0"  # the project's version (pyproject.toml; tests/test_client_standalone.py)

__all__ = ["__version__"]
