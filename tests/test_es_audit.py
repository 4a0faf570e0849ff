"""The delivered-but-missing audit (issue 13, item 5) and the hunt for such a loss.

``benchmarks/audit.py`` recomputes every event's document id and asks the server
with ``_mget``; missing documents are reported as ranges. The hunt drives a
spooled sink through the troubles a slow server brings (connections cut mid-
request, answers that never come back while the server applies the request, a
stalled server: SIGSTOP, never SIGKILL, which loses noida-db's acknowledged
writes) and audits that every event the sink counted as delivered is there.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
import yaml

from logstream.local.noida import Noida
from logstream.sinks.elasticsearch import ElasticsearchSink, ElasticsearchSinkConfig
from logstream.sinks.elasticsearch_audit import audit, describe_ranges, ranges, targets
from logstream.units import BuildContext
from tests.support.elasticsearch import es_count
from tests.support.inputs import eventually
from tests.support.proxy import CuttingProxy

integration = pytest.mark.integration
REPO = Path(__file__).resolve().parent.parent


def sink(state_dir: Path, host: str, **settings: Any) -> ElasticsearchSink:
    config = ElasticsearchSinkConfig.model_validate(
        {
            "type": "elasticsearch",
            "hosts": [host],
            "retry_initial_secs": 0.05,
            "retry_max_secs": 0.3,
            **settings,
        }
    )
    return config.build("es", BuildContext(state_dir=state_dir))


def events(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"@timestamp": "2026-11-24T10:00:00.000Z", "seq": n, "message": f"event {n} " + "x" * 100}
        for n in range(start, start + count)
    ]


def test_ranges_join_consecutive_positions() -> None:
    assert ranges([]) == []
    assert ranges([7, 1, 2, 3, 3, 9, 10]) == [(1, 3), (7, 7), (9, 10)]
    assert describe_ranges([(1, 3), (7, 7)]) == "1-3, 7"
    assert describe_ranges([(1, 1), (3, 3), (5, 5)], limit=2) == "1, 3, ... (1 more ranges)"


def test_document_id_none_cannot_be_audited(tmp_path: Path) -> None:
    unit = sink(tmp_path, "http://127.0.0.1:9", document_id="none")
    with pytest.raises(ValueError, match="server pick"):
        targets(unit, events(1))


@integration
def test_audit_command_reports_the_missing_documents_as_ranges(
    elasticsearch_url: str, es_index_prefix: str, tmp_path: Path
) -> None:
    """Of 600 events, 100-149 and 420 never reach the server: the audit names exactly those."""
    index = f"{es_index_prefix}audit"
    unit = sink(tmp_path, elasticsearch_url, index=index)
    everything = events(600)
    sent = [e for e in everything if not (100 <= e["seq"] < 150 or e["seq"] == 420)]

    async def scenario() -> None:
        await unit.start()
        try:
            await unit.write(sent)
        finally:
            await unit.close()

    asyncio.run(scenario())
    assert unit.metrics.events_out == 549
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
                "sinks": [{"type": "elasticsearch", "hosts": [elasticsearch_url], "index": index}],
                "state_dir": str(tmp_path / "state"),
            }
        )
    )
    stream = tmp_path / "events.ndjson"
    stream.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in everything) + b"not json\n")
    command = [sys.executable, str(REPO / "benchmarks" / "audit.py"), "-c", str(config)]
    command += ["--events", str(stream), "--seq-field", "seq", "--chunk", "128"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stderr
    assert "checked 600 documents: 549 found, 51 missing, 0 unreadable" in done.stdout
    assert "missing (2 ranges): 100-149, 420" in done.stdout
    assert "1 lines of" in done.stdout
    # The same events, all of them there: exit 0.
    stream.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in sent))
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "549 found, 0 missing" in done.stdout


@integration
def test_nothing_counted_delivered_is_missing_after_cuts_lost_answers_and_a_stalled_server(
    restartable_elasticsearch: Noida, tmp_path: Path
) -> None:
    server = restartable_elasticsearch
    target = urlsplit(server.url)
    total = 12_000
    with CuttingProxy(str(target.hostname), int(target.port or 0)) as proxy:
        unit = sink(
            tmp_path,
            proxy.url_for("http"),
            index="hunt",
            spool={"enabled": True},
            batch_max_events=300,
            request_timeout_secs=1.0,
            max_in_flight=2,
        )
        pid = server._process.pid if server._process else 0

        async def trouble(step: int) -> None:
            if step in (3, 9, 15, 21):
                proxy.cut()  # mid-request or mid-answer
            elif step == 5:
                proxy.swallow_answers = True  # applied by the server, unanswered
            elif step == 8:
                proxy.swallow_answers = False
                proxy.cut()
            elif step == 11:
                os.kill(pid, signal.SIGSTOP)  # a stalled server: requests time out
            elif step == 14:
                os.kill(pid, signal.SIGCONT)

        async def scenario() -> None:
            await unit.start()
            try:
                for step in range(24):
                    await unit.write(events(total // 24, step * (total // 24)))
                    await trouble(step)
                    await asyncio.sleep(0.25)
                spool = unit.spool
                assert spool is not None
                await eventually(lambda: spool.pending_entries == 0, 90)
            finally:
                os.kill(pid, signal.SIGCONT)
                await unit.close()

        asyncio.run(scenario())
    assert proxy.swallowed_bytes > 0 and unit.metrics.retries > 0, "the troubles happened"
    assert unit.metrics.dropped_total == 0
    assert unit.metrics.events_out == total
    direct = sink(tmp_path / "audit", server.url, index="hunt")

    async def check() -> tuple[int, list[int]]:
        await direct.start()
        try:
            report = await audit(direct, targets(direct, events(total)), chunk=2000)
        finally:
            await direct.close()
        return report.found, report.missing

    found, missing = asyncio.run(check())
    assert missing == [], describe_ranges(ranges(missing))
    assert found == total
    assert es_count(server.url, "hunt") == total


@integration
def test_two_events_with_one_id_are_counted_delivered_but_stored_once_and_the_audit_says_so(
    elasticsearch_url: str, es_index_prefix: str, tmp_path: Path
) -> None:
    """The one way 'delivered' is wrong by design: with deterministic ids and create,
    a second, different event with the same id gets 409 and counts as already indexed."""
    index = f"{es_index_prefix}shared"
    unit = sink(tmp_path, elasticsearch_url, index=index, document_id="%{[event][id]}")
    batch = [
        {"seq": 0, "event": {"id": "a"}, "message": "first"},
        {"seq": 1, "event": {"id": "b"}, "message": "second"},
        {"seq": 2, "event": {"id": "a"}, "message": "third, not the first"},
    ]

    async def scenario() -> tuple[list[int], int, list[int]]:
        await unit.start()
        try:
            for event in batch:  # one request each: the third meets the first's id
                await unit.write([event])
            report = await audit(unit, targets(unit, batch))
        finally:
            await unit.close()
        return report.shared_ids, report.found, report.missing

    shared, found, missing = asyncio.run(scenario())
    assert unit.metrics.events_out == 3 and unit.metrics.already_indexed == 1
    assert es_count(elasticsearch_url, index) == 2
    assert (shared, found, missing) == ([2], 2, [])
