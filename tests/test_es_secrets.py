"""The Elasticsearch sink's ``password`` and ``api_key`` are secrets (pydantic SecretStr):
a planted value must never reach a repr, a dump, a validation error, the banner,
``check --connect``, the logs (DEBUG included), ``/health`` or ``/metrics``, while
the server still gets the real credentials."""

from __future__ import annotations

import base64
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from logstream.local.mosquitto import free_port
from logstream.sinks.elasticsearch import ElasticsearchSinkConfig
from logstream.units import BuildContext

PASSWORD = "Pl4nted-pa55word"  # noqa: S105 - planted to be looked for
API_SECRET = "Pl4nted-ap1key"  # noqa: S105


def es_config(**settings: Any) -> ElasticsearchSinkConfig:
    return ElasticsearchSinkConfig.model_validate(
        {"type": "elasticsearch", "hosts": ["http://127.0.0.1:9200"], **settings}
    )


def test_password_and_api_key_are_masked_in_repr_str_and_dumps() -> None:
    for config in (
        es_config(username="elastic", password=PASSWORD),
        es_config(api_key=f"keyid:{API_SECRET}"),
    ):
        shown = [
            repr(config),
            str(config),
            str(config.model_dump()),
            config.model_dump_json(),
            str(config.model_dump(mode="json")),
        ]
        for text in shown:
            assert PASSWORD not in text and API_SECRET not in text, text
        assert "**********" in repr(config)


def test_the_server_still_gets_the_real_credentials(tmp_path: Path) -> None:
    basic = es_config(username="elastic", password=PASSWORD).build(
        "es", BuildContext(state_dir=tmp_path)
    )
    expected = base64.b64encode(f"elastic:{PASSWORD}".encode()).decode()
    assert basic._headers["authorization"] == f"Basic {expected}"
    assert basic._bulk_headers["authorization"] == f"Basic {expected}"
    keyed = es_config(api_key=f"keyid:{API_SECRET}").build("es", BuildContext(state_dir=tmp_path))
    encoded = base64.b64encode(f"keyid:{API_SECRET}".encode()).decode()
    assert keyed._headers["authorization"] == f"ApiKey {encoded}"
    raw = es_config(api_key="ZW5jb2RlZA==").build("es", BuildContext(state_dir=tmp_path))
    assert raw._headers["authorization"] == "ApiKey ZW5jb2RlZA=="


def test_empty_secrets_are_unset_and_pairs_are_checked_without_echoing() -> None:
    config = es_config(username="", password="", api_key="")
    assert (config.username, config.password, config.api_key) == (None, None, None)
    with pytest.raises(ValidationError) as caught:
        es_config(password=PASSWORD)  # no username
    assert "username and password go together" in str(caught.value)
    with pytest.raises(ValidationError) as caught:
        es_config(username="elastic", password=PASSWORD, api_key=API_SECRET, index="")
    text = str(caught.value) + repr(caught.value.errors())
    assert PASSWORD not in text and API_SECRET not in text, text


# --------------------------------------------------------------------------- real processes


def _config(path: Path, sinks: list[dict[str, Any]], **extra: Any) -> Path:
    config = {
        "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
        "sinks": sinks,
        "state_dir": str(path.parent / "state"),
        **extra,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _sinks(elasticsearch_url: str, index: str) -> list[dict[str, Any]]:
    down = f"http://127.0.0.1:{free_port()}"
    return [
        {"type": "elasticsearch", "id": "es_basic", "hosts": [elasticsearch_url],
         "index": index, "username": "elastic", "password": PASSWORD},
        {"type": "elasticsearch", "id": "es_key", "hosts": [elasticsearch_url],
         "index": index, "api_key": f"keyid:{API_SECRET}"},
        {"type": "elasticsearch", "id": "es_down", "hosts": [down], "index": index,
         "username": "elastic", "password": PASSWORD},
    ]  # fmt: skip


def _assert_no_secret(**texts: str) -> None:
    encoded = base64.b64encode(f"keyid:{API_SECRET}".encode()).decode()
    basic = base64.b64encode(f"elastic:{PASSWORD}".encode()).decode()
    for name, text in texts.items():
        for secret in (PASSWORD, API_SECRET, encoded, basic):
            assert secret not in text, f"a secret is in the {name}:\n{text}"


@pytest.mark.integration
def test_run_prints_no_password_or_api_key_in_banner_logs_health_or_metrics(
    tmp_path: Path, elasticsearch_url: str, es_index_prefix: str
) -> None:
    monitor = f"http://127.0.0.1:{free_port()}"
    config = _config(
        tmp_path / "run.yaml",
        _sinks(elasticsearch_url, f"{es_index_prefix}x"),
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
        health = ""
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
    assert "es_basic" in err and "es_down" in err  # the sinks did log
    assert 'unit="es_key"' in metrics
    _assert_no_secret(banner=out, logs=err, health=health, metrics=metrics)


@pytest.mark.integration
def test_check_and_check_connect_print_no_password_or_api_key(
    tmp_path: Path, elasticsearch_url: str, es_index_prefix: str
) -> None:
    config = _config(tmp_path / "check.yaml", _sinks(elasticsearch_url, f"{es_index_prefix}x"))
    done = subprocess.run(
        [sys.executable, "-m", "logstream", "check", "--connect", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 1, done  # es_down does not answer
    assert "sink es_basic" in done.stdout and "sink es_key" in done.stdout
    _assert_no_secret(check=done.stdout + done.stderr)
    # An invalid config: the error names the key, never the secret.
    bad = _config(
        tmp_path / "bad.yaml",
        [
            {"type": "elasticsearch", "password": PASSWORD, "hosts": [elasticsearch_url]},
            {"type": "elasticsearch", "api_key": API_SECRET, "username": "u", "password": "x"},
        ],
    )
    done = subprocess.run(
        [sys.executable, "-m", "logstream", "check", "-c", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done
    assert "username and password go together" in done.stderr
    assert "either username/password or api_key" in done.stderr
    _assert_no_secret(errors=done.stdout + done.stderr)
