#!/bin/sh
# scripts/bench.sh: build, then run the benchmarks (never part of the test suite; speed targets live here).
#   scripts/bench.sh                 # bench/register at D=100, R=5, L=20 ms (naive script at D=10, extrapolated)
#   scripts/bench.sh -D 20 -R 3      # any bench/register option is passed through
#   scripts/bench.sh register [...]  # the same, named
#   scripts/bench.sh rotate [...]    # bench/rotate: one database on R=5 at L=20 ms against its bound, then D=100
#   scripts/bench.sh fleet [...]     # bench/fleet: 50 AGs x 20 databases (R=2), --jobs 4 and --jobs 1
#   scripts/bench.sh growth [...]    # bench/growth: register, verify, rotate at D = 10, 100, 1000 on R = 9
#   scripts/bench.sh all             # register, rotate and growth, with their defaults; fails when any does
# BUILDDIR (default build) picks the build directory; DMKAGENT, when set, the binary.
# Exit status: 0 when every target is met, 1 when one is missed (the table says which), 2 on set-up errors.
set -eu
cd "$(dirname "$0")/.."
B=${BUILDDIR:-build}
ninja -C "$B" >/dev/null || { echo "bench.sh: build failed (ninja -C $B)" >&2; exit 2; }
DMKAGENT=${DMKAGENT:-$PWD/$B/dmkagent}
export DMKAGENT
case "${1:-}" in
register|rotate|growth|fleet)
	b=$1; shift
	SRCDIR=$PWD PYTHONPATH=$PWD exec /usr/bin/python3 "bench/$b" "$@" ;;
all)
	rc=0
	SRCDIR=$PWD PYTHONPATH=$PWD /usr/bin/python3 bench/register || rc=$?
	for b in rotate growth; do
		r2=0
		SRCDIR=$PWD PYTHONPATH=$PWD /usr/bin/python3 "bench/$b" || r2=$?
		[ "$r2" -gt "$rc" ] && rc=$r2
	done
	exit "$rc" ;;
*)
	SRCDIR=$PWD PYTHONPATH=$PWD exec /usr/bin/python3 bench/register "$@" ;;
esac
