from __future__ import annotations

import pytest

from tickwire.model import ChannelError, parse_channel


@pytest.mark.parametrize(
    ("name", "kind", "symbol", "arg", "user", "stateful"),
    [
        ("trades:BTC-USD", "trades", "BTC-USD", None, None, False),
        ("book:BTC-USD", "book", "BTC-USD", None, None, True),
        ("ticker:ETH-USD", "ticker", "ETH-USD", None, None, True),
        ("candles:BTC-USD:1m", "candles", "BTC-USD", "1m", None, True),
        ("sentiment:AAPL", "sentiment", "AAPL", None, None, False),
        ("user:42:orders", "orders", "42", None, "42", False),
        ("user:alice:trades", "trades", "alice", None, "alice", False),
    ],
)
def test_parse(
    name: str, kind: str, symbol: str, arg: str | None, user: str | None, stateful: bool
) -> None:
    ch = parse_channel(name)
    assert (ch.name, ch.kind, ch.symbol, ch.arg, ch.user_id) == (name, kind, symbol, arg, user)
    assert ch.private == (user is not None)
    assert ch.stateful is stateful


@pytest.mark.parametrize(
    ("name", "code", "fragment"),
    [
        ("", "bad_channel", "1 to 128"),
        ("x" * 200, "bad_channel", "1 to 128"),
        (42, "bad_channel", "must be a string"),
        ("nope:BTC-USD", "unknown_channel", "unknown kind 'nope'"),
        ("trades", "bad_channel", "expected trades:<symbol>"),
        ("trades:BTC-USD:1m", "bad_channel", "expected trades:<symbol>"),
        ("candles:BTC-USD", "bad_channel", "expected candles:<symbol>:<interval>"),
        ("candles:BTC-USD:7m", "unknown_channel", "unknown interval '7m'"),
        ("trades:BTC USD", "bad_channel", "malformed symbol"),
        ("user:42", "bad_channel", "user:<uid>:<stream>"),
        ("user:42:secrets", "unknown_channel", "unknown user stream 'secrets'"),
        ("user::orders", "bad_channel", "malformed user id"),
    ],
)
def test_reject(name: object, code: str, fragment: str) -> None:
    with pytest.raises(ChannelError) as info:
        parse_channel(name)
    assert info.value.code == code
    assert fragment in info.value.message
