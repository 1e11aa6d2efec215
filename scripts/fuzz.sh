#!/usr/bin/env bash
# Builds the libFuzzer targets (protocol decoder, config parser, HTTP API,
# schema validator) with clang (ASan + UBSan) and runs each for SECONDS
# (default 600) on a scratch copy of its checked-in seed corpus
# (tests/fuzz/corpus/NAME). Prints libFuzzer's last status line (runs,
# coverage) per target; exits non-zero on the first crash, leak or UB, leaving
# the crashing input in the build directory.
#
#   scripts/fuzz.sh            # 10 minutes each
#   scripts/fuzz.sh 60         # the short run the test suite does
#
# Environment: SLUICE_FUZZ_BUILD (build directory, default build-fuzz),
# SLUICE_SKIP_INSTALL=1 (do not run install-deps.sh; the suite sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
build=${SLUICE_FUZZ_BUILD:-build-fuzz}
[ "${SLUICE_SKIP_INSTALL:-0}" = 1 ] || ./scripts/install-deps.sh
cmake -S . -B "$build" -G Ninja -DSLUICE_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER=clang++-14 >/dev/null
cmake --build "$build"
for target in protocol config http schema; do
  work=$(mktemp -d)
  cp -r "tests/fuzz/corpus/$target/." "$work/"
  log=$build/fuzz_$target.log
  if ! "$build/tests/fuzz/fuzz_$target" -max_total_time="$seconds" -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$build/" "$work" \
      >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz_$target: FAILED (crashing input in $build/; log $log)"
    rm -rf "$work"
    exit 1
  fi
  rm -rf "$work"
  status=$(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "$log" | tail -1)
  echo "fuzz_$target: clean for ${seconds}s: $status"
done
