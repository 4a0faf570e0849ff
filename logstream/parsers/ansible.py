"""Ansible: ansible.log, playbook stdout, AWX job events, the logstash callback's events.

::

    2022-02-06 10:52:00,874 p=41 u=root n=ansible |  TASK [Gathering Facts] *****   (ansible_log)
    2022-02-06 10:53:19,019 p=58 u=root |  spine-02 | UNREACHABLE! => {
        "changed": false,                                  (folds into the line above)
    TASK [Install packages] ********************************      (ansible_stdout)
    fatal: [web-1]: FAILED! => {"changed": false, "msg": "no package"}

``ansible.log`` (``log_path``) is playbook output with a timestamp, PID,
user and logger in front; the text after ``| `` is read like stdout. Every
version's prefix is read (see ``_LOG_LINE``): ``p=PID u=USER |`` (up to 2.7),
``p=USER u=PID |`` (2.8, 2.9), ``p=PID u=USER n=LOGGER |`` (2.10 to 2.16) and
``p=PID u=USER n=LOGGER LEVEL|`` (2.17 on, whose level a line without a
result word takes).
Lines of playbook output and their severity:

==========================================  ======================================
``PLAY [..]``, ``TASK [..]``,               INFO (``ansible_play`` / ``ansible_task``)
``RUNNING HANDLER [..]``, ``PLAY RECAP``,
``PLAYBOOK:``, ``META:``, ``included:``
``ok: [host]``, ``skipping: [host]``        INFO (``ansible_host``; ``level_original``)
``changed: [host]``                         NOTICE
``fatal: [host]``, ``failed: [host]``       ERROR
``host | SUCCESS =>`` / ``CHANGED`` /       INFO / NOTICE / ERROR / ERROR (ad-hoc runs)
``FAILED!`` / ``UNREACHABLE!``
``[WARNING]:``, ``[DEPRECATION WARNING]:``  WARNING
``ERROR!``                                  ERROR
recap ``host : ok=3 changed=1 ...``         INFO, ERROR when failed or unreachable > 0
``<host> SSH: EXEC ...`` (``-vvv``)         DEBUG
==========================================  ======================================

In stdout, other lines (JSON result bodies, ``...ignoring``, diffs) continue
the record above them. In ``ansible.log`` an unprefixed line continues the
record above; a prefixed line of other text is a record stating no level.

AWX job events (``event``, ``event_data``, ``stdout`` with ANSI colours,
``created``) and the events of Ansible's ``logstash`` callback plugin
(``status`` OK/FAILED/UNREACHABLE/SKIPPED, ``ansible_type``, ...) are
recognised as the event itself (as the tcp input decoded them) or as a
JSON object in the message.
"""

from __future__ import annotations

import re
from typing import Any, Final

import orjson

from logstream.event import Event
from logstream.parsers.common import (
    DIGITS,
    Continues,
    Fields,
    LevelInfo,
    Timestamps,
    compiled,
    strip_ansi,
)
from logstream.severity import Severity, parse_name

ANSIBLE_LOG: Final = "ansible_log"
STDOUT: Final = "ansible_stdout"
AWX: Final = "awx_event"
LOGSTASH: Final = "ansible_logstash"

_INFO: Final = Severity.INFO.name
_NOTICE: Final = Severity.NOTICE.name
_WARNING: Final = Severity.WARNING.name
_ERROR: Final = Severity.ERROR.name
_DEBUG: Final = Severity.DEBUG.name

# Result words of playbook output -> (level, original).
_RESULTS: Final[dict[str, LevelInfo]] = {
    "ok": (_INFO, "ok"),
    "skipping": (_INFO, "skipping"),
    "included": (_INFO, "included"),
    "changed": (_NOTICE, "changed"),
    "fatal": (_ERROR, "fatal"),
    "failed": (_ERROR, "failed"),
    "unreachable": (_ERROR, "unreachable"),
}
# Ad-hoc (`ansible host -m ping`) results.
_ADHOC_RESULTS: Final[dict[str, LevelInfo]] = {
    "SUCCESS": (_INFO, "SUCCESS"),
    "CHANGED": (_NOTICE, "CHANGED"),
    "FAILED!": (_ERROR, "FAILED"),
    "UNREACHABLE!": (_ERROR, "UNREACHABLE"),
}
_BANNERS: Final = (
    ("TASK [", "ansible_task"),
    ("PLAY [", "ansible_play"),
    ("RUNNING HANDLER [", "ansible_task"),
)
_PLAIN_BANNERS: Final = ("PLAY RECAP", "PLAYBOOK: ", "META: ", "PLAY [")
_RESULT: Final = re.compile(r"(ok|changed|skipping|fatal|failed|unreachable): \[([^\]]{1,300})\]")
_INCLUDED: Final = re.compile(r"included: .+ for (\S+)")
_ADHOC: Final = re.compile(
    r"(\S{1,300}) \| (SUCCESS|CHANGED|FAILED!|UNREACHABLE!)(?: =>|\s*\|| \(|$)"
)
_RECAP: Final = re.compile(
    r"(\S{1,300})\s+: ok=(\d{1,9})\s+changed=(\d{1,9})\s+unreachable=(\d{1,9})\s+failed=(\d{1,9})",
    re.ASCII,
)


def classify(text: str, fields: Fields) -> bool:
    """Fill ``fields`` from a line of playbook output (already left-stripped).

    Returns ``False`` when the text is none of the known lines (``fields``
    unchanged). ``message`` is not set here.
    """
    first = text[:1]
    if first in "TPRM":
        for prefix, key in _BANNERS:
            if text.startswith(prefix):
                end = text.find("]", len(prefix))
                if end > 0:
                    fields[key] = text[len(prefix) : end]
                    fields["level"] = _INFO
                    return True
        if text.startswith(_PLAIN_BANNERS):
            fields["level"] = _INFO
            return True
    if first in "ocsfui":
        match = _RESULT.match(text)
        if match is not None:
            word, host = match.groups()
            fields["level"], fields["level_original"] = _RESULTS[word]
            fields["ansible_host"] = host
            return True
        included = _INCLUDED.match(text)
        if included is not None:
            fields["level"], fields["level_original"] = _RESULTS["included"]
            fields["ansible_host"] = included.group(1)
            return True
    if first == "[":
        if text.startswith("[WARNING]"):
            fields["level"] = _WARNING
            return True
        if text.startswith("[DEPRECATION WARNING]"):
            fields["level"], fields["level_original"] = _WARNING, "DEPRECATION WARNING"
            return True
        if text.startswith("[ERROR]"):
            fields["level"] = _ERROR
            return True
    if first == "E" and text.startswith("ERROR!"):
        fields["level"], fields["level_original"] = _ERROR, "ERROR!"
        return True
    if first == "<":
        end = text.find("> ", 1)
        if 0 < end < 300:
            fields["level"] = _DEBUG
            fields["ansible_host"] = text[1:end]
            return True
    if " | " in text[:302]:
        adhoc = _ADHOC.match(text)
        if adhoc is not None:
            host, word = adhoc.groups()
            fields["level"], fields["level_original"] = _ADHOC_RESULTS[word]
            fields["ansible_host"] = host
            return True
    if ": ok=" in text:
        recap = _RECAP.match(text)
        if recap is not None:
            host, _ok, _changed, unreachable, failed = recap.groups()
            bad = int(unreachable) or int(failed)
            fields["level"] = _ERROR if bad else _INFO
            fields["ansible_host"] = host
            return True
    return False


class StdoutParser:
    """ansible-playbook's default stdout callback, as a terminal or CI console shows it."""

    name: str = STDOUT
    folds: bool = True
    starts: str | None = None
    timestamped: bool = False
    states_level: bool = True
    continues: Continues | None = None

    def parse(self, line: str, event: Event) -> Fields | None:
        text = line.lstrip(" ") if line[:1] == " " else line
        if "\x1b" in text:
            text = strip_ansi(text)
        fields: Fields = {"format": STDOUT}
        if not text or not classify(text, fields):
            return None
        fields["message"] = text
        return fields


# ansible.log as lib/ansible/utils/display.py has written it (``%(asctime)s`` is
# ``YYYY-MM-DD HH:MM:SS,mmm``):
#   1.x - 2.7    '%(asctime)s %(name)s %(message)s', logger "p=<pid> u=<user> | "
#                -> "... p=4284 u=root |  text"
#   2.8 - 2.9    '%(asctime)s p=%(user)s u=%(process)d | %(message)s'
#                -> "... p=root u=4284 | text" (user and pid the other way round)
#   2.10 - 2.16  '%(asctime)s p=%(process)d u=%(user)s n=%(name)s | %(message)s'
#   2.17 -       '%(asctime)s p=%(process)d u=%(user)s n=%(name)s %(levelname)s| %(message)s'
# The PID is whichever of p= and u= is a number (p= when both are).
_LOG_LINE: Final = re.compile(
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) p=(\S*) u=(\S*)(?: n=(\S*))?"
    r"(?: ([A-Z]{3,8}))? ?\| ?(.*)\Z",
    re.DOTALL | re.ASCII,
)
_LOGGING_LEVELS: Final = {
    name: parse_name(name).name
    for name in ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL")
}


class LogParser:
    """ansible.log (``log_path``), every version's prefix."""

    name: str = ANSIBLE_LOG
    folds: bool = True
    starts: str | None = DIGITS
    timestamped: bool = True
    states_level: bool = False
    continues: Continues | None = None

    def __init__(self, stamps: Timestamps) -> None:
        self._match = _LOG_LINE.match
        self._stamps = stamps
        self._known_stamps = stamps.known_local
        fast = compiled("_ansible_fast")
        if fast is not None:  # the same reading, without the regex for the prefix
            self.parse = fast.AnsibleLog(  # type: ignore[method-assign]
                ANSIBLE_LOG,
                self._known_stamps,
                stamps.local,
                _LOGGING_LEVELS,
                classify,
                self.parse,  # for the rare lines where the regex backtracks
            ).parse

    def parse(self, line: str, event: Event) -> Fields | None:
        match = self._match(line)
        if match is None:
            return None
        stamp, millis, first, second, logger, logged_level, text = match.groups()
        prefix = self._known_stamps.get(stamp) or self._stamps.local(stamp)
        if prefix is None:
            return None
        if first.isdigit() and first.isascii():
            pid, user = first, second
        elif second.isdigit() and second.isascii():
            pid, user = second, first  # Ansible 2.8 and 2.9
        else:
            pid, user = "", second
        if text[:1] == " ":
            text = text.lstrip(" ")
        if "\x1b" in text:
            text = strip_ansi(text)
        fields: Fields = {
            "@timestamp": f"{prefix}.{millis}Z",
            "format": ANSIBLE_LOG,
            "message": text,
        }
        if pid and len(pid) <= 10:
            fields["pid"] = int(pid)
        if user:
            fields["user"] = user
        if logger:
            fields["logger"] = logger
        if text:
            classify(text, fields)
        if logged_level and "level" not in fields:
            # ansible-core 2.17+ writes its logging level ("n=ansible INFO| ...").
            level = _LOGGING_LEVELS.get(logged_level)
            if level is not None:
                fields["level"] = level
        return fields


# --------------------------------------------------------------------------- event-shaped


def _json_object(line: str) -> dict[str, Any] | None:
    if line[:1] != "{" or line[-1:] != "}":
        return None
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return value if type(value) is dict else None


_AWX_LEVELS: Final = {
    "runner_on_failed": _ERROR,
    "runner_item_on_failed": _ERROR,
    "runner_on_async_failed": _ERROR,
    "runner_on_unreachable": _ERROR,
    "runner_on_skipped": _INFO,
    "runner_item_on_skipped": _INFO,
    "warning": _WARNING,
    "deprecated": _WARNING,
    "system_warning": _WARNING,
    "error": _ERROR,
    "verbose": _DEBUG,
    "debug": _DEBUG,
}
_AWX_OK: Final = ("runner_on_ok", "runner_item_on_ok", "runner_on_async_ok")
_AWX_OTHER: Final = (
    "playbook_on_",
    "runner_",
)


def _is_awx(source: dict[str, Any]) -> bool:
    name = source.get("event")
    return (
        type(name) is str
        and ("event_data" in source or "stdout" in source)
        and (name in _AWX_LEVELS or name.startswith(_AWX_OTHER))
    )


class AwxParser:
    """AWX / Ansible Tower job events (``/api/v2/jobs/N/job_events/``, external logging)."""

    name: str = AWX
    folds: bool = False
    starts: str | None = None  # the event itself may be the job event
    timestamped: bool = True
    states_level: bool = True
    continues: Continues | None = None

    def __init__(self, stamps: Timestamps) -> None:
        self._stamps = stamps

    def parse(self, line: str, event: Event) -> Fields | None:
        source: dict[str, Any] | None = event if _is_awx(event) else None
        if source is None:
            source = _json_object(line)
            if source is None or not _is_awx(source):
                return None
        name: str = source["event"]
        fields: Fields = {"format": AWX, "ansible_event": name}
        level = _AWX_LEVELS.get(name)
        if level is None:
            level = _NOTICE if name in _AWX_OK and source.get("changed") is True else _INFO
        if source.get("failed") is True:  # a failed runner event, or stats of a failed run
            level = _ERROR
        fields["level"] = level
        fields["level_original"] = name
        created = source.get("created")
        if type(created) is str:
            stamp = self._stamps.iso(created)
            if stamp is not None:
                fields["@timestamp"] = stamp
        stdout = source.get("stdout")
        if type(stdout) is str and stdout:
            fields["message"] = strip_ansi(stdout).replace("\r\n", "\n").rstrip("\n")
        else:
            display = source.get("event_display")
            fields["message"] = display if type(display) is str else name
        for key, target in (
            ("host_name", "ansible_host"),
            ("task", "ansible_task"),
            ("play", "ansible_play"),
            ("playbook", "ansible_playbook"),
            ("job", "ansible_job"),
        ):
            value = source.get(key)
            if value not in (None, ""):
                fields[target] = value
        changed = source.get("changed")
        if type(changed) is bool:
            fields["ansible_changed"] = changed
        return fields


_STATUS: Final[dict[str, LevelInfo]] = {
    "OK": (_INFO, "OK"),
    "SKIPPED": (_INFO, "SKIPPED"),
    "FAILED": (_ERROR, "FAILED"),
    "UNREACHABLE": (_ERROR, "UNREACHABLE"),
}


class LogstashCallbackParser:
    """Events of Ansible's ``logstash`` callback plugin (community.general and its forks)."""

    name: str = LOGSTASH
    folds: bool = False
    starts: str | None = None  # the event itself may be the callback's
    timestamped: bool = False
    states_level: bool = False
    continues: Continues | None = None

    def parse(self, line: str, event: Event) -> Fields | None:
        if type(event.get("ansible_type")) is str and "status" in event:
            source = event
            fields: Fields = {"format": LOGSTASH}
        else:
            decoded = _json_object(line)
            if decoded is None or type(decoded.get("ansible_type")) is not str:
                return None
            source = decoded
            fields = {
                "format": LOGSTASH,
                "message": str(decoded.get("message", line)),
            }
            for key, value in decoded.items():
                if key.startswith("ansible_") and len(key) > 8:
                    fields[key] = value
        status = source.get("status")
        info = _STATUS.get(status.upper()) if type(status) is str else None
        if info is not None:
            if info[0] == _INFO and source.get("ansible_changed") is True:
                info = (_NOTICE, info[1])
            fields["level"], fields["level_original"] = info
        return fields
