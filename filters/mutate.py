"""The ``mutate`` filter: rename, remove, add and truncate fields, add tags.

Operations run in a fixed order, whatever their order in the config:
rename, remove, add, truncate, add_tags. Field names are top-level keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, field_validator

from logstream.event import Batch, Event, add_tag
from logstream.units import BuildContext, Filter, FilterConfig

Operation = Callable[[Event], None]


class MutateFilterConfig(FilterConfig):
    type: Literal["mutate"]
    rename: dict[str, str] = Field(default_factory=dict, description="old name -> new name")
    remove: list[str] = Field(default_factory=list)
    add: dict[str, Any] = Field(
        default_factory=dict, description="field -> value, set only when the field is absent"
    )
    replace: dict[str, Any] = Field(default_factory=dict, description="field -> value, always set")
    truncate: dict[str, int] = Field(
        default_factory=dict, description="field -> maximum characters of its string value"
    )
    add_tags: list[str] = Field(default_factory=list)

    @field_validator("truncate")
    @classmethod
    def _positive_lengths(cls, value: dict[str, int]) -> dict[str, int]:
        for field, length in value.items():
            if length < 1:
                raise ValueError(f"truncate.{field} must be at least 1, value: {length}")
        return value

    def build(self, name: str, ctx: BuildContext) -> MutateFilter:
        return MutateFilter(name, ctx, self._operations())

    def _operations(self) -> list[Operation]:
        ops: list[Operation] = []
        if self.rename:
            pairs = list(self.rename.items())

            def rename(event: Event) -> None:
                for old, new in pairs:
                    if old in event:
                        event[new] = event.pop(old)

            ops.append(rename)
        if self.remove:
            names = list(self.remove)

            def remove(event: Event) -> None:
                for key in names:
                    event.pop(key, None)

            ops.append(remove)
        if self.add:
            defaults = list(self.add.items())

            def add(event: Event) -> None:
                for key, value in defaults:
                    if key not in event:
                        event[key] = value

            ops.append(add)
        if self.replace:
            values = dict(self.replace)
            ops.append(lambda event: event.update(values))
        if self.truncate:
            limits = list(self.truncate.items())

            def truncate(event: Event) -> None:
                for key, length in limits:
                    value = event.get(key)
                    if type(value) is str and len(value) > length:
                        event[key] = value[:length]

            ops.append(truncate)
        if self.add_tags:
            tags = list(self.add_tags)

            def tag(event: Event) -> None:
                for name in tags:
                    add_tag(event, name)

            ops.append(tag)
        return ops


class MutateFilter(Filter):
    def __init__(self, name: str, ctx: BuildContext, operations: list[Operation]) -> None:
        super().__init__(name, ctx.registry.unit(name, "filter"))
        self._operations = operations

    def process(self, batch: Batch) -> Batch:
        for operation in self._operations:
            for event in batch:
                operation(event)
        return batch
