"""`logstream bench throughput`: every configuration, round after round, medians.

A *configuration* is a reference (``discard``, ``orjson-loop``, ``es-bulk``) or
a logstream target run with ``pipeline.workers`` k, for k in 1..``--workers``.
Each of ``--runs`` rounds measures every configuration once, in the same order
(A B C A B C ...), so a slow minute of the shared machine hits them all rather
than one target's every run. Per configuration the report gives the median
events/s with min and max, and ratios taken *within a round* (workers k over
workers 1, over orjson-loop, over the target's reference), then their median.

The measuring itself is :mod:`logstream.bench.throughput`'s.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import shutil
import statistics
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logstream.bench.throughput import (
    ALL_TARGETS,
    ES_TARGETS,
    FILTER_TARGETS,
    MQTT_FILTER_TARGETS,
    REFERENCE_OF,
    REFERENCE_TARGETS,
    Options,
    Result,
    _mib,
    build_lines,
    es_count,
    run_bulk_reference,
    run_logstream,
    run_reference,
)

# The goals for two workers (benchmarks, never timed tests).
SPEEDUP_GOAL = 1.5
ORJSON_GOAL = 1.0
SUPERVISOR_RSS_MIB = 40.0


@dataclass(frozen=True)
class Config:
    target: str
    workers: int  # 0: a reference (one process, not logstream)

    @property
    def label(self) -> str:
        return self.target if not self.workers else f"{self.target} w{self.workers}"


def configurations(options: Options) -> list[Config]:
    """Every target in the given order; each logstream target once per worker count."""
    unknown = [t for t in options.targets if t not in ALL_TARGETS]
    if unknown:
        raise ValueError(f"unknown target {', '.join(unknown)}; known: {', '.join(ALL_TARGETS)}")
    if options.workers < 1:
        raise ValueError(f"--workers must be at least 1, value: {options.workers}")
    configs: list[Config] = []
    for target in dict.fromkeys(options.targets):
        if target in REFERENCE_TARGETS:
            configs.append(Config(target, 0))
        else:
            configs += [Config(target, k) for k in range(1, options.workers + 1)]
    return configs


# --------------------------------------------------------------------------- one measurement


def measure(config: Config, lines: list[bytes], options: Options, workdir: Path) -> Result:
    """One run of ``config`` in a fresh ``workdir`` (deleted afterwards: outputs are big)."""
    workdir.mkdir(parents=True)
    try:
        return _measure(config, lines, options, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _measure(config: Config, lines: list[bytes], options: Options, workdir: Path) -> Result:
    target, workers, connections = config.target, config.workers, options.connections
    if target in ("discard", "orjson-loop"):
        return run_reference(target, lines, connections, workdir / "out")
    if target == "file" or target in FILTER_TARGETS:
        out = workdir / "out"
        sink: dict[str, object] = {"type": "file", "path": str(out / "out-{worker}.ndjson")}
        return run_logstream(
            target,
            sink,
            lines,
            connections,
            workdir,
            FILTER_TARGETS.get(target),
            workers=workers,
            last_output=lambda: _newest_mtime(out),
        )
    if target in ("mqtt", "mqtt-lz4", *MQTT_FILTER_TARGETS):
        return _measure_mqtt(config, lines, connections, workdir)
    with _noida(workdir) as url:
        if target == "es-bulk":
            return run_bulk_reference(url, lines, "bench-bulk", connections)
        es_sink: dict[str, object] = {
            "type": "elasticsearch",
            "hosts": [url],
            "index": "bench-logstream",
            # As many requests in flight over the host as the reference's connections.
            "max_in_flight": max(1, math.ceil(connections / workers)),
        }
        result = run_logstream(target, es_sink, lines, connections, workdir, workers=workers)
        result.note = f"{es_count(url, 'bench-logstream'):,} documents counted"
        return result


def _measure_mqtt(config: Config, lines: list[bytes], connections: int, workdir: Path) -> Result:
    from logstream.bench.probe import Probe
    from logstream.local.mosquitto import Mosquitto

    lz4 = config.target != "mqtt"
    sink: dict[str, object] = {
        "type": "mqtt",
        "topic": "bench/{level}",
        "when_full": "block",
        "encoding": "lz4" if lz4 else "json",
    }
    with Mosquitto(workdir / "mosquitto") as broker:
        sink["url"] = broker.url
        # lz4 batches are few: a subscriber's arrival times cost nothing and give
        # the end of the run (one message per event would load the machine).
        probe = Probe(broker.host, broker.port, topic_filter="bench/#") if lz4 else None
        if probe is not None:
            probe.start()
        try:
            return run_logstream(
                config.target,
                sink,
                lines,
                connections,
                workdir,
                MQTT_FILTER_TARGETS.get(config.target),
                workers=config.workers,
                last_output=(lambda: probe.last_message_at or None) if probe else None,
            )
        finally:
            if probe is not None:
                probe.stop()


def _newest_mtime(directory: Path) -> float | None:
    return max((p.stat().st_mtime for p in directory.glob("*.ndjson")), default=None)


@contextlib.contextmanager
def _noida(workdir: Path) -> Iterator[str]:
    """A fresh noida-db for one measurement: the sink and its reference each get their own."""
    from logstream.local.noida import Noida

    noida = Noida(workdir / "noida-db")
    noida.start()
    try:
        yield noida.url
    finally:
        noida.stop()


# --------------------------------------------------------------------------- the command


def run(options: Options) -> dict[str, Any]:
    """Measure every configuration ``options.runs`` times, round-robin; write
    results.json and results.md into ``options.out``; return the summary."""
    from logstream.bench.report import progress_bar, write_json

    configs = configurations(options)
    if options.runs < 1:
        raise ValueError(f"--runs must be at least 1, value: {options.runs}")
    lines = build_lines(options.events, options.corpus)
    es_lines = lines[: options.es_events]
    options.out.mkdir(parents=True, exist_ok=True)

    def load(config: Config) -> list[bytes]:
        return es_lines if config.target in ES_TARGETS else lines

    rounds: list[dict[Config, Result]] = []
    total = options.runs * sum(len(load(c)) for c in configs)
    with (
        tempfile.TemporaryDirectory(prefix="logstream-bench-") as tmp,
        progress_bar(total, "events", options.progress) as bar,
    ):
        for index in range(options.runs):
            measured: dict[Config, Result] = {}
            for config in configs:
                bar.set_postfix_str(f"run {index + 1}/{options.runs}: {config.label}")
                workdir = Path(tmp) / f"run{index}-{config.target}-{config.workers}"
                measured[config] = measure(config, load(config), options, workdir)
                bar.update(len(load(config)))
            rounds.append(measured)
    rows = [summarize(config, rounds) for config in configs]
    summary = {
        "command": "logstream bench throughput",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source": f"corpus {options.corpus}"
        if options.corpus is not None
        else "generated messages",
        "events": options.events,
        "es_events": len(es_lines),
        "connections": options.connections,
        "workers": options.workers,
        "runs": options.runs,
        "bytes_per_event": _mib(lines) * 2**20 / len(lines) if lines else 0.0,
        "cpus": os.cpu_count(),
        "results": rows,
        "goals": goals(rows),
    }
    write_json(options.out / "results.json", summary)
    (options.out / "results.md").write_text(markdown(summary), encoding="utf-8")
    return summary


# --------------------------------------------------------------------------- the figures


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _paired(
    rounds: list[dict[Config, Result]],
    config: Config,
    other: Config,
    value: Callable[[Result], float],
) -> float | None:
    """Median over rounds of value(config) / value(other) measured in the same round."""
    ratios = [
        value(measured[config]) / value(measured[other])
        for measured in rounds
        if other in measured and value(measured[other])
    ]
    return _median(ratios)


def _eps(result: Result) -> float:
    return result.events_per_sec


def _cpu_per_event(result: Result) -> float:
    return result.cpu_secs / result.events if result.events else 0.0


def _reference(config: Config) -> Config | None:
    name = REFERENCE_OF.get(config.target)
    if name is None:
        return None
    return Config(name, 0 if name in REFERENCE_TARGETS else config.workers)


def summarize(config: Config, rounds: list[dict[Config, Result]]) -> dict[str, Any]:
    """One row: medians over the rounds (min/max of events/s) and paired ratios."""
    runs = [measured[config] for measured in rounds]
    eps = [r.events_per_sec for r in runs]
    rss = _median([r.peak_rss_mib for r in runs])
    supervisor = [r.supervisor_rss_mib for r in runs if r.supervisor_rss_mib is not None]
    row: dict[str, Any] = {
        "target": config.target,
        "workers": config.workers,
        "events": runs[0].events,
        "sent": sum(r.events for r in runs),
        "delivered": sum(r.delivered for r in runs),
        "dropped": sum(r.dropped for r in runs),
        "events_per_sec": _median(eps),
        "events_per_sec_min": min(eps),
        "events_per_sec_max": max(eps),
        "mib_per_sec": _median([r.mib / r.secs if r.secs else 0.0 for r in runs]),
        "cpu_secs": _median([r.cpu_secs for r in runs]),
        "cpu_us_per_event": _median([_cpu_per_event(r) * 1e6 for r in runs]),
        "peak_rss_mib": rss,
        "supervisor_rss_mib": _median(supervisor),
        "processes": max(r.processes for r in runs),
        "note": runs[-1].note,
        "runs": [r.as_dict() for r in runs],
    }
    one = Config(config.target, 1)
    row["vs_workers_1"] = _paired(rounds, config, one, _eps) if config.workers else None
    rss_one = _median([m[one].peak_rss_mib for m in rounds if one in m])
    row["rss_vs_workers_1"] = rss / rss_one if config.workers and rss and rss_one else None
    orjson = Config("orjson-loop", 0)
    row["vs_orjson_loop"] = _paired(rounds, config, orjson, _eps) if config != orjson else None
    reference = _reference(config)
    present = reference is not None and reference in rounds[0]
    row["reference"] = reference.target if reference is not None and present else None
    row["ratio_to_reference"] = (
        _paired(rounds, config, reference, _eps) if reference is not None and present else None
    )
    row["cpu_ratio_to_reference"] = (
        _paired(rounds, config, reference, _cpu_per_event)
        if reference is not None and present
        else None
    )
    return row


def goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's figures for two workers, where this run measured them."""
    found = {(r["target"], r["workers"]): r for r in rows}
    out: list[dict[str, Any]] = []

    def add(goal: str, value: float | None, limit: float, at_most: bool = False) -> None:
        if value is None:
            return
        met = value <= limit if at_most else value >= limit
        out.append({"goal": goal, "value": value, "limit": limit, "met": met})

    for target in ("file", "parse-mqtt-lz4", "mqtt-lz4"):
        two = found.get((target, 2))
        if two is not None:
            add(
                f"{target}: workers 2 / workers 1 >= {SPEEDUP_GOAL}",
                two["vs_workers_1"],
                SPEEDUP_GOAL,
            )
    file_two = found.get(("file", 2))
    if file_two is not None:
        add(
            f"file: workers 2 / orjson-loop >= {ORJSON_GOAL}",
            file_two["vs_orjson_loop"],
            ORJSON_GOAL,
        )
    for (target, workers), two in found.items():
        one = found.get((target, 1))
        if workers != 2 or one is None or two["peak_rss_mib"] is None:
            continue
        limit = 2 * one["peak_rss_mib"] + SUPERVISOR_RSS_MIB
        add(
            f"{target}: peak RSS of 2 workers (tree, MiB) <= 2 x 1 worker + 40",
            two["peak_rss_mib"],
            limit,
            at_most=True,
        )
        if two["supervisor_rss_mib"] is not None:
            add(
                f"{target}: supervisor peak RSS (MiB) < 40",
                two["supervisor_rss_mib"],
                SUPERVISOR_RSS_MIB,
                at_most=True,
            )
    return out


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        "# logstream bench throughput",
        "",
        f"{summary['events']:,} python-logstash v1 lines ({summary['es_events']:,} for the "
        f"Elasticsearch rows), {summary['bytes_per_event']:.0f} B/line, messages from "
        f"{summary['source']}, {summary['connections']} TCP connections, {summary['cpus']} CPUs, "
        f"{summary['runs']} runs (each configuration once per run, in turn). "
        "events/s is the median (min-max) over the runs; ratios are taken within a run, "
        "then their median. CPU and peak RSS cover the receiving process tree (supervisor "
        "and workers; RSS is the sum of each process's peak, an upper bound). "
        f"{summary['when']}.",
        "",
        "| target | workers | events/s (min-max) | x workers 1 | x orjson-loop | vs reference "
        "| CPU µs/event | peak RSS MiB | RSS x workers 1 | supervisor MiB | delivered "
        "| dropped | note |",
        "|---|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in summary["results"]:
        ratio = (
            f"{r['ratio_to_reference']:.2f} of {r['reference']}"
            if r["ratio_to_reference"] is not None
            else "-"
        )
        if r.get("cpu_ratio_to_reference") is not None:
            ratio += f", CPU/event {r['cpu_ratio_to_reference']:.2f}x"
        supervisor = r["supervisor_rss_mib"]
        note = r["note"]
        splits = [run["split"] for run in r["runs"] if run["split"]]
        if splits:
            note = (
                (note + "; " if note else "")
                + "events per worker "
                + ", ".join(":".join(f"{n / max(sum(s), 1):.0%}" for n in s) for s in splits)
            )
        lines.append(
            f"| {r['target']} | {r['workers'] or '-'} "
            f"| {r['events_per_sec']:,.0f} ({r['events_per_sec_min']:,.0f}-"
            f"{r['events_per_sec_max']:,.0f}) | {_x(r['vs_workers_1'])} "
            f"| {_x(r['vs_orjson_loop'])} | {ratio} | {r['cpu_us_per_event']:.2f} "
            f"| {r['peak_rss_mib']:.0f} | {_x(r['rss_vs_workers_1'])} "
            f"| {'-' if supervisor is None else f'{supervisor:.0f}'} "
            f"| {r['delivered']:,} | {r['dropped']:,} | {note} |"
        )
    if summary["goals"]:
        lines += ["", "| goal (issue 15) | measured | met |", "|---|---:|---|"]
        for goal in summary["goals"]:
            lines.append(
                f"| {goal['goal']} | {goal['value']:.2f} (limit {goal['limit']:.2f}) "
                f"| {'yes' if goal['met'] else 'no'} |"
            )
    lines.append("")
    return "\n".join(lines)
