"""The three kinds of unit (input, filter, sink): their contracts and config bases.

Each unit comes as a pair, as in Vector: a ``*Config`` pydantic model that
validates the user's settings (unknown keys rejected) and a runtime object
that ``Config.build(ctx)`` returns. All checking and all choosing of fast
paths happens in ``build``, so the per-batch code has no option branches.

The runtime (:mod:`logstream.pipeline`) owns the buffers, the tasks, the
batching and the counting of what crosses a buffer; units only do their job
and count what is theirs (bytes written, events a destination refused).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from logstream.clock import Clock, SystemClock
from logstream.conditions import Predicate, check_condition, compile_condition
from logstream.event import Batch
from logstream.metrics import Registry, UnitMetrics

if TYPE_CHECKING:
    from logstream.buffer import BatchBuffer

WhenFull = Literal["block", "drop_newest"]


@dataclass
class BuildContext:
    """What ``Config.build`` may use besides its own settings."""

    registry: Registry = field(default_factory=Registry)
    clock: Clock = field(default_factory=SystemClock)
    # Where units keep state (spools, checkpoints, local servers' data).
    state_dir: Path = field(default_factory=lambda: Path(".logstream"))
    # Worker processes (``pipeline.workers``): this process's index and how many run
    # on the host. With several workers, ``state_dir`` is the worker's own directory
    # and ``shared_dir`` is one directory every worker of the host sees (host-wide
    # budgets, locks). With one worker both are the configured state_dir.
    worker: int = 0
    workers: int = 1
    shared_dir: Path | None = None

    @property
    def host_dir(self) -> Path:
        """The directory shared by every worker of this host."""
        return self.shared_dir if self.shared_dir is not None else self.state_dir


class UnitConfig(BaseModel):
    """Settings every unit has. Subclasses add a ``type: Literal[...]`` tag."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ClassVar[Literal["input", "filter", "sink"]]
    type: str
    id: str | None = Field(
        default=None, description="Name of the unit in metrics and logs (default: its type)."
    )


class Unit:
    """Base of runtime units: a name and the unit's counters."""

    def __init__(self, name: str, metrics: UnitMetrics) -> None:
        self.name = name
        self.metrics = metrics


# --------------------------------------------------------------------------- inputs


class InputConfig(UnitConfig):
    kind: ClassVar[Literal["input"]] = "input"

    def build(self, name: str, ctx: BuildContext) -> Input:
        raise NotImplementedError


class Input(Unit, abc.ABC):
    """Receives events from outside and hands them to the ingest buffer as batches.

    Lifecycle: ``start`` once, then ``stop`` once (also when ``start`` failed
    half-way). Both run on the event loop.
    """

    # Set before ``start`` when several worker processes listen on the same address
    # (``pipeline.workers``): listening sockets bind with SO_REUSEPORT, so the kernel
    # spreads connections and datagrams over the workers.
    reuse_port: bool = False

    @abc.abstractmethod
    async def start(self, ingest: BatchBuffer) -> None:
        """Bind sockets or open files and begin delivering batches to ``ingest``.

        Returns once the input is ready to accept (a listening socket is bound),
        not when it ends. Raises ``OSError`` if it cannot bind; nothing else.

        Flow control is the input's duty: a stream input that cannot await uses
        ``ingest.push`` and, when ``ingest.full``, pauses reading until
        ``ingest.call_when_drained`` calls back; a datagram input uses
        ``ingest.offer`` and counts refusals as ``ingest_full`` drops.
        Every event delivered is counted in ``metrics.events_in``.
        """

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop accepting, close connections, deliver any complete data already read.

        After it returns the input delivers nothing more. Must not raise; may
        be called without ``start`` having finished. A partial line left by a
        client that is still connected is delivered tagged, not lost.
        """


# --------------------------------------------------------------------------- filters


class FilterConfig(UnitConfig):
    kind: ClassVar[Literal["filter"]] = "filter"

    when: str | None = Field(
        default=None,
        description=(
            "A condition (logstream.conditions): the filter is applied only to the events "
            "that match; the others pass it by, in their place in the stream."
        ),
    )

    @field_validator("when")
    @classmethod
    def _valid_when(cls, value: str | None) -> str | None:
        return None if value is None else check_condition(value)

    def selector(self) -> Predicate | None:
        """The compiled ``when`` condition, or ``None`` when the filter takes every event."""
        return None if self.when is None else compile_condition(self.when).test

    def build(self, name: str, ctx: BuildContext) -> Filter:
        raise NotImplementedError


class Filter(Unit):
    """Transforms batches on the pipeline's filter task.

    Filters are synchronous and must not block (no I/O): they run one batch
    at a time, in arrival order, between the ingest buffer and the sinks.

    ``fails_closed`` says what the runtime does with a batch when ``process``
    raises: ``False`` (fail open, the default) passes the batch on unfiltered,
    which suits filters that only add or reshape (parse, mutate, sample: an
    unsampled batch costs bandwidth, loses nothing); ``True`` (fail closed)
    sends the batch to the dead-letter file
    ``<state_dir>/dead-letters/filter-<name>.ndjson`` and counts it as dropped
    (``filter_error``), never to the sinks: for filters whose job is to keep
    data out of the sinks (redact, drop), where passing it on would leak it.

    ``when`` (set by the runtime from the config's ``when``): the filter sees
    only the events that match; the others pass it by in their place.
    """

    fails_closed: ClassVar[bool] = False
    when: Predicate | None = None

    def process(self, batch: Batch) -> Batch:
        """Return the batch to pass on: the same list changed in place, or a new one.

        May change, add or remove events. An event removed on purpose is counted
        on ``metrics`` with reason ``filtered``. Must not raise for bad events
        (tag them instead); if it raises anyway, the runtime logs the error,
        counts it and, as ``fails_closed`` says, passes the batch on unfiltered
        or dead-letters it.
        """
        return batch

    def tick(self, now: float) -> Batch:
        """Called about every ``tick_secs`` with the monotonic time; return events
        that are now due (a multiline group whose flush timeout passed, an
        accounting record). Default: nothing."""
        return []

    def flush(self) -> Batch:
        """Called once at shutdown, after the last ``process``: return every event
        still held back. Not called on an abrupt shutdown."""
        return []


# --------------------------------------------------------------------------- sinks


class SinkConfig(UnitConfig):
    """Settings the runtime applies around every sink: its buffer and batching."""

    kind: ClassVar[Literal["sink"]] = "sink"

    buffer_max_events: int = Field(
        default=20_000,
        ge=1,
        description="Events the sink's own buffer holds (plus one batch being assembled).",
    )
    when_full: WhenFull = Field(
        default="block",
        description="block: backpressure reaches the inputs; drop_newest: refuse and count.",
    )
    batch_max_events: int = Field(default=1_000, ge=1, description="Events per write() at most.")
    batch_max_delay_secs: float = Field(
        default=0.2,
        ge=0,
        description="How long a partly filled batch may wait for more events.",
    )
    when: str | None = Field(
        default=None,
        description=(
            "A condition (logstream.conditions): the sink is offered only the events "
            "that match. Events passed over are counted as unselected, not dropped."
        ),
    )

    @field_validator("when")
    @classmethod
    def _valid_condition(cls, value: str | None) -> str | None:
        return None if value is None else check_condition(value)

    def selector(self) -> Predicate | None:
        """The compiled ``when`` condition, or ``None`` when the sink takes everything."""
        return None if self.when is None else compile_condition(self.when).test

    def build(self, name: str, ctx: BuildContext) -> Sink:
        raise NotImplementedError


class Sink(Unit, abc.ABC):
    """Delivers batches to a destination, on the sink's own task.

    The runtime feeds each sink from its own bounded buffer, so a slow or dead
    sink stalls only itself; its ``when_full`` policy decides what happens
    upstream when its buffer fills.

    A sink with ``spooled`` true keeps its own buffer on disk: the runtime then
    calls ``write`` straight from the filter task (no memory buffer, no task),
    and ``write`` returns once the batch is in the spool.
    """

    spooled: bool = False

    async def start(self) -> None:
        """Called once before the first ``write``. Prepare clients and files.

        Must not fail because the destination is down (``write`` retries or
        counts); raises only for settings that cannot work (unreadable CA file).
        """

    @abc.abstractmethod
    async def write(self, batch: Batch) -> None:
        """Deliver ``batch`` (non-empty, in arrival order, events read-only).

        May await as long as delivery takes: that is the sink's backpressure.
        Counts ``metrics.events_out`` / ``bytes_out`` for what it delivered and
        ``metrics.drop`` for what it gave up on, with the reason. If it raises,
        the runtime counts the whole batch as dropped (``sink_error``) and goes on.
        Cancelled at shutdown once the deadline passes.
        """

    async def close(self) -> None:
        """Called once after the last ``write``: flush and release resources.

        Not called on an abrupt shutdown (``kill -9``) nor after ``start`` failed.
        """
