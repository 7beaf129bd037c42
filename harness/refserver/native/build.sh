#!/usr/bin/env bash
# Compiles harness-refserver-native (and the policy library the tests load) into $1 (default:
# this directory's build/). Needs g++, libgrpc-dev and rapidjson-dev (scripts/build-native.sh
# installs them); TensorFlow is opened at run time, so only its headers' types are used.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/build}
mkdir -p "$out"
CXX=${CXX:-g++}
flags=(-std=c++17 -O2 -g0 -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -pthread -fno-plt)
srcs=(main tfapi tensor messages model manager metrics policy batcher predictor grpc_front rest_front json_tensor)
objs=()
pids=()
for s in "${srcs[@]}"; do
  "$CXX" "${flags[@]}" -c "$here/$s.cc" -o "$out/$s.o" &
  pids+=($!)
  objs+=("$out/$s.o")
done
for p in "${pids[@]}"; do wait "$p"; done
"$CXX" "${flags[@]}" -o "$out/harness-refserver-native.tmp" "${objs[@]}" -lgrpc -lgpr -labsl_synchronization -ldl
mv "$out/harness-refserver-native.tmp" "$out/harness-refserver-native"
"$CXX" "${flags[@]}" -shared -fPIC -o "$out/libharness_policy.so.tmp" "$here/policy.cc" "$here/policy_c.cc"
mv "$out/libharness_policy.so.tmp" "$out/libharness_policy.so"
