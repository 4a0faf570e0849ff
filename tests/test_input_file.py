"""The ``file`` input: real files in tmp_path, a real BatchBuffer as ingest."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Any, TextIO

import orjson
import pytest
from pydantic import ValidationError

from logstream.buffer import BatchBuffer
from logstream.config import ConfigError, build_pipeline, load_config, parse_config
from logstream.event import Batch
from logstream.filters.parse import ParseFilterConfig
from logstream.inputs.file import FileInput, FileInputConfig, fingerprint
from logstream.streams import key_function
from logstream.units import BuildContext
from tests.support.inputs import (
    LOOPS,
    Runner,
    eventually,
    running,
    take,
    take_until_quiet,
)
from tests.test_clients import PLAYBOOK, ansible_playbook


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Runner:
    return Runner(request.param)


def build(tmp_path: Path, *patterns: Path | str, **settings: Any) -> FileInput:
    """A file input with fast timers, reading from the beginning unless told otherwise."""
    fast: dict[str, Any] = {
        "poll_interval_secs": 0.01,
        "discover_interval_secs": 0.05,
        "checkpoint_interval_secs": 0.05,
        "start_position": "beginning",
    }
    config = FileInputConfig(type="file", paths=[str(p) for p in patterns], **{**fast, **settings})
    return config.build("files", BuildContext(state_dir=tmp_path / "state"))


def entries(unit: FileInput) -> dict[str, Any]:
    """The checkpoint file's entries (none while it is not written)."""
    try:
        files: dict[str, Any] = orjson.loads(unit.checkpoint_path.read_bytes())["files"]
    except FileNotFoundError:
        return {}
    return files


def entry_of(unit: FileInput, path: Path) -> dict[str, Any] | None:
    st = path.stat()
    entry: dict[str, Any] | None = entries(unit).get(f"{st.st_dev}:{st.st_ino}")
    return entry


def recorded(unit: FileInput, path: Path, key: str) -> Any:
    """One setting of ``path``'s checkpoint entry (``None`` while it has none)."""
    return (entry_of(unit, path) or {}).get(key)


def append(path: Path, data: str | bytes) -> None:
    with open(path, "ab") as out:
        out.write(data.encode() if isinstance(data, str) else data)


def open_for_append(path: Path) -> TextIO:
    return open(path, "a")


def messages(events: Batch) -> list[str]:
    return [event["message"] for event in events]


def numbered_lines(start: int, stop: int, prefix: str = "line") -> str:
    return "".join(f"{prefix} {n}\n" for n in range(start, stop))


# --------------------------------------------------------------------------- events


def test_each_line_becomes_an_event_with_path_offset_and_host(run: Runner, tmp_path: Path) -> None:
    log_file = tmp_path / "app.log"
    log_file.write_text("first\r\nsecond line\n\nthird\n")

    async def scenario() -> Batch:
        unit = build(tmp_path, log_file)
        async with running(unit, BatchBuffer(100)) as ingest:
            return await take(ingest, 3)

    events = run(scenario())
    assert messages(events) == ["first", "second line", "third"]  # blank line skipped
    assert [event["log"]["offset"] for event in events] == [0, 7, 20]
    for event in events:
        assert event["path"] == str(log_file)
        assert event["log"]["file"]["path"] == str(log_file)
        assert event["host"] == socket.gethostname()
        assert event["@version"] == "1"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["@timestamp"])


def test_start_position_end_skips_what_is_there_and_beginning_reads_it(
    run: Runner, tmp_path: Path
) -> None:
    old, new = tmp_path / "old.log", tmp_path / "new.log"
    old.write_text("before 1\nbefore 2\n")
    new.write_text("before 1\nbefore 2\n")

    async def scenario() -> tuple[Batch, Batch]:
        at_end = build(tmp_path / "a", old, start_position="end")
        at_start = build(tmp_path / "b", new, start_position="beginning")
        async with (
            running(at_end, BatchBuffer(100)) as end_ingest,
            running(at_start, BatchBuffer(100)) as start_ingest,
        ):
            append(old, "after\n")
            append(new, "after\n")
            return await take_until_quiet(end_ingest), await take(start_ingest, 3)

    from_end, from_start = run(scenario())
    assert messages(from_end) == ["after"]
    assert messages(from_start) == ["before 1", "before 2", "after"]


def test_new_files_matching_the_globs_are_discovered_and_excluded_ones_are_not(
    run: Runner, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_text("a 1\n")

    async def scenario(unit: FileInput) -> Batch:
        async with running(unit, BatchBuffer(100)) as ingest:
            first = await take(ingest, 1)
            (logs / "b.log").write_text("b 1\n")
            (logs / "c.txt").write_text("c 1\n")
            (logs / "skip.log").write_text("skip 1\n")
            (logs / "deep").mkdir()
            (logs / "deep" / "d.log").write_text("d 1\n")
            return first + await take(ingest, 2) + await take_until_quiet(ingest, 0.3)

    unit = build(tmp_path, logs / "*.log", logs / "**" / "d.log", exclude=["skip.*"])
    events = run(scenario(unit))
    assert sorted(messages(events)) == ["a 1", "b 1", "d 1"]


def test_parse_filter_default_stream_key_keeps_each_file_its_own_stream(
    run: Runner, tmp_path: Path
) -> None:
    one, two = tmp_path / "one.log", tmp_path / "two.log"
    one.write_text("x\n")
    two.write_text("y\n")

    async def scenario() -> Batch:
        async with running(build(tmp_path, tmp_path / "*.log"), BatchBuffer(100)) as ingest:
            return await take(ingest, 2)

    events = run(scenario())
    key = key_function(ParseFilterConfig(type="parse").stream_key)
    assert len({key(event) for event in events}) == 2


# --------------------------------------------------------------------------- checkpoints


def test_a_restart_resumes_from_the_checkpoint_without_loss_or_duplicates(
    run: Runner, tmp_path: Path
) -> None:
    log_file = tmp_path / "app.log"
    log_file.write_text(numbered_lines(0, 100) + "unfinished")

    async def session(count: int) -> Batch:
        unit = build(tmp_path, log_file, eof_flush_secs=60)
        async with running(unit, BatchBuffer(1000)) as ingest:
            events = await take(ingest, count)
            return events + await take_until_quiet(ingest)

    first = run(session(100))
    append(log_file, " line\n" + numbered_lines(100, 150))
    second = run(session(51))
    assert messages(first) == [f"line {n}" for n in range(100)]
    assert messages(second) == ["unfinished line"] + [f"line {n}" for n in range(100, 150)]


def test_the_checkpoint_advances_only_once_the_pipeline_says_events_are_safe(
    run: Runner, tmp_path: Path
) -> None:
    log_file = tmp_path / "app.log"
    log_file.write_text(numbered_lines(0, 10))
    size = log_file.stat().st_size

    async def scenario() -> None:
        unit = build(tmp_path, log_file)
        ingest = BatchBuffer(100, safe_when_taken=False)
        async with running(unit, ingest):
            await take(ingest, 10)
            # The fingerprint is recorded (and written) as soon as the file is read;
            # the offset waits for the pipeline's word.
            await eventually(lambda: recorded(unit, log_file, "fingerprint_bytes") == 70)
            await asyncio.sleep(0.2)  # four checkpoint intervals: nothing may advance it
            assert entry_of(unit, log_file) == {
                "path": str(log_file),
                "offset": 0,
                "skip": False,
                "fingerprint": fingerprint(log_file.read_bytes()),
                "fingerprint_bytes": 70,
            }
            ingest.mark_safe(ingest.accepted)
            await eventually(lambda: recorded(unit, log_file, "offset") == size)

    run(scenario())


def test_confirmations_after_stop_still_reach_the_checkpoint(run: Runner, tmp_path: Path) -> None:
    """The pipeline drains after its inputs stop: what it confirms then is recorded."""
    log_file = tmp_path / "app.log"
    log_file.write_text(numbered_lines(0, 5))
    unit = build(tmp_path, log_file)
    ingest = BatchBuffer(100, safe_when_taken=False)

    async def scenario() -> None:
        async with running(unit, ingest):
            await eventually(lambda: len(ingest) == 5)
        assert recorded(unit, log_file, "offset") == 0
        ingest.mark_safe(ingest.accepted)

    run(scenario())
    assert recorded(unit, log_file, "offset") == log_file.stat().st_size


def test_a_reused_inode_is_told_apart_by_its_fingerprint(run: Runner, tmp_path: Path) -> None:
    log_file = tmp_path / "app.log"
    log_file.write_text(numbered_lines(0, 10))  # 10 lines of 7 bytes
    st = log_file.stat()

    def session(recorded: bytes) -> list[str]:
        unit = build(tmp_path, log_file)
        unit.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        unit.checkpoint_path.write_bytes(
            orjson.dumps(
                {
                    "version": 1,
                    "files": {
                        f"{st.st_dev}:{st.st_ino}": {
                            "path": str(log_file),
                            "offset": 35,
                            "skip": False,
                            "fingerprint": fingerprint(recorded),
                            "fingerprint_bytes": len(recorded),
                        }
                    },
                }
            )
        )

        async def scenario() -> Batch:
            async with running(unit, BatchBuffer(100)) as ingest:
                return await take_until_quiet(ingest)

        return messages(run(scenario()))

    assert session(log_file.read_bytes()) == [f"line {n}" for n in range(5, 10)]
    # Same device and inode, other first bytes: another file; read from start_position.
    assert session(b"an older file that had this inode\n") == [f"line {n}" for n in range(10)]


def test_a_damaged_checkpoint_is_counted_and_reading_goes_on(run: Runner, tmp_path: Path) -> None:
    log_file = tmp_path / "app.log"
    log_file.write_text("one\n")
    unit = build(tmp_path, log_file)
    unit.checkpoint_path.parent.mkdir(parents=True)
    unit.checkpoint_path.write_text("{not json")

    async def scenario() -> Batch:
        async with running(unit, BatchBuffer(100)) as ingest:
            return await take(ingest, 1)

    assert messages(run(scenario())) == ["one"]
    assert unit.metrics.errors == 1
    assert orjson.loads(unit.checkpoint_path.read_bytes())["version"] == 1


# --------------------------------------------------------------------------- rotation


@pytest.mark.parametrize("pattern", ["app.log", "app.log*"])
def test_rotation_by_rename_while_lines_are_written_loses_and_repeats_nothing(
    run: Runner, tmp_path: Path, pattern: str
) -> None:
    """Also when the rotated file still matches the globs (it is not read again)."""
    log_file = tmp_path / "app.log"
    total = 3000

    async def writer() -> None:
        out = open_for_append(log_file)  # kept open across the rename, as an app does
        for n in range(total):
            out.write(f"line {n}\n")
            out.flush()
            if n == 1000:
                os.rename(log_file, tmp_path / "app.log.1")
            if n == 1100:  # the app reopens its log some lines after the rename
                out.close()
                out = open_for_append(log_file)
            if n % 100 == 0:
                await asyncio.sleep(0.005)
        out.close()

    async def scenario() -> tuple[Batch, FileInput]:
        log_file.write_text("")
        unit = build(tmp_path, tmp_path / pattern, eof_flush_secs=0.2)
        async with running(unit, BatchBuffer(100_000)) as ingest:
            await writer()
            events = await take(ingest, total)
            await eventually(lambda: unit.open_files == [str(log_file)])
            await asyncio.sleep(0.2)  # discoveries that must not read app.log.1 again
            return events + await take_until_quiet(ingest), unit

    events, unit = run(scenario())
    assert sorted(messages(events), key=lambda m: int(m.split()[1])) == [
        f"line {n}" for n in range(total)
    ]
    assert unit.metrics.file_changes["file_rotated"] == 1


def test_copytruncate_is_counted_and_read_again_from_the_start(run: Runner, tmp_path: Path) -> None:
    log_file = tmp_path / "app.log"
    log_file.write_text(numbered_lines(0, 5))

    async def scenario() -> tuple[Batch, FileInput]:
        unit = build(tmp_path, log_file)
        async with running(unit, BatchBuffer(100)) as ingest:
            events = await take(ingest, 5)
            shutil.copy(log_file, tmp_path / "app.log.1")
            os.truncate(log_file, 0)
            append(log_file, "x\ny\n")
            events += await take(ingest, 2)
            await eventually(lambda: recorded(unit, log_file, "offset") == 4)
            return events, unit

    events, unit = run(scenario())
    assert messages(events) == [f"line {n}" for n in range(5)] + ["x", "y"]
    assert [event["log"]["offset"] for event in events[5:]] == [0, 2]
    assert unit.metrics.file_changes["file_truncated"] == 1


def test_a_deleted_file_is_read_to_its_end_closed_and_counted(run: Runner, tmp_path: Path) -> None:
    log_file = tmp_path / "app.log"
    log_file.write_text(numbered_lines(0, 3))

    async def scenario() -> tuple[Batch, FileInput]:
        unit = build(tmp_path, log_file)
        async with running(unit, BatchBuffer(100)) as ingest:
            events = await take(ingest, 3)
            append(log_file, numbered_lines(3, 5))
            log_file.unlink()
            events += await take(ingest, 2)
            await eventually(lambda: unit.open_files == [])
            await eventually(lambda: entries(unit) == {})
            return events, unit

    events, unit = run(scenario())
    assert messages(events) == [f"line {n}" for n in range(5)]
    assert unit.metrics.file_changes["file_disappeared"] == 1


# --------------------------------------------------------------------------- lines


def test_a_last_line_without_newline_waits_for_its_end_or_eof_flush_secs(
    run: Runner, tmp_path: Path
) -> None:
    waits, flushed = tmp_path / "waits.log", tmp_path / "flushed.log"
    waits.write_text("complete\npart")
    flushed.write_text("no newline ever")

    async def scenario() -> tuple[Batch, Batch, FileInput]:
        unit = build(tmp_path / "a", waits, eof_flush_secs=60)
        flushing = build(tmp_path / "b", flushed, eof_flush_secs=0.1)
        async with running(unit, BatchBuffer(100)) as ingest:
            events = await take(ingest, 1)
            assert await take_until_quiet(ingest) == []
            append(waits, "ial line\n")
            events += await take(ingest, 1)
        async with running(flushing, BatchBuffer(100)) as ingest:
            return events, await take(ingest, 1), flushing

    events, flushed_events, flushing = run(scenario())
    assert messages(events) == ["complete", "partial line"]
    assert events[1]["log"]["offset"] == 9
    assert messages(flushed_events) == ["no newline ever"]
    assert flushing.metrics.decode_issues["truncated_line"] == 1


def test_long_lines_are_cut_tagged_and_the_rest_skipped(run: Runner, tmp_path: Path) -> None:
    log_file = tmp_path / "app.log"
    log_file.write_text("x" * 250 + "\nnext\n" + "y" * 150)

    async def scenario() -> tuple[Batch, FileInput]:
        unit = build(tmp_path, log_file, max_line_bytes=100)
        async with running(unit, BatchBuffer(100)) as ingest:
            events = await take(ingest, 3)
            append(log_file, "y" * 50 + "\nafter\n")
            return events + await take(ingest, 1), unit

    events, unit = run(scenario())
    assert messages(events) == ["x" * 100, "next", "y" * 100, "after"]
    tags = [event.get("tags") for event in events]
    assert tags == [["_linetoolong"], None, ["_linetoolong"], None]
    assert [event["log"]["offset"] for event in events] == [0, 251, 256, 457]
    assert unit.metrics.decode_issues["line_too_long"] == 2


def test_invalid_utf8_is_replaced_and_tagged(run: Runner, tmp_path: Path) -> None:
    log_file = tmp_path / "app.log"
    log_file.write_bytes(b"ok \xff\xfe bad\nfine\n")

    async def scenario() -> tuple[Batch, FileInput]:
        unit = build(tmp_path, log_file)
        async with running(unit, BatchBuffer(100)) as ingest:
            return await take(ingest, 2), unit

    events, unit = run(scenario())
    assert events[0]["message"] == "ok \ufffd\ufffd bad"
    assert events[0]["tags"] == ["_utf8error"]
    assert events[0]["path"] == str(log_file)
    assert "tags" not in events[1]
    assert unit.metrics.decode_issues["invalid_utf8"] == 1


TRACEBACK = """\
2026-11-24 10:00:00 ERROR request failed
Traceback (most recent call last):
  File "app.py", line 3, in <module>
    main()
ValueError: boom
2026-11-24 10:00:01 INFO next request
"""


def test_multiline_joins_a_traceback_into_one_event_per_file(run: Runner, tmp_path: Path) -> None:
    one, two = tmp_path / "one.log", tmp_path / "two.log"
    one.write_text(TRACEBACK)
    two.write_text(TRACEBACK)
    size = one.stat().st_size

    async def scenario() -> tuple[Batch, FileInput]:
        unit = build(
            tmp_path,
            tmp_path / "*.log",
            multiline={"pattern": r"^\d{4}-", "negate": True, "timeout_secs": 0.1},
        )
        async with running(unit, BatchBuffer(100)) as ingest:
            events = await take(ingest, 4)
            # Once the last records are let go (timeout) and safe, the offsets reach the end.
            await eventually(
                lambda: [entry["offset"] for entry in entries(unit).values()] == [size, size]
            )
            return events, unit

    events, unit = run(scenario())
    by_file: dict[str, list[str]] = {}
    for event in events:
        by_file.setdefault(event["path"], []).append(event["message"])
    expected = [TRACEBACK.splitlines()[0] + "\n" + "\n".join(TRACEBACK.splitlines()[1:5])]
    expected.append(TRACEBACK.splitlines()[5])
    assert by_file == {str(one): expected, str(two): expected}
    assert unit.metrics.dropped["merged"] == 8
    assert unit.metrics.events_in == 4


def test_multiline_keeps_the_checkpoint_at_the_first_line_of_a_held_record(
    run: Runner, tmp_path: Path
) -> None:
    log_file = tmp_path / "app.log"
    log_file.write_text(TRACEBACK)
    held_from = TRACEBACK.index("2026-11-24 10:00:01")

    async def scenario() -> None:
        unit = build(tmp_path, log_file, multiline={"pattern": r"^\d{4}-", "negate": True})
        async with running(unit, BatchBuffer(100)) as ingest:
            await take(ingest, 1)
            await eventually(lambda: recorded(unit, log_file, "offset") == held_from)

    run(scenario())


# --------------------------------------------------------------------------- many files, errors


def test_many_files_beyond_max_open_files_are_all_read(run: Runner, tmp_path: Path) -> None:
    for n in range(60):
        (tmp_path / f"f{n:02d}.log").write_text(numbered_lines(0, 20, prefix=f"f{n:02d}"))

    async def scenario() -> tuple[Batch, int]:
        unit = build(tmp_path, tmp_path / "*.log", max_open_files=16, close_inactive_secs=0.05)
        most_open = 0

        async def watch() -> None:
            nonlocal most_open
            while True:
                most_open = max(most_open, len(unit.open_files))
                await asyncio.sleep(0.005)

        async with running(unit, BatchBuffer(10_000)) as ingest:
            watcher = asyncio.create_task(watch())
            events = await take(ingest, 1200)
            await eventually(lambda: len(unit.open_files) == 0)  # all idle: closed
            for n in range(60):  # closed files that grow are opened again
                append(tmp_path / f"f{n:02d}.log", f"f{n:02d} 20\n")
            events += await take(ingest, 60)
            events += await take_until_quiet(ingest)
            watcher.cancel()
            return events, most_open

    events, most_open = run(scenario())
    assert 0 < most_open <= 16
    assert len(events) == 1260
    for n in range(60):
        mine = [m for m in messages(events) if m.startswith(f"f{n:02d} ")]
        assert mine == [f"f{n:02d} {i}" for i in range(21)]


def test_a_full_ingest_stops_the_reading_until_it_drains(run: Runner, tmp_path: Path) -> None:
    log_file = tmp_path / "app.log"
    log_file.write_text(numbered_lines(0, 2000))

    async def scenario() -> tuple[Batch, int]:
        unit = build(tmp_path, log_file, read_chunk_bytes=1024)
        ingest = BatchBuffer(50)
        async with running(unit, ingest):
            await eventually(lambda: ingest.full)
            await asyncio.sleep(0.05)  # polls that must not read
            read_while_full = unit.metrics.bytes_in
            return await take(ingest, 2000), read_while_full

    events, read_while_full = run(scenario())
    assert read_while_full <= 2 * 1024
    assert messages(events) == [f"line {n}" for n in range(2000)]


def test_unreadable_paths_and_directories_are_logged_once_and_counted(
    run: Runner, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "dir.log").mkdir()
    (tmp_path / "good.log").write_text("good\n")
    locked = tmp_path / "locked.log"
    locked.write_text("secret\n")
    locked.chmod(0)
    can_read_anyway = os.access(locked, os.R_OK)  # root

    async def scenario() -> tuple[Batch, FileInput]:
        unit = build(tmp_path, tmp_path / "*.log")
        async with running(unit, BatchBuffer(100)) as ingest:
            events = await take(ingest, 2 if can_read_anyway else 1)
            await asyncio.sleep(0.2)  # several discoveries
            return events, unit

    events, unit = run(scenario())
    assert "good" in messages(events)
    expected = 1 if can_read_anyway else 2
    assert unit.metrics.file_changes["file_unreadable"] == expected
    warnings = [r for r in caplog.records if "cannot read" in r.getMessage()]
    assert len(warnings) == expected


# --------------------------------------------------------------------------- config


def test_config_rejects_unknown_keys_and_bad_patterns_naming_the_value() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        FileInputConfig(type="file", paths=["x.log"], tail=True)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match=r"not a valid regex"):
        FileInputConfig(type="file", paths=["x.log"], multiline={"pattern": "("})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"inputs\[0\] \(file\)\.paths"):
        parse_config({"inputs": [{"type": "file", "paths": []}], "sinks": [{"type": "stdout"}]})


def test_checkpoint_file_defaults_to_the_state_dir_and_may_be_set(tmp_path: Path) -> None:
    ctx = BuildContext(state_dir=tmp_path)
    unit = FileInputConfig(type="file", paths=["x"]).build("logs", ctx)
    assert unit.checkpoint_path == tmp_path / "file" / "logs.json"
    unit = FileInputConfig(type="file", paths=["x"], checkpoint_file=tmp_path / "c.json").build(
        "logs", ctx
    )
    assert unit.checkpoint_path == tmp_path / "c.json"


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def ansible_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Batch]:
    """A real ansible-playbook run writing ANSIBLE_LOG_PATH, tailed by the file input
    through the real pipeline (parse filter, file sink): the log and the events written."""
    command = ansible_playbook()
    if command is None:
        pytest.skip("ansible is not installed")
    tmp_path = tmp_path_factory.mktemp("ansible")
    ansible_log, out = tmp_path / "ansible.log", tmp_path / "events.ndjson"
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    settings = {
        "inputs": [
            {
                "type": "file",
                "id": "ansible_log",
                "paths": [str(ansible_log)],
                "discover_interval_secs": 0.05,
                "poll_interval_secs": 0.02,
            }
        ],
        "filters": [{"type": "parse"}],
        "sinks": [{"type": "file", "path": str(out)}],
        "state_dir": str(tmp_path / "state"),
        "pipeline": {"tick_secs": 0.05},
    }
    (tmp_path / "logstream.yaml").write_bytes(orjson.dumps(settings))  # JSON is YAML

    async def scenario() -> None:
        pipeline = build_pipeline(load_config(tmp_path / "logstream.yaml", env={}))
        await pipeline.start()
        try:
            env = {
                **os.environ,
                "ANSIBLE_LOG_PATH": str(ansible_log),
                "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
                "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
                "ANSIBLE_LOCALHOST_WARNING": "false",
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_CONFIG": str(tmp_path / "ansible.cfg"),  # none: defaults only
            }
            process = await asyncio.create_subprocess_exec(
                command,
                "-i",
                "localhost,",
                str(tmp_path / "play.yml"),
                cwd=tmp_path,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            output, _ = await process.communicate()
            assert process.returncode == 0, output.decode()
            await eventually(lambda: out.exists() and b"ignored=1" in out.read_bytes())
        finally:
            report = await pipeline.stop(timeout_secs=5)
            assert report.clean

    Runner("uvloop")(scenario(), timeout_secs=60)
    return ansible_log, [orjson.loads(line) for line in out.read_bytes().splitlines()]


@pytest.mark.skipif(ansible_playbook() is None, reason="ansible is not installed")
def test_ansible_log_lines_reach_the_file_sink_through_the_real_pipeline(
    ansible_run: tuple[Path, Batch],
) -> None:
    ansible_log, events = ansible_run
    assert events
    assert {event["path"] for event in events} == {str(ansible_log)}
    text = "\n".join(event["message"] for event in events)
    for expected in (
        "PLAY [logstream smoke play]",
        "TASK [say hello]",
        "hello from ansible",
        "this task fails on purpose",
        "PLAY RECAP",
        "ignored=1",
    ):
        assert expected in text


@pytest.mark.skipif(ansible_playbook() is None, reason="ansible is not installed")
def test_ansible_log_lines_arrive_parsed_with_a_level(ansible_run: tuple[Path, Batch]) -> None:
    _, events = ansible_run
    for event in events:
        assert event.get("format") == "ansible_log", event
        assert event["level"] in {"INFO", "NOTICE", "WARNING", "ERROR", "DEBUG"}
    assert any(event["level"] == "ERROR" for event in events)  # the failed task


def test_parse_filter_gets_each_file_as_its_own_stream_through_the_real_pipeline(
    run: Runner, tmp_path: Path
) -> None:
    """Lines of two ansible.logs (the format ansible-core wrote before 2.17) written in
    turns: each record folds only its own file's continuation lines and gets a level."""
    one, two, out = tmp_path / "one.log", tmp_path / "two.log", tmp_path / "events.ndjson"
    header = "2026-01-19 08:00:15,250 p=7781 u=deploy n=ansible |  "
    (tmp_path / "logstream.yaml").write_bytes(
        orjson.dumps(
            {
                "inputs": [
                    {
                        "type": "file",
                        "id": "logs",  # unit names are per type: the file sink is "file"
                        "paths": [str(tmp_path / "*.log")],
                        "start_position": "beginning",
                        "poll_interval_secs": 0.01,
                    }
                ],
                "filters": [{"type": "parse", "multiline_timeout_secs": 30}],
                "sinks": [{"type": "file", "path": str(out)}],
                "state_dir": str(tmp_path / "state"),
                "pipeline": {"tick_secs": 0.02},
            }
        )
    )
    one.write_text(header + "fatal: [db-2]: FAILED! => {\n")
    two.write_text(header + "changed: [web-1]\n")

    async def scenario() -> None:
        pipeline = build_pipeline(load_config(tmp_path / "logstream.yaml", env={}))
        await pipeline.start()
        try:
            unit = pipeline.inputs[0]
            await eventually(lambda: unit.metrics.events_in == 2)
            append(two, header + "TASK [next] ****\n")
            await eventually(lambda: unit.metrics.events_in == 3)
            append(one, '    "msg": "no package"\n}\n')
            await eventually(lambda: unit.metrics.events_in == 5)
        finally:
            await pipeline.stop(timeout_secs=5)  # lets go of the records parse holds

    run(scenario())
    events = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    summary = sorted((e["path"], e["level"], e["message"]) for e in events)
    assert summary == [
        (str(one), "ERROR", 'fatal: [db-2]: FAILED! => {\n    "msg": "no package"\n}'),
        (str(two), "INFO", "TASK [next] ****"),
        (str(two), "NOTICE", "changed: [web-1]"),
    ]
