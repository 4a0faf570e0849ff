"""Several brokers behind one sink (``urls: [A, B, ...]``): every message goes to each.

Each broker has its own :class:`~.connection.Connection`: its own paho client
and thread, its own bound on outstanding messages (``max_outstanding_*``),
its own outage buffer and its own counters (a unit named
``<sink>@<host>:<port>`` in ``/metrics``). The scheduler sees one
:class:`Fanout` as its sender: a message is handed to every broker that takes
it, and a broker that is down or full drops its copy (counted on that broker)
without holding up the others.

The sink's own counters count each event once: ``events_out`` when the first
broker reported its copy sent, a drop only when no broker took it (the reason
of the last copy lost). ``bytes_out`` adds up every broker's payload bytes.

Caps (``rate_limit``) hold **per broker**: a payload is charged to the buckets
once and every broker gets the same payloads, so no broker carries more than
a cap. With QoS 1 a broker that is down keeps taking messages into paho's
queue, up to ``max_outstanding_messages`` / ``max_outstanding_bytes``: its
outage buffer, resent when it is back. With QoS 0 a broker that is down
drops its copies (``not_connected``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from logstream.metrics import DropReason, UnitMetrics
from logstream.units import BuildContext

from .config import MqttSinkConfig
from .connection import Connection
from .payloads import Payload


def connections(
    config: MqttSinkConfig,
    name: str,
    ctx: BuildContext,
    metrics: UnitMetrics,
    *,
    on_connected: Callable[[int | None], None],
    on_sent: Callable[[], None],
) -> list[Connection]:
    """One connection per broker of the sink. With several, each counts on a unit of
    its own (``<sink>@<host>:<port>``) and, with QoS 1, buffers while its broker is down;
    with one, it counts on the sink's ``metrics``."""
    brokers = config.brokers
    several = len(brokers) > 1
    made = []
    for broker in brokers:
        unit = f"{name}@{broker.endpoint.host}:{broker.endpoint.port}" if several else name
        made.append(
            Connection(
                config,
                unit,
                ctx.registry.unit(unit, "sink") if several else metrics,
                broker,
                on_connected=on_connected,
                on_sent=on_sent,
                buffer_while_down=several,
            )
        )
    return made


class Copies:
    """The copies of one message, one per broker: counts the sink's events once."""

    __slots__ = ("delivered", "events", "left", "metrics")

    def __init__(self, events: int, copies: int, metrics: UnitMetrics) -> None:
        self.events = events
        self.left = copies
        self.delivered = False
        self.metrics = metrics

    def sent(self, size: int) -> None:
        """A broker reported its copy sent."""
        self.left -= 1
        self.metrics.bytes_out += size
        if not self.delivered:
            self.delivered = True
            self.metrics.events_out += self.events

    def lost(self, reason: DropReason) -> None:
        """A broker's copy was dropped; the events are dropped once no copy is left."""
        self.left -= 1
        if self.left == 0 and not self.delivered and self.events:
            self.metrics.drop(self.events, reason)


class Fanout:
    """The scheduler's sender when the sink has several brokers."""

    def __init__(self, connections: list[Connection], metrics: UnitMetrics) -> None:
        self.connections = connections
        self.metrics = metrics
        # One event for all: a message sent on any broker makes room.
        self.room = asyncio.Event()
        for connection in connections:
            connection.room = self.room

    @property
    def ready(self) -> bool:
        """At least one broker is connected."""
        return any(connection.ready for connection in self.connections)

    @property
    def connected(self) -> bool:
        return any(connection.connected for connection in self.connections)

    @property
    def closing(self) -> bool:
        return all(connection.closing for connection in self.connections)

    def full(self) -> bool:
        """No broker that takes messages has room for one more."""
        return all(not c.accepts or c.full() for c in self.connections)

    def outstanding_full(self, size: int) -> bool:
        return all(not c.accepts or c.outstanding_full(size) for c in self.connections)

    async def room_for(self, size: int) -> bool:
        """Wait while a broker is connected until one has room for ``size`` bytes."""
        while self.connected and not self.closing:
            if not self.outstanding_full(size):
                return True
            self.room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.room.wait(), 1.0)
        return False

    def publish(self, topic: str, payload: Payload) -> None:
        """Hand the message to every broker that takes it; count the others' copies."""
        copies = Copies(payload.events, len(self.connections), self.metrics)
        size = len(payload.data)
        for connection in self.connections:
            connection.metrics.events_in += payload.events
            if not connection.accepts:
                connection.lost(payload.events, "not_connected", copies)
            elif connection.outstanding_full(size):
                connection.lost(payload.events, "broker_backpressure", copies)
            else:
                connection.publish(topic, payload, copies)
