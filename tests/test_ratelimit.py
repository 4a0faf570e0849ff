"""Token buckets and the byte-budget controller, on a ManualClock (no sleeping)."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from logstream.clock import ManualClock
from logstream.ratelimit import Limiter, TokenBucket
from logstream.sampling import LEVEL_NAMES, LEVELS, BudgetController, LevelIndexer, key_hasher
from logstream.severity import Severity

INDEX = {name: i for i, name in enumerate(LEVEL_NAMES)}

# --------------------------------------------------------------------------- token buckets


def test_a_bucket_starts_full_refills_at_its_rate_and_never_holds_more_than_its_capacity() -> None:
    clock = ManualClock()
    bucket = TokenBucket(1000, 100, clock)
    assert bucket.tokens == 100
    assert bucket.try_take(100)
    assert not bucket.try_take(1)
    clock.advance(0.05)
    assert bucket.tokens == pytest.approx(50)
    clock.advance(10)
    assert bucket.tokens == 100


def test_a_bucket_never_overdraws_and_says_how_long_to_wait() -> None:
    clock = ManualClock()
    bucket = TokenBucket(1000, 100, clock)
    assert bucket.try_take(80)
    assert not bucket.try_take(30)  # nothing spent on a refusal
    assert bucket.tokens == pytest.approx(20)
    assert bucket.wait_secs(30) == pytest.approx(0.01)
    assert bucket.wait_secs(20) == 0
    assert bucket.wait_secs(101) == math.inf
    with pytest.raises(ValueError, match="take"):
        bucket.take(50)


@pytest.mark.parametrize(("rate", "capacity"), [(0, 1), (1, 0), (-5, 10)])
def test_bucket_settings_must_be_positive(rate: float, capacity: float) -> None:
    with pytest.raises(ValueError, match="must be above 0"):
        TokenBucket(rate, capacity, ManualClock())


def test_a_limiter_spends_from_every_bucket_or_from_none() -> None:
    clock = ManualClock()
    topic = TokenBucket(1000, 500, clock)
    total = TokenBucket(1000, 300, clock)
    messages = TokenBucket(10, 2, clock)
    limiter = Limiter([topic, total], [messages])
    assert limiter.max_message_bytes == 300
    assert limiter.allow(200)
    assert not limiter.allow(200)  # the total has 100 left: nothing spent anywhere
    assert topic.tokens == pytest.approx(300)
    assert messages.tokens == pytest.approx(1)
    assert limiter.wait_secs(200) == pytest.approx(0.1)
    assert limiter.allow(100)
    assert limiter.wait_secs(1) == pytest.approx(0.1)  # the message bucket is empty


def send_for(
    clock: ManualClock, bucket: TokenBucket, secs: float, message_bytes: int, step: float
) -> list[tuple[float, int]]:
    """Offer far more than the rate: send whenever the bucket allows, every ``step``."""
    sent = []
    end = clock.monotonic() + secs
    while clock.monotonic() < end:
        while bucket.try_take(message_bytes):
            sent.append((clock.monotonic(), message_bytes))
        clock.advance(step)
    return sent


@pytest.mark.parametrize("step", [0.001, 0.007])
def test_any_one_second_window_carries_at_most_the_cap_plus_the_burst(step: float) -> None:
    clock = ManualClock()
    cap, burst_secs = 100_000, 0.02
    bucket = TokenBucket(cap, cap * burst_secs, clock)
    start = clock.monotonic()
    sent = send_for(clock, bucket, 10, 900, step)
    for offset in range(0, 9000, 10):  # sliding windows, 10 ms apart
        lo = start + offset / 1000
        total = sum(size for at, size in sent if lo <= at < lo + 1)
        assert total <= cap * (1 + burst_secs)
        if offset >= 1000:
            assert total >= 0.95 * cap, f"window at {offset} ms: {total}"


# --------------------------------------------------------------------------- controller

# Offered events/s and bytes per event, per severity: 60% DEBUG, 35% INFO, 4% WARNING,
# 1% ERROR of 10 000 events/s, compressed to about 25 bytes each.
OFFERED = {"DEBUG": 6000, "INFO": 3500, "WARNING": 400, "ERROR": 100}
BYTES = {"DEBUG": 22.0, "INFO": 26.0, "WARNING": 30.0, "ERROR": 40.0}


def run_windows(
    controller: BudgetController,
    windows: int,
    offered: dict[str, float] = OFFERED,
    noise: float = 0.0,
    seed: int = 1,
) -> list[tuple[list[float], float]]:
    """Feed ``windows`` 1-second windows: offered counts in, kept bytes measured back.

    Returns (ratios, kept bytes) per window; the kept bytes are what the
    ratios of that window let through (with multiplicative noise on bytes).
    """
    rng = random.Random(seed)  # noqa: S311 - reproducible noise, not security
    history = []
    for _ in range(windows):
        ratios = list(controller.ratios)
        kept_bytes = 0.0
        for name, rate in offered.items():
            index = INDEX[name]
            controller.offered[index] += int(rate)
            kept = int(rate * ratios[index])
            cost = BYTES[name] * (1 + rng.uniform(-noise, noise))
            if kept:
                controller.measure(index, kept, kept * cost)
            kept_bytes += kept * cost
        history.append((ratios, kept_bytes))
        controller.update(1.0)
    return history


def test_ratios_converge_so_the_kept_bytes_fill_the_budget_lowest_severities_first() -> None:
    budget = 100_000.0
    controller = BudgetController(budget)
    history = run_windows(controller, 15)
    ratios, kept = history[-1]
    assert ratios[INDEX["ERROR"]] == ratios[INDEX["WARNING"]] == 1.0
    assert ratios[INDEX["DEBUG"]] == 0.0
    # INFO gets what is left: (budget * fill - WARNING - ERROR) / INFO bytes.
    left = budget * controller.fill - 400 * 30 - 100 * 40
    assert ratios[INDEX["INFO"]] == pytest.approx(left / (3500 * 26), rel=0.03)
    assert 0.95 * budget <= kept <= budget


def test_ratios_settle_without_oscillating_despite_noisy_byte_measurements() -> None:
    controller = BudgetController(100_000.0)
    history = run_windows(controller, 30, noise=0.1)
    info = [ratios[INDEX["INFO"]] for ratios, _ in history[10:]]
    assert max(info) - min(info) < 0.12
    changes = [abs(b - a) for a, b in itertools.pairwise(info)]
    assert max(changes) < 0.08
    kept = [kept for _, kept in history[10:]]
    assert sum(kept) / len(kept) == pytest.approx(98_000, rel=0.03)


def test_error_and_above_are_kept_while_they_alone_fit_then_errors_are_sampled_too() -> None:
    controller = BudgetController(5_000.0)
    history = run_windows(controller, 10)
    ratios, kept = history[-1]
    assert ratios[INDEX["ERROR"]] == 1.0  # 100/s * 40 B = 4000 B/s fits
    assert ratios[INDEX["INFO"]] == ratios[INDEX["DEBUG"]] == 0.0
    assert kept <= 5_000

    flood = {**OFFERED, "ERROR": 1000, "CRITICAL": 10}  # errors alone: 40 000 B/s
    BYTES["CRITICAL"] = 50.0
    controller = BudgetController(20_000.0)
    history = run_windows(controller, 12, offered=flood)
    ratios, kept = history[-1]
    assert ratios[INDEX["CRITICAL"]] == 1.0
    assert 0.4 < ratios[INDEX["ERROR"]] < 0.55
    assert ratios[INDEX["WARNING"]] == 0.0
    assert kept <= 20_000


def test_when_the_offered_load_doubles_the_ratios_follow_within_a_few_windows() -> None:
    controller = BudgetController(100_000.0)
    run_windows(controller, 10)
    doubled = {name: rate * 2 for name, rate in OFFERED.items()}
    history = run_windows(controller, 6, offered=doubled)
    assert history[0][1] > 100_000  # the first window after the step overshoots ...
    assert all(kept <= 100_000 for _, kept in history[3:])  # ... then the budget holds
    assert history[-1][1] >= 90_000


def test_no_sampling_while_the_offered_load_fits() -> None:
    controller = BudgetController(1_000_000.0)
    history = run_windows(controller, 5)
    assert all(ratio == 1.0 for ratio in history[-1][0])
    assert controller.trim == 1.0  # no wind-up while nothing is sampled


def test_a_backlog_lowers_the_next_budget_so_the_queue_drains() -> None:
    plain, backlogged = BudgetController(100_000.0), BudgetController(100_000.0)
    for controller, backlog in ((plain, 0.0), (backlogged, 40_000.0)):
        run_windows(controller, 5)
        for name, rate in OFFERED.items():
            controller.offered[INDEX[name]] += int(rate)
        controller.update(1.0, backlog_bytes=backlog)
    assert backlogged.ratios[INDEX["INFO"]] < plain.ratios[INDEX["INFO"]]


def test_controller_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="bytes_per_sec must be above 0, value: 0"):
        BudgetController(0)


# --------------------------------------------------------------------------- helpers


def test_level_indexer_reads_the_severity_scale_and_aliases_and_defaults_the_rest() -> None:
    index = LevelIndexer()
    assert [index({"level": name}) for name in LEVEL_NAMES] == list(range(LEVELS))
    assert index({"level": "warn"}) == INDEX["WARNING"]
    assert index({"level": "FATAL"}) == INDEX["CRITICAL"]
    assert index({"level": 40}) == INDEX["ERROR"]  # a Python levelno
    assert index({}) == index({"level": "chatty"}) == INDEX["INFO"]
    assert LevelIndexer(unknown=Severity.DEBUG)({}) == INDEX["DEBUG"]


def test_key_hash_is_stable_across_runs_and_spread_over_zero_to_one() -> None:
    hash_one = key_hasher(["trace_id"])
    assert hash_one({"trace_id": "abc"}) == pytest.approx(0.8466046359861451)
    values = [hash_one({"trace_id": f"t{n}"}) for n in range(10_000)]
    assert all(0 <= value < 1 for value in values)
    assert sum(value < 0.1 for value in values) == pytest.approx(1000, rel=0.1)
    hash_two = key_hasher(["a", "b"])
    assert hash_two({"a": 1, "b": {"x": [1]}}) == hash_two({"b": {"x": [1]}, "a": 1})
    assert hash_two({"a": 1, "b": 2}) != hash_two({"a": 2, "b": 1})


def test_warning_and_above_are_kept_whole_under_a_tight_budget_despite_backlog_and_trim() -> None:
    """WARNING+ alone fits (16 000 B/s of 20 000): DEBUG, INFO and NOTICE give up
    everything first, and neither a backlog nor the trim makes WARNING sampled."""
    flood = {**OFFERED, "NOTICE": 200}
    BYTES["NOTICE"] = 28.0
    controller = BudgetController(20_000.0)
    for _ in range(10):
        run_windows(controller, 1, offered=flood)
        for name, rate in flood.items():
            controller.offered[INDEX[name]] += int(rate)
        controller.trim = 0.5  # as low as it goes
        controller.update(1.0, backlog_bytes=40_000.0)
        assert controller.ratios[INDEX["WARNING"]] == controller.ratios[INDEX["ERROR"]] == 1.0
    assert controller.ratios[INDEX["DEBUG"]] == controller.ratios[INDEX["INFO"]] == 0.0


def test_a_conservative_start_passes_only_protected_severities_until_a_window_saw_load() -> None:
    controller = BudgetController(100_000.0, start_ratio=0.0)
    assert controller.ratios[INDEX["WARNING"]] == 1.0 and controller.ratios[INDEX["INFO"]] == 0.0
    controller.update(1.0)  # nothing offered yet: nothing learnt, nothing opened
    assert controller.ratios[INDEX["INFO"]] == 0.0
    run_windows(controller, 1)
    # The first window with a load sets the targets at once (INFO: what is left).
    assert 0.5 < controller.ratios[INDEX["INFO"]] < 1.0
    assert controller.ratios[INDEX["DEBUG"]] == 0.0


def test_a_charged_bucket_goes_into_debt_and_lets_nothing_through_until_it_is_repaid() -> None:
    clock = ManualClock()
    bucket = TokenBucket(100.0, 10.0, clock)
    limiter = Limiter([bucket], [])
    assert limiter.wait_full_secs() == 0.0
    limiter.charge(60.0)  # over the capacity: a record that must go
    assert bucket.tokens == pytest.approx(-50.0)
    assert not limiter.allow(1.0)
    assert limiter.wait_secs(10.0) == pytest.approx(0.6)
    clock.advance(0.6)
    assert limiter.allow(10.0)
