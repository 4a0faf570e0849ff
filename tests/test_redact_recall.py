"""The redact filter against secrets planted in realistic lines (benchmarks/redact.py's
templates: Ansible task results, inventories, shells, SQL, config files, URLs, headers,
cloud keys) and against the real logs of ../shared/corpus."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).parents[1] / "benchmarks" / "redact.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("redact_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recall_on_planted_secrets_is_at_least_99_percent() -> None:
    bench = _bench()
    share, misses = bench.recall(per_template=10)
    assert share >= 0.99, [bench.TEMPLATES[index][0] for index, _, _ in misses]


def test_every_template_plants_its_secret_and_a_miss_is_seen() -> None:
    """The measure can fail: an unredacted line counts as a miss."""
    bench = _bench()
    planted = bench.samples(1)
    assert len(planted) == len(bench.TEMPLATES)
    for _, line, secret in planted:
        assert secret in line
        assert bench.leaked(secret, line)
        assert not bench.leaked(secret, line.replace(secret, "***"))


def test_corpus_masks_are_few_and_each_has_a_secret_like_name_before_it() -> None:
    bench = _bench()
    texts = bench.corpus_texts()
    if not texts:
        pytest.skip(f"no corpus at {bench.CORPUS}")
    masks = bench.masks_in(texts)
    # 109 when written: Keystone token ids (101), X-Auth-Token headers, config
    # dumps of secret options, and 2 setuptools entry points named *_password.
    assert len(masks) <= 120
    words = ("token", "secret", "key", "password", "auth")
    assert all(any(word in before.lower() for word in words) for before, _ in masks)
