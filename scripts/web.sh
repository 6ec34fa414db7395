#!/usr/bin/env bash
# Set up and build the web client (clients/web) into clients/web/dist.
#
# Idempotent and quick when nothing changed:
#   - node dependencies: `npm ci` when clients/web/package-lock.json changed since the last
#     successful install (stamp clients/web/node_modules/.installed-<sha256 of the lock>);
#   - build: esbuild bundle into clients/web/dist when any source changed since the last
#     successful build (stamp clients/web/dist/.built-<sha256 of the sources and the lock>);
#   - with --browser: install Debian's chromium with apt-get when /usr/bin/chromium is missing
#     (needed by the browser tests; playwright's own browser download is not used).
# Options: --browser (also make sure chromium is there), --force (rebuild even if current),
# --check (only report whether node, the dependencies, the build and chromium are present).
# Must not start the server or run tests; touches nothing outside clients/web except
# through apt-get.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WEB="$ROOT/clients/web"
DIST="$WEB/dist"
CHROMIUM="${WORLDSERVER_CHROMIUM:-/usr/bin/chromium}"

log() { printf 'web: %s\n' "$*" >&2; }
die() { printf 'web: error: %s\n' "$*" >&2; exit 1; }

want_browser=0
force=0
check=0
for arg in "$@"; do
    case "$arg" in
        --browser) want_browser=1 ;;
        --force) force=1 ;;
        --check) check=1 ;;
        -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown option: $arg (use --browser, --force or --check)" ;;
    esac
done

# Serialise concurrent runs (setup, run and tests may call this at the same time).
take_lock() {
    if command -v flock >/dev/null 2>&1; then
        exec 8<"${BASH_SOURCE[0]}"
        flock 8
    fi
}

apt_install() {
    if [ "$(id -u)" != "0" ]; then
        die "$* missing; install it (as root: apt-get install $*)"
    fi
    log "installing $* with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "$@" >/dev/null
}

ensure_node() {
    if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
        return 0
    fi
    apt_install nodejs npm
    command -v node >/dev/null 2>&1 || die "node still not found after installing nodejs"
}

sources_hash() {
    # Every file that goes into the bundle, plus the lock file (dependency versions).
    (
        cd "$WEB"
        find src -type f -name '*.js' | LC_ALL=C sort
        printf '%s\n' index.html styles.css admin.html admin.css build.mjs package.json package-lock.json
    ) | while read -r f; do
        printf '%s  %s\n' "$(sha256sum "$WEB/$f" | cut -d' ' -f1)" "$f"
    done | sha256sum | cut -d' ' -f1
}

lock_hash() {
    sha256sum "$WEB/package-lock.json" | cut -d' ' -f1
}

install_deps() {
    local stamp
    stamp="$WEB/node_modules/.installed-$(lock_hash)"
    if [ -e "$stamp" ]; then
        return 0
    fi
    log "installing node dependencies (npm ci)"
    (cd "$WEB" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    rm -f "$WEB"/node_modules/.installed-*
    touch "$stamp"
}

build() {
    local stamp
    stamp="$DIST/.built-$(sources_hash)"
    if [ "$force" = 0 ] && [ -e "$stamp" ] && [ -e "$DIST/app.js" ] && [ -e "$DIST/index.html" ] && [ -e "$DIST/admin.js" ]; then
        return 0
    fi
    log "building the web client into clients/web/dist"
    (cd "$WEB" && node build.mjs >/dev/null)
    touch "$stamp"
}

ensure_chromium() {
    if [ -x "$CHROMIUM" ]; then
        return 0
    fi
    apt_install chromium
    [ -x "$CHROMIUM" ] || die "chromium still not found at $CHROMIUM"
}

report() {
    local ok=0
    if command -v node >/dev/null 2>&1; then log "node: $(node --version)"; else log "node: missing"; ok=1; fi
    if [ -e "$WEB/node_modules/.installed-$(lock_hash)" ]; then log "dependencies: current"; else log "dependencies: missing or stale"; ok=1; fi
    if [ -e "$DIST/.built-$(sources_hash)" ]; then log "build: current"; else log "build: missing or stale"; ok=1; fi
    if [ -x "$CHROMIUM" ]; then log "chromium: $CHROMIUM"; else log "chromium: missing"; [ "$want_browser" = 0 ] || ok=1; fi
    return "$ok"
}

main() {
    [ -f "$WEB/package-lock.json" ] || die "clients/web/package-lock.json not found"
    if [ "$check" = 1 ]; then
        report
        return
    fi
    take_lock
    ensure_node
    install_deps
    build
    if [ "$want_browser" = 1 ]; then
        ensure_chromium
    fi
}

main
