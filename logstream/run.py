"""`logstream run`: start local servers if asked, the pipeline and the monitor; stop on a signal."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TextIO

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
from logstream.local.servers import local_servers
from logstream.loop import run_loop
from logstream.metrics import counters_table
from logstream.monitor import Monitor, PipelineSource
from logstream.pipeline import Pipeline
from logstream.shutdown import ShutdownReport
from logstream.statelock import acquire, release, state_lock
from logstream.units import BuildContext
from logstream.web import tail_page
from logstream.workers.layout import prepare_state
from logstream.workers.protocol import SupervisorSpec
from logstream.workers.supervise import become_supervisor

log = logging.getLogger("logstream")


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


# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2


def tune_malloc() -> bool:
    """Keep glibc's malloc from returning freed memory to the kernel after every batch.

    A batch's encoded events (Elasticsearch documents, MQTT lines, NDJSON) are
    byte strings of a few hundred bytes that Python's own allocator passes to
    malloc; freed together at the end of a batch, they leave the top of the
    heap free, glibc gives it back to the kernel (above 128 KiB by default),
    and the next batch faults the same pages in again, zeroed: here, encoding
    1,000 events into a list cost 1.7 us each that way and 0.25 us with these
    settings (keep up to 32 MiB free at the top; grow by 8 MiB more than
    asked). Returns whether they were set (not on other C libraries).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library of this process
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_TRIM_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TOP_PAD, 8 << 20))


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
    tune_malloc()


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
    checked = parse_config(data)
    workers = checked.pipeline.worker_count()
    if workers > 1:
        lock = acquire(state_dir)
        try:
            run_loop(prepare_state(data, state_dir, workers))  # what another worker count left
        except BaseException:
            release(lock)
            raise
        become_supervisor(
            SupervisorSpec(
                config=data,
                config_path=str(config_path),
                workers=workers,
                state_dir=str(state_dir),
                needs=sorted(needs),
                shutdown_timeout_secs=checked.pipeline.shutdown_timeout_secs,
                log_level=logging.getLevelName(logging.getLogger().level),
                lock_fd=lock,
            )
        )
    with state_lock(state_dir):
        run_loop(prepare_state(data, state_dir, workers))  # what another worker count left
        with local_servers(needs, state_dir) as urls:
            config = parse_config(data, local_urls=urls or None, worker=0)
            report = run_loop(serve(config, urls, out, config_path))
    (log.info if report.clean else log.error)("%s", report.summary())
    return 0 if report.clean else 1
