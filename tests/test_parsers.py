"""Each format's lines become the documented fields and severity (literal lines, written here)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest

from logstream.clock import ManualClock
from logstream.event import Batch, Event
from logstream.metrics import Registry
from logstream.parsers import FORMATS, build_parsers
from logstream.parsers.ecs import ECS
from logstream.units import BuildContext, Filter

# 2026-11-24T12:00:00Z: year-less timestamps are read in 2026.
NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC).timestamp()


def build(config: dict[str, Any] | None = None, clock: ManualClock | None = None) -> Filter:
    from logstream.config import parse_config

    parsed = parse_config(
        {
            "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
            "filters": [{"type": "parse", **(config or {})}],
            "sinks": [{"type": "stdout"}],
        }
    )
    ctx = BuildContext(registry=Registry(), clock=clock or ManualClock(wall_start=NOW))
    unit: Filter = parsed.filters[0].build("parse", ctx)
    return unit


def run(lines: list[str], config: dict[str, Any] | None = None, **fields: Any) -> Batch:
    unit = build(config)
    batch = [
        {"message": line, "host": "shipper-1", "path": "/var/log/x", **fields} for line in lines
    ]
    return unit.process(batch) + unit.flush()


def one(line: str, config: dict[str, Any] | None = None) -> Event:
    (event,) = run([line], config)
    return event


def subset(event: Event, **expected: Any) -> dict[str, Any]:
    """The event's values for the expected keys (for one readable assertion)."""
    return {key: event.get(key, "<missing>") for key in expected}


# --------------------------------------------------------------------------- oslo


def test_oslo_audit_line_is_notice_with_its_original_level() -> None:
    line = (
        "2026-03-02 09:15:27.118 4242 AUDIT cinder.api.extensions [-] Loaded extension: os-quotas"
    )
    expected = {
        "@timestamp": "2026-03-02T09:15:27.118Z",
        "format": "oslo",
        "level": "NOTICE",
        "level_original": "AUDIT",
        "pid": 4242,
        "logger": "cinder.api.extensions",
        "message": "Loaded extension: os-quotas",
        "host": "shipper-1",
    }
    event = one(line)
    assert subset(event, **expected) == expected
    assert "request_id" not in event


def test_oslo_line_without_pid_gives_the_request_context() -> None:
    event = one(
        "2026-03-02 09:15:28.007 INFO nova.osapi_compute.wsgi.server "
        "[req-5d2c8a10-1f7e-4d8b-9c3e-2b6f0a9d4e71 3f2a9c77 8be1d0aa] 10.1.2.3 "
        '"GET /v2/servers HTTP/1.1" status: 200 len: 512 time: 0.0510'
    )
    assert "pid" not in event
    expected = {
        "level": "INFO",
        "request_id": "req-5d2c8a10-1f7e-4d8b-9c3e-2b6f0a9d4e71",
        "user_id": "3f2a9c77",
        "project_id": "8be1d0aa",
        "message": '10.1.2.3 "GET /v2/servers HTTP/1.1" status: 200 len: 512 time: 0.0510',
    }
    assert subset(event, **expected) == expected
    assert "level_original" not in event


def test_oslo_debug_suffix_becomes_the_source_location() -> None:
    event = one(
        "2026-03-02 09:15:29.300 4242 DEBUG nova.compute.manager [-] Syncing power states "
        "_sync_power_states /opt/stack/nova/nova/compute/manager.py:4012"
    )
    expected = {
        "message": "Syncing power states",
        "function": "_sync_power_states",
        "file": "/opt/stack/nova/nova/compute/manager.py",
        "line": 4012,
        "level": "DEBUG",
    }
    assert subset(event, **expected) == expected


def test_oslo_newer_context_and_instance_and_pid_suffix() -> None:
    event = one(
        "2026-03-02 09:16:00.001 990 WARNING nova.compute.manager "
        "[None req-0c4e2b7a-aaaa-bbbb-cccc-123456789abc admin demo - default default] "
        "[instance: 6f1c2d3e-0000-4abc-8def-0123456789ab] Instance shutdown timed out "
        "from (pid=990) _shutdown /opt/stack/nova/nova/compute/manager.py:2771"
    )
    expected = {
        "request_id": "req-0c4e2b7a-aaaa-bbbb-cccc-123456789abc",
        "user_id": "admin",
        "project_id": "demo",
        "instance_id": "6f1c2d3e-0000-4abc-8def-0123456789ab",
        "message": "Instance shutdown timed out",
        "function": "_shutdown",
        "line": 2771,
        "level": "WARNING",
    }
    assert subset(event, **expected) == expected


def test_oslo_trace_lines_fold_into_their_error_record() -> None:
    head = "2026-03-02 09:20:11.500 2820 "
    out = run(
        [
            head + "ERROR neutron.api.v2.resource [-] update failed",
            head + "TRACE neutron.api.v2.resource Traceback (most recent call last):",
            head + 'TRACE neutron.api.v2.resource   File "/opt/neutron/api.py", line 84, in update',
            head + "TRACE neutron.api.v2.resource     result = method(**args)",
            head + "TRACE neutron.api.v2.resource NetworkNotFound: Network 42 could not be found",
            head + "TRACE neutron.api.v2.resource ",
            "2026-03-02 09:20:11.530 2820 INFO neutron.wsgi [-] 127.0.0.1 DELETE 404",
        ]
    )
    assert [event["level"] for event in out] == ["ERROR", "INFO"]
    assert out[0]["message"] == (
        "update failed\n"
        "Traceback (most recent call last):\n"
        '  File "/opt/neutron/api.py", line 84, in update\n'
        "    result = method(**args)\n"
        "NetworkNotFound: Network 42 could not be found"
    )
    assert out[0]["tags"] == ["multiline"]


def test_a_trace_line_alone_reads_as_error() -> None:
    event = one("2026-03-02 09:20:12.000 2820 TRACE neutron.db Traceback (most recent call last):")
    assert subset(event, level="ERROR", level_original="TRACE") == {
        "level": "ERROR",
        "level_original": "TRACE",
    }


def test_newer_oslo_error_traceback_lines_with_the_same_stamp_fold() -> None:
    head = "2026-03-02 10:01:02.003 7001 ERROR oslo_messaging.rpc.server [req-ab12 u1 p1] "
    out = run(
        [
            head + "Exception during message handling",
            head + "Traceback (most recent call last):",
            head + '  File "/usr/lib/python3/dist-packages/oslo_messaging/rpc/server.py", line 1',
            head + "ValueError: bad volume",
            "2026-03-02 10:01:02.004 7001 ERROR oslo_messaging.rpc.server [req-cd34 u1 p1] Retry",
        ]
    )
    assert len(out) == 2
    assert out[0]["message"].splitlines()[-1] == "ValueError: bad volume"
    assert out[1]["message"] == "Retry"


def test_neutron_pretty_printed_json_continuation_lines_fold() -> None:
    out = run(
        [
            "2026-03-02 09:30:00.100 2820 DEBUG neutron.api.v2.base [-] Request body: {u'port':",
            "     {",
            '          "name": "port-7",',
            '          "admin_state_up": true',
            "     }",
            "2026-03-02 09:30:00.101 2820 INFO neutron.wsgi [-] done",
        ]
    )
    assert len(out) == 2
    assert out[0]["message"].count("\n") == 4
    assert out[0]["level"] == "DEBUG"


# --------------------------------------------------------------------------- journal, syslog


def test_journal_header_and_oslo_message_inside() -> None:
    out = run(
        [
            "-- Logs begin at Sun 2026-04-05 07:00:01 UTC, end at Sun 2026-04-05 08:00:00 UTC. --",
            "Apr 05 07:10:00.000100 node-7 systemd[1]: Started Devstack devstack@g-api.service.",
            "Apr 05 07:10:02.123456 node-7 glance-api[3131]: ERROR glance.api.v2.images "
            "[None req-0f0e0d0c-1111-2222-3333-444455556666 demo demo] Image upload failed",
        ]
    )
    assert [event["format"] for event in out] == ["journal"] * 3
    assert out[0]["@timestamp"] == "2026-04-05T07:00:01.000Z"
    assert subset(out[1], program="systemd", pid=1, host="node-7", level="INFO") == {
        "program": "systemd",
        "pid": 1,
        "host": "node-7",
        "level": "INFO",
    }
    expected = {
        "@timestamp": "2026-04-05T07:10:02.123Z",
        "program": "glance-api",
        "pid": 3131,
        "level": "ERROR",
        "logger": "glance.api.v2.images",
        "request_id": "req-0f0e0d0c-1111-2222-3333-444455556666",
        "message": "Image upload failed",
    }
    assert subset(out[2], **expected) == expected


def test_journal_oslo_traceback_folds_into_the_error_record() -> None:
    head = "Apr 05 07:11:00.{:06d} node-7 cinder-volume[4545]: ERROR cinder.volume.manager [-] "
    out = run(
        [
            head.format(1) + "Failed to create volume",
            head.format(2) + "Traceback (most recent call last):",
            head.format(3) + '  File "/opt/stack/cinder/cinder/volume/manager.py", line 9, in f',
            head.format(4) + "    raise VolumeBackendAPIException()",
            head.format(5) + "VolumeBackendAPIException: backend down",
            head.format(6) + "Volume 12 left in error state",
        ]
    )
    assert [event["message"].count("\n") for event in out] == [4, 0]


def test_syslog_line_without_pri_or_level_word() -> None:
    event = one(
        "Jun 14 03:25:07 web-3 sshd[2210]: Accepted publickey for deploy from 10.9.8.7 port 51514"
    )
    expected = {
        "@timestamp": "2026-06-14T03:25:07.000Z",
        "format": "syslog",
        "host": "web-3",
        "program": "sshd",
        "pid": 2210,
        "level": "INFO",
        "message": "Accepted publickey for deploy from 10.9.8.7 port 51514",
    }
    assert subset(event, **expected) == expected


def test_syslog_pri_gives_facility_and_severity() -> None:
    event = one("<11>Jun 14 03:25:08 web-3 backup: disk full on /srv")
    expected = {"syslog_facility": 1, "syslog_severity": 3, "level": "ERROR", "program": "backup"}
    assert subset(event, **expected) == expected


def test_syslog_line_with_no_hostname() -> None:
    event = one("Jun 14 03:25:09  cron: last message repeated 2 times")
    assert "host" not in event or event["host"] == "shipper-1"
    assert event["program"] == "cron"
    assert event["message"] == "last message repeated 2 times"


def test_syslog_level_word_and_inheritance_per_program() -> None:
    out = run(
        [
            "Jun 14 03:25:10 web-3 proxy-server: ERROR with object server 10.0.0.5:6000 timeout",
            "Jun 14 03:25:11 web-3 kernel: [ 869.078170] eth0: link up",
            "Jun 14 03:25:12 web-3 proxy-server: retrying 10.0.0.5:6000",
            "Jun 14 03:25:13 web-3 ntpd[99]: failed to init interface for address fe80::1",
        ]
    )
    assert [event["level"] for event in out] == ["ERROR", "INFO", "ERROR", "INFO"]
    assert "level_original" not in out[3]  # "failed to" is prose, not a level word


def test_yearless_timestamp_in_the_future_is_last_year() -> None:
    clock = ManualClock(wall_start=dt.datetime(2026, 1, 1, 0, 30, tzinfo=dt.UTC).timestamp())
    unit = build({}, clock)
    batch = [
        {"message": "Dec 31 23:59:59 h1 app: late", "path": "a"},
        {"message": "Jan  1 12:00:00 h1 app: soon", "path": "b"},
    ]
    out = unit.process(batch)
    assert [event["@timestamp"] for event in out] == [
        "2025-12-31T23:59:59.000Z",
        "2026-01-01T12:00:00.000Z",
    ]


def test_timezone_option_converts_local_times_to_utc() -> None:
    line = "2026-07-01 12:00:00.250 17 INFO nova.api [-] summer"
    assert one(line, {"timezone": "Europe/Paris"})["@timestamp"] == "2026-07-01T10:00:00.250Z"
    assert one(line)["@timestamp"] == "2026-07-01T12:00:00.250Z"


def test_rfc5424_line_with_structured_data() -> None:
    event = one(
        "<165>1 2026-02-03T04:05:06.789+01:00 api-2.example.net billing 8812 INV42 "
        '[meta@32473 region="eu-west" note="a \\"quoted\\" word"][seq@1 n="7"] invoice batch done'
    )
    expected = {
        "format": "rfc5424",
        "@timestamp": "2026-02-03T03:05:06.789Z",
        "syslog_facility": 20,
        "syslog_severity": 5,
        "level": "NOTICE",
        "host": "api-2.example.net",
        "program": "billing",
        "pid": 8812,
        "syslog_msgid": "INV42",
        "syslog_sd": {
            "meta@32473": {"region": "eu-west", "note": 'a "quoted" word'},
            "seq@1": {"n": "7"},
        },
        "message": "invoice batch done",
    }
    assert subset(event, **expected) == expected


def test_rfc5424_nil_values_and_bom() -> None:
    event = one("<14>1 2026-02-03T04:05:06Z - app - - - \ufeffhello")
    assert subset(event, level="INFO", message="hello", program="app") == {
        "level": "INFO",
        "message": "hello",
        "program": "app",
    }
    assert "syslog_sd" not in event
    assert "pid" not in event


# --------------------------------------------------------------------------- web


def test_combined_access_line_status_5xx_is_error() -> None:
    line = (
        '192.0.2.44 - carol [08/Feb/2026:21:14:03 -0500] "POST /api/orders?id=7 HTTP/2.0" 503 1289 '
        '"https://shop.example/cart" "Mozilla/5.0 (X11; Linux x86_64)"'
    )
    event = one(line)
    expected = {
        "format": "apache_access",
        "@timestamp": "2026-02-09T02:14:03.000Z",
        "client": "192.0.2.44",
        "user": "carol",
        "method": "POST",
        "url": "/api/orders?id=7",
        "http_version": "2.0",
        "status": 503,
        "bytes": 1289,
        "referrer": "https://shop.example/cart",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
        "level": "ERROR",
        "message": line,
    }
    assert subset(event, **expected) == expected


@pytest.mark.parametrize(
    ("status", "level"), [("404", "WARNING"), ("200", "INFO"), ("304", "INFO"), ("500", "ERROR")]
)
def test_common_access_line_severity_follows_the_status(status: str, level: str) -> None:
    event = one(f'198.51.100.7 - - [08/Feb/2026:21:14:04 +0000] "GET /x.png HTTP/1.1" {status} -')
    assert (event["level"], event["status"], "bytes" in event) == (level, int(status), False)


def test_apache_error_lines_22_and_24() -> None:
    old, new, trace = run(
        [
            "[Sun Feb 08 21:15:00 2026] [error] [client 192.0.2.44] File does not exist: /srv/a",
            "[Sun Feb 08 21:15:01.250000 2026] [proxy_http:warn] [pid 5120:tid 140211] "
            "[client 192.0.2.44:40822] AH01110: error reading response",
            "[Sun Feb 08 21:15:02.000001 2026] [ssl:trace3] [pid 5120:tid 140212] handshake step",
        ]
    )
    assert subset(old, level="ERROR", client="192.0.2.44") == {
        "level": "ERROR",
        "client": "192.0.2.44",
    }
    expected = {
        "@timestamp": "2026-02-08T21:15:01.250Z",
        "level": "WARNING",
        "level_original": "warn",
        "logger": "proxy_http",
        "pid": 5120,
        "thread_id": 140211,
        "client": "192.0.2.44:40822",
        "error_code": "AH01110",
        "message": "error reading response",
    }
    assert subset(new, **expected) == expected
    assert trace["level"] == "TRACE"


def test_nginx_error_line() -> None:
    event = one(
        "2026/02/08 21:16:00 [crit] 811#811: *4417 connect() to unix:/run/php.sock failed, "
        'client: 203.0.113.9, server: shop.example, request: "GET / HTTP/1.1"'
    )
    expected = {"level": "CRITICAL", "level_original": "crit", "pid": 811, "client": "203.0.113.9"}
    assert subset(event, **expected) == expected


# --------------------------------------------------------------------------- ansible


ANSIBLE_LOG = [
    "2026-01-19 08:00:10,001 p=7781 u=deploy n=ansible |  ansible-playbook 2.14.1",
    "  config file = /etc/ansible/ansible.cfg",
    "2026-01-19 08:00:12,345 p=7781 u=deploy n=ansible |  TASK [nginx : install packages] ****",
    "2026-01-19 08:00:13,000 p=7781 u=deploy n=ansible |  <web-1> ESTABLISH SSH CONNECTION",
    "2026-01-19 08:00:14,500 p=7781 u=deploy n=ansible |  changed: [web-1]",
    "2026-01-19 08:00:15,250 p=7781 u=deploy n=ansible |  fatal: [db-2]: FAILED! => {",
    '    "changed": false, ',
    '    "msg": "No package matching nginx-extras"',
    "}",
    "2026-01-19 08:00:15,300 p=7781 u=deploy n=ansible |  Read vars_file 'vars/main.yml'",
    "2026-01-19 08:00:16,000 p=7781 u=deploy n=ansible |   [WARNING]: Consider using get_url",
    "2026-01-19 08:00:17,000 p=7781 u=deploy n=ansible |  PLAY RECAP *********************",
    "2026-01-19 08:00:17,001 p=7781 u=deploy n=ansible |  db-2    : ok=3    changed=0    "
    "unreachable=0    failed=1    skipped=0",
    "2026-01-19 08:00:17,002 p=7781 u=deploy n=ansible |  web-1   : ok=4    changed=1    "
    "unreachable=0    failed=0    skipped=0",
    "2026-01-19 08:01:00,000 p=7790 u=deploy n=ansible |  ERROR! the role 'nginx' was not found",
    "2026-01-19 08:02:00,000 p=7801 u=deploy n=ansible |  Using /etc/ansible.cfg as config file",
]


def test_ansible_log_lines_and_severities() -> None:
    out = run(ANSIBLE_LOG)
    assert {event["format"] for event in out} == {"ansible_log"}
    summary = [(event["level"], event.get("level_original")) for event in out]
    assert summary == [
        ("INFO", None),  # the first line of the stream: default_level
        ("INFO", None),
        ("DEBUG", None),
        ("NOTICE", "changed"),
        ("ERROR", "fatal"),
        ("ERROR", None),  # no level of its own: the previous one of the same run (p=7781)
        ("WARNING", None),
        ("INFO", None),
        ("ERROR", None),
        ("INFO", None),
        ("ERROR", "ERROR!"),
        ("INFO", None),  # another run (p=7801) does not inherit p=7790's ERROR
    ]
    assert out[0]["message"] == "ansible-playbook 2.14.1\n  config file = /etc/ansible/ansible.cfg"
    expected = {
        "@timestamp": "2026-01-19T08:00:12.345Z",
        "pid": 7781,
        "user": "deploy",
        "logger": "ansible",
        "ansible_task": "nginx : install packages",
        "message": "TASK [nginx : install packages] ****",
    }
    assert subset(out[1], **expected) == expected
    assert out[4]["ansible_host"] == "db-2"
    assert out[4]["message"].endswith('"msg": "No package matching nginx-extras"\n}')


def test_ansible_core_2_17_log_lines_with_a_logging_level_are_parsed() -> None:
    """ansible-core 2.17+ writes its logging level before the bar: ``n=ansible INFO| ...``;
    a level found in the text wins, else the logged level is used."""
    out = run(
        [
            "2026-11-24 10:00:00,001 p=42 u=ci n=ansible INFO| TASK [ping] ***",
            "2026-11-24 10:00:01,002 p=42 u=ci n=ansible INFO| fatal: [h1]: UNREACHABLE! => {}",
            "2026-11-24 10:00:02,003 p=42 u=ci n=ansible WARNING| no inventory was parsed",
        ]
    )
    assert [e["format"] for e in out] == ["ansible_log"] * 3
    assert [e["level"] for e in out] == ["INFO", "ERROR", "WARNING"]
    assert out[0]["message"] == "TASK [ping] ***"
    assert out[0]["ansible_task"] == "ping"


def test_ansible_playbook_stdout() -> None:
    out = run(
        [
            "",
            "PLAY [webservers] **************************************************************",
            "",
            "TASK [copy config] *************************************************************",
            "--- before: /etc/app.conf",
            "+++ after: /etc/app.conf",
            "@@ -1 +1 @@",
            "-debug=0",
            "+debug=1",
            "",
            "changed: [web-1]",
            "ok: [web-2] => (item=a) => {",
            '    "msg": "a"',
            "}",
            'fatal: [web-3]: FAILED! => {"changed": false, "msg": "boom"}',
            "...ignoring",
            "skipping: [web-4]",
            "web-1                      : ok=2    changed=1    unreachable=0    failed=0   ",
        ]
    )
    assert out[0]["message"] == ""
    rest = out[1:]
    assert {event["format"] for event in rest} == {"ansible_stdout"}
    assert [(event["level"], event.get("level_original")) for event in rest] == [
        ("INFO", None),
        ("INFO", None),
        ("NOTICE", "changed"),
        ("INFO", "ok"),
        ("ERROR", "fatal"),
        ("INFO", "skipping"),
        ("INFO", None),
    ]
    assert rest[0]["ansible_play"] == "webservers"
    assert rest[1]["message"].endswith("+debug=1")  # the diff folds into its task, blank dropped
    assert rest[4]["message"].endswith("\n...ignoring")


def test_awx_job_events_as_events_and_as_json_messages() -> None:
    event = {
        "event": "runner_on_failed",
        "created": "2026-01-28T16:17:14.370749Z",
        "failed": True,
        "changed": False,
        "host_name": "db-2",
        "task": "restart service",
        "play": "all",
        "playbook": "site.yml",
        "job": 88,
        "stdout": '\u001b[0;31mfatal: [db-2]: FAILED! => {"msg": "no unit"}\u001b[0m\r\n',
        "event_data": {"res": {"msg": "no unit"}},
    }
    ok = {**event, "event": "runner_item_on_ok", "failed": False, "changed": True, "stdout": ""}
    ok["event_display"] = "Item OK"
    unit = build()
    out = unit.process([dict(event), {"message": orjson.dumps(ok).decode(), "path": "awx"}])
    expected = {
        "format": "awx_event",
        "@timestamp": "2026-01-28T16:17:14.370Z",
        "level": "ERROR",
        "level_original": "runner_on_failed",
        "ansible_host": "db-2",
        "ansible_task": "restart service",
        "ansible_job": 88,
        "message": 'fatal: [db-2]: FAILED! => {"msg": "no unit"}',
    }
    assert subset(out[0], **expected) == expected
    assert subset(out[1], level="NOTICE", message="Item OK") == {
        "level": "NOTICE",
        "message": "Item OK",
    }


def test_logstash_callback_events_take_their_level_from_status() -> None:
    base = {"message": "ansible ok", "type": "ansible", "ansible_type": "task", "level": "INFO"}
    events: Batch = [
        {**base, "status": "OK", "ansible_changed": False},
        {**base, "status": "OK", "ansible_changed": True},
        {**base, "message": "ansible failed", "status": "FAILED"},
        {**base, "status": "UNREACHABLE"},
        {**base, "status": "SKIPPED"},
    ]
    out = build().process(events)
    assert [(event["level"], event["level_original"]) for event in out] == [
        ("INFO", "OK"),
        ("NOTICE", "OK"),
        ("ERROR", "FAILED"),
        ("ERROR", "UNREACHABLE"),
        ("INFO", "SKIPPED"),
    ]
    assert {event["format"] for event in out} == {"ansible_logstash"}


# --------------------------------------------------------------------------- console


def test_console_lines_xtrace_and_level_words() -> None:
    out = run(
        [
            "2026-03-17 16:11:24.173 | stack.sh log /opt/stack/logs/stack.sh.log",
            "2026-03-17 16:11:24.177 | + echo_summary 'Installing packages'",
            "2026-03-17 16:11:24.181 | ++ id -u",
            "2026-03-17 16:12:05.250 | warning: no files found matching '*.html'",
            "2026-03-17 16:12:05.260 | Installing collected packages: six",
            "2026-03-17 16:12:06.000 | + install_nova",
        ]
    )
    assert [event["level"] for event in out] == [
        "INFO",
        "INFO",
        "INFO",
        "WARNING",
        "WARNING",
        "INFO",
    ]
    assert out[1]["command"] == "echo_summary 'Installing packages'"
    assert out[2]["command"] == "id -u"
    assert out[0]["@timestamp"] == "2026-03-17T16:11:24.173Z"
    assert out[0]["message"] == "stack.sh log /opt/stack/logs/stack.sh.log"


def test_console_without_inheritance_gives_plain_lines_the_default() -> None:
    out = run(
        [
            "2026-03-17 16:12:05.250 | warning: no files found matching '*.html'",
            "2026-03-17 16:12:05.260 | Installing collected packages: six",
        ],
        {"inherit_level": False},
    )
    assert [event["level"] for event in out] == ["WARNING", "INFO"]


def test_console_python_traceback_folds() -> None:
    out = run(
        [
            "2026-03-17 16:13:00.000 | Traceback (most recent call last):",
            '2026-03-17 16:13:00.001 |   File "/usr/bin/pip", line 9, in <module>',
            "2026-03-17 16:13:00.002 |     load_entry_point('pip')()",
            "2026-03-17 16:13:00.003 | ImportError: No module named pkg_resources",
            "2026-03-17 16:13:00.004 | + exit_trap",
        ]
    )
    assert [event["level"] for event in out] == ["ERROR", "INFO"]
    assert out[0]["message"].splitlines()[-1] == "ImportError: No module named pkg_resources"


# --------------------------------------------------------------------------- ECS


def test_ecs_option_writes_nested_ecs_fields() -> None:
    line = "2026-03-02 09:15:27.118 4242 AUDIT cinder.api.extensions [req-77 u9 p9] Loaded"
    (event,) = run(
        [line],
        {"fields": "ecs", "keep_original": True},
    )
    assert event["log"] == {
        "level": "NOTICE",
        "level_original": "AUDIT",
        "logger": "cinder.api.extensions",
    }
    assert event["host"] == {"name": "shipper-1"}  # the Logstash host string, kept as host.name
    assert event["process"] == {"pid": 4242}
    assert event["http"] == {"request": {"id": "req-77"}}
    assert event["user"] == {"id": "u9"}
    assert event["event"] == {
        "dataset": "oslo",
        "severity": 25,
        "original": line,
    }
    assert event["@timestamp"] == "2026-03-02T09:15:27.118Z"
    assert event["message"] == "Loaded"
    assert "level" not in event


def test_ecs_option_uses_the_lines_host_over_the_shippers() -> None:
    (event,) = run(["Jun 14 03:25:07 web-3 sshd[2210]: session opened"], {"fields": "ecs"})
    assert event["host"] == {"name": "web-3"}
    assert event["process"] == {"name": "sshd", "pid": 2210}


def test_every_field_a_parser_can_set_has_an_ecs_name() -> None:
    documented = set(ECS) | {
        "ansible_host",
        "ansible_task",
        "ansible_play",
        "ansible_playbook",
        "ansible_event",
        "ansible_job",
        "ansible_changed",
    }
    samples = [
        "2026-03-02 09:15:29.300 42 DEBUG a.b [req-1 u p] [instance: i] x f /a.py:1",
        "<11>Jun 14 03:25:08 web-3 backup[1]: disk full",
        "Apr 05 07:10:02.123456 n glance-api[1]: ERROR g.a [None req-2 u p] x f /b.py:2",
        '<165>1 2026-02-03T04:05:06Z h app 1 ID [a@1 b="c"] m',
        '1.2.3.4 - u [08/Feb/2026:21:14:03 -0500] "GET / HTTP/1.1" 200 1 "r" "a"',
        "[Sun Feb 08 21:15:01 2026] [core:error] [pid 1:tid 2] [client c] AH00001: m",
        "2026/02/08 21:16:00 [error] 1#2: *3 x, client: 1.2.3.4, server: s",
        "2026-01-19 08:00:14,500 p=1 u=root n=ansible |  changed: [web-1]",
        "2026-03-17 16:11:24.177 | + true",
        "TASK [t] ****",
    ]
    seen: set[str] = set()
    for line in samples:
        seen |= set(one(line, {"keep_original": True}))
    assert seen - {"path", "tags"} <= documented


def test_formats_are_the_documented_ones() -> None:
    _, parsers = build_parsers(ManualClock())
    assert tuple(parsers) == FORMATS
