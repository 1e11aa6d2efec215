#!/usr/bin/env bash
# Installs, from Debian 12 packages, whatever Sluice needs to build and test
# that this machine does not have yet. Safe to run again: it only calls
# apt-get when a package is missing.
#
#   scripts/install-deps.sh           what building and testing need
#   scripts/install-deps.sh --bench   that, and the peer brokers, gnuplot and
#                                     perf for bench/ (scripts/bench.sh)
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config
  libboost-dev          # Asio, Beast, Lockfree (header-only in 1.74)
  liblmdb-dev           # storage
  libtomlplusplus-dev   # config file parser
  nlohmann-json3-dev    # JSON (HTTP API, bench output)
  prometheus-cpp-dev    # metrics exposition
  prometheus            # the real server a test scrapes sluiced with; promtool for ops/ rules
  libcli11-dev          # command-line parsing (sluiced, sluicectl)
  doctest-dev           # tests
  json-schema-test-suite  # JSON Schema draft 7 conformance cases (the schema validator's tests)
  chromium chromium-driver python3-selenium  # the web console's tests, in headless Chromium
  libssl-dev            # TLS
  zlib1g-dev            # gzip for /metrics
  openssl curl          # the TLS test makes certificates and talks HTTPS with curl
  python3 python3-yaml  # test helpers; the Kubernetes manifests' checks
  systemd               # systemd-analyze verify of packaging/sluiced.service
  lmdb-utils            # mdb_copy: the backup test (docs/operations.md)
  dpkg-dev              # dpkg-shlibdeps, for the Debian package (CPack)
  clang-14 libclang-rt-14-dev  # libFuzzer targets (scripts/fuzz.sh)
)

if [ "${1:-}" = --bench ]; then
  packages+=(
    redis-server beanstalkd rabbitmq-server nats-server  # the peers bench/bench.py compare runs
    gnuplot-nox           # the report's plots
    linux-perf            # profiling the hot path
    iproute2              # ss: which process listens on a port (RabbitMQ's beam.smp)
  )
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
