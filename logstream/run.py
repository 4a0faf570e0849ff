"""`logstream run`: start local servers if asked, the pipeline and the monitor; stop on a signal."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, TextIO

from logstream import __version__
from logstream.config import (
    Config,
    ConfigError,
    build_pipeline,
    local_needs,
    parse_config,
    read_yaml,
    substitute_env,
)
from logstream.inputs.beats import BeatsInputConfig
from logstream.inputs.file import FileInputConfig
from logstream.inputs.http import HttpInputConfig
from logstream.inputs.syslog import SyslogInputConfig
from logstream.inputs.tcp import TcpInputConfig
from logstream.inputs.udp import UdpInputConfig
from logstream.monitor import Monitor
from logstream.pipeline import Pipeline, ShutdownReport
from logstream.sinks.elasticsearch import ElasticsearchSinkConfig
from logstream.sinks.mqtt import MqttSinkConfig
from logstream.units import BuildContext

log = logging.getLogger("logstream")


class LocalServer(Protocol):
    @property
    def url(self) -> str: ...

    def stop(self) -> None: ...


@contextlib.contextmanager
def local_servers(needs: set[str], state_dir: Path) -> Iterator[dict[str, str]]:
    """Start the local servers a config asks for; yield their URLs; stop them after."""
    started: list[LocalServer] = []
    urls: dict[str, str] = {}
    try:
        if "mqtt" in needs:
            from logstream.local.mosquitto import Mosquitto

            broker = Mosquitto(state_dir / "mosquitto")
            broker.start()
            started.append(broker)
            urls["mqtt"] = broker.url
            log.info("started local mosquitto at %s", broker.url)
        if "elasticsearch" in needs:
            from logstream.local.noida import Noida

            noida = Noida(state_dir / "noida-db")
            noida.start()
            started.append(noida)
            urls["elasticsearch"] = noida.url
            log.info("started local noida-db (Elasticsearch API) at %s", noida.url)
        yield urls
    finally:
        for server in reversed(started):
            try:
                server.stop()
            except Exception:
                log.exception("stopping a local server failed")


def _command() -> str:
    """How the user can run logstream again: plain ``logstream`` when it is on PATH."""
    argv0 = sys.argv[0]
    if os.path.basename(argv0) == "logstream" and shutil.which("logstream") != argv0:
        return os.path.relpath(argv0) if os.path.isabs(argv0) else argv0
    return "logstream"


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
    lines.append("Watch them:")
    names = config.unit_names()
    for sink in config.sinks:
        if isinstance(sink, ElasticsearchSinkConfig):
            where = " (local noida-db)" if "elasticsearch" in local else ""
            host = sink.hosts[0]
            lines.append(f"  Elasticsearch   {host}{where}")
            lines.append(
                f"      curl -s -XPOST '{host}/_refresh' >/dev/null; "
                f"curl -s '{host}/_search?q=*&size=5'"
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
            lines.append(f"  MQTT            {sink.url}{where}, {sink.encoding} payloads")
            lines.append(f"      {_command()} tail --url {sink.url} '{topic}'")
            if sink.encoding == "json":
                lines.append(f"      mosquitto_sub -h {host} -p {port or 1883} -t '{topic}' -v")
        else:
            lines.append(f"  {sink.type:<15} {getattr(sink, 'path', '')}")
    if monitor is not None:
        lines.append(f"Metrics: {monitor.url}/metrics   Health: {monitor.url}/health")
    lines.append("Stop with Ctrl-C (SIGINT) or SIGTERM.")
    print("\n".join(lines), file=out, flush=True)


async def serve(config: Config, local: dict[str, str], out: TextIO) -> ShutdownReport:
    """Run the pipeline until SIGINT or SIGTERM, then shut it down gracefully."""
    pipeline: Pipeline = build_pipeline(config, BuildContext(state_dir=config.state_dir))
    tune_gc()
    monitor = Monitor(pipeline, config.monitor.listen) if config.monitor.enabled else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await pipeline.start()
    try:
        if monitor is not None:
            await monitor.start()
        banner(config, monitor, local, out)
        await stop.wait()
        log.info("signal received: stopping inputs, flushing sinks")
    finally:
        report = await pipeline.stop(config.pipeline.shutdown_timeout_secs)
        if monitor is not None:
            await monitor.stop()
    for unit in pipeline.registry.units():
        log.info("final counters: %s", unit.snapshot())
    return report


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for a stream of short-lived dicts.

    Events are acyclic dicts freed by reference counting, but each one counts
    as a container allocation: with the default threshold (700) the collector
    runs every few hundred events and walks every event still buffered. We
    move everything allocated at start-up out of its reach (``gc.freeze``) and
    run it far less often. Measured with benchmarks/throughput.py (file
    target): about 1.5x fewer CPU seconds per event.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)


def run_loop(coro: Any) -> Any:
    """Run ``coro`` on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def run(config_path: Path, out: TextIO = sys.stdout) -> int:
    """The `logstream run` command. Returns the process exit code."""
    data = read_yaml(config_path)
    try:
        parse_config(data)  # fail on a bad config before starting any server
        state_dir = Path(
            (data.get("state_dir") if isinstance(data, dict) else None) or ".logstream"
        )
        needs = local_needs(substitute_env(data, os.environ))
    except ConfigError as error:
        raise ConfigError(f"{config_path}:\n{error}") from None
    with local_servers(needs, state_dir) as urls:
        config = parse_config(data, local_urls=urls or None)
        report = run_loop(serve(config, urls, out))
    if report.clean:
        log.info("shutdown complete: every event flushed")
        return 0
    log.error("shutdown: events not flushed: %s", report.unflushed)
    return 1
