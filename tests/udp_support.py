"""Helpers shared by the tests that run UDP clients against a server started in process.

:func:`mint_tickets` gives connect tokens and keys as ``POST /api/join`` would (the server's
own ``ConnectAdmission.issue`` for logged-in identities), minted in process: on trio's
autojump clock an HTTP join would wait for the database's worker thread while virtual time
runs on.

Must not: open sockets, start servers, or wait.
"""

from __future__ import annotations

import trio


def mint_tickets(running, n: int, first_identity: int = 900_000) -> list[tuple[bytes, bytes]]:
    """``n`` (connect token, connect key) pairs for identities ``first_identity``, ... of the
    running server ``running`` (what ``worldserver.app.serve`` starts with)."""
    tickets = []
    for i in range(n):
        identity = first_identity + i
        running.identities.issue(identity, f"mint-{identity}")
        fields = running.udp.admission.issue(identity, trio.current_time())
        tickets.append((bytes.fromhex(fields["connect_token"]), bytes.fromhex(fields["connect_key"])))
    return tickets
