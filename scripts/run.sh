#!/usr/bin/env bash
# Run the server: set up the checkout if needed, then `worldserver run` with any arguments
# given here (e.g. --udp-port 9400, --set sim.tick_rate=30). Without a config file or
# arguments the server runs on its embedded defaults. Must not do anything else.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
exec "$ROOT/.venv/bin/worldserver" run "$@"
