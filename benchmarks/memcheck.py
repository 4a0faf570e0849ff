"""Run the compiled parsers and parse loop over many lines under valgrind's memcheck.

The Cython fast paths read lines by index without bounds checks; a read past
a string's end would go unnoticed by the differential tests when the bytes
there happen to agree. Under memcheck with Python's own allocator off
(``PYTHONMALLOC=malloc``: every object its own block), such a read is an
error report::

    PYTHONMALLOC=malloc valgrind --error-exitcode=9 --undef-value-errors=no --leak-check=no \\
        .venv/bin/python benchmarks/memcheck.py --lines 3000

(Reports of uninitialised values are off: CPython's start-up gives a few
hundred of its own, none in the compiled modules.) It feeds every compiled
parser (against its pure twin, as the ``parse_lines`` fuzz target does) and
the ``parse`` filter's compiled loop the corpus's lines
when ../shared/corpus is there, the fuzz seeds, and random edits of both
(cut short, characters dropped or inserted): most of the reads near a line's
end happen on those.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[0:1] = [str(REPO)]  # not this directory: benchmarks/nats.py would shadow nats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=3000, help="random edits to feed")
    args = parser.parse_args()

    from logstream.clock import ManualClock
    from logstream.config import parse_config
    from logstream.metrics import Registry
    from logstream.units import BuildContext
    from tests.support.fuzz import SEEDS, _parser_pairs, parse_lines
    from tests.support.speedups import corpus_lines, mutants

    if not _parser_pairs():
        print("the compiled parsers are not built", file=sys.stderr)
        return 2
    base = [line for seed in SEEDS["parse_lines"] for line in seed.decode().splitlines()]
    base += corpus_lines()[::7]
    lines = base + mutants(base, args.lines, seed=7)
    rnd = random.Random(3)  # noqa: S311 (test data)
    lines += [line[: rnd.randrange(len(line) + 1)] for line in base]
    for start in range(0, len(lines), 50):
        parse_lines("\n".join(lines[start : start + 50]).encode())
    config = parse_config(
        {
            "inputs": [{"type": "tcp", "listen": "127.0.0.1:0"}],
            "filters": [{"type": "parse"}],
            "sinks": [{"type": "stdout"}],
        }
    )
    unit = config.filters[0].build("parse", BuildContext(registry=Registry(), clock=ManualClock()))
    out = 0
    for start in range(0, len(lines), 100):
        batch = [
            {"message": line, "host": f"h{n % 3}"}
            for n, line in enumerate(lines[start : start + 100])
        ]
        out += len(unit.process(batch))
    out += len(unit.flush())
    parsers = len(_parser_pairs())
    print(f"{len(lines)} lines through {parsers} compiled parsers and the loop: {out} events")
    return 0


if __name__ == "__main__":
    sys.exit(main())
