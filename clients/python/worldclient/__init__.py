"""worldclient: the Python client of worldserver's UDP protocol and the bot swarm engine.

It speaks the protocol through the sans-IO ``protocol`` package and owns its own sockets and
clock. It must not import anything from the ``worldserver`` server package beyond
``__version__``: a client only knows what the wire tells it. This file imports no submodule.
"""

from worldserver import __version__

__all__ = ["__version__"]
