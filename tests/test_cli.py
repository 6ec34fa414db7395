"""Tests of the ``worldserver`` command line (worldserver.cli) and its logging set-up."""

import io
import json
import logging
import os
import pathlib
import subprocess
import sys
import tomllib

import pytest

from worldserver import cli
from worldserver.logs import get_logger, log_event, setup_logging

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_cli(*args, env_extra=None, cwd=None):
    """Run ``python -m worldserver ARGS`` in a subprocess with a clean WORLDSERVER_* env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORLDSERVER_")}
    # make the checkout importable even when the project is not installed
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), str(ROOT / "clients" / "python"), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "worldserver", *args],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith("WORLDSERVER_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == "worldserver 0.1.0"


def test_bad_port_exits_2_naming_the_key_without_traceback():
    result = run_cli("run", "--set", "udp.port=abc")
    assert result.returncode == 2
    assert "udp.port" in result.stderr
    assert result.stderr.startswith("error: udp.port: expected an integer, got 'abc'")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_bad_env_var_exits_2():
    result = run_cli("run", env_extra={"WORLDSERVER_UDP_PROT": "1"})
    assert result.returncode == 2
    assert result.stderr.startswith("error: WORLDSERVER_UDP_PROT: unknown setting")
    assert "Traceback" not in result.stderr


def test_the_scripts_chromium_variable_is_not_a_setting():
    """WORLDSERVER_CHROMIUM (scripts/web.sh, browser tests) does not stop the server's config."""
    result = run_cli("config", env_extra={"WORLDSERVER_CHROMIUM": "/usr/bin/chromium"})
    assert result.returncode == 0, result.stderr


def test_config_prints_effective_toml():
    result = run_cli("config", "--set", "sim.tick_rate=30")
    assert result.returncode == 0, result.stderr
    assert "tick_rate = 30\n" in result.stdout
    document = tomllib.loads(result.stdout)
    assert document["sim"]["tick_rate"] == 30
    assert document["udp"]["port"] == 9300


def test_config_layers_env_file_and_shortcuts(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text("[udp]\nport = 1111\nhost = \"127.0.0.1\"\n[sim]\ntick_rate = 10\n")
    result = run_cli(
        "config", "--config", str(conf), "--set", "udp.port=3333", "--udp-port", "4444",
        "--log-level", "debug", "--data-dir", "/tmp/wsdata",
        env_extra={"WORLDSERVER_SIM_TICK_RATE": "25", "WORLDSERVER_UDP_HOST": "::1"},
    )
    assert result.returncode == 0, result.stderr
    document = tomllib.loads(result.stdout)
    assert document["udp"]["port"] == 4444  # shortcut beats --set beats file
    assert document["udp"]["host"] == "::1"  # env beats file
    assert document["sim"]["tick_rate"] == 25
    assert document["server"]["log_level"] == "DEBUG"
    assert document["server"]["data_dir"] == "/tmp/wsdata"


@pytest.mark.parametrize("command", [None, "run", "swarm", "config"])
def test_help_exits_0(command):
    args = ["--help"] if command is None else [command, "--help"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
    if command is not None:
        assert f"worldserver {command}" in result.stdout


def test_help_and_config_errors_do_not_import_app_or_swarm():
    code = (
        "import sys\n"
        "from worldserver.cli import main\n"
        "assert main(['run', '--help']) == 0\n"
        "assert main(['run', '--tick-rate', '0']) == 2\n"
        "assert main(['config']) == 0\n"
        "bad = [m for m in ('worldserver.app', 'worldtools.swarm', 'trio', 'numpy')"
        " if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORLDSERVER_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "clients" / "python")])
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_no_command_is_usage_error(capsys):
    assert cli.main([]) == 2
    assert "usage:" in capsys.readouterr().err


def test_unknown_option_is_usage_error(capsys):
    assert cli.main(["run", "--nope"]) == 2
    assert "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize("item", ["udp.port", "port=1", "=1", ".port=1", "udp.=1"])
def test_malformed_set_is_usage_error(capsys, item):
    assert cli.main(["config", "--set", item]) == 2
    assert "SECTION.KEY=VALUE" in capsys.readouterr().err


def test_set_value_may_contain_equals(clean_env, capsys):
    assert cli.main(["config", "--set", "server.data_dir=/a=b"]) == 0
    assert tomllib.loads(capsys.readouterr().out)["server"]["data_dir"] == "/a=b"


def test_out_of_range_shortcut(clean_env, capsys):
    assert cli.main(["run", "--tick-rate", "500"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: sim.tick_rate: must be between 1 and 240, got 500")


def test_missing_config_file(clean_env, capsys):
    assert cli.main(["config", "--config", "nowhere.toml"]) == 2
    assert "config file not found: nowhere.toml" in capsys.readouterr().err


def test_run_hands_config_to_app(clean_env, monkeypatch):
    """``run`` passes the effective Config to worldserver.app.run_server and returns its code."""
    import types

    seen = {}

    def fake_run_server(config):
        seen["config"] = config
        return 7

    fake_app = types.ModuleType("worldserver.app")
    fake_app.run_server = fake_run_server
    monkeypatch.setitem(sys.modules, "worldserver.app", fake_app)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    assert cli.main(["run", "--udp-port", "0", "--set", "sim.tick_rate=60"]) == 7
    assert seen["config"].udp.port == 0
    assert seen["config"].sim.tick_rate == 60


@pytest.fixture
def deep_json_server():
    """A real HTTP server on loopback (stdlib, in a thread) whose every answer is JSON nested
    far deeper than ``json.loads`` recurses: 200 for ``/api/worlds`` and
    ``/admin/api/players``, 500 for anything else; its URL."""
    import http.server
    import threading

    deep = ("[" * 100_000 + "]" * 100_000).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path in ("/api/worlds", "/admin/api/players") else 500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(deep)))
            self.end_headers()
            self.wfile.write(deep)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_an_answer_nested_thousands_deep_is_one_error_line(deep_json_server):
    url = deep_json_server
    for args, error in [
        (["worlds"], f"error: the server at {url} answered JSON nested too deeply"),
        (["players", "--token", "t"], f"error: the server at {url} answered JSON nested too deeply"),
        (["status", "--token", "t"], "error: Internal Server Error (500)"),
    ]:
        done = run_cli(*args, "--url", url)
        assert (done.returncode, done.stdout, done.stderr.splitlines()) == (1, "", [error]), args


@pytest.mark.parametrize("server", ["localhost", "host:", ":9300", "h:0", "h:99999", "h:x"])
def test_swarm_rejects_bad_server(capsys, server):
    assert cli.main(["swarm", "--server", server]) == 2
    assert "HOST:PORT" in capsys.readouterr().err


def test_swarm_arguments_reach_engine(monkeypatch):
    import types

    seen = {}
    fake = types.ModuleType("worldtools.swarm")

    def fake_run_swarm(args):
        seen["args"] = args
        return 0

    fake.run_swarm = fake_run_swarm
    monkeypatch.setitem(sys.modules, "worldtools.swarm", fake)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    code = cli.main(["swarm", "--server", "127.0.0.1:9300", "--bots", "50", "--json", "--seed", "3"])
    assert code == 0
    args = seen["args"]
    assert (args.server, args.bots, args.duration, args.processes) == ("127.0.0.1:9300", 50, 10.0, 1)
    assert (args.observers, args.json, args.seed, args.quiet) == (16, True, 3, False)
    assert cli.main(["swarm", "--server", "127.0.0.1:9300", "--quiet"]) == 0
    assert seen["args"].quiet is True and seen["args"].json is False
    assert cli.parse_hostport(args.server) == ("127.0.0.1", 9300)
    assert cli.parse_hostport("[::1]:9300") == ("::1", 9300)


def test_swarm_rejects_bad_counts(capsys):
    assert cli.main(["swarm", "--server", "h:1", "--bots", "0"]) == 2
    assert cli.main(["swarm", "--server", "h:1", "--processes", "x"]) == 2


# ---------------------------------------------------------------------------------- logging


@pytest.fixture
def restore_root_logger(monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)


def test_text_log_line(restore_root_logger):
    stream = io.StringIO()
    setup_logging("INFO", "text", stream=stream)
    log = get_logger("worldserver.tick")
    log.info("client connected", addr=("10.0.0.1", 5000), entity=7, name="a b", ratio=0.5)
    log.debug("hidden at INFO", x=1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    stamp, level, name, rest = lines[0].split(" ", 3)
    assert len(stamp) == len("2026-11-22T13:00:00Z") and stamp.endswith("Z") and "T" in stamp
    assert (level, name) == ("INFO", "worldserver.tick")
    assert rest == 'client connected addr=10.0.0.1:5000 entity=7 name="a b" ratio=0.5'


def test_json_log_line_and_bound_fields(restore_root_logger):
    stream = io.StringIO()
    setup_logging("DEBUG", "json", stream=stream)
    log = get_logger("worldserver.net", peer=("::1", 9))
    log.bind(session=3).debug("dropped", reason="timeout", msg="shadow")
    log_event(logging.getLogger("worldserver.stats"), "INFO", "stats", clients=2)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "DEBUG" and first["logger"] == "worldserver.net"
    assert first["msg"] == "dropped"
    assert first["peer"] == "[::1]:9" and first["session"] == 3 and first["reason"] == "timeout"
    assert first["field_msg"] == "shadow"
    assert second["msg"] == "stats" and second["clients"] == 2 and second["logger"] == "worldserver.stats"


def test_setup_logging_replaces_its_handler(restore_root_logger):
    before = len(logging.getLogger().handlers)
    setup_logging("INFO", "text", stream=io.StringIO())
    setup_logging("WARNING", "json", stream=io.StringIO())
    assert len(logging.getLogger().handlers) == before + 1
    assert logging.getLogger().level == logging.WARNING
    with pytest.raises(ValueError):
        setup_logging("LOUD", "text")


def test_any_field_name_and_caller_location(restore_root_logger):
    stream = io.StringIO()
    setup_logging("INFO", "json", stream=stream)
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    keep = Keep()
    logging.getLogger().addHandler(keep)
    try:
        get_logger("worldserver.x").info("hello %s", "you", level="high", msg="m", exc=1)
        log_event(logging.getLogger("worldserver.y"), logging.WARNING, "plain", a=1)
        log_event(get_logger("worldserver.z"), "ERROR", "adapted", b=2)
    finally:
        logging.getLogger().removeHandler(keep)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["msg"] == "hello you"
    assert (lines[0]["field_level"], lines[0]["field_msg"], lines[0]["field_exc"]) == ("high", "m", 1)
    assert lines[1]["level"] == "WARNING" and lines[1]["a"] == 1
    assert lines[2]["level"] == "ERROR" and lines[2]["b"] == 2
    assert [r.filename for r in records] == ["test_cli.py"] * 3
