#!/usr/bin/env bash
# `make containers`: the container tests (tests/containers) against a real Docker engine, the way CI
# runs them. In order, each step timed:
#   1. engine    use the one DOCKER_HOST / the default socket reaches; else start dockerd (root,
#                `apt-get install docker.io`), stopped again on exit (KEEP_ENGINE=1 leaves it running)
#   2. compose   Compose v2 (`docker compose`); if missing, deploy/install-compose.sh installs the
#                pinned static binary
#   3. images    the upstream base images when present or a registry answers; otherwise the
#                air-gapped stand-ins (deploy/airgap/build-stand-ins.sh: needs debootstrap)
#   4. tests     pytest tests/containers with REQUIRE_DOCKER=1 (no test may skip), Ryuk disabled
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
UV="${UV:-uv}"
state="${CONTAINERS_STATE_DIR:-/tmp/shop-containers}"
REGISTRY_PROBE_SECONDS="${REGISTRY_PROBE_SECONDS:-15}"
mkdir -p "$state"

started_engine=""
step_started=0
step() { step_started=$SECONDS; printf '\n== containers: %s\n' "$*"; }
done_step() { printf '   (%ds)\n' "$((SECONDS - step_started))"; }

stop_engine() {
  if [ -n "$started_engine" ] && [ "${KEEP_ENGINE:-0}" != 1 ]; then
    echo "== containers: stopping the engine this run started (pid $started_engine)"
    kill -TERM "$started_engine" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$started_engine" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$started_engine" 2>/dev/null || true
    rm -f "$state/dockerd.pid"
  fi
}
trap stop_engine EXIT
trap 'exit 130' INT TERM  # the EXIT trap still stops the engine

# ---- 1. engine ----------------------------------------------------------------------------------
step "engine"
if timeout 10 docker info >/dev/null 2>&1; then
  echo "   using the reachable engine: $(docker info --format '{{.ServerVersion}} ({{.Driver}})')"
else
  if ! command -v dockerd >/dev/null; then
    echo "no Docker engine is reachable and dockerd is not installed" \
      "(apt-get install --no-install-recommends docker.io)" >&2
    exit 1
  fi
  [ "$(id -u)" = 0 ] || { echo "starting dockerd needs root" >&2; exit 1; }
  # No systemd here: start it in its own session, niced (it shares the machine with the tests).
  setsid nice -n 10 dockerd >"$state/dockerd.log" 2>&1 </dev/null &
  started_engine=$!
  echo "$started_engine" >"$state/dockerd.pid"
  for _ in $(seq 1 60); do
    if timeout 5 docker info >/dev/null 2>&1; then break; fi
    if ! kill -0 "$started_engine" 2>/dev/null; then tail -n 30 "$state/dockerd.log" >&2; exit 1; fi
    sleep 0.5
  done
  timeout 10 docker info >/dev/null 2>&1 || { tail -n 30 "$state/dockerd.log" >&2; exit 1; }
  echo "   started dockerd (pid $started_engine, log $state/dockerd.log)"
fi
done_step

# ---- 2. compose v2 -------------------------------------------------------------------------------
step "compose v2"
bash deploy/install-compose.sh
done_step

# ---- 3. base images ------------------------------------------------------------------------------
step "base images"
missing=()
while read -r image _; do
  case "$image" in ''|'#'*) continue ;; esac
  docker image inspect "$image" >/dev/null 2>&1 || missing+=("$image")
done <deploy/airgap/images.txt
if [ "${#missing[@]}" = 0 ]; then
  echo "   every base image is present"
elif timeout "$REGISTRY_PROBE_SECONDS" docker pull -q "${missing[0]}" >/dev/null 2>&1; then
  echo "   a registry answers: compose and testcontainers pull the upstream images"
else
  echo "   no registry within ${REGISTRY_PROBE_SECONDS}s: air-gapped mode, building stand-ins"
  nice -n 10 deploy/airgap/build-stand-ins.sh
fi
done_step

# ---- 4. tests ------------------------------------------------------------------------------------
step "tests (REQUIRE_DOCKER=1)"
export REQUIRE_DOCKER=1 TESTCONTAINERS_RYUK_DISABLED=true
"$UV" run pytest tests/containers -p no:cacheprovider --durations=10 "$@"
done_step
echo "== containers: total ${SECONDS}s (root $root)"
