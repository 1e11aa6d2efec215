#!/usr/bin/env bash
# Quick start, part 2: installs what is missing, builds everything (Release)
# and runs the whole test suite: unit tests and integration tests against the
# real sluiced. Ends with ctest's summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build
cd build
ctest --output-on-failure --timeout 300 -j 2
