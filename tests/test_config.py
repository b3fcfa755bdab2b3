from __future__ import annotations

from pathlib import Path

import pytest

from tickwire.server.config import FIELDS, Config, ConfigError, load_config

DOCS = Path(__file__).resolve().parent.parent / "docs" / "config.md"


def test_defaults() -> None:
    c = load_config({}, env={})
    assert (c.host, c.port, c.engine) == ("0.0.0.0", 8080, "memory")


def test_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    f = tmp_path / "tw.toml"
    f.write_text('[tickwire]\nport = 7000\nhost = "10.0.0.1"\nheartbeat_interval = 3.0\n')
    env = {"TICKWIRE_PORT": "7100", "TICKWIRE_HOST": "127.0.0.2"}
    c = load_config({"port": 7200, "host": None}, env=env, file=f)
    assert c.port == 7200  # flag
    assert c.host == "127.0.0.2"  # env over file
    assert c.heartbeat_interval == 3.0  # file over default


def test_peatio_env_names_and_lists() -> None:
    c = load_config(
        {},
        env={
            "WEBSOCKET_HOST": "127.0.0.1",
            "WEBSOCKET_PORT": "8081",
            "TICKWIRE_MARKETS": "A-B,C-D",
        },
    )
    assert (c.host, c.port, c.markets) == ("127.0.0.1", 8081, ["A-B", "C-D"])
    # TICKWIRE_ names win over the seed's
    c = load_config({}, env={"WEBSOCKET_PORT": "8081", "TICKWIRE_PORT": "8082"})
    assert c.port == 8082


def test_config_file_from_env(tmp_path: Path) -> None:
    f = tmp_path / "tw.toml"
    f.write_text("max_channels = 7\n")
    assert load_config({}, env={"TICKWIRE_CONFIG": str(f)}).max_channels == 7


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TICKWIRE_PORT": "eighty"},
            "config field 'port' (TICKWIRE_PORT): expected an integer, got 'eighty'",
        ),
        (
            {"WEBSOCKET_PORT": "eighty"},
            "config field 'port' (WEBSOCKET_PORT): expected an integer, got 'eighty'",
        ),
        (
            {"TICKWIRE_PORT": "70000"},
            "config field 'port' (TICKWIRE_PORT): expected an integer from 0 to 65535, got 70000",
        ),
        (
            {"TICKWIRE_MAX_QUEUE_BYTES": "10"},
            "config field 'max_queue_bytes' (TICKWIRE_MAX_QUEUE_BYTES): "
            "expected an integer >= 4096, got 10",
        ),
        (
            {"TICKWIRE_HEARTBEAT_INTERVAL": "0"},
            "config field 'heartbeat_interval' (TICKWIRE_HEARTBEAT_INTERVAL): "
            "expected a number > 0, got 0.0",
        ),
        (
            {"TICKWIRE_COMPRESSION": "maybe"},
            "config field 'compression' (TICKWIRE_COMPRESSION): "
            "expected true or false, got 'maybe'",
        ),
        (
            {"TICKWIRE_SEED": "x"},
            "config field 'seed' (TICKWIRE_SEED): expected an integer or unset, got 'x'",
        ),
    ],
)
def test_bad_values_name_the_field_its_source_and_the_expected_type(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({}, env=env)
    assert str(info.value) == message


def test_a_flag_is_named_as_the_flag() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"max_channels": 0}, env={"TICKWIRE_MAX_CHANNELS": "5"})
    assert str(info.value) == (
        "config field 'max_channels' (--max-channels): expected an integer >= 1, got 0"
    )


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('port = "x"', "config field 'port' ({file}): expected an integer, got 'x'"),
        ("markets = 5", "config field 'markets' ({file}): expected a list, got 5"),
        ("markets = [1]", "config field 'markets[0]' ({file}): expected a string, got an integer"),
        (
            "nope = 1",
            "config field 'nope' ({file}): unknown field (docs/config.md lists them)",
        ),
        (
            '[[market_specs]]\nid = "A-B"',
            "config field 'market_specs[0].base' ({file}): expected a value, got none "
            "(it is required)",
        ),
        (
            "sentiment_windows = { crowd_ma_window = 'a' }",
            "config field 'sentiment_windows[...]' ({file}): expected an integer, got a string",
        ),
        (
            "auth_secret = 5",
            "config field 'auth_secret' ({file}): expected a string or unset, got ***",
        ),
    ],
)
def test_file_values_name_the_field_and_the_file(tmp_path: Path, toml: str, message: str) -> None:
    f = tmp_path / "tw.toml"
    f.write_text(toml + "\n")
    with pytest.raises(ConfigError) as info:
        load_config({}, env={}, file=f)
    assert str(info.value) == message.format(file=f"file {str(f)!r}")


def test_auth_setting_errors_use_the_same_style() -> None:
    from tickwire.server.app import build_app

    config = load_config({"key_store": ":memory:", "auth_secret": "too short"}, env={})
    with pytest.raises(ConfigError) as info:
        build_app(config)
    assert str(info.value) == "config field 'auth_secret': HS256 needs at least 32 bytes"


def test_unknown_file_field_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "tw.toml"
    f.write_text("prot = 80\n")
    with pytest.raises(ConfigError, match="prot"):
        load_config({}, env={}, file=f)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load_config({}, env={}, file=tmp_path / "nope.toml")


def test_every_field_is_documented() -> None:
    text = DOCS.read_text()
    missing = [f for f in (*Config.__struct_fields__, *FIELDS) if f"`{f}`" not in text]
    assert missing == []


def test_auth_settings_come_flat_or_from_an_auth_table(tmp_path: Path) -> None:
    f = tmp_path / "tw.toml"
    f.write_text("token_ttl = 60.0\n[auth]\ntoken_ttl = 30.0\nsession_ttl = 90.0\n")
    c = load_config({}, env={}, file=f)
    assert (c.auth.token_ttl, c.auth.session_ttl) == (60.0, 90.0)  # flat wins in one file
    c = load_config({}, env={"TICKWIRE_SESSION_TTL": "120"}, file=f)
    assert c.auth.session_ttl == 120.0  # the environment over the file's table
    c = load_config({"session_ttl": 7.0}, env={"TICKWIRE_SESSION_TTL": "120"}, file=f)
    assert c.auth.session_ttl == 7.0  # a flag over both
    assert c.value("session_ttl") == 7.0 and c.value("port") == 8080


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[auth]\ntoken_tll = 3\n", "config field 'auth.token_tll' ({file}): unknown field"),
        ('auth = "x"\n', "config field 'auth': expected a table, got 'x'"),
        (
            "[auth]\ntoken_ttl = 0\n",
            "config field 'token_ttl' ({file}): expected a number > 0, got 0",
        ),
        (
            '[auth]\ntoken_ttl = "soon"\n',
            "config field 'token_ttl' ({file}): expected a number, got 'soon'",
        ),
    ],
)
def test_auth_table_errors_name_the_field(tmp_path: Path, toml: str, message: str) -> None:
    f = tmp_path / "tw.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config({}, env={}, file=f)
    assert str(info.value).startswith(message.format(file=f"file {str(f)!r}"))


def test_auth_values_from_the_environment_name_their_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({}, env={"TICKWIRE_TOKEN_TTL": "-1"})
    assert str(info.value) == (
        "config field 'token_ttl' (TICKWIRE_TOKEN_TTL): expected a number > 0, got -1.0"
    )


def test_repr_hides_secrets() -> None:
    c = load_config({"auth_secret": "s" * 40}, env={})
    assert "s" * 40 not in repr(c)
    assert "auth_secret=***" in repr(c)
    assert "port=8080" in repr(c)


def test_peatio_rabbitmq_env_names_and_hidden_password() -> None:
    env = {
        "RABBITMQ_HOST": "mq.internal",
        "RABBITMQ_PORT": "5673",
        "RABBITMQ_USER": "peatio",
        "RABBITMQ_PASSWORD": "s3cret-pw",
        "TICKWIRE_RANGER_PUBLIC_PATHS": "/a/,/b",
    }
    c = load_config({}, env=env)
    assert (c.rabbitmq_host, c.rabbitmq_port, c.rabbitmq_user) == ("mq.internal", 5673, "peatio")
    assert c.ranger_public_paths == ["/a/", "/b"]
    assert "s3cret-pw" not in repr(c)
    c = load_config({"amqp": "amqp://u:topsecret@h:5672/v"}, env={})
    assert "topsecret" not in repr(c)
    for bad in ({"amqp": "http://h"}, {"ranger_private_paths": ["nope"]}, {"amqp_prefetch": 0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            load_config(bad, env={})
