#!/usr/bin/env bash
# The Debian package: cpack builds sluice_<version>_amd64.deb from this build,
# and its metadata, conffiles and contents are what docs/operations.md says;
# the packaged sluiced runs and takes the packaged config.
set -euo pipefail
build=$1
version=$2
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
fail=0
check() {  # check DESCRIPTION COMMAND...
  local what=$1; shift
  if "$@" >/dev/null 2>&1; then echo "ok    $what"; else echo "FAIL  $what"; fail=1; fi
}
(cd "$build" && cpack -G DEB -B "$out" >"$out/cpack.log" 2>&1) || { cat "$out/cpack.log"; exit 1; }
deb="$out/sluice_${version}_amd64.deb"
check "cpack made $(basename "$deb")" test -f "$deb"
field() { dpkg-deb -f "$deb" "$1"; }
check "Package: sluice" test "$(field Package)" = sluice
check "Version: $version" test "$(field Version)" = "$version"
check "Architecture: amd64" test "$(field Architecture)" = amd64
depends=$(field Depends)
echo "      Depends: $depends"
for lib in libc6 libstdc++6 liblmdb0 libssl3 libprometheus-cpp-core1.0 libtomlplusplus3; do
  check "Depends names $lib (dpkg-shlibdeps)" grep -q "$lib " <<<"$depends"
done
check "the config is a conffile" grep -qx /etc/sluice/sluiced.toml <(dpkg-deb -I "$deb" conffiles)
contents=$(dpkg-deb -c "$deb" | awk '{print $6}')
for path in ./usr/bin/sluiced ./usr/bin/sluicectl ./usr/lib/systemd/system/sluiced.service \
            ./etc/sluice/sluiced.toml ./usr/include/sluice/client/client.hpp \
            ./usr/include/sluice/protocol/errc.hpp ./usr/lib/libsluice_client.a \
            ./usr/share/doc/sluice/copyright ./usr/share/doc/sluice/operations.md \
            "./usr/lib/libsluice_client.so.$version" ./usr/lib/cmake/Sluice/SluiceConfig.cmake \
            ./usr/lib/cmake/Sluice/SluiceConfigVersion.cmake ./usr/lib/pkgconfig/sluice-client.pc; do
  check "holds $path" grep -qx "$path" <<<"$contents"
done
check "nothing outside /usr and /etc" test -z "$(grep -vE '^\./$|^\./(usr|etc)/' <<<"$contents" || true)"
dpkg-deb -x "$deb" "$out/root"
check "the packaged sluiced runs" test "$("$out/root/usr/bin/sluiced" --version)" = "sluiced $version"
check "the packaged sluicectl runs" test "$("$out/root/usr/bin/sluicectl" --version)" = "sluicectl $version"
check "the packaged config passes --check" \
  "$out/root/usr/bin/sluiced" --check --config "$out/root/etc/sluice/sluiced.toml"
check "the packaged unit starts /usr/bin/sluiced" \
  grep -q '^ExecStart=/usr/bin/sluiced --config /etc/sluice/sluiced.toml$' \
  "$out/root/usr/lib/systemd/system/sluiced.service"
if [ $fail -eq 0 ]; then echo "package ok"; else echo "package FAILED"; fi
exit $fail
