"""The ``worldserver`` commands that steer a running server: ``status``, ``players``, ``kick``,
``mute``, ``unmute``, ``notice``, ``drain`` and ``top``, and the world commands ``worlds open``,
``worlds close``, ``worlds reload``, ``worlds hang`` and ``worlds unhang``
(:func:`add_world_commands`; worldserver/world_admin.py does them).

Job: :func:`add_commands` declares them on the ``worldserver`` parser (worldserver/cli.py);
each one asks the server's admin API (``/admin/api/``, worldserver/admin_api.py) over HTTP
with the stdlib's urllib and prints a readable table, or with ``--json`` the answer as JSON for
scripts. The server is found from ``--url`` or the configuration's HTTP port (and host, when
it binds one address); the token comes from ``--token``, ``WORLDSERVER_SERVER_ADMIN_TOKEN``,
the configuration's ``server.admin_token``, or the file a server without one writes,
``<server.data_dir>/admin.token``, in that order.

Exit codes: 0 done; 1 the server answered no (an unknown player, a wrong token, ...) or could
not be reached, each said in one ``error: ...`` line on stderr; 2 a usage or configuration
error (argparse's, or one ``error: ...`` line).

Must not: import the server (only the HTTP API is used), print a traceback for an operator's
mistake or an unreachable server, or wait without a deadline.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

__all__ = ["TOKEN_ENV", "add_commands", "add_world_commands", "server_url"]

TOKEN_ENV = "WORLDSERVER_SERVER_ADMIN_TOKEN"
TIMEOUT = 10.0  # seconds for one request
EXIT_OK, EXIT_NO, EXIT_USAGE = 0, 1, 2
TOP_INTERVAL = 1.0
CLEAR = "\x1b[H\x1b[2J"
_ANY_HOST = ("", "0.0.0.0", "::")


class _Failed(Exception):
    """Ends a command: ``message`` on stderr (as ``error: ...``), exit ``code``."""

    def __init__(self, message: str, code: int = EXIT_NO) -> None:
        super().__init__(message)
        self.message, self.code = message, code


def server_url(config) -> str:
    """The HTTP base URL of the server ``config`` describes, as seen from this machine."""
    host = config.http.host
    if host in _ANY_HOST:
        host = "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if config.http.certfile else "http"
    return f"{scheme}://{shown}:{config.http.port}"


# -- the commands ------------------------------------------------------------------------------


def add_commands(commands, add_config_options: Callable, effective_config: Callable) -> None:
    """Declare the admin commands on ``commands`` (the parser's subparsers); each parser's
    ``admin_command`` default is its handler (``args -> exit code``). ``effective_config(args)``
    builds the configuration from the options ``add_config_options(parser)`` declares."""
    parsers = {}

    def common(parser: argparse.ArgumentParser) -> None:
        _common_options(parser, add_config_options)

    def seconds(what: str, lo: float, hi: float):
        def parse(text: str) -> float:
            try:
                value = float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
            if not math.isfinite(value) or not lo <= value <= hi:
                raise argparse.ArgumentTypeError(f"must be between {lo:g} and {hi:g}, got {text!r}")
            return value

        return parse

    p = parsers["status"] = commands.add_parser(
        "status", help="a running server's figures: tick, clients, bytes, drops, chat",
        description="Ask a running server for its figures (GET /admin/api/status).")
    common(p)
    p = parsers["players"] = commands.add_parser("players", help="the players of a running server",
                            description="List a running server's players (GET /admin/api/players).")
    common(p)
    p = parsers["kick"] = commands.add_parser("kick", help="end a player's session on every transport (and ban it)",
                            description="Kick a player: its avatar leaves the world, its chat sockets close "
                            "with the reason; with --ban its name (and UDP address) is refused for a while.")
    p.add_argument("id", metavar="ID", help="the player's id (worldserver players) or name")
    p.add_argument("--reason", default="kicked by the operator", help="told to the player (chat close reason)")
    p.add_argument("--ban", type=seconds("seconds", 0, 365 * 86400), default=0.0, metavar="SECONDS",
                   help="refuse the player's name, and its address over UDP, for this long (default: 0)")
    common(p)
    p = parsers["mute"] = commands.add_parser("mute", help="keep a player from writing in the chat",
                            description="Mute a player in the chat (POST /admin/api/players/ID/mute).")
    p.add_argument("id", metavar="ID", help="the player's id (worldserver players) or name")
    p.add_argument("--seconds", type=seconds("seconds", 1, 86400), default=600.0, metavar="S",
                   help="how long (default: 600)")
    common(p)
    p = parsers["unmute"] = commands.add_parser("unmute", help="lift a player's chat mute",
                            description="Lift a player's chat mute (POST /admin/api/players/ID/unmute).")
    p.add_argument("id", metavar="ID", help="the player's id (worldserver players) or name")
    common(p)
    p = parsers["notice"] = commands.add_parser("notice", help="post a notice from the server in the chat",
                            description="Post a notice-kind chat message from the server in one room, or in "
                            "every public room and every room someone is in.")
    p.add_argument("text", metavar="TEXT")
    p.add_argument("--room", default=None, metavar="ROOM", help="a room id or name (default: every room)")
    common(p)
    p = parsers["drain"] = commands.add_parser("drain", help="stop a server gently: no one new, a notice, then exit 0",
                            description="Drain a running server: it takes no new players, tells the connected "
                            "ones in the chat, waits until they left or the grace ran out, then exits 0.")
    p.add_argument("--grace", type=seconds("seconds", 0, 86400), default=None, metavar="S",
                   help="seconds to wait for the players (default: the server's server.drain_grace)")
    p.add_argument("--wait", action="store_true", help="wait until the server has stopped")
    common(p)
    p = parsers["top"] = commands.add_parser("top", help="a live view of a running server's status",
                            description="Show the status of a running server, refreshed every second, until Ctrl-C.")
    p.add_argument("--count", type=int, default=0, metavar="N", help="stop after N refreshes (default: never)")
    common(p)

    for name, run in (("status", _status), ("players", _players), ("kick", _kick), ("mute", _mute),
                      ("unmute", _unmute), ("notice", _notice), ("drain", _drain), ("top", _top)):
        parsers[name].set_defaults(admin_command=_handler(run, effective_config))


def add_world_commands(worlds: argparse.ArgumentParser, add_config_options: Callable,
                       effective_config: Callable) -> None:
    """Declare ``open``, ``close``, ``reload``, ``hang`` and ``unhang`` under the ``worlds``
    command (which alone lists the worlds, worldserver/cli.py); their options come after the
    action (``worldserver worlds close halls --reason ...``)."""
    actions = worlds.add_subparsers(dest="worlds_action", metavar="ACTION",
                                    title="actions (none: list the worlds)")
    p = actions.add_parser("open", help="host one more world", description=(
        "Open a world in a running server (POST /admin/api/worlds): a built-in id, open, or a world file. "
        "A path of an existing file here is sent as an absolute path: the server reads it (same machine)."))
    p.add_argument("world", metavar="FILE_OR_ID")
    _common_options(p, add_config_options)
    p.set_defaults(admin_command=_handler(_world_open, effective_config))
    p = actions.add_parser("close", help="close a world: its players are told why and leave", description=(
        "Close a world (POST /admin/api/worlds/ID/close): a chat notice, then every player in it gets "
        "DISCONNECT world_closed with the reason. The default world cannot be closed."))
    p.add_argument("id", metavar="ID")
    p.add_argument("--reason", default=None, help="told to the players (default: the server's)")
    _common_options(p, add_config_options)
    p.set_defaults(admin_command=_handler(_world_close, effective_config))
    p = actions.add_parser("reload", help="read a world's file again and apply it; the players stay",
                           description="Reload a world's file (POST /admin/api/worlds/ID/reload): walls, "
                           "spawns and pictures change at once; avatars inside a new wall move to the nearest "
                           "clear point.")
    p.add_argument("id", metavar="ID")
    _common_options(p, add_config_options)
    p.set_defaults(admin_command=_handler(_world_reload, effective_config))
    p = actions.add_parser("hang", help="hang a picture in a world's picture slot", description=(
        "Upload an image into a picture slot (PUT /admin/api/worlds/ID/pictures/SLOT); it is checked like a "
        "chat image, and every connected page shows it within seconds."))
    p.add_argument("id", metavar="ID")
    p.add_argument("slot", metavar="SLOT")
    p.add_argument("file", metavar="IMAGE", help="a PNG, JPEG or WebP file")
    p.add_argument("--title", default="", help="the picture's title, on its plaque (one line, at most 100 "
                   "characters; none: untitled)")
    _common_options(p, add_config_options)
    p.set_defaults(admin_command=_handler(_world_hang, effective_config))
    p = actions.add_parser("unhang", help="take a picture down: the slot shows an empty frame",
                           description="Empty a picture slot (DELETE /admin/api/worlds/ID/pictures/SLOT).")
    p.add_argument("id", metavar="ID")
    p.add_argument("slot", metavar="SLOT")
    _common_options(p, add_config_options)
    p.set_defaults(admin_command=_handler(_world_unhang, effective_config))


def _common_options(parser: argparse.ArgumentParser, add_config_options: Callable) -> None:
    parser.add_argument("--url", metavar="URL", default=None,
                        help="the server's HTTP base URL (default: from the config's http.port and http.host)")
    parser.add_argument("--token", metavar="TOKEN", default=None,
                        help=f"the admin token (default: ${TOKEN_ENV}, server.admin_token, "
                        "or <server.data_dir>/admin.token)")
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")
    add_config_options(parser)


def _handler(run: Callable, effective_config: Callable) -> Callable:
    def handle(args: argparse.Namespace) -> int:
        try:
            client = _Client.from_args(args, effective_config)
            return run(client, args)
        except _Failed as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return exc.code
        except KeyboardInterrupt:
            return EXIT_OK if args.command == "top" else 130

    return handle


# -- talking to the server ---------------------------------------------------------------------


class _Client:
    def __init__(self, url: str, token: str, token_from: str, context: ssl.SSLContext | None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.token_from = token_from
        self.context = context

    @classmethod
    def from_args(cls, args: argparse.Namespace, effective_config: Callable) -> _Client:
        from worldserver.config import ConfigError  # the configuration only, never the server

        config = None
        if args.url is None or args.token is None:
            try:
                config = effective_config(args)
            except ConfigError as exc:
                raise _Failed(str(exc), EXIT_USAGE) from None
        url = args.url if args.url is not None else server_url(config)
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise _Failed(f"--url: expected an http:// or https:// URL, got {url!r}", EXIT_USAGE)
        token, token_from = _find_token(args, config)
        context = None
        if url.startswith("https:") and args.url is None:  # the server's own certificate, on this machine
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return cls(url, token, token_from, context)

    def call(self, method: str, path: str, body: dict | bytes | None = None) -> dict:
        """The JSON answer of ``/admin/api/<path>``; raises _Failed for anything else. A
        ``bytes`` body is sent as it is (an image), a dict as JSON."""
        raw = isinstance(body, bytes)
        data = body if raw or body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/admin/api/{path}", data=data, method=method,
            headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json",
                     "Content-Type": "application/octet-stream" if raw else "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT, context=self.context) as answer:
                return json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                raise _Failed(f"the server at {self.url} refused the admin token (from {self.token_from})") from None
            try:
                message = json.loads(exc.read()).get("error") or exc.reason
            except (ValueError, AttributeError, OSError, RecursionError):
                message = exc.reason
            raise _Failed(f"{message} ({exc.code})") from None
        except RecursionError:  # json.loads of an answer nested thousands deep
            raise _Failed(f"the server at {self.url} answered JSON nested too deeply") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Failed(f"cannot reach the server at {self.url}: {reason}") from None

    def reachable(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=TIMEOUT, context=self.context):
                return True
        except urllib.error.HTTPError:
            return True
        except (urllib.error.URLError, OSError, ValueError):
            return False


def _find_token(args: argparse.Namespace, config) -> tuple[str, str]:
    """(token, where it came from): --token, the environment, the config, the token file."""
    if args.token:
        return args.token, "--token"
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV], TOKEN_ENV
    if config is not None and config.server.admin_token:
        return config.server.admin_token, "server.admin_token"
    path = os.path.join(config.server.data_dir, "admin.token") if config is not None else "admin.token"
    try:
        with open(path, encoding="utf-8") as file:
            token = file.read().strip()
    except OSError as exc:
        raise _Failed(f"no admin token: give --token, set {TOKEN_ENV} or server.admin_token, or run this "
                      f"where the server's {path} can be read ({exc.strerror or exc})", EXIT_USAGE) from None
    if not token:
        raise _Failed(f"no admin token: {path} is empty", EXIT_USAGE)
    return token, path


# -- each command ------------------------------------------------------------------------------


def _print_json(value) -> None:
    print(json.dumps(value, ensure_ascii=False))


def _status(client: _Client, args) -> int:
    status = client.call("GET", "status")
    if args.json:
        _print_json(status)
    else:
        print(_status_text(status, client.url))
    return EXIT_OK


def _players(client: _Client, args) -> int:
    players = client.call("GET", "players")["players"]
    if args.json:
        _print_json(players)
        return EXIT_OK
    header = ("id", "name", "world", "transport", "address", "position", "rtt ms", "connected", "in", "out")
    rows = [(str(p["id"]), p["name"] or "-", p["world"], p["transport"], p["address"] or "-",
             " ".join(f"{v:.1f}" for v in p["position"]), "-" if p["rtt_ms"] is None else f"{p['rtt_ms']:.0f}",
             _duration(p["connected_for"]), _bytes(p["bytes_in"]), _bytes(p["bytes_out"])) for p in players]
    print(_table(header, rows, right={0, 6, 7, 8, 9}))
    if not players:
        print("(no players)")
    return EXIT_OK


def _kick(client: _Client, args) -> int:
    answer = client.call("POST", f"players/{urllib.parse.quote(args.id, safe='')}/kick",
                         {"reason": args.reason, "ban": args.ban})
    if args.json:
        _print_json(answer)
    else:
        ban = f"; banned for {answer['ban']:g} s" if answer["ban"] else ""
        print(f"kicked {answer['name'] or args.id}: {answer['sessions']} avatar(s), "
              f"{answer['chat_sockets']} chat socket(s){ban}")
    return EXIT_OK


def _mute(client: _Client, args) -> int:
    seconds = int(args.seconds) if float(args.seconds).is_integer() else args.seconds
    answer = client.call("POST", f"players/{urllib.parse.quote(args.id, safe='')}/mute", {"seconds": seconds})
    if args.json:
        _print_json(answer)
    else:
        print(f"muted {answer['name']} for {answer['seconds']:g} s")
    return EXIT_OK


def _unmute(client: _Client, args) -> int:
    answer = client.call("POST", f"players/{urllib.parse.quote(args.id, safe='')}/unmute", {})
    if args.json:
        _print_json(answer)
    else:
        print(f"unmuted {answer['name']}" if answer["was_muted"] else f"{answer['name']} was not muted")
    return EXIT_OK


def _notice(client: _Client, args) -> int:
    body: dict = {"text": args.text}
    if args.room is not None:
        body["room"] = args.room
    answer = client.call("POST", "notice", body)
    if args.json:
        _print_json(answer)
    else:
        rooms = answer["rooms"]
        print(f"notice posted in {len(rooms)} room(s): {', '.join(str(r) for r in rooms)}")
    return EXIT_OK


def _drain(client: _Client, args) -> int:
    answer = client.call("POST", "drain", {} if args.grace is None else {"grace": args.grace})
    if args.json:
        _print_json(answer)
    else:
        print(f"draining: {answer['players']} player(s) connected; the server stops when they have left, "
              f"in {answer['stops_in']:g} s at the latest")
    if args.wait:
        deadline = time.monotonic() + answer["stops_in"] + 30.0  # its own shutdown takes a few seconds
        while client.reachable():
            if time.monotonic() > deadline:
                raise _Failed(f"the server at {client.url} still answers {answer['stops_in']:g} s + 30 s later")
            time.sleep(0.2)
        if not args.json:
            print("the server has stopped")
    return EXIT_OK


def _quoted(*parts: str) -> str:
    return "/".join(urllib.parse.quote(part, safe="") for part in parts)


def _world_open(client: _Client, args) -> int:
    name = args.world
    if name != "open" and ("/" in name or name.endswith(".toml")) and os.path.isfile(name):
        name = os.path.abspath(name)  # the server's working folder is not ours
    answer = client.call("POST", "worlds", {"world": name})
    if args.json:
        _print_json(answer)
    else:
        print(f"opened {answer['id']} ({answer['title']}): {answer['slots']} picture slot(s)")
    return EXIT_OK


def _world_close(client: _Client, args) -> int:
    answer = client.call("POST", f"worlds/{_quoted(args.id)}/close", {} if args.reason is None else
                         {"reason": args.reason})
    if args.json:
        _print_json(answer)
    else:
        print(f"closed {answer['id']}: {answer['players']} player(s) told: {answer['reason']}")
    return EXIT_OK


def _world_reload(client: _Client, args) -> int:
    answer = client.call("POST", f"worlds/{_quoted(args.id)}/reload", {})
    if args.json:
        _print_json(answer)
    else:
        print(f"reloaded {answer['id']} (version {answer['version']}): {answer['players']} player(s) stayed, "
              f"{answer['moved']} moved out of new walls")
    return EXIT_OK


def _world_hang(client: _Client, args) -> int:
    try:
        with open(args.file, "rb") as file:
            data = file.read(64 * 1024 * 1024 + 1)
    except OSError as exc:
        raise _Failed(f"{args.file}: {exc.strerror or exc}", EXIT_USAGE) from None
    query = f"?{urllib.parse.urlencode({'title': args.title})}" if args.title else ""
    answer = client.call("PUT", f"worlds/{_quoted(args.id, 'pictures', args.slot)}{query}", data)
    if args.json:
        _print_json(answer)
    else:
        titled = f" as {answer['title']!r}" if answer.get("title") else ""
        print(f"hung {answer['image']}{titled} in {answer['world']}/{answer['slot']} "
              f"({answer['width']}x{answer['height']}, version {answer['version']})")
    return EXIT_OK


def _world_unhang(client: _Client, args) -> int:
    answer = client.call("DELETE", f"worlds/{_quoted(args.id, 'pictures', args.slot)}")
    if args.json:
        _print_json(answer)
    else:
        print(f"took down the picture of {answer['world']}/{answer['slot']} (version {answer['version']})")
    return EXIT_OK


def _top(client: _Client, args) -> int:
    shown = 0
    clear = sys.stdout.isatty() and not args.json
    while True:
        status = client.call("GET", "status")
        if args.json:
            _print_json(status)
        else:
            text = _status_text(status, client.url)
            print((CLEAR + text) if clear else text + "\n", flush=True)
        sys.stdout.flush()
        shown += 1
        if args.count and shown >= args.count:
            return EXIT_OK
        time.sleep(TOP_INTERVAL)


# -- text --------------------------------------------------------------------------------------


def _status_text(s: dict, url: str) -> str:
    tick = s["tick"]
    clients = s["clients"]
    lines = [
        ("server", f"{url}  worldserver {s['version']}  up {_duration(s['uptime'])}"
         + (f"  DRAINING: stops in {s['draining']['stops_in']:.0f} s" if s.get("draining") else "")),
        ("tick", f"{s['tick_rate']} Hz  duration p50 {tick['duration_ms']['p50']:.2f} ms  "
         f"p99 {tick['duration_ms']['p99']:.2f} ms  lateness p50 {tick['lateness_ms']['p50']:.2f} ms  "
         f"p99 {tick['lateness_ms']['p99']:.2f} ms  skipped {tick['skipped']}"),
        ("clients", "  ".join(f"{k} {v}" for k, v in clients.items())),
        ("entities", str(s["entities"])),
        ("bytes/s", "  ".join(f"{t} in {_bytes(v['in'])} out {_bytes(v['out'])}"
                              for t, v in s["bytes_per_second"].items())),
        ("gc", f"pause max {s['gc']['pause_ms_max']:.2f} ms  p99 {s['gc']['pause_ms_p99']:.2f} ms  "
               f"collections {'/'.join(str(c) for c in s['gc']['collections'])}"),
        ("chat", f"rooms {s['chat']['rooms']}  users {s['chat']['users']}  sockets {s['chat']['sockets']}  "
                 f"messages/s {s['chat']['messages_per_second']:g}"),
        ("drops", f"{s['drops_per_second']:g}/s; since start: "
                  + (", ".join(f"{k.removeprefix('drop.')} {v}" for k, v in
                               sorted(s["drops"].items(), key=lambda kv: -kv[1])[:8]) or "none")),
    ]
    width = max(len(k) for k, _ in lines)
    out = [f"{k:<{width}}  {v}" for k, v in lines]
    header = ("world", "players", "udp", "webrtc", "ws", "hatongsu", "entities", "tick")
    rows = [(w["id"] + (" (default)" if w["default"] else ""), str(w["players"]),
             *(str(w["clients"][t]) for t in ("udp", "webrtc", "ws", "hatongsu")), str(w["entities"]), str(w["tick"]))
            for w in s["worlds"]]
    out.append("")
    out.append(_table(header, rows, right=set(range(1, 8))))
    return "\n".join(out)


def _table(header: tuple, rows: list[tuple], right: set[int] = frozenset()) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(row) -> str:
        cells = [f"{row[i]:>{widths[i]}}" if i in right else f"{row[i]:<{widths[i]}}" for i in range(len(row))]
        return "  ".join(cells).rstrip()

    return "\n".join(line(r) for r in [header, *rows])


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _bytes(value: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return str(value)
