"""`logstream tail`: decoding and printing, and the command against a real mosquitto."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import time
from typing import Any

import lz4.frame
import orjson
import pytest

from logstream.cli import main
from logstream.local.mosquitto import Mosquitto
from logstream.metrics import UnitMetrics
from logstream.payload import ENCODERS
from logstream.sampling import accounting_record
from logstream.severity import Severity
from logstream.sinks.mqtt import MqttSinkConfig
from logstream.tail import Printer, TailOptions
from logstream.units import BuildContext
from tests.support.mqtt import ExternalBroker

EVENTS = [
    {"@timestamp": "2026-11-24T10:00:00.000Z", "level": "INFO", "host": "web-1", "message": "up"},
    {
        "@timestamp": "2026-11-24T10:00:01.000Z",
        "level": "WARN",
        "host": "web-1",
        "message": "disk\nalmost full",
        "sample_rate": 10,
    },
    {
        "@timestamp": "2026-11-24T10:00:02.000Z",
        "level": "ERROR",
        "host": "web-2",
        "message": "down",
    },
]


def printer(**options: Any) -> tuple[Printer, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    return Printer(TailOptions(topics=["logs/#"], **options), out, err), out, err


def lz4_payload(events: list[dict[str, Any]]) -> bytes:
    ((payload, _),) = ENCODERS["lz4"](UnitMetrics("t", "sink")).encode(events)
    return payload


def test_events_print_as_lines_with_time_level_host_message_and_sample_rate() -> None:
    unit, out, err = printer()
    unit.message("logs/web", lz4_payload(EVENTS), None, {})
    assert out.getvalue().splitlines() == [
        "2026-11-24T10:00:00.000Z INFO     web-1 up",
        "2026-11-24T10:00:01.000Z WARN     web-1 disk\\nalmost full (sampled 1/10)",
        "2026-11-24T10:00:02.000Z ERROR    web-2 down",
    ]
    assert err.getvalue() == ""
    assert unit.events == 3


def test_level_filter_hides_lower_severities_using_the_severity_scale() -> None:
    unit, out, _ = printer(level=Severity.WARNING)
    unit.message("logs/web", lz4_payload(EVENTS), None, {})
    assert [line.split()[1] for line in out.getvalue().splitlines()] == ["WARN", "ERROR"]


def test_levels_are_coloured_when_asked() -> None:
    unit, out, _ = printer(colour=True)
    unit.message("logs/web", orjson.dumps(EVENTS[2]), "application/json", {})
    assert out.getvalue() == "\033[31m2026-11-24T10:00:02.000Z ERROR    web-2 down\033[0m\n"


def test_json_mode_prints_each_event_as_one_json_line() -> None:
    unit, out, _ = printer(json=True)
    unit.message("logs/web", b"\n".join(orjson.dumps(e) for e in EVENTS) + b"\n", None, {})
    assert [orjson.loads(line) for line in out.getvalue().splitlines()] == EVENTS


def test_accounting_records_print_as_suppression_summaries_whatever_the_level_filter() -> None:
    record = accounting_record(
        unit="mqtt",
        start_wall=1_700_000_000,
        end_wall=1_700_000_010,
        suppressed={"sampled": [0, 900, 40, 0, 0, 0, 0], "rate_limited": [0] * 7},
        kept=[0, 100, 60, 0, 5, 1, 0],
        sample_rates={"DEBUG": 10.0},
        topic="logs/web-1",
    )
    unit, out, _ = printer(level=Severity.ERROR)
    unit.message("logs/web-1", lz4_payload([record]), None, {"record": "accounting"})
    assert out.getvalue() == (
        "-- logs/web-1: mqtt: 940 events suppressed on logs/web-1 in 10.0 s "
        "(sampled DEBUG 900, INFO 40) sample rates: DEBUG 1/10\n"
    )
    assert unit.events == 0


@pytest.mark.parametrize(
    ("payload", "properties", "message"),
    [
        (b"\x00garbage", {}, "cannot decode: not a logstream payload"),
        (lz4_payload(EVENTS)[:-6], {}, "cannot decode: truncated LZ4 frame"),
        (b'{"a": 1}', {"logstream": "7"}, "cannot decode: format version 7 is not supported"),
    ],
)
def test_undecodable_messages_are_reported_on_stderr_and_skipped(
    payload: bytes, properties: dict[str, str], message: str
) -> None:
    unit, out, err = printer()
    unit.message("logs/x", payload, None, properties)
    unit.message("logs/x", orjson.dumps(EVENTS[0]), None, {})
    assert message in err.getvalue()
    assert err.getvalue().startswith("logstream tail: logs/x: ")
    assert out.getvalue().count("\n") == 1, "the next message is printed"
    assert unit.errors == 1


def test_bad_lines_inside_a_payload_are_reported_and_the_rest_printed() -> None:
    unit, out, err = printer()
    unit.message("logs/x", lz4.frame.compress(b'{"message": "a"}\nnot json\n'), None, {})
    assert "line 2: not valid JSON" in err.getvalue()
    assert out.getvalue().endswith(" a\n")


def test_count_stops_after_that_many_events() -> None:
    unit, out, _ = printer(count=2)
    unit.message("logs/web", lz4_payload(EVENTS), None, {})
    assert unit.done
    assert out.getvalue().count("\n") == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tail", "--level", "LOUD", "logs/#"], "--level: unknown severity 'LOUD'"),
        (["tail", "--count", "0", "logs/#"], "--count must be at least 1, value: 0"),
        (["tail", "--url", "http://x", "logs/#"], "--url must be mqtt://host[:port]"),
    ],
)
def test_bad_tail_arguments_are_refused_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


# --------------------------------------------------------------------------- the command


def start_tail(url: str, *args: str) -> subprocess.Popen[str]:
    """``logstream tail`` as a subprocess, returned once it has subscribed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "logstream", "tail", "--url", url, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    line = process.stderr.readline()
    if "subscribed to" not in line:
        process.kill()
        raise AssertionError(f"tail did not subscribe: {line!r}")
    return process


def publish(url: str, topic: str, events: list[dict[str, Any]], **settings: Any) -> None:
    sink = MqttSinkConfig.model_validate(
        {"type": "mqtt", "url": url, "topic": topic, "qos": 1, **settings}
    ).build("mqtt", BuildContext())

    async def scenario() -> None:
        await sink.start()
        await sink.write(events)
        await sink.close()

    asyncio.run(scenario())


@pytest.mark.integration
@pytest.mark.parametrize("encoding", ["json", "lz4", "zstd"])
def test_logstream_tail_prints_the_events_a_sink_publishes(
    mosquitto: Mosquitto | ExternalBroker, mqtt_topic_root: str, encoding: str
) -> None:
    tail = start_tail(mosquitto.url, "--count", "3", f"{mqtt_topic_root}/#")
    publish(mosquitto.url, f"{mqtt_topic_root}/{{host}}", EVENTS, encoding=encoding)
    out, err = tail.communicate(timeout=10)
    assert tail.returncode == 0, err
    assert sorted(out.splitlines()) == sorted(
        [
            "2026-11-24T10:00:00.000Z INFO     web-1 up",
            "2026-11-24T10:00:01.000Z WARN     web-1 disk\\nalmost full (sampled 1/10)",
            "2026-11-24T10:00:02.000Z ERROR    web-2 down",
        ]
    )


@pytest.mark.integration
def test_logstream_tail_json_with_a_level_over_mqtt311(
    mosquitto: Mosquitto | ExternalBroker, mqtt_topic_root: str
) -> None:
    tail = start_tail(
        mosquitto.url,
        "--json",
        "--level",
        "warning",
        "--count",
        "2",
        "--protocol",
        "3.1.1",
        f"{mqtt_topic_root}/#",
    )
    publish(mosquitto.url, f"{mqtt_topic_root}/x", EVENTS, encoding="lz4", protocol="3.1.1")
    out, _ = tail.communicate(timeout=10)
    assert [orjson.loads(line) for line in out.splitlines()] == EVENTS[1:]


@pytest.mark.integration
def test_logstream_tail_reconnects_after_the_broker_restarts(local_mosquitto: Mosquitto) -> None:
    tail = start_tail(local_mosquitto.url, "--count", "2", "logs/#")
    try:
        publish(local_mosquitto.url, "logs/x", EVENTS[:1], encoding="lz4")
        local_mosquitto.stop()
        time.sleep(0.3)
        local_mosquitto.start()
        assert tail.stderr is not None
        deadline = time.monotonic() + 15
        while "subscribed again" not in tail.stderr.readline():
            assert time.monotonic() < deadline, "tail did not resubscribe"
        publish(local_mosquitto.url, "logs/x", EVENTS[2:], encoding="lz4")
        out, _ = tail.communicate(timeout=10)
    finally:
        tail.kill()
    assert [line.split()[1] for line in out.splitlines()] == ["INFO", "ERROR"]
