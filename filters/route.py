"""The ``route`` filter: names the routes an event takes, for sinks to select on.

::

    filters:
      - type: route
        rules:                              # tried in order
          - {name: alerts, if: "level >= ERROR"}
          - {name: audit,  if: '"audit" in tags'}
        default: bulk                       # when no rule matches (optional)
        mode: first                         # first: the first match only; all: every match
        field: route                        # where the names go (a list); a [a][b] path works
    sinks:
      - {type: mqtt, url: local, topic: "alerts/{host}", when: '"alerts" in route'}
      - {type: elasticsearch, hosts: [local], when: '"bulk" in route'}

The field is always set to a list of names: the first matching rule's name
(``mode: first``, the default: the rules split the stream into disjoint
routes, like if / else if / else), every matching rule's name in rule order
(``mode: all``), or ``[default]`` / ``[]`` when none matches. A value the
field had before is replaced. It is an ordinary field, so sinks write it out
with the rest of the event. No event is dropped.

A sink's ``when`` may also hold any condition directly; the filter is worth
having when several sinks share a rule, or for the "everything else" route
that ``default`` gives without repeating the other rules' conditions negated.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from logstream.conditions import check_condition, compile_condition
from logstream.event import Batch
from logstream.fields import parse_path, setter
from logstream.units import BuildContext, Filter, FilterConfig


class RouteRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="The route's name, as sinks test it.")
    if_: str = Field(alias="if", description="Condition an event must match to take the route.")

    @field_validator("if_")
    @classmethod
    def _valid_condition(cls, value: str) -> str:
        return check_condition(value)


class RouteFilterConfig(FilterConfig):
    type: Literal["route"]
    rules: list[RouteRule] = Field(min_length=1)
    mode: Literal["first", "all"] = Field(
        default="first", description="first: the first matching rule only; all: every one."
    )
    default: str | None = Field(
        default=None, min_length=1, description="Route name for events no rule matches."
    )
    field: str = Field(default="route", description="Field set to the list of route names.")

    @field_validator("field")
    @classmethod
    def _valid_field(cls, value: str) -> str:
        parse_path(value)
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> RouteFilterConfig:
        names = [rule.name for rule in self.rules]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"rules: route names must be unique, repeated: {', '.join(repeated)}")
        return self

    def build(self, name: str, ctx: BuildContext) -> RouteFilter:
        return RouteFilter(name, ctx, self)


class RouteFilter(Filter):
    def __init__(self, name: str, ctx: BuildContext, config: RouteFilterConfig) -> None:
        super().__init__(name, ctx.registry.unit(name, "filter"))
        self._rules = tuple((rule.name, compile_condition(rule.if_).test) for rule in config.rules)
        self._default = config.default
        self._set = setter(parse_path(config.field))
        self.process = self._first if config.mode == "first" else self._all  # type: ignore[method-assign]

    def _first(self, batch: Batch) -> Batch:
        rules, default, set_field = self._rules, self._default, self._set
        for event in batch:
            for name, matches in rules:
                if matches(event):
                    set_field(event, [name])
                    break
            else:
                set_field(event, [] if default is None else [default])
        return batch

    def _all(self, batch: Batch) -> Batch:
        rules, default, set_field = self._rules, self._default, self._set
        for event in batch:
            names = [name for name, matches in rules if matches(event)]
            if not names and default is not None:
                names.append(default)
            set_field(event, names)
        return batch
