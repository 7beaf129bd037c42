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
# The TensorFlow wheel whose C++ headers libharness_tf.so is compiled against (found without
# importing it); the project's environment first, as bootstrap.sh makes it.
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3
found=$("$python" -c "$(cat <<'PY'
import importlib.metadata as md, importlib.util as u
spec = u.find_spec("tensorflow")
if spec:
    for dist in ("tensorflow", "tensorflow-cpu"):
        try:
            print(list(spec.submodule_search_locations)[0], md.version(dist))
            break
        except md.PackageNotFoundError:
            pass
PY
)" 2>/dev/null || true)
TF_DIR=${found% *}
TF_VERSION=${found##* }
export TF_DIR TF_VERSION
stamp=$src/build/.sources-$( (cat "$src"/*.cc "$src"/*.h "$src"/build.sh; echo "$found") | sha1sum | cut -c1-12)
if [ -f "$stamp" ] && [ -x "$src/build/harness-refserver-native" ]; then
  exit 0
fi
start=$(date +%s)
bash "$src/build.sh" "$src/build"
rm -f "$src"/build/.sources-* && touch "$stamp"
echo "build-native.sh: built $src/build/harness-refserver-native in $(( $(date +%s) - start )) s"
