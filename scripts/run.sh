#!/usr/bin/env bash
# Run the server: set up the checkout if needed, then `worldserver run` with any arguments
# given here (e.g. --udp-port 9400, --set sim.tick_rate=30). Without a config file or
# arguments the server runs on its embedded defaults. Must not do anything else.
#
# Works from any current directory. When no configuration file applies (no --config, and no
# ./worldserver.toml in the current directory), the server uses this checkout's web client
# (clients/web/dist), gallery pictures (clients/web/images) and data folder (data/), given as
# WORLDSERVER_HTTP_WEB_ROOT, WORLDSERVER_HTTP_IMAGES_DIR and WORLDSERVER_SERVER_DATA_DIR
# unless those are set already; --set and the shortcuts still win. With a configuration file,
# its relative paths are relative to the current directory, as for `worldserver run`.
#
# Options of this script, before the server's:
#   --no-setup  skip the set-up (the checkout is set up already);
#   --dry-run   print the configuration the server would run with (`worldserver config`
#               with the same arguments) and start nothing; implies --no-setup.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
setup=1
command=run
while [ $# -gt 0 ]; do
    case "$1" in
        --no-setup) setup=0 ;;
        --dry-run) setup=0; command=config ;;
        *) break ;;
    esac
    shift
done
own_config=0
for arg in "$@"; do
    case "$arg" in --config|--config=*) own_config=1 ;; esac
done
if [ "$own_config" = 0 ] && [ ! -f worldserver.toml ]; then
    export WORLDSERVER_HTTP_WEB_ROOT="${WORLDSERVER_HTTP_WEB_ROOT:-$ROOT/clients/web/dist}"
    export WORLDSERVER_HTTP_IMAGES_DIR="${WORLDSERVER_HTTP_IMAGES_DIR:-$ROOT/clients/web/images}"
    export WORLDSERVER_SERVER_DATA_DIR="${WORLDSERVER_SERVER_DATA_DIR:-$ROOT/data}"
fi
if [ "$setup" = 1 ]; then
    bash "$ROOT/scripts/setup.sh"
elif [ ! -x "$ROOT/.venv/bin/worldserver" ]; then
    printf 'run: error: %s is not set up; run bash %s/scripts/setup.sh\n' "$ROOT" "$ROOT" >&2
    exit 1
fi
exec "$ROOT/.venv/bin/worldserver" "$command" "$@"
