"""`logstream check` catches what `run` would die on (issue 14, items 4 and 5).

Two units on one address and protocol, a port another process holds, a mistyped
key (with a "did you mean"), a mistyped date reference in an index name; `run`
names the input that cannot bind; `check --connect` says that `local` servers
are started by `run` instead of probing the standard ports.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from logstream.config import ConfigError, parse_config
from logstream.listeners import listeners, overlaps, ports_in_use
from logstream.local.mosquitto import Mosquitto, free_port
from logstream.statelock import state_lock

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "logstream", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


def write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "logstream.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def config_with(inputs: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "inputs": inputs,
        "sinks": [{"type": "stdout"}],
        "monitor": {"listen": "127.0.0.1:0"},
        **extra,
    }


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another process (this one) holds for TCP and UDP."""
    tcp = socket.socket()
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    port = tcp.getsockname()[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", port))
    yield port
    tcp.close()
    udp.close()


# --------------------------------------------------------------------------- overlaps


def test_two_inputs_on_one_address_and_protocol_are_refused() -> None:
    port = free_port()
    data = config_with(
        [
            {"type": "tcp", "listen": f"127.0.0.1:{port}"},
            {"type": "beats", "id": "filebeat", "listen": f"127.0.0.1:{port}"},
        ]
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    text = str(caught.value)
    assert "inputs[1] (beats) filebeat" in text
    assert f"127.0.0.1:{port}/tcp" in text
    assert "inputs[0] (tcp)" in text


def test_tcp_and_udp_may_share_a_port_and_a_wildcard_overlaps_a_specific_address() -> None:
    port = free_port()
    both = config_with(
        [
            {"type": "tcp", "listen": f"127.0.0.1:{port}"},
            {"type": "udp", "listen": f"127.0.0.1:{port}"},
        ]
    )
    parse_config(both)  # different protocols: fine (the shipped local config does it)
    wildcard = config_with(
        [
            {"type": "udp", "listen": f"127.0.0.1:{port}"},
            {"type": "syslog", "listen": f":{port}"},  # both protocols, every interface
        ]
    )
    with pytest.raises(ConfigError, match=rf"inputs\[1\] \(syslog\).*0\.0\.0\.0:{port}/udp"):
        parse_config(wildcard)
    on_monitor = config_with([{"type": "http", "listen": f"127.0.0.1:{port}"}])
    on_monitor["monitor"] = {"listen": f"127.0.0.1:{port}"}
    with pytest.raises(ConfigError, match=r"monitor\.listen.*inputs\[0\] \(http\)"):
        parse_config(on_monitor)


def test_port_zero_never_overlaps() -> None:
    config = parse_config(
        config_with([{"type": "tcp", "listen": "127.0.0.1:0"}, {"type": "http", "listen": ":0"}])
    )
    assert overlaps(listeners(config)) == []


# --------------------------------------------------------------------------- ports in use


def test_check_names_each_input_whose_port_is_in_use(tmp_path: Path, held_port: int) -> None:
    path = write(
        tmp_path,
        config_with(
            [
                {"type": "tcp", "id": "apps", "listen": f"127.0.0.1:{held_port}"},
                {"type": "udp", "listen": f"127.0.0.1:{held_port}"},
                {"type": "http", "listen": "127.0.0.1:0"},
            ]
        ),
    )
    result = cli("check", "-c", str(path))
    assert result.returncode == 2, result
    lines = [line.strip() for line in result.stderr.splitlines()]
    assert f"inputs[0] (tcp) apps: 127.0.0.1:{held_port}/tcp: already in use" in "\n".join(lines)
    assert f"inputs[1] (udp) udp: 127.0.0.1:{held_port}/udp: already in use" in "\n".join(lines)
    assert not any("http" in line for line in lines)
    assert "Traceback" not in result.stderr


def test_ports_in_use_is_empty_for_free_ports() -> None:
    config = parse_config(config_with([{"type": "syslog", "listen": f"127.0.0.1:{free_port()}"}]))
    assert ports_in_use(listeners(config)) == []


def test_run_names_the_input_that_cannot_bind(tmp_path: Path, held_port: int) -> None:
    path = write(
        tmp_path,
        config_with(
            [
                {"type": "udp", "listen": f"127.0.0.1:{free_port()}"},
                {"type": "tcp", "id": "apps", "listen": f"127.0.0.1:{held_port}"},
            ],
            state_dir=str(tmp_path / "state"),
        ),
    )
    result = cli("run", "-c", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert f"input apps cannot listen on 127.0.0.1:{held_port}: already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert "logstream: [Errno" not in result.stderr


# --------------------------------------------------------------------------- suggestions


def test_unknown_keys_get_a_did_you_mean_at_every_level() -> None:
    data = {
        "inputs": [{"type": "tcp", "lisen": "127.0.0.1:0"}],
        "filters": [{"type": "mutate", "add_tag": ["x"]}],
        "sinks": [{"type": "elasticsearch", "hosts": ["http://h:9200"], "spool": {"enable": True}}],
        "pipeline": {"ingest_max_event": 10},
        "monitor": {"listn": "127.0.0.1:0"},
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    text = str(caught.value)
    assert "inputs[0] (tcp).lisen: unknown key (did you mean 'listen'?)" in text
    assert "filters[0] (mutate).add_tag: unknown key (did you mean 'add_tags'?)" in text
    assert "sinks[0] (elasticsearch).spool.enable: unknown key (did you mean 'enabled'?)" in text
    assert "pipeline.ingest_max_event: unknown key (did you mean 'ingest_max_events'?)" in text
    assert "monitor.listn: unknown key (did you mean 'listen'?)" in text


def test_a_key_like_nothing_known_gets_no_suggestion_and_a_mistyped_type_gets_one() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_with([{"type": "tcp", "zzzzzz": 1}]))
    assert "inputs[0] (tcp).zzzzzz: unknown key (value: 1)" in str(caught.value)
    with pytest.raises(ConfigError, match=r"did you mean 'syslog'\?"):
        parse_config(config_with([{"type": "sylog"}]))


@pytest.mark.parametrize(
    ("index", "suggested"),
    [
        ("logs-%{+YYYY.MM.dd", "logs-%{+YYYY.MM.dd}"),
        ("Logs-YYYY.MM.dd", "logs-%{+YYYY.MM.dd}"),
        ("Logs", "logs"),
    ],
)
def test_the_index_hint_keeps_date_patterns_in_their_case(index: str, suggested: str) -> None:
    data = {
        "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
        "sinks": [{"type": "elasticsearch", "hosts": ["http://h:9200"], "index": index}],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    text = str(caught.value)
    assert f"did you mean {suggested!r}?" in text
    assert ".mm." not in text.split("did you mean", 1)[1]  # never minutes for months


# --------------------------------------------------------------------------- check --connect


def test_check_connect_says_local_servers_are_started_by_run(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
            "sinks": [
                {"type": "elasticsearch", "hosts": ["local"]},
                {"type": "mqtt", "url": "local", "topic": "logs/{host}"},
                {"type": "nats", "servers": ["local"]},
                {"type": "stdout"},
            ],
            "monitor": {"enabled": False},
            "state_dir": str(tmp_path / "state"),
        },
    )
    result = cli("check", "--connect", "-c", str(path))
    assert result.returncode == 0, result
    out = result.stdout
    assert "sink elasticsearch (elasticsearch): local: `logstream run` starts noida-db" in out
    assert "sink mqtt (mqtt): local: `logstream run` starts mosquitto" in out
    assert "sink nats (nats): local: `logstream run` starts nats-server" in out
    # The standard ports (the machine's own services) were never asked.
    for port in ("9200", "1883", "4222"):
        assert port not in out
    assert "FAILED" not in out


@pytest.mark.integration
def test_check_connect_asks_the_other_brokers_of_urls_with_local(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    other = mosquitto_factory()
    path = write(
        tmp_path,
        {
            "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
            "sinks": [{"type": "mqtt", "urls": ["local", other.url], "topic": "logs/{host}"}],
            "monitor": {"enabled": False},
            "state_dir": str(tmp_path / "state"),
        },
    )
    result = cli("check", "--connect", "-c", str(path))
    assert result.returncode == 0, result
    assert "local: `logstream run` starts mosquitto; not probed" in result.stdout, result
    assert f"{other.url}: OK, connected" in result.stdout, result
    assert "1883" not in result.stdout  # the placeholder of local was never asked
    other.stop()
    result = cli("check", "--connect", "-c", str(path))
    assert result.returncode == 1, result
    assert f"{other.url}: FAILED" in result.stdout, result


def test_check_connect_on_the_shipped_local_config_reports_no_false_result() -> None:
    result = cli("check", "--connect", "-c", str(REPO / "config" / "local.yaml"), cwd=REPO)
    if "already in use" in result.stderr:
        pytest.skip("port 5959 or 9600 is taken on this machine")
    assert result.returncode == 0, result
    assert "FAILED" not in result.stdout
    assert "OK, connected" not in result.stdout  # no false success from a machine broker
    assert result.stdout.count("`logstream run` starts") == 2


def test_check_leaves_the_ports_of_a_running_logstream_alone(
    tmp_path: Path, held_port: int
) -> None:
    """Editing the config of a running logstream before a reload: its ports are its own."""
    state = tmp_path / "state"
    path = write(
        tmp_path,
        config_with([{"type": "tcp", "listen": f"127.0.0.1:{held_port}"}], state_dir=str(state)),
    )
    with state_lock(state):  # this process plays the running logstream
        result = cli("check", "-c", str(path))
    assert result.returncode == 0, result
    assert f"logstream is running on {state} (pid {os.getpid()})" in result.stdout
    after = cli("check", "-c", str(path))  # no run any more: the port is probed
    assert after.returncode == 2
    assert "already in use" in after.stderr
