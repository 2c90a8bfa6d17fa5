#!/usr/bin/env bash
# Air-gapped build mode: build local stand-ins for every upstream image the project uses (images.txt),
# tagged with the exact upstream names, so `docker compose up --build`, the Dockerfile and the
# testcontainers tests run unchanged with no registry reachable. See deploy/airgap/README.md.
#
#   sudo deploy/airgap/build-stand-ins.sh            # build what is missing
#   FORCE=1 sudo deploy/airgap/build-stand-ins.sh    # rebuild everything
#
# Needs: a running Docker engine, debootstrap and a Debian mirror (the one apt uses, or MIRROR=...),
# and PyPI (or a mirror pip is configured for) for the uv binary. Runs as root (debootstrap, chroot).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
base_tag="${BASE_TAG:-local/debian:bookworm}"
suite="${SUITE:-bookworm}"
force="${FORCE:-0}"
uv_version="${UV_VERSION:-}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

log() { printf '[airgap %(%H:%M:%S)T] %s\n' -1 "$*"; }
have_image() { [ "$force" != 1 ] && docker image inspect "$1" >/dev/null 2>&1; }

mirror() {
  if [ -n "${MIRROR:-}" ]; then echo "$MIRROR"; return; fi
  local uri
  uri="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
  if [ -z "$uri" ]; then
    uri="$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

# ---- 1. the base: a minimal Debian root file system, trusting the host's extra CA certificates ----
if have_image "$base_tag"; then
  log "$base_tag exists"
else
  command -v debootstrap >/dev/null || { echo "debootstrap is not installed" >&2; exit 1; }
  rootfs="$work/rootfs"
  log "debootstrap $suite from $(mirror) (about a minute)"
  debootstrap --variant=minbase --include=ca-certificates "$suite" "$rootfs" "$(mirror)" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
  # HTTPS from inside a container (uv during an image build) must trust what the host trusts.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    chroot "$rootfs" update-ca-certificates >/dev/null
  fi
  # The same sources as the host's apt, so apt-get inside the stand-in builds finds the same mirror.
  printf 'deb %s %s main\ndeb %s %s-updates main\n' "$(mirror)" "$suite" "$(mirror)" "$suite" \
    >"$rootfs/etc/apt/sources.list"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
  log "import $base_tag"
  tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["bash"]' - "$base_tag" >/dev/null
fi

# ---- 2. the uv binary for the uv stand-in, from PyPI's `uv` wheel ----------------------------------
prepare_uv() {
  local tag="$1" version="${uv_version:-${1##*:}}"
  log "uv $version from PyPI"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_17_x86_64 \
    --python-version 3.11 -d "$work/uvwheel" "uv==$version" >"$work/pip.log" 2>&1 \
    || { cat "$work/pip.log" >&2; exit 1; }
  python3 - "$work/uvwheel" "$here/uv" <<'PY'
import pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("uv-*.whl"))
out = pathlib.Path(sys.argv[2])
with zipfile.ZipFile(wheel) as zf:
    for name in zf.namelist():
        if name.endswith(("/scripts/uv", "/scripts/uvx")):
            target = out / name.rsplit("/", 1)[1]
            target.write_bytes(zf.read(name))
            target.chmod(0o755)
PY
}

# ---- 3. one stand-in per upstream image, built side by side (mostly waiting on the mirror) ---------
pids=()
dirs=()
while read -r tag dir; do
  case "$tag" in ''|'#'*) continue ;; esac
  if have_image "$tag"; then log "$tag exists"; continue; fi
  if [ "$dir" = uv ]; then prepare_uv "$tag"; fi
  log "build $tag from deploy/airgap/$dir"
  # The engine's legacy builder is enough here (no RUN --mount); quiet unless it fails.
  docker build --build-arg "BASE=$base_tag" -t "$tag" "$here/$dir" >"$work/build-$dir.log" 2>&1 &
  pids+=("$!")
  dirs+=("$dir")
done <"$here/images.txt"
failed=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "building the ${dirs[$i]} stand-in failed:" >&2
    tail -n 40 "$work/build-${dirs[$i]}.log" >&2
    failed=1
  fi
done
rm -f "$here/uv/uv" "$here/uv/uvx"
[ "$failed" = 0 ] || exit 1
log "stand-ins ready: $(awk '!/^#/ && NF {printf "%s ", $1}' "$here/images.txt")"
