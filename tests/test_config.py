from __future__ import annotations

from pathlib import Path

import pytest

from tickwire.server.config import Config, ConfigError, load_config

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
    ("env", "fragment"),
    [
        ({"TICKWIRE_PORT": "eighty"}, "$.port"),
        ({"TICKWIRE_PORT": "70000"}, "'port' is out of range"),
        ({"TICKWIRE_MAX_QUEUE_BYTES": "10"}, "'max_queue_bytes'"),
        ({"TICKWIRE_HEARTBEAT_INTERVAL": "0"}, "'heartbeat_interval'"),
    ],
)
def test_bad_values_name_the_field(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({}, env=env)
    assert fragment in str(info.value)


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
    missing = [f for f in Config.__struct_fields__ if f"`{f}`" not in text]
    assert missing == []


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
