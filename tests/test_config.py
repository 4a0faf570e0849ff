"""Configuration: shipped examples load, errors name the key and the bad value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from logstream.config import (
    ConfigError,
    build_pipeline,
    load_config,
    local_needs,
    parse_config,
    read_yaml,
    substitute_env,
)

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted((REPO / "config").glob("*.yaml"))

MINIMAL = {
    "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
    "sinks": [{"type": "stdout"}],
}


def with_(**changes: object) -> dict[str, object]:
    return {**MINIMAL, **changes}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_config_validates_and_builds(path: Path) -> None:
    config = load_config(path, env={})
    pipeline = build_pipeline(config)
    assert pipeline.inputs and pipeline.sinks


def test_shipped_configs_exist() -> None:
    assert {p.name for p in SHIPPED} >= {"local.yaml", "servers.yaml", "file.yaml"}


def test_the_local_config_asks_for_a_local_broker_and_elasticsearch() -> None:
    assert local_needs(read_yaml(REPO / "config" / "local.yaml")) == {"mqtt", "elasticsearch"}


def test_an_unknown_key_is_rejected_with_its_path() -> None:
    data = with_(sinks=[{"type": "stdout", "colour": "blue"}])
    with pytest.raises(ConfigError, match=r"sinks\[0\] \(stdout\)\.colour: unknown key"):
        parse_config(data)


def test_a_bad_value_is_reported_with_the_key_and_the_value() -> None:
    data = with_(sinks=[{"type": "stdout", "when_full": "explode"}])
    with pytest.raises(ConfigError, match=r"sinks\[0\] \(stdout\)\.when_full: .*'explode'"):
        parse_config(data)


def test_an_unknown_unit_type_names_the_known_ones() -> None:
    data = with_(inputs=[{"type": "carrier-pigeon"}])
    with pytest.raises(ConfigError, match=r"inputs\[0\].*carrier-pigeon.*tcp"):
        parse_config(data)


def test_a_bad_listen_address_is_reported() -> None:
    data = with_(monitor={"listen": "localhost"})
    with pytest.raises(ConfigError, match=r"monitor\.listen: .*'localhost'"):
        parse_config(data)


def test_missing_sections_are_reported() -> None:
    with pytest.raises(ConfigError, match=r"sinks: required key is missing"):
        parse_config({"inputs": MINIMAL["inputs"]})
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config(["not", "a", "mapping"])


def test_environment_variables_are_substituted_with_defaults_and_escapes() -> None:
    env = {"HOST": "es.example"}
    value = {"a": "http://${HOST}:9200", "b": ["${PORT:-5959}"], "c": "$${literal}"}
    assert substitute_env(value, env) == {
        "a": "http://es.example:9200",
        "b": ["5959"],
        "c": "${literal}",
    }


def test_a_missing_environment_variable_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.path: environment variable OUT_DIR"):
        parse_config(with_(sinks=[{"type": "file", "path": "${OUT_DIR}/x"}]), env={})


def test_unit_ids_default_to_their_type_and_must_be_unique() -> None:
    config = parse_config(with_(sinks=[{"type": "stdout"}, {"type": "stdout"}]))
    pipeline = build_pipeline(config)
    assert [runner.name for runner in pipeline.sinks] == ["stdout_1", "stdout_2"]
    # An input and a sink of the same type get their kind in the name (separate counters).
    config = parse_config(
        {
            "inputs": [{"type": "file", "paths": ["logs/none-*.log"]}],
            "sinks": [{"type": "file", "path": "out.ndjson"}],
        }
    )
    names = config.unit_names()
    assert sorted(names.values()) == ["file_input", "file_sink"]
    with pytest.raises(ConfigError, match=r"unique.*same"):
        parse_config(
            with_(sinks=[{"type": "stdout", "id": "same"}, {"type": "stdout", "id": "same"}])
        )


def test_yaml_syntax_errors_are_reported_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("inputs: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(path)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "logstream", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_check_accepts_a_good_config_and_rejects_a_bad_one(tmp_path: Path) -> None:
    good = run_cli("check", "-c", str(REPO / "config" / "file.yaml"))
    assert good.returncode == 0, good.stderr
    assert "OK" in good.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("inputs: [{type: tcp, listen: 'nowhere'}]\nsinks: [{type: stdout}]\n")
    result = run_cli("check", "-c", str(bad))
    assert result.returncode == 2
    assert "inputs[0] (tcp).listen" in result.stderr
    assert "nowhere" in result.stderr


def test_cli_prints_its_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("logstream ")
