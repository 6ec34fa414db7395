"""Proximity calls (docs/calls.md): groups from positions, the call service, the SFU seam.

Job: be the package of the call parts: :mod:`worldserver.calls.groups` (sans-IO group
formation), :mod:`worldserver.calls.service` (the per-server call service), and
:mod:`worldserver.calls.sfu` (the interface to a media server) with its Janus implementation
:mod:`worldserver.calls.janus`.

Must not: import anything at import time: importing ``worldserver.calls`` only defines the
package; callers import the module they need.
"""
