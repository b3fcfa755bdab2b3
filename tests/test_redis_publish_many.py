"""Redis ``publish_many`` is all or nothing even when Redis refuses one item.

Inside MULTI/EXEC Redis runs every command even if one fails, and a failed script keeps
what it wrote: a trade whose candle key had been overwritten with a string went out as
trade and ticker without that candle, while the gateway rolled its state back — clients
saw data the gateway then forgot. Against the real Redis (under a private key prefix).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import msgspec
import pytest

from tickwire.engine import EngineError, EngineUnavailable, HistorySettings
from tickwire.engine.redis import RedisEngine
from tickwire.ingest.gateway import Gateway
from tickwire.model import Position
from tickwire.model.payloads import TickerData

from .conftest import Recorder, ScratchRedisEngine, redis_prefix, require_redis
from .services import REDIS_URL

T0 = 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000 + 3_600_000


@pytest.fixture
async def engine() -> AsyncIterator[tuple[RedisEngine, Recorder]]:
    require_redis()
    eng = ScratchRedisEngine(REDIS_URL, HistorySettings(size=100, ttl=600), prefix=redis_prefix())
    rec = Recorder()
    await eng.start(rec)
    try:
        yield eng, rec
    finally:
        await eng.close()


def body(i: int) -> bytes:
    return json.dumps({"i": i}).encode()


async def test_one_refused_item_publishes_none_of_the_batch(
    engine: tuple[RedisEngine, Recorder],
) -> None:
    eng, rec = engine
    a, b, c = "trades:PMA", "book:PMB", "ticker:PMC"
    await eng.subscribe([a, b, c])
    await eng._redis.set(eng.key(b, "m"), "not a hash")  # Redis will refuse b's script
    with pytest.raises(EngineError) as info:
        await eng.publish_many([(a, body(1), None), (b, body(2), b"{}"), (c, body(3), b"{}")])
    # before: a and c were published (seq 1 each, delivered to the node) without b
    assert (await eng.position(a)).seq == 0
    assert (await eng.position(c)).seq == 0
    assert await eng.snapshot(c) is None
    assert not isinstance(info.value, EngineUnavailable)
    assert "item 2 of 3" in str(info.value) and repr(b) in str(info.value)
    assert "nothing of the batch was published" in str(info.value)
    assert await eng._redis.exists(f"{eng.prefix}:batch:{eng.node_id}") == 0
    marker = await eng.publish(a, body(4))
    await rec.wait(lambda: marker in rec.pubs)
    assert rec.pubs == [marker] and marker.seq == 1  # nothing of the batch was delivered
    assert eng.stats.publish_errors == 1


async def test_a_corrupt_seq_is_refused_before_anything_is_written(
    engine: tuple[RedisEngine, Recorder],
) -> None:
    eng, _ = engine
    a, b = "trades:PMD", "trades:PME"
    await eng._redis.hset(eng.key(b, "m"), mapping={"e": "0badc0de", "s": "x"})
    with pytest.raises(EngineError) as info:
        await eng.publish_many([(a, body(1), None), (b, body(2), None)])
    assert (await eng.position(a)).seq == 0  # before: a was published
    assert "item 2 of 2" in str(info.value)
    await eng._redis.delete(eng.key(b, "m"))
    pubs = await eng.publish_many([(a, body(1), None), (b, body(2), None)])
    assert [(p.channel, p.seq) for p in pubs] == [(a, 1), (b, 1)]


async def test_the_gateway_rolls_back_a_trade_redis_refused_part_of(
    engine: tuple[RedisEngine, Recorder],
) -> None:
    eng, _ = engine
    now = [T0]
    gw = Gateway(eng, clock=lambda: now[0])
    await gw.publish_trade("BTC-USD", "65000", "0.5", "buy")
    await eng._redis.delete(eng.key("candles:BTC-USD:1h", "m"))
    await eng._redis.set(eng.key("candles:BTC-USD:1h", "m"), "clobbered")
    now[0] += 60_000
    with pytest.raises(EngineError) as info:
        await gw.publish_trade("BTC-USD", "65100", "2", "sell")
    # nothing of the refused trade is out: not the trade, not its ticker
    assert (await eng.position("trades:BTC-USD")).seq == 1
    ticker_pos = await eng.position("ticker:BTC-USD")
    assert ticker_pos.seq == 1
    assert "candles:BTC-USD:1h" in str(info.value)
    await eng._redis.delete(eng.key("candles:BTC-USD:1h", "m"))
    pub = await gw.publish_trade("BTC-USD", "65000", "0.25", "buy")
    assert json.loads(bytes(pub.data))["id"] == 2  # the refused trade's id was rolled back
    res = await eng.history("ticker:BTC-USD", Position(ticker_pos.epoch, 1))
    assert res.recovered and len(res.publications) == 1
    ticker = msgspec.json.decode(res.publications[0].data, type=TickerData)
    assert ticker.volume_24h == "0.75000000"  # 0.5 + 0.25: the 2 refused is not counted
