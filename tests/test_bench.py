"""CI smoke of `logstream bench`: both commands run with --quick and leave consistent results.

Never asserts a speed: only that the outputs exist and agree with each other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from logstream.bench.bandwidth import DEFAULT_POLICIES
from logstream.bench.scaling import Config, configurations, summarize
from logstream.bench.throughput import REFERENCE_TARGETS, Options, Result
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
    assert summary["runs"] == 1
    for row in rows.values():
        assert row["delivered"] + row["dropped"] == row["sent"] == row["events"], row
        assert row["events_per_sec"] > 0
        assert row["workers"] == (0 if row["target"] in REFERENCE_TARGETS else 1)
    assert rows["elasticsearch"]["note"].startswith(f"{rows['elasticsearch']['events']:,} ")
    assert rows["file"]["reference"] == "orjson-loop"
    table = (tmp_path / "results.md").read_text()
    for target in rows:
        assert f"| {target} |" in table


def test_throughput_with_two_workers_reports_each_worker_count_consistently(
    tmp_path: Path,
) -> None:
    """--workers 2: a row per logstream target and worker count, measured over the
    whole process tree (supervisor + 2 workers), with ratios that agree with the rows."""
    _require_mosquitto()
    pytest.importorskip("logstash")
    targets = "discard,orjson-loop,file,parse-mqtt-lz4"
    args = ["--targets", targets, "--workers", "2", "--runs", "1", "--events", "3000"]
    command = ["bench", "throughput", "--quick", "--no-progress", "--out", str(tmp_path), *args]
    assert main(command) == 0
    summary = json.loads((tmp_path / "results.json").read_text())
    assert (summary["workers"], summary["runs"], summary["events"]) == (2, 1, 3000)
    rows = {(r["target"], r["workers"]): r for r in summary["results"]}
    expected = [("discard", 0), ("orjson-loop", 0), ("file", 1), ("file", 2)]
    expected += [("parse-mqtt-lz4", 1), ("parse-mqtt-lz4", 2)]
    assert list(rows) == expected
    orjson = rows[("orjson-loop", 0)]
    for (target, workers), row in rows.items():
        assert len(row["runs"]) == 1
        assert row["delivered"] + row["dropped"] == row["sent"] == 3000, row
        assert row["events_per_sec"] > 0
        assert row["events_per_sec_min"] == row["events_per_sec"] == row["events_per_sec_max"]
        if target != "orjson-loop":
            ratio = row["events_per_sec"] / orjson["events_per_sec"]
            assert row["vs_orjson_loop"] == pytest.approx(ratio)
        if workers == 0:
            assert row["vs_workers_1"] is None
            continue
        one = rows[(target, 1)]
        ratio = row["events_per_sec"] / one["events_per_sec"]
        assert row["vs_workers_1"] == pytest.approx(ratio)
        rss = row["peak_rss_mib"] / one["peak_rss_mib"]
        assert row["rss_vs_workers_1"] == pytest.approx(rss)
        run = row["runs"][0]
        if workers == 1:
            assert (row["processes"], row["supervisor_rss_mib"], run["split"]) == (1, None, [])
        else:  # the supervisor and its two workers; each worker's events add up
            assert row["processes"] == 3
            assert 0 < row["supervisor_rss_mib"] < row["peak_rss_mib"]
            assert len(run["split"]) == 2 and sum(run["split"]) == 3000
            assert row["cpu_secs"] > 0
    assert rows[("parse-mqtt-lz4", 2)]["dropped"] == 0
    goals = {goal["goal"]: goal for goal in summary["goals"]}
    assert goals["file: workers 2 / workers 1 >= 1.5"]["value"] == pytest.approx(
        rows[("file", 2)]["vs_workers_1"]
    )
    table = (tmp_path / "results.md").read_text()
    assert table.count("| file | ") == 2 and table.count("| parse-mqtt-lz4 | ") == 2
    assert "| goal (issue 15) |" in table


def _result(target: str, workers: int, secs: float, rss: float = 100.0) -> Result:
    return Result(target, 1000, 1.0, secs, secs / 2, rss, 1000, 0, workers=workers)


def test_rounds_alternate_configurations_and_ratios_pair_within_a_round() -> None:
    """Each logstream target expands to workers 1..N in the given order (a round);
    medians span the rounds, while ratios are taken inside each round first."""
    options = Options(targets=["orjson-loop", "file"], workers=2)
    assert configurations(options) == [
        Config("orjson-loop", 0),
        Config("file", 1),
        Config("file", 2),
    ]
    # A slow second round slows every configuration: paired ratios stay exact.
    rounds = [
        {
            Config("orjson-loop", 0): _result("orjson-loop", 0, 1.0 * slow),
            Config("file", 1): _result("file", 1, 2.0 * slow),
            Config("file", 2): _result("file", 2, 1.0 * slow, rss=150.0),
        }
        for slow in (1.0, 4.0, 1.5)
    ]
    row = summarize(Config("file", 2), rounds)
    assert row["events_per_sec"] == pytest.approx(1000 / 1.5)
    assert (row["events_per_sec_min"], row["events_per_sec_max"]) == (250.0, 1000.0)
    assert row["vs_workers_1"] == pytest.approx(2.0)
    assert row["vs_orjson_loop"] == pytest.approx(1.0)
    assert row["rss_vs_workers_1"] == pytest.approx(1.5)
    assert row["sent"] == row["delivered"] == 3000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bandwidth", "--policies", "gzip"], "unknown policy gzip"),
        (["throughput", "--workers", "0"], "--workers must be positive"),
        (["throughput", "--runs", "0"], "--runs must be positive"),
    ],
)
def test_bench_rejects_bad_options(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown policy or a worker/run count below 1 is a usage error naming it."""
    assert main(["bench", *args, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
