"""The HTTP load test: ``python benchmarks/load.py [flags]`` is ``baton bench load [flags]``.

A bounded run on loopback: each mode's capacity, then 60 s of Poisson arrivals at twice the staged capacity;
accepted, rejected and failed requests and the p95 latency, into benchmarks/results/.
"""

import sys

from baton.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "load", *sys.argv[1:]]))
