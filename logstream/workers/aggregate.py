"""One set of metrics for the host: every worker's series summed.

Each worker sends its Prometheus text to the supervisor every second (and a last
time when it stops); the supervisor writes the sum, which every worker's monitor
serves on the one monitor address (:mod:`logstream.workers.hostview`).
Prometheus-client's multiprocess mode would need a shared directory of mmap
files and gives up on custom collectors such as ours; summing parsed text is
simpler and exact for what we export.

- Counters (and histogram/summary samples) never go backwards: when a worker
  exits, its last values are kept as a base that the restarted worker's
  counts add to.
- Gauges are summed over the workers that run (events buffered, connections),
  except the few that describe a host-wide setting (a byte cap), which are the
  same in every worker and are shown once (their maximum).
- Per-worker series carry a ``worker`` label: ``logstream_worker_up``,
  ``logstream_worker_restarts_total``, ``logstream_worker_events_in_total``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from logstream.metrics import UnitKind, UnitMetrics

# Gauges that state a host-wide setting: every worker reports the same value.
HOST_GAUGES = frozenset({"logstream_rate_cap_bytes_per_second"})

_Labels = tuple[tuple[str, str], ...]
_Key = tuple[str, _Labels]  # (sample name, labels)


@dataclass
class _Family:
    name: str
    kind: str
    help: str
    samples: dict[_Key, float] = field(default_factory=dict)


def parse(text: str) -> list[Metric]:
    """The metric families of a Prometheus text exposition."""
    return list(text_string_to_metric_families(text))


def _cumulative(kind: str) -> bool:
    return kind in ("counter", "histogram", "summary")


@dataclass
class WorkerView:
    """What the supervisor knows of one worker slot's metrics."""

    text: str = ""  # the latest exposition of the running process
    up: bool = False
    restarts: int = 0
    # Counter samples of the slot's former processes: the base the next one adds to.
    retired: list[Metric] = field(default_factory=list)


class Aggregate(Collector):
    """The sum of every worker's metrics, as a prometheus-client collector."""

    def __init__(self, workers: int) -> None:
        self.views = [WorkerView() for _ in range(workers)]
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def update(self, worker: int, text: str) -> None:
        view = self.views[worker]
        view.text = text
        view.up = True

    def exited(self, worker: int) -> None:
        """Worker ``worker``'s process ended: keep its counters as a base."""
        view = self.views[worker]
        if view.text:
            view.retired += [m for m in parse(view.text) if _cumulative(m.type)]
        view.text = ""
        view.up = False

    def restarted(self, worker: int) -> None:
        self.views[worker].restarts += 1

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def _families(self) -> tuple[dict[str, _Family], dict[int, float]]:
        families: dict[str, _Family] = {}
        events_in: dict[int, float] = defaultdict(float)
        sources = [(index, [*view.retired, *(parse(view.text) if view.text else [])])
                   for index, view in enumerate(self.views)]  # fmt: skip
        for index, metrics in sources:
            for metric in metrics:
                family = families.get(metric.name)
                if family is None:
                    family = families[metric.name] = _Family(
                        metric.name, metric.type, metric.documentation
                    )
                host_wide = metric.name in HOST_GAUGES
                for sample in metric.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    before = family.samples.get(key)
                    if before is None:
                        family.samples[key] = sample.value
                    elif host_wide:
                        family.samples[key] = max(before, sample.value)
                    else:
                        family.samples[key] = before + sample.value
                    if (
                        sample.name == "logstream_events_in_total"
                        and sample.labels.get("kind") == "input"
                    ):
                        events_in[index] += sample.value
        return families, events_in

    def collect(self) -> Iterator[Metric]:
        families, events_in = self._families()
        for family in families.values():
            metric = Metric(family.name, family.help, family.kind)
            for (name, labels), value in family.samples.items():
                metric.add_sample(name, dict(labels), value)
            yield metric
        up = Metric("logstream_worker_up", "1 while the worker process runs.", "gauge")
        restarts = Metric(
            "logstream_worker_restarts",
            "Times a worker process was restarted after it died.",
            "counter",
        )
        per_worker = Metric(
            "logstream_worker_events_in",
            "Events the inputs of one worker received (how the kernel spread the load).",
            "counter",
        )
        for index, view in enumerate(self.views):
            worker = {"worker": str(index)}
            up.add_sample("logstream_worker_up", worker, 1.0 if view.up else 0.0)
            restarts.add_sample("logstream_worker_restarts_total", worker, view.restarts)
            per_worker.add_sample("logstream_worker_events_in_total", worker, events_in[index])
        yield from (up, restarts, per_worker)


def merge_units(snapshots: Iterable[dict[str, object]]) -> list[UnitMetrics]:
    """Units' final counters summed over workers (from :meth:`UnitMetrics.snapshot`)."""
    merged: dict[str, UnitMetrics] = {}
    for snap in snapshots:
        name = str(snap["unit"])
        kind: UnitKind = snap["kind"]  # type: ignore[assignment]
        unit = merged.get(name)
        if unit is None:
            unit = merged[name] = UnitMetrics(name, kind)
        for attr in (
            "events_in",
            "events_out",
            "events_unselected",
            "redactions",
            "bytes_in",
            "bytes_out",
            "retries",
            "errors",
        ):
            value = snap.get(attr, 0)
            if isinstance(value, int):
                setattr(unit, attr, getattr(unit, attr) + value)
        for attr in ("dropped", "decode_issues"):
            counts = snap.get(attr)
            if isinstance(counts, dict):
                target = getattr(unit, attr)
                for reason, count in counts.items():
                    target[reason] += int(count)
    return list(merged.values())
