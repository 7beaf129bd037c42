#!/usr/bin/env bash
# Create .venv and install the harness with everything it needs (TensorFlow, TF Serving API,
# test tools). Idempotent: a second run only re-installs when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  # Debian's python3 has no venv module (no ensurepip) until python3-venv is installed
  if ! "$PY" -c "import ensurepip, venv" 2>/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"
  rm -f .venv/.installed-* && touch "$stamp"
fi
# The reference server's native request path (docs/native.md): without a compiler it stays on
# the Python path and says so at start-up, so a failed build does not stop the install.
bash scripts/build-native.sh || echo "bootstrap.sh: the native reference server was not built; harness serve runs the Python path" >&2
