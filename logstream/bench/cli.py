"""The ``logstream bench`` command line: ``bandwidth`` and ``throughput``.

Kept apart from :mod:`logstream.cli` so that building the parser imports
nothing heavy (matplotlib, paho) until a benchmark actually runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

QUICK_EVENTS = 2_000
QUICK_ES_EVENTS = 3_000


def add_parser(commands: Any) -> None:
    """Add ``bench`` with its two subcommands to the CLI's subparsers."""
    bench = commands.add_parser(
        "bench",
        help="benchmarks: MQTT bandwidth per payload policy, TCP throughput",
        description="Run a benchmark and write results.json, results.md (and plots) to --out.",
    )
    kinds = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")

    bandwidth = kinds.add_parser(
        "bandwidth",
        help="broker bytes and subscriber losses of each MQTT payload policy",
        description="Replay a corpus through tcp -> parse -> mqtt to a fresh mosquitto per "
        "policy; the broker's $SYS byte counters are the referee.",
    )
    bandwidth.add_argument(
        "--policies",
        default=None,
        help="comma-separated (baseline is always run): baseline, json, ndjson, lz4, lz4-9, "
        "zstd, lz4-sampled, zstd-sampled, lz4-capped (default: baseline,ndjson,lz4,zstd,"
        "lz4-sampled,lz4-capped)",
    )
    bandwidth.add_argument(
        "--rate",
        type=float,
        default=None,
        metavar="EVENTS_PER_SEC",
        help="send rate (default 10000); 0: as fast as possible",
    )
    bandwidth.add_argument(
        "--events",
        type=int,
        default=None,
        help="records to replay; the corpus is cycled (default 100000)",
    )
    bandwidth.add_argument(
        "--cap",
        type=float,
        default=None,
        metavar="BYTES_PER_SEC",
        help="total_bytes_per_sec of the capped policies (default 100000)",
    )
    _common(bandwidth)

    throughput = kinds.add_parser(
        "throughput",
        help="events/s, MiB/s, CPU and RSS of TCP -> file / lz4 MQTT / Elasticsearch",
        description="TCP throughput of logstream run next to references measured in the "
        "same run (a discarding receiver, an orjson loop, a raw bulk client).",
    )
    throughput.add_argument(
        "--targets",
        default=None,
        help="comma-separated: discard, orjson-loop, file, mqtt-lz4, mqtt, parse, parse+redact, "
        "parse-mqtt-lz4, elasticsearch, es-bulk (default: all but mqtt, parse, parse+redact, "
        "parse-mqtt-lz4)",
    )
    throughput.add_argument("--events", type=int, default=None, help="lines (default 500000)")
    throughput.add_argument(
        "--es-events",
        type=int,
        default=None,
        help="lines for elasticsearch and es-bulk (default 100000)",
    )
    throughput.add_argument("--connections", type=int, default=4, help="TCP connections")
    throughput.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="run each logstream target with pipeline.workers 1..N (default 1)",
    )
    throughput.add_argument(
        "--runs",
        type=int,
        default=None,
        help="rounds over every target, medians reported (default 3; 1 with --quick)",
    )
    _common(throughput)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help="directory of log files (default ../shared/corpus when present, else generated)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="where results go (default bench-results/<benchmark>-<UTC time>/)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a few seconds, small generated data (for CI)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark ``args`` name; print where the results are. Returns an exit code."""
    from logstream.bench import bandwidth, scaling, throughput
    from logstream.bench.corpus import default_corpus

    if logging.getLogger().level >= logging.INFO:  # keep the progress bar readable
        logging.getLogger("logstream").setLevel(logging.WARNING)

    out: Path = args.out or bandwidth.default_out_dir(args.bench)
    if args.corpus is not None and not args.corpus.is_dir():
        print(f"logstream bench: --corpus: not a directory: {args.corpus}", file=sys.stderr)
        return 2
    corpus = None if args.quick else (args.corpus or default_corpus())
    try:
        if args.bench == "bandwidth":
            options = bandwidth.Options(corpus=corpus, out=out, progress=not args.no_progress)
            if args.policies:
                options.policies = [p.strip() for p in args.policies.split(",") if p.strip()]
            if args.quick:
                options.events, options.rate = QUICK_EVENTS, bandwidth.DEFAULT_RATE
            if args.events is not None:
                options.events = _positive("--events", args.events)
            if args.rate is not None:
                options.rate = None if args.rate == 0 else _positive("--rate", args.rate)
            if args.cap is not None:
                options.cap_bytes_per_sec = _positive("--cap", args.cap)
            summary = bandwidth.run(options)
        else:
            options_t = throughput.Options(corpus=corpus, out=out, progress=not args.no_progress)
            options_t.connections = int(_positive("--connections", args.connections))
            options_t.workers = int(_positive("--workers", args.workers))
            if args.targets:
                options_t.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
            if args.quick:
                options_t.events, options_t.es_events = 20_000, QUICK_ES_EVENTS
                options_t.runs = 1
            if args.events is not None:
                options_t.events = int(_positive("--events", args.events))
            if args.es_events is not None:
                options_t.es_events = int(_positive("--es-events", args.es_events))
            if args.runs is not None:
                options_t.runs = int(_positive("--runs", args.runs))
            summary = scaling.run(options_t)
    except ValueError as error:
        print(f"logstream bench {args.bench}: {error}", file=sys.stderr)
        return 2
    print((out / "results.md").read_text(encoding="utf-8"))
    print(f"results: {out}/results.json, {out}/results.md", end="")
    plots = summary.get("plots") or []
    print(f", plots: {', '.join(plots)}" if plots else "")
    return 0


def _positive(option: str, value: float) -> Any:
    if value <= 0:
        raise ValueError(f"{option} must be positive, value: {value}")
    return value
