"""Issue 14 item 6: `logstream tail` finds the local broker of a running `logstream run`,
and the banner's mosquitto_sub line works as printed."""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from logstream.local.mosquitto import Mosquitto
from logstream.tail import FALLBACK_URL, default_url
from tests.support.mqtt import Subscriber
from tests.support.running import RunningLogstream, logstream_process

__all__ = ["logstream_process"]  # the fixture, imported for this module

pytestmark = pytest.mark.integration


def config(encoding: str) -> dict[str, object]:
    return {"sinks": [{"type": "mqtt", "url": "local", "topic": "logs/{host}/{level}",
                       "encoding": encoding, "payload_max_delay_secs": 0.05}]}  # fmt: skip


def test_run_writes_the_broker_url_and_tail_finds_it(
    logstream_process: Callable[..., RunningLogstream], tmp_path: Path
) -> None:
    running = logstream_process(config("lz4"))
    url_file = tmp_path / "state" / "mqtt.url"
    url = url_file.read_text().strip()
    assert re.fullmatch(r"mqtt://127\.0\.0\.1:\d+", url)
    assert f"MQTT            {url} (local mosquitto)" in running.banner()
    assert re.search(r"MQTT over WebSockets \(browsers\): ws://127\.0\.0\.1:\d+", running.banner())

    tail = subprocess.Popen(
        [sys.executable, "-m", "logstream", "tail", "-c", str(running.path), "--count", "3",
         "--json", "logs/#"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        for _ in range(100):  # until tail has subscribed (it says so on stderr)
            line = tail.stderr.readline() if tail.stderr else ""
            if "subscribed to logs/#" in line or not line:
                break
        running.send([{"message": f"found {n}", "host": "h", "level": "INFO"} for n in range(3)])
        out, err = tail.communicate(timeout=30)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.communicate()
    assert tail.returncode == 0, err
    assert [line for line in out.splitlines() if '"found' in line] != []
    assert sorted(re.findall(r'"message":"(found \d)"', out)) == ["found 0", "found 1", "found 2"]

    assert running.stop() == 0
    assert not url_file.exists()  # removed on stop: a later tail does not follow a dead broker


def test_tail_without_a_running_logstream_says_so(tmp_path: Path) -> None:
    err = io.StringIO()
    assert default_url(tmp_path / "none.yaml", err) == FALLBACK_URL
    assert "no running logstream with a local broker" in err.getvalue()
    state = tmp_path / "elsewhere"
    state.mkdir()
    (state / "mqtt.url").write_text("mqtt://127.0.0.1:41234\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"state_dir: {state}\n")
    assert default_url(cfg, err) == "mqtt://127.0.0.1:41234"


@pytest.mark.parametrize("encoding", ["lz4", "json", "zstd", "ndjson"])
def test_the_banner_mosquitto_sub_line_prints_events(
    logstream_process: Callable[..., RunningLogstream], encoding: str
) -> None:
    running = logstream_process(config(encoding))
    match = re.search(r"^\s+(mosquitto_sub .*)$", running.banner(), re.M)
    assert match, running.banner()
    command = match.group(1)
    port = re.search(r"mqtt://127\.0\.0\.1:(\d+)", running.banner()).group(1)  # type: ignore[union-attr]
    assert f"-p {port} " in command
    # As printed (it must stream: no -C), plus -W 30 (exit after 30 s at most).
    command = command.replace("mosquitto_sub ", "mosquitto_sub -W 30 ", 1)
    sub = subprocess.Popen(
        ["bash", "-c", command], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(sub.stdout or []), daemon=True)
    reader.start()
    try:
        for _ in range(100):
            running.send([{"message": "seen by mosquitto_sub", "host": "h", "level": "INFO"}])
            time.sleep(0.2)
            if lines:
                break
        else:
            raise AssertionError(f"{command!r} printed nothing")
    finally:
        os.killpg(sub.pid, signal.SIGTERM)
        sub.wait(10)
        reader.join(10)
    out = lines[0]
    if encoding == "zstd":  # topic and size: the zstd command cannot stream
        assert re.fullmatch(r"logs/h/INFO \d+ bytes \(zstd\)\n", out), out
    else:
        assert "seen by mosquitto_sub" in out, shlex.quote(command)


PASSWORD = "pw-0ther-br0ker-n3ver-sh0wn"  # noqa: S105 - a test broker's password


def test_local_among_several_urls_is_the_local_broker_next_to_the_others(
    logstream_process: Callable[..., RunningLogstream],
    mosquitto_factory: Callable[..., Mosquitto],
    mqtt_subscriber: Callable[..., Subscriber],
    tmp_path: Path,
) -> None:
    passwd = shutil.which("mosquitto_passwd")
    if passwd is None:
        pytest.skip("mosquitto_passwd is not installed")
    password_file = tmp_path / "passwords"
    subprocess.run([passwd, "-c", "-b", str(password_file), "beta", PASSWORD], check=True)
    other = mosquitto_factory([f"password_file {password_file}", "allow_anonymous false"])
    running = logstream_process(
        {
            "sinks": [
                {
                    "type": "mqtt",
                    "urls": ["local", {"url": other.url, "username": "beta", "password": PASSWORD}],
                    "topic": "logs/{host}",
                    "qos": 1,
                    "payload_max_delay_secs": 0.05,
                }
            ]
        }
    )
    local_url = (tmp_path / "state" / "mqtt.url").read_text().strip()
    assert local_url != other.url
    banner = running.banner()
    assert f"MQTT            {local_url}, mqtt://beta@127.0.0.1:{other.port}" in banner, banner
    on_local = mqtt_subscriber(local_url, "logs/#")
    on_other = mqtt_subscriber(other.url, "logs/#", username="beta", password=PASSWORD)
    running.send([{"message": f"both {n}", "host": "h", "n": n} for n in range(20)])
    for subscriber in (on_local, on_other):
        assert sorted(m.json()["n"] for m in subscriber.wait_for(20)) == list(range(20))
    assert running.stop() == 0
    assert PASSWORD not in "".join(running.stdout + running.stderr)
