"""Reload on SIGHUP: apply a changed config to the running pipeline.

``kill -HUP <pid>`` makes ``logstream run`` read its config file again and
check it exactly as ``logstream check`` does (validation, addresses, building
every new unit). An invalid config changes nothing: each error is logged and
the pipeline runs on as it was. A valid one is applied unit by unit, by name
(a unit's ``id``, else its type) and settings:

- an input whose type and settings are unchanged keeps running: same
  listening socket, same client connections, nothing re-read;
- a changed or removed input is stopped as at shutdown (what it read goes on
  through the pipeline), then a changed or new one is started;
- filters and sinks are swapped by the filter task between two batches, so no
  batch is half filtered or half offered; an unchanged filter keeps its state
  (a multiline group, a sampling counter); a removed or changed filter gives up
  what it held back (``flush``) through the rest of the old chain first;
- a removed or changed sink is drained and closed as at shutdown (everything
  in its buffer written, within ``pipeline.shutdown_timeout_secs``; what is
  not is counted as dropped, reason ``shutdown``) before its replacement
  starts, so a spool or a file is never open twice;
- ``pipeline``, ``monitor`` and ``state_dir`` are not changed by a reload:
  a change there is logged as needing a restart, the rest is applied.

Events are neither lost nor duplicated by a reload: the ingest buffer (or disk
queue) between the inputs and the filters is never touched, and every event
is offered to the sinks of exactly one configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from logstream.config import (
    Config,
    ConfigError,
    build_filter,
    build_sink_runner,
    local_needs,
    parse_config,
    read_yaml,
    substitute_env,
)
from logstream.pipeline import Pipeline, SinkRunner, start_input
from logstream.units import BuildContext, Filter, Input, UnitConfig

log = logging.getLogger("logstream.reload")

U = TypeVar("U")


@dataclass
class ReloadContext:
    """What a reload needs besides the pipeline: the config it runs now, the local
    servers' URLs, and the build context (registry, clock) of the running units."""

    config: Config
    build: BuildContext
    local_urls: dict[str, str] = field(default_factory=dict)
    path: Path | None = None


@dataclass
class ReloadResult:
    """What a reload did, unit names per change; ``errors`` when it applied nothing."""

    errors: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)

    @property
    def applied(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        if self.errors:
            return f"reload refused, the running config is unchanged ({len(self.errors)} errors)"
        parts = [
            f"{label}: {', '.join(names)}"
            for label, names in (
                ("kept", self.kept),
                ("started", self.started),
                ("stopped", self.stopped),
                ("failed to start", self.failed),
            )
            if names
        ]
        return "reload applied; " + ("; ".join(parts) or "nothing changed")


def _by_name(config: Config, units: Sequence[UnitConfig]) -> dict[str, UnitConfig]:
    names = config.unit_names()
    return {names[id(unit)]: unit for unit in units}


def _unchanged(name: str, old: dict[str, UnitConfig], new: dict[str, UnitConfig]) -> bool:
    return name in old and old[name] == new[name]


def _restart_needed(old: Config, new: Config) -> list[str]:
    return [
        f"{key} changed: it takes effect at the next restart"
        for key in ("pipeline", "monitor", "state_dir")
        if getattr(old, key) != getattr(new, key)
    ]


def load_for_reload(path: Path, ctx: ReloadContext) -> tuple[Any, Config]:
    """Read and check ``path`` as ``check`` does, with this run's local servers: the
    YAML document and its config. Raises :class:`ConfigError`."""
    data = read_yaml(path)
    try:
        config = parse_config(data, local_urls=ctx.local_urls or None, worker=ctx.build.worker)
        missing = local_needs(substitute_env(data, os.environ)) - set(ctx.local_urls)
    except ConfigError as error:
        raise ConfigError(f"{path}:\n{error}") from None
    if missing:
        raise ConfigError(
            f"{path}: asks for a local {', '.join(sorted(missing))} that this run did not "
            "start; restart logstream to start it"
        )
    return data, config


async def apply_reload(pipeline: Pipeline, new: Config, ctx: ReloadContext) -> ReloadResult:
    """Apply ``new`` to the running ``pipeline`` (which runs ``ctx.config``).

    Every new unit is built first: a build error changes nothing (``errors``).
    On success ``ctx.config`` becomes ``new``.
    """
    result = ReloadResult()
    old = ctx.config
    build = ctx.build
    names = new.unit_names()
    old_inputs, new_inputs = _by_name(old, old.inputs), _by_name(new, new.inputs)
    old_filters, new_filters = _by_name(old, old.filters), _by_name(new, new.filters)
    old_sinks, new_sinks = _by_name(old, old.sinks), _by_name(new, new.sinks)
    running_inputs = {unit.name: unit for unit in pipeline.inputs}
    running_filters = {unit.name: unit for unit in pipeline.filters}
    running_sinks = {runner.name: runner for runner in pipeline.sinks}

    # 1. Build everything new; nothing running is touched until all of it built.
    try:
        inputs: list[Input] = []
        fresh_inputs: list[Input] = []
        for unit in new.inputs:
            name = names[id(unit)]
            if _unchanged(name, old_inputs, new_inputs) and name in running_inputs:
                inputs.append(running_inputs[name])
            else:
                built = unit.build(name, build)
                built.reuse_port = build.workers > 1  # as build_pipeline does
                inputs.append(built)
                fresh_inputs.append(built)
        filters: list[Filter] = []
        for unit in new.filters:
            name = names[id(unit)]
            if _unchanged(name, old_filters, new_filters) and name in running_filters:
                filters.append(running_filters[name])
            else:
                filters.append(build_filter(unit, name, build))
        sinks: list[SinkRunner] = []
        fresh_sinks: list[SinkRunner] = []
        for unit in new.sinks:
            name = names[id(unit)]
            if _unchanged(name, old_sinks, new_sinks) and name in running_sinks:
                sinks.append(running_sinks[name])
            else:
                runner = build_sink_runner(unit, name, build)
                sinks.append(runner)
                fresh_sinks.append(runner)
    except (ValueError, OSError) as error:
        result.errors.append(str(error))
        return result

    kept_inputs = [unit for unit in inputs if unit not in fresh_inputs]
    gone_inputs = [unit for unit in pipeline.inputs if unit not in kept_inputs]
    kept_filters = [unit for unit in filters if unit in pipeline.filters]
    gone_sinks = [runner for runner in pipeline.sinks if runner not in sinks]
    result.kept = [unit.name for unit in (*kept_inputs, *kept_filters)] + [
        runner.name for runner in sinks if runner not in fresh_sinks
    ]
    result.restart_needed = _restart_needed(old, new)
    timeout = old.pipeline.shutdown_timeout_secs

    # 2. Stop changed and removed inputs (what they read goes on through the pipeline).
    await _stop_inputs(pipeline, gone_inputs, result)

    # 3. Filters and sinks, on the filter task between two batches.
    async def swap() -> None:
        await _flush_removed_filters(pipeline, filters)
        result.stopped += [unit.name for unit in pipeline.filters if unit not in filters]
        result.started += [unit.name for unit in filters if unit not in pipeline.filters]
        pipeline.filters = filters
        remaining = [runner for runner in pipeline.sinks if runner not in gone_sinks]
        pipeline.sinks = remaining
        for runner in gone_sinks:
            await _drain_sink(pipeline, runner, timeout, result)
        for runner in sinks:
            if runner not in fresh_sinks:
                continue
            try:
                await runner.start()
            except Exception as error:
                log.error("reload: sink %s did not start: %s", runner.name, error)
                result.failed.append(runner.name)
                continue
            _replace(pipeline._started_sinks, None, runner)
            result.started.append(runner.name)
        failed = set(result.failed)
        pipeline.sinks = [runner for runner in sinks if runner.name not in failed]

    done = pipeline.between_batches(swap)
    await _wait_swap(pipeline, done)
    if not pipeline.sinks:  # pragma: no cover - every new sink failed to start
        log.error("reload: no sink is running")

    # 4. Start changed and new inputs.
    for fresh in fresh_inputs:
        try:
            await start_input(fresh, pipeline.ingest)
        except OSError as error:
            log.error("reload: %s", error)
            result.failed.append(fresh.name)
            with contextlib.suppress(Exception):
                await fresh.stop()
            continue
        pipeline._started_inputs.append(fresh)
        result.started.append(fresh.name)
    pipeline.inputs = [unit for unit in inputs if unit.name not in result.failed]
    ctx.config = new
    return result


async def _stop_inputs(pipeline: Pipeline, units: list[Input], result: ReloadResult) -> None:
    for unit in units:
        try:
            await unit.stop()
        except Exception as error:  # stop must not raise; say so if it did
            log.error("reload: input %s: stop failed: %s", unit.name, error)
        _replace(pipeline._started_inputs, unit, None)
        result.stopped.append(unit.name)


async def _flush_removed_filters(pipeline: Pipeline, keep: list[Filter]) -> None:
    """What each removed or changed filter holds back, through the rest of the old
    chain and out to the (old) sinks, before the chain is swapped."""
    chain = pipeline.filters
    for index, unit in enumerate(chain):
        if unit in keep:
            continue
        held = pipeline._call_filter(unit, unit.flush, None)
        if held:
            held = pipeline._apply_filters(held, index + 1)  # the rest of the old chain
            if held:
                await pipeline._fan_out(held)


async def _drain_sink(
    pipeline: Pipeline, runner: SinkRunner, within_secs: float, result: ReloadResult
) -> None:
    """Stop one sink as shutdown does: write what it has, close it."""
    try:
        async with asyncio.timeout(within_secs):
            await runner.drain()
    except TimeoutError:
        lost = await runner.abort()
        log.error(
            "reload: sink %s: %d events not written in %gs (dropped, reason shutdown)",
            runner.name,
            lost,
            within_secs,
        )
    await runner.close()
    _replace(pipeline._started_sinks, runner, None)
    result.stopped.append(runner.name)


async def _wait_swap(pipeline: Pipeline, done: asyncio.Future[None]) -> None:
    task = pipeline._filter_task
    while not done.done():
        if task is None or task.done():
            # The filter task has ended (shutdown): nobody will swap; do it here.
            change, pipeline._between_batches = pipeline._between_batches, None
            if change is not None:
                await change()
            break
        await asyncio.wait([done, task], return_when=asyncio.FIRST_COMPLETED)
    if done.done() and not done.cancelled():
        done.result()


def _replace(items: list[U], old: U | None, new: U | None) -> None:
    if old is not None and old in items:
        items.remove(old)
    if new is not None:
        items.append(new)


class Reloader:
    """Reloads ``ctx.path`` into ``pipeline`` when asked (SIGHUP), one reload at a time;
    a request during a reload runs once the reload ends."""

    def __init__(
        self,
        pipeline: Pipeline,
        ctx: ReloadContext,
        on_applied: Callable[[Any], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.ctx = ctx
        # Told the YAML document of each reload applied (a worker tells its supervisor,
        # which starts later workers with it).
        self.on_applied = on_applied
        self.results: list[ReloadResult] = []
        self._again = False

    def request(self) -> None:
        """The SIGHUP handler: start a reload, or ask for another after the current one."""
        pipeline = self.pipeline
        if not pipeline.running:
            return
        if pipeline.reloading is not None and not pipeline.reloading.done():
            self._again = True
            return
        pipeline.reloading = asyncio.get_running_loop().create_task(self._run(), name="reload")

    async def _run(self) -> ReloadResult:
        while True:
            self._again = False
            result = await self.reload()
            self.results.append(result)
            if not self._again or not self.pipeline.running:
                return result

    async def reload(self) -> ReloadResult:
        path = self.ctx.path
        log.info("SIGHUP: reloading %s", path)
        if path is None:  # pragma: no cover - serve always has the path
            return ReloadResult(errors=["no config file to reload"])
        try:
            data, config = load_for_reload(path, self.ctx)
        except ConfigError as error:
            result = ReloadResult(errors=str(error).splitlines())
        else:
            try:
                result = await apply_reload(self.pipeline, config, self.ctx)
            except Exception as error:  # a bug, not a config error: say so, keep running
                log.exception("reload failed part-way")
                result = ReloadResult(failed=[f"reload: {error}"])
            if result.applied and self.on_applied is not None:
                self.on_applied(data)
        for line in result.errors:
            log.error("reload: %s", line)
        for line in result.restart_needed:
            log.warning("reload: %s", line)
        (log.info if result.applied and not result.failed else log.error)("%s", result.summary())
        return result


def install(
    loop: asyncio.AbstractEventLoop,
    signum: int,
    pipeline: Pipeline,
    ctx: ReloadContext,
    on_applied: Callable[[Any], None] | None = None,
) -> Reloader:
    """Reload ``ctx.path`` into ``pipeline`` on signal ``signum`` (SIGHUP)."""
    reloader = Reloader(pipeline, ctx, on_applied)
    loop.add_signal_handler(signum, reloader.request)
    return reloader
