#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what it needs, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/docker-engine.sh
export TF_CPP_MIN_LOG_LEVEL=2
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
