"""The demo market: a seeded simulation that feeds the gateway like a real venue would.

Every market of the registry gets a moving level-2 book (at least 50 levels a side), and
trades that hit the touch and take size off that level; the gateway derives tickers and
candles from them. Every sentiment ticker gets scored messages from a fixed crowd of
users with their own scores and biases. The same seed gives the same sequence of events.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass

from tickwire.engine.base import EngineError
from tickwire.ingest.gateway import Gateway, IngestError
from tickwire.model.book import BookError, Level, OrderBook
from tickwire.model.markets import Market
from tickwire.model.payloads import Side

log = logging.getLogger(__name__)

#: Steps per second at ``rate=1``; each step sends one book event per market.
STEPS_PER_SECOND = 10
#: seconds between retries while the engine is unavailable: the first, and the most
RETRY_FIRST = 0.05
RETRY_MAX = 2.0
#: Book depth the simulation keeps per side.
MIN_LEVELS = 50
MAX_LEVELS = 80


@dataclass(frozen=True, slots=True)
class DemoSpec:
    """How a market is simulated: starting mid price, level spacing, level sizes."""

    mid: str
    spacing: str
    min_size: str
    max_size: str


#: Realistic figures for the default markets; other markets get :func:`generic_spec`.
DEMO_SPECS: dict[str, DemoSpec] = {
    "BTC-USD": DemoSpec("65000.00", "0.50", "0.001", "0.75"),
    "ETH-USD": DemoSpec("3200.00", "0.05", "0.01", "25"),
    "SOL-USD": DemoSpec("150.000", "0.010", "1", "400"),
}


def generic_spec(market: Market) -> DemoSpec:
    """A spec for a market without one: mid 100, spacing 10 ticks, sizes 1-100 steps."""
    pi, si = market.price_increment, market.size_increment
    return DemoSpec(
        pi.format(100 * 10**pi.places), pi.format(10 * pi.step), si.text, si.format(100 * si.step)
    )


class _SimBook:
    """One market's simulated book, mirrored exactly by what the gateway received."""

    def __init__(self, market: Market, spec: DemoSpec, rng: random.Random) -> None:
        self.market = market
        self.rng = rng
        self.step = market.size_increment.step
        self.grid = market.parse_price(spec.spacing)
        mid = market.parse_price(spec.mid)
        self.mid = mid - mid % self.grid
        self.min_lots = max(1, market.parse_size(spec.min_size) // self.step)
        self.max_lots = max(self.min_lots, market.parse_size(spec.max_size) // self.step)
        self.book = OrderBook()
        self.last_ts = 0

    def size(self) -> int:
        return self.rng.randint(self.min_lots, self.max_lots) * self.step

    def initial(self) -> tuple[list[Level], list[Level]]:
        g = self.grid
        n = (MIN_LEVELS + MAX_LEVELS) // 2
        bids = [(self.mid - g * (i + 1), self.size()) for i in range(n)]
        asks = [(self.mid + g * (i + 1), self.size()) for i in range(n)]
        return bids, asks

    def next_update(self) -> tuple[list[Level], list[Level], tuple[int, int, Side] | None]:
        """One step: ``(bids, asks, trade)``; ``trade`` is (price, size, taker side)."""
        rng, book, g = self.rng, self.book, self.grid
        bids: dict[int, int] = {}
        asks: dict[int, int] = {}
        trade: tuple[int, int, Side] | None = None
        is_bid = rng.random() < 0.5
        side = bids if is_bid else asks
        levels = book.bids() if is_bid else book.asks()
        best_bid, best_ask = book.best_bid(), book.best_ask()
        r = rng.random()
        if r < 0.2 and best_bid and best_ask:
            # A taker hits the touch: a buy lifts the best ask, a sell hits the best bid.
            taker: Side = "sell" if is_bid else "buy"
            price, resting = best_bid if is_bid else best_ask
            if rng.random() < 0.3:
                qty = resting
            else:
                qty = max(self.step, int(resting * rng.random()) // self.step * self.step)
            side[price] = resting - qty
            trade = (price, qty, taker)
        elif r < 0.5 and levels:
            price, _ = levels[rng.randrange(min(20, len(levels)))]
            side[price] = self.size()
        elif r < 0.7 and len(levels) > 1:
            i = rng.randrange(len(levels) - 1)
            a, b = levels[i][0], levels[i + 1][0]
            gap = abs(b - a) // g
            if gap > 1:
                offset = g * rng.randint(1, gap - 1)
                side[a - offset if is_bid else a + offset] = self.size()
        elif r < 0.85 and len(levels) > MIN_LEVELS:
            side[levels[rng.randrange(len(levels))][0]] = 0
        elif best_bid and best_ask and best_ask[0] - best_bid[0] > g:
            # Improve the touch inside the spread: this is what moves the price.
            side[best_bid[0] + g if is_bid else best_ask[0] - g] = self.size()
        for levels_, changes, sign in ((book.bids(), bids, -1), (book.asks(), asks, 1)):
            kept = [p for p, _ in levels_ if changes.get(p, 1)]
            kept += [p for p, s in changes.items() if s and p not in kept]
            if not kept:
                continue
            kept.sort(key=lambda p: p * sign)
            worst = kept[-1]
            for _ in range(MIN_LEVELS - len(kept)):
                worst += sign * g * rng.randint(1, 3)
                changes[worst] = self.size()
            for p in kept[MAX_LEVELS:]:
                changes[p] = 0
        return sorted(bids.items(), reverse=True), sorted(asks.items()), trade


class _Crowd:
    """Scored messages about the sentiment tickers from a fixed crowd of users."""

    def __init__(self, tickers: list[str], rng: random.Random, users: int = 100) -> None:
        self.rng = rng
        self.tickers = tickers
        self.users = [
            (f"demo-user-{i:03d}", round(rng.random(), 4), rng.uniform(-0.3, 0.3))
            for i in range(users)
        ]
        self.mood = {t: rng.uniform(-0.5, 0.5) for t in tickers}

    def message(self) -> tuple[str, str, float, float]:
        rng = self.rng
        ticker = rng.choice(self.tickers)
        mood = self.mood[ticker] = max(-1.0, min(1.0, self.mood[ticker] + rng.gauss(0, 0.02)))
        user, score, bias = rng.choice(self.users)
        sentiment = max(-1.0, min(1.0, mood + bias + rng.gauss(0, 0.3)))
        return ticker, user, round(sentiment, 4), score


class DemoMarket:
    """Runs the simulation on ``gateway``: ``await DemoMarket(gw, seed=1).run()``.

    ``rate`` scales the event rate: at 1.0 each market gets 10 book events a second
    (about 2 of them trades) and the crowd sends 5 sentiment messages a second.
    """

    def __init__(self, gateway: Gateway, seed: int | None = None, rate: float = 1.0) -> None:
        if not rate > 0:
            raise ValueError("rate must be positive")
        self.gateway = gateway
        self.seed = seed
        self.rate = rate
        self.rng = random.Random(seed)
        self.books = [
            _SimBook(m, DEMO_SPECS.get(m.id) or generic_spec(m), self.rng)
            for m in gateway.markets.markets
        ]
        tickers = sorted(gateway.markets.sentiment_tickers)
        self.crowd = _Crowd(tickers, self.rng) if tickers else None
        self.started = False
        self.steps = 0

    async def start(self) -> None:
        """Publish every market's initial book (replacing whatever the gateway held)."""
        for sim in self.books:
            bids, asks = sim.initial()
            sim.book.replace(bids, asks)
            await self.gateway.apply_book_units(sim.market.id, bids, asks, reset=True)
        self.started = True

    async def step(self) -> None:
        """One step of the simulation: a book event per market, maybe a sentiment message."""
        if not self.started:
            await self.start()
        self.steps += 1
        gw = self.gateway
        for sim in self.books:
            bids, asks, trade = sim.next_update()
            try:
                change = sim.book.apply(bids, asks)
            except BookError:
                continue  # the simulation proposed a crossed book: skip this move
            try:
                if trade is not None:
                    price, qty, taker = trade
                    sim.last_ts = max(gw.clock(), sim.last_ts)
                    await gw.publish_trade_units(
                        sim.market.id,
                        price,
                        qty,
                        taker,
                        ts=sim.last_ts,
                    )
                await gw.apply_book_units(sim.market.id, bids, asks)
            except IngestError as exc:  # the simulation keeps the rules; log if it does not
                log.warning("demo %s: refused: %s (%s)", sim.market.id, exc.message, exc.code)
                sim.book.revert(change)
            except EngineError:
                # nothing of this move was applied (the gateway is all or nothing): the
                # simulated book goes back too, so it still matches what clients saw
                sim.book.revert(change)
                raise
        if self.crowd is not None and self.rng.random() < 0.5:
            ticker, user, sentiment, score = self.crowd.message()
            await gw.publish_sentiment(ticker, user, sentiment, score)
        await gw.tick()

    async def run(self) -> None:
        """Step at ``10 * rate`` steps a second until cancelled.

        While the engine is unavailable the market pauses, retrying with a backoff of
        ``RETRY_FIRST`` doubling up to ``RETRY_MAX`` seconds, and goes on when it is back.
        """
        interval = 1.0 / (STEPS_PER_SECOND * self.rate)
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        backoff = 0.0
        while True:
            try:
                await self.step()
            except EngineError as exc:
                if not backoff:
                    log.warning("demo market paused: %s; retrying", exc)
                backoff = min(RETRY_MAX, backoff * 2 or RETRY_FIRST)
                await asyncio.sleep(backoff)
                next_at = loop.time()
                continue
            if backoff:
                log.warning("demo market resumed")
                backoff = 0.0
            next_at += interval
            delay = next_at - loop.time()
            if delay < -1.0:
                next_at = loop.time()  # fell behind by more than a second: don't burst
            await asyncio.sleep(max(0.0, delay))
