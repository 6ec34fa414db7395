"""``python -m worldtools.swarm``: the swarm's command line (:func:`worldtools.swarm.command.main`).

Job: run the command and exit with its code. Must not: hold anything else.
"""

import sys

from worldtools.swarm.command import main

sys.exit(main())
