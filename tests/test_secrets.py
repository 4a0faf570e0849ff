"""No credential is ever printed: URL passwords planted in a config must not reach the
banner, ``check --connect``, the logs (ours or a library's), ``/health`` or ``/metrics``.

The subprocess tests run the real ``logstream`` command against a real noida-db, a
real mosquitto and an address where nothing listens."""

from __future__ import annotations

import io
import logging
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from logstream.local.mosquitto import free_port
from logstream.secrets import MASK, MaskingFilter, install_log_masking, mask_text, mask_url

PLANTED = "Pl4nted-s3cret"


# --------------------------------------------------------------------------- the helper


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("http://elastic:PASSWORD@host:9200", "http://elastic:***@host:9200"),
        ("https://elastic:PASSWORD@host:9200/path?q=1", "https://elastic:***@host:9200/path?q=1"),
        ("mqtts://user:pa%40ss@broker:8883", "mqtts://user:***@broker:8883"),
        ("http://user:p@ss@host:9200", "http://user:***@host:9200"),  # "@" left unescaped
        ("http://user:pa:ss@[::1]:9200", "http://user:***@[::1]:9200"),
        ("http://:PASSWORD@host", "http://:***@host"),
        ("http://host:9200", "http://host:9200"),
        ("http://elastic@host:9200", "http://elastic@host:9200"),  # no password: unchanged
        ("http://user:@host", "http://user:@host"),  # an empty password: nothing to hide
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_mask_text_masks_every_url_in_a_message() -> None:
    text = (
        "Connection error caused by: ClientConnectorError(http://elastic:one@a:9200/_bulk), "
        "retrying 'https://u:two@b:9243' and mail to user@example.org; "
        "ConnectionError('mqtt://x:three@c:1883')"
    )
    masked = mask_text(text)
    for secret in ("one", "two", "three"):
        assert f":{secret}@" not in masked
    assert "http://elastic:***@a:9200/_bulk" in masked
    assert "https://u:***@b:9243'" in masked
    assert "mqtt://x:***@c:1883'" in masked
    assert "user@example.org" in masked  # not a URL: left alone


def test_logging_filter_masks_message_arguments_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test-secrets-masking")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    install_log_masking(logger)
    install_log_masking(logger)  # twice: still one filter per handler
    assert sum(isinstance(f, MaskingFilter) for f in handler.filters) == 1
    try:
        logger.warning("connecting to http://elastic:%s@host:9200", PLANTED)
        logger.warning("target %s, %d tries, %.1f s", f"http://u:{PLANTED}@h:1", 3, 1.5)
        logger.warning("mapping %(url)s", {"url": f"http://u:{PLANTED}@h:1"})
        try:
            raise ConnectionError(f"cannot reach http://elastic:{PLANTED}@host:9200/_bulk")
        except ConnectionError:
            logger.exception("bulk request failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert PLANTED not in text
    assert text.count(f":{MASK}@") == 5
    assert "3 tries, 1.5 s" in text
    assert "ConnectionError: cannot reach http://elastic:***@host:9200/_bulk" in text


# --------------------------------------------------------------------------- real processes


def _planted(url: str, user: str = "elastic") -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{user}:{PLANTED}@{rest}"


def _write_config(path: Path, sinks: list[dict[str, Any]], **extra: Any) -> Path:
    config = {
        "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
        "sinks": sinks,
        "state_dir": str(path.parent / "state"),
        **extra,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _sinks(elasticsearch_url: str, mqtt_url: str, index: str) -> list[dict[str, Any]]:
    """An answering Elasticsearch, one where nothing listens, a broker: all with a
    planted password in their URL."""
    return [
        {"type": "elasticsearch", "id": "es_up", "hosts": [_planted(elasticsearch_url)],
         "index": index},
        {"type": "elasticsearch", "id": "es_down",
         "hosts": [_planted(f"http://127.0.0.1:{free_port()}")], "index": index},
        {"type": "mqtt", "url": _planted(mqtt_url, "mqttuser"), "topic": "t/{host}"},
    ]  # fmt: skip


@pytest.mark.integration
def test_run_prints_no_password_in_banner_logs_health_or_metrics(
    tmp_path: Path, elasticsearch_url: str, es_index_prefix: str, mosquitto: Any
) -> None:
    monitor = f"http://127.0.0.1:{free_port()}"
    config = _write_config(
        tmp_path / "run.yaml",
        _sinks(elasticsearch_url, mosquitto.url, f"{es_index_prefix}x"),
        monitor={"listen": monitor.removeprefix("http://")},
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "logstream", "--log-level", "DEBUG", "run", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        health = metrics = ""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{monitor}/health", timeout=1) as answer:  # noqa: S310
                    health = answer.read().decode()
                break
            except OSError:
                time.sleep(0.1)
        assert health, f"logstream did not come up: {proc.poll()}"
        with urllib.request.urlopen(f"{monitor}/metrics", timeout=5) as answer:  # noqa: S310
            metrics = answer.read().decode()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # What was printed says enough to be useful...
    assert f"Elasticsearch   {elasticsearch_url.replace('://', '://elastic:***@')}" in out
    assert "curl -s -u 'elastic'" in out
    assert "es_down" in err and "no answer" in err  # the sink failing to connect logged it
    assert '"status":"ok"' in health
    assert 'unit="es_down"' in metrics
    # ...and never the password.
    for name, text in (("banner", out), ("logs", err), ("/health", health), ("/metrics", metrics)):
        assert PLANTED not in text, f"the password is in the {name}:\n{text}"


@pytest.mark.integration
def test_check_connect_prints_no_password(
    tmp_path: Path, elasticsearch_url: str, es_index_prefix: str, mosquitto: Any
) -> None:
    config = _write_config(
        tmp_path / "check.yaml", _sinks(elasticsearch_url, mosquitto.url, f"{es_index_prefix}x")
    )
    done = subprocess.run(
        [sys.executable, "-m", "logstream", "check", "--connect", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 1, done  # es_down does not answer
    lines = done.stdout.splitlines()
    up = next(line for line in lines if "sink es_up" in line)
    down = next(line for line in lines if "sink es_down" in line)
    assert "elastic:***@" in up and ": OK, " in up  # noida-db takes any password
    assert "elastic:***@" in down and "FAILED" in down
    assert PLANTED not in done.stdout + done.stderr


def test_an_invalid_config_error_prints_no_password(tmp_path: Path) -> None:
    config = _write_config(
        tmp_path / "bad.yaml",
        [{"type": "elasticsearch", "hosts": [f"http://elastic:{PLANTED}@host-without-port"]}],
    )
    done = subprocess.run(
        [sys.executable, "-m", "logstream", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "elastic:***@host-without-port" in done.stderr
    assert PLANTED not in done.stdout + done.stderr
