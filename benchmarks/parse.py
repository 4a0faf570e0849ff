"""Lines per second of the ``parse`` filter, per format, on one core.

Feeds pre-built events (``{"message": line, "host": ..., "path": ...}``) in
batches of 8192 to ``ParseFilter.process`` (``flush`` at the end) and reports
the best of several runs, for

- ``auto``: the default config (detection once per stream, multiline on);
- ``forced``: ``format: <name>`` (no detection);
- ``ecs``: the default config with ``fields: ecs`` (``--ecs``);

next to three references measured in the same run, since the machine is shared
and noisy: ``loop`` (a bare loop taking ``message`` from every event: the
floor), ``regex`` (the oslo line regex matched against every line, nothing
else: what one compiled regex per line costs) and ``codec`` (``orjson.loads``
+ ``orjson.dumps`` of each event as JSON: the decode+encode every pipeline
pays). The last column is ``auto``'s time per line over ``codec``'s: issue 12
asks for 0.5 at most.

Lines are generated from templates written here (no corpus lines), with
numbers varying so caches see realistic input; ``--corpus`` reads the files
of ../shared/corpus instead (one run per file).

    .venv/bin/python benchmarks/parse.py                    # every format, 100k lines each
    .venv/bin/python benchmarks/parse.py --formats oslo --lines 300000 --ecs
    .venv/bin/python benchmarks/parse.py --corpus --json parse.json

The process is pinned to one CPU and the cyclic GC is tuned as ``logstream
run`` tunes it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Run as a script, this directory is sys.path[0], and benchmarks/nats.py would
# shadow the nats package that logstream.config imports.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import orjson

from logstream.clock import SystemClock
from logstream.config import parse_config
from logstream.metrics import Registry
from logstream.parsers import FORMATS
from logstream.parsers.oslo import _LINE as OSLO_LINE
from logstream.units import BuildContext, Filter

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"

BATCH = 8192

# --------------------------------------------------------------------------- lines


def _stamp(n: int, sep: str = ".") -> str:
    second = n // 40
    return f"2026-11-24 10:{(second // 60) % 60:02d}:{second % 60:02d}{sep}{n % 1000:03d}"


def oslo(n: int) -> str:
    stamp, pid = _stamp(n), 1000 + n % 7
    kind = n % 10
    if kind < 6:
        return (
            f"{stamp} {pid} DEBUG nova.compute.manager [req-{n:08x}-5e1f-4c2b-9d3a-0e5b7c9d1f2a "
            f"a1b2c3d4 e5f6a7b8] Running periodic task ComputeManager._poll_{n % 13} "
            f"run_periodic_tasks /opt/stack/nova/nova/manager.py:{n % 900}"
        )
    if kind < 9:
        return (
            f"{stamp} INFO nova.osapi_compute.wsgi.server [req-{n:08x}-77aa a1b2c3d4 e5f6a7b8] "
            f'10.0.{n % 250}.{n % 7} "GET /v2/e5f6a7b8/servers/{n} HTTP/1.1" status: 200 '
            f"len: {n % 4096} time: 0.{n % 999:03d}"
        )
    return f"{stamp} {pid} AUDIT nova.compute.resource_tracker [-] Free ram (MB): {n % 9000}"


def journal(n: int) -> str:
    second = n // 40
    return (
        f"Nov 24 10:{(second // 60) % 60:02d}:{second % 60:02d}.{n % 1_000_000:06d} node-{n % 3} "
        f"cinder-api[{8500 + n % 4}]: {('DEBUG', 'INFO', 'WARNING')[n % 3]} cinder.api.openstack "
        f"[req-{n:08x} admin demo] GET /v3/volumes/{n} handled in {n % 97} ms"
    )


def syslog(n: int) -> str:
    second = n // 40
    program = ("proxy-server", "kernel", "ntpd[1835]", "tgtd")[n % 4]
    return (
        f"Nov 24 10:{(second // 60) % 60:02d}:{second % 60:02d} node-{n % 5} {program}: "
        f"replication pass {n} completed in {n % 60}.{n % 100:02d}s"
    )


def rfc5424(n: int) -> str:
    second = n // 40
    return (
        f"<{160 + n % 8}>1 2026-11-24T10:{(second // 60) % 60:02d}:{second % 60:02d}"
        f".{n % 1000:03d}Z "
        f'api-{n % 3}.example.net billing {4000 + n % 9} INV{n % 50} [meta@32473 seq="{n}"] '
        f"invoice batch {n} done"
    )


def apache_access(n: int) -> str:
    second = n // 40
    status = (200, 200, 200, 304, 404, 200, 301, 500)[n % 8]
    return (
        f"198.51.{n % 250}.{n % 200} - - [24/Nov/2026:10:{(second // 60) % 60:02d}:"
        f'{second % 60:02d} +0000] "GET /static/img/{n % 500}.png HTTP/1.1" {status} {n % 90000} '
        f'"https://shop.example/p/{n % 77}" "Mozilla/5.0 (X11; Linux x86_64) Firefox/{n % 40}.0"'
    )


def apache_error(n: int) -> str:
    second = n // 40
    return (
        f"[Tue Nov 24 10:{(second // 60) % 60:02d}:{second % 60:02d}.{n % 1_000_000:06d} 2026] "
        f"[proxy_http:{('warn', 'error', 'info')[n % 3]}] "
        f"[pid {5000 + n % 8}:tid {140000 + n % 5}] "
        f"[client 192.0.2.{n % 250}:{40000 + n % 999}] AH01110: error reading response {n}"
    )


def nginx_error(n: int) -> str:
    second = n // 40
    return (
        f"2026/11/24 10:{(second // 60) % 60:02d}:{second % 60:02d} [{('error', 'warn')[n % 2]}] "
        f'{800 + n % 4}#{800 + n % 4}: *{n} open() "/srv/www/{n % 300}.css" failed '
        f"(2: No such file or directory), client: 203.0.113.{n % 250}, server: shop.example"
    )


def ansible_log(n: int) -> str:
    stamp = _stamp(n, ",")
    text = (
        f"TASK [role{n % 5} : step {n % 40}] ********************************",
        f"ok: [web-{n % 9}]",
        f"changed: [db-{n % 4}] => (item={n})",
        f"<web-{n % 9}> ESTABLISH SSH CONNECTION FOR USER: deploy",
    )[n % 4]
    return f"{stamp} p={7000 + n % 3} u=deploy n=ansible |  {text}"


def console(n: int) -> str:
    text = (
        f"+ install_package python3-pkg{n % 90}",
        f"Setting up libfoo{n % 50} (1.{n % 9}-2) ...",
        f"  Downloading pkg{n % 70}-1.{n % 9}.tar.gz ({n % 900}kB)",
        f"warning: no files found matching '*.h{n % 3}'",
    )[n % 4]
    return f"{_stamp(n)} | {text}"


def ansible_stdout(n: int) -> str:
    return (
        f"TASK [copy config {n % 30}] *************************************************",
        f"changed: [web-{n % 9}]",
        f"ok: [web-{n % 9}] => (item={n})",
        f"skipping: [db-{n % 4}]",
    )[n % 4]


def awx_event(n: int) -> str:
    second = n // 40
    return json.dumps(
        {
            "event": ("runner_on_ok", "runner_item_on_ok", "runner_on_skipped")[n % 3],
            "created": f"2026-11-24T10:{(second // 60) % 60:02d}:{second % 60:02d}.{n % 1000:03d}Z",
            "failed": False,
            "changed": n % 5 == 0,
            "host_name": f"web-{n % 9}",
            "task": f"step {n % 40}",
            "stdout": f"\u001b[0;32mok: [web-{n % 9}]\u001b[0m",
            "event_data": {},
        }
    )


def ansible_logstash(n: int) -> str:
    return json.dumps(
        {
            "message": "ansible ok",
            "status": ("OK", "OK", "SKIPPED", "FAILED")[n % 4],
            "ansible_type": "task",
            "ansible_host": f"web-{n % 9}",
            "ansible_task": f"step {n % 40}",
        }
    )


GENERATORS: dict[str, Callable[[int], str]] = {
    "oslo": oslo,
    "ansible_log": ansible_log,
    "console": console,
    "journal": journal,
    "syslog": syslog,
    "rfc5424": rfc5424,
    "apache_access": apache_access,
    "apache_error": apache_error,
    "nginx_error": nginx_error,
    "awx_event": awx_event,
    "ansible_logstash": ansible_logstash,
    "ansible_stdout": ansible_stdout,
}
if tuple(GENERATORS) != FORMATS:  # keep the benchmark in step with the parsers
    raise SystemExit(f"benchmark formats {tuple(GENERATORS)} != {FORMATS}")


# --------------------------------------------------------------------------- runs


def build(config: dict[str, Any]) -> Filter:
    parsed = parse_config(
        {
            "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
            "filters": [{"type": "parse", **config}],
            "sinks": [{"type": "stdout"}],
        }
    )
    unit: Filter = parsed.filters[0].build(
        "parse", BuildContext(registry=Registry(), clock=SystemClock())
    )
    return unit


def batches(lines: list[str]) -> list[list[dict[str, Any]]]:
    return [
        [
            {"message": line, "host": "bench-1", "path": "/var/log/x.log"}
            for line in lines[i : i + BATCH]
        ]
        for i in range(0, len(lines), BATCH)
    ]


def best_rate(
    lines: list[str], run: Callable[[list[list[dict[str, Any]]]], None], repeat: int
) -> float:
    best = 0.0
    for _ in range(repeat):
        work = batches(lines)  # events are changed in place: fresh ones every run
        gc.collect()
        start = time.perf_counter()
        run(work)
        elapsed = time.perf_counter() - start
        best = max(best, len(lines) / elapsed)
    return best


def filter_run(config: dict[str, Any]) -> Callable[[list[list[dict[str, Any]]]], None]:
    def run(work: list[list[dict[str, Any]]]) -> None:
        unit = build(config)
        for batch in work:
            unit.process(batch)
        unit.flush()

    return run


def loop_run(work: list[list[dict[str, Any]]]) -> None:
    for batch in work:
        for event in batch:
            event.get("message")


def codec_run(work: list[list[dict[str, Any]]]) -> None:
    """Encode and decode every event: the JSON round trip a pipeline pays anyway."""
    for batch in work:
        for event in batch:
            orjson.loads(orjson.dumps(event))


def regex_run(work: list[list[dict[str, Any]]]) -> None:
    match = OSLO_LINE.match
    for batch in work:
        for event in batch:
            match(event["message"])


def corpus_lines() -> dict[str, list[str]]:
    out = {}
    for path in sorted(CORPUS.glob("*.log")) + sorted(CORPUS.glob("*.txt")):
        text = path.read_bytes().decode("utf-8", "replace")
        out[path.name] = text.split("\n")[:-1]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=100_000, help="lines per format")
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated formats")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (best kept)")
    parser.add_argument("--ecs", action="store_true", help="also measure fields: ecs")
    parser.add_argument("--corpus", action="store_true", help="read ../shared/corpus instead")
    parser.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: first)")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {args.cpu if args.cpu is not None else cpus[0]})
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)

    if args.corpus:
        if not CORPUS.is_dir():
            raise SystemExit(f"no corpus at {CORPUS}")
        inputs = corpus_lines()
    else:
        names = [name.strip() for name in args.formats.split(",") if name.strip()]
        unknown = [name for name in names if name not in GENERATORS]
        if unknown:
            raise SystemExit(f"unknown formats: {', '.join(unknown)}; use {', '.join(FORMATS)}")
        inputs = {name: [GENERATORS[name](n) for n in range(args.lines)] for name in names}

    reference_lines = [oslo(n) for n in range(args.lines)]
    results: dict[str, Any] = {
        "reference": {
            "loop": best_rate(reference_lines, loop_run, args.repeat),
            "regex": best_rate(reference_lines, regex_run, args.repeat),
            "codec": best_rate(reference_lines, codec_run, args.repeat),
        },
        "formats": {},
    }
    print(f"python {sys.version.split()[0]}, {args.lines if not args.corpus else 'corpus'} lines")
    print(f"reference: loop {results['reference']['loop']:>12,.0f} lines/s")
    print(f"reference: regex{results['reference']['regex']:>13,.0f} lines/s  (oslo regex only)")
    codec = results["reference"]["codec"]
    print(f"reference: codec{codec:>13,.0f} lines/s  (orjson loads + dumps of the event)")
    header = f"{'input':<46} {'auto':>12} {'forced':>12}" + (f" {'ecs':>12}" if args.ecs else "")
    print(header + "   lines/s  (us/line auto, x codec)")
    for name, lines in inputs.items():
        row: dict[str, float] = {"auto": best_rate(lines, filter_run({}), args.repeat)}
        forced = name if name in GENERATORS else None
        if forced is not None:
            row["forced"] = best_rate(lines, filter_run({"format": forced}), args.repeat)
        if args.ecs:
            row["ecs"] = best_rate(lines, filter_run({"fields": "ecs"}), args.repeat)
        results["formats"][name] = row
        forced_cell = f"{row['forced']:>12,.0f}" if "forced" in row else f"{'-':>12}"
        cells = f"{row['auto']:>12,.0f} {forced_cell}"
        if args.ecs:
            cells += f" {row['ecs']:>12,.0f}"
        print(f"{name:<46} {cells}   ({1e6 / row['auto']:.2f}, {codec / row['auto']:.2f}x)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
