"""Several MQTT brokers: the sink publishes every message to each, numbered by producer and
topic; ``logstream tail --url A --url B`` prints every event once, also when one broker dies."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from logstream.local.mosquitto import Mosquitto
from logstream.payload import (
    ENVELOPE_TYPE,
    CompressionEstimate,
    decode,
    envelope_line,
    frame_within,
    framer,
)
from logstream.tail import Dedupe, Gap
from logstream.units import BuildContext
from sinks.mqtt import MqttSinkConfig
from sinks.mqtt.payloads import Numbering
from tests.support.mqtt import Subscriber

# --------------------------------------------------------------------------- dedupe


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_dedupe_admits_each_number_once_per_producer_and_topic() -> None:
    dedupe = Dedupe()
    assert dedupe.admit("p", "t", 5)  # joining mid-stream: no gap
    assert not dedupe.admit("p", "t", 5)
    assert dedupe.admit("p", "t", 6)
    assert dedupe.admit("p", "u", 6)  # another topic
    assert dedupe.admit("q", "t", 6)  # another producer
    assert not dedupe.admit("p", "t", 6)
    assert dedupe.duplicates == 2
    assert dedupe.gaps(0.0) == []


def test_a_number_skipped_then_delivered_by_the_other_broker_is_no_gap() -> None:
    clock = FakeClock()
    dedupe = Dedupe(clock=clock)
    assert dedupe.admit("p", "t", 1)
    assert dedupe.admit("p", "t", 4)  # broker A is ahead: 2 and 3 are missing for now
    assert dedupe.admit("p", "t", 3)  # broker B delivers them
    assert dedupe.admit("p", "t", 2)
    assert not dedupe.admit("p", "t", 2)
    clock.now += 10
    assert dedupe.gaps(2.0) == []


def test_numbers_nobody_delivered_are_reported_once_as_a_range_after_the_wait() -> None:
    clock = FakeClock()
    dedupe = Dedupe(clock=clock)
    dedupe.admit("p", "t", 1)
    dedupe.admit("p", "t", 5)
    clock.now += 1
    assert dedupe.gaps(2.0) == []  # not overdue yet
    clock.now += 2
    assert dedupe.gaps(2.0) == [Gap("p", "t", 2, 4)]
    assert dedupe.gaps(2.0) == []  # reported once
    assert Gap("p", "t", 2, 4).describe() == "gap: 3 messages missing on t from p (seq 2-4)"
    assert dedupe.admit("p", "t", 3)  # late, but never printed before
    assert dedupe.late == 1


def test_the_window_bounds_what_is_remembered() -> None:
    clock = FakeClock()
    dedupe = Dedupe(window=10, max_streams=2, clock=clock)
    dedupe.admit("p", "t", 1)
    dedupe.admit("p", "t", 100)  # 2..99 missing, more than the window: reported at once
    assert dedupe.gaps(60.0) == [Gap("p", "t", 2, 89)]
    assert len(dedupe.streams[("p", "t")].missing) == 10
    assert not dedupe.admit("p", "t", 50)  # too old to tell: dropped
    dedupe.admit("p", "u", 1)
    dedupe.admit("p", "v", 1)
    assert list(dedupe.streams) == [("p", "u"), ("p", "v")]  # least recently used went


# --------------------------------------------------------------------------- numbering


def test_numbered_payloads_carry_producer_and_contiguous_numbers_also_when_split() -> None:
    numbering = Numbering("web-1-abcd")
    lines = [orjson.dumps({"message": "x" * 200, "n": n}) for n in range(40)]
    numbering.begin("logs/a")
    messages = frame_within(framer("ndjson"), lines, 2_000, CompressionEstimate(), numbering)
    assert len(messages) > 2
    seen = []
    for data, count in messages:
        decoded = decode(data)
        assert decoded.producer == "web-1-abcd"
        assert len(decoded.events) == count
        assert all(event.get("type") != ENVELOPE_TYPE for event in decoded.events)
        seen.append(decoded.seq)
    assert seen == list(range(1, len(messages) + 1))
    assert numbering.take("logs/a") == len(messages) + 1
    assert numbering.take("logs/b") == 1


def test_envelope_from_mqtt5_properties_and_bad_envelopes_are_reported() -> None:
    decoded = decode(b'{"a": 1}', properties={"producer": "p", "seq": "7", "logstream": "1"})
    assert (decoded.producer, decoded.seq, decoded.events) == ("p", 7, [{"a": 1}])
    bad = decode(envelope_line("p", 0) + b"\n" + b'{"a": 1}\n', properties={"logstream": "2"})
    assert bad.seq is None and bad.events == [{"a": 1}]
    assert "bad envelope" in bad.errors[0]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"urls": ["mqtt://h:1", "mqtt://h:1"]}, "the same broker twice"),
        ({"urls": ["mqtt://h:1"], "url": "mqtt://h:2"}, "give url or urls, not both"),
        ({"urls": ["mqtt://a:x@h:1", "mqtt://a:y@h:2"]}, "different values of password"),
        ({"urls": [{"url": "http://h:1", "username": "a", "password": "x"}]}, "mqtt://"),
        ({"urls": [{"url": "mqtt://h:1", "password": "x"}]}, "password is set but username"),
        ({"urls": [{"url": "mqtt://a:x@h:1", "password": "x"}]}, "password is given both"),
        ({"urls": [{"url": "mqtt://h:1", "ca_file": "ca.pem"}]}, "ca_file is only used"),
        ({"urls": ["mqtt://h:1", {"url": "mqtt://h:1", "username": "u"}]}, "the same broker twice"),
        (
            {"urls": ["mqtt://h:1", "mqtt://h:2"], "encoding": "json", "protocol": "3.1.1"},
            "need protocol 5",
        ),
    ],
)
def test_bad_broker_lists_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        MqttSinkConfig.model_validate({"type": "mqtt", "topic": "t", **settings})
    assert "x@" not in str(caught.value).replace("mqtt://a:x@h", "")


def test_an_entry_of_urls_has_its_own_credentials_the_others_take_the_sinks() -> None:
    config = MqttSinkConfig.model_validate(
        {
            "type": "mqtt",
            "topic": "t",
            "username": "shared",
            "password": "pw-shared",
            "ca_file": "/etc/ssl/sink-ca.pem",
            "urls": [
                "mqtts://h:1",
                {"url": "mqtts://b:pw-b@h:2", "ca_file": "/etc/ssl/b-ca.pem"},
                {"url": "mqtt://h:3", "username": "c"},
            ],
        }
    )
    found = [
        (b.url, b.username, b.password_text, b.ca_file and str(b.ca_file)) for b in config.brokers
    ]
    assert found == [
        ("mqtts://h:1", "shared", "pw-shared", "/etc/ssl/sink-ca.pem"),
        ("mqtts://h:2", "b", "pw-b", "/etc/ssl/b-ca.pem"),
        ("mqtt://h:3", "c", None, "/etc/ssl/sink-ca.pem"),
    ]
    assert config.url == "mqtts://h:1" and config.numbered
    assert "pw-" not in repr(config) and "pw-" not in str(config.model_dump())


def test_several_urls_share_credentials_and_number_messages() -> None:
    config = MqttSinkConfig.model_validate(
        {"type": "mqtt", "topic": "t", "urls": ["mqtt://u:pw@h:1", "mqtt://u:pw@h:2"]}
    )
    assert config.urls == ["mqtt://h:1", "mqtt://h:2"]
    assert config.url == "mqtt://h:1"
    assert (config.username, config.password and config.password.get_secret_value()) == (
        "u",
        "pw",
    )
    assert config.numbered
    one = MqttSinkConfig.model_validate({"type": "mqtt", "topic": "t", "url": "mqtt://h:1"})
    assert one.urls == ["mqtt://h:1"] and not one.numbered


# --------------------------------------------------------------------------- real brokers


class Tail:
    """``logstream tail`` as a subprocess, its stdout and stderr read on threads."""

    def __init__(self, *args: str, command: tuple[str, ...] = ("-m", "logstream", "tail")) -> None:
        self.process = subprocess.Popen(
            [sys.executable, *command, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, into in ((self.process.stdout, self.out), (self.process.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, into), daemon=True).start()

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait_for(self, what: Callable[[], bool], timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            assert self.process.poll() is None, f"tail ended: {self.err}"
            assert time.monotonic() < deadline, f"{message}; stderr: {self.err}"
            time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_tail_prints_every_event_once_when_one_of_two_brokers_is_killed_mid_stream(
    mosquitto_factory: Callable[..., Mosquitto], protocol: str
) -> None:
    first, second = mosquitto_factory(), mosquitto_factory()
    tail = Tail("--url", first.url, "--url", second.url, "--json", "--protocol", protocol, "logs/#")
    try:
        tail.wait_for(
            lambda: sum("subscribed to" in line for line in tail.err) == 2, 10, "no subscription"
        )
        sent = asyncio.run(_publish_while_killing(first, second, protocol))
        tail.wait_for(lambda: len(tail.out) >= sent, 20, f"not all {sent} events printed")
        time.sleep(0.5)  # a repeat would come now
    finally:
        tail.stop()
    numbers = [orjson.loads(line)["n"] for line in tail.out]
    assert sorted(numbers) == list(range(sent)), "every event exactly once"
    assert not any("gap:" in line for line in tail.err), tail.err
    lost = f"connection to mqtt://127.0.0.1:{second.port} lost"
    assert any(lost in line for line in tail.err), tail.err


@pytest.mark.integration
def test_the_python_recipe_prints_every_event_once_when_one_of_two_brokers_is_killed(
    mosquitto_factory: Callable[..., Mosquitto],
) -> None:
    """docs/follow_brokers.py, the decoding recipe the README points to."""
    first, second = mosquitto_factory(), mosquitto_factory()
    recipe = Path(__file__).parent.parent / "docs" / "follow_brokers.py"
    follower = Tail(first.url, second.url, "logs/#", command=(str(recipe),))
    try:
        follower.wait_for(
            lambda: sum("subscribed to" in line for line in follower.err) == 2,
            10,
            "no subscription",
        )
        sent = asyncio.run(_publish_while_killing(first, second, "5"))
        follower.wait_for(lambda: len(follower.out) >= sent, 20, f"not all {sent} events printed")
        time.sleep(0.5)  # a repeat would come now
    finally:
        follower.stop()
    numbers = [orjson.loads(line)["n"] for line in follower.out]
    assert sorted(numbers) == list(range(sent)), "every event exactly once"
    lost = f"connection to mqtt://127.0.0.1:{second.port} lost"
    assert any(lost in line for line in follower.err), follower.err


async def _publish_while_killing(first: Mosquitto, second: Mosquitto, protocol: str) -> int:
    config = MqttSinkConfig.model_validate(
        {
            "type": "mqtt",
            "urls": [first.url, second.url],
            "topic": "logs/{host}",
            "encoding": "lz4",
            "protocol": protocol,
            "qos": 1,
            "payload_max_events": 20,
            "payload_max_delay_secs": 0.02,
        }
    )
    ctx = BuildContext()
    sink = config.build("mqtt", ctx)
    await sink.start()
    assert await sink.wait_connected(5, every=True)
    n = 0

    async def send(batches: int) -> None:
        nonlocal n
        for _ in range(batches):
            await sink.write(
                [{"host": f"web-{n % 3}", "message": f"event {n}", "n": n + i} for i in range(10)]
            )
            n += 10
            await asyncio.sleep(0.01)

    await send(30)
    second._kill()  # SIGKILL, mid-stream
    await send(30)
    second.start()  # same port
    deadline = time.monotonic() + 15
    while not sink.connections[1].connected:
        assert time.monotonic() < deadline, "the sink did not reconnect to the restarted broker"
        await sink.connection.wait_connected(0.1)
        await asyncio.sleep(0.1)
    broker = ctx.registry[f"mqtt@127.0.0.1:{second.port}"]
    before = broker.events_out
    await send(30)
    await sink.close()
    # QoS 1: the restarted broker acknowledged messages again.
    assert broker.events_out > before, "the restarted broker got nothing"
    metrics = sink.metrics
    # Each event counted once on the sink: every one reached a broker.
    assert metrics.events_out == n and metrics.dropped_total == 0, metrics.snapshot()
    return n


def test_the_banner_lists_every_broker_and_a_tail_command_following_them_all() -> None:
    import io

    from logstream.banner import banner
    from logstream.config import parse_config

    config = parse_config(
        {
            "monitor": {"enabled": False},
            "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
            "sinks": [
                {
                    "type": "mqtt",
                    "urls": ["mqtt://u:pw-7f2@a:1883", "mqtt://u:pw-7f2@b:1884"],
                    "topic": "logs/{host}",
                    "encoding": "lz4",
                }
            ],
        }
    )
    out = io.StringIO()
    banner(config, None, {}, out)
    text = out.getvalue()
    assert "mqtt://a:1883, mqtt://b:1884" in text
    assert "tail --url mqtt://a:1883 --url mqtt://b:1884 --username 'u' 'logs/#'" in text
    assert "pw-7f2" not in text


def test_the_banner_names_each_brokers_own_user_and_no_password() -> None:
    import io

    from logstream.banner import banner
    from logstream.config import parse_config

    config = parse_config(
        {
            "monitor": {"enabled": False},
            "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
            "sinks": [
                {
                    "type": "mqtt",
                    "urls": [
                        "mqtt://a:1883",
                        {"url": "mqtt://b:1884", "username": "bee", "password": "pw-b-91c"},
                    ],
                    "username": "ay",
                    "password": "pw-a-33d",
                    "topic": "logs/{host}",
                    "encoding": "lz4",
                }
            ],
        }
    )
    out = io.StringIO()
    banner(config, None, {}, out)
    text = out.getvalue()
    assert "tail --url mqtt://a:1883 --url mqtt://bee@b:1884 --username 'ay' 'logs/#'" in text
    assert "pw-a-33d" not in text and "pw-b-91c" not in text


PASSWORD_A = "pw-Alpha-n3ver-sh0wn"  # noqa: S105 - a test broker's password
PASSWORD_B = "pw-Beta-n3ver-sh0wn"  # noqa: S105 - a test broker's password


def _broker_with_user(
    factory: Callable[..., Mosquitto], directory: Path, user: str, password: str
) -> Mosquitto:
    passwd = shutil.which("mosquitto_passwd")
    if passwd is None:
        pytest.skip("mosquitto_passwd is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    password_file = directory / f"{user}.passwd"
    subprocess.run([passwd, "-c", "-b", str(password_file), user, password], check=True)
    return factory([f"password_file {password_file}", "allow_anonymous false"])


@pytest.mark.integration
def test_two_brokers_with_different_credentials_each_get_every_payload(
    mosquitto_factory: Callable[..., Mosquitto],
    mqtt_subscriber: Callable[..., Subscriber],
    tmp_path: Path,
) -> None:
    first = _broker_with_user(mosquitto_factory, tmp_path / "a", "alpha", PASSWORD_A)
    second = _broker_with_user(mosquitto_factory, tmp_path / "b", "beta", PASSWORD_B)
    on_first = mqtt_subscriber(first.url, "logs/#", username="alpha", password=PASSWORD_A)
    on_second = mqtt_subscriber(second.url, "logs/#", username="beta", password=PASSWORD_B)
    document = {
        "monitor": {"enabled": False},
        "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
        "sinks": [
            {
                "type": "mqtt",
                # The first broker's own credentials; the second takes the sink's.
                "urls": [
                    {"url": first.url, "username": "alpha", "password": PASSWORD_A},
                    second.url,
                ],
                "username": "beta",
                "password": PASSWORD_B,
                "topic": "logs/{host}",
                "qos": 1,
            }
        ],
    }
    from logstream.config import parse_config

    config = parse_config(document)
    ctx = BuildContext()
    sink = config.sinks[0].build("mqtt", ctx)

    async def scenario() -> None:
        await sink.start()
        assert await sink.wait_connected(5, every=True), "a broker refused its login"
        for n in range(0, 50, 10):
            await sink.write([{"host": "web", "n": n + i} for i in range(10)])
        await sink.close()

    asyncio.run(scenario())
    for subscriber in (on_first, on_second):
        assert sorted(m.json()["n"] for m in subscriber.wait_for(50)) == list(range(50))
    for broker in (first, second):
        assert ctx.registry[f"mqtt@127.0.0.1:{broker.port}"].events_out == 50
    assert sink.metrics.events_out == 50 and sink.metrics.dropped_total == 0

    config_file = tmp_path / "several.yaml"
    config_file.write_text(yaml.safe_dump(document))
    checked = _logstream("check", "--connect", "-c", str(config_file))
    for broker in (first, second):
        assert f"mqtt://127.0.0.1:{broker.port}: OK, connected" in checked, checked
    # A wrong password for one broker: that one fails, the other is still fine.
    document["sinks"][0]["urls"][0]["password"] = f"wrong-{PASSWORD_A}"
    config_file.write_text(yaml.safe_dump(document))
    refused = _logstream("check", "--connect", "-c", str(config_file))
    assert f"mqtt://127.0.0.1:{first.port}: FAILED" in refused, refused
    assert f"mqtt://127.0.0.1:{second.port}: OK, connected" in refused, refused
    for text in (checked, refused):
        for secret in (PASSWORD_A, PASSWORD_B):
            assert secret not in text


def test_check_never_prints_a_brokers_password_in_an_error(tmp_path: Path) -> None:
    config_file = tmp_path / "bad.yaml"
    broker = {"url": "http://h:1", "username": "a", "password": PASSWORD_A}
    config_file.write_text(
        yaml.safe_dump(
            {
                "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
                "sinks": [{"type": "mqtt", "topic": "t", "urls": ["mqtt://h:2", broker]}],
            }
        )
    )
    out = _logstream("check", "-c", str(config_file))
    assert "mqtt://" in out, out
    assert PASSWORD_A not in out


def _logstream(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "logstream", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout + done.stderr


@pytest.mark.integration
def test_tail_logs_in_to_each_broker_with_its_own_user(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    """A --url's own user (and password) is that broker's; --username and --password
    are for the brokers whose URL names no user."""
    first = _broker_with_user(mosquitto_factory, tmp_path / "a", "alpha", PASSWORD_A)
    second = _broker_with_user(mosquitto_factory, tmp_path / "b", "beta", PASSWORD_B)
    own = f"mqtt://alpha:{PASSWORD_A}@127.0.0.1:{first.port}"
    tail = Tail("--url", own, "--url", second.url, "--username", "beta", "--password",
                PASSWORD_B, "--json", "logs/#")  # fmt: skip
    try:
        tail.wait_for(
            lambda: sum("subscribed to" in line for line in tail.err) == 2, 10, "no subscription"
        )
    finally:
        tail.stop()
    assert not any("refused" in line.lower() for line in tail.err), tail.err
    assert not any(PASSWORD_A in line or PASSWORD_B in line for line in tail.err)
