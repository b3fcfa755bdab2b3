"""Shared helpers of the Market Prophit tests: a gateway with a key, tokens, publishing."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import msgspec

from tests.harness import Gateway, run_gateway
from tickwire.auth import Entitlements
from tickwire.auth.keys import KeyKind, create_key
from tickwire.model.payloads import CrowdSentiment, MarketSentiment, UserSentiment
from tickwire.server.auth_routes import AUTH_KEY


@dataclass
class Prophit:
    gw: Gateway
    token: str

    @property
    def http(self) -> str:
        return self.gw.http

    async def new_token(self, entitlements: Entitlements | None = None, user: str = "bob") -> str:
        return await issue_token(self.gw, entitlements, user)

    async def get(self, path: str, token: str | None = None, **headers: str) -> tuple[int, Any]:
        hdrs = {"Authorization": "Bearer " + (token or self.token), **headers}
        async with self.gw.session.get(self.gw.http + path, headers=hdrs) as r:
            return r.status, await r.json()

    async def crowd(self, ts: int, value: float, ticker: str = "AAPL") -> int:
        data = CrowdSentiment(ts, ticker, value, value / 2, 0.5, None, 7, 1.25)
        pub = await self.gw.node.engine.publish(f"sentiment:{ticker}", msgspec.json.encode(data))
        return pub.seq

    async def mp(self, ts: int, value: float, ticker: str = "AAPL") -> int:
        data = MarketSentiment(ts, ticker, value, value, None, None)
        pub = await self.gw.node.engine.publish(f"sentiment:{ticker}", msgspec.json.encode(data))
        return pub.seq

    async def user(self, ts: int, value: float, ticker: str = "AAPL") -> int:
        data = UserSentiment(ts, ticker, "u1", value, 0.5)
        pub = await self.gw.node.engine.publish(f"sentiment:{ticker}", msgspec.json.encode(data))
        return pub.seq


async def issue_token(gw: Gateway, entitlements: Entitlements | None, user: str) -> str:
    auth = gw.runner.app[AUTH_KEY]
    key = await create_key(auth.store, kind=KeyKind.SECRET, user_id=user, entitlements=entitlements)
    basic = base64.b64encode(f"{key.secret}:".encode()).decode()
    async with gw.session.post(gw.http + "/jwt", headers={"Authorization": "Basic " + basic}) as r:
        assert r.status == 200, await r.text()
        token: str = (await r.json())["token"]
    return token


@asynccontextmanager
async def run_prophit(**overrides: Any) -> AsyncIterator[Prophit]:
    async with run_gateway(**overrides) as gw:
        yield Prophit(gw, await issue_token(gw, None, "alice"))
