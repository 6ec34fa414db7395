"""scripts/run.sh and scripts/test.sh from another current directory.

run.sh: ``--dry-run`` prints the configuration the server would run with (``worldserver
config`` with the same arguments), so the paths it resolves are checked as the server reads
them: the checkout's web client, pictures and data folder from anywhere, the user's own
environment and configuration file still winning. Then the real server, started by run.sh
(``--no-setup``) in an empty folder, serves the checkout's built web client and pictures and
writes nothing there. test.sh: a test file named from tests/ and one named from the repo's
root are both found (pytest ``--collect-only``, so no test runs twice). Neither script's
set-up runs here (``--no-setup``): the suite runs after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from worldserver.sample_images import IMAGE_SUFFIXES

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 30.0


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORLDSERVER_")}
    env.update(extra)
    return env


def dry_run(cwd: Path, *args: str, **env: str) -> dict:
    result = subprocess.run(["bash", str(ROOT / "scripts" / "run.sh"), "--dry-run", *args], cwd=cwd,
                            env=clean_env(**env), capture_output=True, text=True, timeout=DEADLINE)
    assert result.returncode == 0, result.stderr
    return tomllib.loads(result.stdout)


def test_run_sh_uses_the_checkouts_folders_from_anywhere(tmp_path):
    config = dry_run(tmp_path)
    assert config["http"]["web_root"] == str(ROOT / "clients" / "web" / "dist")
    assert config["http"]["images_dir"] == str(ROOT / "clients" / "web" / "images")
    assert config["server"]["data_dir"] == str(ROOT / "data")
    assert list(tmp_path.iterdir()) == []


def test_run_sh_leaves_the_users_settings_alone(tmp_path):
    config = dry_run(tmp_path, "--set", "http.web_root=site", WORLDSERVER_SERVER_DATA_DIR="/srv/world")
    assert config["http"]["web_root"] == "site"  # --set wins
    assert config["server"]["data_dir"] == "/srv/world"  # so does the user's environment
    assert config["http"]["images_dir"] == str(ROOT / "clients" / "web" / "images")
    own = tmp_path / "mine.toml"
    own.write_text('[server]\nlog_level = "DEBUG"\n')
    config = dry_run(tmp_path, "--config", str(own))  # a file of one's own: its paths, as documented
    assert config["server"]["log_level"] == "DEBUG"
    assert config["http"]["web_root"] == "./clients/web/dist" and config["server"]["data_dir"] == "./data"
    (tmp_path / "worldserver.toml").write_text('[server]\nstats_interval = 5.0\n')
    config = dry_run(tmp_path)  # ./worldserver.toml is a file of one's own too
    assert config["server"]["stats_interval"] == 5.0 and config["server"]["data_dir"] == "./data"


def test_run_sh_serves_the_built_web_client_from_another_folder(tmp_path):
    index = (ROOT / "clients" / "web" / "dist" / "index.html").read_bytes()
    data = tmp_path / "elsewhere" / "data"  # not the checkout's data/, which a dev server may hold
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "run.sh"), "--no-setup", "--host", "127.0.0.1", "--udp-port", "0",
             "--set", "http.host=127.0.0.1", "--set", "http.port=0", "--set", "webrtc.enabled=false",
             "--set", "server.log_format=json"],
            cwd=cwd, env=clean_env(WORLDSERVER_SERVER_DATA_DIR=str(data)), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    try:
        url = None
        deadline = time.monotonic() + DEADLINE
        while url is None:
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            for line in log_path.read_text().splitlines():
                record = json.loads(line) if line.startswith("{") else {}
                if record.get("msg") == "http listening":
                    url = f"http://{record['http']}"
            time.sleep(0.05)
        with urllib.request.urlopen(url + "/", timeout=DEADLINE) as answer:
            assert answer.read() == index
        with urllib.request.urlopen(url + "/gallery/images", timeout=DEADLINE) as answer:
            listed = json.loads(answer.read())["images"]
        pictures = sorted(p.name for p in (ROOT / "clients" / "web" / "images").iterdir()
                          if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        assert pictures and sorted(image["file"] for image in listed) == pictures
        assert (data / "chat.sqlite3").is_file()
        assert list(cwd.iterdir()) == []  # no ./data where it was started
    finally:
        proc.terminate()
        assert proc.wait(DEADLINE) == 0


@pytest.mark.parametrize("cwd, name", [("tests", "test_jsonsafe.py"), (None, "tests/test_jsonsafe.py")])
def test_test_sh_finds_tests_from_anywhere(tmp_path, cwd, name):
    where = ROOT / cwd if cwd else tmp_path
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "test.sh"), "--no-setup", "--collect-only", "-q", f"{name}::test_deep_input_is_refused_before_parsing"],
        cwd=where, env=clean_env(), capture_output=True, text=True, timeout=DEADLINE,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tests/test_jsonsafe.py::test_deep_input_is_refused_before_parsing" in result.stdout
