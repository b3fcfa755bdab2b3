"""GET /real-time/<name>: the live REST endpoints of the Market Prophit dialect."""

from __future__ import annotations

import pytest

from tests.prophitkit import run_prophit
from tickwire.auth import Entitlements
from tickwire.dialects.prophit import ENDPOINTS, iso

TS = 1_700_000_040_000


async def test_every_endpoint_answers_the_original_shape_with_strings() -> None:
    async with run_prophit() as p:
        await p.crowd(TS, -0.0511838856522857)
        await p.mp(TS + 1000, 0.25)
        await p.user(TS + 1500, -0.5)
        for name, endpoint in ENDPOINTS.items():
            ticker = "AAPL" if endpoint.kind == "sentiment" else "BTC-USD"
            status, body = await p.get(f"/real-time/{name}?ticker={ticker}")
            assert status == 200, (name, body)
            assert set(body) == {"params", "path", "results", "timestamp"}
            assert body["path"] == f"/real-time/{name}" and body["params"] == {"ticker": ticker}
            if endpoint.kind != "sentiment":
                assert body["results"] == []  # nothing traded in this test
                continue
            if endpoint.last_minute:
                assert body["results"] == []  # the message is from 2023, not the last minute
                continue
            (row,) = body["results"]
            assert row["ticker"] == "AAPL" and set(row) == {"ts", "ticker", *endpoint.fields}
            for f in endpoint.fields:
                assert row[f] is None or isinstance(row[f], str), (name, f, row)
        status, body = await p.get("/real-time/crowd-sentiment?ticker=AAPL")
        assert body["results"] == [
            {"ts": iso(TS), "ticker": "AAPL", "crowd_sentiment": "-0.0511838856522857"}
        ]
        status, body = await p.get("/real-time/tweet-volume?ticker=AAPL")
        assert body["results"][0]["volume"] == "7"


async def test_latest_point_wins_and_views_filter_their_series() -> None:
    async with run_prophit() as p:
        await p.crowd(TS, 0.1)
        await p.crowd(TS + 60_000, 0.2)
        await p.mp(TS + 61_000, 0.9)
        _, body = await p.get("/real-time/crowd-sentiment?ticker=AAPL")
        assert body["results"][0]["crowd_sentiment"] == "0.2"
        _, body = await p.get("/real-time/market-prophit-sentiment?ticker=AAPL")
        assert body["results"][0]["mp_sentiment"] == "0.9"


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/real-time/nope?ticker=AAPL", 404, "unknown_path"),
        ("/real-time/crowd-sentiment", 400, "missing_param"),
        ("/real-time/crowd-sentiment?ticker=AAPL&sort=asc", 400, "unknown_param"),
        ("/real-time/crowd-sentiment?ticker=ZZZZ", 404, "unknown_ticker"),
        ("/real-time/crowd-sentiment?ticker=a:b", 400, "bad_param"),
    ],
)
async def test_bad_requests_get_the_original_error_shape(path: str, status: int, code: str) -> None:
    async with run_prophit() as p:
        got, body = await p.get(path)
        assert got == status, body
        err = body["error"]
        assert err["code"] == code and err["type"] == "invalid_request_error"
        assert err["status"] == status and err["message"]


async def test_authentication_and_entitlements() -> None:
    async with run_prophit() as p:
        async with p.gw.session.get(p.http + "/real-time/crowd-sentiment?ticker=AAPL") as r:
            assert r.status == 401 and (await r.json())["error"]["code"] == "unauthorized"
        status, body = await p.get("/real-time/crowd-sentiment?ticker=AAPL", token="x.y.z")
        assert status == 401 and body["error"]["type"] == "invalid_request_error"
        # the token in the query works too
        async with p.gw.session.get(
            p.http + f"/real-time/crowd-sentiment?ticker=AAPL&token={p.token}"
        ) as r:
            assert r.status == 200
        narrow = await p.new_token(
            Entitlements(symbols=frozenset({"TSLA"}), paths=frozenset({"crowd-sentiment"}))
        )
        status, body = await p.get("/real-time/crowd-sentiment?ticker=AAPL", token=narrow)
        assert status == 403 and "ticker 'AAPL'" in body["error"]["message"]
        status, body = await p.get("/real-time/tweet-buzz?ticker=TSLA", token=narrow)
        assert status == 403 and "endpoint paths" in body["error"]["message"]
        status, _ = await p.get("/real-time/crowd-sentiment?ticker=TSLA", token=narrow)
        assert status == 200
        status, body = await p.get(
            "/real-time/crowd-sentiment?ticker=AAPL", Accept="application/xml"
        )
        assert status == 406 and body["error"]["code"] == "not_acceptable"
