#!/usr/bin/env bash
# Run the test suite: set up the checkout if needed, then pytest from the repo root with any
# arguments given here (e.g. tests/test_config.py, -m "not slow", -k port). Must not do
# anything else.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh" --browser
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest "$@"
