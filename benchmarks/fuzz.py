"""Coverage-guided fuzzing of every decoder that reads bytes from outside, with atheris.

::

    .venv/bin/python benchmarks/fuzz.py --seconds 60              # every target, 60 s each
    .venv/bin/python benchmarks/fuzz.py --seconds 600 --targets lumberjack syslog_framing

Each target (``tests/support/fuzz.py``: json_lines, lumberjack, syslog_framing,
http_body, mqtt_envelope) runs in its own process under libFuzzer, starting from
valid seed inputs, with logstream's modules instrumented for coverage. Prints, per
target, the cases run, the coverage reached and the crashes found; a crash leaves
its input as ``crash-*`` in ``--artifacts`` (replay it with ``--replay FILE``).
Exit status 1 when any target crashed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _worker(target: str, argv: list[str]) -> None:
    """Run one target under atheris (does not return: libFuzzer exits the process)."""
    import atheris

    with atheris.instrument_imports(include=["logstream"]):
        from tests.support.fuzz import TARGETS

    atheris.Setup([sys.argv[0], *argv], TARGETS[target])
    atheris.Fuzz()


def _run_target(target: str, seconds: float, artifacts: Path) -> dict[str, object]:
    from tests.support.fuzz import SEEDS

    with tempfile.TemporaryDirectory(prefix=f"fuzz-{target}-") as corpus:
        for index, seed in enumerate(SEEDS[target]):
            Path(corpus, f"seed-{index}").write_bytes(seed)
        argv = [
            f"-max_total_time={max(1, round(seconds))}",
            "-print_final_stats=1",
            "-max_len=4096",
            "-rss_limit_mb=2048",
            f"-artifact_prefix={artifacts}/{target}-",
            corpus,
        ]
        done = subprocess.run(
            [sys.executable, __file__, "--worker", target, "--", *argv],
            capture_output=True,
            text=True,
            timeout=seconds + 120,
            check=False,
            cwd=REPO,
        )
    log = done.stdout + done.stderr
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    cov = re.findall(r"cov: (\d+)", log)
    crashed = "Uncaught Python exception" in log or "==ERROR" in log or done.returncode not in (0,)
    crash_file = re.search(r"Test unit written to (\S+)", log)
    return {
        "target": target,
        "runs": int(runs.group(1)) if runs else 0,
        "coverage": int(cov[-1]) if cov else 0,
        "crashes": 1 if crashed else 0,
        "crash_input": crash_file.group(1) if crash_file else "",
        "tail": "\n".join(log.splitlines()[-25:]) if crashed else "",
    }


def main() -> int:
    from tests.support.fuzz import TARGETS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="per target (default 30)")
    parser.add_argument("--targets", nargs="+", choices=sorted(TARGETS), default=sorted(TARGETS))
    parser.add_argument("--artifacts", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--replay", type=Path, help="run one target on a saved input")
    args = parser.parse_args()
    if args.replay:
        for name in args.targets:
            TARGETS[name](args.replay.read_bytes())
            print(f"{name}: {args.replay} decoded without error")
        return 0
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is not installed (pip install atheris)", file=sys.stderr)
        return 2
    args.artifacts.mkdir(parents=True, exist_ok=True)
    total_crashes = 0
    print(f"{'target':<16} {'cases run':>12} {'coverage':>9} {'crashes':>8}")
    for target in args.targets:
        result = _run_target(target, args.seconds, args.artifacts)
        total_crashes += int(str(result["crashes"]))
        print(
            f"{target:<16} {result['runs']:>12} {result['coverage']:>9} {result['crashes']:>8}",
            flush=True,
        )
        if result["crashes"]:
            print(f"  input: {result['crash_input']}\n{result['tail']}", file=sys.stderr)
    return 1 if total_crashes else 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        # Before anything imports logstream: instrumented imports only work on first import.
        _worker(sys.argv[2], [arg for arg in sys.argv[3:] if arg != "--"])
    sys.exit(main())
