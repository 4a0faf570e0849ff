"""Adaptive sampling under the caps: keep ratios per severity, per topic and in total.

Only with ``rate_limit``. Each capped topic and the sink's total have a
:class:`~logstream.sampling.BudgetController` fed with what kept events cost
in *compressed wire bytes* per severity; every ``window_secs`` the
controllers turn the offered counts into keep ratios, dropping from the
lowest severity first (WARNING and above are kept while they alone fit). A
topic's ratio per severity is its own controller's times the total's.
Kept events that stand for others carry ``sample_rate``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from logstream.event import Event
from logstream.metrics import UnitMetrics
from logstream.payload import dumps_event, is_accounting, rate_json, with_sample_rate
from logstream.sampling import LEVELS, BudgetController, LevelIndexer
from logstream.severity import Severity

from .limits import RateLimitConfig
from .state import TopicState

Share = Callable[[str, float, float], float]

# Under overload the samplers keep about this much of the budget queued (as the
# controllers' backlog target), so the rate limiter always has a payload ready when
# tokens come: the cap is used whole while the queue absorbs the estimates' errors.
# A queue above it lowers the next window's budget, one below it raises it.
STANDING_QUEUE_SECS = 0.25
# The first control window (it starts with the first events, all offered).
FIRST_WINDOW_SECS = 0.25


class Sampler:
    """The sink's samplers: one controller per capped topic (on its state) and the total."""

    def __init__(
        self,
        limits: RateLimitConfig,
        batched: bool,
        metrics: UnitMetrics,
        now: float,
        share: Share | None = None,
        parts: int = 1,
    ) -> None:
        self.limits = limits
        # With a budget shared by several processes: (cap key, cap, this process's
        # demand in bytes/s) -> the part of the cap this process may count on.
        self.share = share
        # Until the first shares are known, each of ``parts`` processes aims at its part.
        self.parts = parts if share is not None else 1
        self.batched = batched
        self.metrics = metrics
        self.level_of = LevelIndexer(limits.level_field, Severity[limits.unknown_level])
        self.total: BudgetController | None = None
        self.total_message_wire = 0.0  # smoothed wire bytes per message, all topics
        self.window_start = now
        self.window_end = math.inf
        # Set while the first control window waits for events.
        self.first_window = False
        if limits.adaptive:
            budget = self.budget(limits.total_bytes_per_sec, limits.total_messages_per_sec, 0.0)
            if budget is not None:
                self.total = BudgetController(budget / self.parts)
            # A process posts what it wants only once a window measured it (the
            # first is short): an idle worker claims no part of a shared cap.
            # The first window starts with the first events (begin_windows).
            self.first_window = True

    def budget(
        self, bytes_per_sec: float | None, messages_per_sec: float | None, message_wire: float
    ) -> float | None:
        """The byte budget a sampler aims at. A message cap counts only for ``json``
        (one event per message); batched payloads hold many events per message."""
        budgets = [bytes_per_sec] if bytes_per_sec is not None else []
        if messages_per_sec is not None and not self.batched:
            budgets.append(messages_per_sec * (message_wire or 300.0))
        return min(budgets) if budgets else None

    def attach(self, state: TopicState) -> None:
        """A new topic: its own controller (if capped), and the ratios sampled now."""
        if self.limits.adaptive:
            budget = self.budget(state.bytes_cap, state.messages_cap, 0.0)
            if budget is not None:
                state.controller = BudgetController(budget / self.parts)
        # A new topic samples as the samplers do now, not everything until the next window.
        own = state.controller.ratios if state.controller is not None else None
        total = self.total.ratios if self.total is not None else None
        if own is None and total is None:
            return
        state.topic_ratios = list(own) if own is not None else None
        set_ratios(
            state,
            [
                (own[i] if own is not None else 1.0) * (total[i] if total is not None else 1.0)
                for i in range(LEVELS)
            ],
        )

    def begin_windows(self, now: float, topics: Iterable[TopicState]) -> float:
        """The first events: start the first control window now, so it measures a
        whole window of load (one started at build time would see a fraction).
        Returns when the window ends."""
        self.first_window = False
        self.window_start = now
        # Until then everything is offered: measure the load soon, before the queues
        # overflow (and give up payloads, some holding WARNING+ events among others).
        self.window_end = now + min(self.limits.window_secs, FIRST_WINDOW_SECS)
        for state in topics:
            state.created = now
        return self.window_end

    def sample(self, state: TopicState, events: list[Event]) -> tuple[list[bytes], list[int]]:
        """Count offered events per severity, keep each severity's ratio of them (spread
        evenly), add ``sample_rate``; return the kept JSON lines and their severities."""
        level_of = self.level_of
        ratios, owed, rates, factors = state.ratios, state.owed, state.rates, state.factors
        offered, sampled, passed = state.offered, state.sampled, state.passed
        lines: list[bytes] = []
        levels: list[int] = []
        left_out = 0
        encode_errors = 0
        top = LEVELS - 1
        for event in events:
            if is_accounting(event):  # a sample filter's record: never sampled
                line = dumps_event(event)
                if line is None:
                    encode_errors += 1
                else:
                    lines.append(line)
                    levels.append(top)
                continue
            index = level_of(event)
            offered[index] += 1
            ratio = ratios[index]
            if ratio < 1.0:
                owing = owed[index] + ratio
                if owing < 1.0 - 1e-9:
                    owed[index] = owing
                    sampled[index] += 1
                    left_out += 1
                    continue
                owed[index] = owing - 1.0
            line = dumps_event(event)
            if line is None:
                encode_errors += 1
                continue
            rate = rates[index]
            if rate is not None:
                line = with_sample_rate(line, event, rate, factors[index])
                if line is None:
                    encode_errors += 1
                    continue
            passed[index] += 1
            lines.append(line)
            levels.append(index)
        if left_out:
            self.metrics.drop(left_out, "sampled")
        if encode_errors:
            self.metrics.drop(encode_errors, "encode_error")
        return lines, levels

    def measure(
        self, state: TopicState, wire: int, by_level: list[int], raw_by_level: list[int] | None
    ) -> None:
        """Tell the samplers what kept events cost in wire bytes, per severity."""
        state.message_wire += 0.2 * (wire - state.message_wire)
        self.total_message_wire += 0.05 * (wire - self.total_message_wire)
        controllers = [c for c in (state.controller, self.total) if c is not None]
        if not controllers:
            return
        if raw_by_level is None:  # one event
            index = by_level.index(1)
            for controller in controllers:
                controller.measure(index, 1, wire)
            return
        raw_total = sum(raw_by_level)
        if not raw_total:
            return
        for index, events in enumerate(by_level):
            if events:
                share = wire * raw_by_level[index] / raw_total
                for controller in controllers:
                    controller.measure(index, events, share)

    def control(self, now: float, topics: Iterable[TopicState], total_queued: float) -> None:
        """Close a sampling window: new keep ratios per topic and severity."""
        limits = self.limits
        states = list(topics)
        window_start = self.window_start
        elapsed = now - window_start
        self.window_start = now
        self.window_end = now + limits.window_secs
        total_offered = [0.0] * LEVELS
        for state in states:
            controller = state.controller
            if controller is not None:
                controller.offered[:] = state.offered
                budget = self.budget(state.bytes_cap, state.messages_cap, state.message_wire)
                if self.share is not None and state.bytes_cap is not None and budget:
                    demand = _demand(controller, state.offered, elapsed)
                    shared = self.share(f"topic/bytes/{state.name}", state.bytes_cap, demand)
                    budget = min(budget, max(shared, 0.01 * state.bytes_cap))
                controller.bytes_per_sec = budget or controller.bytes_per_sec
                # A topic that came during the window offered over less than all of it.
                own_elapsed = max(now - max(window_start, state.created), 0.25 * elapsed)
                backlog = state.queued_bytes - STANDING_QUEUE_SECS * controller.bytes_per_sec
                state.topic_ratios = list(controller.update(own_elapsed, backlog))
            ratios = state.topic_ratios
            for index, offered in enumerate(state.offered):
                total_offered[index] += offered * (ratios[index] if ratios else 1.0)
            state.offered = [0] * LEVELS
        total_ratios = None
        total = self.total
        if total is not None:
            total.offered[:] = total_offered
            budget = self.budget(
                limits.total_bytes_per_sec, limits.total_messages_per_sec, self.total_message_wire
            )
            cap = limits.total_bytes_per_sec
            if self.share is not None and cap is not None and budget:
                shared = self.share("total/bytes", cap, _demand(total, total_offered, elapsed))
                budget = min(budget, max(shared, 0.01 * cap))
            total.bytes_per_sec = budget or total.bytes_per_sec
            backlog = total_queued - STANDING_QUEUE_SECS * total.bytes_per_sec
            total_ratios = total.update(elapsed, backlog)
        for state in states:
            topic_ratios = state.topic_ratios
            if topic_ratios is None and total_ratios is None:
                continue
            set_ratios(
                state,
                [
                    (topic_ratios[i] if topic_ratios else 1.0)
                    * (total_ratios[i] if total_ratios else 1.0)
                    for i in range(LEVELS)
                ],
            )


def set_ratios(state: TopicState, ratios: list[float]) -> None:
    """Set a topic's keep ratios and the ``sample_rate`` its kept events carry."""
    state.ratios = ratios
    for index, ratio in enumerate(ratios):
        if 0.0 < ratio < 1.0:
            state.factors[index] = 1.0 / ratio
            state.rates[index] = rate_json(1.0 / ratio)
        else:
            state.factors[index] = 1.0
            state.rates[index] = None


def _demand(controller: BudgetController, offered: Sequence[float], elapsed: float) -> float:
    """Bytes/s the events offered in the window would cost if all were kept."""
    if elapsed <= 0:
        return 0.0
    known = [cost for cost in controller.bytes_per_event if cost is not None]
    fallback = sum(known) / len(known) if known else controller.default_bytes_per_event
    return sum(
        count / elapsed * (controller.bytes_per_event[index] or fallback)
        for index, count in enumerate(offered)
    )
