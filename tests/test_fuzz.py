"""A short bounded fuzz run of every decoder (hypothesis, in-process): arbitrary bytes
never crash a decoder nor make it hold more than its bound. The long coverage-guided
runs are ``benchmarks/fuzz.py`` (atheris); this also checks that harness works."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.support.fuzz import SEEDS, TARGETS

REPO = Path(__file__).resolve().parent.parent


def _fuzz(name: str) -> object:
    target = TARGETS[name]

    @settings(
        max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
    )
    @given(data=st.one_of(st.binary(max_size=1024), st.sampled_from(SEEDS[name]).flatmap(_mutated)))
    def run(data: bytes) -> None:
        target(data)

    for seed in SEEDS[name]:
        run = example(data=seed)(run)
    return run


def _mutated(seed: bytes) -> st.SearchStrategy[bytes]:
    """``seed`` with a slice replaced by random bytes: near-valid input reaches deeper."""
    return st.tuples(st.integers(0, len(seed)), st.integers(0, 16), st.binary(max_size=32)).map(
        lambda cut: seed[: cut[0]] + cut[2] + seed[cut[0] + cut[1] :]
    )


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_decoder_never_crashes_on_arbitrary_bytes(name: str) -> None:
    _fuzz(name)()  # type: ignore[operator]


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris not installed")
def test_the_coverage_guided_harness_runs_a_target_and_reports_cases() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/fuzz.py", "--seconds", "1", "--targets", "lumberjack"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    row = done.stdout.splitlines()[-1].split()
    assert row[0] == "lumberjack"
    assert int(row[1]) > 100  # cases run
    assert int(row[2]) > 0  # coverage: the decoder's modules are instrumented
    assert row[3] == "0"  # crashes
