"""The startup banner: where to send logs and how to watch them."""

from __future__ import annotations

import os
import shutil
import sys
from typing import TYPE_CHECKING, TextIO
from urllib.parse import quote, unquote

from logstream import __version__
from logstream.inputs.beats import BeatsInputConfig
from logstream.inputs.file import FileInputConfig
from logstream.inputs.http import HttpInputConfig
from logstream.inputs.nats import NatsInputConfig
from logstream.inputs.syslog import SyslogInputConfig
from logstream.inputs.tcp import TcpInputConfig
from logstream.inputs.udp import UdpInputConfig
from logstream.secrets import mask_text, mask_url
from logstream.sinks.elasticsearch import ElasticsearchSinkConfig
from logstream.sinks.mqtt import Broker, MqttSinkConfig
from logstream.sinks.nats import NatsSinkConfig

if TYPE_CHECKING:
    from logstream.config import Config
    from logstream.monitor import Monitor


def _command() -> str:
    """How the user can run logstream again: plain ``logstream`` when it is on PATH."""
    argv0 = sys.argv[0]
    if os.path.basename(argv0) == "logstream" and shutil.which("logstream") != argv0:
        return os.path.relpath(argv0) if os.path.isabs(argv0) else argv0
    return "logstream"


def _user(url: str) -> str | None:
    """The user name in ``url``'s userinfo, if any."""
    netloc = url.partition("://")[2].partition("/")[0]
    userinfo, at, _ = netloc.rpartition("@")
    if not at:
        return None
    return unquote(userinfo.partition(":")[0]) or None


def _without_userinfo(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    return f"{scheme}{sep}{netloc.rpartition('@')[2]}{slash}{tail}"


def _with_own_user(broker: Broker, username: str | None) -> str:
    """The broker's URL, with its user when it has one of its own (never a password)."""
    if broker.username is None or broker.username == username:
        return str(broker.url)
    scheme, _, rest = broker.url.partition("://")
    return f"{scheme}://{quote(broker.username, safe='')}@{rest}"


def _mosquitto_sub(sink: MqttSinkConfig, host: str, port: str, topic: str) -> str:
    """A mosquitto_sub command that prints the sink's events as text."""
    tls = " --capath /etc/ssl/certs" if sink.url.startswith("mqtts://") else ""
    user = f" -u '{sink.username}' -P \"$LOGSTREAM_MQTT_PASSWORD\"" if sink.username else ""
    base = f"mosquitto_sub -h {host} -p {port}{tls}{user} -t '{topic}'"
    if sink.encoding == "lz4":
        # One LZ4 frame per message; lz4 reads them in a row, and unbuffered it prints
        # each as it comes (zstd's command waits for more input, so it gets sizes only).
        return f"{base} -N | stdbuf -i0 -o0 lz4 -dc"
    if sink.encoding == "zstd":
        return f"{base} -F '%t %l bytes (zstd)'"
    return f"{base} -v"


def _monitor_lines(config: Config, monitor: Monitor) -> list[str]:
    lines = [f"Metrics: {monitor.url}/metrics   Health: {monitor.url}/health"]
    name = monitor.settings.username
    if name is not None:
        # The password never reaches the terminal: the user types it in place of ***.
        lines.append(f"      curl -u '{name}:***' {monitor.url}/metrics")
    top = f"{_command()} top --url {monitor.url}"
    if name is not None:
        top += f" --user '{name}'   (password: $LOGSTREAM_MONITOR_PASSWORD)"
    if any(isinstance(sink, MqttSinkConfig) for sink in config.sinks):
        lines.append(f"Tail page: {monitor.url}/tail   Dashboard: {top}")
    else:
        lines.append(f"Dashboard: {top}")
    return lines


def banner(config: Config, monitor: Monitor | None, local: dict[str, str], out: TextIO) -> None:
    """Tell the user where to send logs and how to watch them."""
    lines = [f"logstream {__version__} is running. Send logs to:"]
    for unit in config.inputs:
        if isinstance(unit, TcpInputConfig):
            host, _, port = unit.listen.rpartition(":")
            lines.append(
                f"  TCP json_lines  {unit.listen}   python-logstash: "
                f"logstash.TCPLogstashHandler('{host}', {port}, version=1)"
            )
        elif isinstance(unit, UdpInputConfig):
            lines.append(f"  UDP json        {unit.listen}")
        elif isinstance(unit, BeatsInputConfig):
            lines.append(f"  Beats (lumberjack v2)  {unit.listen}")
        elif isinstance(unit, SyslogInputConfig):
            lines.append(f"  syslog          {unit.listen} ({unit.protocol})")
        elif isinstance(unit, HttpInputConfig):
            scheme = "https" if unit.tls is not None else "http"
            lines.append(
                f"  HTTP POST       {scheme}://{unit.listen}{unit.path}   "
                "(JSON, JSON array or NDJSON)"
            )
        elif isinstance(unit, FileInputConfig):
            lines.append(f"  files           {', '.join(unit.paths)} (tailed)")
        elif isinstance(unit, NatsInputConfig):
            where = " (local nats-server)" if "nats" in local else ""
            lines.append(
                f"  NATS JetStream  stream {unit.stream}, consumer {unit.consumer} at "
                f"{unit.described_servers()}{where}"
            )
    lines.append("Watch them:")
    names = config.unit_names()
    for sink in config.sinks:
        if isinstance(sink, ElasticsearchSinkConfig):
            where = " (local noida-db)" if "elasticsearch" in local else ""
            host = mask_url(sink.hosts[0])  # the curl line asks for the password (-u)
            user = _user(sink.hosts[0]) or sink.username
            auth = f"-u '{user}' " if user else ""
            lines.append(f"  Elasticsearch   {host}{where}")
            bare = _without_userinfo(sink.hosts[0])
            lines.append(
                f"      curl -s {auth}-XPOST '{bare}/_refresh' >/dev/null; "
                f"curl -s {auth}'{bare}/_search?q=*&size=5'"
            )
            if sink.dead_letters.enabled:
                name = names[id(sink)]
                dlq = sink.dead_letters.path or config.state_dir / "dead-letters" / f"{name}.ndjson"
                lines.append(f"      refused events: {dlq} ({_command()} replay --dlq {dlq})")
        elif isinstance(sink, MqttSinkConfig):
            where = " (local mosquitto)" if "mqtt" in local else ""
            hostport = sink.url.split("://", 1)[-1].rsplit("@", 1)[-1]
            host, _, port = hostport.partition(":")
            root = sink.topic.split("{", 1)[0].rstrip("/") or "#"
            topic = f"{root}/#" if root != "#" else "#"
            urls = [_with_own_user(broker, sink.username) for broker in sink.brokers]
            lines.append(f"  MQTT            {', '.join(urls)}{where}, {sink.encoding} payloads")
            user = f" --username '{sink.username}'" if sink.username else ""
            follow = " ".join(f"--url {each}" for each in urls)
            lines.append(f"      {_command()} tail {follow}{user} '{topic}'")
            lines.append(f"      {_mosquitto_sub(sink, host, port or '1883', topic)}")
            if sink.websockets_url:
                lines.append(f"      MQTT over WebSockets (browsers): {sink.websockets_url}")
        elif isinstance(sink, NatsSinkConfig):
            where = " (local nats-server)" if "nats" in local else ""
            lines.append(
                f"  NATS JetStream  {sink.described_servers()}{where}, stream {sink.stream} "
                f"({', '.join(sink.subjects_of_stream())}), {sink.encoding} envelopes"
            )
        else:
            lines.append(f"  {sink.type:<15} {getattr(sink, 'path', '')}")
    if monitor is not None:
        lines.extend(_monitor_lines(config, monitor))
    lines.append("Stop with Ctrl-C (SIGINT) or SIGTERM.")
    # Whatever a URL setting held, no password reaches the terminal.
    print(mask_text("\n".join(lines)), file=out, flush=True)
