"""``python -m worldserver``: the same command line as the ``worldserver`` script.

Must not: do anything but call ``worldserver.cli.main`` and exit with its return code.
"""

from worldserver.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
