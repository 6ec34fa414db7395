"""The ``worldserver`` command line: ``run``, ``swarm``, ``config``, ``worlds``, and the
commands that steer a running server through its admin API (``status``, ``players``, ``kick``,
``mute``, ``unmute``, ``notice``, ``drain``, ``top``: worldserver/admin_cli.py).

Job: parse arguments, build the effective configuration (file, environment, ``--set`` and
shortcut options), set up logging, and hand over to the server (``worldserver.app.run_server``)
or to the bot swarm (``worldtools.swarm.run_swarm``), both imported lazily so that ``--help``,
``--version``, ``config`` and configuration errors never import them. Before serving, ``run``
checks that the dependencies still have the private names the server patches
(``worldserver.upstream``). Exit codes: 0 ok, 2 usage or configuration error, a dependency
that changed under a patch, or a machine that cannot run the configuration (a port in use,
missing TLS files, a data folder it may not write, a chat database another server holds: see
``worldserver.startup``); otherwise whatever the server or swarm returns.

Must not: contain server, protocol or swarm logic, or print a traceback for a configuration
or usage error (those are one ``error: ...`` line on stderr).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from worldserver import __version__
from worldserver.config import Config, ConfigError, LOG_LEVELS, load_config

__all__ = ["build_parser", "main", "parse_hostport"]

EXIT_OK = 0
EXIT_USAGE = 2

# Shortcut option dest -> setting it sets. Shortcuts win over --set.
_SHORTCUTS = {
    "host": "udp.host",
    "udp_port": "udp.port",
    "tick_rate": "sim.tick_rate",
    "log_level": "server.log_level",
    "data_dir": "server.data_dir",
}


def _set_item(text: str) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    key = key.strip()
    if not eq or "." not in key or not key.split(".", 1)[0] or not key.split(".", 1)[1]:
        raise argparse.ArgumentTypeError(f"expected SECTION.KEY=VALUE, got {text!r}")
    return key, value


def parse_hostport(text: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6addr]:port"`` -> ``(host, port)``; ValueError if malformed."""
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host, int(port_text)


def _hostport_arg(text: str) -> str:
    try:
        parse_hostport(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _bounded(kind: type, lo: float, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be {lo} or more, got {text!r}")
        return value

    return parse


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("configuration")
    group.add_argument(
        "--config",
        metavar="PATH",
        help="TOML configuration file (default: ./worldserver.toml if it exists)",
    )
    group.add_argument(
        "--set",
        dest="sets",
        metavar="SECTION.KEY=VALUE",
        type=_set_item,
        action="append",
        default=[],
        help="override one setting, e.g. --set udp.port=9400 (repeatable; wins over the "
        "file and WORLDSERVER_<SECTION>_<KEY> environment variables)",
    )
    group.add_argument("--host", help="shortcut for --set udp.host=HOST")
    group.add_argument("--udp-port", metavar="PORT", help="shortcut for --set udp.port=PORT")
    group.add_argument("--tick-rate", metavar="HZ", help="shortcut for --set sim.tick_rate=HZ")
    group.add_argument(
        "--log-level",
        metavar="LEVEL",
        help=f"shortcut for --set server.log_level=LEVEL ({', '.join(LOG_LEVELS)})",
    )
    group.add_argument("--data-dir", metavar="DIR", help="shortcut for --set server.data_dir=DIR")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="worldserver",
        description="Authoritative real-time world server for shared 3D spaces.",
    )
    parser.add_argument("--version", action="version", version=f"worldserver {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the server",
        description="Run the server until interrupted (Ctrl-C or SIGTERM).",
    )
    _add_config_options(run)

    swarm = commands.add_parser(
        "swarm",
        help="drive a server with a swarm of bots and report latency and bandwidth",
        description="Connect simulated clients to a running server and measure it.",
    )
    swarm.add_argument(
        "--server", default=None, metavar="HOST:PORT", type=_hostport_arg,
        help="address of the server's UDP endpoint (--transport udp)",
    )
    swarm.add_argument(
        "--transport", choices=("udp", "webrtc", "ws"), default="udp",
        help="udp (default), webrtc (geckos.io data channels) or ws (WebSocket /ws/movement)",
    )
    swarm.add_argument(
        "--http", metavar="URL", default=None,
        help="the server's HTTP base URL, e.g. http://127.0.0.1:8080: webrtc and ws connect there;"
        " udp bots join there first (default for udp: http://HOST:8080)",
    )
    swarm.add_argument(
        "--anonymous", action="store_true",
        help="udp bots connect without joining (only servers with net.require_connect_token = false"
        " accept them)",
    )
    swarm.add_argument(
        "--bots", type=_bounded(int, 1, "an integer"), default=10, metavar="N",
        help="number of bots (default: 10)",
    )
    swarm.add_argument(
        "--duration", type=_bounded(float, 0.0, "a number of seconds"), default=10.0,
        metavar="S", help="seconds measured, after the bots have joined and connected (the report says how"
        " long that set-up took; default: 10)",
    )
    swarm.add_argument(
        "--processes", type=_bounded(int, 1, "an integer"), default=1, metavar="P",
        help="worker processes to spread the bots over (default: 1)",
    )
    swarm.add_argument(
        "--observers", type=_bounded(int, 0, "an integer"), default=16, metavar="K",
        help="bots that decode full snapshots and measure latency (default: 16)",
    )
    swarm.add_argument(
        "--chat-rate", type=_bounded(float, 0.0, "a number of messages per second"), default=0.0,
        metavar="R", help="each bot also chats on /ws/chat at R messages per second (needs --http; at most "
        "the server's per-user limit, chat.rate); the report adds chat delivery latency and the deliveries "
        "missing and duplicate, per message (default: 0, no chat)",
    )
    swarm.add_argument("--seed", type=int, default=None, help="random seed for bot behaviour")
    swarm.add_argument("--json", action="store_true", help="print the report as JSON (and no progress lines)")
    swarm.add_argument(
        "--quiet", action="store_true",
        help="no progress lines on stderr (by default one a second: connected bots, snapshots/s, "
        "latency p99, losses)",
    )
    swarm.add_argument(
        "--log-level", default="WARNING", type=str.upper, choices=LOG_LEVELS,
        metavar="LEVEL", help="log level of the swarm itself (default: WARNING)",
    )

    worlds = commands.add_parser(
        "worlds",
        help="list the worlds a running server hosts; open, close, reload them, hang pictures",
        description="Ask a running server (GET /api/worlds) which worlds it hosts; with an action, change "
        "them through the admin API (the action's options come after it).",
    )
    worlds.add_argument(
        "--url", metavar="URL", default=None,
        help="the server's HTTP base URL (default: http://127.0.0.1:<http.port of the config>)",
    )
    worlds.add_argument("--json", action="store_true", help="print the answer as JSON")
    _add_config_options(worlds)

    config = commands.add_parser(
        "config",
        help="print the effective configuration as TOML",
        description="Print the configuration that `run` would use with the same options, "
        "after the file, WORLDSERVER_* environment variables and --set are applied.",
    )
    _add_config_options(config)
    from worldserver.admin_cli import add_commands, add_world_commands  # status, players, kick, ...: the admin API's

    add_commands(commands, _add_config_options, _effective_config)
    add_world_commands(worlds, _add_config_options, _effective_config)
    return parser


def _effective_config(args: argparse.Namespace) -> Config:
    overrides: dict[str, str] = {}
    for key, value in args.sets:
        overrides[key] = value
    for dest, key in _SHORTCUTS.items():
        value = getattr(args, dest, None)
        if value is not None:
            overrides[key] = value
    return load_config(
        args.config, env=os.environ, overrides=overrides, override_source="the command line"
    )


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        config = _effective_config(args)
    except ConfigError as exc:
        return _error(str(exc))
    from worldserver.upstream import UpstreamChanged, check_all

    try:
        check_all(webrtc=config.webrtc.enabled)
    except UpstreamChanged as exc:
        return _error(str(exc))
    from worldserver.logs import setup_logging

    setup_logging(config.server.log_level, config.server.log_format)
    from worldserver.app import run_server
    from worldserver.startup import StartupError

    try:
        return int(run_server(config) or 0)
    except StartupError as exc:  # a port in use, a folder it may not write, ...: one line
        return _error(str(exc))
    except KeyboardInterrupt:
        return 130


def _cmd_config(args: argparse.Namespace) -> int:
    try:
        config = _effective_config(args)
    except ConfigError as exc:
        return _error(str(exc))
    sys.stdout.write(config.to_toml())
    return EXIT_OK


def _cmd_worlds(args: argparse.Namespace) -> int:
    import json
    import urllib.error
    import urllib.request

    url = args.url
    if url is None:
        try:
            config = _effective_config(args)
        except ConfigError as exc:
            return _error(str(exc))
        url = f"http://127.0.0.1:{config.http.port}"
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/api/worlds", timeout=5) as answer:
            data = json.loads(answer.read())
    except RecursionError:  # an answer nested thousands deep
        print(f"error: the server at {url} answered JSON nested too deeply", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"error: cannot reach the server at {url}: {reason}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(data))
        return EXIT_OK
    rows = [(w["id"] + (" (default)" if w["id"] == data.get("default") else ""), w["title"], str(w["players"]))
            for w in data.get("worlds", [])]
    widths = [max(len(r[i]) for r in rows + [("world", "title", "players")]) for i in range(3)]
    for row in [("world", "title", "players"), *rows]:
        print(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}")
    return EXIT_OK


def _cmd_swarm(args: argparse.Namespace) -> int:
    from worldserver.logs import setup_logging

    setup_logging(args.log_level, "text")
    try:
        from worldtools.swarm import run_swarm
    except ModuleNotFoundError as exc:
        if exc.name in ("worldtools", "worldtools.swarm"):
            print(
                "error: the swarm engine (worldtools.swarm) is not installed; "
                "run `bash scripts/setup.sh` or `pip install -e .`",
                file=sys.stderr,
            )
            return 1
        raise
    try:
        return int(run_swarm(args) or 0)
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse already printed
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_USAGE)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    handler = getattr(args, "admin_command", None) or {
        "run": _cmd_run, "swarm": _cmd_swarm, "config": _cmd_config, "worlds": _cmd_worlds}[args.command]
    return handler(args)
