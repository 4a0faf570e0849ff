"""`logstream run`: start local servers if asked, the pipeline and the monitor; stop on a signal."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, TextIO

from logstream import reload
from logstream.banner import banner
from logstream.config import (
    Config,
    ConfigError,
    build_pipeline,
    local_needs,
    parse_config,
    read_yaml,
    substitute_env,
)
from logstream.metrics import counters_table
from logstream.monitor import Monitor, PipelineSource
from logstream.pipeline import Pipeline, ShutdownReport
from logstream.statelock import state_lock
from logstream.tail import MQTT_URL_FILE
from logstream.units import BuildContext
from logstream.web import tail_page
from logstream.workers.layout import prepare_state
from logstream.workers.supervisor import Supervisor, WorkerFailed

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

            broker = Mosquitto(
                state_dir / "mosquitto", websockets=True, url_file=state_dir / MQTT_URL_FILE
            )
            broker.start()
            started.append(broker)
            urls["mqtt"] = broker.url
            urls["mqtt_websockets"] = broker.websockets_url
            log.info("started local mosquitto at %s", broker.url)
        if "elasticsearch" in needs:
            from logstream.local.noida import Noida

            noida = Noida(state_dir / "noida-db")
            noida.start()
            started.append(noida)
            urls["elasticsearch"] = noida.url
            log.info("started local noida-db (Elasticsearch API) at %s", noida.url)
        if "nats" in needs:
            from logstream.local.nats import LocalNats

            nats_server = LocalNats(state_dir / "nats")
            nats_server.start()
            started.append(nats_server)
            urls["nats"] = nats_server.url
            log.info("local JetStream nats-server at %s", nats_server.url)
        yield urls
    finally:
        for server in reversed(started):
            try:
                server.stop()
            except Exception:
                log.exception("stopping a local server failed")


async def serve(
    config: Config, local: dict[str, str], out: TextIO, path: Path | None = None
) -> ShutdownReport:
    """Run the pipeline until SIGINT or SIGTERM, then shut it down gracefully.
    SIGHUP reloads ``path`` (logstream.reload)."""
    ctx = BuildContext(state_dir=config.state_dir)
    pipeline: Pipeline = build_pipeline(config, ctx)
    tune_gc()
    monitor = (
        Monitor(PipelineSource(pipeline), config.monitor, tail_page(config))
        if config.monitor.enabled
        else None
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if path is not None:
        reloading = reload.ReloadContext(config, ctx, local, path)
        reload.install(loop, signal.SIGHUP, pipeline, reloading)
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
    log.info("final counters:\n%s", counters_table(pipeline.registry.units()))
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
    workers = parse_config(data).pipeline.worker_count()
    with state_lock(state_dir):
        run_loop(prepare_state(data, state_dir, workers))  # what another worker count left
        with local_servers(needs, state_dir) as urls:
            config = parse_config(data, local_urls=urls or None, worker=0 if workers == 1 else None)
            if workers == 1:
                report = run_loop(serve(config, urls, out, config_path))
            else:
                report = run_loop(supervise(data, config, urls, workers, out, config_path))
    (log.info if report.clean else log.error)("%s", report.summary())
    return 0 if report.clean else 1


async def supervise(
    data: Any,
    config: Config,
    local: dict[str, str],
    workers: int,
    out: TextIO,
    path: Path | None = None,
) -> ShutdownReport:
    """Run ``workers`` worker processes until SIGINT or SIGTERM, then stop them all."""
    supervisor = Supervisor(
        data,
        workers,
        config.state_dir,
        local,
        shutdown_timeout_secs=config.pipeline.shutdown_timeout_secs,
        config_path=path,
    )
    monitor = (
        Monitor(supervisor, config.monitor, tail_page(config)) if config.monitor.enabled else None
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, supervisor.reload)
    try:
        await supervisor.start()
    except WorkerFailed as error:
        raise OSError(f"pipeline.workers {workers}: {error}") from None
    try:
        if monitor is not None:
            await monitor.start()
        banner(config, monitor, local, out)
        pids = ", ".join(str(pid) for pid in supervisor.pids)
        print(f"{workers} worker processes (pids {pids}) share the inputs.", file=out, flush=True)
        await stop.wait()
        log.info("signal received: stopping %d workers", workers)
    finally:
        report = await supervisor.stop()
        if monitor is not None:
            await monitor.stop()
    restarts = sum(view.restarts for view in supervisor.metrics.views)
    if restarts:
        log.warning("workers restarted during the run: %d", restarts)
    log.info("final counters (every worker):\n%s", supervisor.counters_table())
    return report
