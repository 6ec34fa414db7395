#!/usr/bin/env bash
# Set up this checkout for development, tests and running the server.
#
# Idempotent: safe to run before every test or server run. On a fresh Debian machine with
# only python3 and bash it installs python3-venv (when root and needed), creates .venv in the
# repo root and installs the project editable with its test extras, every package at the exact
# version in constraints.txt; the install is redone only when pyproject.toml or
# constraints.txt changed since the last successful one (stamp .venv/.installed-<sha256>).
# It must not touch anything outside the repo except through apt-get, and must not start the
# server or run tests. New set-up steps (npm, chromium, ...) go in their own function below.
# Options: --browser (Debian's chromium for the browser tests, via scripts/web.sh), --janus
# (Debian's janus, the SFU of proximity calls, for its tests and calls.sfu = "janus").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# Serialise concurrent runs (several test runs at once in one tree) on this script's own file.
take_lock() {
    if command -v flock >/dev/null 2>&1; then
        exec 9<"${BASH_SOURCE[0]}"
        flock 9
    fi
}

ensure_python_venv_support() {
    command -v python3 >/dev/null 2>&1 || die "python3 not found"
    if python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        return 0
    fi
    if [ "$(id -u)" != "0" ]; then
        die "python3 cannot create virtual environments; install python3-venv (as root: apt-get install python3-venv python3-pip)"
    fi
    log "installing python3-venv and python3-pip with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq python3-venv python3-pip >/dev/null
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || die "python3 still cannot create virtual environments"
}

ensure_venv() {
    if [ -x "$PY" ] && "$PY" -c 'import sys; assert sys.version_info >= (3, 11)' >/dev/null 2>&1; then
        return 0
    fi
    if [ -e "$VENV" ]; then
        log "recreating broken or outdated .venv"
        rm -rf "$VENV"
    fi
    ensure_python_venv_support
    log "creating .venv"
    python3 -m venv "$VENV"
}

install_python_project() {
    local sha stamp
    sha="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -d' ' -f1)"
    stamp="$VENV/.installed-$sha"
    if [ -e "$stamp" ]; then
        return 0
    fi
    log "installing the project into .venv (pip install -c constraints.txt -e '.[test]')"
    "$PY" -m pip install --quiet --disable-pip-version-check -c "$ROOT/constraints.txt" -e "$ROOT[test]"
    rm -f "$VENV"/.installed-*
    touch "$stamp"
}

# The web client: node dependencies and the esbuild bundle (scripts/web.sh installs node/npm
# with apt-get when missing). With --browser, also Debian's chromium for the browser tests.
build_web_client() {
    bash "$ROOT/scripts/web.sh" "$@"
}

# Debian's janus (WebRTC server; its VideoRoom plugin is the SFU of proximity calls, see
# docs/calls.md) with apt-get when the janus program is missing.
ensure_janus() {
    if command -v janus >/dev/null 2>&1; then
        return 0
    fi
    if [ "$(id -u)" != "0" ]; then
        die "janus missing; install it (as root: apt-get install janus)"
    fi
    log "installing janus with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq janus >/dev/null
    command -v janus >/dev/null 2>&1 || die "janus still not found after installing it"
}

main() {
    local web_args=() want_janus=0
    for arg in "$@"; do
        case "$arg" in
            --browser) web_args+=(--browser) ;;
            --janus) want_janus=1 ;;
            *) die "unknown option: $arg (use --browser or --janus)" ;;
        esac
    done
    take_lock
    ensure_venv
    install_python_project
    build_web_client "${web_args[@]}"
    if [ "$want_janus" = 1 ]; then
        ensure_janus
    fi
}

main "$@"
