"""Headless bot swarm: many simulated clients driving a running worldserver, and a report.

Job: connect N bots to a server over a real transport (UDP, WebRTC data channels or the
``/ws/movement`` WebSocket), each with its own connection and handshake, send inputs at 20 Hz
(a random walk inside the world bounds), and measure what the clients get: snapshots and
bytes per bot per second, packet loss, handshake and connection failures, and the
move-to-observed latency seen by a few "observer" bots that decode every snapshot. First the
bots join and connect (the set-up, not counted), then ``duration`` seconds are measured, in
every worker process from one common instant; the report says how long each took.

The modules, each with one job:

- :mod:`~worldtools.swarm.transport`: the transport interface (a typing Protocol);
  :mod:`~worldtools.swarm.udp`, :mod:`~worldtools.swarm.webrtc` and
  :mod:`~worldtools.swarm.ws` implement it (the last two on
  :mod:`~worldtools.swarm.channels`, which also has their entry points);
- :mod:`~worldtools.swarm.bots`: the bots (walk, handshake, counting, observers), one set
  for every transport;
- :mod:`~worldtools.swarm.loop`: the one loop of a process (set-up, then measurement);
- :mod:`~worldtools.swarm.processes`: the one runner of worker processes;
- :mod:`~worldtools.swarm.report`: the one report (merge, derived figures, table);
- :mod:`~worldtools.swarm.command`: ``worldserver swarm`` and ``python -m worldtools.swarm``.

This package's names are the ones tools use: :func:`run_swarm` (the command), the UDP swarm
(:func:`run_bots`, :func:`run_processes`, :func:`join_bots`: the default transport) and the
report's functions; the browser transports' entries are in :mod:`worldtools.swarm.channels`.

Must not: import server internals to reach into a running server (bots know only what the
wire tells them), talk to anything but the addresses it was given, or run unbounded.
"""

from worldtools.swarm.command import run_swarm
from worldtools.swarm.report import format_report, make_report, merge_results, public_report
from worldtools.swarm.udp import join_bots, run_bots, run_processes

__all__ = ["format_report", "join_bots", "make_report", "merge_results", "public_report", "run_bots",
           "run_processes", "run_swarm"]
