"""``logstream run`` with ``pipeline.workers`` above 1, once the config is checked.

``logstream run`` loads and checks the config (the config's models, every
unit's module: some 60 MiB of a Python process) and prepares the state
directory, then ``exec``s ``python -m logstream.workers.supervise FD``: the same
process (same pid, same terminal, same run lock) starts again without any of
that, reads its :class:`~logstream.workers.protocol.SupervisorSpec` from the
unlinked file behind FD, starts the local servers and supervises the workers
(:class:`~logstream.workers.supervisor.Supervisor`). The supervisor so costs
the memory of a bare interpreter, asyncio and the metrics parser.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import NoReturn, TextIO

from logstream.local.servers import local_servers
from logstream.loop import run_loop
from logstream.secrets import install_log_masking, mask_text
from logstream.shutdown import ShutdownReport
from logstream.statelock import release
from logstream.workers.protocol import SupervisorSpec
from logstream.workers.supervisor import Supervisor, WorkerFailed

log = logging.getLogger("logstream")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def become_supervisor(spec: SupervisorSpec) -> NoReturn:
    """Replace this process with the supervisor (keeping ``spec.lock_fd``)."""
    with tempfile.TemporaryFile() as spec_file:  # unlinked: nothing left on disk
        spec_file.write(spec.to_bytes())
        spec_file.flush()
        fd = os.dup(spec_file.fileno())
    os.set_inheritable(fd, True)
    os.set_inheritable(spec.lock_fd, True)
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable, "-m", "logstream.workers.supervise", str(fd)]
    os.execv(sys.executable, argv)  # noqa: S606 - our own interpreter, fixed arguments


def read_spec(fd: int) -> SupervisorSpec:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    os.close(fd)
    return SupervisorSpec.from_bytes(b"".join(chunks))


async def supervise(spec: SupervisorSpec, local: dict[str, str], out: TextIO) -> ShutdownReport:
    """Run the workers until SIGINT or SIGTERM, then stop them all."""
    supervisor = Supervisor(
        spec.config,
        spec.workers,
        Path(spec.state_dir),
        local,
        shutdown_timeout_secs=spec.shutdown_timeout_secs,
        log_level=spec.log_level,
        config_path=Path(spec.config_path),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, supervisor.reload)
    try:
        await supervisor.start()
    except WorkerFailed as error:
        raise OSError(f"pipeline.workers {spec.workers}: {error}") from None
    try:
        out.write(supervisor.banner)
        pids = ", ".join(str(pid) for pid in supervisor.pids)
        print(f"{spec.workers} worker processes (pids {pids}) share the inputs.", file=out)
        out.flush()
        await stop.wait()
        log.info("signal received: stopping %d workers", spec.workers)
    finally:
        report = await supervisor.stop()
    restarts = sum(view.restarts for view in supervisor.metrics.views)
    if restarts:
        log.warning("workers restarted during the run: %d", restarts)
    log.info("final counters (every worker):\n%s", supervisor.counters_table())
    return report


def main(argv: list[str]) -> int:
    spec = read_spec(int(argv[1]))
    os.set_inheritable(spec.lock_fd, False)  # not to the local servers nor the workers
    logging.basicConfig(level=spec.log_level, format=LOG_FORMAT, stream=sys.stderr)
    install_log_masking()
    try:
        with local_servers(set(spec.needs), Path(spec.state_dir)) as urls:
            report: ShutdownReport = run_loop(supervise(spec, urls, sys.stdout))
    except (OSError, RuntimeError) as error:
        print(f"logstream: {mask_text(str(error))}", file=sys.stderr)
        return 1
    finally:
        release(spec.lock_fd)
    (log.info if report.clean else log.error)("%s", report.summary())
    return 0 if report.clean else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
