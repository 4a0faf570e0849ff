"""The ``sample`` filter: keep a fraction of events, per severity, deterministically.

::

    filters:
      - type: sample
        levels: {WARNING: 1, INFO: 10, DEBUG: 100}   # keep all WARNING+, 1 in 10 INFO, ...
        key_fields: [trace_id]      # same trace_id, same decision, in every process
        accounting_fields: [host]   # one accounting record per host and interval

Which events are kept:

- ``rate: N`` keeps 1 in N (``ratio: r`` keeps the fraction r) of every
  severity; ``levels`` sets the rate from a severity upwards, up to the next
  severity listed (below the lowest one listed: ``rate``/``ratio`` if given,
  else the lowest one's rate). Severities *above the highest one listed* are
  kept in full: ``levels: {DEBUG: 100, INFO: 10}`` thins DEBUG and INFO and
  nothing else, so errors are never sampled unless a rule names them (list
  ``ERROR: 10`` to thin ERROR and CRITICAL too). A plain ``rate``/``ratio``
  without ``levels`` still applies to every severity: that is what it says.
- Without ``key_fields`` the choice is systematic: exactly 1 in N of each
  severity, the first one kept. With ``key_fields`` an event is kept when a
  BLAKE2b hash of those fields' values, mapped to [0, 1), is below the keep
  ratio: the same key gets the same answer everywhere, every run.
- ``budget_bytes_per_sec`` adds adaptive sampling: once per ``window_secs``
  a :class:`~logstream.sampling.BudgetController` lowers the ratios, from
  the lowest severity up, so the JSON bytes of what is kept (times
  ``bytes_factor``, e.g. 0.1 for what lz4 batches make of them) fit the
  budget; ERROR and above are kept while they alone fit. For an MQTT
  budget measured in real wire bytes use the mqtt sink's ``rate_limit``,
  which owns the same controller fed with compressed sizes.

Every kept event that stands for more than itself gets ``sample_rate`` (how
many events it stands for; multiplied when already present). Every
``accounting_interval_secs``, and at shutdown, the filter emits an
accounting record (``type: logstream.accounting``) per distinct value of
``accounting_fields`` saying how many events of each severity it suppressed
and kept. Suppressed events are counted as dropped with reason ``sampled``.
Accounting records coming from upstream pass untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import orjson
from pydantic import Field, field_validator, model_validator

from logstream.event import Batch, Event
from logstream.payload import ACCOUNTING_TYPE, SAMPLE_RATE_FIELD, rate_json
from logstream.sampling import (
    LEVEL_NAMES,
    LEVELS,
    BudgetController,
    LevelIndexer,
    accounting_record,
    key_hasher,
)
from logstream.severity import Severity, parse_name
from logstream.units import BuildContext, Filter, FilterConfig

# Distinct accounting groups remembered per interval; more are counted under "other".
MAX_ACCOUNTING_GROUPS = 1000


class SampleFilterConfig(FilterConfig):
    type: Literal["sample"]
    rate: float | None = Field(
        default=None, description="Keep 1 in rate events (a number of at least 1)."
    )
    ratio: float | None = Field(default=None, description="Keep this fraction of events (0 to 1].")
    levels: dict[str, float] = Field(
        default_factory=dict,
        description=(
            "Severity -> rate (1 in N) for it and the ones above, up to the next listed; "
            "severities above the highest listed are kept in full."
        ),
    )
    level_field: str = Field(default="level", description="The field holding the severity.")
    unknown_level: str = Field(
        default="INFO", description="The severity of events whose level is missing or unknown."
    )
    key_fields: list[str] = Field(
        default_factory=list, description="Decide by a stable hash of these fields' values."
    )
    budget_bytes_per_sec: float | None = Field(
        default=None, gt=0, description="Adaptive: kept JSON bytes/s (x bytes_factor) at most."
    )
    bytes_factor: float = Field(
        default=1.0, gt=0, le=1, description="Bytes a JSON byte costs downstream (compression)."
    )
    window_secs: float = Field(default=1.0, gt=0, description="How often adaptive ratios change.")
    accounting_interval_secs: float = Field(
        default=10.0, ge=0, description="How often to emit accounting records (0: never)."
    )
    accounting_fields: list[str] = Field(
        default_factory=list, description="One accounting record per distinct value of these."
    )

    @field_validator("rate")
    @classmethod
    def _check_rate(cls, value: float | None) -> float | None:
        if value is not None and value < 1:
            raise ValueError(f"rate keeps 1 in rate events and must be at least 1, value: {value}")
        return value

    @field_validator("ratio")
    @classmethod
    def _check_ratio(cls, value: float | None) -> float | None:
        if value is not None and not 0 < value <= 1:
            raise ValueError(f"ratio must be above 0 and at most 1, value: {value}")
        return value

    @field_validator("levels")
    @classmethod
    def _check_levels(cls, value: dict[str, float]) -> dict[str, float]:
        seen: dict[Severity, str] = {}
        for name, rate in value.items():
            severity = parse_name(name)  # ValueError names the level and the choices
            if severity in seen:
                raise ValueError(f"levels: {name!r} and {seen[severity]!r} are the same severity")
            seen[severity] = name
            if rate < 1:
                raise ValueError(
                    f"levels.{name} keeps 1 in N events: N must be at least 1, value: {rate}"
                )
        return value

    @field_validator("unknown_level")
    @classmethod
    def _check_unknown_level(cls, value: str) -> str:
        return parse_name(value).name

    @model_validator(mode="after")
    def _check_combination(self) -> SampleFilterConfig:
        if self.rate is not None and self.ratio is not None:
            raise ValueError("give rate or ratio, not both")
        if (
            self.rate is None
            and self.ratio is None
            and not self.levels
            and self.budget_bytes_per_sec is None
        ):
            raise ValueError(
                "sample needs at least one of rate, ratio, levels or budget_bytes_per_sec"
            )
        return self

    def static_ratios(self) -> list[float]:
        """The keep ratio of each severity (index 0 = TRACE) before any budget.

        A listed severity's rate holds up to the next listed one; above the
        highest listed, everything is kept (1.0), so errors are never thinned
        by a rule that did not name them.
        """
        base = 1.0 / self.rate if self.rate is not None else self.ratio
        listed = sorted((parse_name(name), 1.0 / rate) for name, rate in self.levels.items())
        highest = listed[-1][0] if listed else None
        ratios = []
        for severity in sorted(Severity):
            chosen = base
            for level, ratio in listed:
                if level <= severity:
                    chosen = ratio
            if highest is not None and severity > highest:
                chosen = 1.0  # above every listed level: kept in full
            elif chosen is None:  # below every listed level and no rate/ratio
                chosen = listed[0][1] if listed else 1.0
            ratios.append(chosen)
        return ratios

    def describe_rates(self) -> str:
        """The effective rate per severity, for ``logstream check``:
        ``TRACE 1/100, DEBUG 1/100, INFO 1/10, NOTICE all, ...`` (plus the budget)."""
        parts = []
        for severity, ratio in zip(sorted(Severity), self.static_ratios(), strict=True):
            shown = "all" if ratio >= 1.0 else f"1/{rate_json(1.0 / ratio).decode()}"
            parts.append(f"{severity.name} {shown}")
        text = ", ".join(parts)
        if self.budget_bytes_per_sec is not None:
            text += f" (then lowered to fit {self.budget_bytes_per_sec:g} B/s)"
        return text

    def build(self, name: str, ctx: BuildContext) -> SampleFilter:
        return SampleFilter(self, name, ctx)


class SampleFilter(Filter):
    def __init__(self, config: SampleFilterConfig, name: str, ctx: BuildContext) -> None:
        super().__init__(name, ctx.registry.unit(name, "filter"))
        self.config = config
        self._clock = ctx.clock
        self._index = LevelIndexer(config.level_field, Severity[config.unknown_level])
        self._static = config.static_ratios()
        self._controller = (
            BudgetController(config.budget_bytes_per_sec / config.bytes_factor)
            if config.budget_bytes_per_sec is not None
            else None
        )
        self.ratios: list[float] = list(self._static)
        self._rates: list[float | None] = []
        self._set_rates()
        # Systematic sampling: "owed" fractions per severity; the first event is kept.
        self._owed = [1.0 - ratio for ratio in self.ratios]
        self._hash = key_hasher(config.key_fields) if config.key_fields else None
        self._keep: Callable[[Event, int], bool] = (
            self._keep_by_key if self._hash is not None else self._keep_systematic
        )
        self._group_of: Callable[[Event], tuple[object, ...]] | None = None
        if config.accounting_fields:
            fields = list(config.accounting_fields)
            self._group_of = lambda event: tuple(_hashable(event.get(f)) for f in fields)
        # group -> (suppressed per severity, kept per severity)
        self._groups: dict[tuple[object, ...] | None, tuple[list[int], list[int]]] = {}
        now = self._clock.monotonic()
        self._window_start = now
        self._interval_start = now
        self._interval_start_wall = self._clock.time()

    # ------------------------------------------------------------------ the per-batch path

    def process(self, batch: Batch) -> Batch:
        index_of = self._index
        keep = self._keep
        rates = self._rates
        group_of = self._group_of
        controller = self._controller
        offered = controller.offered if controller is not None else None
        static = self._static
        kept_batch: Batch = []
        suppressed = 0
        for event in batch:
            if event.get("type") == ACCOUNTING_TYPE:
                kept_batch.append(event)
                continue
            index = index_of(event)
            if offered is not None:
                offered[index] += static[index]  # the budget sees what the static rate keeps
            counts = self._counts(group_of(event) if group_of is not None else None)
            if keep(event, index):
                rate = rates[index]
                if rate is not None:
                    _set_rate(event, rate)
                if controller is not None:
                    controller.measure(index, 1, _json_size(event))
                counts[1][index] += 1
                kept_batch.append(event)
            else:
                counts[0][index] += 1
                suppressed += 1
        if suppressed:
            self.metrics.drop(suppressed, "sampled")
        return kept_batch

    def _keep_systematic(self, event: Event, index: int) -> bool:
        owed = self._owed[index] + self.ratios[index]
        if owed >= 1.0 - 1e-9:
            self._owed[index] = owed - 1.0
            return True
        self._owed[index] = owed
        return False

    def _keep_by_key(self, event: Event, index: int) -> bool:
        return self._hash(event) < self.ratios[index]  # type: ignore[misc]

    def _counts(self, group: tuple[object, ...] | None) -> tuple[list[int], list[int]]:
        counts = self._groups.get(group)
        if counts is None:
            if group is not None and len(self._groups) >= MAX_ACCOUNTING_GROUPS:
                group = ("other",) * len(group)
                counts = self._groups.get(group)
            if counts is None:
                counts = self._groups[group] = ([0] * LEVELS, [0] * LEVELS)
        return counts

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> Batch:
        controller = self._controller
        if controller is not None and now - self._window_start >= self.config.window_secs:
            adaptive = controller.update(now - self._window_start)
            self._window_start = now
            self.ratios = [s * a for s, a in zip(self._static, adaptive, strict=True)]
            self._set_rates()
        interval = self.config.accounting_interval_secs
        if interval and now - self._interval_start >= interval:
            self._interval_start = now
            return self._accounting()
        return []

    def flush(self) -> Batch:
        return self._accounting() if self.config.accounting_interval_secs else []

    def _set_rates(self) -> None:
        # What a kept event stands for, per severity (None: only itself).
        self._rates = [
            orjson.loads(rate_json(1.0 / ratio)) if 0 < ratio < 1.0 else None
            for ratio in self.ratios
        ]

    def _accounting(self) -> Batch:
        """One record per group that had events suppressed since the last records."""
        start_wall, end_wall = self._interval_start_wall, self._clock.time()
        self._interval_start_wall = end_wall
        groups, self._groups = self._groups, {}
        fields = self.config.accounting_fields
        sample_rates = {
            LEVEL_NAMES[i]: 1.0 / ratio for i, ratio in enumerate(self.ratios) if 0 < ratio < 1.0
        }
        records = []
        for group, (suppressed, kept) in groups.items():
            if not any(suppressed):
                continue
            extra = dict(zip(fields, group, strict=True)) if group is not None else None
            records.append(
                accounting_record(
                    unit=self.name,
                    start_wall=start_wall,
                    end_wall=end_wall,
                    suppressed={"sampled": suppressed},
                    kept=kept,
                    sample_rates=sample_rates,
                    extra=extra,
                )
            )
        return records


def _set_rate(event: Event, rate: float) -> None:
    previous = event.get(SAMPLE_RATE_FIELD)
    if isinstance(previous, int | float) and not isinstance(previous, bool) and previous > 0:
        event[SAMPLE_RATE_FIELD] = orjson.loads(rate_json(previous * rate))
    else:
        event[SAMPLE_RATE_FIELD] = rate


def _json_size(event: Event) -> int:
    try:
        return len(orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS))
    except TypeError:
        return 0


def _hashable(value: object) -> object:
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)
