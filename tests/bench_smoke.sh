#!/usr/bin/env bash
# A short run of the benchmark scenarios, so that bench/ keeps working: the
# peer comparison (Sluice, and whichever quick-starting peers are installed)
# with small counts (and the host's CPU gaps), the burst comparison, the burst, queues and connections scenarios, triggers and
# schemas. Fails when a scenario fails or loses a message. The figures mean
# nothing here.
set -euo pipefail
build=$1
here=$(cd "$(dirname "$0")/.." && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export SLUICE_BUILD_DIR=$build
python3 "$here/bench/bench.py" compare --peers sluice,redis,beanstalkd,nats --runs 1 \
  --messages 20000 --duration 0.5 --latency-runs 1 --durable-messages 2000 --trace --out "$out"
python3 - "$out/compare.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["peers"]["sluice"]
assert s["all_ok"] and s["median"]["msgs_per_sec"] > 0 and s["median"]["p99_us"] > 0, s
assert s["median"]["durable_msgs_per_sec"] > 0 and s["median"]["durable_p99_us"] > 0, s
assert r["host_gaps"]["cpus"] and r["host_gaps"]["seconds"] > 0, r["host_gaps"]
# Each latency run counts its stalls (runs of messages over 500 us) and wrote
# its messages in send order.
import os
for i, lat in enumerate(s["latency"]):
    assert (lat["stalls"] == 0) == (lat["largest_stall_us"] == 0), lat
    assert lat["p999_us"] <= 500 or lat["stalls"] >= 1, lat
    trace = os.path.join(os.path.dirname(sys.argv[1]), f"trace-sluice-{i}.dat")
    rows = [line.split() for line in open(trace)]
    assert len(rows) == lat["messages"], (len(rows), lat["messages"])
    sent = [int(row[1]) for row in rows]
    assert sent == sorted(sent)
    assert sum(int(row[2]) > 500 for row in rows) >= lat["stalls"]
print("compare.json: Sluice", s["median"]["msgs_per_sec"], "msg/s;",
      ", ".join(p + (" skipped" if e.get("skipped") else " ok") for p, e in r["peers"].items()))
PY
python3 "$here/bench/bench.py" burst-compare --peers sluice,redis,beanstalkd,nats --runs 1 \
  --burst-messages 5000 --out "$out"
python3 - "$out/burst-compare.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["peers"]["sluice"]
assert s["all_ok"] and s["median"]["publish_msgs_per_sec"] > 0 and s["median"]["peak_rss_kib"] > 0, s
print("burst-compare.json: Sluice", s["median"]["publish_msgs_per_sec"], "msg/s")
PY
python3 "$here/bench/bench.py" memory --memory-count 5000 --out "$out"
for scenario in burst queues connections; do
  python3 "$here/bench/bench.py" "$scenario" --out "$out"
done
python3 "$here/bench/bench.py" trigger --runs 1 --trigger-messages 5000 --duration 0.5 --out "$out"
python3 "$here/bench/bench.py" schema --runs 1 --messages 20000 --out "$out"
