"""The RabbitMQ ingest with a real broker: a Peatio-style publisher (aio-pika, Peatio's
exchange, routing keys and bodies) and ranger and native clients of the same node."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika
import aiormq
import pytest

from tickwire.ingest.amqp import EXCHANGE, PeatioIngest
from tickwire.server.app import INGEST_KEY

from .harness import Gateway, run_gateway
from .rabbit import PrivateBroker, scratch_vhost
from .rangerkit import PRIVATE, IdentityProvider, RangerBook, RangerClient

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def idp() -> IdentityProvider:
    return IdentityProvider()


@pytest.fixture(scope="module")
def vhost() -> Iterator[str]:
    """One scratch vhost for the module; each test's node has a queue of its own."""
    with scratch_vhost() as url:
        yield url


class Peatio:
    """Publishes as Peatio does: ``channel.exchange('peatio.events.ranger', type:
    'topic')`` (Bunny's defaults: not durable, not auto-delete), JSON bodies."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: aio_pika.abc.AbstractRobustConnection | None = None
        self.exchange: aio_pika.abc.AbstractExchange | None = None

    async def __aenter__(self) -> Peatio:
        self.conn = await aio_pika.connect_robust(self.url, reconnect_interval=0.2)
        channel = await self.conn.channel()
        self.exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=False, auto_delete=False
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.conn is not None:
            await self.conn.close()

    async def publish(self, key: str, payload: Any) -> None:
        assert self.exchange is not None
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        await self.exchange.publish(aio_pika.Message(raw), routing_key=key)


@asynccontextmanager
async def node(
    url: str, idp: IdentityProvider, tmp: Path, **kw: Any
) -> AsyncIterator[tuple[Gateway, PeatioIngest]]:
    queue = f"tickwire.test.{uuid.uuid4().hex[:10]}"
    async with run_gateway(
        amqp=url, amqp_queue=queue, bearer_jwks=idp.jwks(tmp), ranger_challenge=False, **kw
    ) as gw:
        ingest = gw.runner.app[INGEST_KEY]
        await asyncio.wait_for(ingest.consuming.wait(), 20)
        yield gw, ingest


async def test_peatio_publisher_to_ranger_and_native_clients(
    vhost: str, idp: IdentityProvider, tmp_path: Path
) -> None:
    async with node(vhost, idp, tmp_path) as (gw, ingest), Peatio(vhost) as peatio:
        c = await RangerClient.connect(
            gw.session,
            gw.http,
            streams=["btcusd.trades", "btcusd.ob-inc", "global.tickers"],
        )
        assert (await c.recv())["success"]["streams"] == [
            "btcusd.ob-inc",
            "btcusd.trades",
            "global.tickers",
        ]
        native = await gw.connect()
        await native.subscribe("book:BTC-USD")
        snap = {"asks": [["101.0", "1.0"], ["102.5", "2.0"]], "bids": [["100.0", "3.0"]]}
        await peatio.publish("public.btcusd.ob-snap", {**snap, "sequence": 1})
        incs: list[dict[str, Any]] = [
            {"bids": ["99.5", "0.7"], "sequence": 2},
            {"asks": ["101.0", "0.4"], "sequence": 3},
            {"asks": ["102.5", ""], "sequence": 4},
            {"bids": ["100.0", "0"], "sequence": 5},
        ]
        for inc in incs:
            await peatio.publish("public.btcusd.ob-inc", inc)
        trade = {
            "tid": 77,
            "taker_type": "buy",
            "date": 1_700_000_000,
            "price": "101.0",
            "amount": "0.25",
        }
        await peatio.publish("public.btcusd.trades", {"trades": [trade]})
        book = RangerBook()
        book.snapshot((await c.recv_key("btcusd.ob-snap"))["btcusd.ob-snap"])
        while book.sequence != 5:
            book.increment((await c.recv_key("btcusd.ob-inc"))["btcusd.ob-inc"])
        got = (await c.recv_key("btcusd.trades"))["btcusd.trades"]["trades"][0]
        assert got == {**trade, "price": "101.00", "amount": "0.25000000"}
        tickers = (await c.recv_key("global.tickers"))["global.tickers"]
        assert tickers["btcusd"]["last"] == "101.00"
        # the native client of the same book is at the same seq with the same levels
        msg = await native.recv_type("snapshot")
        levels = {side: {p: a for p, a in msg["data"][side]} for side in ("bids", "asks")}
        seq = msg["seq"]
        while seq < book.sequence:
            msg = await native.recv_type("pub")
            assert msg["seq"] == seq + 1
            seq = msg["seq"]
            for side in ("bids", "asks"):
                for p, a in msg["data"][side]:
                    if a.strip("0.") == "":
                        levels[side].pop(p, None)
                    else:
                        levels[side][p] = a
        assert seq == book.sequence
        assert (sorted(levels["bids"].items()), sorted(levels["asks"].items())) == (
            sorted((p, a) for p, a in book.rows()[0]),
            sorted((p, a) for p, a in book.rows()[1]),
        )
        async with gw.session.get(gw.http + "/api/v1/book/BTC-USD") as resp:
            http = await resp.json()
        assert http["seq"] == book.sequence
        assert book.rows() == (http["bids"], http["asks"])
        assert http["bids"] == [["99.50", "0.70000000"]]
        assert http["asks"] == [["101.00", "0.40000000"]]
        # bad messages are counted and logged, and the consumer goes on
        await peatio.publish("public.btcusd.ob-inc", b"{oops")
        await peatio.publish("public.btcusd.ob-inc", {"bids": ["101.5", "1"], "sequence": 6})
        await peatio.publish("public.btcusd.ob-inc", {"bids": ["99.123", "1"], "sequence": 6})
        await peatio.publish("public.nosuch.trades", {"trades": []})
        await peatio.publish("public.btcusd.ob-inc", {"bids": ["98.0", "1"], "sequence": 6})
        book.increment((await c.recv_key("btcusd.ob-inc"))["btcusd.ob-inc"])
        async with gw.session.get(gw.http + "/metrics") as resp:
            metrics = await resp.text()
        for line in (
            'tickwire_amqp_rejected_total{reason="malformed"} 1.0',
            'tickwire_amqp_rejected_total{reason="crossed_book"} 1.0',
            'tickwire_amqp_rejected_total{reason="wrong_precision"} 1.0',
            'tickwire_amqp_rejected_total{reason="unknown_market"} 1.0',
            "tickwire_amqp_connected 1.0",
        ):
            assert line in metrics, line
        assert ingest.stats.applied == 7
        await c.close()
        await native.close()


async def test_exchange_is_declared_as_peatio_declares_it(
    vhost: str, idp: IdentityProvider, tmp_path: Path
) -> None:
    async with node(vhost, idp, tmp_path):
        conn = await aio_pika.connect(vhost)
        try:
            channel = await conn.channel()
            # a durable declare of Peatio's non-durable exchange is refused by the broker
            with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
                await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
            channel = await conn.channel()
            await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, passive=True)
        finally:
            await conn.close()


async def test_private_events_reach_only_the_user_of_the_routing_key(
    vhost: str, idp: IdentityProvider, tmp_path: Path
) -> None:
    async with node(vhost, idp, tmp_path) as (gw, _), Peatio(vhost) as peatio:
        alice = await RangerClient.connect(
            gw.session, gw.http, PRIVATE, token=idp.token("IDALICE01", "RS256")
        )
        bob = await RangerClient.connect(
            gw.session, gw.http, PRIVATE, token=idp.token("IDBOB0002", "EdDSA")
        )
        for c in (alice, bob):  # each is subscribed to its own streams at once
            await c.send({"event": "subscribe", "streams": ["ethusd.trades"]})
            assert (await c.recv())["success"]["streams"] == ["ethusd.trades", "order", "trade"]
        order = {
            "id": 501,
            "market": "btcusd",
            "kind": "ask",
            "side": "sell",
            "ord_type": "limit",
            "price": "100.0",
            "avg_price": "0.0",
            "state": "wait",
            "origin_volume": "1.0",
            "remaining_volume": "1.0",
            "executed_volume": "0.0",
            "at": 1_700_000_000,
            "created_at": 1_700_000_000,
            "updated_at": 1_700_000_000,
            "trades_count": 0,
        }
        utrade = {
            "id": 9,
            "price": "100.0",
            "amount": "0.5",
            "total": "50.0",
            "market": "btcusd",
            "side": "buy",
            "taker_type": "buy",
            "created_at": 1_700_000_001,
            "order_id": 502,
        }
        await peatio.publish("private.IDALICE01.order", order)
        await peatio.publish("private.IDBOB0002.trade", utrade)
        await peatio.publish("private.IDALICE01.order", {**order, "state": "cancel"})
        await peatio.publish("private.IDBOB0002.order", {**order, "id": 503, "side": "buy"})
        got = (await alice.recv_key("order"))["order"]
        assert (got["id"], got["state"], got["side"], got["market"]) == (
            501,
            "wait",
            "sell",
            "btcusd",
        )
        assert (await alice.recv_key("order"))["order"]["state"] == "cancel"
        t = (await bob.recv_key("trade"))["trade"]
        assert (t["id"], t["order_id"], t["taker_type"], t["total"]) == (
            9,
            502,
            "buy",
            "50.0000000000",
        )
        assert (await bob.recv_key("order"))["order"]["id"] == 503
        # neither got the other's: the next thing each hears is its own pong
        for c in (alice, bob):
            await c.send("ping")
            assert await c.recv_raw() == "pong"
        # another user's stream cannot be asked for: private streams have no user in them
        await alice.send({"event": "subscribe", "streams": ["IDBOB0002.order"]})
        assert "error" in await alice.recv()
        await alice.close()
        await bob.close()


class Steady:
    """A steady Peatio publisher of one book: an ob-inc every few ms (sequence + 1), an
    ob-snap every 50; it rides out a broker restart (publishes fail, it goes on)."""

    def __init__(self, peatio: Peatio) -> None:
        self.peatio = peatio
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        self.sequence = 0
        self.failed = 0
        self.published = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "asks": sorted(([p, a] for p, a in self.asks.items()), key=lambda r: float(r[0])),
            "bids": sorted(([p, a] for p, a in self.bids.items()), key=lambda r: -float(r[0])),
            "sequence": self.sequence,
        }

    async def run(self) -> None:
        i = 0
        while True:
            i += 1
            side, price = ("bids", f"{90 + i % 10}.0") if i % 2 else ("asks", f"{101 + i % 10}.0")
            amount = str(i % 4)  # 0 removes the level
            try:
                if i % 50 == 0:
                    await self.peatio.publish("public.btcusd.ob-snap", self.snapshot())
                await self.peatio.publish(
                    "public.btcusd.ob-inc", {side: [price, amount], "sequence": self.sequence + 1}
                )
            except Exception:
                self.failed += 1
                await asyncio.sleep(0.05)  # the broker is down: retry at a slower pace
                continue
            self.sequence += 1
            self.published += 1
            book = self.bids if side == "bids" else self.asks
            if amount == "0":
                book.pop(price, None)
            else:
                book[price] = amount
            await asyncio.sleep(0.005)


async def test_broker_restart_under_a_steady_publisher(
    idp: IdentityProvider, tmp_path: Path
) -> None:
    broker = PrivateBroker()  # never the machine's shared broker
    await broker.start()
    try:
        async with node(broker.url, idp, tmp_path) as (gw, ingest), Peatio(broker.url) as peatio:
            c = await RangerClient.connect(gw.session, gw.http, streams=["btcusd.ob-inc"])
            await c.recv_key("success")
            frames: list[dict[str, Any]] = []
            arrived = asyncio.Event()

            async def read() -> None:
                while True:
                    msg = await c.ws.receive()
                    if msg.type != 1:  # aiohttp.WSMsgType.TEXT
                        return
                    frames.append(json.loads(msg.data))
                    arrived.set()

            async def until(cond: Any, timeout: float = 60) -> None:
                async with asyncio.timeout(timeout):
                    while not cond():
                        arrived.clear()
                        await arrived.wait()

            reader = asyncio.create_task(read())
            steady = Steady(peatio)
            publisher = asyncio.create_task(steady.run())
            await until(lambda: len(frames) >= 30)
            # the consumer's connection closed (not the broker): its queue keeps collecting
            await broker.close_connections(ingest.settings.connection_name)
            await until(lambda: ingest.stats.reconnects >= 1 and ingest.consuming.is_set())
            mark = len(frames)
            await until(lambda: len(frames) >= mark + 30)
            assert ingest.stats.sequence_gaps == 0  # no Peatio increment was lost
            await broker.restart()
            restarted_at = steady.sequence
            await until(lambda: ingest.stats.reconnects >= 2 and ingest.consuming.is_set())
            # the consumer resumed: increments published after the restart arrive
            after = len(frames)
            await until(lambda: len(frames) >= after + 30)
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
            # Peatio's periodic ob-snap: the book ends as the publisher's
            await peatio.publish("public.btcusd.ob-snap", steady.snapshot())
            marker = {
                "tid": 1,
                "taker_type": "buy",
                "date": 1_700_000_000,
                "price": "150.0",
                "amount": "0.01",
            }
            await c.send({"event": "subscribe", "streams": ["btcusd.trades"]})
            await until(
                lambda: any("success" in f and len(f["success"]["streams"]) == 2 for f in frames)
            )
            await peatio.publish("public.btcusd.trades", {"trades": [marker]})
            await until(lambda: any("btcusd.trades" in f for f in frames))
            reader.cancel()
            # contiguous sequences throughout, or an explicit new snapshot
            book = RangerBook()
            for f in frames:
                if "btcusd.ob-snap" in f:
                    book.snapshot(f["btcusd.ob-snap"])
                elif "btcusd.ob-inc" in f:
                    book.increment(f["btcusd.ob-inc"])
            async with gw.session.get(gw.http + "/api/v1/book/BTC-USD") as resp:
                http = await resp.json()
            assert book.sequence == http["seq"]
            assert book.rows() == (http["bids"], http["asks"])
            want = steady.snapshot()
            assert [[float(p), float(a)] for p, a in http["bids"]] == [
                [float(p), float(a)] for p, a in want["bids"]
            ]
            assert [[float(p), float(a)] for p, a in http["asks"]] == [
                [float(p), float(a)] for p, a in want["asks"]
            ]
            assert restarted_at > 0 and ingest.stats.reconnects >= 2
            await c.close()
    finally:
        await broker.stop()
