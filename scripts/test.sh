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
# Docker Compose, for the tests that start a study's deploy/docker-compose.yml (Debian packages
# the standalone docker-compose command; the Docker engine comes from scripts/docker-engine.sh)
if ! command -v docker-compose >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
fi
# OpenSSH's server, for the test that drives a Docker engine over DOCKER_HOST=ssh:// (the test
# starts its own sshd on 127.0.0.1 with a throwaway key). The package's own sshd must not start:
# it would listen on port 22 of every interface. A policy-rc.d that refuses starts is put in
# place for the install when none exists.
if [ ! -x /usr/sbin/sshd ]; then
  made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server >/dev/null) \
    || echo "test.sh: openssh-server could not be installed: the DOCKER_HOST=ssh:// test will skip (fail under CI=true)" >&2
  if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
export TF_CPP_MIN_LOG_LEVEL=2
.venv/bin/ruff check .
# the layer contracts of docs/architecture.md ([tool.importlinter] in pyproject.toml)
.venv/bin/lint-imports
exec .venv/bin/python -m pytest -q "$@"
