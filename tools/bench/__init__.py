"""Benchmarks: each module here is a script (``python tools/bench/<name>.py --help``) that
measures one thing and prints a table or, with ``--json``, one JSON object. Results, with the
command and the machine, are recorded in docs/benchmarks.md. Nothing here is a test."""
