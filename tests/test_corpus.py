"""The parse filter over the real logs in ../shared/corpus: records recognised with a severity.

Each log file is fed line by line as one stream (``{"message": line}``), as a
shipper would send it; the AWX job-events page is one JSON document, so its
``results`` are fed as events. A *record* is an event the filter puts out
(continuation lines folded); it is *recognised* when it has a ``level`` and
no ``_parsefailure`` tag. Target: 99% of the records of every file.

Run ``pytest tests/test_corpus.py -s`` to see the table.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from logstream.config import parse_config
from logstream.event import Batch
from logstream.metrics import Registry
from logstream.units import BuildContext

CORPUS = Path(__file__).parents[2] / "shared" / "corpus"
if not CORPUS.is_dir():
    pytest.skip(f"no corpus at {CORPUS}", allow_module_level=True)

pytestmark = pytest.mark.corpus

FILES = sorted(
    path for path in CORPUS.iterdir() if path.is_file() and path.suffix in (".log", ".txt", ".json")
)
TARGET = 0.99


@dataclass
class Result:
    lines: int
    records: int
    recognised: int
    formats: Counter[str] = field(default_factory=Counter)
    levels: Counter[str] = field(default_factory=Counter)

    @property
    def share(self) -> float:
        return self.recognised / self.records if self.records else 0.0


def events_of(path: Path) -> Batch:
    if path.suffix == ".json":
        return [dict(event) for event in orjson.loads(path.read_bytes())["results"]]
    lines = path.read_bytes().split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    return [{"message": line, "host": "corpus", "path": path.name} for line in lines]


def run(path: Path) -> Result:
    parsed = parse_config(
        {
            "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
            "filters": [{"type": "parse"}],
            "sinks": [{"type": "stdout"}],
        }
    )
    unit = parsed.filters[0].build("parse", BuildContext(registry=Registry()))
    events = events_of(path)
    out: Batch = []
    for start in range(0, len(events), 1000):
        out += unit.process(events[start : start + 1000])
    out += unit.flush()
    recognised = [
        event for event in out if "level" in event and "_parsefailure" not in event.get("tags", [])
    ]
    return Result(
        lines=len(events),
        records=len(out),
        recognised=len(recognised),
        formats=Counter(str(event.get("format")) for event in out),
        levels=Counter(str(event.get("level")) for event in out),
    )


@pytest.fixture(scope="module")
def results() -> dict[str, Result]:
    return {path.name: run(path) for path in FILES}


def table(results: dict[str, Result]) -> str:
    rows = [f"{'file':<48} {'lines':>6} {'records':>8} {'with severity':>14}  formats"]
    for name, result in results.items():
        formats = ", ".join(f"{fmt} {count}" for fmt, count in result.formats.most_common())
        rows.append(
            f"{name:<48} {result.lines:>6} {result.records:>8} {result.share:>13.2%}  {formats}"
        )
    return "\n".join(rows)


def test_every_corpus_file_is_recognised_with_a_severity(results: dict[str, Result]) -> None:
    """At least 99% of each file's records get a level and no _parsefailure tag."""
    report = table(results)
    print("\n" + report)
    short = [name for name, result in results.items() if result.share < TARGET]
    assert not short, f"below {TARGET:.0%}: {short}\n{report}"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("openstack-devstack-nova-api-2013.log", "oslo"),
        ("openstack-devstack-neutron-server-2013.log", "oslo"),
        ("openstack-devstack-cinder-api-journal-2017.log", "journal"),
        ("openstack-devstack-stack-sh-2014.log", "console"),
        ("linux-syslog-devstack-2014.log", "syslog"),
        ("apache-access-combined-elastic-examples.log", "apache_access"),
        ("ansible-log-junos-evpn-vxlan.log", "ansible_log"),
        ("ansible-awx-job-events.json", "awx_event"),
        ("ansible-playbook-stdout-default-callback.txt", "ansible_stdout"),
    ],
)
def test_each_corpus_file_is_detected_as_its_format(
    results: dict[str, Result], name: str, expected: str
) -> None:
    if name not in results:
        pytest.skip(f"{name} is not in the corpus")
    assert results[name].formats.most_common(1)[0][0] == expected
