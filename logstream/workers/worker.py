"""One worker process: ``python -m logstream.workers.worker``, started by the supervisor.

The supervisor writes one JSON line to the worker's stdin (:class:`WorkerSpec`:
the raw config, the local servers' URLs, the worker's index, how many run) and
keeps stdin open: end of file there means the supervisor is gone, and the
worker shuts down as on SIGTERM. The worker answers on its stdout, one JSON
object per line (its own logs go to stderr, as with one process):

- ``{"ready": PID}`` once every input listens;
- ``{"metrics": TEXT}`` every ``metrics_interval_secs``: its Prometheus text;
- ``{"final": {...}}`` at the end: the shutdown report, the final counters of each
  unit and the final metrics;
- ``{"error": TEXT}`` when it cannot start (then it exits with status 2).

Anything else the process prints to stdout (a library's stray ``print``) goes to
stderr: the worker keeps a private copy of the real stdout for the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from logstream.config import ConfigError, build_pipeline, parse_config
from logstream.secrets import install_log_masking, mask_text
from logstream.units import BuildContext
from logstream.workers.layout import worker_dir

log = logging.getLogger("logstream.worker")

_PR_SET_PDEATHSIG = 1


@dataclass
class WorkerSpec:
    """What the supervisor tells a worker at start (one JSON line on its stdin)."""

    config: Any  # the YAML document as loaded, before substitution
    worker: int
    workers: int
    state_dir: str
    local_urls: dict[str, str] = field(default_factory=dict)
    log_level: str = "INFO"
    metrics_interval_secs: float = 1.0
    # The config file: SIGHUP (forwarded by the supervisor) reloads it.
    config_path: str | None = None

    def to_line(self) -> bytes:
        return orjson.dumps(asdict(self)) + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> WorkerSpec:
        return cls(**orjson.loads(line))


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
        reload.install(loop, signal.SIGHUP, pipeline, reloading)
    try:
        await pipeline.start()
    except OSError as error:
        channel.send(error=mask_text(str(error)))
        await pipeline.stop(config.pipeline.shutdown_timeout_secs)
        return 2
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
    channel.send(
        final={
            "report": asdict(report),
            "units": [unit.snapshot() for unit in registry.units()],
            "metrics": registry.exposition().decode(),
        }
    )
    return 0 if report.clean else 1


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
    from logstream.run import run_loop

    code: int = run_loop(serve(spec, channel))
    return code


if __name__ == "__main__":
    sys.exit(main())
