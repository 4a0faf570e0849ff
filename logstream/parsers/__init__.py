"""Log line parsers, one module per family of formats; used by the ``parse`` filter.

Formats, in the order auto-detection tries them:

==================  =======================================================  ==============
format              lines                                                    module
==================  =======================================================  ==============
``oslo``            ``2013-09-27 18:22:35.392 6602 AUDIT cinder.api [-] msg``  oslo
``ansible_log``     ``2022-02-06 10:52:00,874 p=41 u=root |  TASK [x] ***``    ansible
``console``         ``2014-03-17 16:11:24.173 | + cmd``, bare ``+ cmd``        console
``journal``         ``Mar 28 12:20:44.172534 host unit[pid]: msg``, ``-- ... --``  syslog
``syslog``          ``<13>Jun  9 15:41:36 host tag[pid]: msg`` (PRI optional)  syslog
``rfc5424``         ``<165>1 2003-10-11T22:14:15.003Z host app pid msgid [sd] m``  syslog
``apache_access``   Apache/nginx common and combined access logs                 web
``apache_error``    ``[Sun Dec 04 04:47:44 2005] [error] [client 1.2.3.4] msg``    web
``nginx_error``     ``2016/09/01 12:00:00 [error] 1234#0: *1 msg``               web
``awx_event``       AWX job events (the event itself, or JSON in the message)  ansible
``ansible_logstash``  events of Ansible's logstash callback (same)              ansible
``ansible_stdout``  ``ansible-playbook`` output (``TASK [x] ***``, ``ok: [h]``)  ansible
==================  =======================================================  ==============

The default field set (Logstash style; ``fields: ecs`` renames them, see
:mod:`logstream.parsers.ecs`). A parser sets only the fields its line has.

================  ==========================================================
``@timestamp``    the line's time, UTC ISO 8601 with milliseconds and ``Z``
``message``       the text after the line's header (access logs: the whole line)
``format``        the format's name (table above)
``level``         severity on the one scale (:mod:`logstream.severity`)
``level_original``  the source's own level text when it differs (``AUDIT``,
                  ``TRACE``, ``warn``, ``changed``, ``runner_on_ok``)
``host``          the host the line names (syslog, journal, RFC 5424)
``program``       the program (syslog tag, journal unit, RFC 5424 app-name)
``pid``           process id (int); ``thread_id`` (int) for web error logs
``logger``        logger name (oslo, ansible ``n=``, Apache module)
``request_id``    oslo request id (``req-...``); ``user_id``, ``project_id``,
                  ``instance_id`` from the oslo context
``function``, ``file``, ``line``  source location (oslo DEBUG suffix)
``syslog_facility``, ``syslog_severity``, ``syslog_msgid``, ``syslog_sd``,
``syslog_procid``  ``<PRI>`` numbers, RFC 5424 MSGID, structured data and a
                  PROCID that is not a number
``client``, ``user``, ``method``, ``url``, ``http_version``, ``status``,
``bytes``, ``referrer``, ``user_agent``, ``error_code``, ``error_message``,
``vhost``, ``vhost_port``, ``forwarded_for``   web logs
``command``       the command of a bash xtrace line
``ansible_*``     ``ansible_host``, ``ansible_task``, ``ansible_play``,
                  ``ansible_playbook``, ``ansible_event``, ``ansible_job``,
                  ``ansible_changed`` (Ansible formats)
================  ==========================================================
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from logstream.clock import Clock
from logstream.parsers import ansible, console, oslo, syslog, web
from logstream.parsers.common import Fields, Parser, Timestamps

__all__ = ["FORMATS", "Fields", "Parser", "Timestamps", "build_parsers"]

FORMATS: Final = (
    oslo.NAME,
    ansible.ANSIBLE_LOG,
    console.NAME,
    syslog.JOURNAL,
    syslog.SYSLOG,
    syslog.RFC5424,
    web.ACCESS,
    web.APACHE_ERROR,
    web.NGINX_ERROR,
    ansible.AWX,
    ansible.LOGSTASH,
    ansible.STDOUT,
)


def build_parsers(
    clock: Clock, zone: dt.tzinfo | None = None
) -> tuple[Timestamps, dict[str, Parser]]:
    """Every parser, by format name in detection order, sharing one timestamp cache."""
    stamps = Timestamps(clock, zone)
    parsers: list[Parser] = [
        oslo.OsloParser(stamps),
        ansible.LogParser(stamps),
        console.ConsoleParser(stamps),
        syslog.SyslogParser(stamps, journal=True),
        syslog.SyslogParser(stamps, journal=False),
        syslog.Rfc5424Parser(stamps),
        web.AccessParser(stamps),
        web.ApacheErrorParser(stamps),
        web.NginxErrorParser(stamps),
        ansible.AwxParser(stamps),
        ansible.LogstashCallbackParser(),
        ansible.StdoutParser(),
    ]
    by_name = {parser.name: parser for parser in parsers}
    if tuple(by_name) != FORMATS:  # a bug in this module, never input
        raise RuntimeError("parsers and FORMATS disagree")
    return stamps, by_name
