"""The regex, drop, route, redact and mutate filters, and sinks' ``when`` selection."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from logstream.config import ConfigError, build_pipeline, parse_config
from logstream.event import Batch
from logstream.metrics import Registry
from logstream.pipeline import Pipeline, SinkRunner, SinkSettings
from logstream.units import BuildContext, Filter
from tests.support.units import CollectingSink, ListInput

INPUT = {"type": "tcp", "listen": "127.0.0.1:0"}


def build(config: dict[str, Any], registry: Registry | None = None, name: str = "f") -> Filter:
    parsed = parse_config({"inputs": [INPUT], "filters": [config], "sinks": [{"type": "stdout"}]})
    unit: Filter = parsed.filters[0].build(name, BuildContext(registry=registry or Registry()))
    return unit


def config_error(config: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config({"inputs": [INPUT], "filters": [config], "sinks": [{"type": "stdout"}]})
    return str(caught.value)


# --------------------------------------------------------------------------- regex


def test_regex_named_groups_become_fields() -> None:
    unit = build({"type": "regex", "patterns": [r"user=(?P<user>\w+) took (?P<ms>\d+)ms"]})
    [event] = unit.process([{"message": "login user=bob took 12ms"}])
    assert (event["user"], event["ms"]) == ("bob", "12")
    assert "tags" not in event


def test_regex_the_first_matching_pattern_wins() -> None:
    unit = build({"type": "regex", "patterns": [r"(?P<a>x)", r"(?P<b>x)"]})
    [event] = unit.process([{"message": "x"}])
    assert event == {"message": "x", "a": "x"}


def test_regex_tags_an_event_no_pattern_matches() -> None:
    unit = build({"type": "regex", "patterns": [r"^(?P<a>\d+)$"]})
    [event] = unit.process([{"message": "nope", "tags": ["t"]}])
    assert event["tags"] == ["t", "_regexparsefailure"]


def test_regex_on_failure_null_adds_no_tag() -> None:
    unit = build({"type": "regex", "patterns": [r"(?P<a>\d)"], "on_failure": None})
    assert unit.process([{"message": "x"}]) == [{"message": "x"}]


def test_regex_leaves_events_without_a_string_source_alone() -> None:
    unit = build({"type": "regex", "patterns": [r"(?P<a>.)"]})
    events = [{}, {"message": 5}, {"message": None}]
    assert unit.process([dict(e) for e in events]) == events


def test_regex_keeps_existing_fields_unless_overwrite_is_set() -> None:
    keep = build({"type": "regex", "patterns": [r"(?P<host>\w+)"]})
    replace = build({"type": "regex", "patterns": [r"(?P<host>\w+)"], "overwrite": True})
    assert keep.process([{"message": "db", "host": "web"}])[0]["host"] == "web"
    assert replace.process([{"message": "db", "host": "web"}])[0]["host"] == "db"


def test_regex_reads_a_nested_source_and_skips_groups_that_did_not_match() -> None:
    unit = build(
        {
            "type": "regex",
            "source": "[http][line]",
            "patterns": [r"(?P<verb>GET|POST)(?: (?P<path>/\S*))?"],
        }
    )
    [event] = unit.process([{"http": {"line": "GET"}}])
    assert event == {"http": {"line": "GET"}, "verb": "GET"}


def test_regex_a_bad_pattern_is_rejected_naming_the_key_and_the_pattern() -> None:
    message = config_error({"type": "regex", "patterns": [r"(?P<ok>\d)", r"(?P<x>[a-"]})
    assert "filters[0] (regex).patterns" in message
    assert "patterns[1] '(?P<x>[a-' is not a valid regex" in message


def test_regex_a_pattern_without_named_groups_is_rejected() -> None:
    assert "has no named group" in config_error({"type": "regex", "patterns": [r"\d+"]})


# --------------------------------------------------------------------------- drop


def test_drop_removes_matching_events_and_counts_them_as_filtered() -> None:
    registry = Registry()
    unit = build({"type": "drop", "if": "level < INFO"}, registry)
    out = unit.process([{"level": "debug"}, {"level": "info"}, {"level": "trace"}, {}])
    assert out == [{"level": "info"}, {}]
    assert dict(registry["f"].dropped) == {"filtered": 2}


def test_drop_passes_the_batch_through_untouched_when_nothing_matches() -> None:
    unit = build({"type": "drop", "if": '"noise" in tags'})
    batch: Batch = [{"tags": ["x"]}]
    assert unit.process(batch) is batch


def test_drop_a_bad_condition_is_a_config_error_with_key_and_column() -> None:
    message = config_error({"type": "drop", "if": "level >= )"})
    assert "filters[0] (drop).if" in message
    assert "unexpected ')' at column 10" in message


def test_drop_requires_its_condition() -> None:
    assert "filters[0] (drop).if: required key is missing" in config_error({"type": "drop"})


# --------------------------------------------------------------------------- route

RULES = [{"name": "alerts", "if": "level >= ERROR"}, {"name": "audit", "if": '"audit" in tags'}]


def test_route_first_mode_names_only_the_first_matching_rule() -> None:
    unit = build({"type": "route", "rules": RULES})
    out = unit.process([{"level": "error", "tags": ["audit"]}, {"tags": ["audit"]}, {}])
    assert [event["route"] for event in out] == [["alerts"], ["audit"], []]


def test_route_all_mode_names_every_matching_rule_in_rule_order() -> None:
    unit = build({"type": "route", "rules": RULES, "mode": "all"})
    [event] = unit.process([{"level": "fatal", "tags": ["audit"]}])
    assert event["route"] == ["alerts", "audit"]


def test_route_default_names_events_no_rule_matches() -> None:
    unit = build({"type": "route", "rules": RULES, "default": "bulk", "field": "[@metadata][r]"})
    [event] = unit.process([{"level": "info", "@metadata": {"keep": 1}}])
    assert event["@metadata"] == {"keep": 1, "r": ["bulk"]}


def test_route_names_must_be_unique() -> None:
    rules = [{"name": "a", "if": "x"}, {"name": "a", "if": "y"}]
    assert "route names must be unique, repeated: a" in config_error(
        {"type": "route", "rules": rules}
    )


def test_route_a_bad_rule_condition_names_the_rule() -> None:
    message = config_error({"type": "route", "rules": [{"name": "a", "if": "x =="}]})
    assert "filters[0] (route).rules[0].if" in message


# --------------------------------------------------------------------------- redact

# Lines in the shapes the corpus has (devstack stack.sh xtrace, oslo.log, curl
# debug lines, Keystone middleware) and other common ones; the secrets are made up.
SECRET_LINES = [
    ("+ ADMIN_PASSWORD=Zq8fT2kLw9", "+ ADMIN_PASSWORD=***"),
    ("++ SERVICE_PASSWORD=Zq8fT2kLw9", "++ SERVICE_PASSWORD=***"),
    (
        "+ export OS_PASSWORD=Zq8fT2kLw9 OS_USERNAME=admin",
        "+ export OS_PASSWORD=*** OS_USERNAME=admin",
    ),
    (
        "+ mysql -uroot -pZq8fT2kLw9 -h127.0.0.1 -e 'DROP DATABASE IF EXISTS nova;'",
        "+ mysql -uroot -p*** -h127.0.0.1 -e 'DROP DATABASE IF EXISTS nova;'",
    ),
    (
        "+ sudo rabbitmqctl change_password guest Zq8fT2kLw9",
        "+ sudo rabbitmqctl change_password guest ***",
    ),
    (
        "+ iniset /etc/nova/nova.conf DEFAULT rabbit_password Zq8fT2kLw9",
        "+ iniset /etc/nova/nova.conf DEFAULT rabbit_password ***",
    ),
    (
        "+ iniset /etc/keystone/keystone.conf DEFAULT admin_token 5f0d9c1e",
        "+ iniset /etc/keystone/keystone.conf DEFAULT admin_token ***",
    ),
    (
        "+ keystone user-create --name=admin --pass=Zq8fT2kLw9 --email=a@example.com",
        "+ keystone user-create --name=admin --pass=*** --email=a@example.com",
    ),
    (
        "+ openstack --os-password Zq8fT2kLw9 server list",
        "+ openstack --os-password *** server list",
    ),
    ('{"password": "Zq8fT2kLw9", "user": "bob"}', '{"password": "***", "user": "bob"}'),
    ("{'admin_pass': u'Zq8fT2kLw9', 'name': 'vm'}", "{'admin_pass': u'***', 'name': 'vm'}"),
    (
        'payload={\\"ansible_password\\": \\"Zq8fT2kLw9\\"}',
        'payload={\\"ansible_password\\": \\"***\\"}',
    ),
    (
        "ansible_ssh_pass=Zq8fT2kLw9 ansible_become_pass=Zq8fT2kLw9",
        "ansible_ssh_pass=*** ansible_become_pass=***",
    ),
    (
        'REQ: curl -i http://10.0.0.1:9696/v2.0/ports.json -X GET -H "X-Auth-Token: MIIC+abc/9=="',
        'REQ: curl -i http://10.0.0.1:9696/v2.0/ports.json -X GET -H "X-Auth-Token: ***"',
    ),
    ("GET /v1?token=abc123&page=2 HTTP/1.1", "GET /v1?token=***&page=2 HTTP/1.1"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "Authorization: Basic ***"),
    (
        "headers={'Authorization': 'Bearer eyJhbGciOi.x1', 'Accept': '*/*'}",
        "headers={'Authorization': 'Bearer ***', 'Accept': '*/*'}",
    ),
    ("retrying with bearer 8f2b3c9d4e5f6a7b", "retrying with bearer ***"),
    (
        "connection = mysql://root:Zq8fT2kLw9@127.0.0.1/nova?charset=utf8",
        "connection = mysql://root:***@127.0.0.1/nova?charset=utf8",
    ),
    (
        "transport_url = rabbit://stackrabbit:Zq8fT2kLw9@10.0.0.5:5672/",
        "transport_url = rabbit://stackrabbit:***@10.0.0.5:5672/",
    ),
    ("Storing 78f56d82418b7fd476e866b1a64eb4f1 token in memcache", "Storing *** token in memcache"),
    ("Returning cached token 78f56d82418b7fd476e866b1a64eb4f1", "Returning cached token ***"),
    (
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "aws_secret_access_key = ***",
    ),
    ("using key AKIAIOSFODNN7EXAMPLE", "using key ***"),
    (
        "GRANT ALL ON *.* TO 'root'@'%' IDENTIFIED BY 'Zq8fT2kLw9';",
        "GRANT ALL ON *.* TO 'root'@'%' IDENTIFIED BY '***';",
    ),
    ("id_token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", "id_token=***"),
    (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----",
        "-----BEGIN OPENSSH PRIVATE KEY-----***-----END OPENSSH PRIVATE KEY-----",
    ),
    (
        "key: -----BEGIN RSA PRIVATE KEY-----\\nMIIEowIBAAKCAQEA (cut)",
        "key: -----BEGIN RSA PRIVATE KEY-----***",
    ),
    # What Ansible tasks and shells print (issue 12).
    (
        'ok: [db] => {"stdout": "The postgres password is 0a1b2c3d4e5f", '
        '"stdout_lines": ["The postgres password is 0a1b2c3d4e5f"]}',
        'ok: [db] => {"stdout": "The postgres password is ***", '
        '"stdout_lines": ["The postgres password is ***"]}',
    ),
    (
        '    "msg": "Generated password for user admin: Zq8fT2kLw9"',
        '    "msg": "Generated password for user admin: ***"',
    ),
    ("Password for admin set to Zq8fT2kLw9", "Password for admin set to ***"),
    ("vault_mysql_root: Zq8fT2kLw9", "vault_mysql_root: ***"),
    ("+ PGPASSWORD=Zq8fT2kLw9 psql -h db -U app", "+ PGPASSWORD=*** psql -h db -U app"),
    ("mysql -h db -u root -p Zq8fT2kLw9 -e 'select 1'", "mysql -h db -u root -p *** -e 'select 1'"),
    ("mariadb -uroot -pZq8fT2kLw9 app", "mariadb -uroot -p*** app"),
    ("amqp://guest:Zq8f@T2kLw9@mq:5672/", "amqp://guest:***@mq:5672/"),
]

CLEAN_LINES = [
    "keystone_authtoken.admin_password = **** log_opt_values",
    "rabbit_password                = ****** log_opt_values",
    "password_length                = 12 log_opt_values",
    "enable_instance_password       = True log_opt_values",
    "keystone_authtoken.token_cache_time = 300 log_opt_values",
    "Permission denied (publickey,password,keyboard-interactive).",
    '"password": null,',
    "bypass=1 compass=north tests_passed=10 PWD=/opt/stack",
    "gcc -pthread -I/usr/include/mysql -c _mysql.c -o _mysql.o",
    "GET /v2.0/tokens/revoked HTTP/1.1 200 686",
    "the bearer of bad news asked for bearer authentication",
    "Authenticating user token __call__",
    "http://example.com:8080/path@anchor",
    "ERROR: password is incorrect for user bob",
    "The password is required; password was not changed",
    "mysql -u root -p -e 'select 1'",
    "high throughput, ghost key lookups",
]


@pytest.mark.parametrize(("line", "expected"), SECRET_LINES, ids=[e for e, _ in SECRET_LINES])
def test_redact_masks_the_secret_and_keeps_the_rest_of_the_line(line: str, expected: str) -> None:
    registry = Registry()
    unit = build({"type": "redact"}, registry)
    [event] = unit.process([{"message": line}])
    assert event["message"] == expected
    assert registry["f"].redactions == expected.count("***")


@pytest.mark.parametrize("line", CLEAN_LINES)
def test_redact_leaves_lines_without_secrets_alone(line: str) -> None:
    registry = Registry()
    unit = build({"type": "redact"}, registry)
    assert unit.process([{"message": line}]) == [{"message": line}]
    assert registry["f"].redactions == 0


def test_redact_counts_each_secret_once_when_run_twice() -> None:
    registry = Registry()
    first, second = build({"type": "redact"}, registry), build({"type": "redact"}, registry, "g")
    events = [{"message": line} for line, _ in SECRET_LINES]
    out = second.process(first.process(events))
    assert [event["message"] for event in out] == [expected for _, expected in SECRET_LINES]
    assert registry["g"].redactions == 0


def test_redact_masks_fields_named_like_secrets_at_any_depth() -> None:
    unit = build({"type": "redact"})
    event = {
        "password": "a1",
        "request": {"headers": {"X-Auth-Token": "t1", "Accept": "x"}},
        "hosts": [{"ansible_ssh_pass": "p"}],
        "token_count": 3,
        "api_key": None,
        "PWD": "/opt/stack",
        "message": "ok",
    }
    [out] = unit.process([event])
    masked = {"X-Auth-Token": "***", "Accept": "x"}
    assert out == {
        "password": "***",
        "request": {"headers": masked},
        "hosts": [{"ansible_ssh_pass": "***"}],
        "token_count": 3,
        "api_key": None,
        "PWD": "/opt/stack",
        "message": "ok",
    }


def test_redact_settings_choose_fields_rules_replacement_and_extra_patterns() -> None:
    unit = build(
        {
            "type": "redact",
            "fields": ["[req][line]"],
            "rules": ["url_credentials"],
            "replacement": "[hidden]",
            "by_field_name": False,
            "patterns": [r"card=(?P<secret>\d{4})", r"SSN-\d+"],
        }
    )
    event = {
        "req": {"line": "amqp://u:p4ss@h/ password=x card=1234 SSN-99"},
        "password": "y",
        "message": "password=x",
    }
    [out] = unit.process([event])
    assert out["req"]["line"] == "amqp://u:[hidden]@h/ password=x card=[hidden] [hidden]"
    assert (out["password"], out["message"]) == ("y", "password=x")


def test_redact_rejects_a_bad_pattern_and_an_unknown_rule() -> None:
    assert "patterns[0] '(' is not a valid regex" in config_error(
        {"type": "redact", "patterns": ["("]}
    )
    assert "filters[0] (redact).rules[0]" in config_error({"type": "redact", "rules": ["pins"]})


def test_redact_finds_every_secret_in_the_shipped_shapes_of_the_corpus() -> None:
    """Every line above is masked; a batch of them costs one pass (a smoke check of order)."""
    unit = build({"type": "redact"})
    out = unit.process([{"message": line, "seq": n} for n, (line, _) in enumerate(SECRET_LINES)])
    assert [event["seq"] for event in out] == list(range(len(SECRET_LINES)))
    assert all("Zq8fT2kLw9" not in event["message"] for event in out)


SECRETS = st.text(
    alphabet="abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789", min_size=8, max_size=24
).filter(lambda s: any(c.isdigit() for c in s))
SHAPES = st.sampled_from(
    [
        "+ ADMIN_PASSWORD={}",
        "password={} user=x",
        '"password": "{}"',
        "{{'db_pass': '{}'}}",
        "--os-password {} --os-username admin",
        "mysql -uroot -p{} -e 'select 1'",
        "rabbitmqctl add_user stack {}",
        "iniset /etc/x.conf database admin_password {}",
        "X-Auth-Token: {}",
        "Authorization: Bearer {}",
        "https://user:{}@example.com/x",
        "token={}&a=1",
        "client_secret: {}",
        "IDENTIFIED BY '{}'",
    ]
)
NOISE = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=30)


@settings(max_examples=300, deadline=None)
@given(SHAPES, SECRETS, NOISE, NOISE)
def test_redact_never_lets_a_generated_secret_through(
    shape: str, secret: str, before: str, after: str
) -> None:
    assume(secret not in before + after)
    unit = build({"type": "redact"})
    line = f"{before} {shape.format(secret)}\n{after}"
    [event] = unit.process([{"message": line}])
    assert secret not in event["message"]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.dictionaries(st.text(max_size=10), st.text(max_size=10)))
def test_redact_never_raises_and_is_idempotent_on_arbitrary_text(
    text: str, extra: dict[str, str]
) -> None:
    registry = Registry()
    unit = build({"type": "redact"}, registry)
    [once] = unit.process([{**extra, "message": text}])
    counted = registry["f"].redactions
    [twice] = unit.process([dict(once)])
    assert twice == once
    assert registry["f"].redactions == counted


# --------------------------------------------------------------------------- mutate


def test_mutate_add_and_replace_interpolate_fields() -> None:
    unit = build(
        {
            "type": "mutate",
            "add": {"where": "%{host}/%{[app][name]}"},
            "replace": {"message": "[%{level}] %{message}"},
        }
    )
    [event] = unit.process(
        [{"host": "h", "app": {"name": "api"}, "level": "INFO", "message": "hi"}]
    )
    assert (event["where"], event["message"]) == ("h/api", "[INFO] hi")


def test_mutate_leaves_a_reference_to_a_missing_field_as_written() -> None:
    unit = build({"type": "mutate", "replace": {"x": "%{nope}-1"}})
    assert unit.process([{}]) == [{"x": "%{nope}-1"}]


def test_mutate_works_on_nested_fields() -> None:
    unit = build(
        {
            "type": "mutate",
            "rename": {"[a][b]": "[c][d]"},
            "remove": ["[a][gone]"],
            "add": {"[meta][env]": "ci"},
            "truncate": {"[c][d]": 2},
            "add_tags": ["from-%{host}"],
        }
    )
    [event] = unit.process([{"a": {"b": "long", "gone": 1}, "host": "h", "meta": {"env": "x"}}])
    assert event == {
        "a": {},
        "c": {"d": "lo"},
        "host": "h",
        "meta": {"env": "x"},
        "tags": ["from-h"],
    }


def test_mutate_keeps_non_string_values_as_they_are() -> None:
    unit = build({"type": "mutate", "replace": {"n": 5, "l": ["%{host}"]}})
    assert unit.process([{"host": "h"}]) == [{"host": "h", "n": 5, "l": ["%{host}"]}]


def test_mutate_rejects_a_bad_field_path() -> None:
    assert "bad field reference '[a'" in config_error({"type": "mutate", "remove": ["[a"]})


# --------------------------------------------------------------------------- sinks' when


def read(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def test_a_sink_with_when_receives_only_matching_events_through_a_real_pipeline(
    tmp_path: Path,
) -> None:
    config = parse_config(
        {
            "inputs": [INPUT],
            "filters": [
                {
                    "type": "route",
                    "rules": [{"name": "audit", "if": '"audit" in tags'}],
                    "default": "bulk",
                }
            ],
            "sinks": [
                {"type": "file", "id": "all", "path": str(tmp_path / "all.ndjson")},
                {
                    "type": "file",
                    "id": "errors",
                    "path": str(tmp_path / "errors.ndjson"),
                    "when": "level >= ERROR",
                },
                {
                    "type": "file",
                    "id": "audit",
                    "path": str(tmp_path / "audit.ndjson"),
                    "when": '"audit" in route',
                },
            ],
        }
    )
    pipeline = build_pipeline(config, BuildContext(registry=Registry()))
    levels = ["info", "error", "warn", "CRITICAL", "debug", "fatal"]
    events = [
        {"seq": n, "level": levels[n % 6], "tags": ["audit"] if n % 4 == 0 else []}
        for n in range(60)
    ]

    async def scenario() -> None:
        await pipeline.start()
        for start in range(0, 60, 7):
            pipeline.ingest.push([dict(e) for e in events[start : start + 7]])
        await pipeline.stop()

    asyncio.run(scenario())
    assert [e["seq"] for e in read(tmp_path / "all.ndjson")] == list(range(60))
    errors = [e["seq"] for e in read(tmp_path / "errors.ndjson")]
    assert errors == [n for n in range(60) if n % 6 in (1, 3, 5)]
    assert [e["seq"] for e in read(tmp_path / "audit.ndjson")] == list(range(0, 60, 4))
    registry = pipeline.registry
    for name, expected in (("all", 60), ("errors", 30), ("audit", 15)):
        metrics = registry[name]
        assert metrics.events_in == metrics.events_out == expected
        assert metrics.events_unselected == 60 - expected
        assert not metrics.dropped  # passed over is not dropped
    exposition = registry.exposition().decode()
    assert 'logstream_events_unselected_total{kind="sink",unit="errors"} 30.0' in exposition


def test_a_sink_without_when_has_the_plain_offer_path() -> None:
    registry = Registry()
    runner = SinkRunner(CollectingSink("s", registry), SinkSettings())
    assert runner.offer.__func__ is SinkRunner._offer_blocking  # type: ignore[attr-defined]


def test_a_selecting_sink_offers_nothing_for_a_batch_with_no_match() -> None:
    registry = Registry()
    sink = CollectingSink("s", registry)
    settings_ = SinkSettings(batch_max_delay_secs=0, when=lambda event: event["n"] > 100)

    async def scenario() -> None:
        source = ListInput("in", registry, [[{"n": n} for n in range(10)]])
        pipeline = Pipeline([source], [], [SinkRunner(sink, settings_)], registry=registry)
        await pipeline.start()
        await asyncio.wait_for(source.done.wait(), 5)
        await pipeline.stop()

    asyncio.run(scenario())
    assert sink.batches == []
    assert (registry["s"].events_in, registry["s"].events_unselected) == (0, 10)


def test_a_bad_when_is_a_config_error_naming_the_sink_key() -> None:
    with pytest.raises(ConfigError, match=r"sinks\[0\] \(stdout\)\.when: .*unexpected '=' at col"):
        parse_config({"inputs": [INPUT], "sinks": [{"type": "stdout", "when": "level = ERROR"}]})
