"""CI smoke of `logstream bench`: both commands run with --quick and leave consistent results.

Never asserts a speed: only that the outputs exist and agree with each other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from logstream.bench.bandwidth import DEFAULT_POLICIES
from logstream.cli import main
from logstream.local.mosquitto import MosquittoError, find_mosquitto

pytestmark = pytest.mark.integration

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _require_mosquitto() -> None:
    try:
        find_mosquitto()
    except MosquittoError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def bandwidth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    _require_mosquitto()
    out = tmp_path_factory.mktemp("bandwidth")
    assert main(["bench", "bandwidth", "--quick", "--no-progress", "--out", str(out)]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_bandwidth_runs_every_default_policy_with_baseline_first(
    bandwidth: tuple[Path, dict[str, Any]],
) -> None:
    """results.json lists every default policy, the baseline first at ratio 1.0."""
    _, summary = bandwidth
    names = [r["policy"] for r in summary["policies"]]
    assert names == list(DEFAULT_POLICIES)
    base = summary["policies"][0]
    assert base["policy"] == "baseline"
    assert base["ratio_to_baseline"] == pytest.approx(1.0)
    assert base["events_delivered"] == base["events_in"] > 0


def test_bandwidth_lz4_costs_the_broker_fewer_bytes_than_baseline(
    bandwidth: tuple[Path, dict[str, Any]],
) -> None:
    """The broker's own counters show fewer bytes for lz4 batches than one JSON per event."""
    _, summary = bandwidth
    by_name = {r["policy"]: r for r in summary["policies"]}
    assert 0 < by_name["lz4"]["broker_bytes"] < by_name["baseline"]["broker_bytes"]
    assert by_name["lz4"]["broker_messages"] < by_name["baseline"]["broker_messages"]


def test_bandwidth_accounting_balances_for_every_policy(
    bandwidth: tuple[Path, dict[str, Any]],
) -> None:
    """events in = delivered + dropped with a reason + suppressed as the records report."""
    _, summary = bandwidth
    for result in summary["policies"]:
        acc = result["accounting"]
        assert acc["balanced"], (result["policy"], acc)
        assert result["decode_errors"] == 0, result["policy"]


def test_bandwidth_writes_valid_pngs_and_a_table_of_every_policy(
    bandwidth: tuple[Path, dict[str, Any]],
) -> None:
    """Each plot is a PNG; results.md has a table row for every policy."""
    out, summary = bandwidth
    for name in ("bytes_per_sec.png", "kept_share.png", "ratio.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert len(data) > 1000, name
    table = (out / "results.md").read_text()
    for result in summary["policies"]:
        assert f"| {result['policy']} |" in table


def test_throughput_quick_reports_every_target_and_delivers_everything(tmp_path: Path) -> None:
    """Every default target has a row; every logstream target delivered all it was sent."""
    _require_mosquitto()
    pytest.importorskip("logstash")
    try:
        from logstream.local.noida import find_noida

        find_noida()
    except Exception as error:  # NoidaError: not installed
        pytest.skip(str(error))
    assert main(["bench", "throughput", "--quick", "--no-progress", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "results.json").read_text())
    rows = {r["target"]: r for r in summary["results"]}
    assert set(rows) == {"discard", "orjson-loop", "file", "mqtt-lz4", "elasticsearch", "es-bulk"}
    for row in rows.values():
        assert row["delivered"] + row["dropped"] == row["events"], row
        assert row["events_per_sec"] > 0
    assert rows["elasticsearch"]["note"].startswith(f"{rows['elasticsearch']['events']:,} ")
    assert rows["file"]["reference"] == "orjson-loop"
    table = (tmp_path / "results.md").read_text()
    for target in rows:
        assert f"| {target} |" in table


def test_bench_rejects_an_unknown_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown policy name is a usage error naming the known ones."""
    code = main(["bench", "bandwidth", "--policies", "gzip", "--out", str(tmp_path)])
    assert code == 2
    assert "unknown policy gzip" in capsys.readouterr().err
