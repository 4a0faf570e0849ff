"""The ``redact`` filter: masks passwords, tokens, keys and credentials in events.

::

    - type: redact
      fields: [message]          # string fields to scan ([a][b] paths work)
      rules: [passwords, tokens, authorization, url_credentials, private_keys, cloud_keys]
      patterns: []               # your own regexes (see below)
      replacement: "***"
      by_field_name: true        # also mask fields named like secrets ("password": "x")

Rules (all on by default), with the shapes they catch:

``passwords``
    ``password=x``, ``ADMIN_PASSWORD=x``, ``"password": "x"``, ``'admin_pass': u'x'``,
    ``ansible_ssh_pass=x``, ``db_pwd: x``, ``--os-password x``, ``--pass=x``;
    ``mysql -uroot -px``; ``rabbitmqctl change_password guest x`` / ``add_user u x``;
    ``iniset FILE SECTION admin_password x`` (devstack; also ``crudini --set``);
    ``IDENTIFIED BY 'x'`` and ``PASSWORD 'x'`` (SQL); ``sshpass -p x``; ``curl -u user:x``.
``tokens``
    ``token=x``, ``X-Auth-Token: x``, ``"access_token": "x"``, ``secret=x``,
    ``api_key=x``, ``aws_secret_access_key = x``, ``client_secret``, ``--os-token x``;
    JWTs (``eyJ...``); Keystone PKI tokens (``MII...``, 200+ characters) and token
    ids logged by the auth middleware (``Storing <hex> token``, ``cached token <hex>``).
``authorization``
    ``Authorization:`` and ``Proxy-Authorization:`` headers (``Basic``, ``Bearer``,
    ``Token``, ...) in any quoting, and ``Bearer <token>`` anywhere.
``url_credentials``
    the password in ``scheme://user:password@host``.
``private_keys``
    the body of ``-----BEGIN ... PRIVATE KEY-----`` blocks (to ``-----END``, or to
    the end of the text when it was cut).
``cloud_keys``
    AWS access key ids (``AKIA...``, ``ASIA...``), GitHub (``ghp_...``,
    ``github_pat_...``), Slack (``xoxb-...``) and Google (``AIza...``) keys.

Only the secret itself is replaced (``password=***``, ``Authorization: Basic
***``), so the line still says what it was about. A key's name is the last
part of a dotted, dashed or underscored name: ``admin_password`` and
``keystone_authtoken.admin_token`` are secrets, ``password_length`` and
``token_cache_time`` are not. Values that hide nothing are left alone and not
counted: ``null``, ``None``, ``true``/``false``, and ones already masked
(only ``*``, or the replacement text), so running the filter twice counts
each secret once.

``patterns`` adds regexes (Python syntax, validated at build time): the group
named ``secret`` is replaced when the pattern has one, else the whole match.
They run on every value of ``fields``; the built-in rules first look for
their trigger words (``pass``, ``token``, ``://``, ``private key``...) and run
only the rules whose words a text holds (most lines hold none). The texts of
a batch (top-level ``fields``) are screened as one: joined and scanned in
one case-insensitive Hyperscan pass (where the ``hyperscan`` package is
installed and the batch is ASCII; it asks for the shapes around the words
rather than the words: a URL's credentials rather than every ``://``,
``key=`` or ``--api-key x`` rather than every ``key``, so nine in ten texts
with a trigger word cost nothing), or lowered once and one pass of the
pyahocorasick automaton; a text alone (nested ``fields``, user
``patterns``) gets its own automaton pass.

``by_field_name`` masks the string value of any field, at any depth of the
event's objects, whose name is a secret by the rules above (``password``,
``api_key``, ``X-Auth-Token``...).

Every secret masked is counted in ``logstream_redactions_total`` for the filter.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable
from itertools import accumulate, chain, compress, repeat
from typing import Any, Final, Literal

import ahocorasick
from pydantic import Field, field_validator

from logstream.event import Batch
from logstream.fields import Get, Set, getter, parse_path, setter
from logstream.parsers.common import compiled
from logstream.units import BuildContext, Filter, FilterConfig

RuleName = Literal[
    "passwords", "tokens", "authorization", "url_credentials", "private_keys", "cloud_keys"
]
ALL_RULES: Final[tuple[RuleName, ...]] = (
    "private_keys",
    "url_credentials",
    "authorization",
    "passwords",
    "tokens",
    "cloud_keys",
)

# --------------------------------------------------------------------------- the rules

# Names of secrets. The keyword must end the name ("password_length" is not a
# secret); the words that cannot be part of another word may be glued to a
# prefix ("dbpassword", "authtoken"), "pass" and "pwd" may not ("bypass", "PWD").
# In text, a match starts at the keyword (a literal the regex engine finds
# fast) and the prefix is not read: _starts_name checks what comes before it.
_PW_WORDS: Final = r"pass(?:word|wd|phrase)?|pwd"
_CREDENTIAL_WORDS: Final = (
    r"token|secret(?:[_-]?key)?|api[_-]?key|apikey|access[_-]?key|private[_-]?key"
    r"|signing[_-]?key|encryption[_-]?key|credentials?"
)
_GLUED: Final = ("password", "passwd", "passphrase", "token", "secret")
_SECRET_NAME: Final = re.compile(
    rf"(?:[a-z0-9]+[_.-])*[a-z0-9]*(?P<kw>{_PW_WORDS}|{_CREDENTIAL_WORDS})"
)
# An optional quote (also a JSON-escaped one: \") around a key or a value.
_Q: Final = r"(?:\\?[\"'])"
# A value: quoted (up to the same quote, escapes skipped), or a bare word.
_VALUE: Final = (
    r"(?:u?(?P<q>\\?[\"'])(?P<secret>(?:\\.|[^\\\n]){1,1024}?)(?P=q)"
    r"|(?P<bare>[^\s\"',;&(){}\[\]<>\\][^\s\"',;&)}\]\\]*))"
)
_QUOTED: Final = r"(?P<q>[\"'])(?P<secret>[^\n]{1,1024}?)(?P=q)"
_WORD: Final = r"(?:" + _QUOTED + r"|(?P<bare>[^\s\"']+))"


# Words that follow "password is" in prose and are no password.
_PROSE_NOT: Final = (
    "not|incorrect|invalid|wrong|required|empty|missing|too|expired|correct|valid|the|a|an"
    "|being|changed|ok|weak|strong|short|long|blank|unset|null|none|needed|mandatory|different"
    "|same|stored|saved|updated|reset|generated|ignored|used|given|provided|known|unknown"
    "|present|absent|disabled|enabled|locked|in|at|for|now|still|also|only|supplied|accepted"
    "|rejected|protected|set|about|going|due|older|shorter|longer|from|hidden|masked|encrypted"
    "|hashed|sent|stored|configured|defined|specified|of|to|on|off|case|change|changing"
)
_PROSE: Final = (
    rf"(?P<kw>{_PW_WORDS})(?:[ \t]+for[ \t]+(?:user[ \t]+|account[ \t]+)?[^\s:]{{1,64}})?"
    r"(?:[ \t]+(?:is|was|set[ \t]+to|changed[ \t]+to|reset[ \t]+to)[ \t]*:?|:)[ \t]+"
    rf"(?!(?:{_PROSE_NOT})\b)"
    r"(?:(?P<q>\\?[\"'])(?P<secret>[^\n\\\"']{1,1024}?)(?P=q)|(?P<bare>[^\s\"',;\\]+))"
)


def _key_value(words: str) -> str:
    """``name = value`` in the forms logs use: ``k=v``, ``k: v``, ``"k": "v"``, ``k => v``."""
    return rf"(?P<kw>{words}){_Q}?[ \t]*(?:=>|[:=])[ \t]*{_VALUE}"


def _flag(words: str) -> str:
    """``--name value`` on a command line (``--name=value`` is a key-value)."""
    return rf"--(?<![\w-]--)(?:[a-z0-9]+-)*(?P<kw>{words})[ \t]+(?!-)" + _WORD


# The rules, in the order they run, in groups that share their triggers: a
# group's regexes run only on text whose lower-cased form holds one of the
# group's triggers. Each entry is (rule name, regex, on_lowered): regexes
# written in lower case run on the lower-cased text (much faster than
# re.IGNORECASE), the others on the text itself; both mask the original text.
_Spec = tuple[RuleName, str, bool]
_LOWER: Final = True
_GROUPS: Final[tuple[tuple[tuple[str, ...], tuple[_Spec, ...]], ...]] = (
    (
        ("private key",),
        (
            (
                "private_keys",
                r"(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?P<secret>.*?)"
                r"(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
                False,
            ),
        ),
    ),
    # The password runs to the last "@" before the host (an unencoded "@" in it).
    (("://",), (("url_credentials", r"://[^\s:/@\"'<>]*:(?P<secret>[^\s/\"'<>]+)@", False),)),
    (
        ("authoriz", "bearer"),
        (
            (
                "authorization",
                rf"authorization{_Q}?[ \t]*[:=][ \t]*{_Q}?(?!digest\b)"
                r"(?:(?:basic|bearer|token|negotiate|ntlm|apikey|key|hmac|aws4-hmac-sha256)[ \t]+)?"
                r"(?P<secret>[^\s\"',;\\]+)",
                _LOWER,
            ),
            # A token has a digit somewhere; "bearer authentication" is prose.
            (
                "authorization",
                r"bearer[ \t]+(?=[a-z0-9\-._~+/]*[0-9])(?P<secret>[a-z0-9\-._~+/]{8,}=*)",
                _LOWER,
            ),
        ),
    ),
    (
        ("pass", "pwd"),
        (
            ("passwords", _key_value(_PW_WORDS), _LOWER),
            ("passwords", _flag(_PW_WORDS), _LOWER),
            ("passwords", r"password[ \t]+" + _QUOTED, _LOWER),  # SQL: ... PASSWORD 'x'
            # Prose, as scripts and tasks print it: "The postgres password is X",
            # "Generated password for user admin: X", "Password for admin set to X".
            ("passwords", _PROSE, _LOWER),
        ),
    ),
    (("vault_",), (("passwords", _key_value(r"vault_[a-z0-9_]+"), _LOWER),)),
    (
        ("token", "secret", "key", "credential"),
        (
            ("tokens", _key_value(_CREDENTIAL_WORDS), _LOWER),
            ("tokens", _flag(_CREDENTIAL_WORDS), _LOWER),
            # Token ids the Keystone auth middleware logs ("Storing <hex> token").
            ("tokens", r"token[ \t]+(?P<secret>[0-9a-f]{32,64})\b", False),
            ("tokens", r"\b(?P<secret>[0-9a-f]{32,64})[ \t]+token\b", False),
        ),
    ),
    (
        ("iniset", "--set"),
        (
            (
                "passwords",
                r"(?:iniset(?:[ \t]+-sudo)?|crudini[ \t]+--set|openstack-config[ \t]+--set)"
                rf"[ \t]+\S+[ \t]+\S+[ \t]+(?:[a-z0-9]+[_.-])*[a-z0-9]*"
                rf"(?P<kw>{_PW_WORDS}|{_CREDENTIAL_WORDS})[ \t]+{_WORD}",
                _LOWER,
            ),
        ),
    ),
    (
        ("mysql", "mariadb"),
        (
            # The mysql/mariadb commands (not a path ending in mysql), then -pSECRET
            # (not gcc's -pthread) or -p SECRET (taken as the password too: mysql
            # would read it as a database name, but scripts mean a password).
            (
                "passwords",
                r"(?<![\w/.-])(?:mysql(?:admin|dump|check|import|show|sh|pump)?|mariadb(?:-[a-z]+)?)"
                r"[ \t][^\n|;&]*?[ \t]-p(?:[ \t]+(?![-<>|])|(?!thread\b|edantic\b|ipe\b|ie\b|g\b))"
                + _WORD,
                False,
            ),
        ),
    ),
    (("sshpass",), (("passwords", r"sshpass[ \t]+-p[ \t]*" + _WORD, False),)),
    (
        ("rabbitmqctl",),
        (
            (
                "passwords",
                r"rabbitmqctl\b[^\n|;&]*?\b(?:change_password|add_user|authenticate_user)"
                r"[ \t]+\S+[ \t]+" + _WORD,
                False,
            ),
        ),
    ),
    (
        ("curl",),
        (("passwords", r"curl\b[^\n|;&]*?[ \t](?:-u|--user)[ \t]*[^\s:\"']+:" + _WORD, False),),
    ),
    (
        ("identified",),
        (("passwords", r"identified[ \t]+(?:with[ \t]+\S+[ \t]+)?by[ \t]+" + _QUOTED, _LOWER),),
    ),
    (("eyj",), (("tokens", r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*", False),)),
    (("mii",), (("tokens", r"MII[A-Za-z0-9+/=_-]{200,}", False),)),  # Keystone PKI tokens
    (("akia", "asia"), (("cloud_keys", r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b", False),)),
    (
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        (
            ("cloud_keys", r"gh[pousr]_[A-Za-z0-9]{36,}", False),
            ("cloud_keys", r"github_pat_[A-Za-z0-9_]{22,}", False),
        ),
    ),
    (("xox",), (("cloud_keys", r"xox[abposr]-[A-Za-z0-9-]{10,}", False),)),
    (("aiza",), (("cloud_keys", r"AIza[0-9A-Za-z_-]{35}", False),)),
)

# Values that hide nothing (already masked ones are checked apart).
_NOT_SECRETS: Final = frozenset(
    ["null", "None", "none", "nil", "true", "false", "True", "False", "undefined"]
)
# Groups whose regexes can only match text that also holds this (checked with
# `in` after the trigger was found: most URLs carry no credentials).
_NEEDS: Final = {"://": "@"}
_NAME_CACHE_MAX: Final = 4096
_IS_DICT: Final = frozenset((dict,)).__contains__
_IS_LIST: Final = frozenset((list,)).__contains__
# Between the texts of a batch, screened as one: no trigger holds it.
_SEPARATOR: Final = "\x00"
_MAX_DEPTH: Final = 16

Substitute = Callable[[str], str]


# --------------------------------------------------------------------------- config


class RedactFilterConfig(FilterConfig):
    type: Literal["redact"]
    fields: list[str] = Field(
        default_factory=lambda: ["message"], description="String fields to scan for secrets."
    )
    rules: list[RuleName] = Field(
        default_factory=lambda: list(ALL_RULES), description="Built-in rule sets to apply."
    )
    patterns: list[str] = Field(
        default_factory=list,
        description="Extra regexes; the group named 'secret' (else the whole match) is masked.",
    )
    replacement: str = Field(default="***", description="What a secret is replaced with.")
    by_field_name: bool = Field(
        default=True, description="Mask string fields whose name is a secret's (password...)."
    )

    @field_validator("fields")
    @classmethod
    def _valid_fields(cls, value: list[str]) -> list[str]:
        for field in value:
            parse_path(field)
        return value

    @field_validator("patterns")
    @classmethod
    def _valid_patterns(cls, value: list[str]) -> list[str]:
        for index, pattern in enumerate(value):
            _user_pattern(pattern, index)
        return value

    def build(self, name: str, ctx: BuildContext) -> RedactFilter:
        return RedactFilter(name, ctx, self)


def _user_pattern(pattern: str, index: int) -> re.Pattern[str]:
    try:
        compiled = re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as error:
        raise ValueError(f"patterns[{index}] {pattern!r} is not a valid regex: {error}") from None
    if compiled.search("") is not None:
        raise ValueError(f"patterns[{index}] {pattern!r} matches empty text; it would mask nothing")
    return compiled


# --------------------------------------------------------------------------- runtime


class _Counter:
    __slots__ = ("hits",)

    def __init__(self) -> None:
        self.hits = 0


Mask = Callable[[str, str], str]


def _starts_name(text: str, start: int, keyword: str) -> bool:
    """Whether the keyword found at ``start`` may end a secret's name (see _PW_WORDS)."""
    if keyword == "pwd":  # never alone: PWD is the working directory
        return start > 0 and text[start - 1] in "_.-"
    return start == 0 or keyword.startswith(_GLUED) or not text[start - 1].isalnum()


def _masker(
    pattern: re.Pattern[str], on_lowered: bool, replacement: str, counter: _Counter
) -> Mask:
    """``(text, lowered) -> text`` with the ``secret`` group (else the match) of each
    match masked; ``text`` itself when nothing was."""
    group = "secret" if "secret" in pattern.groupindex else 0
    bare = "bare" in pattern.groupindex
    keyword = "kw" in pattern.groupindex
    finditer = pattern.finditer

    def mask(text: str, lowered: str) -> str:
        pieces: list[str] = []
        position = 0
        for match in finditer(lowered if on_lowered else text):
            start, end = match.span(group)
            if start < 0 and bare:
                start, end = match.span("bare")
            if start >= end:  # not taking part, or empty: nothing to mask
                continue
            if keyword and not _starts_name(text, match.start("kw"), match.group("kw")):
                continue
            if not _hides_something(text[start:end], replacement):
                continue
            pieces.append(text[position:start])
            pieces.append(replacement)
            position = end
            counter.hits += 1
        if not pieces:
            return text
        pieces.append(text[position:])
        return "".join(pieces)

    return mask


def _lower(text: str) -> str:
    """``text`` lower-cased with every character at its place (for spans)."""
    lowered = text.lower()
    if len(lowered) != len(text):  # a character whose lower case is longer ("İ")
        return text.translate(_ASCII_LOWER)
    return lowered


_ASCII_LOWER: Final = {code: code + 32 for code in range(ord("A"), ord("Z") + 1)}


class RedactFilter(Filter):
    fails_closed = True  # an error must never let secrets through to the sinks

    def __init__(self, name: str, ctx: BuildContext, config: RedactFilterConfig) -> None:
        super().__init__(name, ctx.registry.unit(name, "filter"))
        self._counter = _Counter()
        replacement = config.replacement
        chosen = set(config.rules)
        # Built-in rules: (triggers, maskers), in _GROUPS order (private keys first).
        groups = []
        for triggers, specs in _GROUPS:
            masks = tuple(
                _masker(re.compile(regex), on_lowered, replacement, self._counter)
                for rule, regex, on_lowered in specs
                if rule in chosen
            )
            if masks:
                groups.append((triggers, masks, _NEEDS.get(triggers[0])))
        self._groups = tuple(groups)
        # Every trigger -> the groups it opens: one pass over the lowered text
        # finds the groups to run (most texts open none).
        self._triggers = ahocorasick.Automaton(ahocorasick.STORE_ANY, ahocorasick.KEY_STRING)
        opens: dict[str, list[int]] = {}
        for index, (triggers, _masks, _needs) in enumerate(self._groups):
            for trigger in triggers:
                opens.setdefault(trigger, []).append(index)
        for trigger, indexes in opens.items():
            self._triggers.add_word(trigger, tuple(indexes))
        self._screen = self._triggers.iter if opens else None
        if opens:
            self._triggers.make_automaton()
        # The batch scan: Hyperscan when installed (else the automaton above).
        self._scan_batch = _hyperscan_scanner(opens) if opens else None
        self._always = tuple(
            _masker(_user_pattern(pattern, index), False, replacement, self._counter)
            for index, pattern in enumerate(config.patterns)
        )
        self._fields: tuple[tuple[Get, Set], ...] = tuple(
            (getter(parse_path(field)), setter(parse_path(field))) for field in config.fields
        )
        # Top-level fields: read for the whole batch at once (dict.get in C).
        self._top_fields: tuple[str, ...] | None = (
            tuple(str(parse_path(field)[0]) for field in config.fields)
            if all(len(parse_path(field)) == 1 for field in config.fields)
            else None
        )
        self._replacement = replacement
        # Keys seen in events, and those of them that name a secret.
        self._known: set[str] = set()
        self._secret_names: set[str] = set()
        self._by_field_name = config.by_field_name
        # The objects inside a batch's events, gathered in C where the module is built.
        fast = compiled("_redact_fast", "logstream")
        self._nested_objects: Callable[[Batch], list[dict[str, Any]] | None] | None = (
            None if fast is None else fast.nested_objects
        )

    def redact_text(self, text: str) -> str:
        """``text`` with every secret the rules find masked (counted)."""
        lowered = _lower(text)
        screen = self._screen
        if screen is not None:
            found: set[int] = set()
            for _end, indexes in screen(lowered):
                found.update(indexes)
            if found:
                text, lowered = self._run_groups(text, lowered, found)
        for mask in self._always:
            text = mask(text, lowered)
        return text

    def _run_groups(self, text: str, lowered: str, found: set[int]) -> tuple[str, str]:
        """The groups whose triggers the text holds, in _GROUPS order (private keys first)."""
        groups = self._groups
        for index in sorted(found):
            _triggers, masks, needs = groups[index]
            if needs is not None and needs not in lowered:
                continue
            for mask in masks:
                masked = mask(text, lowered)
                if masked is not text:
                    text, lowered = masked, _lower(masked)
        return text, lowered

    def process(self, batch: Batch) -> Batch:
        before = self._counter.hits
        top = self._top_fields
        if top is not None and self._screen is not None and not self._always:
            for name in top:
                self._redact_field(batch, name)
        else:
            fields, redact = self._fields, self.redact_text
            for event in batch:
                for get, set_field in fields:
                    value = get(event)
                    if type(value) is str:
                        masked = redact(value)
                        if masked is not value and masked != value:
                            set_field(event, masked)
        if self._by_field_name:
            self._mask_names(batch)
        self.metrics.redactions += self._counter.hits - before
        return batch

    def _redact_field(self, batch: Batch, name: str) -> None:
        """Redact the top-level field ``name`` of every event of the batch.

        The texts are screened as one (joined by a separator no trigger
        holds; one case-insensitive Hyperscan pass, or lowered once and one
        Aho-Corasick pass), so the
        events whose text holds no trigger -- most -- cost no Python code of
        their own; the others go through the rules as :meth:`redact_text`
        runs them.
        """
        values: list[Any] = list(map(dict.get, batch, repeat(name)))
        kinds = set(map(type, values))
        if str not in kinds:
            return
        # Missing or not text: screened as empty text.
        texts: list[str] = (
            values if len(kinds) == 1 else [v if type(v) is str else "" for v in values]
        )
        joined = _SEPARATOR.join(texts)
        screen, scan_batch = self._screen, self._scan_batch
        lowered: str | None = None
        if scan_batch is not None and joined.isascii():
            # Hyperscan matches case-insensitively: the batch is not lowered
            # (only the texts with a hit are, below).
            hits = scan_batch(joined)
            last = 1  # Hyperscan's end offsets are past the trigger's last character
        else:
            lowered = joined.lower()
            if len(lowered) != len(joined) or screen is None:
                # A character whose lower case is longer: each text on its own.
                for event, text in zip(batch, texts, strict=True):
                    if text:
                        masked = self.redact_text(text)
                        if masked is not text and masked != text:
                            event[name] = masked
                return
            hits = list(screen(lowered))
            last = 0  # the automaton's are at it
        if not hits:
            return
        # Whose a trigger is: the text starting last before it.
        starts = list(accumulate(map(len, texts), _next_start, initial=0))
        found: dict[int, set[int]] = {}
        for end, indexes in hits:
            at = bisect_right(starts, end - last) - 1
            hit = found.get(at)
            if hit is None:
                found[at] = set(indexes)
            else:
                hit.update(indexes)
        for at, groups in found.items():
            text = texts[at]
            low = text.lower() if lowered is None else lowered[starts[at] : starts[at + 1] - 1]
            masked, _ = self._run_groups(text, low, groups)
            if masked is not text and masked != text:
                batch[at][name] = masked

    def _mask_names(self, batch: Batch) -> None:
        """Mask secret-named fields (``by_field_name``) in every event of the batch.

        The common batch -- no secret-named key at the top, no object inside
        any event, lists of strings only (``tags``) -- is checked by set
        operations over the whole batch, in C; only events that have such a
        key and objects inside events are walked by :meth:`_walk`.
        """
        known = self._known
        # The batch's keys as one small set (one pass in C): checked against the
        # known and the secret names at once.
        keys = set().union(*batch)
        if not known.issuperset(keys):
            # New names: each event's classified, then masked at once (the cache
            # of names may be cleared on the way).
            for event in batch:
                if not known.issuperset(event):
                    for key in event.keys() - known:
                        self._classify(key)
                self._mask_keys(event)
        elif not self._secret_names.isdisjoint(keys):
            for event in batch:
                self._mask_keys(event)
        if self._nested_objects is not None:  # the same steps, compiled
            for node in self._nested_objects(batch) or ():
                self._walk(node, 1)
            return
        types = list(map(type, chain.from_iterable(map(dict.values, batch))))
        kinds = set(types)
        if dict not in kinds and list not in kinds:
            return
        if dict not in kinds and self._only_plain_tags(batch, types):
            return
        values = list(chain.from_iterable(map(dict.values, batch)))  # in the order of types
        nested = list(compress(values, map(_IS_DICT, types))) if dict in kinds else []
        if list in kinds:
            items = list(chain.from_iterable(compress(values, map(_IS_LIST, types))))
            item_types = list(map(type, items))
            if dict in item_types:
                nested += compress(items, map(_IS_DICT, item_types))
        for node in nested:
            self._walk(node, 1)

    @staticmethod
    def _only_plain_tags(batch: Batch, types: list[type]) -> bool:
        """Whether the batch's only lists are ``tags`` values holding no object.

        ``types`` are the types of every value of the batch's events. The
        common list, ``tags``, is read by its name; when the batch holds as
        many lists as ``tags`` values that are lists, those are all of them.
        """
        tags: list[Any] = list(map(dict.get, batch, repeat("tags")))
        tag_types = list(map(type, tags))
        if tag_types.count(list) != types.count(list):
            return False
        items = chain.from_iterable(compress(tags, map(_IS_LIST, tag_types)))
        item_kinds = set(map(type, items))
        return dict not in item_kinds

    def _mask_keys(self, node: dict[str, Any]) -> None:
        for key in self._secret_names.intersection(node):
            value = node[key]
            if type(value) is str and _hides_something(value, self._replacement):
                node[key] = self._replacement
                self._counter.hits += 1

    def _walk(self, node: dict[str, Any], depth: int) -> None:
        """Mask string values of secret-named keys in ``node`` and the objects inside it.

        Set operations in C do the per-key work: the keys not seen before are
        classified once, the secret-named ones are found by intersection, and
        the values are looked into only when one of them is an object or a list.
        """
        known = self._known
        if not known.issuperset(node):
            for key in node.keys() - known:
                self._classify(key)
        self._mask_keys(node)
        if depth >= _MAX_DEPTH:
            return
        kinds = set(map(type, node.values()))
        if dict in kinds or list in kinds:
            for value in node.values():
                kind = type(value)
                if kind is dict:
                    self._walk(value, depth + 1)
                elif kind is list:
                    for item in value:
                        if type(item) is dict:
                            self._walk(item, depth + 1)

    def _classify(self, key: str) -> None:
        """Remember whether ``key`` names a secret (at most _NAME_CACHE_MAX names)."""
        if len(self._known) >= _NAME_CACHE_MAX:
            self._known.clear()
            self._secret_names.clear()
        self._known.add(key)
        if self._is_secret_name(key):
            self._secret_names.add(key)

    def _is_secret_name(self, key: object) -> bool:
        name = key.lower() if isinstance(key, str) else ""
        match = _SECRET_NAME.fullmatch(name)
        return match is not None and _starts_name(name, match.start("kw"), match.group("kw"))


# Where Hyperscan can find a rule's shape as cheaply as its trigger: a URL
# with credentials rather than every "://", "key=" or "--api-key x" rather than
# every "key" (most texts with a trigger word hold no secret: in the corpus,
# one in ten). Each expression is written from the regexes of the trigger's
# group (_GROUPS) and matches wherever one of them can (a superset of their
# start, in any case: the patterns are lower case, matched caselessly; its \s
# is ASCII only, and only ASCII batches are scanned); the regexes still decide
# what is masked.
_SEP = r"(?:\\?[\"'])?[ \t]*[:=]"  # _key_value after the name: optional quote, then = : =>


def _named(word: str) -> str:
    """``word`` ending a secret's name in a key-value or a ``--flag value``."""
    return rf"{word}{_SEP}|--[a-z0-9_-]*{word}[ \t]"


_PW_SHAPE: Final = (
    _named(r"pass(?:word|wd|phrase)?")
    + r"|password[ \t]+[\"']"  # SQL: PASSWORD 'x'
    # _PROSE: "password is x", "password for user admin: x" (":" is _SEP's)
    + r"|pass(?:word|wd|phrase)?[ \t]+(?:for|is|was|set|changed|reset)[ \t:]"
)
_SCAN_EXPRESSIONS: Final = {
    word: expression.encode()
    for word, expression in {
        "://": r"://[^\s:/@\"'<>]*:[^\s/\"'<>]+@",
        "pass": _PW_SHAPE,
        "pwd": _named("pwd") + r"|pwd[ \t]+(?:for|is|was|set|changed|reset)[ \t:]",
        # Keystone's token ids ("Storing <hex> token", "token <hex>") besides the names.
        "token": _named("tokens?") + r"|token[ \t]+[0-9a-f]{32}|[0-9a-f]{32}[ \t]+token",
        "secret": _named("secrets?"),
        "key": _named("keys?"),
        "credential": _named("credentials?"),
        "authoriz": r"authorization" + _SEP,
        "bearer": r"bearer[ \t]+[a-z0-9._~+/-]{8}",
        "mysql": r"mysql[a-z]*[ \t][^\n|;&]*[ \t]-p",
        "mariadb": r"mariadb[a-z-]*[ \t][^\n|;&]*[ \t]-p",
        "curl": r"curl[^\n|;&]*[ \t](?:-u|--user)",
        "mii": r"mii[a-z0-9+/=_-]{200}",
    }.items()
}

BatchScan = Callable[[str], list[tuple[int, tuple[int, ...]]]]


def _next_start(start: int, length: int) -> int:
    return start + length + 1  # and the separator


def _hyperscan_scanner(opens: dict[str, list[int]]) -> BatchScan | None:
    """``ASCII text -> [(end offset, group indexes)]`` of every trigger in it (any
    case), with Hyperscan; ``None`` when Hyperscan is not installed (or refuses the set)."""
    try:
        import hyperscan
    except ImportError:  # not on this platform: the automaton does it
        return None
    words = list(opens)
    groups = [tuple(opens[word]) for word in words]
    expressions = [
        # Every character of a trigger escaped (\xHH): a literal.
        _SCAN_EXPRESSIONS.get(word) or "".join(f"\\x{ord(c):02x}" for c in word).encode()
        for word in words
    ]
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    try:
        database.compile(
            expressions=expressions,
            ids=list(range(len(words))),
            elements=len(words),
            flags=[hyperscan.HS_FLAG_CASELESS] * len(words),
        )
        scratch = hyperscan.Scratch(database)
    except hyperscan.error:  # pragma: no cover - a library that cannot take literals
        return None
    scan = database.scan

    def scan_batch(text: str) -> list[tuple[int, tuple[int, ...]]]:
        hits: list[tuple[int, tuple[int, ...]]] = []
        append = hits.append

        def on_match(word: int, start: int, end: int, flags: int, context: object) -> None:
            append((end, groups[word]))

        scan(text.encode("ascii"), match_event_handler=on_match, scratch=scratch)
        return hits

    return scan_batch


def _hides_something(value: str, replacement: str) -> bool:
    """False for values that are no secret: null-ish words and already masked text."""
    return value != replacement and value not in _NOT_SECRETS and bool(value.strip("*"))
