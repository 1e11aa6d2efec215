#!/usr/bin/env bash
# The client library as another project uses it: cmake --install this build
# into a temporary prefix, build examples/producer, examples/consumer and
# examples/worker_pool against it with find_package(Sluice 0.2 CONFIG), the
# consumer once more by hand with pkg-config, and run them against a real
# sluiced.
set -euo pipefail
build=$1
source=$2
tmp=$(mktemp -d)
broker=
cleanup() { [ -n "$broker" ] && kill "$broker" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
cmake --install "$build" --prefix "$tmp/prefix" >"$tmp/install.log"
for example in producer consumer worker_pool; do
  cmake -S "$source/examples/$example" -B "$tmp/$example" -G Ninja \
        -DCMAKE_PREFIX_PATH="$tmp/prefix" >"$tmp/$example.log"
  cmake --build "$tmp/$example" >>"$tmp/$example.log" || { cat "$tmp/$example.log"; exit 1; }
  echo "ok    examples/$example builds with find_package(Sluice 0.2 CONFIG)"
done
export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig"
# shellcheck disable=SC2046
g++ -o "$tmp/consumer-pc" "$source/examples/consumer/main.cpp" $(pkg-config --cflags --libs sluice-client)
echo "ok    examples/consumer builds with pkg-config sluice-client ($(pkg-config --modversion sluice-client))"
if readelf -d "$tmp/consumer-pc" | grep -q 'NEEDED.*libsluice_client.so.0.2'; then
  echo "ok    it links the shared library by its SONAME"
else
  echo "FAIL  it does not link libsluice_client.so.0.2"; exit 1
fi

"$build/broker/sluiced" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --set storage.path= \
  --port-file "$tmp/ports" 2>"$tmp/sluiced.log" &
broker=$!
for _ in $(seq 100); do [ -s "$tmp/ports" ] && break; sleep 0.05; done
address="127.0.0.1:$(head -1 "$tmp/ports")"
"$tmp/producer/producer" "$address" examples 100
"$tmp/consumer/consumer" "$address" examples 60
LD_LIBRARY_PATH="$tmp/prefix/lib" "$tmp/consumer-pc" "$address" examples 40
echo "ok    100 published, 60 + 40 received by the two consumers"
"$tmp/producer/producer" "$address" work 40
out=$("$tmp/worker_pool/worker_pool" "$address" work 40 4)
echo "      $out"
most=$(sed -n 's/^handled 40, at most \([0-9]*\) at once$/\1/p' <<<"$out")
if [ -n "$most" ] && [ "$most" -ge 1 ] && [ "$most" -le 4 ]; then
  echo "ok    the worker pool handled 40, never more than its 4 workers at once"
else
  echo "FAIL  the worker pool: $out"; exit 1
fi
echo "examples ok"
