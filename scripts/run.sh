#!/usr/bin/env bash
# Quick start, part 1: installs what is missing, builds sluiced (Release) and
# runs it in the foreground with embedded defaults (127.0.0.1:7450).
# Any arguments go to sluiced, e.g. ./scripts/run.sh --config my.toml
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target sluiced sluicectl
exec ./build/broker/sluiced "$@"
