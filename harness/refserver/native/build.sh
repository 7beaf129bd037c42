#!/usr/bin/env bash
# Compiles harness-refserver-native (and the policy library the tests load) into $1 (default:
# this directory's build/). Needs g++, libgrpc-dev and rapidjson-dev (scripts/build-native.sh
# installs them); TensorFlow is opened at run time, so only its headers' types are used.
# With $TF_DIR (the installed tensorflow package) and $TF_VERSION (its version) also
# libharness_tf.so, compiled against the wheel's own C++ headers with the flags TensorFlow gives
# custom ops (tfcall.cc says why).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/build}
mkdir -p "$out"
CXX=${CXX:-g++}
flags=(-std=c++17 -O2 -g0 -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -pthread -fno-plt)
srcs=(main standby preload tfapi tensor messages model manager metrics policy batcher predictor grpc_front rest_front json_tensor)
objs=()
pids=()
if [ -n "${TF_DIR:-}" ] && [ -n "${TF_VERSION:-}" ] && [ -e "$TF_DIR/include/tensorflow/cc/saved_model/loader.h" ]; then
  # optional: without it the server keeps to TensorFlow's C API, so a failure only says so
  ( "$CXX" -std=c++17 -O2 -g0 -fPIC -shared -pthread -D_GLIBCXX_USE_CXX11_ABI=1 -DEIGEN_MAX_ALIGN_BYTES=64 \
      -DHX_TF_VERSION="\"$TF_VERSION\"" \
      -isystem "$TF_DIR/include" -o "$out/libharness_tf.so.tmp" "$here/tfcall.cc" \
      -L"$TF_DIR" -l:libtensorflow_cc.so.2 -l:libtensorflow_framework.so.2 -Wl,-rpath,"$TF_DIR" ||
    { rm -f "$out/libharness_tf.so.tmp" "$out/libharness_tf.so";
      echo "build.sh: libharness_tf.so not built: the server uses TensorFlow's C API alone" >&2; } ) &
  pids+=($!)
else
  rm -f "$out/libharness_tf.so"
fi
for s in "${srcs[@]}"; do
  "$CXX" "${flags[@]}" -c "$here/$s.cc" -o "$out/$s.o" &
  pids+=($!)
  objs+=("$out/$s.o")
done
for p in "${pids[@]}"; do wait "$p"; done
"$CXX" "${flags[@]}" -o "$out/harness-refserver-native.tmp" "${objs[@]}" -lgrpc -lgpr -labsl_synchronization -ldl
mv "$out/harness-refserver-native.tmp" "$out/harness-refserver-native"
if [ -e "$out/libharness_tf.so.tmp" ]; then mv "$out/libharness_tf.so.tmp" "$out/libharness_tf.so"; fi
"$CXX" "${flags[@]}" -shared -fPIC -o "$out/libharness_policy.so.tmp" "$here/policy.cc" "$here/policy_c.cc"
mv "$out/libharness_policy.so.tmp" "$out/libharness_policy.so"
