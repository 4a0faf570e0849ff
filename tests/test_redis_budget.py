"""The fleet-wide budget in Redis (logstream/redis_budget.py) against a real
redis-server, and three sink processes sharing one cap on a real mosquitto,
with Redis stopped mid-run."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import queue
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from logstream.config import ConfigError, parse_config
from logstream.local.mosquitto import Mosquitto
from logstream.metrics import Registry, UnitMetrics
from logstream.payload import decode, is_accounting
from logstream.redis_budget import BackgroundBudget, RedisBudget, mask_url
from logstream.sinks.mqtt import MqttSinkConfig
from logstream.units import BuildContext
from tests.support.mqtt import ExternalBroker, Subscriber, arrival_stamps, draining
from tests.support.redis import RedisServer

SPAWN = multiprocessing.get_context("spawn")


def test_mask_url_hides_the_password_only() -> None:
    assert mask_url("redis://u:pw@h:6379/0") == "redis://u:***@h:6379/0"
    assert mask_url("redis://:pw@h/0") == "redis://:***@h/0"
    assert mask_url("redis://h:6379/0") == "redis://h:6379/0"


@pytest.mark.parametrize(
    ("shared", "message"),
    [
        ({"redis": "http://:pw-9f3@h/0", "key": "k"}, "redis must be a redis://"),
        ({"redis": "redis://:pw-9f3@h/0", "key": "k", "fallback_share": 2}, "less than"),
        ({"redis": "redis://:pw-9f3@h/0"}, "required key"),
    ],
)
def test_shared_budget_config_errors_name_the_key_and_never_show_the_password(
    shared: dict[str, Any], message: str
) -> None:
    data = {
        "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
        "sinks": [
            {
                "type": "mqtt",
                "url": "mqtt://h",
                "topic": "t",
                "rate_limit": {"total_bytes_per_sec": 1000, "shared": shared},
            }
        ],
    }
    with pytest.raises(ConfigError) as error:
        parse_config(data)
    assert "shared" in str(error.value) and message in str(error.value)
    assert "pw-9f3" not in str(error.value)


def test_leases_are_allow_at_most_and_a_stopped_redis_falls_back_to_the_local_share(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = UnitMetrics("mqtt", "sink")
    budget = RedisBudget(redis_server.url, "fleet", metrics, fallback_share=0.25, retry_secs=0.2)
    started = time.monotonic()
    assert budget.lease("total/bytes", 1000, 100, 60) == 60
    second = budget.lease("total/bytes", 1000, 100, 60)
    # The bucket refills at 1000/s on Redis's clock between the calls (ms under load).
    refilled = 1000 * (time.monotonic() - started)
    assert 40 - 1 <= second <= 40 + 1 + refilled
    assert budget.lease("total/bytes", 1000, 100, 60) < 5 + 1000 * (time.monotonic() - started), (
        "nothing more than is there"
    )
    assert budget.share("total/bytes", 1000, 5000) == 1000, "alone: the whole cap"
    assert metrics.budget_fallback_leases == 0
    redis_server.stop()
    with caplog.at_level(logging.WARNING):
        granted = budget.lease("total/bytes", 1000, 100, 60)
    assert not budget.sharing
    assert granted == 25, "a quarter of the 100-token bucket"
    assert budget.share("total/bytes", 1000, 5000) == 250
    assert metrics.budget_fallback_leases == 1
    assert "unreachable" in caplog.text and "***" in caplog.text
    assert redis_server.password is not None and redis_server.password not in caplog.text
    registry = Registry()
    registry.unit("mqtt", "sink").budget_fallback_leases = metrics.budget_fallback_leases
    assert b"logstream_budget_fallback_leases_total" in registry.exposition()
    redis_server.start()
    time.sleep(0.25)
    budget.lease("total/bytes", 1000, 100, 10)
    assert budget.sharing, "sharing again once Redis answers"
    assert metrics.budget_fallback_leases == 1
    budget.close()


def test_the_background_budget_never_waits_on_redis(redis_server: RedisServer) -> None:
    """Redis frozen (SIGSTOP: every call waits for its 100 ms timeout): lease, charge and
    share return at once while the budget's task is inside its Redis call, and the
    event loop goes on; the task then falls back to the local share (counted) and
    shares again once Redis runs (SIGCONT)."""
    metrics = UnitMetrics("mqtt", "sink")
    budget = BackgroundBudget(
        RedisBudget(redis_server.url, "fleet", metrics, fallback_share=0.25, retry_secs=0.2)
    )
    process = redis_server.process
    assert process is not None

    async def until(condition: Any, what: str) -> None:
        deadline = time.monotonic() + 10
        while not condition():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.005)

    async def scenario() -> None:
        assert budget.lease("total/bytes", 1000, 100, 60) == 0, "nothing leased yet"
        await until(lambda: budget.lease("total/bytes", 1000, 100, 1) == 1, "a lease arrives")
        assert budget.sharing
        process.send_signal(signal.SIGSTOP)
        try:
            budget.lease("total/bytes", 1000, 100, 10_000)  # more than is there: asks Redis
            await until(lambda: "total/bytes" in budget._in_flight, "the task calls Redis")
            ticks = 0
            while "total/bytes" in budget._in_flight:  # the call waits for its timeout
                budget.lease("total/bytes", 1000, 100, 50)
                budget.charge("total/messages", 10, 10, 1)
                budget.share("total/bytes", 1000, 5000)
                ticks += 1
                await asyncio.sleep(0.001)
            assert ticks > 5, "the loop ran while Redis did not answer"
            await until(lambda: metrics.budget_fallback_leases > 0, "the fallback is counted")
            assert not budget.sharing
            assert budget.share("total/bytes", 1000, 5000) == 250, "the local share"
        finally:
            process.send_signal(signal.SIGCONT)
        await until(
            lambda: budget.lease("total/bytes", 1000, 100, 1) >= 0 and budget.sharing,
            "sharing again once Redis answers",
        )
        await budget.aclose()

    asyncio.run(scenario())


# --------------------------------------------------------------------------- end to end


def level_events(count: int, offset: int) -> list[dict[str, Any]]:
    levels = ["DEBUG"] * 60 + ["INFO"] * 35 + ["WARNING"] * 4 + ["ERROR"]
    return [
        {
            "host": "web-0",
            "level": levels[(n * 37) % 100],
            "message": f"GET /api/items/{n} 200 {n * 7 % 900} ms user={n % 50}",
            "n": offset + n,
        }
        for n in range(count)
    ]


SECS, BATCH, EVERY = 8, 200, 0.05  # 4000 events/s per instance, about 3x the cap in all


def _print_tasks() -> None:
    for task in asyncio.all_tasks():
        task.print_stack(file=sys.stderr)
    sys.stderr.flush()


def _instance(url: str, topic: str, redis_url: str, index: int, cap: float, out: Any) -> None:
    config = MqttSinkConfig.model_validate(
        {
            "type": "mqtt",
            "url": url,
            "topic": topic,
            "encoding": "lz4",
            "protocol": "3.1.1",
            "connect_wait_secs": 5,
            "rate_limit": {
                "total_bytes_per_sec": cap,
                "accounting_interval_secs": 2,
                "shared": {"redis": redis_url, "key": "fleet", "expected_instances": 3},
            },
        }
    )
    sink = config.build("mqtt", BuildContext())
    offset = index * 1_000_000
    batches = [level_events(BATCH, offset + BATCH * i) for i in range(int(SECS / EVERY))]
    sent: list[tuple[float, float]] = []
    publish = sink.connection.publish

    def recording(topic: str, payload: Any) -> None:
        sent.append((time.monotonic(), float(payload.wire)))
        publish(topic, payload)

    sink.connection.publish = recording  # type: ignore[method-assign]

    async def scenario() -> None:
        # Should it hang, the test asks for every task's stack (SIGUSR1) before failing.
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _print_tasks)
        await sink.start()
        out.put(("ready", index))
        started = time.monotonic()
        for i, batch in enumerate(batches):
            await sink.write(batch)
            await asyncio.sleep(max(0.0, started + (i + 1) * EVERY - time.monotonic()))
        await sink.close()

    asyncio.run(scenario())
    out.put(("done", (index, sink.metrics.budget_fallback_leases, sent)))


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("mosquitto_sub") is None, reason="mosquitto_sub is not installed")
def test_three_instances_share_one_cap_in_redis_and_keep_publishing_while_it_is_down(
    mosquitto: Mosquitto | ExternalBroker,
    mqtt_topic_root: str,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """Three instances, ~3x the cap offered in all: every 2-second window the broker
    delivers is within cap + 5% and above 85% of it; Redis stopped for 2 s mid-run:
    each instance goes on within its local share (counted), then shares again;
    every WARNING+ arrives."""
    cap = 60_000
    topic = f"{mqtt_topic_root}/fleet"
    host, port = urlsplit(mosquitto.url).hostname, urlsplit(mosquitto.url).port
    receiver = subprocess.Popen(
        [
            *("mosquitto_sub", "-h", str(host), "-p", str(port), "-V", "311", "-t", topic),
            *("-F", "%U %l", "-W", "40"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    collect = draining(receiver)
    subscriber = Subscriber(mosquitto.url, topic, protocol="3.1.1")
    out = SPAWN.Queue()
    instances = [
        SPAWN.Process(target=_instance, args=(mosquitto.url, topic, redis_server.url, i, cap, out))
        for i in range(3)
    ]
    try:
        for process in instances:
            process.start()
        for _ in instances:
            assert out.get(timeout=60)[0] == "ready"
        time.sleep(3.5)
        redis_server.stop()
        time.sleep(2)
        redis_server.start()
        try:
            results = [out.get(timeout=60)[1] for _ in instances]
        except queue.Empty:
            for process in instances:
                if process.is_alive() and process.pid is not None:
                    os.kill(process.pid, signal.SIGUSR1)
            time.sleep(1)
            raise AssertionError("an instance did not finish; its tasks are above") from None
        for process in instances:
            process.join(10)
        # The restarted Redis began empty: the budget's keys show the sharing resumed.
        client = redis.Redis.from_url(redis_server.url)
        resumed = client.keys("fleet:*")
        client.close()
        time.sleep(0.5)
    finally:
        for process in instances:
            if process.is_alive():
                process.kill()
                process.join(5)
        stdout = collect()
        subscriber.close()
    arrivals = arrival_stamps(stdout, topic)
    start = max(sent[0][0] for _, _, sent in results)
    end = min(sent[-1][0] for _, _, sent in results) - 0.5
    shift = time.time() - time.monotonic()
    totals = []
    at = start + shift + 1
    while at + 2 <= end + shift:
        totals.append(sum(size for stamp, size in arrivals if at <= stamp < at + 2) / 2)
        at += 0.1
    assert len(totals) >= 20
    print(f"broker-counted bytes/s per 2-s window: min {min(totals):.0f} max {max(totals):.0f}")
    assert max(totals) <= cap * 1.05, max(totals)
    assert min(totals) >= cap * 0.85, min(totals)
    assert all(fallback > 0 for _, fallback, _ in results), "the outage was counted"
    assert b"fleet:total/bytes" in resumed and b"fleet:demand:total/bytes" in resumed
    events = [e for m in subscriber.messages for e in decode(m.payload).events]
    delivered = {e["n"] for e in events if not is_accounting(e)}
    important = {
        e["n"]
        for index in range(3)
        for i in range(int(SECS / EVERY))
        for e in level_events(BATCH, index * 1_000_000 + BATCH * i)
        if e["level"] in ("WARNING", "ERROR")
    }
    assert important <= delivered, f"{len(important - delivered)} WARNING+ events lost"
