"""Hub behaviour the Redis engine needs: a subscriber's catch-up is read from the shared
store, which can be ahead of the publications this node has received live (pub/sub trails
the store). The lag is made deterministic here with the memory engine: the node stops
hearing the channel for a while, exactly as a delayed pub/sub message looks."""

from __future__ import annotations

import json

from tickwire.dialects.native import NATIVE
from tickwire.model import Position

from .test_hub import MemoryTransport, live, next_iteration, setup


async def test_a_catchup_ahead_of_the_live_stream_is_not_sent_twice() -> None:
    engine, hub = await setup()
    t1, t2 = MemoryTransport(), MemoryTransport()
    c1, c2 = hub.connect(t1, NATIVE, 1 << 20), hub.connect(t2, NATIVE, 1 << 20)
    await live(hub, c1, "trades:X")
    first = engine.publish_now("trades:X", b"1")
    await engine.unsubscribe(["trades:X"])  # 2 and 3 are "still in flight" to this node
    engine.publish_now("trades:X", b"2")
    engine.publish_now("trades:X", b"3")
    catchup = await hub.subscribe(c2, "trades:X", False, Position(first.epoch, 1))
    assert [p.seq for p in catchup.replay] == [2, 3]
    hub.go_live(c2, catchup)
    await engine.subscribe(["trades:X"])
    engine.publish_now("trades:X", b"4")  # the node hears 4 after 1 and recovers 2, 3
    for _ in range(5):
        await next_iteration()
    assert [m["seq"] for m in t1.messages()] == [1, 2, 3, 4]
    assert [m["seq"] for m in t2.messages()] == [2, 3, 4]
    engine.publish_now("trades:X", b"5")
    await next_iteration()
    assert [m["seq"] for m in t2.messages()] == [2, 3, 4, 5]


async def test_a_snapshot_ahead_of_the_live_stream_is_followed_by_later_seqs_only() -> None:
    engine, hub = await setup()
    t1, t2 = MemoryTransport(), MemoryTransport()
    c1, c2 = hub.connect(t1, NATIVE, 1 << 20), hub.connect(t2, NATIVE, 1 << 20)
    engine.publish_now("book:X", b"{}", snapshot=b'{"v":1}')
    await live(hub, c1, "book:X", stateful=True)
    await engine.unsubscribe(["book:X"])
    for i in (2, 3):
        engine.publish_now("book:X", b"{}", snapshot=json.dumps({"v": i}).encode())
    hub.go_live(c2, await hub.subscribe(c2, "book:X", True, None))
    await engine.subscribe(["book:X"])
    engine.publish_now("book:X", b"{}", snapshot=b'{"v":4}')
    for _ in range(5):
        await next_iteration()
    msgs = t2.messages()
    assert [(m["type"], m["seq"]) for m in msgs] == [("snapshot", 3), ("pub", 4)]
    assert msgs[0]["data"] == {"v": 3}


async def test_a_subscriber_waiting_to_join_can_leave() -> None:
    engine, hub = await setup()
    t1, t2 = MemoryTransport(), MemoryTransport()
    c1, c2 = hub.connect(t1, NATIVE, 1 << 20), hub.connect(t2, NATIVE, 1 << 20)
    await live(hub, c1, "trades:X")
    first = engine.publish_now("trades:X", b"1")
    await engine.unsubscribe(["trades:X"])
    engine.publish_now("trades:X", b"2")
    hub.go_live(c2, await hub.subscribe(c2, "trades:X", False, Position(first.epoch, 1)))
    hub.disconnect(c1)
    assert hub.channel_count == 1  # c2 still holds it while it waits to join
    hub.disconnect(c2)
    await next_iteration()
    assert hub.channel_count == 0


async def test_a_reset_reaches_a_subscriber_waiting_to_join() -> None:
    engine, hub = await setup(size=2)
    t1, t2 = MemoryTransport(), MemoryTransport()
    c1, c2 = hub.connect(t1, NATIVE, 1 << 20), hub.connect(t2, NATIVE, 1 << 20)
    await live(hub, c1, "trades:X")
    first = engine.publish_now("trades:X", b"1")
    await engine.unsubscribe(["trades:X"])
    engine.publish_now("trades:X", b"2")
    hub.go_live(c2, await hub.subscribe(c2, "trades:X", False, Position(first.epoch, 1)))
    for i in range(3, 8):  # history (size 2) no longer reaches back to 2
        engine.publish_now("trades:X", str(i).encode())
    await engine.subscribe(["trades:X"])
    engine.publish_now("trades:X", b"8")
    for _ in range(5):
        await next_iteration()
    for t in (t1, t2):
        assert t.messages()[-1] == {
            "type": "reset",
            "channel": "trades:X",
            "epoch": first.epoch,
            "seq": 8,
        }
    assert [m["seq"] for m in t2.messages()] == [2, 8]
