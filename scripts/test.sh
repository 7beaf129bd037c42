#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what it needs, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# Every Debian package this run may need, fetched with one `apt-get update` (a fresh machine
# paid one update per package otherwise, in the scripts below and in the blocks after them):
# python3-venv (bootstrap.sh), the native server's compiler and headers (build-native.sh),
# docker.io (docker-engine.sh), then the test services. Each of those places still checks and
# installs what it needs: they find it present, or, when this batch failed, try again alone and
# report their own failure as before.
preinstall() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 0
  local plain=() lean=()
  if [ ! -x .venv/bin/python ] && ! "${PYTHON:-python3}" -c "import ensurepip, venv" 2>/dev/null; then
    lean+=(python3-venv)
  fi
  command -v g++ >/dev/null || lean+=(g++)
  [ -e /usr/include/grpc/grpc.h ] || lean+=(libgrpc-dev)
  [ -e /usr/include/rapidjson/document.h ] || lean+=(rapidjson-dev)
  command -v dockerd >/dev/null || plain+=(docker.io)
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || plain+=(postgresql)
  command -v chromium >/dev/null || lean+=(chromium)
  command -v docker-compose >/dev/null || lean+=(docker-compose)
  [ -x /usr/sbin/sshd ] || lean+=(openssh-server)
  [ $(( ${#plain[@]} + ${#lean[@]} )) -gt 0 ] || return 0
  apt-get update -qq || return 0
  # with recommends, as docker-engine.sh and the postgresql block below install them
  if [ ${#plain[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${plain[@]}" >/dev/null || true
  fi
  # without, as the others are installed; openssh-server's sshd must not start (see below)
  if [ ${#lean[@]} -gt 0 ]; then
    local made_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${lean[@]}" >/dev/null || true
    if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
  fi
}
preinstall

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
