#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what it needs, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/docker-engine.sh
# PostgreSQL's binaries for the shared-study tests (each test session starts a private cluster)
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
# headless Chromium, for the test that opens report.html in a real browser
if ! command -v chromium >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
export TF_CPP_MIN_LOG_LEVEL=2
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
