#!/usr/bin/env bash
# test.sh: set up, then run every test suite: the test build build-test/
# (unit, fuzz corpus replay, sim, provider, integration; failpoints compiled
# in) and a clang build with AddressSanitizer + UndefinedBehaviorSanitizer
# (unit suite, plus bounded libFuzzer runs).  build/ (made by setup.sh, no
# failpoints) is what the demo runs and `meson install` installs; the unit
# suite checks that it has none.  Ends with the line "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."
# Quick path: when setup.sh already ran as it is now (its stamp matches),
# only rebuild; else the full set-up (packages, npm clients, build/).
stamp=build/.setup-done
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(sha256sum scripts/setup.sh | cut -d' ' -f1)" ]; then
  ninja -C build >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
else
  bash scripts/setup.sh || { echo "0 passed, 1 failed"; exit 1; }
fi

if [ ! -f build-test/build.ninja ]; then
  meson setup build-test --buildtype=debugoptimized -Dfailpoints=true >/dev/null \
    || { echo "0 passed, 1 failed"; exit 1; }
fi
if [ ! -f build-san/build.ninja ]; then
  CC=clang meson setup build-san --buildtype=debug -Db_sanitize=address,undefined \
    -Db_lundef=false -Dfuzz=true -Dfailpoints=true >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
fi
# A build directory made before an option existed keeps its old value: the
# tests need failpoints in both test builds (SIGKILL at each step boundary).
meson configure build-test -Dfailpoints=true >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
meson configure build-san -Dfailpoints=true -Dfuzz=true >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
ninja -C build-test >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
ninja -C build-san >/dev/null || { echo "0 passed, 1 failed"; exit 1; }

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# Node 20 from the npm registry, where the system's is older (scripts/setup.sh).
[ -x tests/js/.node/bin/node ] && export PATH="$PWD/tests/js/.node/bin:$PATH"
# Test build: every suite.  Sanitizer build: every suite that runs our C
# code (the simulators are Python and run once), with libFuzzer for real; the
# rotation fault matrix (minutes of simulator time) runs in the test build only.
# No stale counts: each run's logs are its own, and meson's own failure (a
# suite that does not exist, a build error) fails the run.
rm -f build-test/meson-logs/testlog.json build-san/meson-logs/testlog.json
rc=0
meson test -C build-test --num-processes 2 --print-errorlogs "$@" || rc=1
meson test -C build-san --num-processes 2 --print-errorlogs --no-suite sim --no-suite real \
  --no-suite matrix "$@" || rc=1
/usr/bin/python3 scripts/testsummary.py build-test/meson-logs/testlog.json \
  build-san/meson-logs/testlog.json || rc=1
exit "$rc"
