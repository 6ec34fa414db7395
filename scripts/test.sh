#!/usr/bin/env bash
# Run the test suite: set up the checkout if needed, then pytest from the repo root with any
# arguments given here (e.g. tests/test_config.py, -m "not slow", -k port). Must not do
# anything else.
#
# Works from any current directory: an argument naming a file or folder that exists from the
# current directory (e.g. test_cli.py run from tests/, with or without ::test_name) is made
# absolute before pytest runs in the repo root; other arguments, and the values of -k, -m,
# -p, -o, -W and -n, are passed as they are (tests/test_x.py from elsewhere is the repo's).
# --no-setup (before pytest's arguments) skips the set-up (the checkout is set up already).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
setup=1
if [ "${1:-}" = "--no-setup" ]; then
    setup=0
    shift
fi
args=()
value_next=0
for arg in "$@"; do
    if [ "$value_next" = 1 ]; then
        value_next=0
    else
        case "$arg" in
            -k|-m|-p|-o|-W|-n) value_next=1 ;;
            -*|/*) ;;
            *) if [ -e "${arg%%::*}" ]; then arg="$PWD/$arg"; fi ;;
        esac
    fi
    args+=("$arg")
done
if [ "$setup" = 1 ]; then
    bash "$ROOT/scripts/setup.sh" --browser --janus
fi
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest ${args[@]+"${args[@]}"}
