"""BudgetController step by step: each window's ratios worked out by hand.

The convergence tests (tests/test_ratelimit.py) show where the controller ends up;
these pin each rule on the way (what the first window does, the half-way rise, the
smoothing of rates and costs, the trim and its bounds, the backlog, the fallback
cost, the protected severities' own smoothing), so a changed constant or comparison
shows. Budget 10 000 B/s with fill 0.98: a target of 9 800 B/s.
"""

from __future__ import annotations

import pytest

from logstream.sampling import LEVEL_NAMES, LEVELS, BudgetController
from logstream.severity import Severity

INDEX = {name: index for index, name in enumerate(LEVEL_NAMES)}
TARGET = 9_800.0


def window(
    controller: BudgetController,
    offered: dict[str, float],
    kept: dict[str, tuple[int, float]] | None = None,
    *,
    elapsed: float = 1.0,
    backlog: float = 0.0,
) -> list[float]:
    """One window: ``offered`` events per severity, ``kept`` (events, bytes) measured."""
    for name, count in offered.items():
        controller.offered[INDEX[name]] += count
    for name, (events, nbytes) in (kept or {}).items():
        controller.measure(INDEX[name], events, nbytes)
    return list(controller.update(elapsed, backlog_bytes=backlog))


def ratio(controller: BudgetController, name: str) -> float:
    return controller.ratios[INDEX[name]]


def test_settings_are_checked_with_the_bad_value() -> None:
    with pytest.raises(ValueError, match=r"bytes_per_sec must be above 0, value: -1"):
        BudgetController(-1)
    for smoothing in (0, 1.5):
        with pytest.raises(ValueError, match=rf"smoothing must be in \(0, 1\], value: {smoothing}"):
            BudgetController(100, smoothing=smoothing)
    for start in (-0.1, 1.1):
        with pytest.raises(ValueError, match=rf"start_ratio must be in \[0, 1\], value: {start}"):
            BudgetController(100, start_ratio=start)
    assert BudgetController(100, smoothing=1.0).smoothing == 1.0
    assert BudgetController(100, start_ratio=0.0).ratios[INDEX["INFO"]] == 0.0
    assert BudgetController(100, start_ratio=1.0).ratios == [1.0] * LEVELS


def test_start_ratios_below_protect_and_a_custom_protect_level() -> None:
    controller = BudgetController(100, start_ratio=0.25, protect=Severity.ERROR)
    assert controller.ratios[: INDEX["ERROR"]] == [0.25] * INDEX["ERROR"]
    assert controller.ratios[INDEX["ERROR"] :] == [1.0] * (LEVELS - INDEX["ERROR"])


def test_an_empty_or_negative_window_changes_nothing_and_keeps_the_counts() -> None:
    controller = BudgetController(10_000)
    controller.offered[INDEX["INFO"]] = 500
    before = list(controller.ratios)
    for elapsed in (0.0, -1.0):
        assert controller.update(elapsed) == before
    assert controller.offered[INDEX["INFO"]] == 500  # still counted for the next window
    assert not controller.started


def test_measurements_before_any_load_are_forgotten() -> None:
    controller = BudgetController(10_000)
    controller.measure(INDEX["INFO"], 10, 1_000.0)  # 100 B/event, before any load
    window(controller, {})
    assert not controller.started and controller.bytes_per_event[INDEX["INFO"]] is None
    window(controller, {"INFO": 1_000}, {"INFO": (1_000, 20_000.0)})
    assert controller.bytes_per_event[INDEX["INFO"]] == 20.0  # not mixed with the 100


def test_the_first_window_with_load_sets_the_ratios_straight_to_their_targets() -> None:
    controller = BudgetController(10_000)
    window(controller, {"INFO": 1_000, "DEBUG": 500}, {"INFO": (1_000, 20_000.0)})
    assert controller.started
    # INFO needs 1000/s * 20 B = 20 000 B/s of 9 800: 0.49, at once (not half-way).
    assert ratio(controller, "INFO") == pytest.approx(TARGET / 20_000)
    assert ratio(controller, "DEBUG") == 0.0  # nothing left below INFO
    assert ratio(controller, "NOTICE") == 1.0  # nothing offered: it fits
    assert ratio(controller, "WARNING") == 1.0
    assert controller.trim == 1.0  # nothing was sampled during the window


def test_a_ratio_falls_at_once_but_rises_half_way_per_window() -> None:
    controller = BudgetController(10_000)
    window(controller, {"INFO": 1_000}, {"INFO": (1_000, 20_000.0)})
    # Same load, on target (490 kept events = 9 800 B): unchanged.
    window(controller, {"INFO": 1_000}, {"INFO": (490, 9_800.0)})
    assert ratio(controller, "INFO") == pytest.approx(0.49)
    assert controller.trim == 1.0  # exactly on target: no correction
    # The load halves: the smoothed rate only falls half-way (750/s), the target
    # ratio is 9 800 / (750 * 20) and the ratio rises half of the way to it.
    window(controller, {"INFO": 500}, {"INFO": (245, 4_900.0)})
    assert controller.rates[INDEX["INFO"]] == 750.0
    share = TARGET / (750 * 20)
    assert ratio(controller, "INFO") == pytest.approx(0.49 + 0.5 * (share - 0.49))
    # The load doubles: believed at once (2 000/s), and the ratio falls at once.
    window(controller, {"INFO": 2_000}, {"INFO": (1_143, 22_860.0)})
    assert controller.rates[INDEX["INFO"]] == 2_000.0
    trimmed = TARGET * controller.trim
    assert ratio(controller, "INFO") == pytest.approx(trimmed / (2_000 * 20), rel=1e-9)


def test_costs_are_smoothed_by_the_smoothing_weight() -> None:
    half = BudgetController(10_000)
    whole = BudgetController(10_000, smoothing=1.0)
    for controller in (half, whole):
        window(controller, {"INFO": 100}, {"INFO": (100, 2_000.0)})  # 20 B/event
        window(controller, {"INFO": 100}, {"INFO": (100, 4_000.0)})  # 40 B/event
    assert half.bytes_per_event[INDEX["INFO"]] == 30.0
    assert whole.bytes_per_event[INDEX["INFO"]] == 40.0
    window(half, {"INFO": 100})  # nothing kept: the cost is left as it was
    assert half.bytes_per_event[INDEX["INFO"]] == 30.0


def test_the_second_window_replaces_the_rates_of_the_first() -> None:
    """A start is a surge of its own: its fall is not smoothed, later falls are (the
    protected severities' averages stay smoothed both ways)."""
    controller = BudgetController(10_000, smoothing=0.25)
    window(controller, {"INFO": 1_000, "WARNING": 10}, {"INFO": (1, 20.0)}, elapsed=0.25)
    assert controller.rates[INDEX["INFO"]] == 4_000
    first = ratio(controller, "INFO")
    assert first == pytest.approx((TARGET - 800) / 80_000)
    window(controller, {"INFO": 500, "WARNING": 20}, {"INFO": (490, 9_800.0)})
    assert controller.rates[INDEX["INFO"]] == 500
    assert controller.rates[INDEX["WARNING"]] == 20
    assert controller.average_rates[INDEX["WARNING"]] == 40 + 0.25 * (20 - 40)
    # INFO at 500/s costs 10 000 B/s: it gets what WARNING (35/s at 20 B) leaves,
    # rising half-way (smoothed, the rate would fall only to 3 125/s, the share to 0.15).
    share = (TARGET - 700) / 10_000
    assert ratio(controller, "INFO") == pytest.approx(first + 0.5 * (share - first))
    window(controller, {"INFO": 100, "WARNING": 20}, {"INFO": (91, 1_820.0)})
    assert controller.rates[INDEX["INFO"]] == 500 + 0.25 * (100 - 500)


def test_falling_rates_are_smoothed_by_the_smoothing_weight() -> None:
    controller = BudgetController(10_000, smoothing=0.25)
    window(controller, {"INFO": 1_000}, {"INFO": (1, 20.0)})  # the first (replaced)
    window(controller, {"INFO": 1_000}, {"INFO": (1, 20.0)})
    window(controller, {"INFO": 200}, {"INFO": (1, 20.0)})
    assert controller.rates[INDEX["INFO"]] == 1_000 + 0.25 * (200 - 1_000)
    assert controller.average_rates[INDEX["INFO"]] == 1_000 + 0.25 * (200 - 1_000)
    window(controller, {"INFO": 2_000}, {"INFO": (1, 20.0)})
    assert controller.rates[INDEX["INFO"]] == 2_000  # a rise: at once
    assert controller.average_rates[INDEX["INFO"]] == 800 + 0.25 * (2_000 - 800)  # smoothed


def test_rates_and_budget_scale_with_the_window_length() -> None:
    controller = BudgetController(10_000)
    window(controller, {"INFO": 2_000}, {"INFO": (2_000, 40_000.0)}, elapsed=2.0)
    assert controller.rates[INDEX["INFO"]] == 1_000.0
    assert ratio(controller, "INFO") == pytest.approx(TARGET / 20_000)


def test_the_trim_moves_by_a_quarter_of_a_small_gap_while_sampling() -> None:
    controller = BudgetController(10_000)
    window(controller, {"INFO": 1_000}, {"INFO": (1_000, 20_000.0)})  # INFO 0.49
    # Kept 9 000 B of a 9 800 B target: the trim rises by a quarter of the gap.
    window(controller, {"INFO": 1_000}, {"INFO": (450, 9_000.0)})
    gap = (TARGET - 9_000) / TARGET
    assert controller.trim == pytest.approx(1 + 0.25 * gap)
    # The budget handed out is the trimmed one (a rise: half-way to it).
    share = TARGET * controller.trim / 20_000
    assert ratio(controller, "INFO") == pytest.approx(0.49 + 0.5 * (share - 0.49))
    # Over target by as much: it comes back down.
    trim = controller.trim
    kept = TARGET * 1.05
    window(controller, {"INFO": 1_000}, {"INFO": (500, kept)})
    assert controller.trim == pytest.approx(trim * (1 + 0.25 * (TARGET - kept) / TARGET))


def test_the_trim_ignores_gaps_of_a_fifth_or_more_and_stays_within_its_bounds() -> None:
    controller = BudgetController(10_000)
    window(controller, {"INFO": 1_000}, {"INFO": (1_000, 20_000.0)})
    window(controller, {"INFO": 1_000}, {"INFO": (392, TARGET * 0.8)})  # a gap of exactly 0.2
    assert controller.trim == 1.0
    window(controller, {"INFO": 1_000}, {"INFO": (392, TARGET * 0.79)})
    assert controller.trim == 1.0
    controller.trim = 1.49
    window(controller, {"INFO": 1_000}, {"INFO": (400, TARGET * 0.85)})
    assert controller.trim == 1.5
    controller.trim = 0.51
    window(controller, {"INFO": 1_000}, {"INFO": (600, TARGET * 1.15)})
    assert controller.trim == 0.5


def test_no_trim_while_nothing_is_sampled() -> None:
    controller = BudgetController(10_000)
    window(controller, {"INFO": 100}, {"INFO": (100, TARGET * 0.9)})
    assert min(controller.ratios) == 1.0
    window(controller, {"INFO": 100}, {"INFO": (100, TARGET * 0.9)})
    assert controller.trim == 1.0


def test_a_backlog_takes_a_quarter_of_itself_off_the_next_budget() -> None:
    controller = BudgetController(10_000)
    window(controller, {"INFO": 1_000}, {"INFO": (1_000, 20_000.0)})
    window(controller, {"INFO": 1_000}, {"INFO": (490, TARGET)}, backlog=4_000)
    assert ratio(controller, "INFO") == pytest.approx((TARGET - 1_000) / 20_000)
    window(controller, {"INFO": 1_000}, {"INFO": (440, 8_800.0)}, backlog=100_000)
    assert ratio(controller, "INFO") == 0.0  # never a negative budget


def test_a_backlog_under_its_standing_target_raises_the_budget_and_ratios_rise_at_once() -> None:
    """The MQTT sink keeps a standing queue and passes the backlog above it: negative
    when its queue ran short, so the budget went partly unused."""
    controller = BudgetController(10_000)
    window(controller, {"INFO": 1_000}, {"INFO": (1_000, 20_000.0)})
    window(controller, {"INFO": 1_000}, {"INFO": (100, 2_000.0)}, backlog=100_000)
    assert ratio(controller, "INFO") == 0.0
    # Queue 2 000 B short of its target: the budget is a quarter of that higher, and
    # the ratio goes there at once instead of half-way.
    window(controller, {"INFO": 1_000}, {"INFO": (0, 0.0)}, backlog=-2_000)
    assert ratio(controller, "INFO") == pytest.approx((TARGET + 500) / 20_000)


def test_unmeasured_severities_cost_the_mean_of_the_measured_ones_or_the_default() -> None:
    fresh = BudgetController(10_000, default_bytes_per_event=50.0)
    window(fresh, {"INFO": 1_000})  # nothing kept, nothing measured: 50 B/event
    assert ratio(fresh, "INFO") == pytest.approx(TARGET / 50_000)
    assert fresh.expected_bytes_per_sec() == pytest.approx(1_000 * 50 * TARGET / 50_000)

    controller = BudgetController(100_000)
    window(
        controller,
        {"INFO": 100, "ERROR": 100, "NOTICE": 1_000},
        {"INFO": (100, 2_000.0), "ERROR": (100, 6_000.0)},
    )
    # NOTICE was never measured: (20 + 60) / 2 = 40 B/event.
    expected = 100 * 20 + 100 * 60 + 1_000 * 40
    assert controller.expected_bytes_per_sec() == pytest.approx(expected)


def test_protected_levels_are_judged_on_rates_smoothed_both_ways_and_reopen_at_once() -> None:
    controller = BudgetController(10_000)
    window(controller, {"WARNING": 400}, {"WARNING": (400, 8_000.0)})  # 8 000 B/s fits
    assert ratio(controller, "WARNING") == 1.0
    # A spike to 1 000/s: the average is 700/s (14 000 B/s): sampled at once to fit.
    window(controller, {"WARNING": 1_000}, {"WARNING": (1_000, 20_000.0)})
    assert controller.average_rates[INDEX["WARNING"]] == 700.0
    assert ratio(controller, "WARNING") == pytest.approx(TARGET / 14_000)
    low = ratio(controller, "WARNING")
    # Back to 400/s: average 550/s (11 000 B/s); the ratio rises half-way.
    window(controller, {"WARNING": 400}, {"WARNING": (280, 5_600.0)})
    share = TARGET / 11_000
    assert ratio(controller, "WARNING") == pytest.approx(low + 0.5 * (share - low))
    # 475/s fits again (9 500 B/s): straight back to 1, not half-way.
    window(controller, {"WARNING": 400}, {"WARNING": (320, 6_400.0)})
    assert ratio(controller, "WARNING") == 1.0


def test_what_protected_levels_use_is_taken_from_the_others_budget() -> None:
    controller = BudgetController(10_000)
    window(
        controller,
        {"ERROR": 100, "INFO": 1_000},
        {"ERROR": (100, 3_000.0), "INFO": (1_000, 20_000.0)},
    )
    assert ratio(controller, "ERROR") == 1.0
    assert ratio(controller, "INFO") == pytest.approx((TARGET - 3_000) / 20_000)
    # More protected load than the budget: ERROR sampled, nothing left below it.
    window(controller, {"ERROR": 1_000, "INFO": 1_000}, {"ERROR": (100, 3_000.0)})
    assert 0 < ratio(controller, "ERROR") < 1
    assert ratio(controller, "INFO") == 0.0


def test_higher_protected_levels_are_served_first() -> None:
    controller = BudgetController(10_000)
    window(
        controller,
        {"CRITICAL": 100, "ERROR": 400, "WARNING": 100},
        {"CRITICAL": (100, 3_000.0), "ERROR": (400, 12_000.0), "WARNING": (100, 3_000.0)},
    )
    assert ratio(controller, "CRITICAL") == 1.0
    assert ratio(controller, "ERROR") == pytest.approx((TARGET - 3_000) / 12_000)
    assert ratio(controller, "WARNING") == 0.0
