"""The ``mutate`` filter: rename, remove, add and truncate fields, add tags.

Operations run in a fixed order, whatever their order in the config:
rename, remove, add, replace, truncate, add_tags.

Fields are top-level names (``host``; dots are part of the name) or
Logstash paths into objects (``[http][status]``, see :mod:`logstream.fields`);
setting a nested field creates the objects on the way.

String values of ``add`` and ``replace``, and tags, may refer to fields as in
templates (:mod:`logstream.template`): ``"%{host}-%{[app][name]}"``,
``"day %{+YYYY.MM.dd}"``. A reference to a missing field is left as written,
as Logstash does. Other values (numbers, lists, objects) are set as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, field_validator

from logstream.event import Batch, Event, add_tag
from logstream.fields import MISSING, deleter, getter, parse_path, setter
from logstream.template import compile_template
from logstream.units import BuildContext, Filter, FilterConfig

Operation = Callable[[Event], None]
Value = Callable[[Event], Any]


class MutateFilterConfig(FilterConfig):
    type: Literal["mutate"]
    rename: dict[str, str] = Field(default_factory=dict, description="old name -> new name")
    remove: list[str] = Field(default_factory=list)
    add: dict[str, Any] = Field(
        default_factory=dict,
        description="field -> value, set only when the field is absent (%{field} interpolated)",
    )
    replace: dict[str, Any] = Field(
        default_factory=dict, description="field -> value, always set (%{field} interpolated)"
    )
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

    @field_validator("rename")
    @classmethod
    def _valid_renames(cls, value: dict[str, str]) -> dict[str, str]:
        for old, new in value.items():
            _path("rename", old)
            _path(f"rename.{old}", new)
        return value

    @field_validator("remove")
    @classmethod
    def _valid_removals(cls, value: list[str]) -> list[str]:
        for index, field in enumerate(value):
            _path(f"remove[{index}]", field)
        return value

    @field_validator("add", "replace")
    @classmethod
    def _valid_values(cls, value: dict[str, Any]) -> dict[str, Any]:
        for field, item in value.items():
            parse_path(field)
            _value(field, item)
        return value

    @field_validator("add_tags")
    @classmethod
    def _valid_tags(cls, value: list[str]) -> list[str]:
        for index, tag in enumerate(value):
            _value(f"add_tags[{index}]", tag)
        return value

    def build(self, name: str, ctx: BuildContext) -> MutateFilter:
        return MutateFilter(name, ctx, self._operations())

    def _operations(self) -> list[Operation]:
        ops: list[Operation] = []
        if self.rename:
            ops.append(_rename(list(self.rename.items())))
        if self.remove:
            ops.append(_remove(list(self.remove)))
        if self.add:
            ops.append(_add(list(self.add.items())))
        if self.replace:
            ops.append(_replace(list(self.replace.items())))
        if self.truncate:
            ops.append(_truncate(list(self.truncate.items())))
        if self.add_tags:
            tags = [_value(f"add_tags[{i}]", tag) for i, tag in enumerate(self.add_tags)]

            def tag(event: Event) -> None:
                for render in tags:
                    add_tag(event, str(render(event)))

            ops.append(tag)
        return ops


def _path(key: str, field: str) -> tuple[str | int, ...]:
    try:
        return parse_path(field)
    except ValueError as error:
        raise ValueError(f"{key}: {error}") from None


def _top_level(field: str) -> bool:
    return len(parse_path(field)) == 1 and not field.startswith("[")


def _value(key: str, value: Any) -> Value:
    """A constant, or a compiled template for a string holding ``%{...}``."""
    if isinstance(value, str) and "%{" in value:
        try:
            template = compile_template(value)
        except ValueError as error:
            raise ValueError(f"{key}: {error}") from None
        if not template.constant:
            return template.render
        value = template.render({})
    return lambda event: value


def _rename(pairs: list[tuple[str, str]]) -> Operation:
    if all(_top_level(old) and _top_level(new) for old, new in pairs):

        def rename(event: Event) -> None:
            for old, new in pairs:
                if old in event:
                    event[new] = event.pop(old)

        return rename
    moves = [(deleter(parse_path(old)), setter(parse_path(new))) for old, new in pairs]

    def rename_nested(event: Event) -> None:
        for take, put in moves:
            value = take(event)
            if value is not MISSING:
                put(event, value)

    return rename_nested


def _remove(fields: list[str]) -> Operation:
    if all(_top_level(field) for field in fields):

        def remove(event: Event) -> None:
            for key in fields:
                event.pop(key, None)

        return remove
    removers = [deleter(parse_path(field)) for field in fields]

    def remove_nested(event: Event) -> None:
        for take in removers:
            take(event)

    return remove_nested


def _add(items: list[tuple[str, Any]]) -> Operation:
    rendered = [(field, _value(field, value)) for field, value in items]
    if all(_top_level(field) for field, _ in items):

        def add(event: Event) -> None:
            for key, render in rendered:
                if key not in event:
                    event[key] = render(event)

        return add
    steps = [
        (getter(parse_path(field)), setter(parse_path(field)), render) for field, render in rendered
    ]

    def add_nested(event: Event) -> None:
        for get, put, render in steps:
            if get(event) is MISSING:
                put(event, render(event))

    return add_nested


def _replace(items: list[tuple[str, Any]]) -> Operation:
    rendered = [(field, _value(field, value)) for field, value in items]
    top_level = all(_top_level(field) for field, _ in items)
    if top_level and not any(isinstance(v, str) and "%{" in v for _, v in items):
        values = dict(items)
        return lambda event: event.update(values)
    if top_level:

        def replace(event: Event) -> None:
            for key, render in rendered:
                event[key] = render(event)

        return replace
    steps = [(setter(parse_path(field)), render) for field, render in rendered]

    def replace_nested(event: Event) -> None:
        for put, render in steps:
            put(event, render(event))

    return replace_nested


def _truncate(limits: list[tuple[str, int]]) -> Operation:
    if all(_top_level(field) for field, _ in limits):

        def truncate(event: Event) -> None:
            for key, length in limits:
                value = event.get(key)
                if type(value) is str and len(value) > length:
                    event[key] = value[:length]

        return truncate
    steps = [(getter(parse_path(f)), setter(parse_path(f)), length) for f, length in limits]

    def truncate_nested(event: Event) -> None:
        for get, put, length in steps:
            value = get(event)
            if type(value) is str and len(value) > length:
                put(event, value[:length])

    return truncate_nested


class MutateFilter(Filter):
    def __init__(self, name: str, ctx: BuildContext, operations: list[Operation]) -> None:
        super().__init__(name, ctx.registry.unit(name, "filter"))
        self._operations = operations

    def process(self, batch: Batch) -> Batch:
        for operation in self._operations:
            for event in batch:
                operation(event)
        return batch
