#!/usr/bin/env bash
# Runs sluice-bench RUNS times (default 5), each against a fresh sluiced on a
# free port, and prints every run's JSON plus the median of msgs_per_sec and
# of the latency percentiles. Arguments after the run count go to sluice-bench.
#
#   bench/run.sh [RUNS] [sluice-bench options...]
#   bench/run.sh 5 --messages 1000000 --size 100 --consumers 4 --in-flight 64
#
# SLUICE_BENCH_DURABLE=fsync (or nosync) runs the broker with a fresh data
# directory and every queue durable; sluice-bench then also prints the
# commits (fsyncs) per second and the median batch.
# SLUICE_BENCH_TLS=1 runs the broker with TLS (a throwaway CA and certificate
# made with openssl) and sluice-bench verifies it (SLUICE_BENCH_TLS_CA).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${SLUICE_BUILD_DIR:-$here/../build}
runs=${1:-5}
[ $# -gt 0 ] && shift
for bin in "$build/broker/sluiced" "$build/bench/sluice-bench"; do
  [ -x "$bin" ] || { echo "run.sh: $bin not built (cmake --build $build)" >&2; exit 2; }
done

tmp=$(mktemp -d)
trap 'kill $broker_pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
: > "$tmp/results"
tls=()
if [ "${SLUICE_BENCH_TLS:-0}" = 1 ]; then
  (cd "$tmp" &&
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
      -subj /CN=bench-ca -keyout ca.key -out ca.pem \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign &&
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
      -keyout server.key -out server.csr &&
    printf 'subjectAltName=IP:127.0.0.1\n' > server.ext &&
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
      -extfile server.ext -out server.pem) >/dev/null 2>&1
  tls=(--set "tls.cert_file=$tmp/server.pem" --set "tls.key_file=$tmp/server.key")
  export SLUICE_BENCH_TLS_CA=$tmp/ca.pem
fi
for i in $(seq 1 "$runs"); do
  rm -f "$tmp/port"
  storage=()
  if [ -n "${SLUICE_BENCH_DURABLE:-}" ]; then
    rm -rf "$tmp/data"
    storage=(--set "storage.path=$tmp/data" --set "storage.sync=$SLUICE_BENCH_DURABLE"
             --set queue_defaults.durability=durable)
  fi
  "$build/broker/sluiced" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --port-file "$tmp/port" \
    --log-level warn \
    "${storage[@]}" "${tls[@]}" &
  broker_pid=$!
  for _ in $(seq 1 100); do [ -s "$tmp/port" ] && break; sleep 0.05; done
  port=$(head -1 "$tmp/port")  # the protocol port; the HTTP port is on line 2
  "$build/bench/sluice-bench" --broker "127.0.0.1:$port" --broker-pid "$broker_pid" --json "$@" |
    tee -a "$tmp/results"
  kill "$broker_pid"; wait "$broker_pid" || true
done

python3 - "$tmp/results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
keys = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
medians = ", ".join(f"{k} {statistics.median(r[k] for r in rows):g}" for k in keys)
ok = all(r.get("lost", 0) == 0 and r.get("credit_respected", True) for r in rows)
print(f"median of {len(rows)} {rows[0]['mode']} runs: {medians}; "
      f"{'none lost' if ok else 'LOSS OR CREDIT VIOLATION'}")
sys.exit(0 if ok else 1)
PY
