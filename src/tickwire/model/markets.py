"""The market registry: which markets and sentiment tickers exist, and their precision."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import msgspec

from tickwire.model.channels import ChannelError, parse_channel
from tickwire.model.decimals import DecimalError, Increment
from tickwire.model.errors import TickwireError

#: Dialects that name markets differently from the canonical id.
DIALECTS = ("native", "coinbase", "ranger", "opcode", "prophit")


class MarketError(TickwireError, ValueError):
    """An unknown market or an invalid market definition; ``code`` is stable."""


@dataclass(frozen=True, slots=True)
class Market:
    """A tradable market: id ``BTC-USD``, base ``BTC``, quote ``USD`` and its increments.

    Prices are positive multiples of :attr:`price_increment`, sizes non-negative
    multiples of :attr:`size_increment`; both travel as decimal strings at that precision.
    """

    id: str
    base: str
    quote: str
    price_increment: Increment
    size_increment: Increment
    aliases: Mapping[str, str] = field(default_factory=dict)

    @property
    def price_places(self) -> int:
        """Decimal places of prices."""
        return self.price_increment.places

    @property
    def size_places(self) -> int:
        """Decimal places of sizes."""
        return self.size_increment.places

    def parse_price(self, text: str) -> int:
        """A price string as integer units; must be positive and on the increment."""
        units = self.price_increment.parse(text)
        if units <= 0:
            raise DecimalError("bad_price", f"price {text!r} must be positive")
        return units

    def parse_size(self, text: str) -> int:
        """A size string as integer units; must be non-negative and on the increment."""
        units = self.size_increment.parse(text)
        if units < 0:
            raise DecimalError("negative_size", f"size {text!r} must not be negative")
        return units

    def price(self, units: int) -> str:
        """Format price units at the market's precision."""
        return self.price_increment.format(units)

    def size(self, units: int) -> str:
        """Format size units at the market's precision."""
        return self.size_increment.format(units)

    def alias(self, dialect: str) -> str:
        """The market's name in ``dialect`` (``btcusd`` for ranger by default)."""
        return self.aliases.get(dialect, self.id)


class MarketConfig(msgspec.Struct, forbid_unknown_fields=True):
    """One market in the config file (``[[markets]]``)."""

    id: str
    base: str
    quote: str
    price_increment: str
    size_increment: str
    aliases: dict[str, str] = {}


class MarketsConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The markets section of the config: markets and sentiment tickers."""

    markets: list[MarketConfig] = []
    sentiment_tickers: list[str] = []


def make_market(cfg: MarketConfig) -> Market:
    """Validate one market definition; raises :class:`MarketError` naming the field."""
    try:
        parse_channel(f"book:{cfg.id}")
    except ChannelError:
        raise MarketError("bad_market", f"market id {cfg.id!r} is not a valid symbol") from None
    incs: list[Increment] = []
    for name in ("price_increment", "size_increment"):
        try:
            incs.append(Increment.from_text(getattr(cfg, name)))
        except DecimalError as exc:
            raise MarketError("bad_market", f"market {cfg.id}: {name}: {exc.message}") from None
    unknown = set(cfg.aliases) - set(DIALECTS)
    if unknown:
        raise MarketError(
            "bad_market", f"market {cfg.id}: aliases: unknown dialect {sorted(unknown)[0]!r}"
        )
    aliases = {"ranger": f"{cfg.base}{cfg.quote}".lower(), **cfg.aliases}
    return Market(cfg.id, cfg.base, cfg.quote, incs[0], incs[1], aliases)


class MarketRegistry:
    """Markets by id and by dialect alias, plus the sentiment tickers."""

    def __init__(self, markets: Iterable[Market], sentiment_tickers: Iterable[str] = ()) -> None:
        self._markets: dict[str, Market] = {}
        self._aliases: dict[tuple[str, str], Market] = {}
        for market in markets:
            if market.id in self._markets:
                raise MarketError("bad_market", f"market {market.id} is defined twice")
            self._markets[market.id] = market
            for dialect in DIALECTS:
                key = (dialect, market.alias(dialect))
                other = self._aliases.get(key)
                if other is not None:
                    raise MarketError(
                        "bad_market",
                        f"market {market.id}: {dialect} alias {key[1]!r} is taken by {other.id}",
                    )
                self._aliases[key] = market
        tickers: list[str] = []
        for ticker in sentiment_tickers:
            try:
                parse_channel(f"sentiment:{ticker}")
            except ChannelError:
                raise MarketError(
                    "bad_market", f"sentiment ticker {ticker!r} is not a valid symbol"
                ) from None
            tickers.append(ticker)
        self.sentiment_tickers: frozenset[str] = frozenset(tickers)

    @classmethod
    def from_config(cls, cfg: MarketsConfig) -> MarketRegistry:
        """Build the registry from the config section."""
        return cls((make_market(m) for m in cfg.markets), cfg.sentiment_tickers)

    @property
    def markets(self) -> list[Market]:
        """Every market, in definition order."""
        return list(self._markets.values())

    def __contains__(self, market_id: object) -> bool:
        return market_id in self._markets

    def get(self, market_id: str) -> Market | None:
        """The market with this canonical id, or None."""
        return self._markets.get(market_id)

    def require(self, market_id: str) -> Market:
        """The market with this id; raises ``unknown_market`` otherwise."""
        market = self._markets.get(market_id)
        if market is None:
            raise MarketError("unknown_market", f"unknown market {market_id!r}")
        return market

    def by_alias(self, dialect: str, alias: str) -> Market | None:
        """The market that ``dialect`` calls ``alias`` (e.g. ranger ``btcusd``), or None."""
        return self._aliases.get((dialect, alias))

    def require_ticker(self, ticker: str) -> str:
        """``ticker`` if it is a configured sentiment ticker; raises ``unknown_ticker``."""
        if ticker not in self.sentiment_tickers:
            raise MarketError("unknown_ticker", f"unknown sentiment ticker {ticker!r}")
        return ticker


#: The demo registry: three crypto markets and five sentiment tickers.
DEFAULT_MARKETS = MarketsConfig(
    markets=[
        MarketConfig("BTC-USD", "BTC", "USD", "0.01", "0.00000001"),
        MarketConfig("ETH-USD", "ETH", "USD", "0.01", "0.0001"),
        MarketConfig("SOL-USD", "SOL", "USD", "0.001", "0.01"),
    ],
    sentiment_tickers=["AAPL", "TSLA", "MSFT", "NVDA", "AMZN"],
)


def default_registry() -> MarketRegistry:
    """The registry used when the config names no markets (the demo's)."""
    return MarketRegistry.from_config(DEFAULT_MARKETS)


#: Price and size increments of a market named in the config without a definition.
GENERIC_INCREMENTS = ("0.01", "0.00000001")


def build_registry(
    market_ids: Iterable[str],
    tickers: Iterable[str] = (),
    definitions: Iterable[MarketConfig] = (),
) -> MarketRegistry:
    """The registry of the markets named in ``market_ids``: each defined in
    ``definitions``, by :data:`DEFAULT_MARKETS` (BTC-USD, ETH-USD, SOL-USD), or else,
    for a ``BASE-QUOTE`` id, with :data:`GENERIC_INCREMENTS`."""
    known = {m.id: m for m in DEFAULT_MARKETS.markets}
    known.update({m.id: m for m in definitions})
    markets = []
    for market_id in market_ids:
        cfg = known.get(market_id)
        if cfg is None:
            base, dash, quote = market_id.partition("-")
            if not (base and dash and quote):
                raise MarketError(
                    "unknown_market",
                    f"market {market_id!r} has no definition and is not BASE-QUOTE: describe "
                    "it in market_specs (id, base, quote, price_increment, size_increment)",
                )
            cfg = MarketConfig(market_id, base, quote, *GENERIC_INCREMENTS)
        markets.append(make_market(cfg))
    return MarketRegistry(markets, tickers)
