"""One worker process: ``python -m logstream.workers.worker``, started by the supervisor.

The supervisor writes one JSON line to the worker's stdin (:class:`WorkerSpec`:
the raw config, the local servers' URLs, the worker's index, how many run) and
keeps stdin open: end of file there means the supervisor is gone, and the
worker shuts down as on SIGTERM. The worker answers on its stdout, one JSON
object per line (its own logs go to stderr, as with one process):

- ``{"ready": PID}`` once every input and its monitor listen (worker 0 adds
  ``"banner"``: the text that tells the user where to send logs);
- ``{"metrics": TEXT}`` every ``metrics_interval_secs``: its Prometheus text;
- ``{"final": {...}}`` at the end: the shutdown report, the final counters of each
  unit and the final metrics;
- ``{"error": TEXT}`` when it cannot start (then it exits with status 2);
- ``{"reloaded": DOCUMENT}`` when a SIGHUP reload was applied: the YAML document,
  which the supervisor gives the workers it starts from then on.

Each worker also serves the monitor address (shared, as the inputs'): what it
serves there is the host's view that the supervisor writes
(:mod:`logstream.workers.hostview`).

Anything else the process prints to stdout (a library's stray ``print``) goes to
stderr: the worker keeps a private copy of the real stdout for the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import io
import logging
import os
import signal
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from logstream.banner import banner
from logstream.config import Config, ConfigError, build_pipeline, parse_config
from logstream.secrets import install_log_masking, mask_text
from logstream.units import BuildContext
from logstream.workers.hostview import HostSource
from logstream.workers.layout import worker_dir
from logstream.workers.protocol import WorkerSpec

if TYPE_CHECKING:
    from logstream.monitor import Monitor
    from logstream.pipeline import Pipeline

log = logging.getLogger("logstream.worker")

_PR_SET_PDEATHSIG = 1


class Channel:
    """The worker's half of the protocol: JSON lines on the real stdout."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def send(self, **message: Any) -> None:
        try:
            self._out.write(orjson.dumps(message) + b"\n")
            self._out.flush()
        except (BrokenPipeError, ValueError):
            pass  # the supervisor is gone: stdin's end of file stops us


def die_with_parent() -> None:
    """Ask Linux for SIGTERM when the supervisor dies, however it dies (stdin's end
    of file covers other platforms)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class _StdinWatch(asyncio.Protocol):
    """Sets ``stop`` when the supervisor's end of stdin closes."""

    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._stop.is_set():
            log.warning("the supervisor is gone: stopping")
        self._stop.set()


async def serve(spec: WorkerSpec, channel: Channel) -> int:
    """Run the pipeline as worker ``spec.worker`` until told to stop."""
    from logstream.run import tune_gc

    root = Path(spec.state_dir)
    try:
        config = parse_config(spec.config, local_urls=spec.local_urls or None, worker=spec.worker)
        state = worker_dir(root, spec.worker, spec.workers)
        state.mkdir(parents=True, exist_ok=True)
        ctx = BuildContext(
            state_dir=state, worker=spec.worker, workers=spec.workers, shared_dir=root
        )
        pipeline = build_pipeline(config, ctx)
    except (ConfigError, OSError) as error:
        channel.send(error=mask_text(str(error)))
        return 2
    tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await loop.connect_read_pipe(lambda: _StdinWatch(stop), sys.stdin)
    if spec.config_path is not None:
        from logstream import reload

        reloading = reload.ReloadContext(config, ctx, spec.local_urls, Path(spec.config_path))
        reload.install(
            loop, signal.SIGHUP, pipeline, reloading, lambda data: channel.send(reloaded=data)
        )
    monitor = None
    try:
        await pipeline.start()
        if config.monitor.enabled:
            monitor = host_monitor(config, pipeline, root)
            await monitor.start()
    except OSError as error:
        channel.send(error=mask_text(str(error)))
        await pipeline.stop(config.pipeline.shutdown_timeout_secs)
        return 2
    if spec.worker == 0:
        text = io.StringIO()  # paths as configured, `{worker}` and all
        as_configured = parse_config(spec.config, local_urls=spec.local_urls or None, worker=None)
        banner(as_configured, monitor, spec.local_urls, text)
        channel.send(ready=os.getpid(), banner=text.getvalue())
    else:
        channel.send(ready=os.getpid())
    registry = pipeline.registry

    async def publish() -> None:
        while True:
            await asyncio.sleep(spec.metrics_interval_secs)
            channel.send(metrics=registry.exposition().decode())

    publisher = asyncio.create_task(publish(), name="metrics to the supervisor")
    try:
        await stop.wait()
        log.info("stopping inputs, flushing sinks")
    finally:
        publisher.cancel()
        report = await pipeline.stop(config.pipeline.shutdown_timeout_secs)
        if monitor is not None:
            await monitor.stop()
    channel.send(
        final={
            "report": asdict(report),
            "units": [unit.snapshot() for unit in registry.units()],
            "metrics": registry.exposition().decode(),
        }
    )
    return 0 if report.clean else 1


def host_monitor(config: Config, pipeline: Pipeline, state_dir: Path) -> Monitor:
    """This worker's part of the monitor address: the host's view, not its own."""
    from logstream.monitor import Monitor, PipelineSource
    from logstream.web import tail_page

    source = HostSource(state_dir, PipelineSource(pipeline))
    return Monitor(source, config.monitor, tail_page(config), reuse_port=True)


def main() -> int:
    spec = WorkerSpec.from_line(sys.stdin.buffer.readline())
    # The protocol keeps the real stdout; fd 1 becomes stderr for everything else.
    channel = Channel(os.fdopen(os.dup(1), "wb"))
    os.dup2(2, 1)
    logging.basicConfig(
        level=spec.log_level,
        format=f"%(asctime)s %(levelname)s [worker {spec.worker}] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    install_log_masking()
    logging.getLogger("elastic_transport").setLevel(max(logging.WARNING, logging.root.level))
    die_with_parent()
    from logstream.loop import run_loop

    code: int = run_loop(serve(spec, channel))
    return code


if __name__ == "__main__":
    sys.exit(main())
