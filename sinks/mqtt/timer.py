"""The sink's timer task: runs ``service(now)``, then sleeps until the time it
returned or until something wakes it (``schedule``, ``wake``).

The sink's ``service`` seals payloads whose delay passed, pumps queues as
tokens and room come, runs the samplers' windows and the accounting
(:meth:`.sink.MqttSink._service`); this module only owns the task, its
wake-ups and its stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable

from logstream.clock import Clock

log = logging.getLogger("logstream.sinks.mqtt")


class WakeTimer:
    """One asyncio task calling ``service(now) -> next time`` until :meth:`stop`.

    An exception in ``service`` is logged, ``on_error()`` is called and the
    task goes on ``retry_secs`` later: a bug there must not end the sink's
    timer for good.
    """

    def __init__(
        self,
        name: str,
        clock: Clock,
        service: Callable[[float], float],
        *,
        on_error: Callable[[], None],
        retry_secs: float,
    ) -> None:
        self.name = name
        self._clock = clock
        self._service = service
        self._on_error = on_error
        self._retry_secs = retry_secs
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._next_wake = math.inf

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"mqtt-timer:{self.name}")

    def schedule(self, at: float) -> None:
        """Make the task wake by ``at``."""
        if at < self._next_wake:
            self._next_wake = at
            self._wake.set()

    def wake(self) -> None:
        """Run ``service`` again now."""
        self._wake.set()

    async def stop(self) -> None:
        # [3] The flag ends the loop even if a cancellation were lost.
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        clock = self._clock
        while not self._stopping:
            try:
                next_at = self._service(clock.monotonic())
            except Exception:
                log.exception("sink %s: timer task failed; going on", self.name)
                self._on_error()
                next_at = clock.monotonic() + self._retry_secs
            self._next_wake = next_at
            self._wake.clear()
            delay = next_at - clock.monotonic()
            if delay > 0:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a
                # cancellation that comes as the wait ends ([3] stop).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
            else:
                await asyncio.sleep(0)
