"""Field references in configs: ``name`` or the Logstash path ``[a][b]``, compiled once.

The same syntax as in templates (:mod:`logstream.template`):

    host            the top-level field ``host`` (dots are part of the name:
                    ``log.level`` is the key ``"log.level"``)
    [a][b]          the field ``b`` inside the object ``a``
    [tags][0]       an element of a list (a negative index counts from the end);
                    in an object, ``[0]`` is the key ``"0"``

:func:`parse_path` checks a reference at build time; :func:`getter`,
:func:`setter` and :func:`deleter` return closures for the per-event path
(a plain ``dict.get`` for a top-level name). None of them raises on any
event: a path that runs into a missing key or a value of the wrong type
gives :data:`MISSING` (get), does nothing (set, delete).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from logstream.event import Event

Path = tuple[str | int, ...]
Get = Callable[[Event], Any]
Set = Callable[[Event, Any], bool]
Delete = Callable[[Event], Any]


class _Missing:
    """The value of a field that is not there (distinct from ``None``, a JSON null)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()

_NESTED: Final = re.compile(r"(?:\[[^\[\]]+\])+")


def is_path(text: str) -> bool:
    """True when ``text`` is written as a ``[a][b]`` path (rather than a plain name)."""
    return _NESTED.fullmatch(text) is not None


def parse_path(text: str) -> Path:
    """``host`` -> ``("host",)``; ``[a][b]`` -> ``("a", "b")``; ``[tags][0]`` -> ``("tags", 0)``.

    Raises ``ValueError`` naming the reference when it is empty or has
    unbalanced brackets.
    """
    if not text:
        raise ValueError("empty field reference")
    if text.startswith("["):
        if not is_path(text):
            raise ValueError(
                f"bad field reference {text!r}: write a path as [a][b] "
                "(no empty or nested brackets)"
            )
        return tuple(_key(part) for part in text[1:-1].split("]["))
    if "[" in text or "]" in text:
        raise ValueError(f"bad field reference {text!r}: write a path as [a][b]")
    return (text,)


def _key(part: str) -> str | int:
    body = part[1:] if part.startswith("-") else part
    return int(part) if body.isdigit() and len(body) < 10 else part


def lookup(value: Any, path: Path) -> Any:
    """The value at ``path`` inside ``value``, or :data:`MISSING`."""
    for key in path:
        kind = type(value)
        if kind is dict:
            value = value.get(key if type(key) is str else str(key), MISSING)
            if value is MISSING:
                return MISSING
        elif kind is list and type(key) is int and -len(value) <= key < len(value):
            value = value[key]
        else:
            return MISSING
    return value


def getter(path: Path) -> Get:
    """A closure giving the field's value, or :data:`MISSING`."""
    if len(path) == 1:
        name = path[0] if type(path[0]) is str else str(path[0])
        return lambda event: event.get(name, MISSING)
    return lambda event: lookup(event, path)


def setter(path: Path) -> Set:
    """A closure setting the field; missing objects on the way are created.

    Returns ``False`` (and changes nothing) when a value on the way is not an
    object, or the last step indexes a list out of range.
    """
    if len(path) == 1:
        name = path[0] if type(path[0]) is str else str(path[0])

        def set_top(event: Event, value: Any) -> bool:
            event[name] = value
            return True

        return set_top
    parents, last = path[:-1], path[-1]

    def set_nested(event: Event, value: Any) -> bool:
        node: Any = event
        for key in parents:
            if type(node) is dict:
                name = key if type(key) is str else str(key)
                child = node.get(name)
                if child is None:
                    child = node[name] = {}
                node = child
            elif type(node) is list and type(key) is int and -len(node) <= key < len(node):
                node = node[key]
            else:
                return False
        if type(node) is dict:
            node[last if type(last) is str else str(last)] = value
            return True
        if type(node) is list and type(last) is int and -len(node) <= last < len(node):
            node[last] = value
            return True
        return False

    return set_nested


def deleter(path: Path) -> Delete:
    """A closure removing the field and returning its value (or :data:`MISSING`).

    List elements are not removed (that would shift the others); only keys are.
    """
    if len(path) == 1:
        name = path[0] if type(path[0]) is str else str(path[0])
        return lambda event: event.pop(name, MISSING)
    parents, last = path[:-1], path[-1]
    last_name = last if type(last) is str else str(last)

    def delete_nested(event: Event) -> Any:
        node = lookup(event, parents)
        if type(node) is dict:
            return node.pop(last_name, MISSING)
        return MISSING

    return delete_nested
