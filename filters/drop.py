"""The ``drop`` filter: removes the events that match a condition.

::

    - type: drop
      if: 'level < INFO or "healthcheck" in tags'

The condition is in the language of :mod:`logstream.conditions`. Every event
removed is counted as dropped with reason ``filtered`` (an intentional drop),
so ``logstream_events_dropped_total{reason="filtered"}`` says how much was
left out on purpose.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from logstream.conditions import Predicate, check_condition, compile_condition
from logstream.event import Batch
from logstream.units import BuildContext, Filter, FilterConfig


class DropFilterConfig(FilterConfig):
    type: Literal["drop"]
    if_: str = Field(alias="if", description="Condition: the events that match are dropped.")

    @field_validator("if_")
    @classmethod
    def _valid_condition(cls, value: str) -> str:
        return check_condition(value)

    def build(self, name: str, ctx: BuildContext) -> DropFilter:
        return DropFilter(name, ctx, compile_condition(self.if_).test)


class DropFilter(Filter):
    # What the condition names was meant never to reach a sink (health checks, but
    # also events a user keeps out on purpose): on an error, keep the batch out too.
    fails_closed = True

    def __init__(self, name: str, ctx: BuildContext, matches: Predicate) -> None:
        super().__init__(name, ctx.registry.unit(name, "filter"))
        self._matches = matches

    def process(self, batch: Batch) -> Batch:
        matches = self._matches
        kept = [event for event in batch if not matches(event)]
        dropped = len(batch) - len(kept)
        if dropped:
            self.metrics.drop(dropped, "filtered")
            return kept
        return batch
