"""The native protocol end to end: a real server, a plain WebSocket client."""

from __future__ import annotations

from typing import Any

import aiohttp

from tickwire.auth import KeyKind, create_key
from tickwire.server.auth_routes import AUTH_KEY

from .authkit import SECRET
from .harness import Client, Gateway, run_gateway


def book(i: int) -> dict[str, Any]:
    return {"bids": [[f"{100 - i}.00", "1.0"]], "asks": [[f"{101 + i}.00", "2.0"]]}


async def expect_pubs(client: Client, channel: str, seqs: range) -> list[dict[str, Any]]:
    out = []
    for seq in seqs:
        msg = await client.recv_type("pub")
        assert (msg["channel"], msg["seq"]) == (channel, seq), msg
        out.append(msg)
    return out


async def test_state_channel_starts_with_snapshot_then_contiguous_updates() -> None:
    async with run_gateway() as gw:
        for i in range(5):
            await gw.publish("book:BTC-USD", {"update": i}, snapshot=book(i))
        c = await gw.connect()
        reply = await c.subscribe("book:BTC-USD", "trades:BTC-USD")
        assert reply["type"] == "subscribed"
        got = {ch["channel"]: ch for ch in reply["channels"]}
        assert got["book:BTC-USD"]["seq"] == 5
        assert got["trades:BTC-USD"]["seq"] == 0
        assert "recovered" not in got["book:BTC-USD"]
        snap = await c.recv_type("snapshot")
        assert snap["channel"] == "book:BTC-USD"
        assert snap["seq"] == 5 and snap["data"] == book(4)
        assert snap["epoch"] == got["book:BTC-USD"]["epoch"]
        for i in range(5, 15):
            await gw.publish("book:BTC-USD", {"update": i}, snapshot=book(i))
            await gw.publish("trades:BTC-USD", {"trade": i})
        book_seq, trade_seq = 5, 0
        for _ in range(20):
            msg = await c.recv_type("pub")
            if msg["channel"] == "book:BTC-USD":
                assert msg["seq"] == book_seq + 1
                book_seq = msg["seq"]
            else:
                assert msg["seq"] == trade_seq + 1
                trade_seq = msg["seq"]
            assert {"ts", "epoch", "data"} <= set(msg)
        assert (book_seq, trade_seq) == (15, 10)


async def test_resubscribe_since_replays_exactly_the_missed_then_live() -> None:
    async with run_gateway() as gw:
        c = await gw.connect()
        reply = await c.subscribe("trades:BTC-USD")
        epoch = reply["channels"][0]["epoch"]
        await gw.publish("trades:BTC-USD", {"i": 0})
        first = await c.recv_type("pub")
        assert first["seq"] == 1
        await c.close()

        for i in range(1, 101):
            await gw.publish("trades:BTC-USD", {"i": i})

        c2 = await gw.connect()
        reply = await c2.subscribe(
            {"channel": "trades:BTC-USD", "since": {"epoch": epoch, "seq": 1}}
        )
        ch = reply["channels"][0]
        assert ch["recovered"] is True and ch["seq"] == 101 and ch["epoch"] == epoch
        replayed = await expect_pubs(c2, "trades:BTC-USD", range(2, 102))
        assert [m["data"]["i"] for m in replayed] == list(range(1, 101))
        for i in range(101, 106):
            await gw.publish("trades:BTC-USD", {"i": i})
        live = await expect_pubs(c2, "trades:BTC-USD", range(102, 107))
        assert [m["data"]["i"] for m in live] == list(range(101, 106))
        assert gw.node.hub.stats.replays == 1
        assert gw.node.hub.stats.replayed_publications == 100


async def test_since_before_history_gives_recovered_false_and_snapshot() -> None:
    async with run_gateway(history_size=20) as gw:
        first = await gw.node.engine.publish("book:BTC-USD", b"{}", snapshot=b'{"v":0}')
        for i in range(1, 50):
            await gw.publish("book:BTC-USD", {"i": i}, snapshot={"v": i})
        c = await gw.connect()
        reply = await c.subscribe(
            {"channel": "book:BTC-USD", "since": {"epoch": first.epoch, "seq": 1}}
        )
        ch = reply["channels"][0]
        assert ch["recovered"] is False and ch["seq"] == 50
        snap = await c.recv_type("snapshot")
        assert snap["seq"] == 50 and snap["data"] == {"v": 49}
        await gw.publish("book:BTC-USD", {"i": 50}, snapshot={"v": 50})
        await expect_pubs(c, "book:BTC-USD", range(51, 52))
        assert gw.node.hub.stats.recoveries_failed == 1


async def test_since_with_another_epoch_on_event_channel_is_not_recovered() -> None:
    async with run_gateway() as gw:
        await gw.publish("trades:BTC-USD", {"i": 0})
        c = await gw.connect()
        reply = await c.subscribe(
            {"channel": "trades:BTC-USD", "since": {"epoch": "gone", "seq": 0}}
        )
        ch = reply["channels"][0]
        assert ch["recovered"] is False and ch["seq"] == 1
        await gw.publish("trades:BTC-USD", {"i": 1})
        await expect_pubs(c, "trades:BTC-USD", range(2, 3))


async def test_unsubscribe_stops_delivery_and_ping_answers() -> None:
    async with run_gateway() as gw:
        c = await gw.connect()
        await c.subscribe("trades:BTC-USD", "trades:ETH-USD")
        reply = await c.request("unsubscribe", channels=["trades:BTC-USD", "ticker:BTC-USD"])
        assert reply["channels"] == ["trades:BTC-USD"]
        await gw.publish("trades:BTC-USD", {"i": 0})
        await gw.publish("trades:ETH-USD", {"i": 0})
        msg = await c.recv_type("pub")
        assert msg["channel"] == "trades:ETH-USD"
        pong = await c.request("ping")
        assert pong["type"] == "pong" and isinstance(pong["ts"], int)
        assert gw.node.hub.channel_count == 1


async def test_heartbeats_arrive() -> None:
    async with run_gateway(heartbeat_interval=0.05) as gw:
        c = await gw.connect()
        msg = await c.recv()
        assert msg["type"] == "heartbeat" and isinstance(msg["ts"], int)


async def test_drain_tells_clients_to_reconnect_elsewhere() -> None:
    async with run_gateway() as gw:
        c = await gw.connect()
        await c.subscribe("trades:BTC-USD")
        assert await gw.node.drain() == 1
        msg = await c.ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert msg.data == 3001 and msg.extra == "shutdown"
        async with gw.session.get(gw.http + "/readyz") as resp:
            assert resp.status == 503
        async with gw.session.get(gw.http + "/ws") as resp:
            assert resp.status == 503


async def test_http_health_ready_and_metrics() -> None:
    async with run_gateway() as gw:
        async with gw.session.get(gw.http + "/healthz") as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "ok"
        async with gw.session.get(gw.http + "/readyz") as resp:
            assert resp.status == 200
        c = await gw.connect()
        await c.subscribe("trades:BTC-USD")
        await gw.publish("trades:BTC-USD", {"i": 0})
        await c.recv_type("pub")
        async with gw.session.get(gw.http + "/metrics") as resp:
            text = await resp.text()
        values = {
            line.split()[0]: float(line.split()[1])
            for line in text.splitlines()
            if line and not line.startswith("#")
        }
        assert values["tickwire_connections"] == 1
        assert values["tickwire_subscriptions"] == 1
        assert values["tickwire_publications_delivered_total"] == 1
        assert values['tickwire_publications_ingested_total{kind="trades"}'] == 1
        assert values['tickwire_connections_by_dialect{dialect="native"}'] == 1
        assert values["tickwire_delivery_latency_seconds_count"] == 1
        assert values["tickwire_queue_bytes"] == 0
        assert values["tickwire_frames_out_total"] >= 2  # reply + publication
        assert values["tickwire_bytes_out_total"] > 0
        assert values["tickwire_slow_disconnects_total"] == 0


async def test_index_page_is_served() -> None:
    async with run_gateway() as gw:
        async with gw.session.get(gw.http + "/") as resp:
            assert resp.status == 200
            assert "/static/dashboard.js" in await resp.text()
        async with gw.session.get(gw.http + "/static/dashboard.js") as resp:
            assert resp.status == 200
            assert "/ws" in await resp.text()  # the page speaks the native protocol


async def _same_gateway_many_clients(gw: Gateway) -> None:
    clients = [await gw.connect() for _ in range(5)]
    for c in clients:
        await c.subscribe("trades:ETH-USD")
    for i in range(30):
        await gw.publish("trades:ETH-USD", {"i": i})
    for c in clients:
        await expect_pubs(c, "trades:ETH-USD", range(1, 31))


async def test_many_clients_get_every_publication() -> None:
    async with run_gateway() as gw:
        await _same_gateway_many_clients(gw)
        # one encoding per publication, however many subscribers
        assert gw.node.hub.stats.publications == 30
        assert gw.node.hub.stats.frames_out == 30 * 5 + 5


def test_every_error_code_is_documented() -> None:
    from pathlib import Path

    from tickwire.dialects.errors import ERROR_CODES

    doc = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    assert [c for c in ERROR_CODES if f"`{c}`" not in doc] == []


async def test_refresh_on_an_anonymous_connection_says_there_is_no_identity() -> None:
    async with run_gateway(auth_secret=SECRET) as gw:
        auth = gw.runner.app[AUTH_KEY]
        made = await create_key(auth.store, kind=KeyKind.SECRET, user_id="alice")
        assert made.secret is not None
        token = await auth.exchange_secret(made.secret)
        c = await gw.connect()
        for credential in (token, "abc.def.ghi"):  # a valid token or not: nothing to refresh
            reply = await c.request("refresh", token=credential)
            assert (reply["type"], reply["code"], reply["message"]) == (
                "error",
                "unauthorized",
                "refresh: this connection has no identity to refresh",
            )
        authenticated = await c.request("auth", token=token)
        assert (authenticated["type"], authenticated["user"]) == ("authenticated", "alice")
        assert isinstance(authenticated["expires_at"], int)  # seconds, as documented
        refreshed = await c.request("refresh", token=token)
        assert (refreshed["type"], refreshed["user"]) == ("authenticated", "alice")
        await c.close()
