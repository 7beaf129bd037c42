#!/usr/bin/env bash
# Build the reference server's native request path (docs/native.md): installs the compiler and
# the two libraries it needs from Debian's packages when they are missing, then compiles into
# harness/refserver/native/build/. Skips the compile when the sources have not changed.
set -euo pipefail
cd "$(dirname "$0")/.."
src=harness/refserver/native
need=()
command -v g++ >/dev/null || need+=(g++)
[ -e /usr/include/grpc/grpc.h ] || need+=(libgrpc-dev)
[ -e /usr/include/rapidjson/document.h ] || need+=(rapidjson-dev)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "build-native.sh: missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root" >&2
    exit 1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
stamp=$src/build/.sources-$(cat "$src"/*.cc "$src"/*.h "$src"/build.sh | sha1sum | cut -c1-12)
if [ -f "$stamp" ] && [ -x "$src/build/harness-refserver-native" ]; then
  exit 0
fi
start=$(date +%s)
bash "$src/build.sh" "$src/build"
rm -f "$src"/build/.sources-* && touch "$stamp"
echo "build-native.sh: built $src/build/harness-refserver-native in $(( $(date +%s) - start )) s"
