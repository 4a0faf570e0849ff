"""Conditions on events: a small, safe expression language compiled to closures.

Used by the ``drop`` and ``route`` filters (``if:``) and by sinks (``when:``)::

    level >= WARNING and host != "web-1"
    [http][status] >= 500 or message =~ /timeout|refused/
    "audit" in tags and not exists [user][id]
    level in [ERROR, CRITICAL] or (logger_name == "nova.api" and level >= NOTICE)

Nothing is evaluated with ``eval`` or Python's AST: the text is tokenised and
parsed here, then turned once, at build time, into a tree of plain closures
(``Event -> bool``) specialised for each comparison's operand types, so the
per-event path has no branches on the shape of the condition.

Grammar (lowest precedence first)::

    condition  := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | primary
    primary    := "(" or ")" | "exists" field | operand [op operand]
    op         := "==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in"
                | "=~" regex | "!~" regex
    operand    := field | string | number | true | false | null | SEVERITY | list
    list       := "[" [literal ("," literal)*] "]"
    regex      := /pattern/ | string

Fields
    ``host``, ``@timestamp``, ``log.level`` are top-level fields (a bare name
    is letters, digits, ``_ @ . -``; dots are part of the name, as in
    templates); ``[a][b]`` is the field ``b`` inside ``a``; ``[tags][0]`` a
    list element. ``[...]`` holding names is a field, holding literals
    (``["a", "b"]``, ``[1, 2]``, ``[ERROR, CRITICAL]``, ``[]``) a list.

Literals
    ``"text"`` or ``'text'`` (escapes ``\\" \\' \\\\ \\n \\t \\r``; any other
    backslash is kept, so regex escapes need no doubling); numbers ``42``,
    ``-1.5``, ``1e3``; ``true``, ``false``, ``null``; a severity name in upper
    case (``TRACE DEBUG INFO NOTICE WARNING ERROR CRITICAL`` and the aliases of
    :mod:`logstream.severity`, e.g. ``WARN``, ``FATAL``); ``/regex/`` after
    ``=~`` and ``!~`` (Python syntax, ``\\/`` for a slash; ``(?i)`` for case
    folding), compiled once.

Meaning
    * A bare operand is a truth test: ``[@metadata][debug]`` is true when the
      field is present and not ``null``, ``false``, ``0``, ``""``, ``[]``, ``{}``.
    * ``exists f`` is true when ``f`` is present, even when it is ``null``.
    * ``==`` compares like with like: a string with a string, a number with a
      number (a field holding a numeric string such as ``"503"`` is read as a
      number when compared with a number literal), ``true``/``false`` only with
      booleans; ``null`` equals a missing field too.
    * Comparing with a severity name (``level >= WARNING``, ``level == ERROR``,
      ``level in [ERROR, CRITICAL]``) compares on the severity scale
      ``TRACE < DEBUG < INFO < NOTICE < WARNING < ERROR < CRITICAL``, whatever
      spelling the event has (``"warn"``, ``"Warning"``, ``30`` as a Python
      level number). ``level`` ordered against a quoted name (``level >=
      "warn"``) does the same. A value that names no severity is not ordered.
    * ``< <= > >=`` order numbers numerically and strings by code point; any
      other pair (a missing field, a list, a number against a string that is
      not a number) is neither smaller nor larger: every ordering is false.
    * ``x in [list]`` is membership (with ``==`` above); ``x in field`` is
      membership when the field is a list, a substring test when it is a
      string, a key test when it is an object.
    * ``=~`` searches (not anchored: use ``^``) strings and numbers' text.
    * ``!=``, ``not in`` and ``!~`` are exactly the negations of ``==``,
      ``in`` and ``=~`` (so ``[missing] != "x"`` is true).

Errors
    :func:`compile_condition` raises :class:`ConditionError` (a ``ValueError``)
    naming the bad token and its column, e.g.
    ``unexpected ')' at column 10 in condition 'level >= )'``.
    Evaluating a compiled condition never raises: a missing field or a value
    of an unexpected type makes the comparison false (as above); a value no
    JSON decoder produces whose ``==`` raises makes the whole condition false.
    Keywords (``and or not in exists true false null``) are lower case.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from logstream import severity
from logstream.event import Event
from logstream.fields import MISSING, Path, getter, parse_path

Predicate = Callable[[Event], bool]
Get = Callable[[Event], Any]
Match = Callable[[Any], bool]

MAX_DEPTH: Final = 64  # nested parentheses and "not"s


class ConditionError(ValueError):
    """A condition that cannot be compiled; the message names the token and column."""


class Condition:
    """A compiled condition. ``test(event)`` is the predicate; it never raises."""

    __slots__ = ("source", "test", "unguarded")

    def __init__(self, source: str, unguarded: Predicate) -> None:
        self.source = source
        # The predicate without the safety net (for tests that prove it needs none).
        self.unguarded = unguarded

        def test(event: Event) -> bool:
            try:
                return unguarded(event)
            except Exception:  # a value type no JSON decoder produces; see module doc
                return False

        self.test: Predicate = test

    def __call__(self, event: Event) -> bool:
        return self.test(event)

    def __repr__(self) -> str:
        return f"Condition({self.source!r})"


def compile_condition(source: str) -> Condition:
    """Parse and compile ``source`` once. Raises :class:`ConditionError`."""
    if not isinstance(source, str):
        raise ConditionError(f"a condition must be a string, got {source!r}")
    tokens = _tokenize(source)
    parser = _Parser(source, tokens)
    node = parser.parse()
    return Condition(source, _compile(node, source))


def check_condition(source: str) -> str:
    """``source`` if it compiles (for config validators). Raises :class:`ConditionError`."""
    compile_condition(source)
    return source


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # see _tokenize
    value: Any
    column: int  # 1-based
    text: str


_KEYWORDS: Final = {
    "and": "AND",
    "or": "OR",
    "not": "NOT",
    "in": "IN",
    "exists": "EXISTS",
    "true": "TRUE",
    "false": "FALSE",
    "null": "NULL",
}
_LITERAL_WORDS: Final = ("true", "false", "null")
_WORD: Final = re.compile(r"[A-Za-z_@][A-Za-z0-9_@.\-]*")
_NUMBER: Final = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_OPERATOR: Final = re.compile(r"==|!=|<=|>=|=~|!~|<|>")
_BRACKETS: Final = re.compile(r"(?:\[[^\[\]]+\])+")
_SPACE: Final = re.compile(r"\s+")
_ESCAPES: Final = {'"': '"', "'": "'", "\\": "\\", "n": "\n", "t": "\t", "r": "\r"}
_HINTS: Final = {
    "=": "use == to compare",
    "&": "use and",
    "|": "use or",
    "!": "use not, != or !~",
    "]": "no list or field is open",
}


def _severity_word(word: str) -> severity.Severity | None:
    """An upper-case severity name or alias (``WARNING``, ``WARN``), else None."""
    if word != word.upper():
        return None
    return severity.from_text(word)


def _fail(what: str, column: int, source: str, hint: str = "") -> ConditionError:
    shown = source if len(source) <= 200 else source[:200] + "..."
    return ConditionError(
        f"{what} at column {column} in condition {shown!r}" + (f": {hint}" if hint else "")
    )


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:40] + "..."


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    length = len(source)
    open_lists = 0  # "]" closes a list only inside one (a field's brackets are read whole)
    while pos < length:
        space = _SPACE.match(source, pos)
        if space:
            pos = space.end()
            continue
        char = source[pos]
        column = pos + 1
        if char in "()," or (char == "]" and open_lists):
            kind = {"(": "LPAREN", ")": "RPAREN", ",": "COMMA", "]": "RBRACKET"}[char]
            tokens.append(_Token(kind, char, column, char))
            open_lists -= char == "]"
            pos += 1
        elif char in "\"'":
            value, pos = _read_string(source, pos)
            tokens.append(_Token("STRING", value, column, source[column - 1 : pos]))
        elif char == "/":
            value, pos = _read_regex(source, pos)
            tokens.append(_Token("REGEX", value, column, source[column - 1 : pos]))
        elif char == "[":
            bracket = _BRACKETS.match(source, pos)
            if bracket is None or _starts_list(bracket.group(0)):
                tokens.append(_Token("LBRACKET", "[", column, "["))
                open_lists += 1
                pos += 1
            else:
                text = bracket.group(0)
                tokens.append(_Token("FIELD", parse_path(text), column, text))
                pos = bracket.end()
        elif match := _OPERATOR.match(source, pos):
            tokens.append(_Token("OP", match.group(0), column, match.group(0)))
            pos = match.end()
        elif match := _NUMBER.match(source, pos):
            text = match.group(0)
            tokens.append(_Token("NUMBER", _number_literal(text, column, source), column, text))
            pos = match.end()
        elif match := _WORD.match(source, pos):
            word = match.group(0)
            level = _severity_word(word)
            if word in _KEYWORDS:
                tokens.append(_Token(_KEYWORDS[word], word, column, word))
            elif level is not None:
                tokens.append(_Token("SEVERITY", level, column, word))
            else:
                tokens.append(_Token("FIELD", (word,), column, word))
            pos = match.end()
        else:
            raise _fail(f"unexpected {char!r}", column, source, _HINTS.get(char, ""))
    tokens.append(_Token("END", None, length + 1, "end of condition"))
    return tokens


def _starts_list(text: str) -> bool:
    """``[...]`` at this point: a list when its first brackets hold literals."""
    first = text[1 : text.index("]")].strip()
    if not first or first[0] in "\"'0123456789-+." or "," in first:
        return True
    return first in _LITERAL_WORDS or _severity_word(first) is not None


def _read_string(source: str, start: int) -> tuple[str, int]:
    quote = source[start]
    out: list[str] = []
    pos = start + 1
    while pos < len(source):
        char = source[pos]
        if char == quote:
            return "".join(out), pos + 1
        if char == "\\" and pos + 1 < len(source):
            following = source[pos + 1]
            out.append(_ESCAPES.get(following, "\\" + following))
            pos += 2
            continue
        out.append(char)
        pos += 1
    raise _fail("unterminated string starting", start + 1, source)


def _read_regex(source: str, start: int) -> tuple[str, int]:
    out: list[str] = []
    pos = start + 1
    while pos < len(source):
        char = source[pos]
        if char == "/":
            return "".join(out), pos + 1
        if char == "\\" and pos + 1 < len(source):
            following = source[pos + 1]
            out.append("/" if following == "/" else "\\" + following)
            pos += 2
            continue
        out.append(char)
        pos += 1
    raise _fail("unterminated regex starting", start + 1, source)


def _number_literal(text: str, column: int, source: str) -> int | float:
    try:
        if any(c in text for c in ".eE"):
            value = float(text)
        else:
            return int(text)
    except ValueError:
        raise _fail(f"number {_short(text)!r} too long", column, source) from None
    if value != value or value in (float("inf"), float("-inf")):
        raise _fail(f"number {_short(text)!r} out of range", column, source)
    return value


# --------------------------------------------------------------------------- syntax tree


@dataclass(frozen=True, slots=True)
class _Field:
    path: Path
    text: str
    column: int


@dataclass(frozen=True, slots=True)
class _Literal:
    kind: str  # str, num, bool, null, sev, list
    value: Any
    text: str
    column: int


_Operand = _Field | _Literal


@dataclass(frozen=True, slots=True)
class _Compare:
    op: str
    left: _Operand
    right: _Operand | re.Pattern[str]
    column: int


@dataclass(frozen=True, slots=True)
class _Truthy:
    operand: _Operand


@dataclass(frozen=True, slots=True)
class _Exists:
    field: _Field


@dataclass(frozen=True, slots=True)
class _Not:
    item: _Node


@dataclass(frozen=True, slots=True)
class _All:
    items: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Any:
    items: tuple[_Node, ...]


_Node = _Compare | _Truthy | _Exists | _Not | _All | _Any


class _Parser:
    def __init__(self, source: str, tokens: list[_Token]) -> None:
        self.source = source
        self.tokens = tokens
        self.index = 0
        self.depth = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        if token.kind != "END":
            self.index += 1
        return token

    def unexpected(self, token: _Token | None = None, expected: str = "") -> ConditionError:
        token = token or self.token
        shown = token.text if token.kind == "END" else repr(_short(token.text))
        hint = f"expected {expected}" if expected else ""
        return _fail(f"unexpected {shown}", token.column, self.source, hint)

    def parse(self) -> _Node:
        if self.token.kind == "END":
            raise _fail("empty condition", 1, self.source)
        node = self.parse_or()
        if self.token.kind != "END":
            raise self.unexpected(expected="and, or or the end")
        return node

    def parse_or(self) -> _Node:
        items = [self.parse_and()]
        while self.token.kind == "OR":
            self.advance()
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else _Any(tuple(items))

    def parse_and(self) -> _Node:
        items = [self.parse_not()]
        while self.token.kind == "AND":
            self.advance()
            items.append(self.parse_not())
        return items[0] if len(items) == 1 else _All(tuple(items))

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _fail(f"nested more than {MAX_DEPTH} deep", self.token.column, self.source)

    def parse_not(self) -> _Node:
        if self.token.kind == "NOT":
            self.enter()
            self.advance()
            node = _Not(self.parse_not())
            self.depth -= 1
            return node
        return self.parse_primary()

    def parse_primary(self) -> _Node:
        token = self.token
        if token.kind == "LPAREN":
            self.enter()
            self.advance()
            node = self.parse_or()
            if self.token.kind != "RPAREN":
                raise self.unexpected(expected="')'")
            self.advance()
            self.depth -= 1
            return node
        if token.kind == "EXISTS":
            self.advance()
            field = self.token
            if field.kind != "FIELD":
                raise self.unexpected(expected="a field after exists")
            self.advance()
            return _Exists(_Field(field.value, field.text, field.column))
        left = self.parse_operand()
        op_token = self.token
        if op_token.kind == "OP":
            op = op_token.value
        elif op_token.kind == "IN":
            op = "in"
        elif op_token.kind == "NOT" and self.tokens[self.index + 1].kind == "IN":
            self.advance()
            op = "not in"
        else:
            return _Truthy(left)
        self.advance()
        if op in ("=~", "!~"):
            return _Compare(op, left, self.parse_regex(), op_token.column)
        return _Compare(op, left, self.parse_operand(), op_token.column)

    def parse_regex(self) -> re.Pattern[str]:
        token = self.advance()
        if token.kind not in ("REGEX", "STRING"):
            raise self.unexpected(token, "a /regex/ or a string")
        try:
            return re.compile(token.value)
        except (re.error, OverflowError, RecursionError, ValueError) as error:
            raise _fail(
                f"bad regex {_short(token.text)}", token.column, self.source, str(error)
            ) from None

    def parse_operand(self) -> _Operand:
        token = self.token
        if token.kind == "FIELD":
            self.advance()
            return _Field(token.value, token.text, token.column)
        if token.kind == "LBRACKET":
            return self.parse_list()
        if token.kind == "REGEX":
            raise _fail(
                f"a regex ({_short(token.text)}) only follows =~ or !~", token.column, self.source
            )
        return self.parse_literal("a field or a value")

    def parse_literal(self, expected: str) -> _Literal:
        token = self.advance()
        kind = {
            "STRING": "str",
            "NUMBER": "num",
            "TRUE": "bool",
            "FALSE": "bool",
            "NULL": "null",
            "SEVERITY": "sev",
        }.get(token.kind)
        if kind is None:
            raise self.unexpected(token, expected)
        value = {"TRUE": True, "FALSE": False, "NULL": None}.get(token.kind, token.value)
        return _Literal(kind, value, token.text, token.column)

    def parse_list(self) -> _Literal:
        start = self.advance()
        items: list[_Literal] = []
        if self.token.kind == "RBRACKET":
            self.advance()
            return _Literal("list", (), "[]", start.column)
        while True:
            items.append(self.parse_literal("a literal (lists hold values, not fields)"))
            token = self.advance()
            if token.kind == "RBRACKET":
                text = self.source[start.column - 1 : token.column]
                return _Literal("list", tuple(items), text, start.column)
            if token.kind != "COMMA":
                raise self.unexpected(token, "',' or ']'")


# --------------------------------------------------------------------------- values


def _number(value: Any) -> int | float | None:
    """A number, or a string holding one (``"503"``), as a number; else None."""
    kind = type(value)
    if kind is int or kind is float:
        return value  # type: ignore[no-any-return]
    if kind is str and len(value) < 64:
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None  # not "nan", "inf"
    return None


_RANK_CACHE_MAX: Final = 1024
_ranks: dict[str, int | None] = {}


def _rank(value: Any) -> int | None:
    """The value's place on the severity scale, or None."""
    if type(value) is str:
        rank = _ranks.get(value, -1)
        if rank != -1:
            return rank
        found = severity.from_text(value)
        if len(_ranks) >= _RANK_CACHE_MAX:
            _ranks.clear()
        rank = _ranks[value] = None if found is None else int(found)
        return rank
    if type(value) is int:
        return int(severity.from_python(value))
    return None


def _same(a: Any, b: Any) -> bool:
    """``==`` between two event values: like with like, booleans apart from numbers."""
    if a is MISSING:
        a = None
    if b is MISSING:
        b = None
    ta, tb = type(a), type(b)
    if ta is bool or tb is bool:
        return a is b
    if (ta is int or ta is float) and (tb is int or tb is float):
        return bool(a == b)
    if ta is tb and ta in (str, type(None), list, dict):
        return bool(a == b)
    return False


def _contains(container: Any, item: Any) -> bool:
    kind = type(container)
    if kind is list:
        if type(item) is str:  # a string equals no other JSON value: plain `in` is exact
            return item in container
        return any(_same(item, element) for element in container)
    if kind is str or kind is dict:
        return type(item) is str and item in container
    return False


def _searcher(pattern: re.Pattern[str]) -> Match:
    search = pattern.search

    def matches(value: Any) -> bool:
        kind = type(value)
        if kind is str:
            return search(value) is not None
        if kind is int or kind is float:
            return search(str(value)) is not None
        return False

    return matches


_ORDER: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_MIRROR: Final = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


# --------------------------------------------------------------------------- compiling


def _compile(node: _Node, source: str) -> Predicate:
    if isinstance(node, _All):
        return _all_of([_compile(item, source) for item in node.items])
    if isinstance(node, _Any):
        return _any_of([_compile(item, source) for item in node.items])
    if isinstance(node, _Not):
        inner = _compile(node.item, source)
        return lambda event: not inner(event)
    if isinstance(node, _Exists):
        path = node.field.path
        if len(path) == 1 and type(path[0]) is str:
            name = path[0]
            return lambda event: name in event
        get = getter(path)
        return lambda event: get(event) is not MISSING
    if isinstance(node, _Truthy):
        return _truthy(node.operand)
    return _compare(node, source)


def _all_of(predicates: list[Predicate]) -> Predicate:
    if len(predicates) == 2:
        first, second = predicates
        return lambda event: first(event) and second(event)

    def all_of(event: Event) -> bool:
        for predicate in predicates:  # noqa: SIM110 - faster than all() over a generator
            if not predicate(event):
                return False
        return True

    return all_of


def _any_of(predicates: list[Predicate]) -> Predicate:
    if len(predicates) == 2:
        first, second = predicates
        return lambda event: first(event) or second(event)

    def any_of(event: Event) -> bool:
        for predicate in predicates:  # noqa: SIM110 - faster than any() over a generator
            if predicate(event):
                return True
        return False

    return any_of


def _operand_getter(operand: _Operand) -> Get:
    if isinstance(operand, _Field):
        return getter(operand.path)
    value = _literal_value(operand)
    return lambda event: value


def _literal_value(literal: _Literal) -> Any:
    """The literal as an event value would be (a severity as its name)."""
    if literal.kind == "sev":
        return literal.value.name
    if literal.kind == "list":
        return [_literal_value(item) for item in literal.value]
    return literal.value


def _truthy(operand: _Operand) -> Predicate:
    if isinstance(operand, _Literal):
        constant = bool(_literal_value(operand))
        return lambda event: constant
    get = _operand_getter(operand)
    return lambda event: bool(get(event))


def _on_left(get: Get, match: Match) -> Predicate:
    return lambda event: match(get(event))


def _compare(node: _Compare, source: str) -> Predicate:
    op, left, right = node.op, node.left, node.right
    if isinstance(right, re.Pattern):
        matches = _searcher(right)
        get = _operand_getter(left)
        if op == "=~":
            return _on_left(get, matches)
        return lambda event: not matches(get(event))
    if op in ("in", "not in"):
        found = _membership(left, right, source, node.column)
        if op == "in":
            return found
        return lambda event: not found(event)
    # Put a field on the left when there is one (mirroring the operator).
    if isinstance(left, _Literal) and isinstance(right, _Field):
        left, right, op = right, left, _MIRROR[op]
    if op in ("==", "!="):
        equal = _equality(left, right)
        if op == "==":
            return equal
        return lambda event: not equal(event)
    return _ordering(op, left, right, source)


def _equality(left: _Operand, right: _Operand) -> Predicate:
    if isinstance(right, _Field):
        get_left, get_right = _operand_getter(left), _operand_getter(right)
        return lambda event: _same(get_left(event), get_right(event))
    if (
        isinstance(left, _Field)
        and right.kind == "str"
        and len(left.path) == 1
        and type(left.path[0]) is str
    ):
        # The commonest shape (host == "web-1"): one dict look-up and a compare.
        name, text = left.path[0], right.value
        return lambda event: event.get(name) == text
    return _on_left(_operand_getter(left), _equals_literal(right))


def _equals_literal(literal: _Literal) -> Match:
    kind, value = literal.kind, literal.value
    if kind == "str":
        return lambda v: type(v) is str and v == value
    if kind == "num":

        def equals_number(v: Any) -> bool:
            number = _number(v)
            return number is not None and number == value

        return equals_number
    if kind == "bool":
        return lambda v: v is value
    if kind == "null":
        return lambda v: v is None or v is MISSING
    if kind == "sev":
        rank = int(value)
        return lambda v: _rank(v) == rank
    items = [_equals_literal(item) for item in value]  # a list

    def equals_list(v: Any) -> bool:
        return (
            type(v) is list
            and len(v) == len(items)
            and all(match(element) for match, element in zip(items, v, strict=True))
        )

    return equals_list


def _membership(left: _Operand, right: _Operand, source: str, column: int) -> Predicate:
    get = _operand_getter(left)
    if isinstance(right, _Field):
        get_container = getter(right.path)
        return lambda event: _contains(get_container(event), get(event))
    if right.kind == "str":
        text = right.value
        return _on_left(get, lambda v: type(v) is str and v in text)
    if right.kind != "list":
        raise _fail(
            f"'in' needs a list, a string or a field on its right, not {_short(right.text)}",
            column,
            source,
        )
    items: tuple[_Literal, ...] = right.value
    if items and all(item.kind == "str" for item in items):
        texts = frozenset(item.value for item in items)
        return _on_left(get, lambda v: type(v) is str and v in texts)
    if items and all(item.kind == "sev" for item in items):
        ranks = frozenset(int(item.value) for item in items)
        return _on_left(get, lambda v: _rank(v) in ranks)
    matches = [_equals_literal(item) for item in items]
    return _on_left(get, lambda v: any(match(v) for match in matches))


def _ordering(op: str, left: _Operand, right: _Operand, source: str) -> Predicate:
    order = _ORDER[op]
    for side in (left, right):
        if isinstance(side, _Literal) and side.kind in ("bool", "null", "list"):
            raise _fail(
                f"{op!r} orders numbers, strings and severities, not {_short(side.text)}",
                side.column,
                source,
            )
    if _on_severity_scale(left, right, source):
        get_right = _rank_getter(right, source)
        if isinstance(left, _Field) and _is_top_level(left) and isinstance(right, _Literal):
            # The commonest shape (level >= WARNING): one look-up in the rank cache.
            name, bound = str(left.path[0]), get_right({})
            ranks = _ranks

            def top_by_severity(event: Event) -> bool:
                value = event.get(name)
                rank = ranks.get(value, -1) if type(value) is str else -1
                if rank == -1:
                    rank = _rank(value)
                return rank is not None and order(rank, bound)

            return top_by_severity
        get_left = _rank_getter(left, source)

        def by_severity(event: Event) -> bool:
            a, b = get_left(event), get_right(event)
            return a is not None and b is not None and order(a, b)

        return by_severity
    get_left = _operand_getter(left)
    if isinstance(right, _Literal) and right.kind == "num":
        bound = right.value

        def by_number(event: Event) -> bool:
            number = _number(get_left(event))
            return number is not None and order(number, bound)

        return by_number
    if isinstance(right, _Literal):  # a string
        text = right.value
        return lambda event: type(value := get_left(event)) is str and order(value, text)
    get_right = _operand_getter(right)

    def by_value(event: Event) -> bool:
        a, b = get_left(event), get_right(event)
        ta, tb = type(a), type(b)
        if (ta is int or ta is float) and (tb is int or tb is float):
            return bool(order(a, b))
        return ta is str and tb is str and bool(order(a, b))

    return by_value


def _is_top_level(operand: _Operand) -> bool:
    return isinstance(operand, _Field) and len(operand.path) == 1 and type(operand.path[0]) is str


def _is_level(operand: _Operand) -> bool:
    return isinstance(operand, _Field) and operand.path == ("level",)


def _on_severity_scale(left: _Operand, right: _Operand, source: str) -> bool:
    for side in (left, right):
        if isinstance(side, _Literal) and side.kind == "sev":
            return True
    for this, other in ((left, right), (right, left)):
        if not _is_level(this):
            continue
        if isinstance(other, _Literal) and other.kind == "str":
            return True
        named = severity.from_text(other.text) if isinstance(other, _Field) else None
        if named is not None:
            raise _fail(
                f"{other.text!r} is read as a field name; write {named.name} (upper case) "
                "for the severity",
                other.column,
                source,
            )
    return False


def _rank_getter(operand: _Operand, source: str) -> Callable[[Event], int | None]:
    if isinstance(operand, _Field):
        get = getter(operand.path)
        return lambda event: _rank(get(event))
    rank = int(operand.value) if operand.kind == "sev" else _rank(operand.value)
    if rank is None:
        raise _fail(
            f"{_short(operand.text)} is not a severity (use one of {', '.join(severity.NAMES)})",
            operand.column,
            source,
        )
    return lambda event: rank
