#!/usr/bin/env bash
# test.sh: set up, then run every test suite: the default build (unit, fuzz
# corpus replay, sim, provider, integration) and a clang build with
# AddressSanitizer + UndefinedBehaviorSanitizer (unit suite, plus bounded
# libFuzzer runs).  Ends with the line "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || { echo "0 passed, 1 failed"; exit 1; }

if [ ! -f build-san/build.ninja ]; then
  CC=clang meson setup build-san --buildtype=debug -Db_sanitize=address,undefined \
    -Db_lundef=false -Dfuzz=true -Dfailpoints=true >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
fi
# A build directory made before an option existed keeps its old value: the
# tests need failpoints in both builds (SIGKILL at each step boundary).
meson configure build -Dfailpoints=true >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
meson configure build-san -Dfailpoints=true -Dfuzz=true >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
ninja -C build >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
ninja -C build-san >/dev/null || { echo "0 passed, 1 failed"; exit 1; }

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# Node 20 from the npm registry, where the system's is older (scripts/setup.sh).
[ -x tests/js/.node/bin/node ] && export PATH="$PWD/tests/js/.node/bin:$PATH"
# Default build: every suite.  Sanitizer build: every suite that runs our C
# code (the simulators are Python and run once), with libFuzzer for real; the
# rotation fault matrix (minutes of simulator time) runs in the default build only.
meson test -C build --num-processes 2 --print-errorlogs "$@"
meson test -C build-san --num-processes 2 --print-errorlogs --no-suite sim --no-suite real --no-suite matrix "$@"
exec /usr/bin/python3 scripts/testsummary.py build/meson-logs/testlog.json build-san/meson-logs/testlog.json
