"""Reload on SIGHUP (issue 14, item 3), with a real `logstream run`.

A client keeps sending numbered events over one TCP connection while the
config changes under it (a filter changed, a sink added, later a sink removed
and an input moved): no event is lost or duplicated (sequence numbers in the
file sink), the unchanged TCP input keeps its listening socket (same inode)
and its client connection, and an invalid config on SIGHUP changes nothing
and logs each error.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from logstream.config import build_pipeline, parse_config
from logstream.local.mosquitto import free_port
from logstream.reload import ReloadContext, ReloadResult, apply_reload
from logstream.units import BuildContext
from tests.support.inputs import Runner, eventually, lines, send_tcp
from tests.support.process import wait_healthy

pytestmark = pytest.mark.integration


class Sender(threading.Thread):
    """Sends {"seq": n} lines over one TCP connection until stopped; fails loudly
    if the connection breaks."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sent = 0
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                lines = b"".join(
                    orjson.dumps({"message": "tick", "seq": self.sent + i}) + b"\n"
                    for i in range(20)
                )
                self.sock.sendall(lines)
                self.sent += 20
                time.sleep(0.002)
        except BaseException as error:
            self.error = error
        finally:
            self.sock.close()

    def finish(self) -> int:
        self._halt.set()
        self.join(10)
        assert self.error is None, f"the client connection broke: {self.error!r}"
        return self.sent


class Logstream:
    def __init__(self, tmp_path: Path, config: dict[str, Any]) -> None:
        self.path = tmp_path / "logstream.yaml"
        self.monitor = free_port()
        self.state = tmp_path / "state"
        self.write(config)
        self.log: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "logstream", "run", "-c", str(self.path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_healthy(self.proc, self.monitor, lambda: "\n".join(self.log))

    def write(self, config: dict[str, Any]) -> None:
        config = {
            **config,
            "monitor": {"listen": f"127.0.0.1:{self.monitor}"},
            "state_dir": str(self.state),
        }
        self.path.write_text(yaml.safe_dump(config))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))

    def reload(self, config: dict[str, Any] | str, expect: str) -> list[str]:
        """Write ``config``, send SIGHUP, wait for a log line containing ``expect``;
        the log lines of this reload."""
        if isinstance(config, str):
            self.path.write_text(config)
        else:
            self.write(config)
        first = len(self.log)
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while not any(expect in line for line in self.log[first:]):
            assert self.proc.poll() is None, "\n".join(self.log)
            assert time.monotonic() < deadline, "\n".join(self.log[first:])
            time.sleep(0.05)
        return self.log[first:]

    def listening_inode(self, port: int) -> str:
        """The inode of the process's listening TCP socket on ``port``."""
        for line in Path(f"/proc/{self.proc.pid}/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
                return fields[9]
        raise AssertionError(f"nothing listens on {port}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self._reader.join(10)
        return self.proc.returncode


@pytest.fixture
def processes() -> Iterator[list[Logstream]]:
    started: list[Logstream] = []
    yield started
    for running in started:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait()


def read_events(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def file_sink(path: Path, **extra: Any) -> dict[str, Any]:
    return {"type": "file", "path": str(path), "batch_max_delay_secs": 0.05, **extra}


@pytest.mark.parametrize("queue", ["memory", "disk"])
def test_sighup_swaps_a_filter_and_adds_a_sink_without_losing_or_repeating_events(
    tmp_path: Path, processes: list[Logstream], queue: str
) -> None:
    port = free_port()
    main, extra = tmp_path / "main.ndjson", tmp_path / "extra.ndjson"
    tcp = {"type": "tcp", "listen": f"127.0.0.1:{port}"}
    pipeline = {"queue": {"type": queue}}
    before = {
        "inputs": [tcp],
        "filters": [{"type": "mutate", "add_tags": ["v1"]}],
        "sinks": [file_sink(main)],
        "pipeline": pipeline,
    }
    running = Logstream(tmp_path, before)
    processes.append(running)
    inode = running.listening_inode(port)
    sender = Sender(port)
    sender.start()
    time.sleep(0.5)
    after = {
        "inputs": [tcp],
        "filters": [{"type": "mutate", "add_tags": ["v2"]}],
        "sinks": [file_sink(main), file_sink(extra, id="extra")],
        "pipeline": pipeline,
    }
    lines = running.reload(after, "reload applied")
    summary = next(line for line in lines if "reload applied" in line)
    assert "kept: tcp" in summary and "started: mutate, extra" in summary, summary
    time.sleep(0.5)
    assert running.listening_inode(port) == inode  # the same socket, never re-bound
    sent = sender.finish()
    time.sleep(0.3)
    assert running.stop() == 0, "\n".join(running.log)
    # With a disk queue: every batch was acknowledged, across the swap of sinks.
    assert any("every event flushed" in line for line in running.log), running.log[-3:]

    events = read_events(main)
    seqs = [event["seq"] for event in events]
    assert seqs == list(range(sent)), f"lost or repeated: {len(seqs)} of {sent}"
    tags = [event["tags"] for event in events]
    switch = tags.index(["v2"])
    assert switch > 0
    assert all(tag == ["v1"] for tag in tags[:switch])
    assert all(tag == ["v2"] for tag in tags[switch:])  # one switch, between two batches
    added = [event["seq"] for event in read_events(extra)]
    assert added and added == list(range(added[0], sent))  # from its start, every event
    assert all(event["tags"] == ["v2"] for event in read_events(extra))
    assert added[0] >= switch


def test_sighup_moves_an_input_and_removes_a_sink_with_its_usual_flush(
    tmp_path: Path, processes: list[Logstream]
) -> None:
    first_port, second_port = free_port(), free_port()
    kept, dropped = tmp_path / "kept.ndjson", tmp_path / "dropped.ndjson"
    running = Logstream(
        tmp_path,
        {
            "inputs": [{"type": "tcp", "listen": f"127.0.0.1:{first_port}"}],
            "sinks": [
                file_sink(kept),
                # A batch that would wait 60 s: only the reload's drain writes it.
                file_sink(dropped, id="slow", batch_max_delay_secs=60, batch_max_events=100000),
            ],
        },
    )
    processes.append(running)
    sender = Sender(first_port)
    sender.start()
    time.sleep(0.3)
    sent_before = sender.finish()
    time.sleep(0.3)
    lines = running.reload(
        {
            "inputs": [{"type": "tcp", "listen": f"127.0.0.1:{second_port}"}],
            "sinks": [file_sink(kept)],
        },
        "reload applied",
    )
    summary = next(line for line in lines if "reload applied" in line)
    assert "stopped: tcp, slow" in summary, summary
    assert len(read_events(dropped)) == sent_before  # drained when removed
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", first_port), timeout=2).close()
    later = Sender(second_port)
    later.start()
    time.sleep(0.3)
    sent_after = later.finish()
    time.sleep(0.3)
    assert running.stop() == 0, "\n".join(running.log)
    seqs = [event["seq"] for event in read_events(kept)]
    assert seqs == list(range(sent_before)) + list(range(sent_after))


def test_an_invalid_config_on_sighup_keeps_running_and_logs_each_error(
    tmp_path: Path, processes: list[Logstream]
) -> None:
    port = free_port()
    out = tmp_path / "out.ndjson"
    config = {"inputs": [{"type": "tcp", "listen": f"127.0.0.1:{port}"}], "sinks": [file_sink(out)]}
    running = Logstream(tmp_path, config)
    processes.append(running)
    bad = yaml.safe_dump(
        {
            "inputs": [{"type": "tcp", "listen": f"127.0.0.1:{port}", "max_line_byte": 10}],
            "sinks": [{"type": "file", "pth": "x"}],
        }
    )
    lines = running.reload(bad, "reload refused")
    errors = [line for line in lines if " ERROR " in line]
    assert any("max_line_byte: unknown key (did you mean 'max_line_bytes'?)" in e for e in errors)
    assert any("sinks[0] (file).pth: unknown key" in e for e in errors)
    assert not any("Traceback" in line for line in running.log)
    running.reload("inputs: [\n", "not valid YAML")  # a broken file: the same
    sender = Sender(port)  # still running on the old config
    sender.start()
    time.sleep(0.3)
    sent = sender.finish()
    time.sleep(0.3)
    assert running.stop() == 0, "\n".join(running.log)
    assert [event["seq"] for event in read_events(out)] == list(range(sent))


def test_a_removed_filter_gives_up_what_it_held_and_unchanged_units_are_the_same_objects(
    tmp_path: Path,
) -> None:
    """In process: a multiline filter holds a group when the reload removes it; the
    group comes out (through the old chain) instead of being lost."""
    out = tmp_path / "out.ndjson"
    tcp = {"type": "tcp", "id": "apps", "listen": "127.0.0.1:0"}
    sink = {"type": "file", "path": str(out), "batch_max_delay_secs": 0.01}
    multiline = {"type": "multiline", "pattern": "^\\s", "timeout_secs": 600}
    before = parse_config({"inputs": [tcp], "filters": [multiline], "sinks": [sink]})
    after = parse_config({"inputs": [tcp], "sinks": [sink]})

    async def scenario() -> ReloadResult:
        build = BuildContext(state_dir=tmp_path / "state")
        pipeline = build_pipeline(before, build)
        await pipeline.start()
        tcp_input, file_runner = pipeline.inputs[0], pipeline.sinks[0]
        try:
            address = tcp_input.address  # type: ignore[attr-defined]
            await send_tcp(address, lines({"message": "Traceback:"}, {"message": "  line 1"}))
            held = pipeline.filters[0].metrics
            await eventually(lambda: held.events_in == 2)
            assert not out.exists() or out.read_bytes() == b""  # the group is held
            result = await apply_reload(pipeline, after, ReloadContext(before, build))
            assert pipeline.inputs[0] is tcp_input and pipeline.sinks[0] is file_runner
            assert pipeline.filters == []
            await eventually(lambda: out.exists() and out.read_bytes().count(b"\n") == 1)
            await send_tcp(address, lines({"message": "after"}, {"message": "  not joined"}))
            await eventually(lambda: out.read_bytes().count(b"\n") == 3)
        finally:
            await pipeline.stop(5)
        return result

    result = Runner("asyncio")(scenario())
    assert result.kept == ["apps", "file"] and result.stopped == ["multiline"]
    events = read_events(out)
    assert events[0]["message"] == "Traceback:\n  line 1"
    assert [event["message"] for event in events[1:]] == ["after", "  not joined"]
