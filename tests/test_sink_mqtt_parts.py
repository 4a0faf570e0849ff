"""The MQTT sink's parts on their own, without a broker: the payload builder and the
scheduler (buckets, queues, priorities, eviction, accounting records)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from logstream.clock import ManualClock
from logstream.metrics import UnitMetrics
from logstream.payload import decode, framer, is_accounting
from logstream.sampling import LEVEL_NAMES, LEVELS
from logstream.sinks.mqtt import MqttSinkConfig, Payload, PayloadBuilder, wire_size
from logstream.sinks.mqtt.scheduler import Scheduler
from logstream.sinks.mqtt.state import TopicState

DEBUG, WARNING, ERROR = (LEVEL_NAMES.index(name) for name in ("DEBUG", "WARNING", "ERROR"))


def config(**settings: Any) -> MqttSinkConfig:
    return MqttSinkConfig.model_validate(
        {"type": "mqtt", "url": "mqtt://127.0.0.1:1", "topic": "t/x", **settings}
    )


def builder_for(**settings: Any) -> PayloadBuilder:
    cfg = config(**settings)
    return PayloadBuilder(cfg, framer(cfg.encoding, cfg.compression_level))


def lines(count: int, size: int = 100) -> list[bytes]:
    return [orjson.dumps({"n": n, "message": "x" * size}) for n in range(count)]


# --------------------------------------------------------------------------- payload builder


def test_collect_seals_at_payload_max_events_and_leaves_a_partial_payload_with_a_deadline() -> None:
    builder = builder_for(encoding="lz4", payload_max_events=10, payload_max_delay_secs=0.5)
    state = TopicState("t/x", 0.0, 0.0)
    sealed = builder.collect(state, lines(25), [DEBUG] * 25, now=100.0)
    assert [payload.events for payload, _ in sealed] == [10, 10]
    assert len(state.lines) == 5 and state.deadline == 100.5
    events = [e for payload, _ in sealed for e in decode(payload.data).events]
    assert [e["n"] for e in events] == list(range(20))
    rest = builder.seal(state)
    assert [payload.events for payload, _ in rest] == [5] and state.deadline is None


def test_sealed_payloads_stay_under_max_payload_bytes_and_know_their_wire_size() -> None:
    builder = builder_for(encoding="ndjson", max_payload_bytes=2_000, protocol="3.1.1")
    state = TopicState("t/x", 0.0, 0.0)
    builder.collect(state, lines(100), None, now=0.0)
    sealed = builder.seal(state)
    assert len(sealed) > 1
    assert all(len(payload.data) <= 2_000 for payload, _ in sealed)
    assert sum(payload.events for payload, _ in sealed) == 100
    for payload, raw in sealed:
        assert raw is None and payload.by_level is None
        assert payload.wire == wire_size(len("t/x"), len(payload.data), 0, None)


def test_mqtt5_payloads_carry_properties_whose_packed_size_is_in_the_wire_size() -> None:
    builder = builder_for(encoding="lz4", protocol="5", qos=1)
    state = TopicState("t/x", 0.0, 0.0)
    builder.collect(state, lines(3), [DEBUG, WARNING, DEBUG], now=0.0)
    ((payload, raw_by_level),) = builder.seal(state)
    assert payload.properties is not None
    packed = len(payload.properties.pack())
    assert payload.wire == wire_size(3, len(payload.data), 1, packed)
    assert payload.severity == WARNING
    assert payload.by_level is not None and payload.by_level[DEBUG] == 2
    assert raw_by_level is not None and raw_by_level[WARNING] == len(lines(3)[1]) + 1
    user = dict(payload.properties.UserProperty)
    assert user["events"] == "3" and user["encoding"] == "lz4"


def test_one_message_per_event_with_json_and_records_outrank_every_severity() -> None:
    builder = builder_for(encoding="json")
    state = TopicState("t/x", 0.0, 0.0)
    sealed = builder.singles(state, lines(2), [DEBUG, WARNING])
    assert [(p.events, p.severity) for p, _ in sealed] == [(1, DEBUG), (1, WARNING)]
    record = builder.record(state, b'{"logstream":{"record":"accounting"}}')
    assert record.accounting and record.events == 0 and record.severity == LEVELS


# --------------------------------------------------------------------------- scheduler


class Sender:
    """A connection that is always ready and takes every message at once."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.ready = True
        self.sent: list[tuple[float, str, Payload]] = []

    def outstanding_full(self, size: int) -> bool:
        return False

    def publish(self, topic: str, payload: Payload) -> None:
        self.sent.append((self.clock.monotonic(), topic, payload))


def scheduler_for(
    clock: ManualClock, **rate_limit: Any
) -> tuple[Scheduler, Sender, UnitMetrics, list[float]]:
    cfg = config(encoding="lz4", rate_limit=rate_limit)
    builder = PayloadBuilder(cfg, framer("lz4", None))
    sender = Sender(clock)
    metrics = UnitMetrics("mqtt", "sink")
    wakes: list[float] = []
    scheduler = Scheduler(
        cfg.rate_limit, clock, metrics, builder, sender, schedule=wakes.append, block=False
    )
    return scheduler, sender, metrics, wakes


def payload(wire: int, severity: int, events: int = 10) -> Payload:
    by_level = [0] * LEVELS
    by_level[severity] = events
    return Payload(b"x" * wire, events, wire, None, by_level, False, severity)


def test_the_buckets_hold_the_cap_and_the_scheduler_asks_to_be_woken_when_tokens_come() -> None:
    clock = ManualClock()
    scheduler, sender, _, wakes = scheduler_for(clock, total_bytes_per_sec=10_000, burst_secs=0.2)
    state = scheduler.new_topic("t/x", clock.monotonic())
    for _ in range(5):
        scheduler.enqueue(state, payload(900, DEBUG))
    scheduler.pump(state)
    assert len(sender.sent) == 2, "a 2000-byte bucket lets two 900-byte payloads through"
    assert wakes and wakes[-1] == pytest.approx(clock.monotonic() + 0.07)
    for _ in range(300):
        clock.advance(0.01)
        scheduler.pump(state)
    assert len(sender.sent) == 5
    # 2000 bytes at once, then 900 more every 90 ms: the fifth left at 0.25 s.
    assert sender.sent[-1][0] - sender.sent[0][0] == pytest.approx(0.25, abs=0.02)


def test_an_overflowing_queue_evicts_the_lowest_severity_newest_first() -> None:
    clock = ManualClock()
    scheduler, _, metrics, _ = scheduler_for(
        clock, total_bytes_per_sec=1_000, queue_secs=2, burst_secs=0.5
    )
    state = scheduler.new_topic("t/x", clock.monotonic())
    debug = [payload(400, DEBUG) for _ in range(6)]
    for item in debug:
        scheduler.enqueue(state, item)
    assert metrics.dropped["rate_limited"] == 10, "2000 bytes of queue: the sixth is dropped"
    scheduler.enqueue(state, payload(400, WARNING))
    assert [p.severity for p in state.ready] == [DEBUG] * 4 + [WARNING]
    assert state.ready[3] is debug[3], "the newest DEBUG went first"
    assert state.rate_limited[DEBUG] == 20 and metrics.dropped["rate_limited"] == 20


def test_payloads_holding_warning_and_above_are_never_evicted_and_overdraw_a_full_queue() -> None:
    """Payloads mix severities: after a surge the queue can be full of payloads that each
    hold a WARNING. Such a payload is never given up for another, and a new one may take
    the queue up to twice its limit; only beyond that is it dropped (and counted)."""
    clock = ManualClock()
    scheduler, _, metrics, _ = scheduler_for(
        clock, total_bytes_per_sec=1_000, queue_secs=2, burst_secs=0.5
    )
    state = scheduler.new_topic("t/x", clock.monotonic())
    warnings = [payload(400, WARNING) for _ in range(5)]
    for item in warnings:
        scheduler.enqueue(state, item)  # 2000 bytes: the queue is full
    error = payload(400, ERROR)
    scheduler.enqueue(state, error)
    assert list(state.ready) == [*warnings, error], "no WARNING payload given up for an ERROR"
    assert not metrics.dropped
    for _ in range(4):
        scheduler.enqueue(state, payload(400, WARNING))  # up to 4000 bytes queued
    assert state.queued_bytes == 4000 and not metrics.dropped
    scheduler.enqueue(state, payload(400, ERROR))
    assert metrics.dropped["rate_limited"] == 10, "beyond twice the queue: dropped, counted"
    scheduler.enqueue(state, payload(400, DEBUG))
    assert metrics.dropped["rate_limited"] == 20, "a DEBUG payload does not overdraw"


def test_accounting_records_go_first_and_into_debt_when_bigger_than_a_bucket() -> None:
    clock = ManualClock()
    scheduler, sender, _, _ = scheduler_for(clock, total_bytes_per_sec=1_000, burst_secs=0.1)
    state = scheduler.new_topic("t/x", clock.monotonic())
    state.sampled[DEBUG] = 7
    scheduler.enqueue(state, payload(50, WARNING))
    scheduler.account("mqtt", state, clock.monotonic(), clock.time(), pump=False)
    assert state.ready[0].accounting
    for _ in range(100):
        scheduler.pump(state)
        clock.advance(0.01)
    (_, _, record), (_, _, warning) = sender.sent
    (event,) = decode(record.data).events
    assert is_accounting(event) and event["logstream"]["sampled"] == {"DEBUG": 7}
    assert record.wire > 100, "bigger than the 100-byte bucket, sent into debt"
    assert warning.severity == WARNING


def test_nothing_is_published_while_not_connected_and_the_queue_is_counted_dropped() -> None:
    clock = ManualClock()
    scheduler, sender, metrics, _ = scheduler_for(clock, total_bytes_per_sec=100_000)
    sender.ready = False
    state = scheduler.new_topic("t/x", clock.monotonic())
    scheduler.enqueue(state, payload(100, DEBUG))
    scheduler.pump(state)
    assert not sender.sent and metrics.dropped["not_connected"] == 10
    assert "t/x" not in scheduler.active


# --------------------------------------------------------------------------- config


def test_websockets_url_is_optional_and_a_ws_url_without_credentials() -> None:
    assert config().websockets_url is None
    assert config(websockets_url="wss://b.example:8443/mqtt").websockets_url == (
        "wss://b.example:8443/mqtt"
    )
    for bad, message in [
        ("http://b.example/mqtt", "ws://"),
        ("ws://user:pw@b.example/mqtt", "credentials"),
        ("ws://b.example:99999/", "port"),
    ]:
        with pytest.raises(ValidationError, match=message) as error:
            config(websockets_url=bad)
        # Reported on the sink (whose settings the config errors never print), not the field.
        ((item),) = error.value.errors()
        assert ":pw@" not in item["msg"] and isinstance(item["input"], dict)
