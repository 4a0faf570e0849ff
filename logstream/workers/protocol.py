"""What the supervisor and its workers tell each other at start (kept free of heavy
imports: the supervisor loads neither the pipeline nor the config's models)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import orjson


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


@dataclass
class SupervisorSpec:
    """What ``logstream run`` hands the supervisor it becomes (``exec``): the config
    was checked and the state prepared; the rest is the supervisor's job."""

    config: Any  # the YAML document as loaded, before substitution
    config_path: str
    workers: int
    state_dir: str
    needs: list[str]  # the local servers to start
    shutdown_timeout_secs: float
    log_level: str
    lock_fd: int  # holds state_dir's run lock across the exec

    def to_bytes(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_bytes(cls, data: bytes) -> SupervisorSpec:
        return cls(**orjson.loads(data))
