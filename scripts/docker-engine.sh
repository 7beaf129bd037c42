#!/usr/bin/env bash
# Make sure a Docker engine answers: install docker.io and start dockerd when none runs.
# Never fails the caller: the Docker tests skip, with this script's reason, when no engine can run.
set -u
if docker info >/dev/null 2>&1; then
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "docker-engine: no dockerd and no root apt-get to install it" >&2
    exit 0
  fi
  echo "docker-engine: installing docker.io" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io) >/tmp/docker-install.log 2>&1 \
    || { echo "docker-engine: apt-get install docker.io failed (see /tmp/docker-install.log)" >&2; exit 0; }
fi
if [ "$(id -u)" != 0 ]; then
  echo "docker-engine: dockerd must be started as root" >&2
  exit 0
fi
# A dockerd killed with its machine's session leaves pid files behind that stop the next start.
# (A process that is gone, or a zombie not yet reaped, does not hold the engine.)
for pidfile in /var/run/docker.pid /var/run/docker/containerd/containerd.pid; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile" 2>/dev/null)
  state=$(awk '{print $3}' "/proc/${pid:-0}/stat" 2>/dev/null)
  if [ -z "$state" ] || [ "$state" = Z ]; then
    rm -f "$pidfile"
  fi
done
echo "docker-engine: starting dockerd" >&2
# dockerd outlives this script: it must not inherit our open files (a lock held by the caller,
# such as `flock LOCK bash scripts/test.sh`, would stay held for as long as dockerd runs).
(
  for fd in /proc/$BASHPID/fd/*; do
    fd=${fd##*/}
    [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-"
  done 2>/dev/null
  exec setsid nohup dockerd </dev/null >/tmp/dockerd.log 2>&1
) &
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 0.5
done
echo "docker-engine: dockerd did not answer within 30 s (see /tmp/dockerd.log)" >&2
exit 0
