#!/bin/sh
# scripts/bench.sh: build, then run the benchmarks (never part of the test suite; speed targets live here).
#   scripts/bench.sh                 # bench/register at D=100, R=5, L=20 ms (naive script at D=10, extrapolated)
#   scripts/bench.sh -D 20 -R 3      # any bench/register option is passed through
# Exit status: 0 when every target is met, 1 when one is missed (the table says which), 2 on set-up errors.
set -eu
cd "$(dirname "$0")/.."
ninja -C build >/dev/null || { echo "bench.sh: build failed (ninja -C build)" >&2; exit 2; }
SRCDIR=$PWD PYTHONPATH=$PWD exec /usr/bin/python3 bench/register "$@"
