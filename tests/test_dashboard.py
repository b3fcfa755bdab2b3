"""The live dashboard at ``/``: its HTTP routes, then the page itself in headless Chromium
(Debian's ``/usr/bin/chromium``, driven by Playwright; tests/setup_browser.sh installs it)
against a demo market running in this test's event loop.

Screenshots go to ``$TICKWIRE_ARTIFACTS`` when set, else to the test's tmp dir (printed
on failure and with ``pytest -s``); ``make dashboard-screenshot`` copies the desktop one
to docs/img/dashboard.png.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import ConsoleMessage, Page, async_playwright

from tickwire.hub import CLOSE_SHUTDOWN
from tickwire.ingest.demo import DemoMarket
from tickwire.ingest.gateway import Gateway as DataGateway
from tickwire.model.book import Level, checksum
from tickwire.model.decimals import Increment
from tickwire.model.publication import now_ms
from tickwire.server.dashboard import CONTENT_SECURITY_POLICY
from tickwire.server.data_routes import GATEWAY_KEY

from .harness import Gateway, run_gateway
from .services import IN_CI

CHROMIUM = Path("/usr/bin/chromium")
#: Nothing is downloaded: Playwright drives Debian's Chromium with these flags.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Ladder levels the page must show a side.
LEVELS = 20
#: How long any one page condition may take to come true before the test fails.
WAIT_MS = 20_000


# -- HTTP: the registry and the page's files ---------------------------------------------


async def test_market_registry_lists_markets_tickers_and_intervals() -> None:
    specs = [
        {
            "id": "XBT-EUR",
            "base": "XBT",
            "quote": "EUR",
            "price_increment": "0.5",
            "size_increment": "0.0001",
        }
    ]
    async with run_gateway(
        markets=["ETH-USD", "XBT-EUR", "DOGE-USD"], tickers=["TSLA", "AAPL"], market_specs=specs
    ) as gw:
        async with gw.session.get(gw.http + "/api/v1/markets") as resp:
            assert resp.status == 200
            assert resp.content_type == "application/json"
            body = await resp.json()
    assert body == {
        "markets": [
            {
                "id": "ETH-USD",
                "base": "ETH",
                "quote": "USD",
                "price_increment": "0.01",
                "size_increment": "0.0001",
            },
            {
                "id": "XBT-EUR",
                "base": "XBT",
                "quote": "EUR",
                "price_increment": "0.5",
                "size_increment": "0.0001",
            },
            # named without a definition: the generic increments
            {
                "id": "DOGE-USD",
                "base": "DOGE",
                "quote": "USD",
                "price_increment": "0.01",
                "size_increment": "0.00000001",
            },
        ],
        "tickers": ["AAPL", "TSLA"],
        "candle_intervals": [
            *("1m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d", "3d", "1w")
        ],
    }


async def test_page_and_its_files_are_served_and_nothing_else() -> None:
    async with run_gateway() as gw:
        get = gw.session.get
        async with get(gw.http + "/") as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html"
            assert resp.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
            page = await resp.text()
        for name, ctype in [
            ("dashboard.js", "text/javascript"),
            ("dashboard.css", "text/css"),
            ("favicon.svg", "image/svg+xml"),
        ]:
            assert f"/static/{name}" in page
            async with get(f"{gw.http}/static/{name}") as resp:
                assert resp.status == 200, name
                assert resp.content_type == ctype
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
                assert len(await resp.read()) > 100
        for path in ["/static/index.html.bak", "/static/..%2Fapp.py", "/static/"]:
            async with get(gw.http + path) as resp:
                assert resp.status == 404, path
        async with get(gw.http + "/favicon.ico", allow_redirects=False) as resp:
            assert resp.status == 301
            assert resp.headers["Location"] == "/static/favicon.svg"


# -- the page in Chromium -----------------------------------------------------------------


def require_chromium() -> None:
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} is missing (tests/setup_browser.sh installs Debian's chromium as root)"
    if IN_CI:
        pytest.fail(f"{reason}; CI=true: a missing browser fails the run")
    pytest.skip(reason)  # outside CI only (CI failed above)


def artefact_dir(tmp_path: Path) -> Path:
    where = os.environ.get("TICKWIRE_ARTIFACTS")
    path = Path(where) if where else tmp_path
    path.mkdir(parents=True, exist_ok=True)
    return path


async def prefill(gateway: DataGateway, demo: DemoMarket, minutes: int) -> None:
    """Run the demo through ``minutes`` of simulated time ending now (two seconds a step),
    so the channels have history for the page to show: candles, trades, sentiment."""
    t = [now_ms() - minutes * 60_000]

    def clock() -> int:
        return t[0]

    gateway.clock = clock
    try:
        for _ in range(minutes * 30):
            await demo.step()
            t[0] += 2_000
    finally:
        gateway.clock = now_ms


@asynccontextmanager
async def demo_server() -> AsyncIterator[Gateway]:
    """A gateway on an ephemeral port with BTC-USD and ETH-USD, 40 minutes of seeded demo
    history, and the demo running on (at twice the normal rate).

    History is kept for an hour: the engine trims it by publication time, and the prefilled
    publications carry simulated times up to 40 minutes old; with the default 300 s, how
    much of it was left depended on when the engine's sweep last ran."""
    async with run_gateway(markets=["BTC-USD", "ETH-USD"], history_ttl=3600.0) as gw:
        gateway = gw.runner.app[GATEWAY_KEY]
        demo = DemoMarket(gateway, seed=17, rate=2.0)
        await prefill(gateway, demo, minutes=40)
        task = asyncio.create_task(demo.run())
        try:
            yield gw
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task


READ_PAGE = """() => {
  const px = (sel) => [...document.querySelectorAll(sel)]
    .map((e) => e.textContent.replace(/,/g, "")).filter((t) => /\\d/.test(t));
  const seq = (ch) => {
    const td = document.querySelector(`#channels tr[data-channel="${ch}"] td.seq`);
    return td ? Number(td.textContent.replace(/,/g, "")) : null;
  };
  const canvas = document.getElementById("candles");
  return {
    asks: px("#asks .lv:not(.empty) .p"),
    bids: px("#bids .lv:not(.empty) .p"),
    prices: px(".px"),
    times: [...document.querySelectorAll("#tape .tr .time")].map((e) => e.textContent),
    bookSeq: seq(`book:${window.tickwire.app.market}`),
    candles: Number(canvas.dataset.candles),
    chartLow: canvas.dataset.low || null,
    chartHigh: canvas.dataset.high || null,
    sentimentPoints: Number(document.getElementById("sentiment").dataset.points),
    checksumOk: Number(document.getElementById("checksum").dataset.ok),
    checksumBad: Number(document.getElementById("checksum").dataset.bad),
    checksumText: document.getElementById("checksum").textContent,
    state: document.getElementById("conn-state").dataset.state,
    recovery: document.getElementById("recovery").textContent,
    reconnects: Number(document.getElementById("reconnects").textContent),
    crossedSeen: window.tickwire.app.crossedSeen,
    text: [document.querySelector("main"), document.getElementById("strip")]
      .map((e) => e.innerText).join(" "),
    title: document.title,
    url: location.href,
    width: [document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth],
    // no panel scrolls sideways either: every element's content fits its box
    overflowing: [...document.querySelectorAll("main *")]
      .filter((e) => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== "hidden"
        && getComputedStyle(e).overflowX !== "visible")
      .map((e) => e.id || e.className),
  };
}"""

#: The page has loaded a market: full ladder, trades with times, candles, sentiment, checks.
LOADED = f"""() => {{
  const n = (sel) => document.querySelectorAll(sel).length;
  return n("#asks .lv:not(.empty)") >= {LEVELS} && n("#bids .lv:not(.empty)") >= {LEVELS}
    && n("#tape .tr") >= 5 && Number(document.getElementById("candles").dataset.candles) >= 5
    && Number(document.getElementById("sentiment").dataset.points) >= 10
    && Number(document.getElementById("checksum").dataset.ok) >= 5
    && document.getElementById("conn-state").dataset.state === "live";
}}"""


async def read(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate(READ_PAGE)
    return result


def assert_ladder_sound(view: dict[str, Any]) -> None:
    asks = [Decimal(p) for p in view["asks"]]  # top to bottom: worst ask first
    bids = [Decimal(p) for p in view["bids"]]  # top to bottom: best bid first
    assert len(asks) >= LEVELS and len(bids) >= LEVELS, view
    assert asks == sorted(asks, reverse=True) and len(set(asks)) == len(asks), asks
    assert bids == sorted(bids, reverse=True) and len(set(bids)) == len(bids), bids
    assert max(bids) < min(asks), f"crossed: best bid {max(bids)} >= best ask {min(asks)}"


async def wait_seq_advance(page: Page, after: int) -> None:
    await page.wait_for_function(
        """(after) => {
          const ch = `book:${window.tickwire.app.market}`;
          const td = document.querySelector(`#channels tr[data-channel="${ch}"] td.seq`);
          return td && Number(td.textContent.replace(/,/g, "")) > after;
        }""",
        arg=after,
    )


def no_price_of(view: dict[str, Any], seen: set[str], below: Decimal) -> None:
    """Nothing on the page is a price of the market left: no price string seen under it,
    no price at its level, no mention of it."""
    assert "BTC" not in view["text"] and "BTC" not in view["title"], view["title"]
    assert all(Decimal(p) < below for p in view["prices"]), view["prices"]
    assert not seen & set(view["prices"]), seen & set(view["prices"])
    for key in ("chartLow", "chartHigh"):
        assert view[key] is None or Decimal(view[key]) < below, view[key]
    for price in seen:
        assert f"{Decimal(price):,}" not in view["text"], price


def random_book(rng: random.Random) -> tuple[Increment, Increment, list[Level], list[Level]]:
    pp, sp = rng.choice([0, 1, 2, 3, 8]), rng.choice([0, 2, 4, 8])
    price_inc = Increment.from_text("1" if pp == 0 else "0." + "0" * (pp - 1) + "1")
    size_inc = Increment.from_text("1" if sp == 0 else "0." + "0" * (sp - 1) + "1")
    mid = rng.randint(20, 10 ** rng.randint(2, 12))
    asks: list[Level] = []
    bids: list[Level] = []
    price = mid
    for _ in range(rng.randint(0, 14)):
        price += rng.randint(1, 1 + mid // 50)
        asks.append((price, rng.randint(1, 10 ** rng.randint(1, 13))))
    price = mid
    for _ in range(rng.randint(0, 14)):
        price -= rng.randint(1, 1 + mid // 50)
        if price <= 0:
            break
        bids.append((price, rng.randint(1, 10 ** rng.randint(1, 13))))
    return price_inc, size_inc, bids, asks


async def assert_checksum_matches_python(page: Page) -> None:
    """The page's CRC32 book checksum equals tickwire.model.book.checksum on random books
    at many precisions (0 to 8 places, values with leading zeros after the point)."""
    rng = random.Random(1717)
    cases: list[dict[str, Any]] = []
    for _ in range(300):
        pi, si, bids, asks = random_book(rng)
        cases.append(
            {
                "bids": [[pi.format(p), si.format(s)] for p, s in bids],
                "asks": [[pi.format(p), si.format(s)] for p, s in asks],
                "expected": checksum(bids, asks),
            }
        )
    got: list[int] = await page.evaluate(
        "(cases) => cases.map((c) => window.tickwire.bookChecksum(c.bids, c.asks))", cases
    )
    assert got == [c["expected"] for c in cases]
    assert await page.evaluate("() => window.tickwire.crc32('123456789')") == 0xCBF43926


async def test_dashboard_in_chromium(tmp_path: Path) -> None:
    require_chromium()
    shots = artefact_dir(tmp_path)
    errors: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            errors.append(f"console: {msg.text}")

    def on_error(exc: Exception) -> None:
        errors.append(f"page error: {exc}")

    async with demo_server() as gw, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(
                viewport={"width": 1280, "height": 800}, color_scheme="dark"
            )
            page = await context.new_page()
            page.set_default_timeout(WAIT_MS)
            page.on("console", on_console)
            page.on("pageerror", on_error)
            await page.goto(gw.http + "/?market=BTC-USD")
            await page.wait_for_function(LOADED)

            view = await read(page)
            assert view["url"].endswith("/?market=BTC-USD")
            assert all(len(t) == 8 and t[2] == ":" == t[5] for t in view["times"]), view["times"]
            assert view["checksumBad"] == 0 and view["checksumText"].startswith("checksum ok")
            assert "BTC-USD" in view["title"]
            await assert_checksum_matches_python(page)

            # the ladder stays sound and the book's seq advances, update after update
            seq = view["bookSeq"]
            for _ in range(5):
                assert_ladder_sound(view)
                await wait_seq_advance(page, seq)
                view = await read(page)
                assert view["bookSeq"] > seq
                seq = view["bookSeq"]
            assert view["crossedSeen"] == 0

            assert view["width"][0] <= view["width"][2] and view["width"][1] <= view["width"][2]

            # the server cuts the page's WebSocket: it reconnects and recovers with `since`
            conns = list(gw.node.hub.connections)
            assert len(conns) == 1
            conns[0].close(CLOSE_SHUTDOWN)
            await page.wait_for_function(
                """() => document.getElementById("reconnects").textContent === "1"
                  && document.getElementById("recovery").textContent.startsWith("recovered")
                  && document.getElementById("conn-state").dataset.state === "live" """
            )
            now = list(gw.node.hub.connections)
            assert len(now) == 1 and now[0] is not conns[0]
            view = await read(page)
            await wait_seq_advance(page, view["bookSeq"])
            await page.wait_for_function(
                "(n) => Number(document.getElementById('checksum').dataset.ok) > n",
                arg=view["checksumOk"],
            )
            view = await read(page)
            assert view["checksumBad"] == 0 and view["crossedSeen"] == 0
            assert_ladder_sound(view)

            await page.screenshot(path=shots / "dashboard-1280-dark.png")
            assert view["width"][0] <= 1280 and view["width"][1] <= 1280, view["width"]
            assert view["overflowing"] == [], view["overflowing"]

            # light theme at the same width
            await page.emulate_media(color_scheme="light")
            await page.wait_for_function("() => document.documentElement.dataset.theme === 'light'")
            await page.screenshot(path=shots / "dashboard-1280-light.png")

            # switch to ETH-USD: at once nothing of BTC-USD is left, then ETH-USD fills in
            seen = set(view["prices"])
            assert seen and all(Decimal(p) > 10_000 for p in seen), seen
            await page.select_option("#market", "ETH-USD")
            no_price_of(await read(page), seen, below=Decimal(10_000))
            await page.wait_for_function(LOADED)
            view = await read(page)
            no_price_of(view, seen, below=Decimal(10_000))
            assert "ETH-USD" in view["title"] and view["url"].endswith("/?market=ETH-USD")
            assert_ladder_sound(view)
            assert view["checksumBad"] == 0

            # a phone-width window: no horizontal scrolling
            await page.set_viewport_size({"width": 390, "height": 844})
            await page.wait_for_function("() => window.innerWidth === 390")
            view = await read(page)
            assert view["width"][0] <= 390 and view["width"][1] <= 390, view["width"]
            assert view["overflowing"] == [], view["overflowing"]
            assert_ladder_sound(view)
            await page.screenshot(path=shots / "dashboard-390-light.png", full_page=True)
            await page.emulate_media(color_scheme="dark")
            await page.wait_for_function("() => document.documentElement.dataset.theme === 'dark'")
            await page.screenshot(path=shots / "dashboard-390-dark.png", full_page=True)
            # and the narrowest phones in use
            for width in (360, 320):
                await page.set_viewport_size({"width": width, "height": 700})
                await page.wait_for_function("(w) => window.innerWidth === w", arg=width)
                view = await read(page)
                assert max(view["width"]) <= width, (width, view["width"])
                assert view["overflowing"] == [], (width, view["overflowing"])
        finally:
            await browser.close()
    print(f"dashboard screenshots: {shots}")
    assert errors == []
