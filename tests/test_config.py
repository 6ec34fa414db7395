"""Tests of worldserver.config: defaults, layering, parsing and error messages."""

import pathlib
import tomllib

import attrs
import pytest

from worldserver import __version__
from worldserver.config import (
    Config,
    ConfigError,
    SimSettings,
    UdpSettings,
    config_reference,
    load_config,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOML_FILE = ROOT / "worldserver.toml"


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path, monkeypatch):
    """Run each test in an empty directory so ./worldserver.toml is never picked up by chance."""
    monkeypatch.chdir(tmp_path)


def write(tmp_path, text, name="ws.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ---------------------------------------------------------------------------------- defaults


def test_toml_file_equals_builtin_defaults_for_every_key():
    document = tomllib.loads(TOML_FILE.read_text())
    reference = list(config_reference())
    assert len(reference) == 110
    file_keys = {f"{s}.{k}" for s, table in document.items() for k in table}
    assert file_keys == {setting.key for setting in reference}
    for setting in reference:
        section, name = setting.key.split(".")
        value = document[section][name]
        assert value == setting.default, setting.key
        assert type(value) is type(setting.default), setting.key
    # and loading the file gives exactly the default Config
    assert load_config(str(TOML_FILE), env={}) == Config()


def test_specified_defaults():
    c = Config()
    assert c.server.log_level == "INFO"
    assert c.server.log_format == "text"
    assert c.server.secret_bytes is None
    assert c.udp.host == "0.0.0.0" and c.udp.port == 9300
    assert c.udp.datagram_budget == 1200 and c.udp.recv_batch == 128
    assert c.sim.tick_rate == 20 and c.sim.dt == pytest.approx(0.05)
    assert c.sim.spawn_point == (0.0, 0.0, 0.0)
    assert c.sim.gravity == 9.81
    assert c.interest.leave_radius == 55.0
    assert c.interest.effective_cell_size is None  # the grid chooses
    assert c.net.max_clients == 2000 and c.net.snapshot_ring == 32
    assert c.gc.freeze_after_start is True and c.gc.gen0_threshold == 50000


def test_every_setting_has_a_comment_and_is_documented_in_readme():
    readme = (ROOT / "README.md").read_text()
    for setting in config_reference():
        assert setting.help.strip(), setting.key
        assert f"`{setting.key}`" in readme, setting.key


def test_version_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__ == "0.1.0"


def test_missing_default_file_means_builtin_defaults(tmp_path):
    assert load_config(env={}) == Config()


def test_default_file_in_working_dir_is_used(tmp_path):
    write(tmp_path, "[udp]\nport = 9555\n", name="worldserver.toml")
    assert load_config(env={}).udp.port == 9555


def test_to_toml_round_trips(tmp_path):
    changed = Config().with_overrides(
        {"udp.port": "9401", "sim.spawn_point": "1,2,3", "gc.freeze_after_start": "no",
         "server.secret": "ab" * 16, "server.data_dir": 'odd "dir" \\ x'}
    )
    path = write(tmp_path, changed.to_toml())
    again = load_config(path, env={})
    assert again == changed
    assert again.sim.spawn_point == (1.0, 2.0, 3.0)
    assert again.server.secret_bytes == b"\xab" * 16


# ---------------------------------------------------------------------------------- layering


def test_file_overrides_defaults(tmp_path):
    path = write(tmp_path, "[sim]\ntick_rate = 30\nmax_speed = 7\n")
    c = load_config(path, env={})
    assert c.sim.tick_rate == 30
    assert c.sim.max_speed == 7.0 and isinstance(c.sim.max_speed, float)
    assert c.udp.port == 9300


def test_env_override():
    c = load_config(env={"WORLDSERVER_UDP_PORT": "9400", "WORLDSERVER_SIM_MAX_SPEED": "6.5",
                         "PATH": "/bin", "OTHER_UDP_PORT": "1"})
    assert c.udp.port == 9400
    assert c.sim.max_speed == 6.5


def test_env_none_reads_process_environment(monkeypatch):
    monkeypatch.setenv("WORLDSERVER_NET_MAX_CLIENTS", "12")
    assert load_config().net.max_clients == 12


def test_precedence_overrides_over_env_over_file(tmp_path):
    path = write(tmp_path, "[udp]\nport = 1111\nhost = \"127.0.0.1\"\n[sim]\ntick_rate = 10\n")
    env = {"WORLDSERVER_UDP_PORT": "2222", "WORLDSERVER_SIM_TICK_RATE": "25"}
    c = load_config(path, env=env, overrides={"udp.port": "3333"})
    assert c.udp.port == 3333  # override beats env and file
    assert c.sim.tick_rate == 25  # env beats file
    assert c.udp.host == "127.0.0.1"  # file beats defaults
    assert load_config(path, env=env).udp.port == 2222
    assert load_config(path, env={}).udp.port == 1111


def test_overrides_accept_typed_values():
    c = load_config(env={}, overrides={"udp.port": 0, "sim.max_speed": 3, "gc.gen1_threshold": 7})
    assert c.udp.port == 0 and c.sim.max_speed == 3.0 and c.gc.gen1_threshold == 7


def test_with_overrides_validates():
    with pytest.raises(ConfigError, match=r"^udp\.port: "):
        Config().with_overrides({"udp.port": "70000"})


# ---------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "text, expected",
    [("true", True), ("TRUE", True), ("1", True), ("yes", True), ("on", True),
     ("false", False), ("0", False), ("No", False), (" off ", False)],
)
def test_bool_parsing(text, expected):
    c = load_config(env={}, overrides={"gc.freeze_after_start": text})
    assert c.gc.freeze_after_start is expected


@pytest.mark.parametrize("text", ["maybe", "", "2", "truee"])
def test_bad_bool_names_key(text):
    with pytest.raises(ConfigError, match=r"^gc\.freeze_after_start: expected a boolean") as info:
        load_config(env={}, overrides={"gc.freeze_after_start": text})
    assert info.value.key == "gc.freeze_after_start"


@pytest.mark.parametrize(
    "text, expected",
    [("[1, 2.5, -3]", (1.0, 2.5, -3.0)), ("1,2.5,-3", (1.0, 2.5, -3.0)),
     (" 4 , 5 , 6 ", (4.0, 5.0, 6.0)), ("[0,0,0]", (0.0, 0.0, 0.0))],
)
def test_list_parsing(text, expected):
    c = load_config(env={"WORLDSERVER_SIM_SPAWN_POINT": text})
    assert c.sim.spawn_point == expected
    assert all(isinstance(v, float) for v in c.sim.spawn_point)


@pytest.mark.parametrize("text", ["1,2", "1,2,3,4", "[1, 2, \"x\"]", "a,b,c", "[1,2", "[true,1,2]"])
def test_bad_list_names_key(text):
    with pytest.raises(ConfigError, match=r"^sim\.spawn_point: expected a list of 3 numbers"):
        load_config(env={}, overrides={"sim.spawn_point": text})


def test_log_level_is_case_insensitive():
    assert load_config(env={}, overrides={"server.log_level": "debug"}).server.log_level == "DEBUG"


# ---------------------------------------------------------------------------------- errors


def test_unknown_key_in_override():
    with pytest.raises(ConfigError) as info:
        load_config(env={}, overrides={"sim.bogus": "1"})
    assert str(info.value) == "sim.bogus: unknown setting"


@pytest.mark.parametrize("key", ["bogus.port", "udp", "udp.", ".port"])
def test_malformed_or_unknown_override_keys(key):
    with pytest.raises(ConfigError, match=r"unknown setting") as info:
        load_config(env={}, overrides={key: "1"})
    assert str(info.value).startswith(f"{key}: ")


def test_unknown_key_in_file(tmp_path):
    path = write(tmp_path, "[sim]\ntick_rate = 20\nbogus = 1\n")
    with pytest.raises(ConfigError, match=r"^sim\.bogus: unknown setting"):
        load_config(path, env={})


def test_unknown_section_in_file(tmp_path):
    path = write(tmp_path, "[physics]\ngravity = 1.0\n")
    with pytest.raises(ConfigError, match=r"^physics: unknown section"):
        load_config(path, env={})


def test_top_level_key_in_file_is_an_error(tmp_path):
    path = write(tmp_path, "port = 1\n")
    with pytest.raises(ConfigError, match=r"^port: "):
        load_config(path, env={})


def test_unknown_env_var_names_the_variable():
    for var in ("WORLDSERVER_UDP_PROT", "WORLDSERVER_FOO", "WORLDSERVER_"):
        with pytest.raises(ConfigError) as info:
            load_config(env={var: "1"})
        assert str(info.value).startswith(f"{var}: unknown setting")
        assert info.value.key == var


def test_wrong_type_from_string():
    with pytest.raises(ConfigError) as info:
        load_config(env={}, overrides={"udp.port": "abc"})
    assert str(info.value).startswith("udp.port: expected an integer, got 'abc'")
    assert info.value.key == "udp.port"


def test_wrong_type_from_env_names_key_and_variable():
    with pytest.raises(ConfigError) as info:
        load_config(env={"WORLDSERVER_SIM_TICK_RATE": "fast"})
    message = str(info.value)
    assert message.startswith("sim.tick_rate: expected an integer, got 'fast'")
    assert "WORLDSERVER_SIM_TICK_RATE" in message


@pytest.mark.parametrize("var, key", [("WORLDSERVER_SIM_SPAWN_POINT", "sim.spawn_point"),
                                      ("WORLDSERVER_WEBRTC_ICE_SERVERS", "webrtc.ice_servers")])
def test_a_list_from_env_nested_thousands_deep_is_one_line_naming_it(var, key):
    with pytest.raises(ConfigError) as info:
        load_config(env={var: "[" * 5000 + "]" * 5000})
    assert str(info.value).startswith(f"{key}: expected a list of ") and var in str(info.value)
    assert "\n" not in str(info.value) and info.value.key == key


def test_a_file_nested_thousands_deep_is_one_line(tmp_path):
    path = write(tmp_path, "[sim]\nspawn_point = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == f"{path}: invalid TOML: nested too deeply"


@pytest.mark.parametrize(
    "toml, key",
    [
        ('[udp]\nport = "9300"\n', "udp.port"),
        ("[udp]\nport = 9300.0\n", "udp.port"),
        ("[udp]\nport = true\n", "udp.port"),
        ("[sim]\nmax_speed = \"fast\"\n", "sim.max_speed"),
        ("[sim]\nmax_speed = true\n", "sim.max_speed"),
        ("[server]\nlog_level = 3\n", "server.log_level"),
        ("[gc]\nfreeze_after_start = 1\n", "gc.freeze_after_start"),
        ("[sim]\nspawn_point = [1, 2]\n", "sim.spawn_point"),
        ("[sim]\nspawn_point = \"0,0,0\"\n", "sim.spawn_point"),
        ("[udp]\n[udp.port]\nx = 1\n", "udp.port"),
    ],
)
def test_wrong_type_in_file(tmp_path, toml, key):
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value).startswith(f"{key}: expected "), str(info.value)
    assert path in str(info.value)


def test_section_that_is_not_a_table(tmp_path):
    path = write(tmp_path, 'udp = "x"\n')
    with pytest.raises(ConfigError, match=r"^udp: "):
        load_config(path, env={})


@pytest.mark.parametrize(
    "key, value",
    [
        ("udp.port", "65536"),
        ("udp.port", "-1"),
        ("udp.datagram_budget", "299"),
        ("udp.datagram_budget", "65001"),
        ("udp.recv_batch", "0"),
        ("sim.tick_rate", "0"),
        ("sim.tick_rate", "241"),
        ("sim.max_speed", "0"),
        ("sim.max_speed", "-5"),
        ("sim.max_speed", "nan"),
        ("sim.half_extent", "inf"),
        ("sim.position_step", "0"),
        ("sim.input_burst", "0"),
        ("sim.gravity", "-1"),
        ("server.log_level", "LOUD"),
        ("server.log_format", "xml"),
        ("server.stats_interval", "0"),
        ("server.secret", "xyz"),
        ("server.secret", "abc"),
        ("server.secret", "abcd"),
        ("server.data_dir", " "),
        ("interest.radius", "0"),
        ("interest.leave_margin", "-1"),
        ("net.timeout", "0"),
        ("net.snapshot_ring", "1"),
        ("net.max_clients", "0"),
        ("gc.gen0_threshold", "-1"),
    ],
)
def test_out_of_range_names_key(key, value):
    with pytest.raises(ConfigError) as info:
        load_config(env={}, overrides={key: value})
    assert str(info.value).startswith(f"{key}: "), str(info.value)
    assert info.value.key == key


def test_out_of_range_in_file_names_file(tmp_path):
    path = write(tmp_path, "[udp]\nport = 70000\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value).startswith("udp.port: must be between 0 and 65535, got 70000")
    assert path in str(info.value)


def test_cross_field_checks():
    with pytest.raises(ConfigError, match=r"^sim\.y_max: "):
        load_config(env={}, overrides={"sim.y_min": "5", "sim.y_max": "5"})
    with pytest.raises(ConfigError, match=r"^sim\.spawn_point: "):
        load_config(env={}, overrides={"sim.spawn_point": "200,0,0"})
    with pytest.raises(ConfigError, match=r"^sim\.spawn_point: "):
        load_config(env={}, overrides={"sim.spawn_point": "0,60,0"})
    with pytest.raises(ConfigError, match=r"^net\.keepalive_interval: "):
        load_config(env={}, overrides={"net.keepalive_interval": "5"})
    with pytest.raises(ConfigError, match=r"^net\.max_clients: "):
        load_config(env={}, overrides={"net.max_clients": "5000"})
    # both raised together are fine
    c = load_config(env={}, overrides={"net.max_clients": "5000", "sim.max_entities": "5000"})
    assert c.net.max_clients == 5000


def test_direct_construction_is_validated_too():
    with pytest.raises(ConfigError, match=r"^udp\.port: "):
        UdpSettings(port=70000)
    with pytest.raises(ConfigError, match=r"^sim\.tick_rate: expected an integer"):
        SimSettings(tick_rate=20.0)
    assert SimSettings(max_speed=3).max_speed == 3.0


def test_config_is_frozen():
    c = Config()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        c.udp.port = 1  # type: ignore[misc]


def test_missing_explicit_file(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found"):
        load_config(str(tmp_path / "nope.toml"), env={})


def test_invalid_toml(tmp_path):
    path = write(tmp_path, "[udp\nport = 1\n")
    with pytest.raises(ConfigError, match=r"invalid TOML"):
        load_config(path, env={})


def test_get_and_as_dict():
    c = load_config(env={}, overrides={"udp.port": "9500"})
    assert c.get("udp.port") == 9500
    assert c.as_dict()["udp"]["port"] == 9500
    assert c.as_dict()["sim"]["spawn_point"] == [0.0, 0.0, 0.0]
    with pytest.raises(ConfigError, match=r"^udp\.nope: unknown setting"):
        c.get("udp.nope")
