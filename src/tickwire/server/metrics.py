"""Prometheus metrics, read from the hub's counters at scrape time (nothing on the hot path)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from tickwire.hub.hub import LATENCY_BUCKETS
from tickwire.ingest.amqp import IngestStats
from tickwire.server.node import Node

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class NodeCollector(Collector):
    """Exposes a node's hub and engine figures."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        hub = self.node.hub
        s = hub.stats
        yield GaugeMetricFamily(
            "tickwire_connections", "Open client connections.", value=len(hub.connections)
        )
        by_dialect: dict[str, int] = {}
        held = 0
        for conn in hub.connections:
            name = conn.fmt.base.name
            by_dialect[name] = by_dialect.get(name, 0) + 1
            # queued, buffered for its catch-ups, and unsent in its socket's buffer
            held += hub.held_bytes(conn) - conn.backlog + conn.transport.get_write_buffer_size()
        dialects = GaugeMetricFamily(
            "tickwire_connections_by_dialect",
            "Open client connections by dialect.",
            labels=["dialect"],
        )
        for name, n in sorted(by_dialect.items()):
            dialects.add_metric([name], n)
        yield dialects
        yield GaugeMetricFamily(
            "tickwire_queue_bytes",
            "Bytes held for clients: queued in the hub, buffered for their catch-ups, and "
            "unsent in their sockets' buffers.",
            value=held,
        )
        engine = self.node.engine.stats
        ingested = CounterMetricFamily(
            "tickwire_publications_ingested",
            "Publications this process published through the engine, by channel kind "
            "(counted whether or not anyone subscribes).",
            labels=["kind"],
        )
        for kind, n in sorted(engine.published.items()):
            ingested.add_metric([kind], n)
        yield ingested
        reconnects = getattr(self.node.engine, "reconnects", None)
        if isinstance(reconnects, int):
            yield CounterMetricFamily(
                "tickwire_engine_reconnects",
                "Times the engine's pub/sub connection was re-established (each followed "
                "by a resync of every channel).",
                value=reconnects,
            )
        yield CounterMetricFamily(
            "tickwire_publish_errors",
            "Publish calls the engine did not take (nothing of them was published).",
            value=engine.publish_errors,
        )
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, n in zip(LATENCY_BUCKETS, s.latency_counts, strict=False):
            cumulative += n
            buckets.append((repr(bound), cumulative))
        buckets.append(("+Inf", cumulative + s.latency_counts[-1]))
        yield HistogramMetricFamily(
            "tickwire_delivery_latency_seconds",
            "From a publication's timestamp to its frames queued for this iteration's "
            "writes to every subscriber (one observation per publication fanned out).",
            buckets=buckets,
            sum_value=s.latency_sum,
        )
        yield GaugeMetricFamily(
            "tickwire_subscriptions",
            "Channel subscriptions held by open connections.",
            value=hub.subscription_count(),
        )
        yield GaugeMetricFamily(
            "tickwire_channels", "Channels with subscribers on this node.", value=hub.channel_count
        )
        counters = [
            (
                "publications_delivered",
                "Publications this node's hub delivered to its subscribers.",
                s.publications,
            ),
            ("frames_out", "WebSocket frames queued to clients.", s.frames_out),
            ("bytes_out", "Bytes written to client sockets.", s.bytes_out),
            ("writes", "Socket writes (coalesced frames) to clients.", s.writes),
            (
                "held_flushes",
                "Flushes held back (max_write_delay) because writes saturated the process.",
                s.held_flushes,
            ),
            ("slow_disconnects", "Clients cut for exceeding their queue cap.", s.slow_disconnects),
            ("replays", "Resubscriptions recovered from history.", s.replays),
            (
                "replayed_publications",
                "Publications replayed from history.",
                s.replayed_publications,
            ),
            ("recoveries_failed", "Resubscriptions history could not serve.", s.recoveries_failed),
            (
                "replays_over_budget",
                "Recoveries history had but over the replay budget (answered recovered: false).",
                s.replays_over_budget,
            ),
            ("resets", "Channel streams reset after lost history.", s.resets),
            ("gaps_recovered", "Delivery gaps filled from history.", s.gaps_recovered),
        ]
        for name, doc, value in counters:
            yield CounterMetricFamily(f"tickwire_{name}", doc, value=value)


class IngestCollector(Collector):
    """Exposes the RabbitMQ ingest's counters."""

    def __init__(self, stats: IngestStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        yield GaugeMetricFamily(
            "tickwire_amqp_connected", "1 while the RabbitMQ ingest is consuming.", s.connected
        )
        messages = CounterMetricFamily(
            "tickwire_amqp_messages", "RabbitMQ messages by outcome.", labels=["outcome"]
        )
        messages.add_metric(["applied"], s.applied)
        messages.add_metric(["ignored"], s.ignored)
        messages.add_metric(["rejected"], sum(s.rejected.values()))
        yield messages
        rejected = CounterMetricFamily(
            "tickwire_amqp_rejected", "RabbitMQ messages refused, by reason.", labels=["reason"]
        )
        for reason, n in sorted(s.rejected.items()):
            rejected.add_metric([reason], n)
        yield rejected
        yield CounterMetricFamily(
            "tickwire_amqp_sequence_gaps",
            "Peatio ob-inc sequences that skipped (increments lost upstream).",
            value=s.sequence_gaps,
        )
        yield CounterMetricFamily(
            "tickwire_amqp_reconnects", "Reconnections to RabbitMQ.", value=s.reconnects
        )


class WorkerCollector(Collector):
    """Which ``tickwire serve --workers`` worker answered: every figure of a scrape is
    that one process's."""

    def __init__(self, index: int, pid: int) -> None:
        self.index, self.pid = index, pid

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "tickwire_worker",
            "1, labelled with the worker (of tickwire serve --workers) whose figures these are.",
            labels=["worker", "pid"],
        )
        info.add_metric([str(self.index), str(self.pid)], 1)
        yield info


def make_registry(node: Node) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
