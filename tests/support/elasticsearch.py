"""Elasticsearch fixtures: a noida-db server the tests start, or a real cluster.

``elasticsearch_url`` is one noida-db per test session (data in pytest's tmp
dir), or the cluster named by ``LOGSTREAM_TEST_ES_URL``. Each test writes
under its own ``es_index_prefix`` and reads with ``es_count``/``es_docs``/
``es_indices`` on ``<prefix>*``, so tests never see each other's documents.
``restartable_elasticsearch`` is a noida-db of the test's own that it may
stop and start (skipped against an external cluster).

The helpers are plain synchronous HTTP (urllib), independent of the sink
under test. noida-db does not refresh by itself, so they ``_refresh`` first.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from logstream.local.noida import Noida

__all__ = [
    "elasticsearch_url",
    "es_count",
    "es_docs",
    "es_index_prefix",
    "es_indices",
    "es_request",
    "restartable_elasticsearch",
]

ENV_URL = "LOGSTREAM_TEST_ES_URL"


def es_request(url: str, method: str, path: str, body: Any = None) -> Any:
    """One request to ``url + path``; the decoded JSON answer. Raises ``RuntimeError``
    with the answer's text for a status other than 2xx."""
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(  # noqa: S310 - the test server's http URL
        url + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return orjson.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        raise RuntimeError(f"{method} {path}: HTTP {error.code}: {error.read()[:500]!r}") from None


def es_count(url: str, index: str) -> int:
    """Documents in ``index`` (a name or a pattern such as ``prefix*``), after a refresh.
    0 when no such index exists."""
    try:
        es_request(url, "POST", f"/{index}/_refresh")
        return int(es_request(url, "GET", f"/{index}/_count")["count"])
    except RuntimeError as error:
        if "index_not_found_exception" in str(error):
            return 0
        raise


def es_docs(url: str, index: str, size: int = 1000) -> list[dict[str, Any]]:
    """The ``_source`` of up to ``size`` documents in ``index``, after a refresh (any order)."""
    es_request(url, "POST", f"/{index}/_refresh")
    answer = es_request(url, "POST", f"/{index}/_search", {"size": size})
    return [hit["_source"] for hit in answer["hits"]["hits"]]


def es_indices(url: str, pattern: str) -> dict[str, int]:
    """Index name -> document count for the indices matching ``pattern``, after a refresh."""
    es_request(url, "POST", f"/{pattern}/_refresh")
    rows = es_request(url, "GET", f"/_cat/indices/{pattern}?format=json&h=index,docs.count")
    return {row["index"]: int(row["docs.count"]) for row in rows}


@pytest.fixture(scope="session")
def elasticsearch_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of an Elasticsearch-API server for the whole session."""
    external = os.environ.get(ENV_URL)
    if external:
        yield external.rstrip("/")
        return
    with Noida(tmp_path_factory.mktemp("noida-db") / "data") as server:
        yield server.url


@pytest.fixture
def es_index_prefix(elasticsearch_url: str) -> Iterator[str]:
    """A prefix of index names for this test alone (``t<random>-``); its indices are
    deleted afterwards."""
    prefix = f"t{uuid.uuid4().hex[:12]}-"
    yield prefix
    try:
        names = list(es_indices(elasticsearch_url, f"{prefix}*"))
        if names:  # by name: clusters refuse wildcard deletes by default
            es_request(elasticsearch_url, "DELETE", "/" + ",".join(names))
    except (RuntimeError, OSError):
        pass  # best effort: the next session starts from an empty server anyway


@pytest.fixture
def restartable_elasticsearch(tmp_path: Path) -> Iterator[Noida]:
    """A noida-db of this test's own, which it may ``stop()`` and ``start()`` (same URL)."""
    if os.environ.get(ENV_URL):
        pytest.skip(f"stops and restarts its server; {ENV_URL} points at an external one")
    with Noida(tmp_path / "noida-db") as server:
        yield server
