"""Each format's variants, as its writer defines them, through the parse filter.

The lines are generated here from the formats' definitions (Ansible's
``display.py`` logger setups 2.4..2.19, oslo.log's format strings, RFC 3164 /
RFC 5424 / rsyslog / journalctl output modes, Apache's and nginx's log
formats), not copied from any one file. ``tests/test_corpus.py`` is the second
line of defence, on real logs.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logstream.buffer import BatchBuffer
from logstream.clock import ManualClock
from logstream.event import Batch, Event
from logstream.inputs.syslog import SyslogInput, SyslogInputConfig
from logstream.metrics import Registry
from logstream.parsers import build_parsers
from logstream.units import BuildContext, Filter
from tests.support.inputs import Runner, running, send_tcp, take

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC).timestamp()


def build(config: dict[str, Any] | None = None, registry: Registry | None = None) -> Filter:
    from logstream.config import parse_config

    parsed = parse_config(
        {
            "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
            "filters": [{"type": "parse", **(config or {})}],
            "sinks": [{"type": "stdout"}],
        }
    )
    ctx = BuildContext(registry=registry or Registry(), clock=ManualClock(wall_start=NOW))
    unit: Filter = parsed.filters[0].build("parse", ctx)
    return unit


def run(lines: list[str], config: dict[str, Any] | None = None) -> Batch:
    unit = build(config)
    return unit.process([{"message": line, "host": "shipper"} for line in lines]) + unit.flush()


def one(line: str, config: dict[str, Any] | None = None) -> Event:
    (event,) = run([line], config)
    return event


def parse_with(name: str, line: str) -> dict[str, Any] | None:
    _, parsers = build_parsers(ManualClock(wall_start=NOW))
    return parsers[name].parse(line, {})


# --------------------------------------------------------------------------- ansible.log

STAMP = "2020-01-07 22:21:13,579"
# (Ansible versions, prefix): what lib/ansible/utils/display.py's logging setup writes.
ANSIBLE_PREFIXES = [
    ("2.4-2.7", "p=4284 u=root | "),  # '%(asctime)s %(name)s %(message)s', name "p=.. u=.. | "
    ("2.8-2.9", "p=root u=4284 | "),  # '%(asctime)s p=%(user)s u=%(process)d | %(message)s'
    ("2.10-2.16", "p=4284 u=root n=ansible | "),
    ("2.17-2.19", "p=4284 u=root n=ansible INFO| "),
]
# (text after the prefix, level, level_original or None, extra fields)
ANSIBLE_TEXTS: list[tuple[str, str, str | None, dict[str, Any]]] = [
    ("PLAY [webservers] ***********************", "INFO", None, {"ansible_play": "webservers"}),
    (
        "TASK [common : install packages] ********",
        "INFO",
        None,
        {"ansible_task": "common : install packages"},
    ),
    ("ok: [web-1]", "INFO", "ok", {"ansible_host": "web-1"}),
    ("skipping: [web-2]", "INFO", "skipping", {"ansible_host": "web-2"}),
    ("changed: [db-1] => (item=nginx)", "NOTICE", "changed", {"ansible_host": "db-1"}),
    ('failed: [db-1] (item=x) => {"changed": false}', "ERROR", "failed", {"ansible_host": "db-1"}),
    ('fatal: [db-2]: FAILED! => {"msg": "boom"}', "ERROR", "fatal", {"ansible_host": "db-2"}),
    ("fatal: [db-3]: UNREACHABLE! => {", "ERROR", "fatal", {"ansible_host": "db-3"}),
    ("[WARNING]: Could not match supplied host pattern", "WARNING", None, {}),
    ("[DEPRECATION WARNING]: The 'x' option is deprecated.", "WARNING", "DEPRECATION WARNING", {}),
    ("ERROR! the role 'x' was not found", "ERROR", "ERROR!", {}),
    ("web-1 : ok=3 changed=1 unreachable=0 failed=0 skipped=0", "INFO", None, {}),
    ("db-1 : ok=1 changed=0 unreachable=1 failed=0", "ERROR", None, {}),
]


@pytest.mark.parametrize(
    ("versions", "prefix"), ANSIBLE_PREFIXES, ids=[v for v, _ in ANSIBLE_PREFIXES]
)
@pytest.mark.parametrize(
    ("text", "level", "original", "extra"), ANSIBLE_TEXTS, ids=[t[:20] for t, *_ in ANSIBLE_TEXTS]
)
def test_ansible_log_every_versions_prefix_and_task_line(
    versions: str, prefix: str, text: str, level: str, original: str | None, extra: dict[str, Any]
) -> None:
    event = one(f"{STAMP} {prefix}{text}")
    assert event["format"] == "ansible_log"
    assert (event["pid"], event["user"]) == (4284, "root")
    assert event["@timestamp"] == "2020-01-07T22:21:13.579Z"
    assert event["message"] == text
    assert event["level"] == level
    assert event.get("level_original") == original
    for key, value in extra.items():
        assert event[key] == value
    assert "tags" not in event


@pytest.mark.parametrize(
    ("versions", "prefix"), ANSIBLE_PREFIXES, ids=[v for v, _ in ANSIBLE_PREFIXES]
)
def test_ansible_log_json_results_fold_and_keep_the_head_level(versions: str, prefix: str) -> None:
    """``=> {`` results span lines: the body folds into its head, which keeps its level."""
    lines = [
        f"{STAMP} {prefix}TASK [show] ***",
        f"{STAMP} {prefix}fatal: [db-1]: FAILED! => {{",
        '    "changed": false,',
        '    "stdout_lines": [',
        '        "The postgres password is 0123456789abcdef"',
        "    ]",
        "}",
        f"{STAMP} {prefix}ok: [db-2]",
    ]
    out = run(lines)
    assert [e["level"] for e in out] == ["INFO", "ERROR", "INFO"]
    assert out[1]["message"].splitlines()[1:] == [line for line in lines[2:7]]
    assert "multiline" in out[1]["tags"]
    assert not any("_parsefailure" in e.get("tags", []) for e in out)


def test_ansible_2_17_logging_level_counts_when_the_text_states_none() -> None:
    event = one(f"{STAMP} p=1 u=root n=ansible WARNING| something odd")
    assert event["level"] == "WARNING"
    assert event["logger"] == "ansible"


# --------------------------------------------------------------------------- oslo.log

OSLO_STAMP = "2026-03-02 09:15:27.118"
# logging_context_format_string, logging_default_format_string and the
# exception prefix, each with and without the PID some services leave out.
OSLO_LINES = [
    ("{s} 4242 INFO nova.api [req-1a2b u1 p1] GET /v2", "INFO", {"request_id": "req-1a2b"}),
    ("{s} INFO nova.api [req-1a2b u1 p1] GET /v2", "INFO", {"user_id": "u1", "project_id": "p1"}),
    ("{s} 4242 WARNING nova.api [-] no request", "WARNING", {}),
    (
        "{s} 4242 INFO nova.api [req-a req-b u1 p1 - default default] two ids",
        "INFO",
        {"request_id": "req-a"},
    ),
    ("{s} 4242 DEBUG nova.api [-] msg fn /opt/x.py:12", "DEBUG", {"function": "fn", "line": 12}),
    ("{s} 4242 AUDIT cinder.api [-] Loaded", "NOTICE", {"level_original": "AUDIT"}),
    ("{s} 4242 CRITICAL nova [-] Unhandled", "CRITICAL", {}),
    (
        "{s} 4242 TRACE nova.api Traceback (most recent call last):",
        "ERROR",
        {"level_original": "TRACE"},
    ),
]


@pytest.mark.parametrize(
    ("template", "level", "extra"), OSLO_LINES, ids=[t[4:30] for t, *_ in OSLO_LINES]
)
def test_oslo_format_variants(template: str, level: str, extra: dict[str, Any]) -> None:
    event = one(template.format(s=OSLO_STAMP))
    assert (event["format"], event["level"]) == ("oslo", level)
    assert event["@timestamp"] == "2026-03-02T09:15:27.118Z"
    for key, value in extra.items():
        assert event[key] == value


@pytest.mark.parametrize("trace", ["TRACE", "ERROR"])
def test_oslo_prefixed_tracebacks_fold_into_the_error_record(trace: str) -> None:
    head = f"{OSLO_STAMP} 7 ERROR nova.api [req-1 u p] Failed"
    body = [
        "Traceback (most recent call last):",
        '  File "/opt/nova/api.py", line 3, in f',
        "ValueError: bad",
    ]
    lines = [head] + [f"{OSLO_STAMP} 7 {trace} nova.api {text}" for text in body]
    lines.append(f"{OSLO_STAMP} 7 INFO nova.api [-] next")
    out = run(lines)
    assert [e["level"] for e in out] == ["ERROR", "INFO"]
    assert out[0]["message"].splitlines() == ["Failed", *body]


def test_oslo_plain_traceback_lines_fold_and_keep_the_level() -> None:
    lines = [
        f"{OSLO_STAMP} 7 ERROR nova.api [-] Failed",
        "Traceback (most recent call last):",
        '  File "/opt/nova/api.py", line 3, in f',
        "ValueError: bad",
        f"{OSLO_STAMP} 7 INFO nova.api [-] next",
    ]
    out = run(lines)
    assert [(e["level"], len(e["message"].splitlines())) for e in out] == [
        ("ERROR", 4),
        ("INFO", 1),
    ]


# --------------------------------------------------------------------------- syslog family

SYSLOG_STAMPS = [
    # (timestamp text, @timestamp) -- the clock reads 2026-11-24.
    ("Jun  9 15:41:36", "2026-06-09T15:41:36.000Z"),  # RFC 3164, space-padded day
    ("Apr 4 03:39:57", "2026-04-04T03:39:57.000Z"),  # no padding
    ("Apr 14 03:39:57", "2026-04-14T03:39:57.000Z"),
    ("Jun  9 2021 15:41:36", "2021-06-09T15:41:36.000Z"),  # with a year
    ("2018-08-14T14:30:02.203151+02:00", "2018-08-14T12:30:02.203Z"),  # rsyslog RFC 3339
    ("2018-08-14T14:30:02Z", "2018-08-14T14:30:02.000Z"),
    ("2018-08-14T14:30:02+0200", "2018-08-14T12:30:02.000Z"),  # journalctl short-iso
    ("2018-08-14T14:30:02", "2018-08-14T14:30:02.000Z"),  # no zone: the configured one
]
SYSLOG_TAGS = [
    ("sshd[1234]: Accepted key", {"program": "sshd", "pid": 1234}, "Accepted key"),
    ("CRON: (root) CMD (true)", {"program": "CRON"}, "(root) CMD (true)"),
    ("app:worker[7]: ready: yes", {"program": "app:worker", "pid": 7}, "ready: yes"),
    ("postfix/smtpd[88]: connect", {"program": "postfix/smtpd", "pid": 88}, "connect"),
    ("svc[main]: up", {"program": "svc", "syslog_procid": "main"}, "up"),
]


@pytest.mark.parametrize("pri", ["", "<30>"])
@pytest.mark.parametrize(("stamp", "expected"), SYSLOG_STAMPS, ids=[s for s, _ in SYSLOG_STAMPS])
@pytest.mark.parametrize(
    ("tag", "fields", "message"), SYSLOG_TAGS, ids=[t[:8] for t, *_ in SYSLOG_TAGS]
)
def test_syslog_variants(
    pri: str, stamp: str, expected: str, tag: str, fields: dict[str, Any], message: str
) -> None:
    result = parse_with("syslog", f"{pri}{stamp} node-1 {tag}")
    assert result is not None
    assert result["@timestamp"] == expected
    assert result["host"] == "node-1"
    assert result["message"] == message
    for key, value in fields.items():
        assert result[key] == value
    if pri:
        assert (result["syslog_facility"], result["syslog_severity"], result["level"]) == (
            3,
            6,
            "INFO",
        )


def test_syslog_without_hostname_and_without_message() -> None:
    assert parse_with("syslog", "Jun  9 15:50:06 tgtd: started")["program"] == "tgtd"  # type: ignore[index]
    bare = parse_with("syslog", "<13>Jun  9 15:50:06 host")
    assert bare is not None and bare["host"] == "host" and bare["message"] == ""


@pytest.mark.parametrize(
    ("line", "fmt"),
    [
        ("Mar 28 12:20:44 node-1 nova-api[85]: hello", "syslog"),  # journalctl -o short
        ("Mar 28 12:20:44.172534 node-1 nova-api[85]: hello", "journal"),  # short-precise
        ("2017-03-28T12:20:44+0000 node-1 nova-api[85]: hello", "journal"),  # short-iso
        ("2017-03-28T12:20:44.172534+0000 node-1 nova-api[85]: hello", "journal"),
    ],
)
def test_journalctl_output_modes(line: str, fmt: str) -> None:
    event = one(line)
    assert event["format"] == fmt
    assert (event["host"], event["program"], event["pid"], event["message"]) == (
        "node-1",
        "nova-api",
        85,
        "hello",
    )
    assert event["@timestamp"].startswith(("2026-03-28T12:20:44.", "2017-03-28T12:20:44."))


def test_journal_oslo_body_gives_level_and_logger() -> None:
    event = one("Mar 28 12:20:44.172534 n cinder-api[8]: WARNING cinder.api [req-1 u p] slow")
    assert (event["level"], event["logger"], event["request_id"]) == (
        "WARNING",
        "cinder.api",
        "req-1",
    )


# --------------------------------------------------------------------------- RFC 5424


@pytest.mark.parametrize("version", ["1", "2", "22", "222"])
def test_rfc5424_version_of_up_to_three_digits(version: str) -> None:
    result = parse_with("rfc5424", f"<187>{version} 2003-10-11T22:14:15.003Z h app 9 ID - m")
    assert result is not None
    assert (result["host"], result["program"], result["pid"]) == ("h", "app", 9)


def test_rfc5424_leap_second_loses_only_the_time() -> None:
    result = parse_with("rfc5424", "<165>1 2016-12-31T23:59:60Z h app 9 - - leap")
    assert result is not None
    assert "@timestamp" not in result
    assert (result["host"], result["program"], result["message"]) == ("h", "app", "leap")
    assert parse_with("rfc5424", "<165>1 2016-13-31T23:59:59Z h app 9 - - bad month") is None


@pytest.mark.parametrize("procid", ["proc-id", "prg", "worker.3"])
def test_rfc5424_string_procid_is_kept(procid: str) -> None:
    result = parse_with("rfc5424", f"<165>1 - h app {procid} - - m")
    assert result is not None
    assert result["syslog_procid"] == procid
    assert "pid" not in result


def test_rfc5424_repeated_sd_ids_and_params_keep_every_value() -> None:
    line = '<165>1 - h app - - [origin ip="10.0.0.1"][meta a="1"][origin ip="10.0.0.2" x="y"] m'
    result = parse_with("rfc5424", line)
    assert result is not None
    assert result["syslog_sd"] == {
        "origin": {"ip": ["10.0.0.1", "10.0.0.2"], "x": "y"},
        "meta": {"a": "1"},
    }
    assert result["message"] == "m"


@pytest.mark.parametrize(
    ("written", "value"),
    [
        (r"a\"b", 'a"b'),
        (r"a\\b", "a\\b"),
        (r"a\]b", "a]b"),
        (r"a\nb", r"a\nb"),  # not an escape: the backslash stays (RFC 5424 6.3.3)
        (r"\\\"\]", '\\"]'),
    ],
)
def test_rfc5424_sd_escapes(written: str, value: str) -> None:
    result = parse_with("rfc5424", f'<165>1 - h app - - [x@1 k="{written}"] m')
    assert result is not None
    assert result["syslog_sd"] == {"x@1": {"k": value}}


@pytest.mark.parametrize(
    "sd",
    [
        '[x@1 k="a]b"]',  # unescaped ]
        '[x@1 k="a"b"]',  # unescaped "
        '[x@1 k="ab\\"]',  # the closing quote escaped: never closed
        '[x@1 k="v"',  # element never closed
        "[x@1 k=v]",  # value not quoted
        '[x@1 k="v"]junk',  # no space before the message
    ],
)
def test_rfc5424_invalid_structured_data_is_refused(sd: str) -> None:
    assert parse_with("rfc5424", f"<165>1 - h app - - {sd} m") is None


SD_VALUE = st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), max_size=30)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c@1"]), SD_VALUE), min_size=1, max_size=4))
def test_rfc5424_any_escaped_value_reads_back(params: list[tuple[str, str]]) -> None:
    """Values escaped as RFC 5424 says come back exactly, repeated names as lists."""

    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")

    body = " ".join(f'{name}="{escape(value)}"' for name, value in params)
    result = parse_with("rfc5424", f"<165>1 - h app - - [id@1 {body}] m")
    assert result is not None
    expected: dict[str, Any] = {}
    for name, value in params:
        expected.setdefault(name, []).append(value)
    got = {k: v if isinstance(v, list) else [v] for k, v in result["syslog_sd"]["id@1"].items()}
    assert got == expected


def test_syslog_input_routes_a_three_digit_version_to_rfc5424_and_parse_leaves_it_alone() -> None:
    """Over a real socket: the syslog input structures the message; a parse filter after
    it neither re-parses it nor tags it ``_parsefailure`` (issue 14 item 1)."""
    config = SyslogInputConfig.model_validate({"type": "syslog", "listen": "127.0.0.1:0"})
    unit: SyslogInput = config.build("syslog", BuildContext())
    frames = [
        b'<187>222 2003-10-11T22:14:15.003Z h app proc-id ID [a@1 k="v"] hi\n',
        b"<13>Apr 4 03:39:57 host tag:sub[7]: hello\n",
    ]

    async def scenario() -> Batch:
        async with running(unit, BatchBuffer(100)) as ingest:
            await send_tcp(unit.address, b"".join(frames))
            return await take(ingest, 2)

    events = Runner("asyncio")(scenario())
    assert events[0]["format"] == "rfc5424"
    assert (events[0]["syslog_procid"], events[0]["syslog_sd"]) == ("proc-id", {"a@1": {"k": "v"}})
    assert (events[1]["program"], events[1]["pid"]) == ("tag:sub", 7)
    registry = Registry()
    parse = build(registry=registry)
    before = [dict(event) for event in events]
    out = parse.process(events) + parse.flush()
    assert out == before
    assert registry["parse"].decode_issues.get("unparsed", 0) == 0


# --------------------------------------------------------------------------- web

REQUEST = '"GET /a?b=1 HTTP/1.1" 404 512 "https://ref.example/" "curl/8.0"'
ACCESS_LINES = [
    # (line, client, extra)
    (f"10.0.0.7 - alice [17/May/2015:10:05:03 +0200] {REQUEST}", "10.0.0.7", {"user": "alice"}),
    (f"2001:db8::1 - - [17/May/2015:10:05:03 +0200] {REQUEST}", "2001:db8::1", {}),
    # vhost_combined: "%v:%p %h %l %u %t ..."
    (
        f"www.example.com:443 10.0.0.7 - - [17/May/2015:10:05:03 +0200] {REQUEST}",
        "10.0.0.7",
        {"vhost": "www.example.com", "vhost_port": 443},
    ),
    # nginx with $http_x_forwarded_for first
    (
        f"203.0.113.9, 10.0.0.1 - - [17/May/2015:10:05:03 +0200] {REQUEST}",
        "203.0.113.9",
        {"forwarded_for": ["203.0.113.9", "10.0.0.1"]},
    ),
    (
        f'203.0.113.9, 10.0.0.1, 10.0.0.2 - - [17/May/2015:10:05:03 +0200] {REQUEST} "-" 0.003',
        "203.0.113.9",
        {"forwarded_for": ["203.0.113.9", "10.0.0.1", "10.0.0.2"]},
    ),
]


@pytest.mark.parametrize(
    ("line", "client", "extra"), ACCESS_LINES, ids=[c for _, c, _ in ACCESS_LINES]
)
def test_access_log_variants(line: str, client: str, extra: dict[str, Any]) -> None:
    event = one(line)
    assert event["format"] == "apache_access"
    assert event["client"] == client
    assert event["@timestamp"] == "2015-05-17T08:05:03.000Z"
    assert (event["method"], event["url"], event["status"], event["bytes"]) == (
        "GET",
        "/a?b=1",
        404,
        512,
    )
    assert (event["referrer"], event["user_agent"], event["level"]) == (
        "https://ref.example/",
        "curl/8.0",
        "WARNING",
    )
    for key, value in extra.items():
        assert event[key] == value


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "[Sun Dec 04 04:47:44 2005] [error] [client 10.0.0.7] File does not exist: /x",
            {"client": "10.0.0.7", "message": "File does not exist: /x"},
        ),
        (
            "[Wed Oct 11 14:32:52.123456 2000] [:error] [pid 35708] [client 10.0.0.7:5678] PHP "
            "Warning: x in /a.php on line 2, referer: http://h/p",
            {
                "pid": 35708,
                "client": "10.0.0.7:5678",
                "referrer": "http://h/p",
                "message": "PHP Warning: x in /a.php on line 2",
            },
        ),
        (
            "[Wed Oct 11 14:32:52.123456 2000] [core:error] [pid 35708:tid 4328636416] "
            "(13)Permission denied: [client 10.0.0.7:5678] AH00035: access to / denied",
            {
                "logger": "core",
                "thread_id": 4328636416,
                "error_message": "(13)Permission denied",
                "client": "10.0.0.7:5678",
                "error_code": "AH00035",
                "message": "access to / denied",
            },
        ),
        (
            "[Wed Oct 11 14:32:52 2000] [proxy:error] [pid 9:tid 1] (70007)The timeout specified "
            "has expired: [client ::1:40] AH01102: error reading status line",
            {"error_message": "(70007)The timeout specified has expired", "client": "::1:40"},
        ),
        (
            "[Wed Oct 11 14:32:52 2000] [proxy:debug] [pid 9:tid 1] proxy_util.c(2020): AH00942: "
            "HTTP: has acquired connection",
            {"file": "proxy_util.c", "line": 2020, "level": "DEBUG"},
        ),
        (
            "[Wed Oct  1 14:32:52 2000] [ssl:trace3] [pid 9] ssl_engine_io.c(1): x",
            {"level": "TRACE", "logger": "ssl"},
        ),
    ],
)
def test_apache_error_variants(line: str, expected: dict[str, Any]) -> None:
    event = one(line)
    assert event["format"] == "apache_error"
    for key, value in expected.items():
        assert event[key] == value
    assert "logger" not in event or event["logger"]  # an empty module is no logger


def test_nginx_error_levels() -> None:
    levels = ["debug", "info", "notice", "warn", "error", "crit", "alert", "emerg"]
    out = run([f"2016/09/01 12:00:00 [{word}] 12#3: *4 x, client: 1.2.3.4" for word in levels])
    assert [e["level"] for e in out] == [
        "DEBUG",
        "INFO",
        "NOTICE",
        "WARNING",
        "ERROR",
        "CRITICAL",
        "CRITICAL",
        "CRITICAL",
    ]
    assert {e["client"] for e in out} == {"1.2.3.4"}


# --------------------------------------------------------------------------- unknown lines


def test_a_line_nobody_knows_is_still_an_event_tagged_and_counted() -> None:
    registry = Registry()
    unit = build(registry=registry)
    out = unit.process([{"message": "just some words"}, {"message": "more words"}])
    out += unit.flush()
    assert [e["message"] for e in out] == ["just some words", "more words"]
    assert all("_parsefailure" in e["tags"] for e in out)
    assert registry["parse"].decode_issues["unparsed"] == 2


def test_every_generated_line_is_recognised_once_mixed_across_streams() -> None:
    """The generators above, one stream per format, interleaved: every line recognised."""
    streams = {
        "ansible": [
            f"{STAMP} {p}{t}"
            for (_, p), (t, *_) in itertools.product(ANSIBLE_PREFIXES, ANSIBLE_TEXTS)
        ],
        "oslo": [t.format(s=OSLO_STAMP) for t, *_ in OSLO_LINES[:-1]],
        "syslog": [
            f"{s} node-1 {t}"
            for (s, _), (t, *_) in itertools.product(SYSLOG_STAMPS[:4], SYSLOG_TAGS)
        ],
        "web": [line for line, *_ in ACCESS_LINES],
    }
    unit = build({"stream_key": ["path"]})
    batch = [
        {"message": line, "path": name}
        for group in itertools.zip_longest(
            *([(n, text) for text in ls] for n, ls in streams.items())
        )
        for item in group
        if item is not None
        for name, line in [item]
    ]
    out = unit.process(batch) + unit.flush()
    assert len(out) == sum(len(lines) for lines in streams.values())
    assert not [e for e in out if "_parsefailure" in e.get("tags", [])]
