"""Markets registry and exact decimals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tickwire.model.decimals import DecimalError, Increment, format_scaled, parse_scaled
from tickwire.model.markets import (
    MarketConfig,
    MarketError,
    MarketRegistry,
    MarketsConfig,
    default_registry,
    make_market,
)


@pytest.mark.parametrize(
    ("text", "places", "units"),
    [
        ("0", 2, 0),
        ("1", 2, 100),
        ("1.5", 2, 150),
        ("1.50", 2, 150),
        ("1.500", 2, 150),
        ("-0.01", 2, -1),
        ("000123.45", 2, 12345),
        ("27000.50", 2, 2700050),
        ("7", 0, 7),
        ("7.000", 0, 7),
    ],
)
def test_parse_scaled(text: str, places: int, units: int) -> None:
    assert parse_scaled(text, places) == units


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "1e5",
        "1E5",
        "+1",
        " 1",
        "1 ",
        "1.",
        ".5",
        "-",
        "NaN",
        "inf",
        "1,000",
        "1.2.3",
        "٣",
        "1_000",
        "0x10",
        "-.5",
        "1" * 41,
    ],
)
def test_parse_rejects_non_numeric(text: str) -> None:
    with pytest.raises(DecimalError) as info:
        parse_scaled(text, 2)
    assert info.value.code == "not_a_number"


def test_parse_rejects_non_strings() -> None:
    for value in (1.5, 15, None, ["1"]):
        with pytest.raises(DecimalError) as info:
            parse_scaled(value, 2)  # type: ignore[arg-type]
        assert info.value.code == "not_a_number"


def test_parse_rejects_extra_precision() -> None:
    with pytest.raises(DecimalError) as info:
        parse_scaled("1.001", 2)
    assert info.value.code == "wrong_precision"


@given(st.integers(-(10**20), 10**20), st.integers(0, 12))
def test_format_parse_roundtrip(units: int, places: int) -> None:
    text = format_scaled(units, places)
    assert parse_scaled(text, places) == units
    assert text.count(".") == (1 if places else 0)
    if places:
        assert len(text.partition(".")[2]) == places


def test_format_scaled_examples() -> None:
    assert format_scaled(5, 2) == "0.05"
    assert format_scaled(-5, 2) == "-0.05"
    assert format_scaled(100, 8) == "0.00000100"
    assert format_scaled(12, 0) == "12"


def test_increment_not_power_of_ten() -> None:
    inc = Increment.from_text("0.05")
    assert (inc.places, inc.step) == (2, 5)
    assert inc.parse("1.15") == 115
    with pytest.raises(DecimalError) as info:
        inc.parse("1.13")
    assert info.value.code == "wrong_precision"
    assert inc.format(115) == "1.15"


@pytest.mark.parametrize("text", ["0", "-0.01", "abc", "0.00"])
def test_increment_must_be_positive_decimal(text: str) -> None:
    with pytest.raises(DecimalError) as info:
        Increment.from_text(text)
    assert info.value.code == "bad_increment"


def test_default_registry() -> None:
    reg = default_registry()
    assert [m.id for m in reg.markets] == ["BTC-USD", "ETH-USD", "SOL-USD"]
    assert reg.sentiment_tickers == {"AAPL", "TSLA", "MSFT", "NVDA", "AMZN"}
    btc = reg.require("BTC-USD")
    assert (btc.base, btc.quote, btc.price_places, btc.size_places) == ("BTC", "USD", 2, 8)
    assert btc.alias("ranger") == "btcusd"
    assert btc.alias("coinbase") == "BTC-USD"
    assert reg.by_alias("ranger", "ethusd") is reg.require("ETH-USD")
    assert reg.by_alias("ranger", "ETH-USD") is None
    assert "SOL-USD" in reg and "DOGE-USD" not in reg
    with pytest.raises(MarketError) as info:
        reg.require("DOGE-USD")
    assert info.value.code == "unknown_market"
    with pytest.raises(MarketError) as info:
        reg.require_ticker("IBM")
    assert info.value.code == "unknown_ticker"


def test_market_price_and_size_rules() -> None:
    btc = default_registry().require("BTC-USD")
    assert btc.parse_price("65000.1") == 6500010
    assert btc.price(6500010) == "65000.10"
    assert btc.size(1) == "0.00000001"
    for text, code in (("0", "bad_price"), ("-1", "bad_price"), ("1.001", "wrong_precision")):
        with pytest.raises(DecimalError) as info:
            btc.parse_price(text)
        assert info.value.code == code
    with pytest.raises(DecimalError) as info:
        btc.parse_size("-0.1")
    assert info.value.code == "negative_size"
    assert btc.parse_size("0") == 0


def test_configured_aliases_and_errors() -> None:
    cfg = MarketsConfig(
        markets=[MarketConfig("XBT-EUR", "XBT", "EUR", "0.1", "0.0001", {"ranger": "xbteur1"})],
        sentiment_tickers=["GME"],
    )
    reg = MarketRegistry.from_config(cfg)
    assert reg.by_alias("ranger", "xbteur1") is reg.require("XBT-EUR")
    with pytest.raises(MarketError, match="aliases"):
        make_market(MarketConfig("A-B", "A", "B", "1", "1", {"nope": "x"}))
    with pytest.raises(MarketError, match="price_increment"):
        make_market(MarketConfig("A-B", "A", "B", "zero", "1"))
    with pytest.raises(MarketError, match="not a valid symbol"):
        make_market(MarketConfig("A:B", "A", "B", "1", "1"))
    twice = MarketsConfig(markets=[MarketConfig("A-B", "A", "B", "1", "1")] * 2)
    with pytest.raises(MarketError, match="twice"):
        MarketRegistry.from_config(twice)
    clash = MarketsConfig(
        markets=[
            MarketConfig("A-B", "A", "B", "1", "1"),
            MarketConfig("AB-X", "AB", "X", "1", "1", {"ranger": "ab"}),
        ]
    )
    with pytest.raises(MarketError, match="taken"):
        MarketRegistry.from_config(clash)
