"""RabbitMQ ingest throughput: Peatio events per second from the broker into the gateway,
one consumer, memory engine, no subscribers.

The same messages are measured two ways in one run: through ``PeatioIngest.handle``
alone (the floor: decoding, mapping, the gateway) and end to end — queued on the broker
first (a scratch vhost of its own, made and removed with ``rabbitmqctl``: the broker may
be shared), then consumed with the ingest's own consumer until all are applied.

    .venv/bin/python -m bench.amqp_ingest [--n 20000] [--url amqp://guest:guest@127.0.0.1:5672/]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import time
import uuid
from urllib.parse import quote, urlsplit

import aio_pika

from tickwire.engine import MemoryEngine
from tickwire.ingest.amqp import BINDINGS, EXCHANGE, AmqpSettings, PeatioIngest
from tickwire.ingest.gateway import Gateway


def messages(n: int) -> list[tuple[str, bytes]]:
    """Peatio's mix: ob-inc mostly (one level each), a trade every 10th message."""
    out: list[tuple[str, bytes]] = [
        (
            "public.btcusd.ob-snap",
            json.dumps(
                {
                    "asks": [[f"{65001 + i}.0", "1.0"] for i in range(50)],
                    "bids": [[f"{64999 - i}.0", "1.0"] for i in range(50)],
                    "sequence": 0,
                }
            ).encode(),
        )
    ]
    now = int(time.time())
    for i in range(1, n):
        if i % 10 == 0:
            trade = {
                "tid": i,
                "taker_type": "buy",
                "date": now,
                "price": "65001.0",
                "amount": "0.001",
            }
            out.append(("public.btcusd.trades", json.dumps({"trades": [trade]}).encode()))
        else:
            side = "bids" if i % 2 else "asks"
            price = 64999 - i % 40 if side == "bids" else 65001 + i % 40
            level = [f"{price}.0", f"{1 + i % 5}.0"]
            out.append(("public.btcusd.ob-inc", json.dumps({side: level, "sequence": i}).encode()))
    return out


class Timed(PeatioIngest):
    """The ingest, timing from its first message to its ``expect``-th."""

    def __init__(self, url: str, expect: int) -> None:
        super().__init__(Gateway(MemoryEngine()), AmqpSettings(url=url, prefetch=1000))
        self.expect = expect
        self.first = 0.0
        self.done = asyncio.Event()

    async def handle(self, routing_key: str, body: bytes) -> str:
        if not self.first:
            self.first = time.perf_counter()
        outcome = await super().handle(routing_key, body)
        if self.stats.received >= self.expect:
            self.done.set()
        return outcome


def ingest(url: str, expect: int = 0) -> Timed:
    return Timed(url, expect)


async def floor(msgs: list[tuple[str, bytes]]) -> float:
    ing = ingest("amqp://unused/")
    start = time.perf_counter()
    for key, body in msgs:
        await ing.handle(key, body)
    elapsed = time.perf_counter() - start
    assert ing.stats.applied == len(msgs), ing.stats
    return len(msgs) / elapsed


def ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True)


async def raw_consume(url: str, queue_name: str, n: int) -> float:
    """aio-pika alone: consume ``n`` queued messages, acking as the ingest does, doing
    nothing with them (the ceiling of any consumer on this broker and client)."""
    conn = await aio_pika.connect(url)
    channel = await conn.channel()
    await channel.set_qos(prefetch_count=1000)
    queue = await channel.declare_queue(queue_name, passive=True)
    inbox: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()

    async def deliver(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        inbox.put_nowait(message)

    await queue.consume(deliver)
    first = 0.0
    for i in range(1, n + 1):
        message = await inbox.get()
        if i == 1:
            first = time.perf_counter()
        if inbox.empty() or i % 100 == 0 or i == n:
            await message.ack(multiple=True)
    elapsed = time.perf_counter() - first
    await conn.close()
    return n / elapsed


async def through_broker(base: str, msgs: list[tuple[str, bytes]]) -> tuple[float, float]:
    vhost = f"tickwire-bench-{uuid.uuid4().hex[:8]}"
    ctl("add_vhost", vhost)
    try:
        ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        parts = urlsplit(base)
        url = f"{parts.scheme}://{parts.netloc}/{quote(vhost, safe='')}"
        ing = ingest(url, len(msgs))
        # declare and bind the ingest's queue, queue everything, then consume
        conn = await aio_pika.connect(url)
        channel = await conn.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=False
        )
        s = ing.settings
        queue = await channel.declare_queue(
            s.queue,
            arguments={"x-expires": int(s.queue_ttl * 1000), "x-max-length": s.queue_max},
        )
        for key in BINDINGS:
            await queue.bind(exchange, key)
        for _ in range(2):  # once for the raw consumer, once for the ingest
            for key, body in msgs:
                await exchange.publish(aio_pika.Message(body), routing_key=key)
        await conn.close()
        raw = await raw_consume(url, s.queue, len(msgs))
        task = asyncio.create_task(ing.run())
        await asyncio.wait_for(ing.done.wait(), 600)
        elapsed = time.perf_counter() - ing.first
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert ing.stats.applied == len(msgs), ing.stats
        return raw, len(msgs) / elapsed
    finally:
        ctl("delete_vhost", vhost)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    args = ap.parse_args()
    msgs = messages(args.n)
    alone = await floor(msgs)
    raw, broker = await through_broker(args.url, msgs)
    print("| path | events/s | µs each |\n|---|---:|---:|")
    print(f"| `PeatioIngest.handle` alone (floor) | {alone:,.0f} | {1e6 / alone:.1f} |")
    print(f"| aio-pika consume + ack, no processing | {raw:,.0f} | {1e6 / raw:.1f} |")
    print(f"| RabbitMQ → consumer → gateway | {broker:,.0f} | {1e6 / broker:.1f} |")
    print(
        f"\nfull path / handle alone: {broker / alone:.2f}; full path / aio-pika alone: "
        f"{broker / raw:.2f} ({args.n:,} messages, {time.strftime('%Y-%m-%d')})"
    )


if __name__ == "__main__":
    asyncio.run(main())
