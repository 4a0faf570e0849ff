"""TCP throughput of logstream against references measured in the same run.

A thin wrapper over ``logstream bench throughput`` (the code is
:mod:`logstream.bench.throughput`); every option of that command works here:

    .venv/bin/python benchmarks/throughput.py --events 500000 --connections 4
    .venv/bin/python benchmarks/throughput.py --targets file,orjson-loop --out results/
"""

import sys

from logstream.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "throughput", *sys.argv[1:]]))
