#!/usr/bin/env bash
# The benchmark report in one command: installs what is missing (the peer
# brokers too, from Debian packages), builds sluiced and the bench tools
# (Release) and runs bench/bench.py.
#
#   scripts/bench.sh                 Sluice beside Redis, beanstalkd, RabbitMQ and
#                                    NATS JetStream; table, JSON and plots in bench/results
#   scripts/bench.sh latency         any other scenario of bench/bench.py (--help lists them)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh --bench
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target sluiced sluicectl sluice-bench sluice-compare sluice-trigger-bench \
  sluice-host-gaps
export SLUICE_BUILD_DIR=$PWD/build
[ $# -eq 0 ] && set -- compare
exec python3 bench/bench.py "$@"
