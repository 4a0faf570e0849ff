"""The command line: `logstream run`, `check`, `replay`, `tail`, `top`, `bench`, `--version`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from logstream import __version__
from logstream.secrets import install_log_masking, mask_text

DEFAULT_CONFIG = Path("config/local.yaml")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logstream",
        description="Log-stream processor: Logstash-compatible inputs, filters, "
        "Elasticsearch and MQTT outputs.",
    )
    parser.add_argument("--version", action="version", version=f"logstream {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logstream's own log level (default INFO)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the pipeline until SIGINT/SIGTERM")
    run.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG, help="YAML config file")

    check = commands.add_parser("check", help="validate a config file and exit")
    check.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG, help="YAML config file")
    check.add_argument(
        "--connect",
        action="store_true",
        help="also connect to each sink's destination (Elasticsearch GET /, MQTT CONNECT)",
    )

    replay = commands.add_parser(
        "replay",
        help="send a dead-letter file's documents to Elasticsearch again",
        description="Re-send the documents Elasticsearch refused (after fixing the mapping): "
        "same index, same id, op_type create, through the config's elasticsearch sink.",
    )
    replay.add_argument("--dlq", type=Path, required=True, metavar="FILE", help="dead-letter file")
    replay.add_argument(
        "-c", "--config", type=Path, default=DEFAULT_CONFIG, help="YAML config file"
    )
    replay.add_argument("--sink", help="the elasticsearch sink to use (when there are several)")

    tail = commands.add_parser(
        "tail",
        help="follow MQTT log topics like tail -f (every payload encoding)",
        description="Subscribe to MQTT topic filters and print each event as a line; "
        "json, ndjson, lz4 and zstd payloads are decoded, suppression summaries shown.",
    )
    tail.add_argument("topics", nargs="+", metavar="TOPIC", help="topic filter, e.g. 'logs/#'")
    tail.add_argument(
        "--url",
        action="append",
        help="broker, mqtt[s]://[user:pass@]host:port (default: the local broker of a running "
        "`logstream run`, from <state_dir>/mqtt.url); give it again for each broker of a sink "
        "with several urls: each is followed, every message printed once",
    )
    tail.add_argument(
        "-c",
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="config whose state_dir holds mqtt.url (without --url)",
    )
    tail.add_argument("--level", help="show only events at or above this severity (e.g. WARNING)")
    tail.add_argument("--json", action="store_true", help="print each event as one JSON line")
    tail.add_argument(
        "--color",
        choices=["auto", "always", "never"],
        default="auto",
        help="colour levels (auto: on a terminal, unless NO_COLOR is set)",
    )
    tail.add_argument("--count", type=int, help="exit after printing this many events")
    tail.add_argument("--protocol", choices=["5", "3.1.1"], default="5", help="MQTT version")
    tail.add_argument("--qos", type=int, choices=[0, 1], default=1, help="subscription QoS")
    tail.add_argument("--username", help="user name (or in --url)")
    tail.add_argument(
        "--password",
        default=os.environ.get("LOGSTREAM_MQTT_PASSWORD"),
        help="password (default: $LOGSTREAM_MQTT_PASSWORD)",
    )
    top = commands.add_parser(
        "top",
        help="a live terminal dashboard of a running logstream (from /metrics)",
        description="Per unit events/s in and out, drops by reason, buffer and spool depth, "
        "blocked time and MQTT bytes/s against the caps, refreshed every second. The "
        "password for a monitor with basic auth comes from $LOGSTREAM_MONITOR_PASSWORD.",
    )
    top.add_argument(
        "--url", help="the monitor, http[s]://host:port (default: the config's monitor.listen)"
    )
    top.add_argument(
        "-c", "--config", type=Path, default=DEFAULT_CONFIG, help="config naming the monitor"
    )
    top.add_argument("--user", help="basic auth user (password: $LOGSTREAM_MONITOR_PASSWORD)")
    top.add_argument("--cacert", type=Path, help="CA file to check an https monitor with")
    top.add_argument(
        "--interval", type=float, default=1.0, help="seconds between refreshes (default 1)"
    )
    top.add_argument("--once", action="store_true", help="print one frame and exit (scripts)")
    from logstream.bench.cli import add_parser as add_bench_parser

    add_bench_parser(commands)  # `logstream bench bandwidth|throughput`
    return parser


def _tail(args: argparse.Namespace) -> int:
    from logstream.severity import parse_name
    from logstream.tail import TailOptions, colour_wanted, default_url, tail

    try:
        level = parse_name(args.level) if args.level else None
    except ValueError as error:
        print(f"logstream tail: --level: {error}", file=sys.stderr)
        return 2
    if args.count is not None and args.count < 1:
        print(f"logstream tail: --count must be at least 1, value: {args.count}", file=sys.stderr)
        return 2
    options = TailOptions(
        topics=args.topics,
        url=args.url[0] if args.url else default_url(args.config, sys.stderr),
        urls=tuple(args.url or ()),
        level=level,
        json=args.json,
        colour=colour_wanted(args.color, sys.stdout),
        count=args.count,
        protocol=args.protocol,
        qos=args.qos,
        username=args.username,
        password=args.password,
    )
    return tail(options)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    install_log_masking()  # no URL password in any log record, ours or a library's
    # elastic_transport logs every request at INFO; keep its warnings only.
    logging.getLogger("elastic_transport").setLevel(max(logging.WARNING, logging.root.level))
    if args.command == "tail":  # needs no config (nor its imports)
        return _tail(args)
    if args.command == "top":  # reads the monitor, not the pipeline
        from logstream.top import options_from_args, run_top

        if args.interval <= 0:
            print(f"logstream top: --interval must be positive, value: {args.interval}",
                  file=sys.stderr)  # fmt: skip
            return 2
        return run_top(options_from_args(args))
    if args.command == "bench":  # needs no config either
        from logstream.bench.cli import run as run_bench

        return run_bench(args)
    from logstream.config import ConfigError, build_pipeline, load_config

    try:
        if args.command == "check":
            config = load_config(args.config)
            build_pipeline(config)  # builds every unit: catches what validation cannot
            from logstream.listeners import listeners, ports_in_use
            from logstream.statelock import running_pid

            running = running_pid(config.state_dir)
            if running is not None:  # its ports are its own: editing its config to reload
                print(
                    f"logstream is running on {config.state_dir} (pid {running}): "
                    "listening ports not probed (a reload keeps unchanged inputs' sockets)"
                )
                taken = []
            else:
                taken = ports_in_use(listeners(config))  # what `run` would fail to bind
            if taken:
                print(f"logstream check: {args.config}:", file=sys.stderr)
                for line in taken:
                    print(f"  {line}", file=sys.stderr)
                return 2
            counts = ", ".join(
                _plural(len(units), kind)
                for units, kind in ((config.inputs, "input"), (config.filters, "filter"))
            )
            print(f"{args.config}: OK ({counts}, {_plural(len(config.sinks), 'sink')})")
            workers = config.pipeline.worker_count()
            if workers > 1:
                print(f"  {workers} worker processes share each input's address (pipeline.workers)")
            names = config.unit_names()
            for unit in config.filters:  # what sampling keeps, per severity
                describe = getattr(unit, "describe_rates", None)
                if describe is not None:
                    print(f"  filter {names[id(unit)]} keeps: {describe()}")
            if not args.connect:
                return 0
            from logstream.config import local_sinks, read_yaml, substitute_env
            from logstream.ops import run_check_connect

            local = local_sinks(substitute_env(read_yaml(args.config), os.environ))
            ok, lines = run_check_connect(config, local)
            print(mask_text("\n".join(lines)))
            return 0 if ok else 1
        if args.command == "replay":
            from logstream.ops import run_replay

            if not args.dlq.is_file():
                print(f"logstream replay: no such file: {args.dlq}", file=sys.stderr)
                return 2
            ok, lines = run_replay(load_config(args.config), args.dlq, args.sink)
            print("\n".join(lines))
            return 0 if ok else 1
        if args.command == "run":
            from logstream.run import run

            return run(args.config)
    except ConfigError as error:
        print(f"logstream: invalid configuration: {mask_text(str(error))}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"logstream: {mask_text(str(error))}", file=sys.stderr)
        return 1
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
