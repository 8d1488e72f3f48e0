#!/bin/sh
# run-fuzzer.sh EXE WORKDIR SEEDDIR SECONDS: a bounded libFuzzer run.
set -eu
exe=$1 work=$2 seeds=$3 secs=$4
mkdir -p "$work"
exec "$exe" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$work/" "$work" "$seeds"
