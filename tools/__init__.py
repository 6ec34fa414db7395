"""worldtools: operator and developer tools for worldserver (installed as package ``worldtools``).

Holds the bot swarm runner (``worldtools.swarm``), the benchmarks (``worldtools.bench``), the
loopback network impairment relay (``worldtools.netsim``) and the one runner of a server under
test (``worldtools.server_process``).
Tools talk to a server only as a client would, over the network; they must not import server
internals to reach into a running server, and this file must not import any submodule.
"""
