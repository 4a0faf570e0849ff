"""The real client libraries send through real sockets into the tcp and udp inputs:
python-logstash (schema versions 0 and 1), python-logstash-async (TCP and UDP
transports) and Ansible's ``community.general.logstash`` callback."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import shutil
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import logstash
import orjson
import pytest
from logstash_async.handler import AsynchronousLogstashHandler

from logstream.buffer import BatchBuffer
from logstream.event import Batch
from logstream.inputs.tcp import TcpInput, TcpInputConfig
from logstream.inputs.udp import UdpInput, UdpInputConfig
from logstream.units import BuildContext
from tests.support.inputs import Runner, running, take

HOSTNAME = socket.gethostname()
THIS_FILE = str(Path(__file__))
# The messages log_through() logs, in order (UDP may reorder).
ORDER = {"hello world": 0, "disk at 91%": 1, "it failed": 2}


@pytest.fixture
def run() -> Runner:
    return Runner("uvloop")


def build(protocol: str) -> TcpInput | UdpInput:
    settings = {"type": protocol, "listen": "127.0.0.1:0"}
    if protocol == "tcp":
        return TcpInputConfig.model_validate(settings).build("tcp", BuildContext())
    return UdpInputConfig.model_validate(settings).build("udp", BuildContext())


def log_through(handler: logging.Handler, name: str) -> None:
    """Log three records, one with an exception, through ``handler``; then close it."""
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        logger.info("hello %s", "world", extra={"user": "alice", "count": 3})
        logger.warning("disk at %d%%", 91, extra={"mount": "/var"})
        try:
            raise ValueError("bad value")
        except ValueError:
            logger.exception("it failed", extra={"user": "bob"})
    finally:
        logger.removeHandler(handler)
        handler.close()


def receive(run: Runner, protocol: str, send: Callable[[int], None], count: int) -> Batch:
    """Start an input, run ``send(port)`` in a thread (the libraries block), take
    ``count`` events."""

    async def scenario() -> Batch:
        unit = build(protocol)
        async with running(unit, BatchBuffer(10_000)) as ingest:
            port = unit.address[1]
            await asyncio.to_thread(send, port)
            return await take(ingest, count)

    return run(scenario())


# --------------------------------------------------------------------------- python-logstash


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_python_logstash_events_arrive_in_the_flat_form(
    run: Runner, protocol: str, version: int
) -> None:
    """Both schema versions, over TCP (TCPLogstashHandler) and UDP (UDPLogstashHandler),
    arrive as the same flat events: message, level, host, logger_name, tags, extras."""
    handler_class = (
        logstash.TCPLogstashHandler if protocol == "tcp" else logstash.UDPLogstashHandler
    )

    def send(port: int) -> None:
        handler = handler_class("127.0.0.1", port, version=version, tags=["web", "prod"])
        log_through(handler, f"client.logstash.{protocol}.v{version}")

    events = receive(run, protocol, send, 3)
    hello, disk, failed = sorted(events, key=lambda event: ORDER[event["message"]])
    logger_name = f"client.logstash.{protocol}.v{version}"
    for event in events:
        assert event["@version"] == "1"
        assert event["host"] == HOSTNAME
        assert event["logger_name"] == logger_name
        assert event["tags"] == ["web", "prod"]
        assert event["type"] == "logstash"
        assert event["path"] == THIS_FILE
        assert not any(
            key.startswith("@") and key not in ("@timestamp", "@version") for key in event
        )
        assert "fields" not in event
    assert (hello["message"], hello["level"]) == ("hello world", "INFO")
    assert (hello["user"], hello["count"]) == ("alice", 3)
    assert (disk["message"], disk["level"], disk["mount"]) == ("disk at 91%", "WARNING", "/var")
    assert (failed["message"], failed["level"], failed["user"]) == ("it failed", "ERROR", "bob")
    assert "ValueError: bad value" in failed["stack_trace"]


# --------------------------------------------------------------------------- python-logstash-async


@pytest.mark.parametrize(
    ("protocol", "transport"),
    [
        ("tcp", "logstash_async.transport.TcpTransport"),
        ("udp", "logstash_async.transport.UdpTransport"),
    ],
)
def test_python_logstash_async_events_arrive_through_both_transports(
    run: Runner, protocol: str, transport: str
) -> None:
    """AsynchronousLogstashHandler with an in-memory queue; closing the handler flushes.
    Its schema is already flat; extra fields come under its ``extra`` key."""

    def send(port: int) -> None:
        handler = AsynchronousLogstashHandler(
            "127.0.0.1", port, database_path=None, transport=transport
        )
        log_through(handler, f"client.async.{protocol}")

    # The library's queue does not keep the order of records logged in the same instant.
    events = receive(run, protocol, send, 3)
    hello, disk, failed = sorted(events, key=lambda event: ORDER[event["message"]])
    for event in events:
        assert event["@version"] == "1"
        assert event["host"] == HOSTNAME
        assert event["type"] == "python-logstash"
        assert event["extra"]["logger_name"] == f"client.async.{protocol}"
        assert "tags" not in event or event["tags"] == []
    assert (hello["message"], hello["level"]) == ("hello world", "INFO")
    assert (hello["extra"]["user"], hello["extra"]["count"]) == ("alice", 3)
    assert (disk["message"], disk["level"]) == ("disk at 91%", "WARNING")
    assert disk["extra"]["mount"] == "/var"
    assert (failed["message"], failed["level"]) == ("it failed", "ERROR")
    assert "ValueError: bad value" in failed["extra"]["stack_trace"]


# --------------------------------------------------------------------------- Ansible

PLAYBOOK = """\
- name: logstream smoke play
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: say hello
      ansible.builtin.debug:
        msg: hello from ansible
    - name: never runs
      ansible.builtin.debug:
        msg: skipped
      when: false
    - name: deliberate failure
      ansible.builtin.fail:
        msg: this task fails on purpose
      ignore_errors: true
"""


def ansible_playbook() -> str | None:
    """The ansible-playbook beside this Python, when Ansible and community.general are
    installed in it."""
    if importlib.util.find_spec("ansible") is None:
        return None
    if importlib.util.find_spec("ansible_collections.community.general") is None:
        return None
    return shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(
    ansible_playbook() is None,
    reason="ansible (with community.general) is not installed: pip install 'ansible>=12'",
)
def test_ansible_logstash_callback_events_arrive_with_their_fields(
    run: Runner, tmp_path: Path
) -> None:
    """A real ansible-playbook run on localhost with community.general.logstash enabled:
    playbook, play, ok/skipped/failed task and stats events, one session."""
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAYBOOK)
    command = ansible_playbook()
    assert command is not None

    async def scenario() -> tuple[Batch, str]:
        unit = build("tcp")
        async with running(unit, BatchBuffer(10_000)) as ingest:
            env = {
                **os.environ,
                "ANSIBLE_CALLBACKS_ENABLED": "community.general.logstash",
                "LOGSTASH_SERVER": "127.0.0.1",
                "LOGSTASH_PORT": str(unit.address[1]),
                "LOGSTASH_TYPE": "ansible",
                "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
                "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
                "ANSIBLE_LOCALHOST_WARNING": "false",
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_CONFIG": str(tmp_path / "ansible.cfg"),  # none: defaults only
            }
            process = await asyncio.create_subprocess_exec(
                command,
                "-i",
                "localhost,",
                str(playbook),
                cwd=tmp_path,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            output, _ = await process.communicate()
            assert process.returncode == 0, output.decode()
            return await take(ingest, 6), output.decode()

    events, output = run(scenario(), timeout_secs=120)
    by_kind: dict[str, Any] = {event["message"]: event for event in events}
    assert set(by_kind) == {
        "ansible start",
        "ansible play",
        "ansible ok",
        "ansible skipped",
        "ansible failed",
        "ansible stats",
    }, output
    assert len({event["session"] for event in events}) == 1
    for event in events:
        assert event["host"] == HOSTNAME
        assert event["type"] == "ansible"
        assert event["@version"] == "1"
        assert event["logger_name"] == "python-logstash-logger"
    start = by_kind["ansible start"]
    assert (start["ansible_type"], start["status"]) == ("start", "OK")
    assert start["ansible_playbook"] == str(playbook)
    assert by_kind["ansible play"]["ansible_play_name"] == "logstream smoke play"
    ok = by_kind["ansible ok"]
    assert (ok["ansible_type"], ok["status"], ok["level"]) == ("task", "OK", "INFO")
    assert (ok["ansible_task"], ok["ansible_host"]) == ("say hello", "localhost")
    assert orjson.loads(ok["ansible_result"])["msg"] == "hello from ansible"
    skipped = by_kind["ansible skipped"]
    assert (skipped["status"], skipped["ansible_task"]) == ("SKIPPED", "never runs")
    failed = by_kind["ansible failed"]
    assert (failed["status"], failed["level"]) == ("FAILED", "ERROR")
    assert failed["ansible_task"] == "deliberate failure"
    assert "this task fails on purpose" in failed["ansible_result"]
    stats = by_kind["ansible stats"]
    assert (stats["ansible_type"], stats["status"]) == ("finish", "FAILED")
    assert orjson.loads(stats["ansible_result"])["localhost"]["ignored"] == 1
    assert stats["ansible_playbook_duration"] >= 0
