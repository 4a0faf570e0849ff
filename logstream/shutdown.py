"""What a shutdown managed (:class:`ShutdownReport`): kept apart from the pipeline so
that the supervisor of several workers can sum the workers' reports without
importing the pipeline's machinery."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ShutdownReport:
    """What a shutdown managed: events that could not be flushed, per sink."""

    unflushed: dict[str, int] = field(default_factory=dict)
    timed_out: bool = False
    # Events kept on disk for the next start (a sink's spool, the ingest queue): not lost,
    # not delivered either.
    on_disk: dict[str, int] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.timed_out and not any(self.unflushed.values())

    def summary(self) -> str:
        """One line for the log: what was lost, else what waits on disk, else all flushed."""
        kept = ", ".join(f"{name} {count}" for name, count in self.on_disk.items() if count)
        if not self.clean:
            lost = ", ".join(f"{name} {count}" for name, count in self.unflushed.items() if count)
            text = f"shutdown: events not flushed (dropped, reason shutdown): {lost or 'none'}"
            if self.timed_out:
                text += " (deadline passed)"
            return text + (f"; kept on disk for the next start: {kept}" if kept else "")
        if kept:
            return (
                f"shutdown complete: nothing dropped; events kept on disk, delivered at "
                f"the next start: {kept}"
            )
        return "shutdown complete: every event flushed"
