#!/usr/bin/env bash
# fuzz.sh [SECONDS]: build the fuzz build (build-fuzz: clang, libFuzzer,
# AddressSanitizer + UndefinedBehaviorSanitizer) if needed and run every
# fuzz target, one after the other, for SECONDS each (default 300).
#
# Targets are tests/fuzz/fuzz_NAME.c, seeded from tests/fuzz/corpus/NAME;
# a target must also be listed in tests/fuzz/meson.build (one that is not
# is reported as missing).  The corpus grows in build-fuzz/corpus/NAME
# (outside git) from one run to the next; crash, leak and timeout inputs
# go to build-fuzz/artifacts/NAME/.
#
# Environment: FUZZ_RUNS=N also stops a target after N executions;
# FUZZ_TARGETS="a b" runs only those; FUZZ_NICE=0 runs without nice;
# FUZZ_BUILD=DIR uses another build directory (default build-fuzz).
# Prints one line per target: executions, edges (cov), features (ft),
# crashes, seconds.  Exit 0 when no target crashed, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${1:-300}
case $secs in ''|*[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS]" >&2; exit 2;; esac
bd=${FUZZ_BUILD:-build-fuzz}

if [ ! -f "$bd/build.ninja" ]; then
  CC=clang meson setup "$bd" --buildtype=debugoptimized -Db_sanitize=address,undefined \
    -Db_lundef=false -Dfuzz=true >/dev/null || { echo "fuzz.sh: meson setup $bd failed" >&2; exit 1; }
fi
targets=${FUZZ_TARGETS:-$(cd tests/fuzz && ls fuzz_*.c | sed 's/\.c$//; s/^fuzz_//')}
build=()
for t in $targets; do
  grep -q "'fuzz_$t'" tests/fuzz/meson.build && build+=("tests/fuzz/fuzz_$t")
done
if [ ${#build[@]} -gt 0 ]; then
  nice ninja -C "$bd" "${build[@]}" >/dev/null || { echo "fuzz.sh: build failed" >&2; exit 1; }
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
nice=(nice -n 10)
[ "${FUZZ_NICE:-1}" = 0 ] && nice=()
runs=()
[ -n "${FUZZ_RUNS:-}" ] && runs=(-runs="$FUZZ_RUNS")

printf '%-14s %12s %8s %8s %8s %8s\n' target executions cov ft crashes seconds
bad=0
for t in $targets; do
  exe=$bd/tests/fuzz/fuzz_$t
  if [ ! -x "$exe" ]; then
    printf '%-14s missing: fuzz_%s is not in tests/fuzz/meson.build\n' "$t" "$t"
    bad=1
    continue
  fi
  corpus=$bd/corpus/$t art=$bd/artifacts/$t log=$bd/fuzz-$t.log
  mkdir -p "$corpus" "$art"
  seeds=()
  [ -d "tests/fuzz/corpus/$t" ] && seeds=("tests/fuzz/corpus/$t")
  start=$(date +%s)
  "${nice[@]}" "$exe" -max_total_time="$secs" "${runs[@]}" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$art/" "$corpus" "${seeds[@]}" >"$log" 2>&1
  rc=$?
  dur=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | grep ' cov: ' | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  crashes=0
  if [ $rc -ne 0 ]; then
    crashes=1
    bad=1
  fi
  printf '%-14s %12s %8s %8s %8s %8s\n' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$crashes" "$dur"
  if [ $crashes -ne 0 ]; then
    echo "  exit $rc; log $log; artifacts:" $(ls "$art") | head -c 2000
    echo
  fi
done
exit $bad
