"""The command line: `logstream run`, `logstream check`, `logstream --version`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from logstream import __version__

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # elastic_transport logs every request at INFO; keep its warnings only.
    logging.getLogger("elastic_transport").setLevel(max(logging.WARNING, logging.root.level))
    from logstream.config import ConfigError, build_pipeline, load_config

    try:
        if args.command == "check":
            config = load_config(args.config)
            build_pipeline(config)  # builds every unit: catches what validation cannot
            print(
                f"{args.config}: OK ({len(config.inputs)} inputs, {len(config.filters)} filters, "
                f"{len(config.sinks)} sinks)"
            )
            return 0
        if args.command == "run":
            from logstream.run import run

            return run(args.config)
    except ConfigError as error:
        print(f"logstream: invalid configuration: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"logstream: {error}", file=sys.stderr)
        return 1
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
